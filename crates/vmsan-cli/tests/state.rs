//! `list`, `inspect` and `logs` against a real state store in a temporary `VMSAN_HOME`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers may unwrap.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command as StdCommand, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;
use vmsan_core::VmId;
use vmsan_core::paths::Paths;
use vmsan_core::process;
use vmsan_core::state::{
    ImageState, NetworkPolicy, Runtime, RuntimeName, StateStore, VmState, VmStatus,
};

struct Home {
    dir: tempfile::TempDir,
    store: StateStore,
}

impl Home {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store =
            StateStore::open(&Paths::new(dir.path()).with_run_dir(dir.path().join("run"))).unwrap();
        Self { dir, store }
    }

    fn paths(&self) -> Paths {
        Paths::new(self.dir.path())
    }

    fn add(&self, created_at: &str, f: impl FnOnce(&mut VmState)) -> VmId {
        let st = self
            .store
            .create(|id, _slot| {
                let mut st = VmState::new(id.clone(), created_at);
                f(&mut st);
                st
            })
            .unwrap();
        st.id
    }

    fn vmsan(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vmsan"));
        c.env("VMSAN_HOME", self.dir.path());
        c
    }

    fn json(&self, args: &[&str]) -> (i32, Value) {
        let out = self.vmsan().arg("--json").args(args).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "one line: {text}");
        (
            out.status.code().unwrap(),
            serde_json::from_str(&text).unwrap(),
        )
    }
}

/// A process standing in for a VM's Firecracker, killed and reaped on drop.
struct StandIn(Child);

