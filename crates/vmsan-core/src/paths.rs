//! Where vmsan keeps things on the host.
//!
//! Everything lives under one root-owned home directory, `/var/lib/vmsan` unless `VMSAN_HOME`
//! says otherwise. Nothing a non-root user can write is ever executed as root, so binaries and
//! kernels live here too, not in a user's home (where any process of that user could replace
//! them before the next `sudo vmsan` ran them as root).

use std::path::{Path, PathBuf};

use crate::ids::{SnapshotId, VmId};

/// The default home directory.
pub const DEFAULT_HOME: &str = "/var/lib/vmsan";

/// The environment variable that overrides the home directory.
pub const HOME_ENV: &str = "VMSAN_HOME";

/// Host-wide runtime state shared by every home on the host (network slot claims).
pub const DEFAULT_RUN_DIR: &str = "/run/vmsan";

/// The host paths vmsan uses, all derived from one home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    home: PathBuf,
    run_dir: PathBuf,
}

impl Paths {
    /// `$VMSAN_HOME`, or `/var/lib/vmsan`.
    pub fn from_env() -> Self {
        match std::env::var_os(HOME_ENV) {
            Some(h) if !h.is_empty() => Self::new(h),
            _ => Self::new(DEFAULT_HOME),
        }
    }

    /// Paths under an explicit home directory.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Self {
            home: home.into(),
            run_dir: PathBuf::from(DEFAULT_RUN_DIR),
        }
    }

    /// Another host-wide runtime directory: for tests of the state store that must not share
    /// claims with the host's real VMs. The product always uses [`DEFAULT_RUN_DIR`].
    #[must_use]
    pub fn with_run_dir(mut self, run_dir: impl Into<PathBuf>) -> Self {
        self.run_dir = run_dir.into();
        self
    }

    /// The host-wide runtime directory (`/run/vmsan`): shared by every home on the host.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// One directory per VM lives here.
    pub fn vms_dir(&self) -> PathBuf {
        self.home.join("vms")
    }

    /// The directory of one VM: state, logs, disks, sockets.
    pub fn vm_dir(&self, id: &VmId) -> PathBuf {
        self.vms_dir().join(id.as_str())
    }

    /// The VM's state file.
    pub fn state_file(&self, id: &VmId) -> PathBuf {
        self.vm_dir(id).join("state.json")
    }

    /// The VM's serial console log.
    pub fn serial_log(&self, id: &VmId) -> PathBuf {
        self.vm_dir(id).join("serial.log")
    }

    /// Slot claims: one file per taken network slot, naming its VM and home. Host-wide (under
    /// [`run_dir`](Self::run_dir)), since slots name host-wide links and subnets.
    pub fn slots_dir(&self) -> PathBuf {
        self.run_dir.join("slots")
    }

    /// Home-wide locks.
    pub fn locks_dir(&self) -> PathBuf {
        self.home.join("locks")
    }

    /// Firecracker, jailer: root-owned, checked before every use.
    pub fn bin_dir(&self) -> PathBuf {
        self.home.join("bin")
    }

    /// Guest kernels.
    pub fn kernels_dir(&self) -> PathBuf {
        self.home.join("kernels")
    }

    /// Image blobs, built filesystems and the initrd.
    pub fn images_dir(&self) -> PathBuf {
        self.home.join("images")
    }

    /// The jailer's chroot base.
    pub fn jail_dir(&self) -> PathBuf {
        self.home.join("jail")
    }

    /// Snapshots, one directory each.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.home.join("snapshots")
    }

    /// One snapshot's directory.
    pub fn snapshot_dir(&self, id: &SnapshotId) -> PathBuf {
        self.snapshots_dir().join(id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_under_home() {
        let p = Paths::new("/h");
        let id = VmId::parse("vm-0000abcd").unwrap();
        assert_eq!(
            p.state_file(&id),
            Path::new("/h/vms/vm-0000abcd/state.json")
        );
        assert_eq!(
            p.serial_log(&id),
            Path::new("/h/vms/vm-0000abcd/serial.log")
        );
        assert_eq!(p.bin_dir(), Path::new("/h/bin"));
        let s = SnapshotId::parse("vm-0000abcd-17").unwrap();
        assert_eq!(p.snapshot_dir(&s), Path::new("/h/snapshots/vm-0000abcd-17"));
    }
}
