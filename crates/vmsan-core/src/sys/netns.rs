//! Running a child process in a fresh, empty network namespace (for probes that must not
//! touch the host's own networking).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Make `cmd` start in a new network namespace of its own, destroyed when it exits.
pub(crate) fn in_scratch_netns(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec and calls only unshare(2),
    // which is async-signal-safe; it allocates nothing and touches no locks.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Make `cmd` enter the network namespace `ns` (an open namespace file) before it execs.
pub(crate) fn enter_on_exec(cmd: &mut Command, ns: std::fs::File) -> &mut Command {
    use std::os::fd::AsRawFd;
    // SAFETY: runs in the forked child before exec; setns(2) is async-signal-safe and `ns` is
    // an open file that the closure owns for as long as the child needs it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}
