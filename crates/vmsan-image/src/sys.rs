//! The only unsafe code of this crate: the FICLONE ioctl.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

/// Make `dest` share `src`'s extents (copy-on-write), where the filesystem supports it.
pub(crate) fn ficlone(dest: BorrowedFd<'_>, src: BorrowedFd<'_>) -> std::io::Result<()> {
    // SAFETY: FICLONE takes the source descriptor as its integer argument and reads no memory
    // of ours; both descriptors are valid for the duration of the call (they are borrowed).
    let rc = unsafe { libc::ioctl(dest.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
