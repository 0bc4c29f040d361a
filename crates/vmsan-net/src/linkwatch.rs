//! Removing a link without waiting for the kernel's final cleanup, yet knowing it is gone.
//!
//! Deleting a network device (`RTM_DELLINK`) unlists it (its name, addresses and routes are
//! gone, the `RTM_DELLINK` notification is sent), then releases the rtnl lock and only then
//! waits for an RCU barrier and the device's last references before the request returns:
//! tens of milliseconds on a busy host, for memory nobody can reach any more. Here the
//! request runs on a helper thread while the caller waits, on a socket subscribed to link
//! notifications *before* the request is sent, for the notification that the link was
//! removed. The wait is event-driven (no polling, no sleeping): when the caller returns,
//! the link no longer exists in its namespace; the helper finishes the kernel's call in the
//! background.

use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, getsockname,
    recv, send, setsockopt, socket, sockopt,
};

use crate::error::{NetError, Result};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const IFINFOMSG_LEN: usize = 16;
const IFLA_IFNAME: u16 = 3;
/// `RTMGRP_LINK`: the multicast group of link notifications.
const RTMGRP_LINK: u32 = 1;
/// Receive buffer of the watching socket: room for the link notifications of many
/// concurrent teardowns (an overflow is detected and handled, this only makes it rare).
const WATCH_RCVBUF: usize = 4 << 20;
/// Longest wait for one reply or for the removal (a guard against a lost kernel reply,
/// never a pacing delay).
const TIMEOUT: Duration = Duration::from_secs(10);

fn err(context: impl Into<String>, e: Errno) -> NetError {
    NetError::sys(context, std::io::Error::from(e))
}

fn open_route_socket(groups: u32) -> Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(|e| err("open NETLINK_ROUTE socket", e))?;
    if groups != 0 {
        // Best effort beyond the default size (needs CAP_NET_ADMIN, which we have).
        if setsockopt(&fd, sockopt::RcvBufForce, &WATCH_RCVBUF).is_err() {
            let _ = setsockopt(&fd, sockopt::RcvBuf, &WATCH_RCVBUF);
        }
    }
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))
        .map_err(|e| err("bind NETLINK_ROUTE socket", e))?;
    Ok(fd)
}

fn put_header(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32) {
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
}

fn put_ifinfo(buf: &mut Vec<u8>, index: u32) {
    buf.extend_from_slice(&[0u8; 4]); // family, pad, type
    buf.extend_from_slice(&index.to_ne_bytes());
    buf.extend_from_slice(&[0u8; 8]); // flags, change
}

fn finish(buf: &mut [u8]) {
    debug_assert!(buf.len() >= NLMSG_HDRLEN + IFINFOMSG_LEN);
    let len = u32::try_from(buf.len()).unwrap_or(u32::MAX).to_ne_bytes();
    buf[..4].copy_from_slice(&len);
}

fn link_request(ty: u16, flags: u16, seq: u32, index: u32, name: Option<&str>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    put_header(&mut buf, ty, NLM_F_REQUEST | flags, seq);
    put_ifinfo(&mut buf, index);
    if let Some(n) = name {
        let len = 4 + n.len() + 1;
        buf.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        buf.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        buf.extend_from_slice(n.as_bytes());
        buf.push(0);
        buf.resize(buf.len().next_multiple_of(4), 0);
    }
    finish(&mut buf);
    buf
}

/// One netlink message of a received datagram.
struct Msg<'a> {
    ty: u16,
    seq: u32,
    pid: u32,
    payload: &'a [u8],
}

fn messages(b: &[u8]) -> impl Iterator<Item = Msg<'_>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let h = b.get(at..at + NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let payload = b.get(at + NLMSG_HDRLEN..at + len)?;
        at += len.next_multiple_of(4).max(NLMSG_HDRLEN);
        Some(Msg {
            ty: u16::from_ne_bytes([h[4], h[5]]),
            seq: u32::from_ne_bytes([h[8], h[9], h[10], h[11]]),
            pid: u32::from_ne_bytes([h[12], h[13], h[14], h[15]]),
            payload,
        })
    })
}

