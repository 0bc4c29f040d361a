//! A few rtnetlink requests, hand-built (no C, no extra crates): link up + MTU, IPv4 address,
//! default route. Each request waits for the kernel's acknowledgement.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    socket,
};

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const IFF_UP: u32 = 0x1;
const IFLA_ADDRESS: u16 = 1;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_GATEWAY: u16 = 5;
const RTA_OIF: u16 = 4;
const AF_INET: u8 = 2;
const AF_UNSPEC: u8 = 0;

/// An open rtnetlink socket.
#[derive(Debug)]
pub(crate) struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len().div_ceil(4) * 4, 0);
}

/// An `ifinfomsg` for link `index`: family, type, index, flags and which flags change.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> io::Result<Vec<u8>> {
    let mut p = Vec::with_capacity(32);
    p.push(AF_UNSPEC);
    p.push(0);
    p.extend_from_slice(&0u16.to_ne_bytes());
    p.extend_from_slice(
        &i32::try_from(index)
            .map_err(io::Error::other)?
            .to_ne_bytes(),
    );
    p.extend_from_slice(&flags.to_ne_bytes());
    p.extend_from_slice(&change.to_ne_bytes());
    Ok(p)
}

/// Parse `a.b.c.d/n`.
pub(crate) fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| format!("address {s:?} has no /prefix"))?;
    let addr: Ipv4Addr = a.parse().map_err(|e| format!("address {a:?}: {e}"))?;
    let prefix: u8 = p.parse().map_err(|e| format!("prefix {p:?}: {e}"))?;
    if prefix > 32 {
        return Err(format!("prefix /{prefix} is longer than 32"));
    }
    Ok((addr, prefix))
}

impl Netlink {
    pub(crate) fn open() -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(Self { fd, seq: 1 })
    }

    fn request(&mut self, kind: u16, flags: u16, payload: &[u8]) -> io::Result<()> {
        self.seq += 1;
        let len = 16 + payload.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&u32::try_from(len).map_err(io::Error::other)?.to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        send(self.fd.as_raw_fd(), &msg, MsgFlags::empty())?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            let mut off = 0;
            while off + 16 <= n {
                let mlen = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
                    as usize;
                let mtype = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let mseq =
                    u32::from_ne_bytes([buf[off + 8], buf[off + 9], buf[off + 10], buf[off + 11]]);
                if mlen < 16 || off + mlen > n {
                    return Err(io::Error::other("malformed netlink answer"));
                }
                if mtype == NLMSG_ERROR && mseq == self.seq && mlen >= 20 {
                    let code = i32::from_ne_bytes([
                        buf[off + 16],
                        buf[off + 17],
                        buf[off + 18],
                        buf[off + 19],
                    ]);
                    return if code == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-code))
                    };
                }
                off += mlen.div_ceil(4) * 4;
            }
        }
    }

    /// Bring a link up, optionally setting its MTU.
    pub(crate) fn link_up(&mut self, index: u32, mtu: Option<u32>) -> io::Result<()> {
        let mut p = ifinfomsg(index, IFF_UP, IFF_UP)?;
        if let Some(m) = mtu {
            push_attr(&mut p, IFLA_MTU, &m.to_ne_bytes());
        }
        self.request(RTM_NEWLINK, 0, &p)
    }

    /// Add (or replace) an IPv4 address on a link.
    pub(crate) fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut p = Vec::with_capacity(32);
        p.extend_from_slice(&[AF_INET, prefix, 0, 0]);
        p.extend_from_slice(&index.to_ne_bytes());
        push_attr(&mut p, IFA_LOCAL, &addr.octets());
        push_attr(&mut p, IFA_ADDRESS, &addr.octets());
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &p)
    }

    /// Remove an IPv4 address from a link (routes through it go with it).
    pub(crate) fn del_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut p = Vec::with_capacity(32);
        p.extend_from_slice(&[AF_INET, prefix, 0, 0]);
        p.extend_from_slice(&index.to_ne_bytes());
        push_attr(&mut p, IFA_LOCAL, &addr.octets());
        push_attr(&mut p, IFA_ADDRESS, &addr.octets());
        self.request(RTM_DELADDR, 0, &p)
    }

    /// Set a link's MAC address (virtio-net and TAP devices allow it while up).
    pub(crate) fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> io::Result<()> {
        let mut p = ifinfomsg(index, 0, 0)?;
        push_attr(&mut p, IFLA_ADDRESS, &mac);
        self.request(RTM_NEWLINK, 0, &p)
    }

    /// Set the IPv4 default route through `gateway` on a link.
    pub(crate) fn default_route(&mut self, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
        // rtmsg: family, dst_len, src_len, tos, table (main), protocol (boot), scope (universe),
        // type (unicast), flags.
        let mut p = vec![AF_INET, 0, 0, 0, 254, 3, 0, 1];
        p.extend_from_slice(&0u32.to_ne_bytes());
        push_attr(&mut p, RTA_GATEWAY, &gateway.octets());
        push_attr(&mut p, RTA_OIF, &index.to_ne_bytes());
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, &p)
    }
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub(crate) fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let part = parts
            .next()
            .ok_or_else(|| format!("MAC {s:?} is too short"))?;
        if part.len() != 2 {
            return Err(format!("MAC {s:?} is malformed"));
        }
        *b = u8::from_str_radix(part, 16).map_err(|_| format!("MAC {s:?} is malformed"))?;
    }
    if parts.next().is_some() {
        return Err(format!("MAC {s:?} is too long"));
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            parse_cidr("198.18.0.2/30").unwrap(),
            (Ipv4Addr::new(198, 18, 0, 2), 30)
        );
        assert!(parse_cidr("198.18.0.2").is_err());
        assert!(parse_cidr("198.18.0.2/33").is_err());
        assert!(parse_cidr("x/24").is_err());
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("06:00:c6:12:00:02").unwrap(),
            [6, 0, 0xc6, 0x12, 0, 2]
        );
        for bad in [
            "",
            "06:00:c6:12:00",
            "06:00:c6:12:00:02:03",
            "6:0:c6:12:0:2",
            "zz:00:c6:12:00:02",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn attributes_are_padded() {
        let mut b = Vec::new();
        push_attr(&mut b, 1, &[1, 2, 3, 4, 5]);
        assert_eq!(b.len(), 12);
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), 9);
    }
}
