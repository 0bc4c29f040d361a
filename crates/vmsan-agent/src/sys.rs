//! The agent's only `unsafe`: child set-up between fork and exec, terminal ioctls, and
//! `renameat2` (not wrapped by nix, and not in musl's libc: a raw system call).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Who a child runs as. `None` keeps the agent's own identity.
#[derive(Debug, Clone)]
pub(crate) struct ChildIdentity {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: Vec<u32>,
}

/// Arrange for the child, after fork and before exec, to start a new session (so it leads its
/// own process group: kills reach the whole tree), optionally take its stdin as controlling
/// terminal (PTY sessions), and switch to `identity` (supplementary groups, gid, then uid).
pub(crate) fn prepare_child(
    cmd: &mut tokio::process::Command,
    identity: Option<ChildIdentity>,
    controlling_tty: bool,
) {
    // SAFETY: the closure runs in the forked child before exec. It calls only async-signal-safe
    // functions (setsid, ioctl, setgroups, setgid, setuid) on data moved into the closure
    // before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if controlling_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(id) = &identity {
                if libc::setgroups(id.groups.len(), id.groups.as_ptr()) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::setgid(id.gid) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::setuid(id.uid) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Set a terminal's window size (TIOCSWINSZ); the kernel sends SIGWINCH to its foreground group.
pub(crate) fn set_winsize(fd: BorrowedFd<'_>, cols: u16, rows: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `fd` is a descriptor borrowed for the duration of the call and `ws` is a valid,
    // initialised winsize that the kernel only reads.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Register a descriptor we own with tokio's reactor.
pub(crate) fn async_fd(
    fd: std::os::fd::OwnedFd,
) -> io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: `OwnedFd` owns a valid open descriptor; it is moved into the AsyncFd, which is
    // the only owner, so it is neither closed nor replaced while registered.
    Ok(unsafe { tokio::io::unix::AsyncFd::register(fd) }?)
}

/// Fork the process. Call it only while the process is single-threaded (before any runtime
/// starts): the child then continues with a consistent copy of the whole process.
pub(crate) fn fork_single_threaded() -> io::Result<nix::unistd::ForkResult> {
    // SAFETY: callers fork only before any other thread exists (init mode, before the tokio
    // runtime is built), so the child cannot inherit a lock held by a vanished thread.
    unsafe { nix::unistd::fork() }.map_err(io::Error::from)
}

/// Take ownership of a descriptor returned by a raw syscall wrapper (accept4).
pub(crate) fn owned_fd(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` was just returned by a successful accept4 and nothing else owns it.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// Send a raw signal number (real-time signals included) to a process.
pub(crate) fn kill_raw(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let r = unsafe { libc::kill(pid, sig) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// SIGRTMIN+4: what systemd takes as "power off".
pub(crate) fn sigrtmin_plus(n: i32) -> i32 {
    libc::SIGRTMIN() + n
}

/// `renameat2(2)` of one absolute path onto another; with `no_replace` an existing
/// destination fails with `EEXIST` instead of being replaced (atomically: no check-then-act).
pub(crate) fn rename_paths(
    from: &std::path::Path,
    to: &std::path::Path,
    no_replace: bool,
) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let from = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let to = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    let flags = if no_replace {
        libc::RENAME_NOREPLACE
    } else {
        0
    };
    // The raw system call: musl's libc (the static agent's) has no `renameat2` symbol.
    // SAFETY: both pointers are NUL-terminated strings owned by this frame for the whole call;
    // the kernel only reads them; the other arguments are plain integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
