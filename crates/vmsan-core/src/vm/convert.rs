//! Errors of the lower crates, mapped to vmsan's stable codes with their context kept.

use vmsan_firecracker::{ClientError, JailError, WaitError};
use vmsan_net::NetError;

use crate::error::{Error, ErrorCode};

/// A Firecracker API failure: Firecracker's own message, method, path and status.
pub(crate) fn firecracker(err: ClientError) -> Error {
    match err.api() {
        Some(api) => {
            let e = Error::new(ErrorCode::FirecrackerApi, err.to_string())
                .detail("httpStatus", api.status);
            if api.is_tun_permission_denied() {
                e.why("Firecracker could not open /dev/net/tun: the filesystem holding the jail is probably mounted nodev.")
                    .fix("Run `vmsan doctor`; remount with `mount -o remount,dev <mountpoint>` or set VMSAN_HOME to /var/lib/vmsan.")
            } else {
                e
            }
        }
        None => {
            Error::new(ErrorCode::FirecrackerApi, format!("Firecracker API: {err}")).source(err)
        }
    }
}

/// Waiting for Firecracker's API socket failed.
pub(crate) fn socket_wait(err: WaitError, path: &std::path::Path) -> Error {
    Error::new(
        ErrorCode::TimeoutSocket,
        format!(
            "Timeout waiting for the API socket at {}: {err}",
            path.display()
        ),
    )
    .detail("target", path.display().to_string())
}

/// Preparing the jail failed.
pub(crate) fn jail(err: JailError) -> Error {
    Error::new(
        ErrorCode::VmCreateFailed,
        format!("preparing the jail: {err}"),
    )
    .source(err)
}

/// Networking failed.
pub(crate) fn net(err: NetError, what: &str) -> Error {
    Error::new(ErrorCode::NetworkSetupFailed, format!("{what}: {err}")).source(err)
}
