//! Shared test plumbing: spawning the stand-in, network namespaces with a TAP, console capture.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

pub mod cases;

pub use vmsan_testkit::http::call;

pub fn fc_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_firecracker-standin"))
}

pub fn jailer_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jailer-standin"))
}

pub fn guest_util_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_standin-guest-util"))
}

/// Waits for a Unix socket to accept connections (no event exists for "a socket was bound"
/// by another process: poll with a deadline).
pub fn wait_socket(p: &Path, deadline: Duration) {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if std::os::unix::net::UnixStream::connect(p).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("socket {} never came up", p.display());
}

/// A stand-in process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn_fc(dir: &Path, extra: &[&str]) -> (Proc, PathBuf) {
    let sock = dir.join("api.sock");
    let mut cmd = Command::new(fc_bin());
    cmd.arg("--api-sock").arg(&sock).args(extra);
    cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
    let child = cmd.spawn().unwrap();
    wait_socket(&sock, Duration::from_secs(10));
    (Proc(child), sock)
}

/// Lines of a child's stdout, readable with a deadline.
pub struct Console {
    rx: Receiver<String>,
    pub seen: Vec<String>,
}

impl Console {
    pub fn new(out: impl std::io::Read + Send + 'static) -> Self {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { return };
                eprintln!("[guest] {l}");
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("no console line with {needle:?}; saw {:#?}", self.seen),
            }
        }
    }

    pub fn line_with(&self, needle: &str) -> Option<&String> {
        self.seen.iter().find(|l| l.contains(needle))
    }
}

fn run(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?} failed");
}

/// A network namespace with a TAP owned by `owner`, addressed 10.0.0.1/30; removed on drop.
pub struct NetNs {
    pub name: String,
    pub tap: String,
}

impl NetNs {
    pub fn new(tag: &str, owner: u32) -> Self {
        let name = format!("standin-t-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", &name]);
        let ns = Self {
            name,
            tap: "tap0".into(),
        };
        let o = owner.to_string();
        run(&[
            "ip", "-n", &ns.name, "tuntap", "add", "dev", "tap0", "mode", "tap", "user", &o,
            "group", &o,
        ]);
        run(&[
            "ip",
            "-n",
            &ns.name,
            "addr",
            "add",
            "10.0.0.1/30",
            "dev",
            "tap0",
        ]);
        run(&["ip", "-n", &ns.name, "link", "set", "tap0", "up"]);
        run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Loop devices whose backing file lies under `dir`.
pub fn loops_backed_by(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file"))
            && b.trim().starts_with(&dir.to_string_lossy().to_string())
        {
            out.push(format!("{name} -> {}", b.trim()));
        }
    }
    out
}

/// Processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let me = std::process::id().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.bytes().all(|b| b.is_ascii_digit()) || n == me {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let s = String::from_utf8_lossy(&c).replace('\0', " ");
            if s.contains(needle) {
                out.push(format!("{n}: {s}"));
            }
        }
    }
    out
}

/// Polls `f` until it returns true (for kernel teardown that has no event, e.g. loop autoclear).
pub fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(f(), "{what} did not happen within {timeout:?}");
}

pub fn skip_unless_root() -> bool {
    if !vmsan_testkit::standin::is_root() {
        vmsan_testkit::skip!("needs root (namespaces, loop devices, TAPs)");
        return true;
    }
    if !vmsan_testkit::fixture::BusyboxGuest::available() {
        vmsan_testkit::skip!(
            "{} missing (apt-get install busybox-static)",
            vmsan_testkit::fixture::BUSYBOX
        );
        return true;
    }
    false
}
