//! The Firecracker configuration of a VM's cold boot (docs/guest-abi.md: an initrd holding
//! the agent, and the image, disk and config drives in that order).

use vmsan_firecracker::models::CpuTemplate;
use vmsan_firecracker::models::{
    BootSource, CacheType, Drive, EntropyDevice, LogLevel, Logger, MachineConfiguration, Metrics,
    NetworkInterface, RateLimiter, TokenBucket, Vsock,
};
use vmsan_firecracker::{BootArgs, CustomCpuTemplate, KernelArgs, VmConfig};
use vmsan_proto::FsType;

use crate::error::{Error, ErrorCode, Result};
use crate::state::{BootSettings, CpuTemplateSetting};

use crate::vm::files::in_jail;

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
    pub(super) rootfs_fs: FsType,
    /// vCPUs.
    pub(super) vcpus: u32,
    /// Memory in MiB.
    pub(super) mem_mib: u32,
    /// The network, if any.
    pub(super) net: Option<NetPlan>,
    /// Kernel arguments and CPU template.
    pub(super) guest: GuestBoot,
}

/// The checked kernel arguments and CPU template of a VM's state.
#[derive(Debug, Clone, Default)]
pub(super) struct GuestBoot {
    /// Appended to vmsan's own kernel arguments.
    pub(super) kernel_args: KernelArgs,
    /// Static template (`PUT /machine-config`).
    pub(super) static_template: Option<CpuTemplate>,
    /// Custom template (`PUT /cpu-config`).
    pub(super) custom_template: Option<CustomCpuTemplate>,
}

impl GuestBoot {
    /// Check what the state records again: it goes onto the guest's command line and into
    /// Firecracker.
    pub(super) fn of(boot: &BootSettings) -> Result<Self> {
        let corrupt = |why: String| {
            Error::new(
                ErrorCode::VmStateCorrupt,
                format!("the recorded boot settings are invalid: {why}"),
            )
        };
        let kernel_args = KernelArgs::parse(boot.kernel_args.as_deref().unwrap_or(""))
            .map_err(|e| corrupt(e.to_string()))?;
        let (static_template, custom_template) = match &boot.cpu_template {
            None => (None, None),
            Some(CpuTemplateSetting::Static { name }) => (
                Some(
                    vmsan_firecracker::cpu_template::parse_static(name)
                        .ok_or_else(|| corrupt(format!("CPU template {name:?}")))?,
                ),
                None,
            ),
            Some(CpuTemplateSetting::Custom { template }) => {
                template.check().map_err(|e| corrupt(e.to_string()))?;
                (None, Some(template.clone()))
            }
        };
        Ok(Self {
            kernel_args,
            static_template,
            custom_template,
        })
    }
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
            boot_args: Some(
                BootArgs::new(plan.rootfs_fs)
                    .with_user_args(&plan.guest.kernel_args)
                    .render(),
            ),
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
            cpu_template: plan.guest.static_template,
            // Needed for diff snapshots later; the cost is small.
            track_dirty_pages: Some(true),
            huge_pages: None,
        },
        cpu_config: plan.guest.custom_template.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(boot: &BootSettings) -> BootPlan {
        BootPlan {
            rootfs_fs: FsType::Squashfs,
            vcpus: 1,
            mem_mib: 128,
            net: None,
            guest: GuestBoot::of(boot).unwrap(),
        }
    }

    #[test]
    fn defaults_are_unchanged_kernel_args_and_templates_reach_firecracker() {
        let plain = vm_config(&plan(&BootSettings::default()));
        assert_eq!(
            plain.boot_source.boot_args.as_deref(),
            Some(BootArgs::new(FsType::Squashfs).render().as_str())
        );
        assert_eq!(plain.machine.cpu_template, None);
        assert_eq!(plain.cpu_config, None);

        let template = CustomCpuTemplate::parse(
            br#"{"cpuid_modifiers":[{"leaf":"0x7","subleaf":"0x0","flags":1,"modifiers":[{"register":"ebx","bitmap":"0bxxxxxxxxxxxxxxxxxxxxxxx0xxxxxxxx"}]}]}"#,
        )
        .unwrap();
        let custom = vm_config(&plan(&BootSettings {
            kernel_args: Some("noxsave tsc=reliable".into()),
            cpu_template: Some(CpuTemplateSetting::Custom {
                template: template.clone(),
            }),
            boot_timeout_ms: Some(900_000),
        }));
        let args = custom.boot_source.boot_args.unwrap();
        assert!(
            args.contains(" noxsave tsc=reliable vmsan_rootfs=/dev/vda "),
            "{args}"
        );
        assert_eq!(custom.cpu_config, Some(template));
        assert_eq!(custom.machine.cpu_template, None);

        let stat = vm_config(&plan(&BootSettings {
            cpu_template: Some(CpuTemplateSetting::Static { name: "T2S".into() }),
            ..BootSettings::default()
        }));
        assert_eq!(stat.machine.cpu_template, Some(CpuTemplate::T2S));
        assert_eq!(stat.cpu_config, None);
    }

    #[test]
    fn a_tampered_state_is_refused_before_it_reaches_the_guest() {
        for boot in [
            BootSettings {
                kernel_args: Some("vmsan_config=/dev/vda".into()),
                ..BootSettings::default()
            },
            BootSettings {
                cpu_template: Some(CpuTemplateSetting::Static { name: "V9".into() }),
                ..BootSettings::default()
            },
        ] {
            let e = GuestBoot::of(&boot).unwrap_err();
            assert_eq!(e.code(), ErrorCode::VmStateCorrupt);
        }
    }
}
