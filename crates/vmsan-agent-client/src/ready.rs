//! The readiness announcement: the agent connects to host port 1025 once it serves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;
use vmsan_proto::{READY_PORT, ReadyAnnouncement};

use crate::{ClientError, Result};

/// `<uds_path>_1025`: where Firecracker delivers the guest's connection to host port 1025.
pub fn ready_socket_path(uds_path: &Path) -> PathBuf {
    let mut s = uds_path.as_os_str().to_owned();
    s.push(format!("_{READY_PORT}"));
    PathBuf::from(s)
}

/// Listens for the agent's announcement. Bind it before InstanceStart; the socket file is
/// removed when it is dropped.
#[derive(Debug)]
pub struct ReadyListener {
    listener: UnixListener,
    path: PathBuf,
}

impl ReadyListener {
    /// Bind `<uds_path>_1025` (a stale socket file there is replaced).
    ///
    /// # Errors
    /// The socket cannot be bound.
    pub fn bind(uds_path: &Path) -> Result<Self> {
        Self::bind_path(ready_socket_path(uds_path))
    }

    /// Bind an explicit path (plain mode: the agent's `--announce PATH`).
    ///
    /// # Errors
    /// The socket cannot be bound.
    pub fn bind_path(path: PathBuf) -> Result<Self> {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ClientError::io(
                    format!("remove stale {}", path.display()),
                    e,
                ));
            }
        }
        let listener = UnixListener::bind(&path)
            .map_err(|e| ClientError::io(format!("bind {}", path.display()), e))?;
        Ok(Self { listener, path })
    }

    /// Path of the socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wait for the announcement (one line of JSON, at most 4 KiB).
    ///
    /// # Errors
    /// Timeout, or an unreadable announcement.
    pub async fn wait(&self, timeout: Duration) -> Result<ReadyAnnouncement> {
        let fut = async {
            let (mut s, _) =
                self.listener.accept().await.map_err(|e| {
                    ClientError::io(format!("accept on {}", self.path.display()), e)
                })?;
            let mut buf = Vec::new();
            (&mut s)
                .take(4096)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| ClientError::io("read ready announcement", e))?;
            let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
            serde_json::from_slice(line)
                .map_err(|e| ClientError::Protocol(format!("ready announcement: {e}")))
        };
        tokio::time::timeout(timeout, fut).await.map_err(|_| {
            ClientError::Protocol(format!(
                "no ready announcement on {} within {timeout:?}",
                self.path.display()
            ))
        })?
    }
}

impl Drop for ReadyListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
