//! TAP devices through `/dev/net/tun` ioctls (the kernel refuses TAP creation over netlink).
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd as _, OwnedFd};

use crate::addr::validate_ifname;
use crate::error::{NetError, Result};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
const TUNSETGROUP: libc::c_ulong = 0x4004_54ce;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// `struct ifreq` as TUNSETIFF reads it: name, flags, padding to 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn open_tun() -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| NetError::sys("open /dev/net/tun", e))
}

fn set_iff(file: &File, name: &str, flags: libc::c_short) -> Result<()> {
    validate_ifname(name)?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `file` is an open /dev/net/tun descriptor and `req` is a live, properly sized
    // and initialised `struct ifreq` that TUNSETIFF reads and may write back.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(NetError::sys(
            format!("TUNSETIFF {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn ioctl_int(file: &File, req: libc::c_ulong, arg: libc::c_ulong, what: &str) -> Result<()> {
    // SAFETY: these TUN ioctls take an integer argument by value; `file` is an open tun
    // descriptor attached to a device.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), req, arg) };
    if rc < 0 {
        return Err(NetError::sys(
            what.to_string(),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Creates a persistent TAP `name` in the current thread's network namespace, owned by
/// `uid`/`gid` (so the jailed Firecracker can attach to it without privileges).
pub(crate) fn create_persistent_tap(name: &str, uid: u32, gid: u32) -> Result<()> {
    let f = open_tun()?;
    set_iff(&f, name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)?;
    ioctl_int(&f, TUNSETOWNER, libc::c_ulong::from(uid), "TUNSETOWNER")?;
    ioctl_int(&f, TUNSETGROUP, libc::c_ulong::from(gid), "TUNSETGROUP")?;
    ioctl_int(&f, TUNSETPERSIST, 1, "TUNSETPERSIST")?;
    Ok(())
}

/// Opens (attaching to, or creating non-persistently) the TAP `name` in the current thread's
/// network namespace, without a packet-info or vnet header: each read returns one Ethernet
/// frame, each write sends one. This is what a VMM does; the tests and the stand-in VMM use it
/// to relay frames. Call it from [`crate::netns::run_in`] to reach a VM's namespace.
pub fn open_tap(name: &str) -> Result<OwnedFd> {
    let f = open_tun()?;
    set_iff(&f, name, IFF_TAP | IFF_NO_PI)?;
    Ok(OwnedFd::from(f))
}
