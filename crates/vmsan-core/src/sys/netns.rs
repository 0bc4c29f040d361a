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
