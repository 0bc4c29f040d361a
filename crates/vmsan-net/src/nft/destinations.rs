//! The destination lists the VM ruleset treats specially: resolvers a guest may only reach
//! through the DNS filter, networks it can never reach, and the LAN it reaches only on opt-in.

use crate::policy::Cidr;

/// Addresses of well-known DNS-over-HTTPS / DoT resolvers: Google, Cloudflare (incl.
/// families), Quad9, OpenDNS, AdGuard, CleanBrowsing, NextDNS anycast, Control D.
pub const KNOWN_DOH: [&str; 21] = [
    "8.8.8.8",
    "8.8.4.4",
    "1.1.1.1",
    "1.0.0.1",
    "1.1.1.2",
    "1.0.0.2",
    "1.1.1.3",
    "1.0.0.3",
    "9.9.9.9",
    "149.112.112.112",
    "9.9.9.10",
    "9.9.9.11",
    "208.67.222.222",
    "208.67.220.220",
    "94.140.14.14",
    "94.140.15.15",
    "185.228.168.168",
    "185.228.169.168",
    "45.90.28.0/24",
    "45.90.30.0/24",
    "76.76.2.0/24",
];

/// Destinations a guest can never reach besides the slot range.
pub(super) const ALWAYS_BLOCKED: [&str; 4] =
    ["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3"];

/// The networks around a host that `allow-all` does not mean (it means the internet): the
/// private ranges of RFC 1918 and the shared address space of RFC 6598 (carrier-grade NAT).
/// The other non-global ranges are blocked for every policy (see [`ALWAYS_BLOCKED`] and the
/// slot range, which covers 198.18.0.0/15), and the guest has no IPv6 at all (every IPv6
/// packet is dropped), so fc00::/7, fe80::/10 and the rest cannot be reached either.
pub const LAN_RANGES: [&str; 4] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
];

/// What a guest may not reach unless the user opts in (`--allow-lan`), an explicitly allowed
/// CIDR aside: [`LAN_RANGES`] and the host's directly connected networks (`host_nets`, see
/// [`crate::host_networks`]). Networks inside another one of the list are left out, so the
/// set's intervals never overlap. Empty when `allow_lan`.
pub fn lan_block(allow_lan: bool, host_nets: &[Cidr]) -> Vec<Cidr> {
    if allow_lan {
        return Vec::new();
    }
    let mut all: Vec<Cidr> = LAN_RANGES
        .iter()
        .filter_map(|s| s.parse().ok())
        .chain(host_nets.iter().copied())
        .collect();
    all.sort_by_key(|c| c.prefix());
    let mut out: Vec<Cidr> = Vec::new();
    for c in all {
        if !out
            .iter()
            .any(|k| k.prefix() <= c.prefix() && k.contains(c.addr()))
        {
            out.push(c);
        }
    }
    out
}
