//! Frame relay between the configured TAP and the guest's `eth0` (with Firecracker's token
//! bucket rate limiters), and the hybrid-vsock relay of `docs/guest-abi.md`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::api::{RateLimiter, TokenBucket};

/// One token bucket.
#[derive(Debug)]
pub struct Bucket {
    size: f64,
    per_ms: f64,
    tokens: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    /// A bucket, or `None` when disabled (size or refill time 0, as in Firecracker).
    pub fn new(tb: &TokenBucket) -> Option<Self> {
        if tb.size == 0 || tb.refill_time == 0 {
            return None;
        }
        let size = tb.size as f64;
        Some(Self {
            size,
            per_ms: size / tb.refill_time as f64,
            tokens: size,
            burst: tb.one_time_burst.unwrap_or(0) as f64,
            last: Instant::now(),
        })
    }

    /// How long to wait before `n` tokens are available (then takes them).
    pub fn take(&mut self, n: f64) -> Duration {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64() * 1000.0;
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_ms).min(self.size);
        let mut need = n;
        if self.burst > 0.0 {
            let b = self.burst.min(need);
            self.burst -= b;
            need -= b;
        }
        // A frame larger than the bucket passes when the bucket is full (Firecracker does the
        // same rather than stalling forever).
        let need_now = need.min(self.size);
        if self.tokens >= need_now {
            self.tokens -= need_now;
            return Duration::ZERO;
        }
        let missing = need_now - self.tokens;
        self.tokens = 0.0;
        let wait_ms = missing / self.per_ms;
        self.last = now + Duration::from_secs_f64(wait_ms / 1000.0);
        Duration::from_secs_f64(wait_ms / 1000.0)
    }
}

/// A rate limiter (bytes and operations).
#[derive(Debug, Default)]
pub struct Limiter {
    bytes: Option<Bucket>,
    ops: Option<Bucket>,
}

impl Limiter {
    /// From the API model.
    pub fn new(rl: Option<&RateLimiter>) -> Self {
        match rl {
            None => Self::default(),
            Some(r) => Self {
                bytes: r.bandwidth.as_ref().and_then(Bucket::new),
                ops: r.ops.as_ref().and_then(Bucket::new),
            },
        }
    }

    /// Delay to apply before passing a frame of `len` bytes.
    pub fn delay(&mut self, len: usize) -> Duration {
        let a = self
            .bytes
            .as_mut()
            .map(|b| b.take(len as f64))
            .unwrap_or_default();
        let b = self.ops.as_mut().map(|b| b.take(1.0)).unwrap_or_default();
        a.max(b)
    }
}

/// A limiter the API can replace while the relay runs (`PATCH /network-interfaces`).
pub type SharedLimiter = Arc<std::sync::Mutex<Limiter>>;

/// A pipe whose closing stops relay threads.
#[derive(Debug)]
pub struct Stopper {
    read: Arc<OwnedFd>,
    write: Option<OwnedFd>,
}

impl Stopper {
    /// New stopper.
    pub fn new() -> io::Result<Self> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        Ok(Self {
            read: Arc::new(r),
            write: Some(w),
        })
    }

    /// Handle for a thread.
    pub fn watch(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.read)
    }

    /// Stops every watcher.
    pub fn stop(&mut self) {
        self.write = None;
    }
}

/// Waits until `fd` is readable; `false` when the stopper fired.
fn wait_readable(fd: &impl AsFd, stop: &OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let mut fds = [
            PollFd::new(fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
            Ok(_) => {}
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return false;
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            return true;
        }
    }
}

/// Starts one direction of a TAP↔TAP relay.
pub fn relay_frames(
    from: Arc<File>,
    to: Arc<File>,
    limiter: SharedLimiter,
    stop: Arc<OwnedFd>,
    name: String,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(move || {
        let mut buf = vec![0u8; 65_562];
        loop {
            if !wait_readable(&*from, &stop) {
                return;
            }
            let n = match (&*from).read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            };
            let d = limiter.lock().map(|mut l| l.delay(n)).unwrap_or_default();
            if !d.is_zero() {
                // Rate limiting: the frame is held back, as Firecracker defers it.
                std::thread::sleep(d);
            }
            // A write to a TAP that is down fails with EIO: the frame is dropped, as on a wire.
            let _ = (&*to).write(&buf[..n]);
        }
    })
}

