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

use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use vmsan_agent_client::{AgentClient, Endpoint, ReadyListener};
use vmsan_firecracker::{FirecrackerClient, JailLayout};

use super::files::{VmFiles, in_jail, jail_ids};
use super::host::{self, Launch};
use crate::error::{Error, ErrorCode, Result};
use crate::ids::VmId;
use crate::paths::Paths;
use crate::state::{ProcessId, SnapshotRun, StateStore, VmState, VmStatus};
use crate::sys::proc::PidFd;
use crate::{process, time};

/// The hidden subcommand that runs a supervisor: `vmsan __supervise <vm-id>`.
pub const SUPERVISE_ARG: &str = "__supervise";
/// What the spawning command writes to the supervisor's standard input once the VM's disk
/// and config drive are ready.
pub(crate) const GO_LINE: &str = "go\n";

/// How long the guest has to boot and announce its agent, unless the VM says otherwise
/// (`--boot-timeout`).
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// The boot timeout of a VM with these settings.
pub(crate) fn boot_timeout(boot: &crate::state::BootSettings) -> Duration {
    boot.boot_timeout_ms
        .map_or(BOOT_TIMEOUT, Duration::from_millis)
}
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

/// One step of a boot and how long it took.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Step {
    /// What was done.
    pub name: String,
    /// Milliseconds.
    pub ms: f64,
    /// Whether it ran alongside other steps (so it is not part of the sum that makes the
    /// total).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parallel: bool,
}

/// Times consecutive steps.
#[derive(Debug, Clone)]
pub(crate) struct Stopwatch {
    last: std::time::Instant,
    pub(crate) steps: Vec<Step>,
}

impl Stopwatch {
    pub(crate) fn start() -> Self {
        Self {
            last: std::time::Instant::now(),
            steps: Vec::new(),
        }
    }

    /// Record the time since the previous lap (or the start) as step `name`.
    pub(crate) fn lap(&mut self, name: &str) {
        let now = std::time::Instant::now();
        self.steps.push(Step {
            name: name.into(),
            ms: (now - self.last).as_secs_f64() * 1000.0,
            parallel: false,
        });
        self.last = now;
    }

    /// Record a step timed elsewhere, and restart the lap clock.
    pub(crate) fn add(&mut self, name: &str, ms: f64) {
        self.steps.push(Step {
            name: name.into(),
            ms,
            parallel: false,
        });
        self.last = std::time::Instant::now();
    }

    /// Record a step that ran alongside others (not part of the sum; the lap clock runs on).
    pub(crate) fn add_parallel(&mut self, name: &str, ms: f64) {
        self.steps.push(Step {
            name: name.into(),
            ms,
            parallel: true,
        });
    }
}

/// Why a VM ended, and so what its final state is.
#[derive(Debug, Clone)]
enum Ended {
    /// Stopped on request, by timeout, or by the guest itself: `stopped`.
    Stopped(String),
    /// Crashed, killed, or failed to boot: `error`.
    Failed(String),
}

/// Run the supervisor of `id` (the body of `vmsan __supervise`). Returns the process exit code.
pub fn main(paths: &Paths, id: &VmId) -> i32 {
    let started_at = time::epoch_ms_precise();
    super::supervisor_log::install();
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
        report(
            &Err(Error::io("start the supervisor's helper thread", e)),
            started_at,
        );
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
            report(
                &Err(Error::io("start the supervisor's runtime", e)),
                started_at,
            );
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
fn report(result: &Result<Vec<Step>>, started_at: f64) {
    let line = match result {
        Ok(steps) => format!(
            "ready {}\n",
            serde_json::json!({ "steps": steps, "startedAtMs": started_at })
        ),
        Err(e) => format!("error {}\n", e.to_json()),
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
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
            report(&Ok(sup.clock.steps.clone()), started_at);
            sup.watch(term, reload).await
        }
        Err(e) => {
            // The why goes along: it holds what Firecracker and the guest said last.
            let mut reported = Error::new(e.code(), e.message().to_owned());
            if let Some(why) = e.why_text() {
                reported = reported.why(why);
            }
            report(&Err(reported), started_at);
            Ended::Failed(e.message().to_owned())
        }
    };
    sup.finish(ended).await;
    // A failed boot was reported, and logged as the VM's end.
    Ok(i32::from(booted.is_err()))
}

