//! Advisory file locks (`flock`) with a deadline.
//!
//! The lock lives in its own file, never in `state.json`, because `state.json` is replaced by
//! rename on every write. A lock file can be unlinked while another process waits on it (when
//! a VM is removed); after acquiring, we check that the file we hold is still the one at the
//! path, and start over if not, so two processes can never both believe they hold the lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorCode, Result};

/// How long a command waits for a lock before it gives up with `ERR_TIMEOUT_LOCK`.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// A held lock; released on drop (closing the file releases the `flock`).
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
    path: PathBuf,
}

impl LockGuard {
    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What the caller wants when the lock file does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMissing {
    /// Create it (global locks, new VMs).
    Create,
    /// Report `Ok(None)`: the thing it guards is gone (a removed VM).
    Absent,
}

/// Take an exclusive lock on `path`, waiting at most `timeout`.
///
/// Waiting is a bounded back-off on `try_lock`: `flock` has no timed wait, and a blocking
/// `lock()` could not honour the deadline.
pub fn lock_exclusive(
    path: &Path,
    if_missing: IfMissing,
    timeout: Duration,
) -> Result<Option<LockGuard>> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_micros(200);
    loop {
        let mut opts = OpenOptions::new();
        opts.read(true)
            .write(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
        if if_missing == IfMissing::Create {
            opts.create(true);
        }
        let file = match opts.open(path) {
            Ok(f) => f,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && if_missing == IfMissing::Absent =>
            {
                return Ok(None);
            }
            Err(e) => return Err(Error::io(format!("open lock {}", path.display()), e)),
        };
        match file.try_lock() {
            Ok(()) => {
                if still_at_path(&file, path) {
                    return Ok(Some(LockGuard {
                        _file: file,
                        path: path.to_owned(),
                    }));
                }
                // Unlinked (or replaced) while we waited: try again with what is there now.
                continue;
            }
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(format!("lock {}", path.display()), e));
            }
        }
        drop(file);
        let now = Instant::now();
        if now >= deadline {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(Error::new(
                ErrorCode::TimeoutLock,
                format!("Timed out waiting for the {name} lock"),
            )
            .detail("target", path.display().to_string())
            .detail(
                "timeoutMs",
                u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            ));
        }
        std::thread::sleep(backoff.min(deadline - now));
        backoff = (backoff * 2).min(Duration::from_millis(10));
    }
}

fn still_at_path(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(held), Ok(now)) => held.ino() == now.ino() && held.dev() == now.dev(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_locker_times_out_with_code() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let _held = lock_exclusive(&p, IfMissing::Create, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        let err = lock_exclusive(&p, IfMissing::Create, Duration::from_millis(50)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::TimeoutLock);
    }

    #[test]
    fn released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        drop(lock_exclusive(&p, IfMissing::Create, Duration::from_secs(1)).unwrap());
        assert!(
            lock_exclusive(&p, IfMissing::Create, Duration::from_millis(50))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn absent_lock_reports_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gone.lock");
        assert!(
            lock_exclusive(&p, IfMissing::Absent, Duration::from_millis(50))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn refuses_symlinked_lock() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"").unwrap();
        let p = dir.path().join("link.lock");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        assert!(lock_exclusive(&p, IfMissing::Create, Duration::from_millis(50)).is_err());
    }
}
