//! `POST /v1/identity`: a clone restored from a snapshot takes on its own identity.
//!
//! The snapshot's memory holds the source VM's hostname, address, MAC, token and entropy pool.
//! The host sends each clone its own right after the restore; from then on only the new token
//! is accepted. In plain mode (the agent running on a host, for tests) only the token changes:
//! nothing of the host is touched.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use vmsan_proto::{GuestNetwork, Reidentify};

use crate::init::{configure_eth0, valid_hostname, write_etc};
use crate::netlink::{Netlink, parse_cidr, parse_mac};
use crate::server::{Agent, Body, empty, error, read_json};

pub(crate) async fn handle(agent: Arc<Agent>, req: Request<Incoming>) -> Response<Body> {
    let id: Reidentify = match read_json(req.into_body()).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(msg) = check(&id) {
        return error(StatusCode::BAD_REQUEST, "bad_request", &msg);
    }
    if agent.mode != "plain" {
        let old = agent.network();
        let new = id.clone();
        let applied = tokio::task::spawn_blocking(move || apply(old.as_ref(), &new)).await;
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return error(StatusCode::INTERNAL_SERVER_ERROR, "identity", &msg),
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "identity",
                    &format!("identity task: {e}"),
                );
            }
        }
    }
    agent.set_identity(id.token.into_bytes(), id.network);
    empty(StatusCode::NO_CONTENT)
}

/// Reject a request before anything changes.
fn check(id: &Reidentify) -> Result<(), String> {
    if !valid_hostname(&id.hostname) {
        return Err(format!("invalid hostname {:?}", id.hostname));
    }
    if id.token.len() < 32 || !id.token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("the new token must be at least 32 alphanumeric characters".into());
    }
    if id.entropy_hex.len() > 1024 || !id.entropy_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("entropyHex must be at most 1024 hex digits".into());
    }
    if let Some(n) = &id.network {
        parse_cidr(&n.address)?;
        n.gateway
            .parse::<Ipv4Addr>()
            .map_err(|e| format!("gateway {:?}: {e}", n.gateway))?;
        if let Some(mac) = &n.mac {
            parse_mac(mac)?;
        }
        for d in &n.dns {
            d.parse::<std::net::IpAddr>()
                .map_err(|e| format!("DNS server {d:?}: {e}"))?;
        }
    }
    Ok(())
}

/// Hostname, network, clock, entropy, in that order; the first failure stops it.
fn apply(old: Option<&GuestNetwork>, id: &Reidentify) -> Result<(), String> {
    nix::unistd::sethostname(&id.hostname).map_err(|e| format!("sethostname: {e}"))?;
    write_etc("/etc/hostname", &format!("{}\n", id.hostname))?;
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(net) = &id.network {
        let addr = renumber(old, net)?;
        hosts.push_str(&format!("{addr}\t{}\n", id.hostname));
        let resolv: String = net
            .dns
            .iter()
            .map(|d| format!("nameserver {d}\n"))
            .collect();
        if !resolv.is_empty() {
            write_etc("/etc/resolv.conf", &resolv)?;
        }
    } else {
        hosts.push_str(&format!("127.0.1.1\t{}\n", id.hostname));
    }
    write_etc("/etc/hosts", &hosts)?;
    crate::clock::step_to(id.clock_unix_ms, true)?;
    mix_entropy(&id.entropy_hex);
    Ok(())
}

/// Move `eth0` from the old address to the new one (and its MAC and default route).
fn renumber(old: Option<&GuestNetwork>, net: &GuestNetwork) -> Result<Ipv4Addr, String> {
    let mut nl = Netlink::open().map_err(|e| format!("open rtnetlink: {e}"))?;
    if let Some(old) = old
        && old.address != net.address
    {
        let eth0 = nix::net::if_::if_nametoindex("eth0").map_err(|e| format!("find eth0: {e}"))?;
        let (a, p) = parse_cidr(&old.address)?;
        match nl.del_address(eth0, a, p) {
            // Already gone (someone in the guest removed it) is fine.
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
            Err(e) => return Err(format!("remove {} from eth0: {e}", old.address)),
        }
    }
    configure_eth0(&mut nl, net, true)
}

/// Mix the host's random bytes into the pool (not credited: VMGENID and the kernel's own
/// sources stay in charge of the estimate).
fn mix_entropy(hex: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/urandom") {
        let _ = f.write_all(hex.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Reidentify {
        Reidentify {
            vm_id: "vm-0123abcd".into(),
            hostname: "vm-0123abcd".into(),
            token: "a".repeat(64),
            network: Some(GuestNetwork {
                address: "198.18.0.10/29".into(),
                gateway: "198.18.0.9".into(),
                mac: Some("06:00:c6:12:00:0a".into()),
                dns: vec!["198.18.0.9".into()],
                mtu: None,
            }),
            clock_unix_ms: 0,
            entropy_hex: "00ff".into(),
        }
    }

    #[test]
    fn requests_are_checked_before_anything_changes() {
        assert!(check(&id()).is_ok());
        let mut bad = id();
        bad.hostname = "a b".into();
        assert!(check(&bad).is_err());
        let mut bad = id();
        bad.token = "short".into();
        assert!(check(&bad).is_err());
        let mut bad = id();
        bad.token = format!("{}\n", "a".repeat(64));
        assert!(check(&bad).is_err());
        let mut bad = id();
        bad.entropy_hex = "xyz".into();
        assert!(check(&bad).is_err());
        let mut bad = id();
        bad.network.as_mut().unwrap().mac = Some("06:00".into());
        assert!(check(&bad).is_err());
        let mut bad = id();
        bad.network.as_mut().unwrap().address = "198.18.0.10".into();
        assert!(check(&bad).is_err());
    }
}
