//! Thin disks and the filesystem under them.
//!
//! A VM's disk is a sparse file: a 10 GiB disk costs what the guest wrote. So the disks of a
//! home can promise more than the filesystem holding them has free, and a guest that fills
//! its disk then fills the host's filesystem: its own writes fail (the guest sees I/O errors)
//! and every other VM of the home loses its room to grow. vmsan does not refuse such a create
//! (overcommit is what makes thin disks worth having), but says so at `create`, in `doctor`,
//! and, from the supervisor, as soon as the filesystem is full.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, ErrorCode, Result};
use crate::paths::Paths;
use crate::vm::files::in_jail;

/// Below this much room for unprivileged writers, a disk file cannot be relied on to grow
/// (Firecracker writes as the jail's uid, so the root-reserved blocks do not count).
pub(crate) const FULL_BELOW_BYTES: u64 = 1 << 20;

/// What the home's thin disks may still take, against what their filesystem has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiskRoom {
    /// Bytes free for unprivileged writers on the filesystem of the VMs' disks.
    pub free: u64,
    /// Bytes the home's disks may still grow by (their sizes minus what they hold).
    pub promised: u64,
}

impl DiskRoom {
    /// How far `extra` more promised bytes would go past the free space, if they would.
    pub(crate) fn overcommit_with(&self, extra: u64) -> Option<u64> {
        self.promised
            .saturating_add(extra)
            .checked_sub(self.free)
            .filter(|over| *over > 0)
    }

    /// The warning `create` prints for a new disk of `extra` bytes, when it overcommits.
    pub(crate) fn create_warning(&self, extra: u64) -> Option<String> {
        self.overcommit_with(extra).map(|over| {
            format!(
                "thin disks overcommit the host: this home's VM disks may grow by {} in all \
                 (this one included) but {} is free under VMSAN_HOME ({} short). A guest that \
                 fills its disk will then fill the host filesystem and its writes will fail \
                 ({}); see `vmsan doctor`.",
                gib(self.promised.saturating_add(extra)),
                gib(self.free),
                gib(over),
                ErrorCode::HostDiskFull.as_str(),
            )
        })
    }
}

/// Bytes as GiB with one decimal.
pub(crate) fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Bytes free for unprivileged writers on the filesystem holding `path`.
///
/// # Errors
/// `ERR_IO` when the filesystem cannot be queried.
pub(crate) fn free_bytes(path: &Path) -> Result<u64> {
    let s = nix::sys::statvfs::statvfs(path)
        .map_err(|e| Error::io(format!("statvfs {}", path.display()), e.into()))?;
    Ok(s.blocks_available().saturating_mul(s.fragment_size()))
}

/// Bytes a disk file may still grow by: its size minus the blocks it holds.
fn growth_left(disk: &Path) -> u64 {
    std::fs::symlink_metadata(disk)
        .map(|m| m.len().saturating_sub(m.blocks().saturating_mul(512)))
        .unwrap_or(0)
}

/// Measure the home's disks against their filesystem: one `stat` per VM directory, no state
/// read (this runs after every create). A VM whose disk file is gone promises nothing.
///
/// # Errors
/// `ERR_IO` when the home's filesystem cannot be queried or its VMs cannot be listed.
pub(crate) fn measure(paths: &Paths) -> Result<DiskRoom> {
    let vms = paths.vms_dir();
    let promised = std::fs::read_dir(&vms)
        .map_err(|e| Error::io(format!("list {}", vms.display()), e))?
        .flatten()
        .filter(|e| !e.file_name().as_encoded_bytes().starts_with(b"."))
        .map(|e| growth_left(&e.path().join(in_jail::DISK)))
        .fold(0u64, u64::saturating_add);
    Ok(DiskRoom {
        free: free_bytes(&vms)?,
        promised,
    })
}

/// The supervisor's reading of a VM's disk: `Some(reason)` while the filesystem under it is
/// too full for the disk to grow and the disk still has room to grow into.
pub(crate) fn full_reason(disk: &Path) -> Option<String> {
    let dir = disk.parent()?;
    let free = free_bytes(dir).ok()?;
    let left = growth_left(disk);
    (free < FULL_BELOW_BYTES && left > 0).then(|| {
        format!(
            "{}: the host filesystem holding this VM's disk is full ({} free, the disk may \
             grow by {} more): the guest's writes past that fail",
            ErrorCode::HostDiskFull.as_str(),
            gib(free),
            gib(left)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overcommit_is_what_goes_past_the_free_space() {
        let room = DiskRoom {
            free: 50 << 20,
            promised: 40 << 20,
        };
        assert_eq!(room.overcommit_with(0), None);
        assert_eq!(room.overcommit_with(10 << 20), None);
        assert_eq!(room.overcommit_with(11 << 20), Some(1 << 20));
        let w = room.create_warning(10 << 30).unwrap();
        assert!(
            w.contains("ERR_HOST_DISK_FULL") && w.contains("free"),
            "{w}"
        );
        assert!(room.create_warning(1 << 20).is_none());
    }

    #[test]
    fn a_sparse_disk_promises_its_holes() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.ext4");
        let f = std::fs::File::create(&disk).unwrap();
        f.set_len(1 << 30).unwrap();
        let left = growth_left(&disk);
        assert!(left > (1 << 30) - (1 << 20), "{left}");
        assert_eq!(growth_left(&dir.path().join("missing")), 0);
        // Plenty of room here: not full.
        assert_eq!(full_reason(&disk), None);
    }
}
