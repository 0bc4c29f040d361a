//! Probing `/dev/kvm`: the API version and whether a VM can be created.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// From <linux/kvm.h>: _IO(KVMIO, 0x00) and _IO(KVMIO, 0x01), KVMIO = 0xAE.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;

/// The API version every supported kernel reports.
pub(crate) const KVM_API_VERSION: i32 = 12;

/// Open `/dev/kvm` read-write.
pub(crate) fn open() -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open("/dev/kvm")
}

/// `KVM_GET_API_VERSION`.
pub(crate) fn api_version(kvm: &File) -> io::Result<i32> {
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int; the fd is a
    // valid open file for the duration of the call.
    let r = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `KVM_CREATE_VM` with the default machine type; the VM is closed again at once.
pub(crate) fn can_create_vm(kvm: &File) -> io::Result<()> {
    // SAFETY: KVM_CREATE_VM takes the machine type (0 = default) by value and returns a new
    // file descriptor or -1; no memory is passed to the kernel.
    let fd = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}
