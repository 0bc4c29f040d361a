//! The root check, run for real: the binary is started as uid/gid 65534 (nobody) when the
//! test runs as root. Root-only commands must be refused wherever the command sits on the
//! line; the group-readable commands must not be.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers may unwrap.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

const NOBODY: u32 = 65_534;
const VM: &str = "vm-0123abcd";

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A copy of the binary that nobody can execute, in a world-readable temporary directory.
struct NobodyBinary {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl NobodyBinary {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("vmsan");
        std::fs::copy(env!("CARGO_BIN_EXE_vmsan"), &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { _dir: dir, path }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.path)
            .args(args)
            .env("VMSAN_HOME", "/nonexistent/vmsan-cli-privilege")
            .current_dir("/")
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> (i32, Value) {
        let out = self.run(args);
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{args:?}: {e}: {:?}", String::from_utf8_lossy(&out.stdout))
        });
        (out.status.code().unwrap(), doc)
    }
}

fn skip_unless_root() -> bool {
    if is_root() {
        return false;
    }
    vmsan_testkit::skip!("starting the binary as uid {NOBODY} needs root");
    true
}

#[test]
fn privileged_root_only_commands_are_refused_wherever_they_sit() {
    if skip_unless_root() {
        return;
    }
    let bin = NobodyBinary::new();
    let cases: &[(&[&str], &str)] = &[
        (&["--json", "create"], "create"),
        (&["create", "--json"], "create"),
        (&["--verbose", "--json", "create", "--vcpus", "2"], "create"),
        (
            &["create", "--vcpus", "2", "--json", "--no-seccomp"],
            "create",
        ),
        (&["--json", "start", VM], "start"),
        (&["stop", "--json", VM], "stop"),
        (&["--json", "remove", "-f", VM], "remove"),
        (&["rm", VM, "--json"], "remove"),
        (
            &["--json", "network", VM, "--network-policy", "deny-all"],
            "network",
        ),
        (&["--json", "setup"], "setup"),
        (&["snapshot", "--json", "create", VM], "snapshot create"),
        (
            &["--json", "snapshot", "delete", "vm-0123abcd-1"],
            "snapshot delete",
        ),
        (
            &["--json", "snapshot", "rm", "vm-0123abcd-1"],
            "snapshot delete",
        ),
        (&["image", "pull", "alpine", "--json"], "image pull"),
        (
            &["--json", "image", "import", "/x.tar", "--name", "x"],
            "image import",
        ),
        (&["--json", "image", "rm", "alpine"], "image rm"),
        (&["--json", "image", "prune"], "image prune"),
    ];
    for (args, name) in cases {
        let (rc, doc) = bin.json(args);
        assert_eq!(rc, 1, "{args:?}");
        let e = &doc["error"];
        assert_eq!(e["code"], "ERR_PERMISSION_DENIED", "{args:?}: {doc}");
        assert_eq!(
            e["message"],
            format!("\"vmsan {name}\" requires root"),
            "{args:?}"
        );
        assert_eq!(e["command"], *name);
        let fix = e["fix"].as_str().unwrap();
        assert!(fix.starts_with("Run it as root: sudo vmsan "), "{fix}");
        assert!(
            fix.ends_with(&args.join(" ")),
            "the fix repeats the line: {fix}"
        );
    }

    // Human mode: the same, on stderr.
    let out = bin.run(&["--verbose", "create"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("ERROR \"vmsan create\" requires root\n"),
        "{err}"
    );
    assert!(
        err.contains("  Fix: Run it as root: sudo vmsan --verbose create"),
        "{err}"
    );
}

#[test]
fn privileged_validation_comes_before_the_root_check() {
    if skip_unless_root() {
        return;
    }
    let bin = NobodyBinary::new();
    let (_, doc) = bin.json(&["--json", "create", "--vcpus", "0"]);
    assert_eq!(doc["error"]["code"], "ERR_VALIDATION_INTEGER");
    let (_, doc) = bin.json(&["--json", "snapshot", "delete", "../.."]);
    assert_eq!(doc["error"]["code"], "ERR_VALIDATION_ID");
}

#[test]
fn privileged_group_commands_run_without_root() {
    if skip_unless_root() {
        return;
    }
    let bin = NobodyBinary::new();
    let (rc, doc) = bin.json(&["--json", "list"]);
    assert_eq!((rc, &doc["count"]), (0, &Value::from(0)), "{doc}");
    let (rc, _) = bin.json(&["ls", "--json"]);
    assert_eq!(rc, 0);
    for args in [
        vec!["--json", "inspect", VM],
        vec!["--json", "logs", VM, "--tail", "5"],
        vec!["--json", "exec", VM, "id"],
        vec!["--json", "upload", VM, "/etc/hostname"],
        vec!["--json", "download", VM, "/etc/hostname"],
        vec!["--json", "snapshot", "list"],
        vec!["--json", "image", "ls"],
        vec!["--json", "doctor"],
        vec!["--json", "version"],
        vec!["--json", "completion", "bash"],
    ] {
        let (_, doc) = bin.json(&args);
        assert_ne!(
            doc["error"]["code"], "ERR_PERMISSION_DENIED",
            "{args:?}: {doc}"
        );
    }
    // connect is interactive (no --json): check its human error is not the root check.
    let out = bin.run(&["connect", VM]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("requires root"));
}
