//! `vmsan create --snapshot ID [--count N]`: new VMs from a snapshot, each with its own slot,
//! TAP, address, MAC, vsock, disk copy and agent token.
//!
//! The host side here plans a clone from the snapshot (this module) and hands its first run to
//! the supervisor, which loads the snapshot instead of booting ([`load_and_reidentify`]). A
//! restored guest wakes up as the source VM (its memory says so), and the stand-in boots it
//! again from the source's config drive, which each clone starts with: either way the agent
//! answers to the snapshot's token, and is then given the clone's identity.

use std::time::Duration;

use tokio::time::Instant;
use vmsan_agent_client::{AgentClient, Endpoint, ReadyListener};
use vmsan_firecracker::FirecrackerClient;
use vmsan_firecracker::models::{NetworkOverride, SnapshotLoadParams, VsockOverride};
use vmsan_proto::{GuestConfig, GuestNetwork, Reidentify};

use super::files::in_jail;
use super::lifecycle::{BootMedia, VmSpec};
use super::supervisor::Stopwatch;
use crate::error::{Error, ErrorCode, Result};
use crate::paths::Paths;
use crate::snapshot::{HostFingerprint, Snapshot};
use crate::state::VmState;
use crate::validate::options::CreateOptions;

/// The settings and media of clones of `snap`. The snapshot fixes the machine (vCPUs, memory),
/// image, disk and guest configuration; the network policy is the snapshot's unless the
/// command gave one; timeout, project and isolation come from the command.
pub fn plan(
    paths: &Paths,
    snap: &Snapshot,
    opts: &CreateOptions,
    network_given: bool,
) -> Result<(VmSpec, BootMedia)> {
    let meta = &snap.meta;
    let mut spec = super::media::spec_of(opts);
    spec.vcpus = meta.vcpus;
    spec.memory_mib = meta.mem_mib;
    spec.disk_bytes = meta
        .files
        .get(crate::snapshot::files::DISK)
        .map_or(0, |f| f.size);
    spec.runtime = meta.runtime.clone();
    spec.init = meta.init.clone();
    // The clone's later cold boots need the source's kernel arguments and CPU template (its
    // memory already runs with them); only the boot timeout may be given anew.
    let boot_timeout_ms = spec.boot.boot_timeout_ms.or(meta.boot.boot_timeout_ms);
    spec.boot = meta.boot.clone();
    spec.boot.kernel_args = Some(meta.boot.kernel_args.clone().unwrap_or_default());
    spec.boot.boot_timeout_ms = boot_timeout_ms;
    if opts.project.is_empty() {
        spec.project = meta.project.clone();
    }
    if !network_given {
        let mut n = meta.network.clone();
        // Per-VM values are assigned anew.
        n.slot = None;
        n.tap_device = String::new();
        n.host_ip = String::new();
        n.guest_ip = String::new();
        n.mac_address = String::new();
        n.netns_name = None;
        // An imported snapshot has no resolvers of its own (see `snapshot::trust`): the
        // host's, as for a new VM.
        if n.dns_servers.is_empty() {
            n.dns_servers = spec.network.dns_servers.clone();
        }
        spec.network = n;
    }
    let (kernel, initrd) = super::media::boot_files(paths, None)?;
    let media = BootMedia {
        kernel,
        initrd,
        rootfs: snap.file(crate::snapshot::files::ROOTFS),
        rootfs_fs: meta.rootfs_fs.clone(),
        image: meta.image.clone(),
        image_config: vmsan_proto::ImageConfig::default(),
        kernel_args: None,
    };
    Ok((spec, media))
}

/// Refuse to restore `count` clones of `mem_mib` each when the host does not have the memory.
pub fn check_host_memory(mem_mib: u32, count: u32) -> Result<()> {
    let text =
        std::fs::read_to_string("/proc/meminfo").map_err(|e| Error::io("read /proc/meminfo", e))?;
    let Some(available_kib) = text.lines().find_map(|l| {
        l.strip_prefix("MemAvailable:")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
    }) else {
        return Ok(());
    };
    let available_mib = available_kib >> 10;
    let needed_mib = (u64::from(mem_mib) + super::host::VMM_OVERHEAD_MIB) * u64::from(count);
    if needed_mib > available_mib {
        return Err(Error::new(
            ErrorCode::HostMemoryInsufficient,
            format!(
                "Not enough memory for {count} clone(s) of {mem_mib} MiB: {needed_mib} MiB needed, \
                 {available_mib} MiB available"
            ),
        )
        .detail("neededMib", needed_mib)
        .detail("availableMib", available_mib));
    }
    Ok(())
}

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
        .map_err(super::convert::firecracker)?
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
    super::boot::observability(client)
        .await
        .map_err(super::convert::firecracker)?;
    client
        .load_snapshot(&load)
        .await
        .map_err(super::convert::firecracker)?;
    clock.lap("snapshot load");

    let restored = AgentClient::new(Endpoint::hybrid_vsock(vsock), &token);
    wait_for_agent(&restored, ready, deadline).await?;
    clock.lap("restored agent answers");

    let mut cfg = GuestConfig::from_drive_bytes(
        &std::fs::read(&t.config_drive).map_err(|e| Error::io("read the config drive", e))?,
    )
    .map_err(|e| Error::new(ErrorCode::VmSnapshotCorrupt, format!("config drive: {e}")))?;
    let net = &st.network;
    cfg.vm_id = st.id.to_string();
    cfg.hostname = st.id.to_string();
    cfg.token = st.agent_token.clone().unwrap_or_default();
    cfg.network = Some(GuestNetwork {
        address: format!("{}/30", net.guest_ip),
        gateway: net.host_ip.clone(),
        mac: Some(net.mac_address.clone()),
        dns: vec![net.host_ip.clone()],
        mtu: cfg.network.as_ref().and_then(|n| n.mtu),
    });
    // The drive is written while the agent takes the identity (a restored guest read its
    // drive long ago; the stand-in, when it booted the restored agent above).
    let keep = {
        let (path, cfg, (uid, gid)) = (t.config_drive.clone(), cfg.clone(), t.jail_ids);
        tokio::task::spawn_blocking(move || super::config_drive::write(&path, &cfg, uid, gid))
    };
    let reidentified = reidentify(&restored, &cfg, vsock).await;
    let kept = keep
        .await
        .map_err(|e| Error::new(ErrorCode::Internal, format!("config drive task: {e}")))?;
    reidentified?;
    kept?;
    clock.lap("new identity");
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
