//! The per-VM supervisor: a detached `vmsan` process that owns one VM's Firecracker.
//!
//! It sets up the VM's network, jail and DNS filter, starts Firecracker (through the jailer),
//! configures and boots it, waits for the agent to announce itself, and then watches: it
//! notices when Firecracker exits (guest power-off, crash, kill), enforces `--timeout`, and
//! stops the guest gracefully on SIGTERM (`vmsan stop`). Whatever ends the VM, it tears down
//! everything it set up and writes the final state with the reason.
//!
//! Its standard output is a pipe to the `vmsan create`/`start` that spawned it: exactly one
//! line, `ready` or `error <json>`, then it lets go of that pipe.
//! Its standard error is the VM's `supervisor.log`, where its `tracing` events go (see
//! `supervisor_log`).

use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use vmsan_firecracker::{FirecrackerClient, JailLayout};

use crate::error::{Error, ErrorCode, Result};
use crate::ids::VmId;
use crate::paths::Paths;
use crate::state::{StateStore, VmState, VmStatus};
use crate::vm::files::{VmFiles, in_jail};
use crate::vm::host::{self, Launch};
use crate::vm::protocol::{GO_LINE, Report};
use crate::vm::stopwatch::Stopwatch;
use crate::{process, time};

mod boot;
mod launch;
mod plan;
mod restore;
mod vmm;
mod watch;

use vmm::Vmm;

/// How long Firecracker has to create its API socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
/// Graceful stop: the agent powers off, then Ctrl-Alt-Del, then SIGKILL.
const AGENT_STOP_GRACE: Duration = Duration::from_secs(10);
const CAD_STOP_GRACE: Duration = Duration::from_secs(5);
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How often a watching supervisor checks its resident memory, and above what it unmaps the
/// code pages it mapped since (they stay in the page cache; see `sys::mem`).
const TRIM_EVERY: Duration = Duration::from_secs(5);
const TRIM_ABOVE: u64 = 2 << 20;

/// Why a VM ended, and so what its final state is.
#[derive(Debug, Clone)]
enum Ended {
    /// Stopped on request, by timeout, or by the guest itself: `stopped`.
    Stopped(String),
    /// Crashed, killed, or failed to boot: `error`.
    Failed(String),
}

/// Run the supervisor of `id` (the body of the front end's [`crate::vm::SupervisorCommand`]).
/// Returns the process exit code. It builds the supervisor's one runtime.
pub fn main(paths: &Paths, id: &VmId) -> i32 {
    let started_at = time::epoch_ms_precise();
    crate::vm::supervisor_log::install();
    let clock = Stopwatch::start();
    // Its own session (no controlling terminal, its own process group), so that closing the
    // caller's terminal or killing its process group does not reach it. Done here rather
    // than between fork and exec: without that hook the command is spawned with vfork.
    if let Err(e) = nix::unistd::setsid() {
        tracing::warn!("cannot start a session of its own: {e}");
    }
    crate::sys::mem::single_malloc_arena();
    if let Err(e) = crate::sys::proc::set_child_subreaper() {
        tracing::warn!("cannot become a subreaper: {e}");
    }
    // Leaving the caller's cgroups can take a while (on cgroup v1 the kernel waits for an RCU
    // grace period), and reading the go-ahead waits for the spawning command: both happen on
    // a thread while the network is set up.
    let (tx, prepared) = tokio::sync::oneshot::channel();
    let helper = std::thread::Builder::new()
        .name("prepare".into())
        .stack_size(64 << 10)
        .spawn(move || {
            let t = std::time::Instant::now();
            host::leave_caller_cgroup();
            let cgroup_ms = t.elapsed().as_secs_f64() * 1000.0;
            let mut line = String::new();
            let go = std::io::stdin().read_line(&mut line).is_ok() && line == GO_LINE;
            let _ = tx.send(Prepared { cgroup_ms, go });
        });
    if let Err(e) = helper {
        report(&Report::Failed(Error::io(
            "start the supervisor's helper thread",
            e,
        )));
        return 1;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Network setup and teardown use a blocking thread; it need not outlive them.
        .thread_keep_alive(Duration::from_millis(100))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(&Report::Failed(Error::io(
                "start the supervisor's runtime",
                e,
            )));
            return 1;
        }
    };
    match rt.block_on(run(paths, id, clock, started_at, prepared)) {
        Ok(code) => code,
        // Not reported to the caller (that says "exited without reporting" and points here).
        Err(e) => {
            tracing::error!(vm = %id, "{e}");
            1
        }
    }
}

/// What the helper thread did before boot may go on.
#[derive(Debug, Clone, Copy)]
struct Prepared {
    /// How long leaving the caller's cgroups took.
    cgroup_ms: f64,
    /// Whether the spawning command said the VM's files are ready.
    go: bool,
}

