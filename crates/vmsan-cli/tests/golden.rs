//! Golden `--json` documents: `create`, `list`, `inspect`, `snapshot list` and errors, each
//! compared whole with a file in `tests/golden/` (see `vmsan_testkit::golden` for what is
//! normalised and how; `VMSAN_BLESS=1` rewrites the files). They pin the documents scripts
//! rely on, so that a refactor of what produces them cannot change them unnoticed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::Output;

use vmsan_testkit::e2e::{Home, parse};
use vmsan_testkit::golden::{Golden, dir_of};

fn golden() -> Golden {
    Golden::new(dir_of(env!("CARGO_MANIFEST_DIR")))
}

fn json_ok(home: &Home, args: &[&str]) -> Output {
    let out = home.vmsan().arg("--json").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "vmsan {args:?} failed: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A VM's own run-specific values, as inspect shows them: its id, and the addresses of the
/// network slot it was given (host-wide, so another VM on the host moves them).
fn name_vm(g: &mut Golden, home: &Home, id: &str, n: usize) {
    let vm = parse(&json_ok(home, &["inspect", id]))["vm"].clone();
    g.token(id, format!("<vm-{n}>"));
    // The image is built from a directory the fixture made, whose times are this run's, and
    // the initrd holds this build's agent: their digests name them.
    let image = vm["image"]["digest"].as_str().unwrap();
    g.token(image.strip_prefix("sha256:").unwrap(), "<image-digest>");
    let initrd = Path::new(vm["initrd"].as_str().unwrap());
    g.token(
        initrd.file_stem().unwrap().to_str().unwrap(),
        "<initrd-digest>",
    );
    for (key, token) in [
        ("guestIp", "guest-ip"),
        ("hostIp", "host-ip"),
        ("macAddress", "mac"),
    ] {
        let v = vm["network"][key].as_str().unwrap();
        assert!(!v.is_empty(), "{key} of {id} is empty: {vm}");
        g.token(v, format!("<vm-{n}-{token}>"));
    }
}

/// What varies in a VM's record between runs: times and processes; the slot, which moves
/// with other VMs on the host (as its addresses do, see `name_vm`); the resolvers, which are
/// the host's.
const VM_VARYING: [(&str, &str); 9] = [
    ("network/slot", "slot"),
    ("network/dnsServers", "host-resolvers"),
    ("createdAt", "time"),
    ("updatedAt", "time"),
    ("pid", "pid"),
    ("vmm/pid", "pid"),
    ("vmm/startTime", "start-time"),
    ("supervisor/pid", "pid"),
    ("supervisor/startTime", "start-time"),
];

fn under(prefix: &str, rules: &[(&'static str, &'static str)]) -> Vec<(String, &'static str)> {
    rules
        .iter()
        .map(|(p, l)| (format!("{prefix}/{p}"), *l))
        .collect()
}

fn as_refs<'a>(v: &'a [(String, &'static str)]) -> Vec<(&'a str, &'static str)> {
    v.iter().map(|(p, l)| (p.as_str(), *l)).collect()
}

#[test]
fn privileged_e2e_json_documents_match_the_golden_files() {
    let Some(fx) = vmsan_testkit::e2e::fixture(Path::new(env!("CARGO_BIN_EXE_vmsan"))) else {
        return;
    };
    let home = &fx.home;
    let mut g = golden();
    g.token(home.dir.path().to_str().unwrap(), "<home>");

    // create: one VM.
    let out = json_ok(home, &["create", "--from-image", "busybox"]);
    let first = parse(&out)["vmId"].as_str().unwrap().to_owned();
    name_vm(&mut g, home, &first, 1);
    g.check(
        "create",
        &out.stdout,
        &[("/pid", "pid"), ("/timingsMs/*/ms", "ms")],
    );

    // list: two VMs, the newest first.
    let second = parse(&json_ok(home, &["create", "--from-image", "busybox"]))["vmId"]
        .as_str()
        .unwrap()
        .to_owned();
    name_vm(&mut g, home, &second, 2);
    let out = json_ok(home, &["list"]);
    g.check("list", &out.stdout, &as_refs(&under("/vms/*", &VM_VARYING)));

    // inspect: the whole record.
    let out = json_ok(home, &["inspect", &first]);
    g.check("inspect", &out.stdout, &as_refs(&under("/vm", &VM_VARYING)));

    // snapshot list, after a snapshot of the first VM.
    let snap = parse(&json_ok(home, &["snapshot", "create", &first]))["snapshotId"]
        .as_str()
        .unwrap()
        .to_owned();
    g.token(&snap, "<snapshot-1>");
    let out = json_ok(home, &["snapshot", "list"]);
    g.check(
        "snapshot-list",
        &out.stdout,
        &[("/snapshots/*/createdAt", "time")],
    );

    for id in [&first, &second] {
        json_ok(home, &["remove", "--force", id]);
    }
}

/// Errors need no VM, no home and no root: they run everywhere.
#[test]
fn json_errors_match_the_golden_files() {
    let home = tempfile::tempdir().unwrap();
    let g = golden();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmsan"))
            .env("VMSAN_HOME", home.path())
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "vmsan {args:?}");
        out
    };
    g.check(
        "error-vm-not-found",
        &run(&["inspect", "vm-0badc0de"]).stdout,
        &[],
    );
    g.check(
        "error-validation-memory",
        &run(&["create", "--memory", "64"]).stdout,
        &[],
    );
}
