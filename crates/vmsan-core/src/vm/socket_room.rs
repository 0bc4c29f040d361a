//! Whether the Unix sockets vmsan makes under its home fit in `sun_path`.
//!
//! Every VM's Firecracker API socket and vsock sockets live in the VM's jail under the home
//! (`<home>/jail/firecracker/<vm-id>/root/…`). A Unix socket path has at most 107 bytes; past
//! that `bind` and `connect` fail, so a home that is too long breaks every VM. `setup`,
//! `create` and `doctor` check it up front, with the limit in the message.

use std::path::{Path, PathBuf};

use vmsan_firecracker::JailLayout;
use vmsan_firecracker::layout::MAX_SOCKET_PATH;

use crate::artifacts;
use crate::error::{Error, ErrorCode, Result};
use crate::paths::Paths;

/// A VM id as long as any (`vm-` and 8 hex digits).
const LONGEST_VM_ID: &str = "vm-ffffffff";

/// The longest socket path vmsan creates (or connects to) under `paths`' home, or `None` when
/// the home is not an absolute path (other checks refuse that).
pub fn longest_socket_path(paths: &Paths) -> Option<PathBuf> {
    let layout = JailLayout::new(
        &paths.jail_dir(),
        &artifacts::firecracker_path(paths),
        LONGEST_VM_ID,
    )
    .ok()?;
    [
        layout.api_socket(),
        layout.vsock_socket(),
        layout.vsock_listener(vmsan_proto::READY_PORT),
        layout.vsock_listener(vmsan_proto::AGENT_API_PORT),
    ]
    .into_iter()
    .max_by_key(|p| p.as_os_str().len())
}

/// How many bytes the home may have so that every socket fits.
fn longest_home(home: &Path, longest: &Path) -> usize {
    let under_home = longest.as_os_str().len() - home.as_os_str().len();
    MAX_SOCKET_PATH.saturating_sub(under_home)
}

/// Refuse a home whose sockets would not fit in a Unix socket path.
///
/// # Errors
/// `ERR_SETUP_HOME_PATH_TOO_LONG`, naming the longest socket path, its length and the limit.
pub fn check_home(paths: &Paths) -> Result<()> {
    let Some(longest) = longest_socket_path(paths) else {
        return Ok(());
    };
    let len = longest.as_os_str().len();
    if len <= MAX_SOCKET_PATH {
        return Ok(());
    }
    let home = paths.home();
    let room = longest_home(home, &longest);
    Err(Error::new(
        ErrorCode::SetupHomePathTooLong,
        format!(
            "The vmsan home {} is too long: VM sockets under it, such as {}, would have {len} \
             bytes, and a Unix socket path may have at most {MAX_SOCKET_PATH}",
            home.display(),
            longest.display()
        ),
    )
    .detail("home", home.display().to_string())
    .detail("socketPathBytes", len)
    .detail("maxSocketPathBytes", MAX_SOCKET_PATH)
    .detail("maxHomeBytes", room)
    .why(format!(
        "Each VM's Firecracker API and vsock sockets live in its jail under the home; the home \
         may have at most {room} bytes."
    ))
    .fix(format!(
        "Set VMSAN_HOME to a path of at most {room} bytes (the default is /var/lib/vmsan)."
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_home_fits_and_a_long_one_is_refused_with_the_limit() {
        check_home(&Paths::new(crate::paths::DEFAULT_HOME)).unwrap();
        let longest = longest_socket_path(&Paths::new("/h")).unwrap();
        // The API socket: `/h/jail/firecracker/vm-ffffffff/root/run/firecracker.socket`.
        assert_eq!(
            longest,
            Path::new("/h/jail/firecracker/vm-ffffffff/root/run/firecracker.socket")
        );
        let room = MAX_SOCKET_PATH - (longest.as_os_str().len() - 2);
        let at_limit = format!("/{}", "a".repeat(room - 1));
        check_home(&Paths::new(&at_limit)).unwrap();
        let over = format!("{at_limit}b");
        let e = check_home(&Paths::new(&over)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::SetupHomePathTooLong);
        assert!(e.message().contains("at most 107"), "{}", e.message());
        assert!(e.message().contains("108 bytes"), "{}", e.message());
        let fix = e.fix_text().unwrap_or_default();
        assert!(fix.contains(&format!("at most {room} bytes")), "{fix}");
    }

    #[test]
    fn a_relative_home_is_left_to_other_checks() {
        assert!(longest_socket_path(&Paths::new("relative/home")).is_none());
        check_home(&Paths::new("relative/home")).unwrap();
    }
}