/// Tell the spawning command how boot went, then detach stdout from its pipe.
fn report(report: &Report) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(report.to_line().as_bytes());
    let _ = out.flush();
    drop(out);
    // Let go of the pipe so the caller sees EOF; later output goes nowhere.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null.as_fd());
    }
}

async fn run(
    paths: &Paths,
    id: &VmId,
    clock: Stopwatch,
    started_at: f64,
    prepared: tokio::sync::oneshot::Receiver<Prepared>,
) -> Result<i32> {
    let store = StateStore::open(paths)?;
    let me = process::identify(std::process::id())
        .ok_or_else(|| Error::new(ErrorCode::Internal, "cannot read this process's start time"))?;
    let creating = |st: &VmState| {
        if st.status == VmStatus::Creating {
            Ok(())
        } else {
            Err(Error::new(
                ErrorCode::Internal,
                format!(
                    "{} is {}, not being created or started",
                    st.id,
                    st.status.as_str()
                ),
            ))
        }
    };
    let state = store.get_recorded(id)?;
    creating(&state)?;
    // Recording this supervisor goes on during the boot: a durable write, whose fsync can
    // wait for the disk the creating command is writing.
    let recorded = {
        let (store, id) = (store.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            store.update(&id, |st| {
                creating(st)?;
                st.supervisor = Some(me);
                Ok(())
            })
        })
    };

    let mut sup = Supervisor::new(paths.clone(), store, state, clock)?;
    // Stop and reload requests are caught from before the VM is recorded as running: a
    // `vmsan stop` right after `create` returns must not meet SIGTERM's default action, which
    // would end this process and leave Firecracker unsupervised.
    let term = signal(SignalKind::terminate());
    let reload = signal(SignalKind::user_defined1()).ok();
    let booted = sup.boot(prepared, recorded).await;
    let ended = match &booted {
        Ok(()) => {
            report(&Report::Ready {
                steps: sup.clock.steps.clone(),
                started_at,
            });
            sup.watch(term, reload).await
        }
        Err(e) => {
            // The why goes along: it holds what Firecracker and the guest said last.
            let mut reported = Error::new(e.code(), e.message().to_owned());
            if let Some(why) = e.why_text() {
                reported = reported.why(why);
            }
            report(&Report::Failed(reported));
            Ended::Failed(e.message().to_owned())
        }
    };
    sup.finish(ended).await;
    // A failed boot was reported, and logged as the VM's end.
    Ok(i32::from(booted.is_err()))
}

struct Supervisor {
    paths: Paths,
    store: StateStore,
    state: VmState,
    files: VmFiles,
    launch: Launch,
    layout: JailLayout,
    net: Option<vmsan_net::VmNet>,
    dns: Option<(tokio::task::JoinHandle<()>, vmsan_net::dns::AllowedDomains)>,
    vmm: Option<Vmm>,
    client: FirecrackerClient,
    /// Where boot time went, for `create`'s breakdown.
    clock: Stopwatch,
}

impl Supervisor {
    fn new(paths: Paths, store: StateStore, state: VmState, clock: Stopwatch) -> Result<Self> {
        let files = VmFiles::new(&paths, &state.id);
        let launch = Launch::resolve(&paths, &state)?;
        let layout = launch.layout.clone();
        let client = FirecrackerClient::new(layout.api_socket());
        Ok(Self {
            paths,
            store,
            state,
            files,
            launch,
            layout,
            net: None,
            dns: None,
            vmm: None,
            client,
            clock,
        })
    }

    fn vsock_path(&self) -> PathBuf {
        self.layout.root().join(in_jail::VSOCK)
    }
}

/// [`with_log_tail`] of the serial console, led by the lines that say why: Firecracker's
/// error line and the agent's last words (see `last_words`).
fn with_last_words(e: Error, files: &VmFiles) -> Error {
    let e = with_log_tail(e, &files.serial_log());
    match crate::vm::last_words::why(files, true) {
        Some(words) => {
            let why = match e.why_text() {
                Some(tail) => format!("{words}\n{tail}"),
                None => words,
            };
            e.why(why)
        }
        None => e,
    }
}

/// Add the last lines of a log to an error: what Firecracker or the guest said before failing.
fn with_log_tail(e: Error, log: &std::path::Path) -> Error {
    let Ok(text) = std::fs::read_to_string(log) else {
        return e;
    };
    let lines: Vec<&str> = crate::vm::last_words::this_boot(&text)
        .lines()
        .rev()
        .take(8)
        .collect();
    if lines.is_empty() {
        return e;
    }
    let tail: Vec<&str> = lines.into_iter().rev().collect();
    let why = format!("Last lines of {}:\n{}", log.display(), tail.join("\n"));
    e.why(why)
}
