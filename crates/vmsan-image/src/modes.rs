//! Modes of the directories vmsan keeps under its home.
//!
//! The README promises that the home is readable by the `vmsan` group and by nobody else. The
//! files in it cannot all be private: the kernel, initrd and image filesystems are hard-linked
//! into each VM's jail, where Firecracker reads them under a per-VM uid, so they stay
//! world-readable (0644). What keeps other users out is the directories: the home and every
//! directory the image store and `setup` make are 0750 (group read and search, nothing for
//! others), setgid so that what is made inside takes the home's group (the `vmsan` group
//! when `vmsan` gave it one).
//!
//! A home made by an older vmsan has 0755 directories: they are narrowed the next time vmsan
//! writes there, but only directories vmsan made (owned by this process's user) and never
//! through a symlink.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, fchmod, fstat};

use crate::error::{Error, IoContext, Result};

/// The permission bits of a private directory: owner everything, group read and search.
pub const PRIVATE_DIR_MODE: u32 = 0o750;

/// Create `dir` (and missing parents) as a private directory, or narrow it if it exists.
///
/// # Errors
/// I/O.
pub fn private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .ctx(|| format!("create directory {}", dir.display()))?;
    narrow(dir)
}

/// Take group write and every bit for others off `dir`, if it is a directory this process's
/// user owns (a symlink in its place, or someone else's directory, is left alone). The
/// setgid bit is kept.
///
/// # Errors
/// I/O other than `dir` being a symlink or not a directory.
pub fn narrow(dir: &Path) -> Result<()> {
    let fd = match open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // A symlink (O_NOFOLLOW) or not a directory: not ours to change.
        Err(nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR) => return Ok(()),
        Err(e) => return Err(Error::io(format!("open {}", dir.display()), e.into())),
    };
    let st = fstat(&fd).map_err(|e| Error::io(format!("stat {}", dir.display()), e.into()))?;
    if st.st_uid != nix::unistd::geteuid().as_raw() {
        return Ok(());
    }
    let mode = st.st_mode & 0o7777;
    let narrowed = mode & !0o027;
    if narrowed != mode {
        fchmod(&fd, Mode::from_bits_truncate(narrowed))
            .map_err(|e| Error::io(format!("chmod {}", dir.display()), e.into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn new_directories_are_private_and_old_ones_narrowed() {
        let t = tempfile::tempdir().unwrap();
        let new = t.path().join("a/b");
        private_dir(&new).unwrap();
        assert_eq!(mode(&new) & 0o777, 0o750);
        assert_eq!(mode(&t.path().join("a")) & 0o777, 0o750);

        let old = t.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o2777)).unwrap();
        private_dir(&old).unwrap();
        assert_eq!(
            mode(&old),
            0o2750,
            "setgid kept, group write and others gone"
        );
    }

    #[test]
    fn a_symlink_is_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        narrow(&link).unwrap();
        assert_eq!(mode(&target), 0o755);
    }
}
