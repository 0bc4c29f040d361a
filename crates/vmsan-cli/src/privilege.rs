//! The root check. It looks at the parsed command, so it applies wherever the command sits on
//! the line (`vmsan --json create` included: a check of the first argument alone, as the
//! Node.js vmsan made, lets a global flag in front of the command skip it).

use std::ffi::OsString;

use vmsan_core::error::{Error, ErrorCode};

use crate::args::{Command, ImageCommand, SnapshotCommand};

/// The command's name as typed in help, e.g. `snapshot create`.
pub fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Create(_) => "create",
        Command::List => "list",
        Command::Start(_) => "start",
        Command::Stop(_) => "stop",
        Command::Remove(_) => "remove",
        Command::Connect(_) => "connect",
        Command::Exec(_) => "exec",
        Command::Upload(_) => "upload",
        Command::Download(_) => "download",
        Command::Network(_) => "network",
        Command::Snapshot(SnapshotCommand::Create(_)) => "snapshot create",
        Command::Snapshot(SnapshotCommand::List) => "snapshot list",
        Command::Snapshot(SnapshotCommand::Delete(_)) => "snapshot delete",
        Command::Snapshot(SnapshotCommand::Export(_)) => "snapshot export",
        Command::Snapshot(SnapshotCommand::Import(_)) => "snapshot import",
        Command::Doctor => "doctor",
        Command::Setup(_) => "setup",
        Command::Inspect(_) => "inspect",
        Command::Logs(_) => "logs",
        Command::Image(ImageCommand::Ls) => "image ls",
        Command::Image(ImageCommand::Pull(_)) => "image pull",
        Command::Image(ImageCommand::Import(_)) => "image import",
        Command::Image(ImageCommand::Rm(_)) => "image rm",
        Command::Image(ImageCommand::Prune(_)) => "image prune",
        Command::Completion(_) => "completion",
        Command::Version => "version",
    }
}

/// Whether the command changes host networking, devices, VM processes or root-owned data.
///
/// Everything else (`list`, `inspect`, `logs`, `exec`, `connect`, `upload`, `download`,
/// `snapshot list`, `image ls`, `doctor`, `completion`, `version`) runs as any user; reading
/// the state and reaching the agent sockets is then a matter of the `vmsan` group's
/// permissions, which the state store sets.
pub fn needs_root(c: &Command) -> bool {
    match c {
        Command::Create(_)
        | Command::Start(_)
        | Command::Stop(_)
        | Command::Remove(_)
        | Command::Network(_)
        | Command::Setup(_)
        | Command::Snapshot(
            SnapshotCommand::Create(_)
            | SnapshotCommand::Delete(_)
            | SnapshotCommand::Export(_)
            | SnapshotCommand::Import(_),
        )
        | Command::Image(
            ImageCommand::Pull(_)
            | ImageCommand::Import(_)
            | ImageCommand::Rm(_)
            | ImageCommand::Prune(_),
        ) => true,
        Command::List
        | Command::Connect(_)
        | Command::Exec(_)
        | Command::Upload(_)
        | Command::Download(_)
        | Command::Snapshot(SnapshotCommand::List)
        | Command::Doctor
        | Command::Inspect(_)
        | Command::Logs(_)
        | Command::Image(ImageCommand::Ls)
        | Command::Completion(_)
        | Command::Version => false,
    }
}

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Quote one argument for display in a "run this" hint (never executed).
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The name of the command when it needs root, `None` when anyone may run it.
pub fn gate(c: &Command) -> Option<&'static str> {
    needs_root(c).then(|| command_name(c))
}

/// Fail with `ERR_PERMISSION_DENIED` when the command needs root and we are not root.
pub fn check(c: &Command, argv: &[OsString], root: bool) -> Result<(), Error> {
    require_root(gate(c), argv, root)
}

/// Fail with `ERR_PERMISSION_DENIED` when `gate` names a root-only command and we are not
/// root. The fix repeats the whole command line under sudo.
pub fn require_root(gate: Option<&str>, argv: &[OsString], root: bool) -> Result<(), Error> {
    let Some(name) = gate else { return Ok(()) };
    if root {
        return Ok(());
    }
    let line: Vec<String> = argv
        .iter()
        .skip(1)
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect();
    Err(Error::new(
        ErrorCode::PermissionDenied,
        format!("\"vmsan {name}\" requires root"),
    )
    .why(format!(
        "vmsan {name} changes host networking, devices, VM processes or root-owned data."
    ))
    .fix(format!("Run it as root: sudo vmsan {}", line.join(" ")))
    .detail("command", name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("--vcpus"), "--vcpus");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
