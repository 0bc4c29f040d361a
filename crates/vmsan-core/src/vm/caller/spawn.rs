//! Starting a VM's supervisor and waiting for its report: the caller's end of
//! [`crate::vm::protocol`].

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::error::{Error, ErrorCode, Result};
use crate::ids::VmId;
use crate::paths::Paths;
use crate::vm::files::VmFiles;
use crate::vm::protocol::{GO_LINE, REPORT_MARGIN, Report, SupervisorCommand, boot_timeout};
use crate::vm::stopwatch::Step;

/// Start a VM's supervisor, let it boot the VM at once, and wait for its report.
pub(super) fn run_supervisor(
    command: &SupervisorCommand,
    paths: &Paths,
    id: &VmId,
    boot: &crate::state::BootSettings,
) -> Result<Booted> {
    let mut sup = Spawned::start(command, paths, id, boot_timeout(boot))?;
    sup.go();
    sup.wait_report()
}

/// A supervisor (the front end's [`SupervisorCommand`] and the VM's id, in its own session) that has been started: it
/// prepares what it can, and boots the VM once [`Spawned::go`] says the VM's files are ready.
/// Its standard input is that go-ahead (`go` and a newline; anything else, or end of input,
/// makes it undo what it did and report an error); its standard output the one-line report.
pub(super) struct Spawned {
    id: VmId,
    files: VmFiles,
    child: std::process::Child,
    go: Option<std::process::ChildStdin>,
    report: Option<std::process::ChildStdout>,
    /// The VM's boot timeout and a margin.
    report_timeout: Duration,
    /// Where the supervisor's log stood when it was started: what it logs from there on is
    /// relayed once it has reported.
    log_from: u64,
}

impl Spawned {
    pub(super) fn start(
        command: &SupervisorCommand,
        paths: &Paths,
        id: &VmId,
        boot_timeout: Duration,
    ) -> Result<Self> {
        let files = VmFiles::new(paths, id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(files.supervisor_log())
            .map_err(|e| Error::io("open the supervisor log", e))?;
        let log_from = crate::vm::supervisor_log::position(&log);
        let mut cmd = Command::new(&command.program);
        cmd.args(&command.args)
            .arg(id.as_str())
            .env(crate::paths::HOME_ENV, paths.home())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        // Born outside our cgroups (v1) it need not move itself out, which is slow.
        let outside = crate::vm::host::caller_free_v1_cgroups();
        let mut child = match vmsan_firecracker::cgroup::spawn_born_in(&outside, || cmd.spawn()) {
            Ok(child) => Ok(child),
            // It will leave our cgroups itself.
            Err(_) => cmd.spawn(),
        }
        .map_err(|e| Error::io("start the VM's supervisor", e))?;
        let go = child.stdin.take();
        let report = child.stdout.take();
        Ok(Self {
            id: id.clone(),
            files,
            child,
            go,
            report,
            report_timeout: boot_timeout.saturating_add(REPORT_MARGIN),
            log_from,
        })
    }

    /// The VM's disk and config drive are ready: boot it.
    pub(super) fn go(&mut self) {
        if let Some(mut pipe) = self.go.take() {
            // A supervisor that is already gone reports (or fails to report) that itself.
            let _ = pipe.write_all(GO_LINE.as_bytes());
        }
    }

    /// Wait for the report (after closing the go-ahead pipe, which cancels the boot unless
    /// [`Spawned::go`] was called).
    pub(super) fn wait_report(&mut self) -> Result<Booted> {
        let report = self.read_report();
        // What it logged while booting (a failed boot's rollback, say) is this command's to
        // show: the supervisor's own log is not the user's terminal.
        crate::vm::supervisor_log::relay_since(
            &self.files.supervisor_log(),
            self.log_from,
            &self.id,
        );
        report
    }

    fn read_report(&mut self) -> Result<Booted> {
        self.go.take();
        let Some(out) = self.report.take() else {
            return Err(Error::new(
                ErrorCode::Internal,
                "supervisor has no report pipe",
            ));
        };
        // Read the report on a thread so a hung supervisor cannot hang us.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let r = BufReader::new(out).read_line(&mut line).map(|_| line);
            let _ = tx.send(r);
        });
        let line = match rx.recv_timeout(self.report_timeout) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(Error::io("read the supervisor's report", e)),
            Err(_) => {
                let _ = self.child.kill();
                return Err(Error::new(
                    ErrorCode::TimeoutAgent,
                    format!("VM {} did not come up", self.id),
                ));
            }
        };
        let report = parse_report(&line, &self.files);
        if report.is_err() {
            // A supervisor that failed tears down what it set up, then exits: let it finish
            // before the caller cleans up the rest.
            if let Ok(fd) = crate::sys::proc::PidFd::open(self.child.id()) {
                let _ = fd.wait_exit(Duration::from_secs(20));
            }
            let _ = self.child.try_wait();
        }
        // A running supervisor is left to itself; init reaps it once we are gone.
        report
    }
}

/// A supervisor's report of a boot.
#[derive(Debug, Clone)]
pub(super) struct Booted {
    /// Its steps.
    pub(super) steps: Vec<Step>,
    /// When its `main` began (ms since the epoch).
    pub(super) started_at: f64,
}

fn parse_report(line: &str, files: &VmFiles) -> Result<Booted> {
    match Report::parse(line) {
        Some(Report::Ready { steps, started_at }) => Ok(Booted { steps, started_at }),
        Some(Report::Failed(e)) => Err(e),
        None => Err(Error::new(
            ErrorCode::VmCreateFailed,
            "the VM's supervisor exited without reporting",
        )
        .why(format!("See {}.", files.supervisor_log().display()))),
    }
}
