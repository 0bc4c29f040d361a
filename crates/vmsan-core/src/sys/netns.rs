//! Running a child process inside a given network namespace.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

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
