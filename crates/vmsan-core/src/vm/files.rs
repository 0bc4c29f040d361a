//! Where one VM's files live on the host, and who owns them.
//!
//! The VM directory (`<home>/vms/<id>/`) keeps what outlives a run: state, the VM's disk, its
//! config drive, logs. The jail (`<home>/jail/firecracker/<id>/root/`) is rebuilt on every
//! start from hard links to those files and to the shared kernel, initrd and image.

use std::path::PathBuf;

use crate::ids::VmId;
use crate::paths::Paths;

/// Jailed Firecracker processes run as `JAIL_ID_BASE + slot` (uid and gid): a different
/// unprivileged identity per VM, never 0, far above ordinary users and system accounts.
pub(crate) const JAIL_ID_BASE: u32 = 400_000;

/// The uid and gid of a slot's jailed Firecracker.
pub(crate) fn jail_ids(slot: u32) -> (u32, u32) {
    (JAIL_ID_BASE + slot, JAIL_ID_BASE + slot)
}

/// Names the files have inside the jail (and so in Firecracker's API calls).
pub(crate) mod in_jail {
    /// The guest kernel.
    pub(crate) const KERNEL: &str = "vmlinux";
    /// The initrd holding the agent.
    pub(crate) const INITRD: &str = "initrd.cpio";
    /// The image's filesystem (read-only, shared).
    pub(crate) const ROOTFS: &str = "rootfs.img";
    /// The VM's writable disk.
    pub(crate) const DISK: &str = "disk.ext4";
    /// The config drive.
    pub(crate) const CONFIG: &str = "config.drive";
    /// Firecracker's log.
    pub(crate) const LOG: &str = "firecracker.log";
    /// Firecracker's metrics.
    pub(crate) const METRICS: &str = "metrics.json";
    /// The hybrid vsock socket.
    pub(crate) const VSOCK: &str = "v.sock";
    /// A restored VM's snapshot state (a link to the snapshot's, read-only).
    pub(crate) const SNAPSHOT_STATE: &str = "snapshot.vmstate";
    /// A restored VM's snapshot memory (a link to the snapshot's, read-only: Firecracker maps
    /// it private, so clones share its page cache and never write it).
    pub(crate) const SNAPSHOT_MEMORY: &str = "snapshot.memory";
    /// The API socket, as Firecracker is told (absolute inside the jail).
    pub(crate) const API_SOCKET: &str = "/run/firecracker.socket";
}

/// Host paths of one VM's persistent files.
#[derive(Debug, Clone)]
pub(crate) struct VmFiles {
    dir: PathBuf,
}

impl VmFiles {
    /// The files of VM `id`.
    pub(crate) fn new(paths: &Paths, id: &VmId) -> Self {
        Self {
            dir: paths.vm_dir(id),
        }
    }

    /// The VM directory.
    pub(crate) fn dir(&self) -> &PathBuf {
        &self.dir
    }

    /// The VM's writable disk (the overlay's upper layer).
    pub(crate) fn disk(&self) -> PathBuf {
        self.dir.join(in_jail::DISK)
    }

    /// The config drive.
    pub(crate) fn config_drive(&self) -> PathBuf {
        self.dir.join(in_jail::CONFIG)
    }

    /// The guest's serial console.
    pub(crate) fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }

    /// Firecracker's own log (hard-linked into the jail so it survives it).
    pub(crate) fn firecracker_log(&self) -> PathBuf {
        self.dir.join(in_jail::LOG)
    }

    /// Firecracker's metrics.
    pub(crate) fn metrics(&self) -> PathBuf {
        self.dir.join(in_jail::METRICS)
    }

    /// The supervisor's log.
    pub(crate) fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }
}
