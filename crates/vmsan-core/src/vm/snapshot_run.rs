//! A `vmsan snapshot create` in progress, as recorded in the VM's state, and what the VM's
//! supervisor does when the process running it dies.
//!
//! The command pauses the VM through Firecracker's API; if it were killed (SIGKILL, SIGTERM,
//! a closed terminal) while the VM is paused, nothing in that process could resume it. So the
//! command records itself ([`SnapshotRun`]: its process identity, its staging directory and
//! whether it holds the VM paused) before it pauses, and the supervisor, which outlives it,
//! watches that process with a pidfd. When the process dies with the record still there, the
//! supervisor resumes the VM (if the run held it paused), removes the staging directory and
//! the jail's output directory, and records the VM as `running` again.
//!
//! While a run holds the pause the VM's status is `paused`: `snapshot create` refuses a VM
//! that is not `running`, so no second run can start until the first is resolved.

use std::path::Path;

use vmsan_firecracker::FirecrackerClient;
use vmsan_firecracker::models::InstanceState;

use crate::error::{Error, ErrorCode, Result};
use crate::ids::VmId;
use crate::paths::Paths;
use crate::process;
use crate::state::{ProcessId, SnapshotRun, StateStore, VmStatus};

/// Where Firecracker writes a snapshot inside the jail (a directory only its uid may write).
pub(crate) const JAIL_OUT_DIR: &str = "snapshot-out";

/// This process's run, recorded in the VM's state until it is dropped.
#[derive(Debug)]
pub(crate) struct RunRecord {
    store: StateStore,
    vm: VmId,
    me: ProcessId,
}

impl RunRecord {
    /// Record a run staging into `staging` (a directory name under the snapshots directory)
    /// and have the supervisor watch this process. Fails if the VM is no longer running.
    pub(crate) fn begin(store: &StateStore, vm: &VmId, staging: String) -> Result<Self> {
        let me = process::identify(std::process::id()).ok_or_else(|| {
            Error::new(ErrorCode::Internal, "cannot read this process's start time")
        })?;
        let st = store.update(vm, |st| {
            if st.status != VmStatus::Running {
                return Err(not_running(vm, st.status));
            }
            st.snapshot_run = Some(SnapshotRun {
                by: me,
                staging,
                holds_pause: false,
            });
            Ok(())
        })?;
        crate::vm::timeout::notify_supervisor(&st);
        Ok(Self {
            store: store.clone(),
            vm: vm.clone(),
            me,
        })
    }

    /// About to pause the VM: from here on, this run's death resumes it.
    pub(crate) fn pausing(&self) -> Result<()> {
        let me = self.me;
        self.store
            .update(&self.vm, |st| {
                match st.snapshot_run.as_mut() {
                    Some(run) if run.by == me && st.status == VmStatus::Running => {
                        run.holds_pause = true;
                        st.status = VmStatus::Paused;
                    }
                    _ => return Err(not_running(&self.vm, st.status)),
                }
                Ok(())
            })
            .map(drop)
    }

    /// The VM was resumed (`resumed`) or is left paused on request: the run no longer holds
    /// a pause that its death should undo.
    pub(crate) fn released_pause(&self, resumed: bool) -> Result<()> {
        let me = self.me;
        self.store
            .update(&self.vm, |st| {
                if let Some(run) = st.snapshot_run.as_mut().filter(|r| r.by == me) {
                    run.holds_pause = false;
                    if resumed && st.status == VmStatus::Paused {
                        st.status = VmStatus::Running;
                    }
                }
                Ok(())
            })
            .map(drop)
    }
}

impl Drop for RunRecord {
    fn drop(&mut self) {
        let me = self.me;
        let r = self.store.update(&self.vm, |st| {
            if st.snapshot_run.as_ref().is_some_and(|r| r.by == me) {
                st.snapshot_run = None;
            }
            Ok(())
        });
        if let Err(e) = r {
            tracing::warn!(vm = %self.vm, "could not record the end of the snapshot: {e}");
        }
    }
}

fn not_running(vm: &VmId, status: VmStatus) -> Error {
    Error::new(
        ErrorCode::VmNotRunning,
        format!(
            "VM {vm} is {}; only a running VM can be snapshotted",
            status.as_str()
        ),
    )
    .detail("vmId", vm.as_str())
}

/// The process of `run` is gone (the supervisor saw its pidfd become readable): undo what it
/// left. Only if the VM's record still names that run; a run that finished (and took itself
/// off) or a later one is left alone. Returns a description of what went wrong, if anything.
pub(crate) async fn recover(
    paths: &Paths,
    store: &StateStore,
    vm: &VmId,
    run: &SnapshotRun,
    client: &FirecrackerClient,
    jail_root: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut held_pause = None;
    let taken = store.update(vm, |st| {
        if let Some(r) = st.snapshot_run.take_if(|r| r.by == run.by) {
            held_pause = Some(r.holds_pause);
        }
        Ok(())
    });
    if let Err(e) = taken {
        return vec![format!("reading the VM's record: {e}")];
    }
    let Some(held_pause) = held_pause else {
        return problems;
    };
    // The status stays `paused` until the VM really runs again, so that no new snapshot can
    // start (and use the jail's output directory) meanwhile.
    let mut resumed = !held_pause;
    if held_pause {
        match client.describe_instance().await {
            Ok(i) if i.state == InstanceState::Paused => match client.resume().await {
                Ok(()) => resumed = true,
                Err(e) => problems.push(format!("resuming the VM: {e}")),
            },
            Ok(_) => resumed = true,
            Err(e) => problems.push(format!("asking Firecracker the VM's state: {e}")),
        }
        let _ = std::fs::remove_dir_all(jail_root.join(JAIL_OUT_DIR));
    }
    crate::snapshot::files::remove_staging(paths, &run.staging);
    if held_pause && resumed {
        let r = store.update(vm, |st| {
            if st.status == VmStatus::Paused && st.snapshot_run.is_none() {
                st.status = VmStatus::Running;
            }
            Ok(())
        });
        if let Err(e) = r {
            problems.push(format!("recording the VM as running: {e}"));
        }
    }
    problems
}
