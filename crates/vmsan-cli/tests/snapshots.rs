//! Snapshots end to end, through the `vmsan` binary against the stand-in VMM (or real
//! Firecracker with `VMSAN_E2E_FIRECRACKER=1`, see e2e.rs): snapshot a running VM, restore
//! clones that each get their own identity and disk, diff snapshots, export and import, and
//! every way a restore can fail leaving nothing half-created.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;

use serde_json::Value;
use vmsan_testkit::e2e::{Fixture, GREETING, Home, INTERNET_IP, SERVER_PORT, leftovers, parse};

fn fixture() -> Option<Fixture> {
    vmsan_testkit::e2e::fixture(Path::new(env!("CARGO_BIN_EXE_vmsan")))
}

fn sh(home: &Home, id: &str, script: &str) -> String {
    let out = home.run(&["exec", id, "sh", "-c", script]);
    assert!(
        out.status.success(),
        "exec {script:?} in {id} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The requests Firecracker's log records, as `METHOD path` plus the body, in order.
fn api_calls(home: &Home, id: &str) -> Vec<String> {
    let log = std::fs::read_to_string(home.dir.path().join("vms").join(id).join("firecracker.log"))
        .unwrap();
    log.lines()
        .filter_map(|l| {
            l.split_once("The API server received a ")
                .map(|(_, r)| r.to_owned())
        })
        .collect()
}

fn position(calls: &[String], what: &[&str]) -> usize {
    calls
        .iter()
        .position(|c| what.iter().all(|w| c.contains(w)))
        .unwrap_or_else(|| panic!("no API call with {what:?} in {calls:#?}"))
}

fn state(home: &Home, id: &str) -> Value {
    serde_json::from_slice(
        &std::fs::read(home.dir.path().join("vms").join(id).join("state.json")).unwrap(),
    )
    .unwrap()
}

fn vm_ids(doc: &Value) -> Vec<String> {
    match doc["vms"].as_array() {
        Some(vms) => vms
            .iter()
            .map(|v| v["vmId"].as_str().unwrap().to_owned())
            .collect(),
        None => vec![doc["vmId"].as_str().unwrap().to_owned()],
    }
}

fn error_code(out: &std::process::Output) -> String {
    let doc = parse(out);
    assert!(!out.status.success(), "expected a failure: {doc}");
    doc["error"]["code"].as_str().unwrap_or_default().to_owned()
}

fn vm_count(home: &Home) -> usize {
    home.json(&["list"])["vms"].as_array().unwrap().len()
}

#[test]
fn privileged_e2e_snapshot_and_clones() {
    let Some(fx) = fixture() else { return };
    let (home, net, work) = (&fx.home, &fx.net, &fx.work);

    let src = home.json(&[
        "create",
        "--from-image",
        "busybox",
        "--memory",
        "256",
        "--vcpus",
        "2",
    ]);
    let src = src["vmId"].as_str().unwrap().to_owned();
    sh(home, &src, "echo before-snapshot > /root/marker");
    // A process started before the snapshot. Real Firecracker restores the guest's memory, so
    // it is still running in every clone; the stand-in boots the guest again (it keeps no
    // memory), so this is checked only against real Firecracker.
    let real = std::env::var("VMSAN_E2E_FIRECRACKER").is_ok_and(|v| v == "1");
    let sleeper = sh(
        home,
        &src,
        "setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $!",
    );
    let src_token = state(home, &src)["agentToken"].as_str().unwrap().to_owned();

    // Snapshot: pause, Firecracker's snapshot, resume, in that order; the VM keeps running.
    let snap = home.json(&["snapshot", "create", &src]);
    let snap_id = snap["snapshotId"].as_str().unwrap().to_owned();
    assert!(snap_id.starts_with(&format!("{src}-")), "{snap}");
    assert_eq!(snap["kind"], "full");
    let calls = api_calls(home, &src);
    let paused = position(&calls, &["\"/vm\"", "Paused"]);
    let created = position(&calls, &["\"/snapshot/create\"", "Full"]);
    let resumed = position(&calls, &["\"/vm\"", "Resumed"]);
    assert!(paused < created && created < resumed, "{calls:#?}");
    assert_eq!(home.json(&["list"])["vms"][0]["status"], "running");
    assert_eq!(
        sh(home, &src, &format!("kill -0 {sleeper} && echo alive")),
        "alive"
    );
    sh(home, &src, "echo after-snapshot > /root/after");

    let listed = home.json(&["snapshot", "list"]);
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(listed["snapshots"][0]["id"], snap_id.as_str());
    assert_eq!(listed["snapshots"][0]["vmId"], src.as_str());
    assert_eq!(listed["snapshots"][0]["memMib"], 256);

    // Three clones at once.
    let clones = vm_ids(&home.json(&["create", "--snapshot", &snap_id, "--count", "3"]));
    assert_eq!(clones.len(), 3);
    let mut seen = std::collections::BTreeSet::new();
    for c in &clones {
        let st = state(home, c);
        assert_eq!(st["snapshot"], snap_id.as_str());
        assert_eq!(
            (st["memSizeMib"].as_u64(), st["vcpuCount"].as_u64()),
            (Some(256), Some(2))
        );
        let (ip, mac, token) = (
            st["network"]["guestIp"].as_str().unwrap().to_owned(),
            st["network"]["macAddress"].as_str().unwrap().to_owned(),
            st["agentToken"].as_str().unwrap().to_owned(),
        );
        assert_ne!(token, src_token, "a clone kept the source's token");
        assert!(seen.insert(ip.clone()) && seen.insert(mac.clone()) && seen.insert(token));
        // The disk as it was at the snapshot, and nothing written after it.
        assert_eq!(sh(home, c, "cat /root/marker"), "before-snapshot");
        assert_eq!(
            sh(home, c, "test -e /root/after && echo yes || echo no"),
            "no"
        );
        // Its own identity inside the guest.
        assert_eq!(sh(home, c, "hostname"), c.as_str());
        let eth0 = sh(home, c, "ip addr show eth0");
        assert!(eth0.contains(&format!("inet {ip}/")), "{eth0}");
        assert!(eth0.contains(&mac), "{eth0}");
        // And a network that works with it.
        let out = sh(home, c, &format!("nc -w 5 {INTERNET_IP} {SERVER_PORT}"));
        assert_eq!(out, GREETING);
        if real {
            assert_eq!(
                sh(home, c, &format!("kill -0 {sleeper} && echo alive")),
                "alive"
            );
        }
        // Restored by a snapshot load, not booted.
        let calls = api_calls(home, c);
        let load = position(&calls, &["\"/snapshot/load\""]);
        assert!(
            calls[load].contains("network_overrides") && calls[load].contains("vsock_override")
        );
        for boot_only in [
            "\"/boot-source\"",
            "\"/drives/",
            "\"/machine-config\"",
            "InstanceStart",
        ] {
            assert!(
                !calls.iter().any(|c| c.contains(boot_only)),
                "{boot_only} in {calls:#?}"
            );
        }
    }
    if !real {
        eprintln!(
            "note: a process surviving the restore is checked with real Firecracker only \
             (VMSAN_E2E_FIRECRACKER=1): the stand-in keeps no guest memory"
        );
    }
    // Clones never share a disk.
    sh(home, &clones[0], "echo mine > /root/clone0");
    for c in &clones[1..] {
        assert_eq!(
            sh(home, c, "test -e /root/clone0 && echo yes || echo no"),
            "no"
        );
    }
    assert_eq!(
        sh(home, &src, "test -e /root/clone0 && echo yes || echo no"),
        "no"
    );
    assert_eq!(sh(home, &src, "cat /root/after"), "after-snapshot");

    // A diff snapshot builds on the last one; restored alone, it has everything.
    let diff = home.json(&["snapshot", "create", &src, "--diff"]);
    assert_eq!(
        (diff["kind"].as_str(), diff["parent"].as_str()),
        (Some("diff"), Some(snap_id.as_str()))
    );
    let diff_id = diff["snapshotId"].as_str().unwrap().to_owned();
    let calls = api_calls(home, &src);
    position(&calls, &["\"/snapshot/create\"", "Diff"]);
    let d = vm_ids(&home.json(&["create", "--snapshot", &diff_id]))[0].clone();
    assert_eq!(
        sh(home, &d, "cat /root/marker /root/after"),
        "before-snapshot\nafter-snapshot"
    );

    // A clone stopped and started again boots cold, from its own disk, as itself.
    home.json(&["stop", &clones[0]]);
    home.json(&["start", &clones[0]]);
    assert_eq!(sh(home, &clones[0], "cat /root/clone0"), "mine");
    assert_eq!(sh(home, &clones[0], "hostname"), clones[0].as_str());

    // Export, delete, import: the same snapshot again, restorable.
    let archive = work.path().join("snap.tar");
    let exported = home.json(&["snapshot", "export", &snap_id, archive.to_str().unwrap()]);
    assert!(exported["sizeBytes"].as_u64().unwrap() > 0);
    home.json(&["snapshot", "delete", &snap_id]);
    // Clones of a deleted snapshot keep running.
    assert_eq!(sh(home, &clones[1], "cat /root/marker"), "before-snapshot");
    let imported = home.json(&["snapshot", "import", archive.to_str().unwrap()]);
    assert_eq!(imported["snapshotId"], snap_id.as_str());
    let again = vm_ids(&home.json(&["create", "--snapshot", &snap_id]))[0].clone();
    assert_eq!(sh(home, &again, "cat /root/marker"), "before-snapshot");
    let out = home.run(&["--json", "snapshot", "import", archive.to_str().unwrap()]);
    assert_eq!(error_code(&out), "ERR_VM_SNAPSHOT_EXISTS");

    // --no-resume leaves the VM paused; `stop` still stops it gracefully.
    let paused = home.json(&["snapshot", "create", &src, "--no-resume"]);
    assert_eq!(paused["resumed"], false);
    let paused_id = paused["snapshotId"].as_str().unwrap().to_owned();
    let calls = api_calls(home, &src);
    assert!(
        calls.last().unwrap().contains("/snapshot/create"),
        "{calls:#?}"
    );
    home.json(&["stop", &src]);
    let st = state(home, &src);
    assert_eq!(st["status"], "stopped", "{st}");
    home.json(&["snapshot", "delete", &paused_id]);

    // Remove everything: nothing of any VM is left, and the snapshots go with delete.
    let all: Vec<String> = [vec![src.clone(), d.clone(), again.clone()], clones.clone()].concat();
    for id in &all {
        home.json(&["remove", "--force", id]);
    }
    for id in &all {
        let left = leftovers(home.dir.path(), &net.host, id);
        assert!(left.is_empty(), "{id} left: {left:#?}");
    }
    home.json(&["snapshot", "delete", &snap_id, &diff_id]);
    assert_eq!(home.json(&["snapshot", "list"])["count"], 0);
    let snapshots_dir = home.dir.path().join("snapshots");
    assert_eq!(
        std::fs::read_dir(&snapshots_dir).unwrap().count(),
        0,
        "debris in {snapshots_dir:?}"
    );
}

#[test]
fn privileged_e2e_snapshot_faults() {
    let Some(fx) = fixture() else { return };
    let (home, net, work) = (&fx.home, &fx.net, &fx.work);

    // 1 GiB of guest memory (sparse under the stand-in), so 100 clones would not fit.
    let src = home.json(&[
        "create",
        "--from-image",
        "busybox",
        "--memory",
        "1024",
        "--publish-port",
        "18080:80",
    ]);
    let src = src["vmId"].as_str().unwrap().to_owned();
    let snap_id = home.json(&["snapshot", "create", &src])["snapshotId"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = home.dir.path().join("snapshots").join(&snap_id);

    // A failure while the VM is paused (its disk cannot be copied): the VM is resumed and no
    // partial snapshot is left.
    let disk = home.dir.path().join("vms").join(&src).join("disk.ext4");
    let aside = work.path().join("disk-aside");
    std::fs::rename(&disk, &aside).unwrap();
    let out = home.run(&["--json", "snapshot", "create", &src]);
    std::fs::rename(&aside, &disk).unwrap();
    assert_eq!(error_code(&out), "ERR_VM_SNAPSHOT_CREATE_FAILED");
    assert_eq!(sh(home, &src, "echo still-running"), "still-running");
    assert_eq!(home.json(&["snapshot", "list"])["count"], 1);
    let snapshots: Vec<_> = std::fs::read_dir(home.dir.path().join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(snapshots.len(), 1, "debris: {snapshots:?}");
    // A diff needs a previous snapshot of the same run.
    home.json(&["stop", &src]);
    home.json(&["start", &src]);
    assert_eq!(
        error_code(&home.run(&["--json", "snapshot", "create", &src, "--diff"])),
        "ERR_VM_SNAPSHOT_CREATE_FAILED"
    );

    let restore = |args: &[&str]| {
        let mut a = vec!["--json", "create", "--snapshot", snap_id.as_str()];
        a.extend_from_slice(args);
        home.run(&a)
    };
    let nothing_new = |what: &str| {
        assert_eq!(vm_count(home), 1, "{what}: a VM was left behind");
        let vms = std::fs::read_dir(home.dir.path().join("vms"))
            .unwrap()
            .count();
        assert_eq!(vms, 1, "{what}: a VM directory was left behind");
        let others: Vec<String> = std::fs::read_dir(home.dir.path().join("jail/firecracker"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| *n != src)
                    .collect()
            })
            .unwrap_or_default();
        assert!(others.is_empty(), "{what}: jails left behind: {others:?}");
    };

    // The source still holds its published port: a clone cannot take it.
    let out = restore(&[]);
    let doc = parse(&out);
    assert!(!out.status.success(), "{doc}");
    assert!(
        doc["error"]["message"].as_str().unwrap().contains("18080"),
        "{doc}"
    );
    nothing_new("taken port");
    // Several clones of a VM with published ports: refused before anything starts.
    assert_eq!(
        error_code(&restore(&["--count", "2"])),
        "ERR_VALIDATION_FLAGS"
    );
    home.json(&["stop", &src]);

    // A policy given on the command line replaces the snapshot's (and its ports).
    let no_ports = ["--network-policy", "allow-all"];
    let c = vm_ids(&parse(&restore(&no_ports)));
    assert_eq!(c.len(), 1);
    home.json(&["remove", "--force", &c[0]]);

    // Not enough memory for that many clones.
    let free_mib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .unwrap()
        >> 10;
    if (1024 + 64) * 100 > free_mib {
        let mut a = no_ports.to_vec();
        a.extend_from_slice(&["--count", "100"]);
        assert_eq!(error_code(&restore(&a)), "ERR_HOST_MEMORY_INSUFFICIENT");
        nothing_new("not enough memory");
    } else {
        eprintln!("note: {free_mib} MiB free: 100 clones of 1 GiB fit, memory check not exercised");
    }

    let meta_path = dir.join("metadata.json");
    let meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut m = meta.clone();
        f(&mut m);
        let tmp = dir.join("metadata.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&m).unwrap()).unwrap();
        std::fs::rename(&tmp, &meta_path).unwrap();
    };

    // An unsupported Firecracker version.
    edit(&|m| m["firecrackerVersion"] = "1.4.0".into());
    assert_eq!(
        error_code(&restore(&no_ports)),
        "ERR_VM_SNAPSHOT_INCOMPATIBLE"
    );
    nothing_new("unsupported version");
    // Metadata from a newer vmsan.
    edit(&|m| m["schemaVersion"] = 99.into());
    assert_eq!(
        error_code(&restore(&no_ports)),
        "ERR_VM_SNAPSHOT_INCOMPATIBLE"
    );
    edit(&|m| *m = meta.clone());

    // Damaged files. Each is replaced by a damaged one and put back afterwards (a hard link
    // keeps the original, sparse as it is).
    let damage = |name: &str, damaged: Option<Vec<u8>>| {
        let p = dir.join(name);
        let keep = work.path().join(format!("keep-{name}"));
        std::fs::hard_link(&p, &keep).unwrap();
        std::fs::remove_file(&p).unwrap();
        if let Some(bytes) = damaged {
            std::fs::write(&p, bytes).unwrap();
        }
        assert_eq!(
            error_code(&restore(&no_ports)),
            "ERR_VM_SNAPSHOT_CORRUPT",
            "{name}"
        );
        nothing_new(name);
        let _ = std::fs::remove_file(&p);
        std::fs::rename(&keep, &p).unwrap();
    };
    let head = |name: &str, n: usize| {
        let mut b = vec![0u8; n];
        std::io::Read::read_exact(&mut std::fs::File::open(dir.join(name)).unwrap(), &mut b)
            .unwrap();
        b
    };
    damage("memory", Some(head("memory", 4096)));
    damage("vmstate", None);
    let mut flipped = std::fs::read(dir.join("vmstate")).unwrap();
    flipped[10] ^= 0x20;
    damage("vmstate", Some(flipped));
    damage("disk.ext4", Some(head("disk.ext4", 1 << 20)));
    // Intact again: it restores.
    let c = vm_ids(&parse(&restore(&no_ports)));
    home.json(&["remove", "--force", &c[0]]);

    // Archives: truncated, flipped, from another version. Nothing is imported.
    let archive = work.path().join("a.tar");
    home.json(&["snapshot", "export", &snap_id, archive.to_str().unwrap()]);
    let bytes = std::fs::read(&archive).unwrap();
    home.json(&["snapshot", "delete", &snap_id]);
    let import = |b: &[u8]| {
        let p = work.path().join("bad.tar");
        std::fs::write(&p, b).unwrap();
        let code = error_code(&home.run(&["--json", "snapshot", "import", p.to_str().unwrap()]));
        assert_eq!(home.json(&["snapshot", "list"])["count"], 0);
        assert_eq!(
            std::fs::read_dir(home.dir.path().join("snapshots"))
                .unwrap()
                .count(),
            0
        );
        code
    };
    assert_eq!(import(&bytes[..bytes.len() / 2]), "ERR_VM_SNAPSHOT_CORRUPT");
    let mut flipped = bytes.clone();
    let last_data = flipped.len() - 1024 - 600; // inside the last file's data, before tar's end
    flipped[last_data] ^= 1;
    assert_eq!(import(&flipped), "ERR_VM_SNAPSHOT_CORRUPT");
    let text = String::from_utf8_lossy(&bytes[512..4096]).into_owned();
    assert!(
        text.contains("\"firecrackerVersion\": \"1.16.1\""),
        "{text}"
    );
    let mut other_version = bytes.clone();
    let at = other_version
        .windows(26)
        .position(|w| w == b"\"firecrackerVersion\": \"1.1")
        .unwrap();
    other_version[at + 25] = b'2'; // 1.16.1 -> 1.26.1, same length
    assert_eq!(import(&other_version), "ERR_VM_SNAPSHOT_INCOMPATIBLE");
    assert_eq!(
        import(b"not a tar at all, just some text"),
        "ERR_VM_SNAPSHOT_CORRUPT"
    );

    home.json(&["remove", "--force", &src]);
    let left = leftovers(home.dir.path(), &net.host, &src);
    assert!(left.is_empty(), "{left:#?}");
}

/// Poll `what` until it holds (a condition another process brings about), for at most 60 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::yield_now();
    }
}

/// Kills and reaps the child when dropped: a failed assertion must not leave a `snapshot
/// create` blocked on the FIFO for ever (it would keep the host-wide test lock it inherited).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 17 item 9: a `snapshot create` killed (SIGKILL or SIGTERM) while it holds the VM
/// paused. The VM's disk is replaced by a FIFO nobody writes, so the command blocks for ever
/// in the disk copy, after Firecracker paused the VM and wrote its snapshot: the moment of
/// the kill is certain, not a race. The VM must be resumed by its supervisor, shown as
/// `paused` meanwhile, and nothing of the run left.
#[test]
fn privileged_e2e_killed_snapshot_resumes_the_vm() {
    let Some(fx) = fixture() else { return };
    let (home, work) = (&fx.home, &fx.work);
    let src = home.json(&["create", "--from-image", "busybox"]);
    let src = src["vmId"].as_str().unwrap().to_owned();
    let disk = home.dir.path().join("vms").join(&src).join("disk.ext4");
    let aside = work.path().join("disk-aside");
    let jail = std::path::PathBuf::from(state(home, &src)["chrootDir"].as_str().unwrap());
    let snapshots = home.dir.path().join("snapshots");

    for signal in ["KILL", "TERM"] {
        std::fs::rename(&disk, &aside).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&disk)
            .status()
            .unwrap();
        assert!(made.success());
        let calls_before = api_calls(home, &src).len();
        let mut cli = KillOnDrop(
            home.vmsan()
                .args(["--json", "snapshot", "create", &src])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        // Paused, and Firecracker's snapshot written: the command is now stuck on the FIFO.
        wait_until("the VM paused and its snapshot written", || {
            assert!(cli.0.try_wait().unwrap().is_none(), "snapshot create ended");
            let calls = api_calls(home, &src);
            calls[calls_before..]
                .iter()
                .any(|c| c.contains("/snapshot/create"))
        });
        let listed = home.json(&["list"]);
        assert_eq!(listed["vms"][0]["status"], "paused", "{listed}");
        assert_eq!(home.json(&["inspect", &src])["vm"]["status"], "paused");

        let killed = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &cli.0.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = cli.0.wait().unwrap();
        assert!(!status.success(), "SIG{signal}: {status:?}");

        wait_until("the supervisor resumed the VM", || {
            let st = state(home, &src);
            st["status"] == "running" && st.get("snapshotRun").is_none()
        });
        let calls = api_calls(home, &src);
        let tail = &calls[calls_before..];
        let paused = position(tail, &["\"/vm\"", "Paused"]);
        let resumed = position(tail, &["\"/vm\"", "Resumed"]);
        assert!(paused < resumed, "SIG{signal}: {tail:#?}");
        assert_eq!(sh(home, &src, "echo resumed"), "resumed");
        let debris: Vec<_> = std::fs::read_dir(&snapshots)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(debris.is_empty(), "SIG{signal}: left {debris:?}");
        assert!(!jail.join("snapshot-out").exists(), "SIG{signal}");

        std::fs::remove_file(&disk).unwrap();
        std::fs::rename(&aside, &disk).unwrap();
    }
    // And the next snapshot is taken as usual.
    let snap = home.json(&["snapshot", "create", &src]);
    assert_eq!(home.json(&["list"])["vms"][0]["status"], "running");
    home.json(&["snapshot", "delete", snap["snapshotId"].as_str().unwrap()]);
}

/// Rewrite the manifest (the archive's first entry, which carries the metadata) of a snapshot
/// archive: parsed, changed by `f`, written back compact and padded with spaces to its old
/// length, so the tar headers stay valid. What an attacker crafting an archive can do.
fn craft(archive: &[u8], f: impl Fn(&mut Value)) -> Vec<u8> {
    let size_field = std::str::from_utf8(&archive[124..136]).unwrap();
    let size =
        usize::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap();
    let mut doc: Value = serde_json::from_slice(&archive[512..512 + size]).unwrap();
    f(&mut doc);
    let mut text = serde_json::to_vec(&doc).unwrap();
    assert!(text.len() <= size, "the crafted manifest does not fit");
    text.resize(size, b' ');
    let mut out = archive.to_vec();
    out[512..512 + size].copy_from_slice(&text);
    out
}

/// Issue 17 item 10: an imported snapshot's metadata does not decide what the host exposes
/// (published ports, resolvers, TAP and namespace names), and every value a `create` flag
/// could set passes that flag's validator.
#[test]
fn privileged_e2e_imported_snapshot_metadata_is_not_trusted() {
    let Some(fx) = fixture() else { return };
    let (home, work) = (&fx.home, &fx.work);
    let src = home.json(&["create", "--from-image", "busybox"]);
    let src = src["vmId"].as_str().unwrap().to_owned();
    let snap = home.json(&["snapshot", "create", &src]);
    let snap_id = snap["snapshotId"].as_str().unwrap().to_owned();
    let archive = work.path().join("a.tar");
    home.json(&["snapshot", "export", &snap_id, archive.to_str().unwrap()]);
    home.json(&["snapshot", "delete", &snap_id]);
    home.json(&["remove", "--force", &src]);
    let bytes = std::fs::read(&archive).unwrap();
    let import = |b: &[u8]| {
        let p = work.path().join("crafted.tar");
        std::fs::write(&p, b).unwrap();
        home.run(&["--json", "snapshot", "import", p.to_str().unwrap()])
    };
    let nothing_imported = |what: &str| {
        assert_eq!(home.json(&["snapshot", "list"])["count"], 0, "{what}");
        let left = std::fs::read_dir(home.dir.path().join("snapshots"))
            .unwrap()
            .count();
        assert_eq!(left, 0, "{what}: debris");
    };

    // Values `create` would refuse: refused at import, nothing imported.
    let set_size = |m: &mut Value, file: &str, size: u64| {
        m["metadata"]["files"][file]["size"] = size.into();
        for f in m["files"].as_array_mut().unwrap() {
            if f["name"] == file {
                f["size"] = size.into();
            }
        }
    };
    type Edit<'a> = Box<dyn Fn(&mut Value) + 'a>;
    let cases: Vec<(&str, Edit<'_>, &str)> = vec![
        (
            "a 4 TiB disk",
            Box::new(|m| set_size(m, "disk.ext4", 4 << 40)),
            "ERR_VALIDATION_DISK_SIZE",
        ),
        (
            "64 GiB of memory",
            Box::new(|m| {
                m["metadata"]["memMib"] = 65536.into();
                set_size(m, "memory", 65536 << 20);
            }),
            "ERR_VALIDATION_INTEGER",
        ),
        (
            "host port 0",
            Box::new(|m| {
                m["metadata"]["network"]["publishedPorts"] =
                    serde_json::json!([{"hostPort": 0, "guestPort": 22, "protocol": "tcp"}]);
            }),
            "ERR_VALIDATION_PORT",
        ),
        (
            "an 8 EiB state file",
            Box::new(|m| set_size(m, "vmstate", 8 << 60)),
            "ERR_VM_SNAPSHOT_CORRUPT",
        ),
        (
            "an unknown policy",
            Box::new(|m| m["metadata"]["network"]["networkPolicy"] = "allow-everything".into()),
            "ERR_VALIDATION_NETWORK_POLICY",
        ),
    ];
    for (what, f, code) in &cases {
        let out = import(&craft(&bytes, f));
        assert_eq!(error_code(&out), *code, "{what}: {}", parse(&out));
        nothing_imported(what);
    }

    // Host-side settings are dropped at import: no published port (host port 2222 on every
    // interface), no resolver of the archive's choosing, no TAP or namespace names.
    let crafted = craft(&bytes, |m| {
        let net = &mut m["metadata"]["network"];
        net["publishedPorts"] =
            serde_json::json!([{"hostPort": 2222, "guestPort": 22, "protocol": "tcp"}]);
        net["dnsServers"] = serde_json::json!(["203.0.113.53"]);
        net["tapDevice"] = "evil0".into();
        net["netnsName"] = "evil-ns".into();
    });
    let out = import(&crafted);
    assert!(out.status.success(), "{}", parse(&out));
    let meta: Value = serde_json::from_slice(
        &std::fs::read(
            home.dir
                .path()
                .join("snapshots")
                .join(&snap_id)
                .join("metadata.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        meta["network"]["publishedPorts"],
        serde_json::json!([]),
        "{meta}"
    );
    assert_eq!(
        meta["network"]["dnsServers"],
        serde_json::json!([]),
        "{meta}"
    );
    assert_eq!(meta["network"]["tapDevice"], "", "{meta}");
    assert!(meta["network"]["netnsName"].is_null(), "{meta}");

    let clone = vm_ids(&home.json(&["create", "--snapshot", &snap_id]))[0].clone();
    let st = state(home, &clone);
    assert_eq!(
        st["network"]["publishedPorts"],
        serde_json::json!([]),
        "{st}"
    );
    let dns = st["network"]["dnsServers"].as_array().unwrap();
    assert!(
        !dns.is_empty() && !dns.contains(&"203.0.113.53".into()),
        "{st}"
    );
    assert_ne!(st["network"]["tapDevice"], "evil0");
    assert_ne!(st["network"]["netnsName"], "evil-ns");
    assert_eq!(sh(home, &clone, "echo restored"), "restored");
    home.json(&["remove", "--force", &clone]);

    // Asked for on the command line, a port is published.
    let clone = vm_ids(&home.json(&[
        "create",
        "--snapshot",
        &snap_id,
        "--publish-port",
        "18081:80",
    ]))[0]
        .clone();
    let st = state(home, &clone);
    assert_eq!(
        st["network"]["publishedPorts"][0]["hostPort"], 18081,
        "{st}"
    );
    home.json(&["remove", "--force", &clone]);
    home.json(&["snapshot", "delete", &snap_id]);
}
