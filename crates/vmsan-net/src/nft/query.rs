//! Reading what the kernel holds: the host table's elements, the tables of a namespace, our
//! rules in foreign chains.

use std::net::Ipv4Addr;
use std::path::Path;

use super::apply::in_ns;
use super::host::{
    COMPAT_COMMENT, COMPAT_FORWARD_CHAINS, ChainRef, CompatRule, GUEST_SRC_SET, HOST_TABLE,
    PUBLISHED_MAP,
};
use super::ir::{IPPROTO_TCP, IPPROTO_UDP, family_of};
use crate::error::Result;
use crate::netns;
use crate::nfnl::{self, Family, Socket};
use crate::policy::Protocol;

/// The elements of the shared host table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    /// Whether the table exists.
    pub exists: bool,
    /// `(host veth, guest IP)` pairs.
    pub guests: Vec<(String, Ipv4Addr)>,
    /// `(protocol, host port, guest IP, guest port)`.
    pub published: Vec<(Protocol, u16, Ipv4Addr, u16)>,
}

fn ipv4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

fn port_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

impl HostState {
    /// Reads the table over `sock` (absent table: empty state).
    pub(crate) fn read_on(sock: &mut Socket) -> Result<Self> {
        let Some(guests) = sock.set_elems(Family::Ip, HOST_TABLE, GUEST_SRC_SET)? else {
            return Ok(Self::default());
        };
        let mut st = Self {
            exists: true,
            ..Self::default()
        };
        for (k, _) in guests {
            let name = k.get(..libc::IFNAMSIZ).unwrap_or_default();
            let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
            if let Some(ip) = ipv4_at(&k, libc::IFNAMSIZ) {
                st.guests
                    .push((String::from_utf8_lossy(&name[..end]).into_owned(), ip));
            }
        }
        for (k, d) in sock
            .set_elems(Family::Ip, HOST_TABLE, PUBLISHED_MAP)?
            .unwrap_or_default()
        {
            let proto = match k.first() {
                Some(&IPPROTO_TCP) => Protocol::Tcp,
                Some(&IPPROTO_UDP) => Protocol::Udp,
                _ => continue,
            };
            let d = d.unwrap_or_default();
            if let (Some(hp), Some(ip), Some(gp)) = (port_at(&k, 4), ipv4_at(&d, 0), port_at(&d, 4))
            {
                st.published.push((proto, hp, ip, gp));
            }
        }
        Ok(st)
    }

    /// Reads the table in `ns` (absent table: empty state), over this process's kept socket
    /// in that namespace.
    pub fn read(ns: Option<&Path>) -> Result<Self> {
        nfnl::with_host_socket(ns, Self::read_on).map_err(|e| in_ns(e, ns))
    }
}

/// Every table over `sock`, as `family name`.
pub(crate) fn list_tables_on(sock: &mut Socket) -> Result<Vec<String>> {
    Ok(sock
        .tables()?
        .into_iter()
        .map(|(f, n)| {
            let fam = match f {
                1 => "inet",
                2 => "ip",
                3 => "arp",
                5 => "netdev",
                7 => "bridge",
                10 => "ip6",
                _ => "unknown",
            };
            format!("{fam} {n}")
        })
        .collect())
}

/// Every table in `ns` as `family name`.
pub fn list_tables(ns: Option<&Path>) -> Result<Vec<String>> {
    nfnl::with_host_socket(ns, list_tables_on).map_err(|e| in_ns(e, ns))
}

/// The compat chains present (given the table list), each with the handles of our rules.
pub(crate) fn compat_chains_on(
    sock: &mut Socket,
    tables: &[String],
) -> Result<Vec<(ChainRef, Vec<u64>)>> {
    let mut out = Vec::new();
    for c in COMPAT_FORWARD_CHAINS {
        if !tables.iter().any(|t| *t == format!("{} {}", c.0, c.1)) {
            continue;
        }
        let Some(rules) = sock.rules(family_of(c.0), c.1, c.2)? else {
            continue;
        };
        let ours = rules
            .into_iter()
            .filter(|r| r.comment.as_deref() == Some(COMPAT_COMMENT))
            .map(|r| r.handle)
            .collect();
        out.push((c, ours));
    }
    Ok(out)
}

/// Our compat rules, over `sock`.
pub(crate) fn compat_rule_handles_on(sock: &mut Socket) -> Result<Vec<CompatRule>> {
    let tables = list_tables_on(sock)?;
    Ok(compat_chains_on(sock, &tables)?
        .into_iter()
        .flat_map(|((f, t, c), hs)| {
            hs.into_iter()
                .map(move |h| ((f.to_string(), t.to_string(), c.to_string()), h))
        })
        .collect())
}

/// Our compat rules in `ns`.
pub fn compat_rule_handles(ns: Option<&Path>) -> Result<Vec<CompatRule>> {
    netns::run_in_opt(ns, || compat_rule_handles_on(&mut Socket::open()?)).map_err(|e| in_ns(e, ns))
}

/// Published host ports held by VMs in `ns`: (protocol, host port, guest IP).
pub fn published_ports_in_use(ns: Option<&Path>) -> Result<Vec<(Protocol, u16, Ipv4Addr)>> {
    Ok(HostState::read(ns)?
        .published
        .into_iter()
        .map(|(p, hp, ip, _)| (p, hp, ip))
        .collect())
}