impl StandIn {
    fn spawn() -> Self {
        Self(StdCommand::new("sleep").arg("infinity").spawn().unwrap())
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn list_json_and_table() {
    let home = Home::new();
    let a = home.add("2026-01-01T00:00:00.000Z", |s| {
        s.status = VmStatus::Stopped;
        s.vcpu_count = 2;
        s.mem_size_mib = 512;
        s.runtime = RuntimeName::Named(Runtime::Node22);
    });
    let b = home.add("2026-01-02T00:00:00.000Z", |s| {
        s.status = VmStatus::Stopped;
        s.network.guest_ip = Some(std::net::Ipv4Addr::new(198, 18, 0, 2));
        s.project = "web".into();
    });
    // A corrupt one next to them.
    let bad = home.paths().vms_dir().join("vm-deadbeef");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("state.json"), b"{ not json").unwrap();

    let (rc, doc) = home.json(&["list"]);
    assert_eq!(rc, 0);
    assert_eq!(doc["schemaVersion"], 1);
    assert_eq!(doc["count"], 2);
    assert_eq!(doc["statuses"]["stopped"], 2);
    let vms = doc["vms"].as_array().unwrap();
    assert_eq!(vms[0]["id"], b.as_str(), "newest first");
    assert_eq!(vms[1]["id"], a.as_str());
    assert_eq!(vms[1]["vcpuCount"], 2);
    assert_eq!(vms[1]["memSizeMib"], 512);
    assert_eq!(vms[1]["runtime"], "node22");
    assert_eq!(vms[0]["guestIp"], "198.18.0.2");
    assert_eq!(vms[0]["project"], "web");
    assert_eq!(doc["corrupt"][0]["id"], "vm-deadbeef");

    let out = home.vmsan().arg("ls").output().unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID"), "{table}");
    for col in [
        "STATUS", "CREATED", "MEMORY", "VCPUS", "IMAGE", "IP", "TIMEOUT", "SNAPSHOT",
    ] {
        assert!(lines[0].contains(col), "{col}: {table}");
    }
    assert!(table.contains("512 MiB") && table.contains("node22") && table.contains("days ago"));
    assert!(table.contains("vm-deadbeef") && table.contains("corrupt"));
    assert!(
        !table.contains('\x1b'),
        "no colours when stdout is not a terminal"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("vm-deadbeef"),
        "the corrupt state is reported: {err}"
    );
}

#[test]
fn list_empty() {
    let home = Home::new();
    let out = home.vmsan().arg("list").output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "No VMs found.\n");
    let (_, doc) = home.json(&["list"]);
    assert_eq!(
        (doc["count"].as_u64(), doc["vms"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );
}

#[test]
fn inspect_json_and_human() {
    let home = Home::new();
    let id = home.add("2026-01-01T00:00:00.000Z", |s| {
        s.status = VmStatus::Stopped;
        s.agent_token = Some("secret-token".into());
        s.network.network_policy = NetworkPolicy::DenyAll;
        s.isolation.seccomp = false;
    });
    let (rc, doc) = home.json(&["inspect", id.as_str()]);
    assert_eq!(rc, 0);
    assert_eq!(doc["schemaVersion"], 1);
    assert_eq!(doc["vm"]["id"], id.as_str());
    assert_eq!(doc["vm"]["status"], "stopped");
    assert!(
        doc["vm"].get("agentToken").is_none(),
        "never print the token: {doc}"
    );
    assert!(!doc.to_string().contains("secret-token"));

    let out = home
        .vmsan()
        .args(["inspect", id.as_str()])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(&format!("VM {id}\n")), "{text}");
    assert!(
        text.contains("deny-all") && text.contains("without seccomp"),
        "{text}"
    );
    assert!(!text.contains("secret-token"));

    let (rc, doc) = home.json(&["inspect", "vm-00000000"]);
    assert_eq!(
        (rc, &doc["error"]["code"]),
        (1, &Value::from("ERR_VM_NOT_FOUND"))
    );
}

#[test]
fn logs_all_tail_and_json() {
    let home = Home::new();
    let id = home.add("2026-01-01T00:00:00.000Z", |s| s.status = VmStatus::Stopped);
    // No log yet: empty, not an error.
    let (rc, doc) = home.json(&["logs", id.as_str()]);
    assert_eq!((rc, doc["lines"].as_array().map(Vec::len)), (0, Some(0)));

    let log: String = (1..=10).map(|i| format!("boot line {i}\n")).collect();
    std::fs::write(home.paths().serial_log(&id), &log).unwrap();
    let out = home.vmsan().args(["logs", id.as_str()]).output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), log);
    let out = home
        .vmsan()
        .args(["logs", id.as_str(), "--tail", "2"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "boot line 9\nboot line 10\n"
    );
    let (_, doc) = home.json(&["logs", id.as_str(), "--tail", "3"]);
    assert_eq!(
        doc["lines"],
        serde_json::json!(["boot line 8", "boot line 9", "boot line 10"])
    );
    assert_eq!(doc["vmId"], id.as_str());
}

#[test]
fn logs_follow_streams_until_the_vm_stops() {
    let home = Home::new();
    let fc = StandIn::spawn();
    let ident = process::identify(fc.0.id()).expect("identify the stand-in process");
    let id = home.add("2026-01-01T00:00:00.000Z", |s| {
        s.status = VmStatus::Running;
        s.vmm = Some(ident);
        s.pid = Some(ident.pid);
    });
    let log_path = home.paths().serial_log(&id);
    std::fs::write(&log_path, "first\n").unwrap();

    let mut child = StdCommand::new(env!("CARGO_BIN_EXE_vmsan"))
        .args(["logs", "-f", id.as_str()])
        .env("VMSAN_HOME", home.dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a line within 10 s")
    };
    assert_eq!(next(), "first");

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .unwrap();
    writeln!(f, "second").unwrap();
    assert_eq!(next(), "second");
    writeln!(f, "third").unwrap();
    assert_eq!(next(), "third");

    // The VM stops: logs -f prints what is left and exits 0.
    writeln!(f, "last words").unwrap();
    home.store
        .update(&id, |s| {
            s.status = VmStatus::Stopped;
            Ok(())
        })
        .unwrap();
    assert_eq!(next(), "last words");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    reader.join().unwrap();
}

