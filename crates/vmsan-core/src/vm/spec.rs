//! A new VM's settings and boot media, as the engine's callers give them to `create` and
//! `restore`.

use std::path::PathBuf;
use std::time::Duration;

use crate::state::ImageState;

/// What a new VM boots.
#[derive(Debug, Clone)]
pub(crate) struct BootMedia {
    /// Guest kernel.
    pub kernel: PathBuf,
    /// The initrd holding the agent.
    pub initrd: PathBuf,
    /// The image's filesystem (read-only).
    pub rootfs: PathBuf,
    /// `squashfs` or `ext4`.
    pub rootfs_fs: vmsan_proto::FsType,
    /// The image it came from.
    pub image: Option<ImageState>,
    /// The image's config: defaults for exec.
    pub image_config: vmsan_proto::ImageConfig,
    /// Arguments stored with the kernel at `vmsan setup` (used unless the VM gives its own).
    pub kernel_args: Option<String>,
}

/// A new VM's settings (validated by the caller).
#[derive(Debug, Clone)]
pub(crate) struct VmSpec {
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Writable disk size in bytes.
    pub disk_bytes: u64,
    /// Free-form label.
    pub project: String,
    /// Runtime name, or `image`/`rootfs`.
    pub runtime: crate::state::RuntimeName,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// Network identity and policy (slot and addresses are filled in by `create`).
    pub network: crate::state::NetworkState,
    /// Isolation features.
    pub isolation: crate::state::Isolation,
    /// `agent` or `image`.
    pub init: vmsan_proto::InitMode,
    /// Kernel arguments (`Some("")`: none, whatever the kernel has stored), CPU template,
    /// boot timeout.
    pub boot: crate::state::BootSettings,
}
