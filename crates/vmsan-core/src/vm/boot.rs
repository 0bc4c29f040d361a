//! The Firecracker configuration of a VM's cold boot (docs/guest-abi.md: an initrd holding
//! the agent, and the image, disk and config drives in that order).

use vmsan_firecracker::models::{
    BootSource, CacheType, Drive, EntropyDevice, LogLevel, Logger, MachineConfiguration, Metrics,
    NetworkInterface, RateLimiter, TokenBucket, Vsock,
};
use vmsan_firecracker::{BootArgs, RootfsFsType, VmConfig};

use super::files::in_jail;

/// The guest CID every VM gets (each VM has its own vsock device, so they never clash).
pub(super) const GUEST_CID: u32 = 3;

/// The network interface of a VM.
#[derive(Debug, Clone)]
pub(super) struct NetPlan {
    /// TAP name in the VM's namespace.
    pub(super) tap: String,
    /// The guest's MAC.
    pub(super) mac: String,
    /// Guest download limit.
    pub(super) rx: Option<vmsan_net::RateLimiter>,
    /// Guest upload limit.
    pub(super) tx: Option<vmsan_net::RateLimiter>,
}

/// What a cold boot depends on.
#[derive(Debug, Clone)]
pub(super) struct BootPlan {
    /// Filesystem of the image drive.
    pub(super) rootfs_fs: RootfsFsType,
    /// vCPUs.
    pub(super) vcpus: u32,
    /// Memory in MiB.
    pub(super) mem_mib: u32,
    /// The network, if any.
    pub(super) net: Option<NetPlan>,
}

fn limiter(l: &vmsan_net::RateLimiter) -> RateLimiter {
    RateLimiter {
        bandwidth: Some(TokenBucket {
            size: l.bandwidth.size,
            refill_time: l.bandwidth.refill_time,
            one_time_burst: l.bandwidth.one_time_burst,
        }),
        ops: None,
    }
}

fn drive(id: &str, path: &str, read_only: bool, cache: Option<CacheType>) -> Drive {
    Drive {
        drive_id: id.into(),
        partuuid: None,
        is_root_device: false,
        cache_type: cache,
        is_read_only: Some(read_only),
        path_on_host: Some(path.into()),
        rate_limiter: None,
        io_engine: None,
        socket: None,
    }
}

fn logger() -> Logger {
    Logger {
        log_path: Some(in_jail::LOG.into()),
        level: Some(LogLevel::Info),
        show_level: Some(true),
        show_log_origin: None,
        module: None,
    }
}

fn metrics() -> Metrics {
    Metrics {
        metrics_path: in_jail::METRICS.into(),
    }
}

/// Logger and metrics, which a VM restored from a snapshot also gets (they are the only
/// settings Firecracker takes before a snapshot load).
pub(super) async fn observability(
    client: &vmsan_firecracker::FirecrackerClient,
) -> Result<(), vmsan_firecracker::ClientError> {
    client.put_logger(&logger()).await?;
    client.put_metrics(&metrics()).await
}

/// The whole pre-boot configuration. Paths are relative to the jail root, which is
/// Firecracker's root (jailed) or working directory (`--no-jailer`).
pub(super) fn vm_config(plan: &BootPlan) -> VmConfig {
    VmConfig {
        logger: Some(logger()),
        metrics: Some(metrics()),
        serial: None,
        boot_source: BootSource {
            kernel_image_path: in_jail::KERNEL.into(),
            initrd_path: Some(in_jail::INITRD.into()),
            boot_args: Some(BootArgs::new(plan.rootfs_fs).render()),
        },
        // The guest sees these as vda, vdb, vdc, in this order.
        drives: vec![
            drive("rootfs", in_jail::ROOTFS, true, None),
            drive("overlay", in_jail::DISK, false, Some(CacheType::Writeback)),
            drive("config", in_jail::CONFIG, true, None),
        ],
        machine: MachineConfiguration {
            vcpu_count: plan.vcpus,
            mem_size_mib: u64::from(plan.mem_mib),
            smt: Some(false),
            cpu_template: None,
            // Needed for diff snapshots later; the cost is small.
            track_dirty_pages: Some(true),
            huge_pages: None,
        },
        network_interfaces: plan
            .net
            .iter()
            .map(|n| NetworkInterface {
                iface_id: "eth0".into(),
                host_dev_name: n.tap.clone(),
                guest_mac: Some(n.mac.clone()),
                mtu: None,
                rx_rate_limiter: n.rx.as_ref().map(limiter),
                tx_rate_limiter: n.tx.as_ref().map(limiter),
            })
            .collect(),
        vsock: Some(Vsock {
            guest_cid: GUEST_CID,
            uds_path: in_jail::VSOCK.into(),
            vsock_id: None,
        }),
        entropy: Some(EntropyDevice { rate_limiter: None }),
    }
}