/// Run `vmsan` with stdout on a real pseudo-terminal and return what it printed there.
fn run_on_pty(home: &Home, args: &[&str], no_color: bool) -> Option<String> {
    use std::io::Read;
    let pty = match nix::pty::openpty(None, None) {
        Ok(p) => p,
        Err(e) => {
            vmsan_testkit::skip!("no pseudo-terminal available here ({e})");
            return None;
        }
    };
    let mut cmd = StdCommand::new(env!("CARGO_BIN_EXE_vmsan"));
    cmd.args(args)
        .env("VMSAN_HOME", home.dir.path())
        .stdout(Stdio::from(pty.slave));
    if no_color {
        cmd.env("NO_COLOR", "1");
    } else {
        cmd.env_remove("NO_COLOR");
    }
    // `cmd` holds the only copy of the slave end; dropping it after the spawn lets the master
    // see end-of-file once the child exits.
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break, // EIO once the slave side is closed
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    assert!(child.wait().unwrap().success());
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn colours_only_on_a_terminal_without_no_color() {
    let home = Home::new();
    home.add("2026-01-01T00:00:00.000Z", |s| s.status = VmStatus::Stopped);
    let Some(tty) = run_on_pty(&home, &["list"], false) else {
        return;
    };
    assert!(tty.contains("\x1b["), "colours on a terminal: {tty:?}");
    assert!(tty.contains("stopped"));
    let plain = run_on_pty(&home, &["list"], true).unwrap();
    assert!(
        !plain.contains("\x1b["),
        "NO_COLOR turns colours off: {plain:?}"
    );
    assert!(plain.contains("stopped"));
    // --json never colours, terminal or not.
    let json = run_on_pty(&home, &["--json", "list"], false).unwrap();
    assert!(
        !json.contains("\x1b[") && json.contains("\"count\":1"),
        "{json:?}"
    );
}

/// Issue 17 item 6: text a guest (or an imported snapshot) controls reaches a terminal with
/// its control characters escaped: the image reference in `list` and `inspect`, the serial
/// log in `logs`. `--json` keeps the exact text (JSON escapes it), and `logs` into a pipe
/// keeps the guest's exact bytes.
#[test]
fn guest_text_is_escaped_on_a_terminal() {
    let home = Home::new();
    let evil = "img\x1b]0;pwned\x07\x1b[2J";
    let id = home.add("2026-01-01T00:00:00.000Z", |s| {
        s.status = VmStatus::Stopped;
        s.image = Some(ImageState {
            reference: evil.into(),
            digest: None,
        });
    });
    let log = b"boot ok\r\n\x1b[2J\x1b]0;owned\x07hidden\rshown\n";
    std::fs::write(home.paths().serial_log(&id), log).unwrap();

    let out = home.vmsan().arg("list").output().unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        !table.contains('\x1b') && !table.contains('\x07'),
        "{table:?}"
    );
    assert!(table.contains("img\\x1b]0;pwned\\x07\\x1b[2J"), "{table:?}");
    let out = home
        .vmsan()
        .args(["inspect", id.as_str()])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains('\x1b') && text.contains("img\\x1b]0;"),
        "{text:?}"
    );
    let (_, doc) = home.json(&["list"]);
    assert_eq!(doc["vms"][0]["image"], evil);

    let Some(tty) = run_on_pty(&home, &["logs", id.as_str()], true) else {
        return;
    };
    assert!(!tty.contains('\x1b'), "{tty:?}");
    assert!(
        tty.contains("\\x1b[2J\\x1b]0;owned\\x07hidden\\rshown"),
        "{tty:?}"
    );
    let out = home.vmsan().args(["logs", id.as_str()]).output().unwrap();
    assert_eq!(out.stdout, log, "logs into a pipe are the exact bytes");
}
