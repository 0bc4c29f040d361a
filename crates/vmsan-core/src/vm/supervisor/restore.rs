//! The supervisor's side of a restore: load the snapshot into the fresh Firecracker, wait for
//! the restored agent, and give it the new VM's identity.

use std::time::Duration;

use tokio::time::Instant;
use vmsan_agent_client::{AgentClient, Endpoint, ReadyListener};
use vmsan_firecracker::FirecrackerClient;
use vmsan_firecracker::models::{NetworkOverride, SnapshotLoadParams, VsockOverride};
use vmsan_proto::{GuestConfig, GuestNetwork, Reidentify};

use crate::error::{Error, ErrorCode, Result};
use crate::snapshot::{HostFingerprint, Snapshot};
use crate::state::{VmState, ip_text};
use crate::vm::files::in_jail;
use crate::vm::stopwatch::{StepName, Stopwatch};

/// What the supervisor restores, and where.
pub(super) struct RestoreTarget<'a> {
    /// The snapshot (checked when the supervisor opened it).
    pub(super) snap: &'a Snapshot,
    /// The new VM.
    pub(super) state: &'a VmState,
    /// Its Firecracker, fresh.
    pub(super) client: &'a FirecrackerClient,
    /// Its vsock socket (host path).
    pub(super) vsock: &'a std::path::Path,
    /// Its config drive (host path).
    pub(super) config_drive: std::path::PathBuf,
    /// The jail's uid and gid, which own the config drive.
    pub(super) jail_ids: (u32, u32),
    /// Its TAP, if it has a network.
    pub(super) tap: Option<&'a str>,
}

/// The supervisor's side: load the snapshot into the fresh Firecracker, wait for the restored
/// agent, and give it this VM's identity, which its config drive keeps for later cold boots.
pub(super) async fn load_and_reidentify(
    t: &RestoreTarget<'_>,
    ready: &ReadyListener,
    clock: &mut Stopwatch,
    deadline: Instant,
) -> Result<()> {
    let (snap, st, client, vsock, tap) = (t.snap, t.state, t.client, t.vsock, t.tap);
    let version = client
        .version()
        .await
        .map_err(crate::vm::convert::firecracker)?
        .firecracker_version;
    snap.meta
        .check_compatible(&version, &HostFingerprint::current())?;
    let token = snap.agent_token()?;

    let mut load = SnapshotLoadParams::from_file(in_jail::SNAPSHOT_STATE, in_jail::SNAPSHOT_MEMORY);
    load.resume_vm = Some(true);
    load.track_dirty_pages = Some(true);
    load.network_overrides = tap.map(|t| {
        vec![NetworkOverride {
            iface_id: "eth0".into(),
            host_dev_name: t.to_owned(),
        }]
    });
    load.vsock_override = Some(VsockOverride {
        uds_path: in_jail::VSOCK.into(),
    });
    if cfg!(target_arch = "x86_64") {
        load.clock_realtime = Some(true);
    }
    super::plan::observability(client)
        .await
        .map_err(crate::vm::convert::firecracker)?;
    client
        .load_snapshot(&load)
        .await
        .map_err(crate::vm::convert::firecracker)?;
    clock.lap(StepName::SnapshotLoad);

    let restored = AgentClient::new(Endpoint::hybrid_vsock(vsock), &token);
    wait_for_agent(&restored, ready, deadline).await?;
    clock.lap(StepName::RestoredAgentAnswers);

    let mut cfg = GuestConfig::from_drive_bytes(
        &std::fs::read(&t.config_drive).map_err(|e| Error::io("read the config drive", e))?,
    )
    .map_err(|e| Error::new(ErrorCode::VmSnapshotCorrupt, format!("config drive: {e}")))?;
    let net = &st.network;
    cfg.vm_id = st.id.to_string();
    cfg.hostname = st.id.to_string();
    cfg.token = st.agent_token.clone().unwrap_or_default();
    cfg.network = Some(GuestNetwork {
        address: format!("{}/30", ip_text(net.guest_ip)),
        gateway: ip_text(net.host_ip),
        mac: Some(net.mac_address.clone()),
        dns: vec![ip_text(net.host_ip)],
        mtu: cfg.network.as_ref().and_then(|n| n.mtu),
    });
    // The drive is written while the agent takes the identity (a restored guest read its
    // drive long ago; the stand-in, when it booted the restored agent above).
    let keep = {
        let (path, cfg, (uid, gid)) = (t.config_drive.clone(), cfg.clone(), t.jail_ids);
        tokio::task::spawn_blocking(move || crate::vm::config_drive::write(&path, &cfg, uid, gid))
    };
    let reidentified = reidentify(&restored, &cfg, vsock).await;
    let kept = keep
        .await
        .map_err(|e| Error::new(ErrorCode::Internal, format!("config drive task: {e}")))?;
    reidentified?;
    kept?;
    clock.lap(StepName::NewIdentity);
    Ok(())
}

/// Give the restored agent the clone's identity, then prove that only the new token works.
async fn reidentify(
    restored: &AgentClient,
    cfg: &GuestConfig,
    vsock: &std::path::Path,
) -> Result<()> {
    let entropy: [u8; 32] = rand::random();
    restored
        .reidentify(&Reidentify {
            vm_id: cfg.vm_id.clone(),
            hostname: cfg.hostname.clone(),
            token: cfg.token.clone(),
            network: cfg.network.clone(),
            clock_unix_ms: crate::time::epoch_ms(),
            entropy_hex: hex::encode(entropy),
        })
        .await
        .map_err(|e| {
            Error::new(
                ErrorCode::VmCreateFailed,
                format!("the restored guest did not take its new identity: {e}"),
            )
        })?;
    AgentClient::new(Endpoint::hybrid_vsock(vsock), &cfg.token)
        .health()
        .await
        .map_err(|e| {
            Error::new(
                ErrorCode::VmCreateFailed,
                format!("the restored guest does not answer to its new token: {e}"),
            )
        })?;
    Ok(())
}

/// Wait until the restored agent answers. A guest restored by Firecracker is already running;
/// the stand-in boots it again and announces it, which ends each pause at once.
async fn wait_for_agent(
    agent: &AgentClient,
    ready: &ReadyListener,
    deadline: Instant,
) -> Result<()> {
    let mut pause = Duration::from_millis(1);
    loop {
        match agent.health().await {
            Ok(_) => return Ok(()),
            Err(e) if vmsan_agent_client::is_auth_error(&e) => {
                return Err(Error::new(
                    ErrorCode::VmSnapshotCorrupt,
                    "the restored agent refuses the snapshot's token",
                ));
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::new(
                    ErrorCode::TimeoutAgent,
                    format!("the restored agent did not answer: {e}"),
                ));
            }
            Err(_) => {}
        }
        let _ = tokio::time::timeout(pause, ready.wait(pause)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
