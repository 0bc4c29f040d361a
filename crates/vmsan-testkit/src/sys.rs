//! The few raw system calls the stand-in needs that `nix` does not wrap: loop-device set-up,
//! TUN/TAP attachment, MAC assignment and `fork`.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
/// How many free loop devices a boot asks for before it gives up (see `loop_attach`).
const LOOP_ATTEMPTS: usize = 4096;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
/// `LO_FLAGS_READ_ONLY` of `<linux/loop.h>`.
pub const LO_FLAGS_READ_ONLY: u32 = 1;
/// `LO_FLAGS_AUTOCLEAR` of `<linux/loop.h>`: the device detaches itself on last close.
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A loop device attached to a backing file.
#[derive(Debug)]
pub struct LoopDevice {
    /// Open handle on `/dev/loopN`; with autoclear set the device detaches when the last
    /// handle (this one, or a mount) goes away.
    pub device: File,
    /// N of `/dev/loopN`.
    pub index: u32,
    /// Block device major number (7).
    pub major: u32,
    /// Block device minor number.
    pub minor: u32,
}

/// Attaches `backing` to a free loop device with `LOOP_CONFIGURE` (autoclear, and read-only
/// when asked). Retries when another process grabs the same free device first.
pub fn loop_attach(backing: &File, read_only: bool, label: &str) -> io::Result<LoopDevice> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| io::Error::new(e.kind(), format!("open /dev/loop-control: {e}")))?;
    let mut last_err = None;
    // LOOP_CTL_GET_FREE hands the same free device to every racer and only one configures it
    // (the others get EBUSY and ask again): with a hundred VMs booting at once a caller can
    // lose many rounds, so the bound is high; it only stops a kernel that never frees one.
    for _ in 0..LOOP_ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns an index or -1.
        let index = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if index < 0 {
            return Err(io::Error::other(format!(
                "LOOP_CTL_GET_FREE: {}",
                io::Error::last_os_error()
            )));
        }
        let path = format!("/dev/loop{index}");
        let device = match OpenOptions::new().read(true).write(!read_only).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                last_err = Some(e);
                continue;
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("open {path}: {e}"))),
        };
        let mut name = [0u8; 64];
        let label_bytes = label.as_bytes();
        let n = label_bytes.len().min(63);
        name[..n].copy_from_slice(&label_bytes[..n]);
        let fd = u32::try_from(backing.as_raw_fd())
            .map_err(|_| io::Error::other("negative backing fd"))?;
        let mut flags = LO_FLAGS_AUTOCLEAR;
        if read_only {
            flags |= LO_FLAGS_READ_ONLY;
        }
        let config = LoopConfig {
            fd,
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: flags,
                lo_file_name: name,
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: `config` is a valid, fully initialised `struct loop_config` that outlives
        // the call; the kernel only reads it.
        let rc = unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                LOOP_CONFIGURE,
                &config as *const LoopConfig,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EBUSY) {
                last_err = Some(err);
                // Let the racer that got it finish configuring it.
                std::thread::yield_now();
                continue;
            }
            return Err(io::Error::new(
                err.kind(),
                format!("LOOP_CONFIGURE {path}: {err}"),
            ));
        }
        let index = u32::try_from(index).map_err(|_| io::Error::other("bad loop index"))?;
        let meta = device.metadata()?;
        let rdev = std::os::unix::fs::MetadataExt::rdev(&meta);
        return Ok(LoopDevice {
            device,
            index,
            major: libc::major(rdev),
            minor: libc::minor(rdev),
        });
    }
    Err(io::Error::other(format!(
        "no free loop device after {LOOP_ATTEMPTS} attempts: {last_err:?}"
    )))
}

#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    pad: [u8; 22],
}

#[repr(C)]
struct IfReqHwaddr {
    name: [libc::c_char; libc::IFNAMSIZ],
    addr: libc::sockaddr,
    pad: [u8; 8],
}

fn ifname(name: &str) -> io::Result<[libc::c_char; libc::IFNAMSIZ]> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?}"),
        ));
    }
    let mut out = [0 as libc::c_char; libc::IFNAMSIZ];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = *b as libc::c_char;
    }
    Ok(out)
}

