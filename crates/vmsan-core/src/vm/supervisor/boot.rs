//! The supervisor's boot: the network and the VMM, then a cold boot or a snapshot load, the
//! agent's announcement, and the VM recorded as running.

use std::time::Duration;

use tokio::time::Instant;

use vmsan_agent_client::{AgentClient, Endpoint, ReadyListener};

use super::launch;
use super::{Prepared, Supervisor, vmm::Vmm, with_last_words, with_log_tail};
use crate::error::{Error, ErrorCode, Result};
use crate::state::{VmState, VmStatus};
use crate::vm::files::jail_ids;
use crate::vm::protocol::{BOOT_TIMEOUT, boot_timeout};
use crate::vm::stopwatch::StepName;
use crate::{process, time};

/// How long a failed Firecracker API exchange waits for the VMM's exit that may explain it.
const EXIT_AFTER_API_ERROR: Duration = Duration::from_secs(1);

impl Supervisor {
    /// Boot (or restore) the guest, then record the VM as running.
    pub(super) async fn boot(
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
            st.vsock_socket = Some(vsock.to_owned());
            st.api_socket = Some(self.layout.api_socket());
            st.chroot_dir = Some(self.layout.root());
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
        self.clock.lap(StepName::RecordedAsRunning);
        Ok(())
    }

    /// Network, jail, Firecracker, configuration, InstanceStart (or snapshot load), agent
    /// announcement. Returns whether the guest was restored from a snapshot.
    pub(super) async fn start_guest(
        &mut self,
        prepared: tokio::sync::oneshot::Receiver<Prepared>,
    ) -> Result<bool> {
        let slot = self
            .state
            .network
            .slot
            .ok_or_else(|| Error::new(ErrorCode::Internal, "VM has no slot"))?;
        let (uid, gid) = jail_ids(slot);
        self.clock.lap(StepName::SupervisorRuntime);

        // The network is built on a thread while the jail is laid out and the jailer starts:
        // the jailer needs only the namespace, Firecracker the TAP only once it is configured
        // (or loads a snapshot), and the guest runs after that.
        let (host_cfg, net_spec) = launch::network_plan(&self.state, uid, gid)?;
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
            tokio::task::spawn_blocking(move || launch::vmm_cgroups(&launch, vcpus, mem))
        };
        let started = self.start_vmm(prepared, netns, cgroups, uid, gid).await;
        let built = building
            .await
            .map_err(|e| Error::new(ErrorCode::Internal, format!("network setup task: {e}")))?
            .map_err(|e| crate::vm::convert::net(e, "setting up the VM's network"));
        let net = match built {
            Ok((net, netns_took, took)) => {
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                self.clock
                    .add_parallel(StepName::NetworkNamespace, ms(netns_took));
                self.clock.add_parallel(StepName::Network, ms(took));
                // Torn down by `finish` from here on, whatever happens next.
                self.net.insert(net)
            }
            // It explains a failed start better than the jailer's view of it would.
            Err(e) => return Err(e),
        };
        let (snapshot, ready) = started?;
        self.dns = Some(launch::start_dns_filter(net, &self.state)?);
        let net_plan = launch::net_plan(net);
        self.clock.lap(StepName::WaitNetworkDnsFilter);

        if let Some(snap) = &snapshot {
            self.restore(snap, &ready, net_plan.as_ref().map(|n| n.tap.as_str()))
                .await?;
        } else {
            self.cold_boot(ready, net_plan).await?;
        }
        Ok(snapshot.is_some())
    }

    /// Load the snapshot, wait for the restored agent, give it this VM's identity, and keep
    /// that identity on the config drive for later cold boots.
    pub(super) async fn restore(
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
        let exited = tokio::select! {
            r = super::restore::load_and_reidentify(&target, ready, &mut self.clock, deadline) => match r {
                Ok(()) => return Ok(()),
                // As in a cold boot: a failure may be the VMM dying under the load.
                Err(e) => match tokio::time::timeout(EXIT_AFTER_API_ERROR, vmm.wait()).await {
                    Ok(why) => why,
                    Err(_) => return Err(with_log_tail(e, &self.files.firecracker_log())),
                },
            },
            why = vmm.wait() => why,
        };
        self.vmm = None;
        Err(with_log_tail(
            Error::new(
                ErrorCode::FirecrackerExited,
                format!("Firecracker exited during the restore: {exited}"),
            ),
            &self.files.firecracker_log(),
        ))
    }

    /// Configure Firecracker, start the guest, wait for its agent's announcement.
    pub(super) async fn cold_boot(
        &mut self,
        ready: ReadyListener,
        net_plan: Option<super::plan::NetPlan>,
    ) -> Result<()> {
        let plan = super::plan::BootPlan {
            rootfs_fs: self.launch.rootfs_fs,
            vcpus: self.state.vcpu_count,
            mem_mib: self.state.mem_size_mib,
            net: net_plan,
            guest: super::plan::GuestBoot::of(&self.state.boot)?,
        };
        let timeout = boot_timeout(&self.state.boot);
        let vmm = self
            .vmm
            .as_mut()
            .ok_or_else(|| Error::new(ErrorCode::Internal, "no VMM"))?;
        let machine = super::plan::vm_config(&plan);
        let configured = tokio::select! {
            r = machine.boot(&self.client) => match r {
                Ok(timings) => Ok(timings),
                // A failed API exchange is often the VMM dying under it (killed, crashed): its
                // exit, if it follows, is the cause to report, not the broken connection.
                Err(e) => match tokio::time::timeout(EXIT_AFTER_API_ERROR, vmm.wait()).await {
                    Ok(why) => Err(why),
                    Err(_) => return Err(crate::vm::convert::firecracker(e)),
                },
            },
            why = vmm.wait() => Err(why),
        };
        let timings = match configured {
            Ok(timings) => timings,
            Err(why) => {
                self.vmm = None;
                return Err(with_last_words(
                    Error::new(
                        ErrorCode::FirecrackerExited,
                        format!("Firecracker exited during boot: {why}"),
                    ),
                    &self.files,
                ));
            }
        };
        let (start, config): (Vec<_>, Vec<_>) = timings
            .iter()
            .partition(|st| st.step.contains("InstanceStart"));
        let ms = |v: &[&vmsan_firecracker::StepTiming]| {
            v.iter()
                .map(|st| st.took.as_secs_f64() * 1000.0)
                .sum::<f64>()
        };
        self.clock.add(StepName::Configure, ms(&config));
        self.clock.add(StepName::InstanceStart, ms(&start));

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

        self.clock.lap(StepName::AgentReady);
        self.confirm_host_to_agent(BOOT_TIMEOUT).await?;
        self.clock.lap(StepName::AgentAnswers);
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
    pub(super) async fn confirm_host_to_agent(&self, within: Duration) -> Result<()> {
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
