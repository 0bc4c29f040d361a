//! Tests that cannot run on this machine.
//!
//! A test that returns early passes, and nextest hides what it printed: a skipped privileged
//! test would look like a proven one. So every skip goes through [`skip!`]: under `CI=true` it
//! fails the test (CI machines are provisioned to run everything, and a skip there is a hole in
//! what CI proves); elsewhere it prints the reason and appends it to `$VMSAN_SKIP_LOG`, which
//! `scripts/test` prints as a summary at the end of the run.

use std::fmt::Arguments;
use std::io::Write;

/// Environment variable naming the file the skips are appended to.
pub const SKIP_LOG: &str = "VMSAN_SKIP_LOG";

/// Whether this run is CI's (`CI=true`, as CI services set it).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The running test's name: nextest names it in the environment; libtest names the thread.
fn test_name() -> String {
    std::env::var("NEXTEST_TEST_NAME")
        .ok()
        .or_else(|| {
            std::thread::current()
                .name()
                .filter(|n| *n != "main")
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "a test".to_owned())
}

/// Record a skip (use [`skip!`]). Panics under CI.
#[track_caller]
pub fn record(reason: Arguments<'_>) {
    let test = test_name();
    if in_ci() {
        panic!("{test} cannot run here, and CI=true: {reason}");
    }
    let line = format!("SKIPPED {test}: {reason}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os(SKIP_LOG) {
        // O_APPEND writes of one short line are atomic between the test processes.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

/// Say why the calling test cannot run here; the caller returns right after. Fails the test
/// under `CI=true`.
///
/// ```ignore
/// if !is_root() {
///     vmsan_testkit::skip!("needs root (namespaces)");
///     return;
/// }
/// ```
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {
        $crate::skip::record(::std::format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_skip_is_a_failure_in_ci() {
        // Child process: the environment is the process's own.
        if std::env::var_os("VMSAN_SKIP_SELFTEST").is_some() {
            crate::skip!("selftest {}", 42);
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skips");
        let run = |ci: &str| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "skip::tests::a_skip_is_a_failure_in_ci",
                    "--nocapture",
                ])
                .env("VMSAN_SKIP_SELFTEST", "1")
                .env("CI", ci)
                .env(super::SKIP_LOG, &log)
                .output()
                .unwrap()
        };
        let local = run("");
        assert!(local.status.success(), "{local:?}");
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(
            logged.contains("a_skip_is_a_failure_in_ci: selftest 42"),
            "{logged}"
        );
        let ci = run("true");
        assert!(!ci.status.success(), "a skip under CI=true passed: {ci:?}");
        assert!(
            String::from_utf8_lossy(&ci.stderr).contains("CI=true"),
            "{ci:?}"
        );
    }
}