/// Copies both directions between two streams until both close.
fn splice(a: UnixStream, b: UnixStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let t = std::thread::spawn(move || {
        let mut a = a;
        let mut b2 = b2;
        let _ = io::copy(&mut a, &mut b2);
        let _ = b2.shutdown(std::net::Shutdown::Write);
    });
    let mut b = b;
    let mut a2 = a2;
    let _ = io::copy(&mut b, &mut a2);
    let _ = a2.shutdown(std::net::Shutdown::Write);
    let _ = t.join();
}

fn read_connect_line(s: &UnixStream) -> Option<(u32, BufReader<UnixStream>)> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.by_ref().take(64).read_line(&mut line).ok()?;
    let port = line.strip_suffix('\n')?.strip_prefix("CONNECT ")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((port.parse().ok()?, r))
}

/// Host-side ports Firecracker assigns to host-initiated connections start here.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// Connects to the guest's listener for a vsock port.
pub type GuestConnector = Arc<dyn Fn(u32) -> io::Result<UnixStream> + Send + Sync>;

/// Serves host-initiated connections on the `uds_path` listener: `CONNECT P` → connect the
/// guest's `guest-P.sock` in `vsock_dir`, answer `OK <local port>`, relay; no listener → close.
pub fn serve_host_vsock(
    listener: UnixListener,
    connect: GuestConnector,
    stop: Arc<OwnedFd>,
    log: Arc<dyn Fn(&str) + Send + Sync>,
) -> io::Result<JoinHandle<()>> {
    let next = Arc::new(AtomicU32::new(FIRST_LOCAL_PORT));
    std::thread::Builder::new()
        .name("fc_vsock_host".into())
        .spawn(move || {
            loop {
                if !wait_readable(&listener, &stop) {
                    return;
                }
                let Ok((conn, _)) = listener.accept() else {
                    continue;
                };
                let connect = Arc::clone(&connect);
                let next = Arc::clone(&next);
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let Some((port, reader)) = read_connect_line(&conn) else {
                        log("vsock: malformed CONNECT from the host; closing");
                        return;
                    };
                    if !reader.buffer().is_empty() {
                        log("vsock: data before OK; closing");
                        return;
                    }
                    let guest = match connect(port) {
                        Ok(g) => g,
                        Err(e) => {
                            // Firecracker closes without a reply; the log says why.
                            log(&format!(
                                "vsock: cannot reach guest port {port}: {e}; closing"
                            ));
                            return;
                        }
                    };
                    let local = next.fetch_add(1, Ordering::Relaxed);
                    let mut c = conn;
                    if c.write_all(format!("OK {local}\n").as_bytes()).is_err() {
                        return;
                    }
                    splice(c, guest);
                });
            }
        })
}

/// Serves guest-initiated connections on `host.sock`: `CONNECT P` → connect
/// `<uds_path>_P`, answer `OK P`, relay; nothing listening → close.
pub fn serve_guest_vsock(
    listener: UnixListener,
    uds_path: PathBuf,
    stop: Arc<OwnedFd>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("fc_vsock_guest".into())
        .spawn(move || {
            loop {
                if !wait_readable(&listener, &stop) {
                    return;
                }
                let Ok((conn, _)) = listener.accept() else {
                    continue;
                };
                let uds = uds_path.clone();
                std::thread::spawn(move || {
                    let Some((port, reader)) = read_connect_line(&conn) else {
                        return;
                    };
                    if !reader.buffer().is_empty() {
                        return;
                    }
                    let mut target = uds.into_os_string();
                    target.push(format!("_{port}"));
                    let Ok(host) = UnixStream::connect(Path::new(&target)) else {
                        return;
                    };
                    let mut c = conn;
                    if c.write_all(format!("OK {port}\n").as_bytes()).is_err() {
                        return;
                    }
                    splice(c, host);
                });
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_paces_to_the_configured_rate() {
        let mut b = Bucket::new(&TokenBucket {
            size: 1000,
            one_time_burst: None,
            refill_time: 100,
        })
        .unwrap();
        assert_eq!(b.take(1000.0), Duration::ZERO);
        let d = b.take(500.0);
        assert!(
            d >= Duration::from_millis(45) && d <= Duration::from_millis(55),
            "{d:?}"
        );
        assert!(
            Bucket::new(&TokenBucket {
                size: 0,
                one_time_burst: None,
                refill_time: 100
            })
            .is_none()
        );
    }

    #[test]
    fn one_time_burst_is_spent_first() {
        let mut b = Bucket::new(&TokenBucket {
            size: 100,
            one_time_burst: Some(1000),
            refill_time: 1000,
        })
        .unwrap();
        assert_eq!(b.take(1000.0), Duration::ZERO);
        assert_eq!(b.take(100.0), Duration::ZERO);
        assert!(b.take(100.0) > Duration::from_millis(900));
    }
}
