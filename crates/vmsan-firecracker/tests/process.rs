//! Pid + start-time identity against real child processes.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::{Child, Command, Stdio};

use nix::sys::wait::{Id, WaitPidFlag, waitid};
use vmsan_firecracker::process::{Liveness, ProcessIdentity, parse_proc_stat, read_proc_stat};

/// A `cat` that lives until its stdin is closed; killed and reaped on drop.
struct Cat(Child);

impl Cat {
    fn spawn() -> Self {
        Self(
            Command::new("cat")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
    fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).unwrap()
    }
}

impl Drop for Cat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Blocks until the child has exited, leaving it a zombie (not reaped).
fn wait_exited_not_reaped(pid: i32) {
    waitid(
        Id::Pid(nix::unistd::Pid::from_raw(pid)),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
    )
    .unwrap();
}

#[test]
fn parses_stat_lines_with_awkward_names() {
    let line = "4242 (we ird) (name)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50 18446744073709551615";
    let stat = parse_proc_stat(line).unwrap();
    assert_eq!(stat.pid, 4242);
    assert_eq!(stat.comm, "we ird) (name)");
    assert_eq!(stat.state, 'S');
    assert_eq!(stat.ppid, 1);
    assert_eq!(stat.start_time, 987_654);
    assert!(parse_proc_stat("12 (x) S 1 2").is_none());
    assert!(parse_proc_stat("garbage").is_none());
}

#[test]
fn own_process_matches_proc() {
    let me = i32::try_from(std::process::id()).unwrap();
    let stat = read_proc_stat(me).unwrap().unwrap();
    assert_eq!(stat.pid, me);
    assert_eq!(stat.ppid, nix::unistd::getppid().as_raw());
    let identity = ProcessIdentity::of(me).unwrap();
    assert_eq!(identity.start_time, stat.start_time);
    assert_eq!(identity.liveness().unwrap(), Liveness::Alive);
}

#[test]
fn live_child_then_zombie_then_gone() {
    let mut cat = Cat::spawn();
    let pid = cat.pid();
    let identity = ProcessIdentity::of(pid).unwrap();
    assert_eq!(identity.pid, pid);
    assert_eq!(identity.liveness().unwrap(), Liveness::Alive);

    // End it (stdin closed) and wait for the exit without reaping: a zombie is not alive.
    drop(cat.0.stdin.take());
    wait_exited_not_reaped(pid);
    assert_eq!(read_proc_stat(pid).unwrap().unwrap().state, 'Z');
    assert_eq!(identity.liveness().unwrap(), Liveness::Exited);
    assert!(ProcessIdentity::of(pid).is_err());

    // Reaped: the pid is gone.
    assert!(cat.0.wait().unwrap().success());
    assert_eq!(identity.liveness().unwrap(), Liveness::Exited);
    assert!(read_proc_stat(pid).unwrap().is_none());
}

#[test]
fn another_start_time_means_the_pid_was_reused() {
    let cat = Cat::spawn();
    let real = ProcessIdentity::of(cat.pid()).unwrap();
    let recorded = ProcessIdentity {
        pid: real.pid,
        start_time: real.start_time.wrapping_sub(1),
    };
    assert_eq!(recorded.liveness().unwrap(), Liveness::PidReused);
    // exe_is refuses a reused pid even when the binary matches.
    let cat_path = std::fs::canonicalize(format!("/proc/{}/exe", real.pid)).unwrap();
    assert!(real.exe_is(&cat_path).unwrap());
    assert!(!recorded.exe_is(&cat_path).unwrap());
}

#[test]
fn exe_is_compares_the_running_binary() {
    let cat = Cat::spawn();
    let identity = ProcessIdentity::of(cat.pid()).unwrap();
    let cat_path = std::fs::canonicalize(which("cat")).unwrap();
    assert!(identity.exe_is(&cat_path).unwrap());
    // A copy of the same bytes is a different file.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("cat");
    std::fs::copy(&cat_path, &copy).unwrap();
    assert!(!identity.exe_is(&copy).unwrap());
    let other = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
    assert!(!identity.exe_is(&other).unwrap());
}

#[test]
fn invalid_pids_are_refused() {
    assert!(read_proc_stat(0).is_err());
    assert!(read_proc_stat(-5).is_err());
    assert!(ProcessIdentity::of(0).is_err());
}

fn which(name: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
        .unwrap()
}

#[test]
fn credentials_of_a_child() {
    let status =
        "Name:\tfirecracker\nUid:\t10000\t10001\t10000\t10000\nGid:\t20000\t20001\t20000\t20000\n";
    let creds = vmsan_firecracker::process::parse_status_credentials(status).unwrap();
    assert_eq!(
        (creds.uid, creds.euid, creds.gid, creds.egid),
        (10_000, 10_001, 20_000, 20_001)
    );
    assert!(vmsan_firecracker::process::parse_status_credentials("Name:\tx\n").is_none());

    let mut cat = Cat::spawn();
    let identity = ProcessIdentity::of(cat.pid()).unwrap();
    let creds = identity.credentials().unwrap().unwrap();
    assert_eq!(creds.uid, nix::unistd::getuid().as_raw());
    assert_eq!(creds.egid, nix::unistd::getegid().as_raw());
    drop(cat.0.stdin.take());
    cat.0.wait().unwrap();
    assert_eq!(identity.credentials().unwrap(), None);
}

#[test]
fn privileged_credentials_show_the_dropped_uid() {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        vmsan_testkit::skip!("needs root to start a process as another uid");
        return;
    }
    let child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .uid(61_234)
        .gid(61_235)
        .spawn()
        .unwrap();
    let mut cat = Cat(child);
    let identity = ProcessIdentity::of(cat.pid()).unwrap();
    let creds = identity.credentials().unwrap().unwrap();
    assert_eq!(
        (creds.uid, creds.euid, creds.gid, creds.egid),
        (61_234, 61_234, 61_235, 61_235)
    );
    drop(cat.0.stdin.take());
    cat.0.wait().unwrap();
}

#[test]
fn identity_serialises_for_the_state_file() {
    let identity = ProcessIdentity {
        pid: 4242,
        start_time: 987_654,
    };
    let json = serde_json::to_value(identity).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"pid": 4242, "start_time": 987_654})
    );
    assert_eq!(
        serde_json::from_value::<ProcessIdentity>(json).unwrap(),
        identity
    );
    assert_eq!(
        serde_json::to_value(Liveness::PidReused).unwrap(),
        serde_json::json!("pid_reused")
    );
}