/// Opens (or creates, when privileged and absent) the TAP `name` through the tun clone device
/// at `tun_path`, without packet information headers, as Firecracker does (minus vnet headers).
pub fn tap_open(tun_path: &Path, name: &str) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(tun_path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", tun_path.display())))?;
    let req = IfReqFlags {
        name: ifname(name)?,
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        pad: [0; 22],
    };
    // SAFETY: `req` is a valid ifreq-shaped buffer of the size the kernel reads for TUNSETIFF.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &req as *const IfReqFlags) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Sets the Ethernet address of interface `name` in the calling thread's network namespace.
pub fn set_mac(name: &str, mac: [u8; 6]) -> io::Result<()> {
    // SAFETY: plain socket(2) call; the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut data = [0 as libc::c_char; 14];
    for (d, m) in data.iter_mut().zip(mac) {
        *d = m as libc::c_char;
    }
    let req = IfReqHwaddr {
        name: ifname(name)?,
        addr: libc::sockaddr {
            sa_family: libc::ARPHRD_ETHER,
            sa_data: data,
        },
        pad: [0; 8],
    };
    // SAFETY: `req` is a valid ifreq with an Ethernet sockaddr, read by the kernel only.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCSIFHWADDR,
            &req as *const IfReqHwaddr,
        )
    };
    if rc < 0 {
        return Err(io::Error::new(
            io::Error::last_os_error().kind(),
            format!("SIOCSIFHWADDR {name}: {}", io::Error::last_os_error()),
        ));
    }
    Ok(())
}

/// Outcome of [`fork`].
#[derive(Debug)]
pub enum Forked {
    /// In the parent: the child's pid.
    Parent(nix::unistd::Pid),
    /// In the child.
    Child,
}

/// `fork(2)`. Callers are single-threaded processes (the stand-in's helper and the jailer),
/// which is what makes continuing to run Rust code in the child sound.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: only called from single-threaded processes (documented above), so the child
    // does not inherit locks held by other threads.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Forked::Parent(child)),
        Ok(nix::unistd::ForkResult::Child) => Ok(Forked::Child),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Number of threads of the calling process (from /proc/self/status), to assert the
/// single-thread precondition of [`fork`].
pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(1)
}

/// `CString` of a path, rejecting interior NULs.
pub fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interior NUL"))
}

/// Takes ownership of a descriptor the kernel just installed through `SCM_RIGHTS`.
pub fn owned_fd(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: callers pass descriptors received through SCM_RIGHTS, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Adopts a descriptor inherited across exec (its number came from the environment): checks
/// it is open, marks it close-on-exec and takes ownership.
pub fn adopt_inherited_fd(fd: std::os::fd::RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::other(format!(
            "inherited fd {fd}: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: F_SETFD on a descriptor checked to be open just above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was handed to this process to own (by the jailer or the VMM that
    // spawned it) and nothing else in the process refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Clears close-on-exec on `fd` so a child spawned next inherits it.
pub fn clear_cloexec(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: F_SETFD with 0 on a descriptor the caller keeps open.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Restores default dispositions for every catchable signal and empties the signal mask: the
/// kernel starts init that way, while a Rust parent leaves SIGPIPE ignored (inherited across
/// exec).
pub fn reset_signals() -> io::Result<()> {
    for sig in 1..=31 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL touches no Rust state; failures (invalid numbers) are
        // ignored on purpose.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    // SAFETY: an empty, initialised set passed by pointer for the duration of the call.
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every descriptor from `first` up, as the jailer's `sanitize_process` does.
pub fn close_fds_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range only closes descriptors; it runs before anything in this process
    // holds descriptors above `first` that it still needs.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Capabilities the stand-in's guest init never gets: it is a process tree on the host, not a
/// VM, so these would reach the host itself (its disk through a device node, its clock, its
/// kernel modules, raw I/O ports).
pub const GUEST_DROPPED_CAPS: &[(i32, &str)] = &[
    (16, "CAP_SYS_MODULE"),
    (17, "CAP_SYS_RAWIO"),
    (25, "CAP_SYS_TIME"),
    (27, "CAP_MKNOD"),
];

/// Drops `GUEST_DROPPED_CAPS` from the bounding set (effective after the next exec).
pub fn drop_guest_caps() -> io::Result<()> {
    for (cap, name) in GUEST_DROPPED_CAPS {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointers.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, *cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            return Err(io::Error::other(format!(
                "PR_CAPBSET_DROP {name}: {}",
                io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}
