//! Everything that crosses between a caller (`create`, `start`, `stop`, `network`, `exec
//! --timeout`) and a VM's supervisor, in one place. The supervisor is another process, started
//! by the caller and outliving it; besides the VM's state record (which both read and write
//! under the store's lock) they talk only through:
//!
//! - its command line: [`SupervisorCommand`] plus the VM's id, and the state home in
//!   [`crate::paths::HOME_ENV`];
//! - its standard input: [`GO_LINE`] once the VM's disk and config drive are ready (anything
//!   else, or end of input, cancels the boot);
//! - its standard output: one [`Report`] line;
//! - its standard error: the VM's `supervisor.log` (see `supervisor_log`);
//! - signals: [`STOP_SIGNAL`] (stop the VM gracefully) and [`RELOAD_SIGNAL`] (re-read the
//!   VM's state: policy, timeout holds).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::stopwatch::Step;
use crate::error::{Error, ErrorCode};
use crate::state::{BootSettings, ProcessId};
use crate::sys::proc::PidFd;

/// How to start a supervisor: the front end's program and the arguments that make it run
/// [`super::supervise`]; the VM's id is appended. The engine does not assume it runs inside
/// any particular binary: the front end that links it says how to reach its entry point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorCommand {
    /// The program to execute.
    pub program: PathBuf,
    /// Its arguments before the VM's id.
    pub args: Vec<OsString>,
}

/// What the spawning command writes to the supervisor's standard input once the VM's disk
/// and config drive are ready.
pub(crate) const GO_LINE: &str = "go\n";

/// Sent to a supervisor: stop the VM gracefully (agent power-off, then Ctrl-Alt-Del, then
/// SIGKILL), tear down, exit.
pub(crate) const STOP_SIGNAL: nix::sys::signal::Signal = nix::sys::signal::Signal::SIGTERM;
/// Sent to a supervisor: re-read the VM's state (network policy, timeout holds).
pub(crate) const RELOAD_SIGNAL: nix::sys::signal::Signal = nix::sys::signal::Signal::SIGUSR1;

/// How long the guest has to boot and announce its agent, unless the VM says otherwise
/// (`--boot-timeout`).
pub(crate) const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `create`/`start` wait for the supervisor's report beyond the VM's boot timeout
/// (the supervisor's other steps have their own, shorter deadlines; this only guards against
/// a supervisor that hangs).
pub(crate) const REPORT_MARGIN: Duration = Duration::from_secs(90);
/// The boot timeout of a VM with these settings: the supervisor's deadline, and (with a
/// margin) how long the caller waits for the report.
pub(crate) fn boot_timeout(boot: &BootSettings) -> Duration {
    boot.boot_timeout_ms
        .map_or(BOOT_TIMEOUT, Duration::from_millis)
}

/// The supervisor's one-line report of a boot.
#[derive(Debug)]
pub(crate) enum Report {
    /// `ready {"steps":[…],"startedAtMs":…}`: the agent has announced itself.
    Ready {
        /// The supervisor's steps.
        steps: Vec<Step>,
        /// When its `main` began (ms since the epoch).
        started_at: f64,
    },
    /// `error <error JSON>`: the boot failed and was undone.
    Failed(Error),
}

impl Report {
    /// The line as written to the caller.
    pub(crate) fn to_line(&self) -> String {
        match self {
            Report::Ready { steps, started_at } => format!(
                "ready {}\n",
                serde_json::json!({ "steps": steps, "startedAtMs": started_at })
            ),
            Report::Failed(e) => format!("error {}\n", e.to_json()),
        }
    }

    /// Read a report line; `None` when it is neither (the supervisor died without reporting).
    pub(crate) fn parse(line: &str) -> Option<Report> {
        let line = line.trim_end();
        if let Some(json) = line.strip_prefix("ready") {
            // The timings are informative, so a bad document is not fatal.
            let doc = serde_json::from_str::<serde_json::Value>(json.trim()).unwrap_or_default();
            let steps = serde_json::from_value(doc["steps"].clone()).unwrap_or_default();
            let started_at = doc["startedAtMs"].as_f64().unwrap_or(0.0);
            return Some(Report::Ready { steps, started_at });
        }
        let json = line.strip_prefix("error ")?;
        let v = serde_json::from_str::<serde_json::Value>(json).ok()?;
        let code = v["code"]
            .as_str()
            .and_then(ErrorCode::parse)
            .unwrap_or(ErrorCode::VmCreateFailed);
        let mut e = Error::new(
            code,
            v["message"].as_str().unwrap_or("the VM failed to start"),
        );
        if let Some(why) = v["why"].as_str() {
            e = e.why(why);
        }
        Some(Report::Failed(e))
    }
}

/// Ask a VM's supervisor to stop the VM gracefully, and wait until it has (or `timeout`).
/// Returns whether the supervisor is gone.
pub(crate) fn request_stop(sup: &ProcessId, timeout: Duration) -> bool {
    signal_and_wait(sup, STOP_SIGNAL as libc::c_int, timeout)
}

/// Ask a VM's supervisor to re-read the VM's state. A supervisor that is gone needs no telling.
pub(crate) fn request_reload(sup: &ProcessId) {
    if crate::process::is_alive(sup)
        && let Ok(pid) = i32::try_from(sup.pid)
    {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), RELOAD_SIGNAL);
    }
}

/// Kill a process identified by pid and start time, and wait for it to go.
pub(crate) fn kill_and_wait(p: &ProcessId, timeout: Duration) -> bool {
    signal_and_wait(p, libc::SIGKILL, timeout)
}

/// Send `sig` to exactly this process (never to a later one that reused its pid: the pidfd
/// is opened first, then the identity checked), and wait for its exit. Returns whether it is
/// gone.
fn signal_and_wait(p: &ProcessId, sig: libc::c_int, timeout: Duration) -> bool {
    let Ok(fd) = PidFd::open(p.pid) else {
        return true;
    };
    if !crate::process::is_alive(p) {
        return true;
    }
    let _ = fd.signal(sig);
    fd.wait_exit(timeout).unwrap_or(false)
}
