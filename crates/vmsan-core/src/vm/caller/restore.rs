//! `vmsan create --snapshot ID [--count N]`: new VMs from a snapshot, each with its own slot,
//! TAP, address, MAC, vsock, disk copy and agent token.
//!
//! The host side here plans a clone from the snapshot (this module) and hands its first run to
//! the supervisor, which loads the snapshot instead of booting (`supervisor::restore`). A
//! restored guest wakes up as the source VM (its memory says so), and the stand-in boots it
//! again from the source's config drive, which each clone starts with: either way the agent
//! answers to the snapshot's token, and is then given the clone's identity.

use crate::error::{Error, ErrorCode, Result};
use crate::paths::Paths;
use crate::snapshot::Snapshot;
use crate::validate::options::CreateOptions;
use crate::vm::spec::{BootMedia, VmSpec};

/// The settings and media of clones of `snap`. The snapshot fixes the machine (vCPUs, memory),
/// image, disk and guest configuration; the network policy is the snapshot's unless the
/// command gave one; timeout, project and isolation come from the command.
pub(super) fn plan(
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
    spec.runtime = meta.runtime;
    spec.init = meta.init;
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
        n.host_ip = None;
        n.guest_ip = None;
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
        rootfs_fs: meta.rootfs_fs,
        image: meta.image.clone(),
        image_config: vmsan_proto::ImageConfig::default(),
        kernel_args: None,
    };
    Ok((spec, media))
}

/// Refuse to restore `count` clones of `mem_mib` each when the host does not have the memory.
pub(super) fn check_host_memory(mem_mib: u32, count: u32) -> Result<()> {
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
    let needed_mib = (u64::from(mem_mib) + crate::vm::host::VMM_OVERHEAD_MIB) * u64::from(count);
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
