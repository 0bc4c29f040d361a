//! The supervisor's VMM process: the jail, the jailer and Firecracker started in it, its API
//! socket, and how its end is waited for (as a child, or adopted from the jailer's PID
//! namespace).

use std::path::PathBuf;

use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use vmsan_agent_client::ReadyListener;

use super::SOCKET_TIMEOUT;
use super::launch;
use super::{Prepared, Supervisor, with_log_tail};
use crate::error::{Error, ErrorCode, Result};
use crate::process;
use crate::sys::proc::PidFd;
use crate::vm::files::in_jail;
use crate::vm::stopwatch::StepName;

/// How we wait for Firecracker: as our own child (no PID namespace), or as a process the
/// jailer forked into a new PID namespace and that we inherited as subreaper.
#[derive(Debug)]
pub(super) enum Vmm {
    Child(tokio::process::Child),
    Adopted { pid: u32, fd: AsyncFd<PidFd> },
}

impl Vmm {
    pub(super) fn pid(&self) -> Option<u32> {
        match self {
            Vmm::Child(c) => c.id(),
            Vmm::Adopted { pid, .. } => Some(*pid),
        }
    }

    /// Wait for it to exit; describe how.
    pub(super) async fn wait(&mut self) -> String {
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

    pub(super) fn kill(&self) {
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

impl Supervisor {
    /// Once the disk and config drive are ready, the VM's cgroups made and the caller's left:
    /// the jail, then the jailer (or Firecracker) as soon as the network namespace exists,
    /// until Firecracker's API socket answers. Returns the snapshot to restore, if any, and
    /// the listener for the agent's announcement.
    pub(super) async fn start_vmm(
        &mut self,
        prepared: tokio::sync::oneshot::Receiver<Prepared>,
        netns: tokio::sync::oneshot::Receiver<PathBuf>,
        cgroups: tokio::task::JoinHandle<Result<launch::VmmCgroups>>,
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
        self.clock.lap(StepName::WaitDiskCgroups);
        self.clock
            .add_parallel(StepName::LeaveCallerCgroups, helper.cgroup_ms);
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
        launch::prepare_jail(
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
            .map_err(crate::vm::convert::jail)?;

        self.clock.lap(StepName::Jail);
        let netns = netns.await.map_err(|_| {
            Error::new(
                ErrorCode::VmCreateFailed,
                "the VM's network namespace could not be made",
            )
        })?;
        self.clock.lap(StepName::WaitNetworkNamespace);
        let (child, vmm_log) =
            launch::spawn_vmm(&self.launch, &self.files, Some(&netns), uid, gid, cgroups)?;
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
        self.clock.lap(StepName::VmmStart);
        let deadline = Instant::now() + SOCKET_TIMEOUT;
        let socket = vmsan_firecracker::wait_for_socket(&self.layout.api_socket(), deadline)
            .await
            .map_err(|e| {
                with_log_tail(
                    crate::vm::convert::socket_wait(e, &self.layout.api_socket()),
                    &vmm_log,
                )
            });
        recorded
            .await
            .map_err(|e| Error::new(ErrorCode::Internal, format!("state update task: {e}")))??;
        socket?;
        self.clock.lap(StepName::ApiSocket);
        Ok((snapshot, ready))
    }

    /// Turn the spawned jailer (or Firecracker) into the VMM handle: with a new PID namespace
    /// the jailer forks Firecracker, writes its pid file and exits, and we adopt Firecracker.
    pub(super) async fn adopt(&mut self, mut child: tokio::process::Child) -> Result<Vmm> {
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
        .map_err(crate::vm::convert::jail)?;
        let pid = u32::try_from(pid)
            .map_err(|_| Error::new(ErrorCode::Internal, "bad pid in the jailer's pid file"))?;
        let fd = PidFd::open(pid)
            .and_then(PidFd::into_async)
            .map_err(|e| Error::io(format!("watch Firecracker (pid {pid})"), e))?;
        Ok(Vmm::Adopted { pid, fd })
    }
}
