//! The only unsafe code of this crate: the FICLONE ioctl and fsetxattr.
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

/// Set the extended attribute `name` of the file open as `fd` to `value`.
pub(crate) fn fsetxattr(
    fd: BorrowedFd<'_>,
    name: &std::ffi::CStr,
    value: &[u8],
) -> std::io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `value` points to `value.len()`
    // readable bytes that the kernel only reads; the descriptor is valid (borrowed).
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