fn ifindex_of(payload: &[u8]) -> Option<u32> {
    let b = payload.get(4..8)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn error_code(payload: &[u8]) -> i32 {
    payload.get(0..4).map_or(-libc::EPROTO, |c| {
        i32::from_ne_bytes([c[0], c[1], c[2], c[3]])
    })
}

/// A NETLINK_ROUTE socket in the namespace of the thread that opened it, subscribed to link
/// notifications, that also answers "does this link exist".
pub(crate) struct LinkWatch {
    fd: OwnedFd,
    portid: u32,
    seq: u32,
    buf: Vec<u8>,
    /// A removal seen while waiting for something else.
    removed: Vec<u32>,
    /// Notifications were lost (receive buffer overflow): re-check instead of trusting them.
    overflowed: bool,
}

impl LinkWatch {
    /// Opens the socket in the current thread's namespace; notifications are queued from
    /// here on.
    pub(crate) fn open() -> Result<Self> {
        let fd = open_route_socket(RTMGRP_LINK)?;
        let portid = getsockname::<NetlinkAddr>(fd.as_raw_fd())
            .map_err(|e| err("getsockname of NETLINK_ROUTE socket", e))?
            .pid();
        Ok(Self {
            fd,
            portid,
            seq: 0,
            buf: vec![0u8; 1 << 16],
            removed: Vec::new(),
            overflowed: false,
        })
    }

    /// Receives one datagram, waiting at most until `deadline`; its length, 0 when
    /// notifications were lost (`overflowed` is set), `None` when `also` became readable
    /// first (it is not read).
    fn recv(
        &mut self,
        deadline: Instant,
        also: Option<&OwnedFd>,
        what: &str,
    ) -> Result<Option<usize>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(err(
                    format!("{what}: no answer from the kernel in {TIMEOUT:?}"),
                    Errno::ETIMEDOUT,
                ));
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX).max(1);
            let mut fds = vec![PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            if let Some(a) = also {
                fds.push(PollFd::new(a.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(err(format!("{what}: poll"), e)),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            let mine = fds.first().is_some_and(ready);
            let other = fds.get(1).is_some_and(ready);
            drop(fds);
            if mine {
                match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                    Ok(n) => return Ok(Some(n)),
                    Err(Errno::EINTR | Errno::EAGAIN) => {}
                    Err(Errno::ENOBUFS) => {
                        self.overflowed = true;
                        return Ok(Some(0));
                    }
                    Err(e) => return Err(err(format!("{what}: receive"), e)),
                }
            }
            if other {
                return Ok(None);
            }
        }
    }

    /// Notes the removals in a received datagram of `n` bytes; returns the reply to
    /// request `seq` if it is in there (`Ok(Some(ifindex))` for a link, `Err(errno)`).
    fn scan(&mut self, n: usize, seq: u32) -> Option<std::result::Result<u32, i32>> {
        let mut reply = None;
        for m in messages(&self.buf[..n]) {
            if m.ty == RTM_DELLINK
                && let Some(i) = ifindex_of(m.payload)
            {
                self.removed.push(i);
            }
            if seq != 0 && m.seq == seq && m.pid == self.portid {
                match m.ty {
                    RTM_NEWLINK => reply = ifindex_of(m.payload).map(Ok),
                    NLMSG_ERROR => reply = Some(Err(-error_code(m.payload))),
                    _ => {}
                }
            }
        }
        reply
    }

    /// The index of link `name` (by name) or whether link `index` exists (by index).
    fn query(&mut self, index: u32, name: Option<&str>) -> Result<Option<u32>> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        let what = match name {
            Some(n) => format!("get link {n}"),
            None => format!("get link #{index}"),
        };
        let req = link_request(RTM_GETLINK, 0, seq, index, name);
        send(self.fd.as_raw_fd(), &req, MsgFlags::empty()).map_err(|e| err(what.clone(), e))?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let Some(n) = self.recv(deadline, None, &what)? else {
                continue;
            };
            if n == 0 {
                // The overflow may have cost the reply too: ask again.
                return self.query(index, name);
            }
            match self.scan(n, seq) {
                None => {}
                Some(Ok(i)) => return Ok(Some(i)),
                Some(Err(libc::ENODEV)) => return Ok(None),
                Some(Err(e)) => return Err(err(what, Errno::from_raw(e))),
            }
        }
    }

    /// The index of link `name`, `None` if there is none.
    pub(crate) fn index_of(&mut self, name: &str) -> Result<Option<u32>> {
        self.query(0, Some(name))
    }

    /// Deletes link `index` (`name` for messages) and returns once it is unlisted: the
    /// deletion runs on a helper thread over a socket of this namespace opened here, and
    /// this thread waits for the link's removal notification (or the helper's failure).
    pub(crate) fn delete(&mut self, index: u32, name: &str) -> Result<()> {
        let req_fd = open_route_socket(0)?;
        let (done_r, done_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| err("pipe", e))?;
        let req = link_request(RTM_DELLINK, NLM_F_ACK, 1, index, None);
        std::thread::Builder::new()
            .name("vmsan-dellink".into())
            .spawn(move || {
                let code = delete_now(&req_fd, &req);
                let _ = nix::unistd::write(&done_w, &code.to_ne_bytes());
            })
            .map_err(|e| NetError::sys("spawn the link deletion thread", e))?;
        let what = format!("wait for the removal of link {name}");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if self.removed.contains(&index) {
                return Ok(());
            }
            if self.overflowed {
                // Notifications were lost: ask instead.
                self.overflowed = false;
                if self.query(index, None)?.is_none() {
                    return Ok(());
                }
                continue;
            }
            match self.recv(deadline, Some(&done_r), &what)? {
                Some(n) => {
                    self.scan(n, 0);
                }
                None => {
                    // The helper is done, so the link was unlisted or the deletion failed.
                    let mut b = [0u8; 4];
                    let code = match nix::unistd::read(&done_r, &mut b) {
                        Ok(4) => i32::from_ne_bytes(b),
                        _ => -libc::EPIPE,
                    };
                    if self.query(index, None)?.is_none() {
                        return Ok(());
                    }
                    let e = if code < 0 {
                        Errno::from_raw(-code)
                    } else {
                        Errno::EEXIST // deleted, yet still listed
                    };
                    return Err(err(format!("delete link {name}"), e));
                }
            }
        }
    }
}

