//! The few raw system calls nix does not wrap.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// `FICLONE` = `_IOW(0x94, 9, int)` (the same number on x86_64 and aarch64).
const FICLONE: libc::Ioctl = 0x4004_9409;

/// Makes `dst` share `src`'s data blocks (a reflink). Fails with `EOPNOTSUPP`/`EXDEV`/`EINVAL`
/// where the filesystem cannot, and the caller copies instead.
pub(crate) fn ficlone(dst: impl AsFd, src: impl AsFd) -> io::Result<()> {
    let dst = dst.as_fd();
    let src = src.as_fd();
    // SAFETY: FICLONE takes the source descriptor as its integer argument and touches no
    // memory of ours; both descriptors are borrowed and stay open for the call.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
