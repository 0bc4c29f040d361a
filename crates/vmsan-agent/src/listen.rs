//! Listeners (Unix socket, AF_VSOCK), the readiness announcement, and the accept loop with a
//! graceful drain on shutdown.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, VsockAddr, accept4, bind, connect, getpeername,
    listen, socket,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use vmsan_proto::{AGENT_API_PORT, HOST_CID, READY_PORT, ReadyAnnouncement};

use crate::server::{self, Agent};

/// Where the agent accepts connections.
#[derive(Debug)]
pub(crate) enum Listener {
    /// Plain mode, or the stand-in's `guest-1024.sock`.
    Unix(UnixListener),
    /// AF_VSOCK in a real guest: only the host (CID 2) is accepted.
    Vsock(AsyncFd<OwnedFd>),
}

/// Only the host may talk to the agent over vsock.
pub(crate) fn vsock_peer_allowed(cid: u32) -> bool {
    cid == HOST_CID
}

impl Listener {
    /// Bind AF_VSOCK port 1024 on any CID.
    pub(crate) fn vsock() -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        bind(
            fd.as_raw_fd(),
            &VsockAddr::new(libc::VMADDR_CID_ANY, AGENT_API_PORT),
        )?;
        listen(&fd, Backlog::new(128).map_err(io::Error::from)?)?;
        Ok(Self::Vsock(crate::sys::async_fd(fd)?))
    }

    async fn accept(&self) -> io::Result<UnixStream> {
        match self {
            Self::Unix(l) => l.accept().await.map(|(s, _)| s),
            Self::Vsock(l) => loop {
                let fd = l
                    .async_io(tokio::io::Interest::READABLE, |fd| {
                        accept4(
                            fd.as_raw_fd(),
                            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                        )
                        .map_err(io::Error::from)
                    })
                    .await?;
                let fd = crate::sys::owned_fd(fd);
                let peer: VsockAddr = getpeername(fd.as_raw_fd())?;
                if !vsock_peer_allowed(peer.cid()) {
                    eprintln!(
                        "vmsan-agent: refused a vsock connection from CID {}",
                        peer.cid()
                    );
                    continue;
                }
                // tokio has no vsock stream type; its UnixStream only uses read/write/shutdown
                // on the descriptor, which behave the same on any connected stream socket.
                let std_stream = std::os::unix::net::UnixStream::from(fd);
                return UnixStream::from_std(std_stream);
            },
        }
    }
}

/// How the agent tells the host it is ready.
#[derive(Debug)]
pub(crate) enum Announce {
    /// Nobody to tell.
    None,
    /// Plain mode: connect to a Unix socket and send the line.
    Unix(PathBuf),
    /// The stand-in's `host.sock`: `CONNECT 1025\n`, `OK …\n`, then the line.
    Standin(PathBuf),
    /// AF_VSOCK to the host, port 1025.
    Vsock,
}

async fn send_line(mut s: UnixStream, vm_id: &str) -> io::Result<()> {
    let msg = ReadyAnnouncement {
        vm_id: vm_id.into(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let mut line = serde_json::to_vec(&msg).map_err(io::Error::other)?;
    line.push(b'\n');
    s.write_all(&line).await?;
    s.shutdown().await
}

impl Announce {
    pub(crate) async fn send(&self, vm_id: &str) -> io::Result<()> {
        match self {
            Self::None => Ok(()),
            Self::Unix(p) => send_line(UnixStream::connect(p).await?, vm_id).await,
            Self::Standin(p) => {
                let mut s = UnixStream::connect(p).await?;
                s.write_all(format!("CONNECT {READY_PORT}\n").as_bytes())
                    .await?;
                let mut line = Vec::new();
                loop {
                    let b = s.read_u8().await?;
                    if b == b'\n' {
                        break;
                    }
                    line.push(b);
                    if line.len() > 32 {
                        return Err(io::Error::other("overlong CONNECT reply"));
                    }
                }
                if !line.starts_with(b"OK ") {
                    return Err(io::Error::other(format!(
                        "CONNECT refused: {}",
                        String::from_utf8_lossy(&line)
                    )));
                }
                send_line(s, vm_id).await
            }
            Self::Vsock => {
                let fd = socket(
                    AddressFamily::Vsock,
                    SockType::Stream,
                    SockFlag::SOCK_CLOEXEC,
                    None,
                )?;
                let fd = tokio::task::spawn_blocking(move || {
                    connect(fd.as_raw_fd(), &VsockAddr::new(HOST_CID, READY_PORT)).map(|()| fd)
                })
                .await
                .map_err(io::Error::other)??;
                let std_stream = std::os::unix::net::UnixStream::from(fd);
                std_stream.set_nonblocking(true)?;
                send_line(UnixStream::from_std(std_stream)?, vm_id).await
            }
        }
    }
}

/// Accept and serve until a shutdown request, SIGTERM or SIGINT; then stop accepting, let
/// in-flight requests finish (at most `drain`), and return.
pub(crate) async fn serve(
    agent: Arc<Agent>,
    listener: Listener,
    announce: Announce,
    vm_id: &str,
    drain: Duration,
) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("install SIGTERM handler: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("install SIGINT handler: {e}"))?;
    if let Err(e) = announce.send(vm_id).await {
        // Not fatal: the host can still connect; it just was not told.
        eprintln!("vmsan-agent: announce readiness ({announce:?}): {e}");
    }
    let mut shutdown = agent.shutdown.subscribe();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok(stream) => {
                    conns.spawn(server::serve_connection(Arc::clone(&agent), stream, agent.shutdown.subscribe()));
                }
                Err(e) => eprintln!("vmsan-agent: accept: {e}"),
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
            r = shutdown.wait_for(|s| *s) => { let _ = r; break }
        }
    }
    agent.shutdown.send_replace(true);
    drop(listener);
    let _ = tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::vsock_peer_allowed;

    #[test]
    fn only_the_host_cid_is_accepted() {
        assert!(vsock_peer_allowed(2));
        for cid in [0, 1, 3, 42, u32::MAX] {
            assert!(!vsock_peer_allowed(cid), "CID {cid} accepted");
        }
    }
}