/// How we wait for Firecracker: as our own child (no PID namespace), or as a process the
/// jailer forked into a new PID namespace and that we inherited as subreaper.
#[derive(Debug)]
enum Vmm {
    Child(tokio::process::Child),
    Adopted { pid: u32, fd: AsyncFd<PidFd> },
}

impl Vmm {
    fn pid(&self) -> Option<u32> {
        match self {
            Vmm::Child(c) => c.id(),
            Vmm::Adopted { pid, .. } => Some(*pid),
        }
    }

    /// Wait for it to exit; describe how.
    async fn wait(&mut self) -> String {
        match self {
            Vmm::Child(c) => match c.wait().await {
                Ok(status) => describe_exit(
                    status.code(),
                    std::os::unix::process::ExitStatusExt::signal(&status),
                ),
                Err(e) => format!("waiting for Firecracker failed: {e}"),
            },
            Vmm::Adopted { pid, fd } => {
                // A pidfd becomes readable when the process exits.
                if let Ok(mut guard) = fd.readable().await {
                    guard.retain_ready();
                }
                reap(*pid)
            }
        }
    }

    fn kill(&self) {
        match self {
            Vmm::Child(c) => {
                if let Some(pid) = c.id() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            Vmm::Adopted { fd, .. } => {
                let _ = fd.get_ref().signal(libc::SIGKILL);
            }
        }
    }
}

/// Reap an adopted process and describe its end (if it was not reparented to us, all we know
/// is that it is gone).
fn reap(pid: u32) -> String {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let Ok(raw) = i32::try_from(pid) else {
        return "Firecracker exited".into();
    };
    match waitpid(nix::unistd::Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => describe_exit(Some(code), None),
        Ok(WaitStatus::Signaled(_, sig, _)) => describe_exit(None, Some(sig as i32)),
        _ => "Firecracker exited".into(),
    }
}

fn describe_exit(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(0), _) => "the guest shut down".into(),
        (Some(c), _) => format!("Firecracker exited with status {c}"),
        (None, Some(s)) => {
            let name = nix::sys::signal::Signal::try_from(s)
                .map(|s| s.as_str())
                .unwrap_or("?");
            format!("Firecracker was killed by signal {s} ({name})")
        }
        (None, None) => "Firecracker exited".into(),
    }
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

    /// Boot (or restore) the guest, then record the VM as running.
    async fn boot(
        &mut self,
        prepared: tokio::sync::oneshot::Receiver<Prepared>,
        recorded: tokio::task::JoinHandle<Result<VmState>>,
    ) -> Result<()> {
        let booted = self.start_guest(prepared).await;
        let recorded = recorded
            .await
            .map_err(|e| Error::new(ErrorCode::Internal, format!("state update task: {e}")))?;
        let restored = booted?;
        recorded?;
        let vmm_id = self
            .vmm
            .as_ref()
            .and_then(Vmm::pid)
            .and_then(process::identify);
        let vsock = self.vsock_path();
        grant_group_access(&vsock);
        self.state = self.store.update(&self.state.id, |st| {
            st.status = VmStatus::Running;
            st.error = None;
            st.vmm = vmm_id;
            st.pid = vmm_id.map(|p| p.pid);
            st.vsock_socket = Some(vsock.display().to_string());
            st.api_socket = Some(self.layout.api_socket().display().to_string());
            st.chroot_dir = Some(self.layout.root().display().to_string());
            st.restore_pending = false;
            // A snapshot of an earlier run is no concern of this one.
            st.snapshot_run = None;
            if !restored {
                // A diff snapshot builds on the memory of this run only.
                st.snapshot_base = None;
            }
            if let Some(ms) = st.timeout_ms {
                st.timeout_at = Some(time::format_rfc3339(time::epoch_ms() + ms));
            }
            st.timeout_holders.clear();
            Ok(())
        })?;
        self.clock.lap("recorded as running");
        Ok(())
    }

    /// Network, jail, Firecracker, configuration, InstanceStart (or snapshot load), agent
    /// announcement. Returns whether the guest was restored from a snapshot.
    async fn start_guest(
        &mut self,
        prepared: tokio::sync::oneshot::Receiver<Prepared>,
    ) -> Result<bool> {
        let slot = self
            .state
            .network
            .slot
            .ok_or_else(|| Error::new(ErrorCode::Internal, "VM has no slot"))?;
        let (uid, gid) = jail_ids(slot);
        self.clock.lap("supervisor runtime");

        // The network is built on a thread while the jail is laid out and the jailer starts:
        // the jailer needs only the namespace, Firecracker the TAP only once it is configured
        // (or loads a snapshot), and the guest runs after that.
        let (host_cfg, net_spec) = host::network_plan(&self.state, uid, gid)?;
        let (netns_tx, netns) = tokio::sync::oneshot::channel();
        let building = tokio::task::spawn_blocking(move || {
            let t = std::time::Instant::now();
            let pending = vmsan_net::begin(&host_cfg, &net_spec)?;
            let _ = netns_tx.send(pending.netns_path().to_owned());
            let netns_took = t.elapsed();
            pending.finish().map(|net| (net, netns_took, t.elapsed()))
        });
        // The VM's cgroups too (the kernel takes its time to make them).
        let cgroups = {
            let (launch, vcpus, mem) = (
                self.launch.clone(),
                self.state.vcpu_count,
                self.state.mem_size_mib,
            );
            tokio::task::spawn_blocking(move || host::vmm_cgroups(&launch, vcpus, mem))
        };
        let started = self.start_vmm(prepared, netns, cgroups, uid, gid).await;
        let built = building
            .await
            .map_err(|e| Error::new(ErrorCode::Internal, format!("network setup task: {e}")))?
            .map_err(|e| super::convert::net(e, "setting up the VM's network"));
        let net = match built {
            Ok((net, netns_took, took)) => {
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                self.clock.add_parallel("network namespace", ms(netns_took));
                self.clock.add_parallel("network", ms(took));
                // Torn down by `finish` from here on, whatever happens next.
                self.net.insert(net)
            }
            // It explains a failed start better than the jailer's view of it would.
            Err(e) => return Err(e),
        };
        let (snapshot, ready) = started?;
        self.dns = Some(host::start_dns_filter(net, &self.state)?);
        let net_plan = host::net_plan(net);
        self.clock.lap("waiting for the network, DNS filter");

        if let Some(snap) = &snapshot {
            self.restore(snap, &ready, net_plan.as_ref().map(|n| n.tap.as_str()))
                .await?;
        } else {
            self.cold_boot(ready, net_plan).await?;
        }
        Ok(snapshot.is_some())
    }

    /// Once the disk and config drive are ready, the VM's cgroups made and the caller's left:
    /// the jail, then the jailer (or Firecracker) as soon as the network namespace exists,
    /// until Firecracker's API socket answers. Returns the snapshot to restore, if any, and
    /// the listener for the agent's announcement.
    async fn start_vmm(
        &mut self,
        prepared: tokio::sync::oneshot::Receiver<Prepared>,
        netns: tokio::sync::oneshot::Receiver<PathBuf>,
        cgroups: tokio::task::JoinHandle<Result<host::VmmCgroups>>,
        uid: u32,
        gid: u32,
    ) -> Result<(Option<crate::snapshot::Snapshot>, ReadyListener)> {
        let helper = prepared.await.map_err(|_| {
            Error::new(
                ErrorCode::Internal,
                "the supervisor's helper thread ended early",
            )
        });
        // Joined whatever happens, so that no cgroup is made after the teardown.
        let cgroups = cgroups
            .await
            .map_err(|e| Error::new(ErrorCode::Internal, format!("cgroup task: {e}")))?;
        let helper = helper?;
        let cgroups = cgroups?;
        if !helper.go {
            return Err(Error::new(
                ErrorCode::VmCreateFailed,
                "the command creating the VM went away before its disk was ready",
            ));
        }
        self.clock
            .lap("waiting for the disk, the VM's cgroups and leaving the caller's");
        self.clock
            .add_parallel("leaving the caller's cgroups", helper.cgroup_ms);
        let snapshot = if self.state.restore_pending {
            let id = self
                .state
                .snapshot
                .clone()
                .ok_or_else(|| Error::new(ErrorCode::Internal, "restore without a snapshot"))?;
            Some(crate::snapshot::Snapshot::reopen(&self.paths, &id)?)
        } else {
            None
        };
        host::prepare_jail(
            &self.state,
            &self.launch,
            &self.files,
            uid,
            gid,
            snapshot.as_ref(),
        )?;
        let ready = ReadyListener::bind(&self.vsock_path()).map_err(|e| {
            Error::new(
                ErrorCode::VmCreateFailed,
                format!("listen for the agent: {e}"),
            )
        })?;
        // Firecracker, running as the jail's uid, must be able to connect to it.
        let ready_name = format!("{}_{}", in_jail::VSOCK, vmsan_proto::READY_PORT);
        vmsan_firecracker::give_to_jail(&self.layout, &ready_name, uid, gid)
            .map_err(super::convert::jail)?;

        self.clock.lap("jail");
        let netns = netns.await.map_err(|_| {
            Error::new(
                ErrorCode::VmCreateFailed,
                "the VM's network namespace could not be made",
            )
        })?;
        self.clock.lap("waiting for the network namespace");
        let (child, vmm_log) =
            host::spawn_vmm(&self.launch, &self.files, Some(&netns), uid, gid, cgroups)?;
        self.vmm = Some(
            self.adopt(child)
                .await
                .map_err(|e| with_log_tail(e, &vmm_log))?,
        );
        // Record Firecracker at once: if this supervisor dies from here on, `stop` and
        // `remove` still find the process to kill.
        let early = self
            .vmm
            .as_ref()
            .and_then(Vmm::pid)
            .and_then(process::identify);
        // (Written while Firecracker creates its API socket.)
        let recorded = {
            let (store, id) = (self.store.clone(), self.state.id.clone());
            tokio::task::spawn_blocking(move || {
                store.update(&id, |st| {
                    st.vmm = early;
                    Ok(())
                })
            })
        };
        self.clock.lap("jailer and Firecracker start");
        let deadline = Instant::now() + SOCKET_TIMEOUT;
        let socket = vmsan_firecracker::wait_for_socket(&self.layout.api_socket(), deadline)
            .await
            .map_err(|e| {
                with_log_tail(
                    super::convert::socket_wait(e, &self.layout.api_socket()),
                    &vmm_log,
                )
            });
        recorded
            .await
            .map_err(|e| Error::new(ErrorCode::Internal, format!("state update task: {e}")))??;
        socket?;
        self.clock.lap("API socket");
        Ok((snapshot, ready))
    }

    /// Load the snapshot, wait for the restored agent, give it this VM's identity, and keep
    /// that identity on the config drive for later cold boots.
    async fn restore(
        &mut self,
        snap: &crate::snapshot::Snapshot,
        ready: &ReadyListener,
        tap: Option<&str>,
    ) -> Result<()> {
        let vsock = self.vsock_path();
        let deadline = Instant::now() + boot_timeout(&self.state.boot);
        let target = super::restore::RestoreTarget {
            snap,
            state: &self.state,
            client: &self.client,
            vsock: &vsock,
            config_drive: self.files.config_drive(),
            jail_ids: jail_ids(self.state.network.slot.unwrap_or(0)),
            tap,
        };
        let vmm = self
            .vmm
            .as_mut()
            .ok_or_else(|| Error::new(ErrorCode::Internal, "no VMM"))?;
        let restored = tokio::select! {
            r = super::restore::load_and_reidentify(&target, ready, &mut self.clock, deadline) => r,
            why = vmm.wait() => {
                self.vmm = None;
                return Err(with_log_tail(
                    Error::new(ErrorCode::FirecrackerExited, format!("Firecracker exited during the restore: {why}")),
                    &self.files.firecracker_log(),
                ));
            }
        };
        restored.map_err(|e| with_log_tail(e, &self.files.firecracker_log()))
    }

    /// Configure Firecracker, start the guest, wait for its agent's announcement.
    async fn cold_boot(
        &mut self,
        ready: ReadyListener,
        net_plan: Option<super::boot::NetPlan>,
    ) -> Result<()> {
        let plan = super::boot::BootPlan {
            rootfs_fs: self.launch.rootfs_fs,
            vcpus: self.state.vcpu_count,
            mem_mib: self.state.mem_size_mib,
            net: net_plan,
            guest: super::boot::GuestBoot::of(&self.state.boot)?,
        };
        let timeout = boot_timeout(&self.state.boot);
        let timings = super::boot::vm_config(&plan)
            .boot(&self.client)
            .await
            .map_err(super::convert::firecracker)?;
        let (start, config): (Vec<_>, Vec<_>) = timings
            .iter()
            .partition(|st| st.step.contains("InstanceStart"));
        let ms = |v: &[&vmsan_firecracker::StepTiming]| {
            v.iter()
                .map(|st| st.took.as_secs_f64() * 1000.0)
                .sum::<f64>()
        };
        self.clock.add("configure (API)", ms(&config));
        self.clock.add("InstanceStart", ms(&start));

        let vmm = self
            .vmm
            .as_mut()
            .ok_or_else(|| Error::new(ErrorCode::Internal, "no VMM"))?;
        tokio::select! {
            r = ready.wait(timeout) => {
                r.map_err(|e| with_last_words(
                    Error::new(ErrorCode::TimeoutAgent, format!("the guest agent did not announce itself: {e}"))
                        .fix("A slow host or kernel may need more time: raise it with `vmsan create --boot-timeout`.")
                        .detail("timeoutMs", u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
                    &self.files,
                ))?;
            }
            why = vmm.wait() => {
                self.vmm = None;
                return Err(with_last_words(
                    Error::new(ErrorCode::FirecrackerExited, format!("Firecracker exited during boot: {why}")),
                    &self.files,
                ));
            }
        }

        self.clock.lap("agent ready");
        self.confirm_host_to_agent(BOOT_TIMEOUT).await?;
        self.clock.lap("agent answers the host, clock set");
        Ok(())
    }

    /// The announcement came from the guest; every command after it (exec, files, stop) is a
    /// connection from the host, through another path (Firecracker's vsock socket, or the
    /// stand-in's relay). Check that direction too before the VM is called running, so that a
    /// VM nobody can reach fails its create with a reason instead of failing every exec.
    ///
    /// The request that checks it sets the guest's clock: a guest reads the wall clock from the
    /// VMM early in boot, and where booting is slow (minutes on an emulating hypervisor) it is
    /// that far behind when the agent starts.
    async fn confirm_host_to_agent(&self, within: Duration) -> Result<()> {
        let Some(token) = &self.state.agent_token else {
            return Ok(());
        };
        let agent = AgentClient::new(Endpoint::hybrid_vsock(self.vsock_path()), token);
        let failed = |why: String| {
            with_log_tail(
                Error::new(
                    ErrorCode::VmCreateFailed,
                    format!(
                        "the guest agent announced itself but does not answer requests from \
                         the host: {why}"
                    ),
                )
                .detail("vsockSocket", self.vsock_path().display().to_string()),
                &self.files.firecracker_log(),
            )
        };
        let host_ms = crate::time::epoch_ms();
        let answered = async {
            match agent.set_clock(host_ms).await {
                Ok(guest_ms) => {
                    let behind_ms = i128::from(host_ms) - i128::from(guest_ms);
                    tracing::info!(
                        behind_ms,
                        "the guest's clock after boot, now set to the host's"
                    );
                    Ok(())
                }
                // An agent older than this host (installed by an earlier `vmsan setup`) has
                // no clock route: the VM works, its clock stays as booted.
                Err(e) if e.agent_code() == Some("not_found") => {
                    tracing::warn!(
                        "the guest agent cannot set the guest's clock (it is older than this \
                         vmsan: run `vmsan setup` to update it)"
                    );
                    agent.health().await.map(drop)
                }
                Err(e) => Err(e),
            }
        };
        match tokio::time::timeout(within, answered).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(failed(e.to_string())),
            Err(_) => Err(failed(format!("no answer in {} s", within.as_secs()))),
        }
    }

    /// Turn the spawned jailer (or Firecracker) into the VMM handle: with a new PID namespace
    /// the jailer forks Firecracker, writes its pid file and exits, and we adopt Firecracker.
    async fn adopt(&mut self, mut child: tokio::process::Child) -> Result<Vmm> {
        if !self.launch.adopts_vmm() {
            return Ok(Vmm::Child(child));
        }
        let status = tokio::time::timeout(SOCKET_TIMEOUT, child.wait())
            .await
            .map_err(|_| {
                Error::new(
                    ErrorCode::TimeoutSocket,
                    "the jailer did not hand over to Firecracker",
                )
            })?
            .map_err(|e| Error::io("wait for the jailer", e))?;
        if !status.success() {
            return Err(Error::new(
                ErrorCode::VmCreateFailed,
                format!("the jailer failed ({status})"),
            ));
        }
        // The jailer may write the pid file just before or just after it exits.
        let pid = vmsan_firecracker::wait_for_pid_file(
            &self.layout,
            Instant::now() + SOCKET_TIMEOUT,
            || true,
        )
        .await
        .map_err(super::convert::jail)?;
        let pid = u32::try_from(pid)
            .map_err(|_| Error::new(ErrorCode::Internal, "bad pid in the jailer's pid file"))?;
        let fd = PidFd::open(pid)
            .and_then(PidFd::into_async)
            .map_err(|e| Error::io(format!("watch Firecracker (pid {pid})"), e))?;
        Ok(Vmm::Adopted { pid, fd })
    }

    /// Wait until the VM ends: by itself, by `vmsan stop` (SIGTERM), or by its timeout.
    async fn watch(
        &mut self,
        term: std::io::Result<tokio::signal::unix::Signal>,
        mut reload: Option<tokio::signal::unix::Signal>,
    ) -> Ended {
        let mut term = match term {
            Ok(s) => s,
            Err(e) => return Ended::Failed(format!("cannot watch for stop requests: {e}")),
        };
        let Some(mut vmm) = self.vmm.take() else {
            return Ended::Failed("no VMM to watch".into());
        };
        let mut holders = self.watch_holders();
        let mut snapshot_run = self.watch_snapshot_run();
        // From here on the supervisor only watches: what booting needed of its code need not
        // stay mapped (RSS per VM). Again whenever serving DNS or a reload has mapped more
        // code than a watching supervisor needs.
        let _ = crate::sys::mem::drop_clean_file_pages();
        let mut trim = tokio::time::interval(TRIM_EVERY);
        trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        trim.reset();
        let ended = loop {
            // A `snapshot create` began or ended since the last look at the record.
            if snapshot_run.as_ref().map(|(r, _)| r) != self.state.snapshot_run.as_ref() {
                snapshot_run = self.watch_snapshot_run();
            }
            // While an interactive session holds the timeout off, it cannot fire.
            let deadline = if holders.is_empty() {
                self.timeout_deadline()
            } else {
                None
            };
            let timeout = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let reloaded = async {
                match reload.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let holder_gone = std::future::poll_fn(|cx| {
                for (h, fd) in &holders {
                    if let std::task::Poll::Ready(Ok(mut ready)) = fd.poll_read_ready(cx) {
                        ready.retain_ready();
                        return std::task::Poll::Ready(*h);
                    }
                }
                std::task::Poll::Pending
            });
            let snapshot_run_gone = async {
                match &snapshot_run {
                    Some((_, Some(fd))) => {
                        if let Ok(mut ready) = fd.readable().await {
                            ready.retain_ready();
                        }
                    }
                    Some((_, None)) => {}
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                why = vmm.wait() => {
                    break if why == "the guest shut down" { Ended::Stopped(why) } else { Ended::Failed(why) };
                }
                _ = term.recv() => {
                    self.stop_gracefully(&mut vmm).await;
                    break Ended::Stopped("stopped by `vmsan stop`".into());
                }
                () = timeout => {
                    // A session may have begun just now: the record decides.
                    self.reload();
                    holders = self.watch_holders();
                    if holders.is_empty() && self.timeout_deadline().is_some_and(|d| d <= Instant::now()) {
                        self.stop_gracefully(&mut vmm).await;
                        break Ended::Stopped("its --timeout expired".into());
                    }
                }
                gone = holder_gone => {
                    // An `exec -i` session ended without taking itself off (killed): the
                    // timeout starts over from now.
                    let r = self.store.update(&self.state.id, |st| {
                        super::timeout::end_holds(st, |h| *h == gone, time::epoch_ms());
                        Ok(())
                    });
                    if let Err(e) = r {
                        tracing::warn!("recording the end of a session's hold: {e}");
                    }
                    self.reload();
                    holders = self.watch_holders();
                }
                () = snapshot_run_gone => {
                    // A `snapshot create` died (perhaps holding the VM paused): undo it.
                    if let Some((run, _)) = snapshot_run.take() {
                        let problems = crate::snapshot::run::recover(
                            &self.paths, &self.store, &self.state.id, &run, &self.client,
                            &self.layout.root(),
                        ).await;
                        for p in problems {
                            tracing::warn!("after a killed `snapshot create`: {p}");
                        }
                    }
                    self.reload();
                    snapshot_run = self.watch_snapshot_run();
                }
                _ = trim.tick() => {
                    if crate::sys::mem::resident_bytes().is_ok_and(|b| b > TRIM_ABOVE) {
                        let _ = crate::sys::mem::drop_clean_file_pages();
                    }
                    self.watch_host_disk();
                }
                _ = reloaded => {
                    // An `exec -i` session began or ended, or `vmsan network` changed the policy.
                    self.reload();
                    holders = self.watch_holders();
                    if let Some((_, domains)) = &self.dns {
                        host::refresh_dns_policy(domains, &self.state);
                    }
                }
            }
        };
        self.vmm = Some(vmm);
        ended
    }

    /// While the filesystem under the VM's thin disk is full, the guest's writes fail: say so
    /// in the VM's record (`error`, shown by `list` and `inspect`) and its serial log (`vmsan
    /// logs`), and take it back once there is room again.
    fn watch_host_disk(&mut self) {
        let full = super::disk_room::full_reason(&self.files.disk());
        let recorded = self
            .state
            .error
            .as_deref()
            .filter(|e| e.starts_with(ErrorCode::HostDiskFull.as_str()));
        if full.is_some() == recorded.is_some() {
            return;
        }
        let line = match &full {
            Some(reason) => format!("[vmsan] {reason}"),
            None => "[vmsan] the host filesystem has room for this VM's disk again".to_owned(),
        };
        append_to_serial_log(&self.files, &line);
        let r = self.store.update(&self.state.id, |st| {
            // Another error (a failure) is not ours to replace or clear.
            let ours = st
                .error
                .as_deref()
                .is_none_or(|e| e.starts_with(ErrorCode::HostDiskFull.as_str()));
            if ours {
                st.error = full.clone();
            }
            Ok(())
        });
        match r {
            Ok(st) => self.state = st,
            Err(e) => tracing::warn!("recording the host disk's state: {e}"),
        }
    }

    /// Re-read the VM's record (a failed read keeps the one we have).
    fn reload(&mut self) {
        match self.store.get_recorded(&self.state.id) {
            Ok(st) => self.state = st,
            Err(e) => tracing::warn!("re-reading the VM's record: {e}"),
        }
    }

    /// Pidfds of the processes holding the timeout off (see `vm::timeout`). A holder that is
    /// already gone gets a pidfd that is readable at once, or, if even its pid is gone, ends
    /// its hold here.
    fn watch_holders(&mut self) -> Vec<(ProcessId, AsyncFd<PidFd>)> {
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for h in &self.state.timeout_holders {
            match PidFd::open(h.pid).and_then(PidFd::into_async) {
                Ok(fd) if process::is_alive(h) => out.push((*h, fd)),
                _ => gone.push(*h),
            }
        }
        if !gone.is_empty() {
            let r = self.store.update(&self.state.id, |st| {
                super::timeout::end_holds(st, |h| gone.contains(h), time::epoch_ms());
                Ok(())
            });
            match r {
                Ok(st) => self.state = st,
                Err(e) => tracing::warn!("recording the end of a session's hold: {e}"),
            }
        }
        out
    }

    /// The `snapshot create` recorded as in progress, with a pidfd of its process (`None`
    /// when that process is already gone: it is then handled at once).
    fn watch_snapshot_run(&self) -> Option<(SnapshotRun, Option<AsyncFd<PidFd>>)> {
        let run = self.state.snapshot_run.clone()?;
        // The pidfd first, then the identity: a pid reused since is not mistaken for it.
        let fd = PidFd::open(run.by.pid)
            .and_then(PidFd::into_async)
            .ok()
            .filter(|_| process::is_alive(&run.by));
        Some((run, fd))
    }

    fn timeout_deadline(&self) -> Option<Instant> {
        let at = time::parse_rfc3339(self.state.timeout_at.as_deref()?)?;
        let left = at.saturating_sub(time::epoch_ms());
        Some(Instant::now() + Duration::from_millis(left))
    }

    /// The agent powers the guest off; failing that Ctrl-Alt-Del; failing that SIGKILL.
    async fn stop_gracefully(&self, vmm: &mut Vmm) {
        // A VM left paused by `snapshot create --no-resume` could not answer either request.
        if self
            .client
            .describe_instance()
            .await
            .is_ok_and(|i| i.state == vmsan_firecracker::models::InstanceState::Paused)
        {
            let _ = self.client.resume().await;
        }
        if let Some(token) = &self.state.agent_token {
            let agent = AgentClient::new(Endpoint::hybrid_vsock(self.vsock_path()), token);
            if tokio::time::timeout(Duration::from_secs(2), agent.shutdown())
                .await
                .is_ok_and(|r| r.is_ok())
                && tokio::time::timeout(AGENT_STOP_GRACE, vmm.wait())
                    .await
                    .is_ok()
            {
                return;
            }
        }
        if self.client.send_ctrl_alt_del().await.is_ok()
            && tokio::time::timeout(CAD_STOP_GRACE, vmm.wait())
                .await
                .is_ok()
        {
            return;
        }
        vmm.kill();
        let _ = tokio::time::timeout(KILL_GRACE, vmm.wait()).await;
    }

    /// Tear everything down and record how the VM ended.
    async fn finish(mut self, ended: Ended) {
        if let Some(mut vmm) = self.vmm.take() {
            vmm.kill();
            let _ = tokio::time::timeout(KILL_GRACE, vmm.wait()).await;
        }
        if let Some((task, _)) = self.dns.take() {
            task.abort();
        }
        let mut problems = host::teardown(&self.paths, &self.state).await;
        let (status, reason) = match ended {
            Ended::Stopped(r) => (VmStatus::Stopped, r),
            Ended::Failed(r) => {
                // What Firecracker and the agent said last goes into the recorded reason
                // (`list`, `inspect`) and, after the console's own lines, into `vmsan logs`.
                let r = match super::last_words::why(&self.files, false) {
                    Some(words) => format!("{r}\n{words}"),
                    None => r,
                };
                append_to_serial_log(&self.files, &format!("[vmsan] the VM failed: {r}"));
                (VmStatus::Error, r)
            }
        };
        let result = self.store.update(&self.state.id, |st| {
            st.status = status;
            st.pid = None;
            st.vmm = None;
            st.supervisor = None;
            st.timeout_at = None;
            st.timeout_holders.clear();
            st.error = Some(reason.clone());
            Ok(())
        });
        if let Err(e) = result {
            problems.push(format!("recording the final state: {e}"));
        }
        match status {
            VmStatus::Error => tracing::error!(vm = %self.state.id, "the VM failed: {reason}"),
            _ => tracing::info!(vm = %self.state.id, "the VM stopped: {reason}"),
        }
        for p in problems {
            tracing::warn!(vm = %self.state.id, "teardown incomplete: {p}");
        }
    }
}

/// Let members of the `vmsan` group reach the agent (`exec`, `connect`, files) without sudo:
/// the vsock socket becomes group-owned and group-writable. Nothing else is widened.
fn grant_group_access(vsock: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let Some(gid) = crate::state::vmsan_gid() else {
        return;
    };
    let r = std::os::unix::fs::chown(vsock, None, Some(gid))
        .and_then(|()| std::fs::set_permissions(vsock, std::fs::Permissions::from_mode(0o660)));
    if let Err(e) = r {
        tracing::warn!("cannot open {} to the vmsan group: {e}", vsock.display());
    }
}

/// [`with_log_tail`] of the serial console, led by the lines that say why: Firecracker's
/// error line and the agent's last words (see `last_words`).
fn with_last_words(e: Error, files: &VmFiles) -> Error {
    let e = with_log_tail(e, &files.serial_log());
    match super::last_words::why(files, true) {
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

/// A line of vmsan's own at the end of the serial log (Firecracker, its writer, is gone).
fn append_to_serial_log(files: &VmFiles, line: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(files.serial_log());
    if let Ok(mut f) = opened {
        let _ = writeln!(f, "{line}");
    }
}

/// Add the last lines of a log to an error: what Firecracker or the guest said before failing.
fn with_log_tail(e: Error, log: &std::path::Path) -> Error {
    let Ok(text) = std::fs::read_to_string(log) else {
        return e;
    };
    let lines: Vec<&str> = super::last_words::this_boot(&text)
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

/// Ask a VM's supervisor to stop the VM gracefully, and wait until it has (or `timeout`).
/// Returns whether the supervisor is gone.
pub(crate) fn request_stop(sup: &ProcessId, timeout: Duration) -> bool {
    signal_and_wait(sup, libc::SIGTERM, timeout)
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
    if !process::is_alive(p) {
        return true;
    }
    let _ = fd.signal(sig);
    fd.wait_exit(timeout).unwrap_or(false)
}
