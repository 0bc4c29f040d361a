//! The supervisor's watch over a running VM (its VMM's exit, `--timeout`, host disk room,
//! stop and reload signals) and the teardown that ends every run.

use std::io::Write;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use vmsan_agent_client::{AgentClient, Endpoint};

use super::launch;
use super::{AGENT_STOP_GRACE, CAD_STOP_GRACE, KILL_GRACE, TRIM_ABOVE, TRIM_EVERY};
use super::{Ended, Supervisor, vmm::Vmm};
use crate::error::ErrorCode;
use crate::state::{ProcessId, SnapshotRun, VmStatus};
use crate::sys::proc::PidFd;
use crate::vm::files::VmFiles;
use crate::vm::host;
use crate::{process, time};

impl Supervisor {
    /// Wait until the VM ends: by itself, by `vmsan stop` (SIGTERM), or by its timeout.
    pub(super) async fn watch(
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
                        crate::vm::timeout::end_holds(st, |h| *h == gone, time::epoch_ms());
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
                        let problems = crate::vm::snapshot_run::recover(
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
                        launch::refresh_dns_policy(domains, &self.state);
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
    pub(super) fn watch_host_disk(&mut self) {
        let full = crate::vm::disk_room::full_reason(&self.files.disk());
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
    pub(super) fn reload(&mut self) {
        match self.store.get_recorded(&self.state.id) {
            Ok(st) => self.state = st,
            Err(e) => tracing::warn!("re-reading the VM's record: {e}"),
        }
    }

    /// Pidfds of the processes holding the timeout off (see `vm::timeout`). A holder that is
    /// already gone gets a pidfd that is readable at once, or, if even its pid is gone, ends
    /// its hold here.
    pub(super) fn watch_holders(&mut self) -> Vec<(ProcessId, AsyncFd<PidFd>)> {
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
                crate::vm::timeout::end_holds(st, |h| gone.contains(h), time::epoch_ms());
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
    pub(super) fn watch_snapshot_run(&self) -> Option<(SnapshotRun, Option<AsyncFd<PidFd>>)> {
        let run = self.state.snapshot_run.clone()?;
        // The pidfd first, then the identity: a pid reused since is not mistaken for it.
        let fd = PidFd::open(run.by.pid)
            .and_then(PidFd::into_async)
            .ok()
            .filter(|_| process::is_alive(&run.by));
        Some((run, fd))
    }

    pub(super) fn timeout_deadline(&self) -> Option<Instant> {
        let at = time::parse_rfc3339(self.state.timeout_at.as_deref()?)?;
        let left = at.saturating_sub(time::epoch_ms());
        Some(Instant::now() + Duration::from_millis(left))
    }

    /// The agent powers the guest off; failing that Ctrl-Alt-Del; failing that SIGKILL.
    pub(super) async fn stop_gracefully(&self, vmm: &mut Vmm) {
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
    pub(super) async fn finish(mut self, ended: Ended) {
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
                let r = match crate::vm::last_words::why(&self.files, false) {
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