/// Sends `req` (an `RTM_DELLINK` with ack) and returns the kernel's answer (0 or `-errno`).
fn delete_now(fd: &OwnedFd, req: &[u8]) -> i32 {
    if let Err(e) = send(fd.as_raw_fd(), req, MsgFlags::empty()) {
        return -(e as i32);
    }
    let mut buf = [0u8; 1024];
    loop {
        match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => {
                if let Some(m) = messages(&buf[..n]).find(|m| m.ty == NLMSG_ERROR) {
                    return error_code(m.payload);
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return -(e as i32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_framed() {
        let r = link_request(RTM_GETLINK, 0, 7, 0, Some("vmsan-h1"));
        // header + ifinfomsg + attribute (4 + 9 bytes, padded to 16)
        assert_eq!(r.len(), NLMSG_HDRLEN + IFINFOMSG_LEN + 16);
        let m: Vec<_> = messages(&r).collect();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].ty, RTM_GETLINK);
        assert_eq!(m[0].seq, 7);
        assert_eq!(
            &m[0].payload[IFINFOMSG_LEN + 4..IFINFOMSG_LEN + 12],
            b"vmsan-h1"
        );
        let d = link_request(RTM_DELLINK, NLM_F_ACK, 1, 42, None);
        assert_eq!(d.len(), NLMSG_HDRLEN + IFINFOMSG_LEN);
        assert_eq!(ifindex_of(&d[NLMSG_HDRLEN..]), Some(42));
    }
}
