//! Netlink operations (rtnetlink), run on a thread that is already in the right namespace:
//! the netlink socket belongs to the namespace of the thread that opens it.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use futures_util::TryStreamExt as _;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{NetError, Result};

/// Runs `f` with a netlink handle opened in the current thread's namespace.
pub(crate) fn with_netlink<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| NetError::sys("netlink runtime", e))?;
    rt.block_on(async move {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| NetError::sys("netlink socket", e))?;
        let task = tokio::spawn(conn);
        let r = f(handle).await;
        task.abort();
        r
    })
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.to_io().raw_os_error() == Some(errno))
}

/// Index of interface `name`, `None` if absent.
pub(crate) async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(Some(m)) => Ok(Some(m.header.index)),
        Ok(None) => Ok(None),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
        Err(e) => Err(NetError::netlink(format!("get link {name}"), e)),
    }
}

/// Index and alias (`IFLA_IFALIAS`, empty = none) of interface `name`, `None` if absent.
pub(crate) async fn index_and_alias(h: &Handle, name: &str) -> Result<Option<(u32, String)>> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(Some(m)) => {
            let alias = m
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::IfAlias(x) => Some(x.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            Ok(Some((m.header.index, alias)))
        }
        Ok(None) => Ok(None),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
        Err(e) => Err(NetError::netlink(format!("get link {name}"), e)),
    }
}

/// Sets the alias of `index` (what `ip link` prints as `alias`).
pub(crate) async fn set_alias(h: &Handle, index: u32, alias: &str, what: &str) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).alias(alias).build())
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("set the alias of {what}"), e))
}

/// Index of `name`, error if absent.
pub(crate) async fn require_index(h: &Handle, name: &str) -> Result<u32> {
    index_of(h, name).await?.ok_or_else(|| NetError::Exists {
        what: format!("no interface {name} (expected it to exist)"),
    })
}

/// Creates a veth pair `host` (here) ↔ `peer`, the peer created directly inside the namespace
/// open at `peer_ns_fd`.
pub(crate) async fn add_veth(h: &Handle, host: &str, peer: &str, peer_ns_fd: RawFd) -> Result<()> {
    let peer_msg = LinkUnspec::new_with_name(peer)
        .setns_by_fd(peer_ns_fd)
        .build();
    let msg = LinkVeth::new(host, peer)
        .set_info_data(netlink_packet_route::link::InfoData::Veth(
            netlink_packet_route::link::InfoVeth::Peer(peer_msg),
        ))
        .build();
    h.link().add(msg).execute().await.map_err(|e| {
        if is_errno(&e, libc::EEXIST) {
            NetError::Exists {
                what: format!("interface {host}"),
            }
        } else {
            NetError::netlink(format!("add veth {host}/{peer}"), e)
        }
    })
}

/// Brings `index` up.
pub(crate) async fn up(h: &Handle, index: u32, what: &str) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("set {what} up"), e))
}

/// Adds `ip/prefix` to `index`.
pub(crate) async fn add_addr(
    h: &Handle,
    index: u32,
    ip: Ipv4Addr,
    prefix: u8,
    what: &str,
) -> Result<()> {
    h.address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("add {ip}/{prefix} to {what}"), e))
}

/// Adds a route `dst/prefix via gw` (`prefix` 0 = default route).
pub(crate) async fn add_route(h: &Handle, dst: Ipv4Addr, prefix: u8, gw: Ipv4Addr) -> Result<()> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, prefix)
        .gateway(gw)
        .build();
    h.route()
        .add(msg)
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("add route {dst}/{prefix} via {gw}"), e))
}

/// Every IPv4 address of this namespace with its prefix length (the local address of a
/// point-to-point link).
pub(crate) async fn ipv4_addresses(h: &Handle) -> Result<Vec<(Ipv4Addr, u8)>> {
    let mut s = h.address().get().execute();
    let mut out = Vec::new();
    while let Some(m) = s
        .try_next()
        .await
        .map_err(|e| NetError::netlink("dump addresses", e))?
    {
        let mut local = None;
        let mut address = None;
        for a in &m.attributes {
            match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => local = Some(*ip),
                AddressAttribute::Address(IpAddr::V4(ip)) => address = Some(*ip),
                _ => {}
            }
        }
        if let Some(ip) = local.or(address) {
            out.push((ip, m.header.prefix_len));
        }
    }
    Ok(out)
}

/// Names of all interfaces whose name starts with `prefix`.
pub(crate) async fn links_with_prefix(h: &Handle, prefix: &str) -> Result<Vec<String>> {
    let mut s = h.link().get().execute();
    let mut out = Vec::new();
    while let Some(m) = s
        .try_next()
        .await
        .map_err(|e| NetError::netlink("dump links", e))?
    {
        for a in &m.attributes {
            if let LinkAttribute::IfName(n) = a
                && n.starts_with(prefix)
            {
                out.push(n.clone());
            }
        }
    }
    Ok(out)
}
