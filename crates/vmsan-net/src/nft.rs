//! nftables rulesets: rendering (pure) and atomic application with `nft -f -`.
//!
//! # VM namespace: table `inet vmsan`
//!
//! Base chains hook at `filter - 10`. The forward chain sends **every** packet that enters
//! from the TAP to `guest_egress` before anything can accept it, so no guest packet skips the
//! policy (the reference tool's `tap -> veth accept` bypass). `guest_egress`, in order:
//! anti-spoofing (must leave through the veth, must carry the guest's source address),
//! replies of established flows, the always-blocked destinations (the whole slot range
//! 198.18.0.0/15 — every VM, every TAP and transit address, the host's veth ends — plus
//! loopback, link-local, this-network and multicast), ICMP, DNS and DoT (53, 853) to anyone
//! (the guest's DNS goes to the filter on the TAP address, an `input` packet), DoH/QUIC to
//! known resolvers, UDP unless opted in, then the `policy` chain, then drop. The `input`
//! chain accepts from the guest only DNS to the TAP address; IPv6 is dropped everywhere
//! (and disabled by sysctl in the namespace).
//!
//! Published ports: `veth0 -> tap0` accepts new TCP/UDP flows to the guest's published
//! ports only; the host namespace does the DNAT.
//!
//! # Host namespace: one shared table `ip vmsan`
//!
//! See [`render_host_base`]: per-VM facts are set/map elements, so setup and teardown add
//! and remove elements only, and a packet's cost does not grow with the number of VMs.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::addr::{HOST_VETH_PREFIX, SlotAddrs, TAP_NAME, VM_VETH_NAME, slot_range};
use crate::error::{NetError, Result};
use crate::netns;
use crate::policy::{Policy, Protocol, PublishedPort};

/// A chain: (family, table, chain).
pub type ChainRef = (&'static str, &'static str, &'static str);

/// One of our rules in a foreign chain: ((family, table, chain), handle).
pub type CompatRule = ((String, String, String), u64);

/// Table name inside every VM namespace.
pub const VM_TABLE: &str = "vmsan";
/// Set of addresses learnt by the DNS filter.
pub const DNS_SET: &str = "dns_allowed";
/// Chains of a compatible iptables-nft `FORWARD` chain we add accept rules to when present.
pub const COMPAT_FORWARD_CHAINS: [(&str, &str, &str); 1] = [("ip", "filter", "FORWARD")];

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
const ALWAYS_BLOCKED: [&str; 4] = ["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3"];

/// What the VM-namespace ruleset depends on.
#[derive(Debug, Clone)]
pub struct VmRules<'a> {
    /// The slot's addresses.
    pub addrs: &'a SlotAddrs,
    /// The egress policy.
    pub policy: &'a Policy,
    /// Guest UDP allowed (still subject to the policy).
    pub allow_udp: bool,
    /// Published ports (inbound).
    pub published: &'a [PublishedPort],
}

fn render_egress(out: &mut String, r: &VmRules<'_>) {
    let g = r.addrs.guest_ip;
    let blocked = std::iter::once(slot_range().to_string())
        .chain(ALWAYS_BLOCKED.iter().map(|s| (*s).to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(out, "\tchain guest_egress {{");
    let _ = writeln!(out, "\t\toifname != \"{VM_VETH_NAME}\" drop");
    let _ = writeln!(out, "\t\tip saddr != {g} drop");
    let _ = writeln!(out, "\t\tct state established,related accept");
    let _ = writeln!(out, "\t\tip daddr {{ {blocked} }} drop");
    let _ = writeln!(out, "\t\tmeta l4proto icmp drop");
    let _ = writeln!(
        out,
        "\t\tmeta l4proto {{ tcp, udp }} th dport {{ 53, 853 }} drop"
    );
    let _ = writeln!(
        out,
        "\t\tip daddr {{ {} }} meta l4proto {{ tcp, udp }} th dport 443 drop",
        KNOWN_DOH.join(", ")
    );
    if !r.allow_udp {
        let _ = writeln!(out, "\t\tmeta l4proto udp drop");
    }
    let _ = writeln!(out, "\t\tmeta l4proto {{ tcp, udp }} jump egress_policy");
    let _ = writeln!(out, "\t\tdrop");
    let _ = writeln!(out, "\t}}");
}

fn render_policy(out: &mut String, policy: &Policy) {
    let _ = writeln!(out, "\tchain egress_policy {{");
    match policy {
        Policy::AllowAll => {
            let _ = writeln!(out, "\t\taccept");
        }
        Policy::DenyAll => {}
        Policy::Custom(c) => {
            let ports = if c.ports.is_empty() {
                String::new()
            } else {
                let mut p = c.ports.clone();
                p.sort_unstable();
                p.dedup();
                let list = p.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
                format!(" th dport {{ {list} }}")
            };
            for d in &c.denied_cidrs {
                let _ = writeln!(out, "\t\tip daddr {d} drop");
            }
            for a in &c.allowed_cidrs {
                let _ = writeln!(out, "\t\tip daddr {a}{ports} accept");
            }
            if !c.allowed_domains.is_empty() {
                let _ = writeln!(out, "\t\tip daddr @{DNS_SET}{ports} accept");
            }
        }
    }
    let _ = writeln!(out, "\t}}");
}

/// The whole VM-namespace table, replacing any previous one, as one transaction.
pub fn render_vm_table(r: &VmRules<'_>) -> String {
    let a = r.addrs;
    let mut out = String::new();
    let _ = writeln!(out, "table inet {VM_TABLE}");
    let _ = writeln!(out, "delete table inet {VM_TABLE}");
    let _ = writeln!(out, "table inet {VM_TABLE} {{");
    let _ = writeln!(out, "\tset {DNS_SET} {{");
    let _ = writeln!(out, "\t\ttype ipv4_addr");
    let _ = writeln!(out, "\t\tflags timeout");
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain input {{");
    let _ = writeln!(
        out,
        "\t\ttype filter hook input priority filter - 10; policy drop;"
    );
    let _ = writeln!(out, "\t\tmeta nfproto ipv6 drop");
    let _ = writeln!(out, "\t\tiif \"lo\" accept");
    let _ = writeln!(out, "\t\tct state established,related accept");
    let _ = writeln!(
        out,
        "\t\tiifname \"{TAP_NAME}\" ip saddr {} ip daddr {} meta l4proto {{ tcp, udp }} th dport 53 accept",
        a.guest_ip, a.tap_ip
    );
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain forward {{");
    let _ = writeln!(
        out,
        "\t\ttype filter hook forward priority filter - 10; policy drop;"
    );
    let _ = writeln!(out, "\t\tmeta nfproto ipv6 drop");
    let _ = writeln!(out, "\t\tiifname \"{TAP_NAME}\" jump guest_egress");
    let _ = writeln!(out, "\t\tct state invalid drop");
    let _ = writeln!(
        out,
        "\t\tiifname \"{VM_VETH_NAME}\" oifname \"{TAP_NAME}\" ct state established,related accept"
    );
    for p in r.published {
        let _ = writeln!(
            out,
            "\t\tiifname \"{VM_VETH_NAME}\" oifname \"{TAP_NAME}\" ip daddr {} {} dport {} ct state new accept",
            a.guest_ip,
            p.protocol.as_str(),
            p.guest_port
        );
    }
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain output {{");
    let _ = writeln!(
        out,
        "\t\ttype filter hook output priority filter - 10; policy accept;"
    );
    let _ = writeln!(out, "\t\tmeta nfproto ipv6 drop");
    let _ = writeln!(out, "\t}}");
    render_egress(&mut out, r);
    render_policy(&mut out, r.policy);
    let _ = writeln!(out, "}}");
    out
}

/// A policy change: the egress and policy chains are flushed and refilled in one transaction
/// (no window); the DNS-learnt set is emptied when `flush_dns` (the domain list changed).
pub fn render_policy_change(r: &VmRules<'_>, flush_dns: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "flush chain inet {VM_TABLE} guest_egress");
    let _ = writeln!(out, "flush chain inet {VM_TABLE} egress_policy");
    if flush_dns {
        let _ = writeln!(out, "flush set inet {VM_TABLE} {DNS_SET}");
    }
    let _ = writeln!(out, "table inet {VM_TABLE} {{");
    render_egress(&mut out, r);
    render_policy(&mut out, r.policy);
    let _ = writeln!(out, "}}");
    out
}

/// Adds addresses learnt from DNS answers to the VM's set, (re)setting their timeout to the
/// record's TTL (clamped to 1 s ..= 1 day).
pub fn render_dns_update(entries: &[(Ipv4Addr, u32)]) -> String {
    let mut best: std::collections::BTreeMap<Ipv4Addr, u32> = std::collections::BTreeMap::new();
    for &(ip, ttl) in entries {
        let t = ttl.clamp(1, 86_400);
        let e = best.entry(ip).or_insert(t);
        *e = (*e).max(t);
    }
    let mut out = String::new();
    for (ip, ttl) in best {
        let _ = writeln!(out, "add element inet {VM_TABLE} {DNS_SET} {{ {ip} }}");
        let _ = writeln!(out, "delete element inet {VM_TABLE} {DNS_SET} {{ {ip} }}");
        let _ = writeln!(
            out,
            "add element inet {VM_TABLE} {DNS_SET} {{ {ip} timeout {ttl}s }}"
        );
    }
    out
}

/// The shared table in the host namespace.
pub const HOST_TABLE: &str = "vmsan";
/// Set of `host veth . guest IP` pairs allowed to forward (one element per VM).
pub const GUEST_SRC_SET: &str = "guest_src";
/// Map `protocol . host port : guest IP . guest port` of published ports.
pub const PUBLISHED_MAP: &str = "published";
/// Comment of our rules in foreign chains.
pub const COMPAT_COMMENT: &str = "vmsan";

/// One VM's entries in the host table.
#[derive(Debug, Clone)]
pub struct HostRules<'a> {
    /// Slot addresses.
    pub addrs: &'a SlotAddrs,
    /// Host end of the veth.
    pub host_veth: &'a str,
    /// Published ports.
    pub published: &'a [PublishedPort],
}

/// The shared host table `ip vmsan` (created once, when the first VM is set up). Every
/// per-VM fact is an element of a set or map, so adding or removing a VM never touches a
/// chain and the packet path is O(1) in the number of VMs:
///
/// - forward: a VM's veth may forward only packets with its guest's source address (already
///   filtered by the VM namespace's policy); towards a VM only replies and DNATed flows;
/// - input: the host accepts nothing from a VM but replies;
/// - prerouting/output nat: published ports (other hosts, and the host's own localhost);
/// - postrouting: guests are masqueraded when leaving through any non-VM interface (the
///   default route's uplink, or whichever the host routes them to); localhost-originated
///   flows into a VM are masqueraded too (with `route_localnet` on the host veth).
///
/// `compat_chains` are foreign forward chains (iptables-nft `ip filter FORWARD`, as left by
/// Docker or ufw, policy drop) that get two accept rules for VM veths: an accept in our table
/// cannot undo a drop in theirs.
pub fn render_host_base(compat_chains: &[(&str, &str, &str)]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "table ip {HOST_TABLE} {{");
    let _ = writeln!(out, "\tset {GUEST_SRC_SET} {{");
    let _ = writeln!(out, "\t\ttype ifname . ipv4_addr");
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tmap {PUBLISHED_MAP} {{");
    let _ = writeln!(
        out,
        "\t\ttype inet_proto . inet_service : ipv4_addr . inet_service"
    );
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain forward {{");
    let _ = writeln!(
        out,
        "\t\ttype filter hook forward priority filter - 10; policy accept;"
    );
    let _ = writeln!(out, "\t\tiifname . ip saddr @{GUEST_SRC_SET} accept");
    let _ = writeln!(out, "\t\tiifname \"{HOST_VETH_PREFIX}*\" drop");
    let _ = writeln!(
        out,
        "\t\toifname \"{HOST_VETH_PREFIX}*\" ct state established,related accept"
    );
    let _ = writeln!(
        out,
        "\t\toifname \"{HOST_VETH_PREFIX}*\" ct status dnat accept"
    );
    let _ = writeln!(out, "\t\toifname \"{HOST_VETH_PREFIX}*\" drop");
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain input {{");
    let _ = writeln!(
        out,
        "\t\ttype filter hook input priority filter - 10; policy accept;"
    );
    let _ = writeln!(
        out,
        "\t\tiifname \"{HOST_VETH_PREFIX}*\" ct state established,related accept"
    );
    let _ = writeln!(out, "\t\tiifname \"{HOST_VETH_PREFIX}*\" drop");
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain prerouting {{");
    let _ = writeln!(
        out,
        "\t\ttype nat hook prerouting priority dstnat; policy accept;"
    );
    let _ = writeln!(
        out,
        "\t\tiifname != \"{HOST_VETH_PREFIX}*\" fib daddr type local dnat ip to meta l4proto . th dport map @{PUBLISHED_MAP}"
    );
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain output {{");
    let _ = writeln!(
        out,
        "\t\ttype nat hook output priority -100; policy accept;"
    );
    let _ = writeln!(
        out,
        "\t\tfib daddr type local dnat ip to meta l4proto . th dport map @{PUBLISHED_MAP}"
    );
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain postrouting {{");
    let _ = writeln!(
        out,
        "\t\ttype nat hook postrouting priority srcnat; policy accept;"
    );
    let _ = writeln!(
        out,
        "\t\tip saddr {} oifname != \"{HOST_VETH_PREFIX}*\" masquerade",
        slot_range()
    );
    let _ = writeln!(
        out,
        "\t\toifname \"{HOST_VETH_PREFIX}*\" ip saddr 127.0.0.0/8 masquerade"
    );
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "}}");
    for (fam, table, chain) in compat_chains {
        for dir in ["oifname", "iifname"] {
            let _ = writeln!(
                out,
                "insert rule {fam} {table} {chain} {dir} \"{HOST_VETH_PREFIX}*\" accept comment \"{COMPAT_COMMENT}\""
            );
        }
    }
    out
}

/// Adds one VM's elements; published ports use `create`, so a port another VM holds makes
/// the whole transaction fail.
pub fn render_host_add(r: &HostRules<'_>) -> String {
    let a = r.addrs;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "add element ip {HOST_TABLE} {GUEST_SRC_SET} {{ \"{}\" . {} }}",
        r.host_veth, a.guest_ip
    );
    for p in r.published {
        let _ = writeln!(
            out,
            "create element ip {HOST_TABLE} {PUBLISHED_MAP} {{ {} . {} : {} . {} }}",
            p.protocol.as_str(),
            p.host_port,
            a.guest_ip,
            p.guest_port
        );
    }
    out
}

/// The elements of the shared host table, as listed by `nft list table ip vmsan`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    /// Whether the table exists.
    pub exists: bool,
    /// `(host veth, guest IP)` pairs.
    pub guests: Vec<(String, Ipv4Addr)>,
    /// `(protocol, host port, guest IP, guest port)`.
    pub published: Vec<(Protocol, u16, Ipv4Addr, u16)>,
}

fn elements_of<'a>(listing: &'a str, header: &str) -> Vec<&'a str> {
    let Some(start) = listing.find(header) else {
        return Vec::new();
    };
    let rest = &listing[start..];
    let block_end = rest.find("\n\t}").unwrap_or(rest.len());
    let block = &rest[..block_end];
    let Some(e) = block.find("elements = {") else {
        return Vec::new();
    };
    let body = &block[e + "elements = {".len()..];
    let body = &body[..body.find('}').unwrap_or(body.len())];
    body.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .collect()
}

impl HostState {
    /// Parses `nft list table ip vmsan`.
    pub fn parse(listing: &str) -> Self {
        let mut st = Self {
            exists: listing.contains(&format!("table ip {HOST_TABLE} {{")),
            ..Self::default()
        };
        for e in elements_of(listing, &format!("set {GUEST_SRC_SET} {{")) {
            if let Some((dev, ip)) = e.split_once(" . ")
                && let Ok(ip) = ip.trim().parse()
            {
                st.guests
                    .push((dev.trim().trim_matches('"').to_string(), ip));
            }
        }
        for e in elements_of(listing, &format!("map {PUBLISHED_MAP} {{")) {
            let parts: Vec<&str> = e.split([' ', '.', ':']).filter(|x| !x.is_empty()).collect();
            // "tcp . 8080 : 198.18.0.2 . 80" splits into tcp, 8080, 198, 18, 0, 2, 80
            if parts.len() != 7 {
                continue;
            }
            let proto = match parts[0] {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => continue,
            };
            let ip: Option<Ipv4Addr> = parts[2..6].join(".").parse().ok();
            if let (Ok(hp), Some(ip), Ok(gp)) = (parts[1].parse(), ip, parts[6].parse()) {
                st.published.push((proto, hp, ip, gp));
            }
        }
        st
    }

    /// Reads the table in `ns` (absent table: empty state). One `nft` call.
    pub fn read(ns: Option<&Path>) -> Result<Self> {
        match run(ns, &["list", "table", "ip", HOST_TABLE], "") {
            Ok(listing) => Ok(Self::parse(&listing)),
            Err(NetError::Nft { detail, .. }) if detail.contains("No such file or directory") => {
                Ok(Self::default())
            }
            Err(e) => Err(e),
        }
    }
}

/// Removes one VM's elements (as found in `state`); when it was the last VM, removes the
/// table and the compat rules (`compat`) too.
pub fn render_host_remove(
    state: &HostState,
    host_veth: &str,
    guest_ip: Ipv4Addr,
    compat: &[CompatRule],
) -> String {
    let mut out = String::new();
    if !state.exists {
        return out;
    }
    let others = state
        .guests
        .iter()
        .filter(|(d, ip)| !(d == host_veth && *ip == guest_ip))
        .count();
    if others == 0 {
        let _ = writeln!(out, "delete table ip {HOST_TABLE}");
        for ((fam, table, chain), handle) in compat {
            let _ = writeln!(out, "delete rule {fam} {table} {chain} handle {handle}");
        }
        return out;
    }
    for (d, ip) in &state.guests {
        if d == host_veth && *ip == guest_ip {
            let _ = writeln!(
                out,
                "delete element ip {HOST_TABLE} {GUEST_SRC_SET} {{ \"{d}\" . {ip} }}"
            );
        }
    }
    for (proto, hp, ip, _) in &state.published {
        if *ip == guest_ip {
            let _ = writeln!(
                out,
                "delete element ip {HOST_TABLE} {PUBLISHED_MAP} {{ {} . {hp} }}",
                proto.as_str()
            );
        }
    }
    out
}

/// Handles of the rules tagged `comment` in the output of `nft -a list chain ...`.
pub fn parse_handles(listing: &str, comment: &str) -> Vec<u64> {
    let needle = format!("comment \"{comment}\"");
    listing
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| l.rsplit_once("# handle ")?.1.trim().parse().ok())
        .collect()
}

fn nft_binary() -> &'static str {
    for p in ["/usr/sbin/nft", "/sbin/nft", "/usr/local/sbin/nft"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    "nft"
}

fn ns_label(ns: Option<&Path>) -> String {
    ns.map_or_else(
        || "the current namespace".to_string(),
        |p| p.display().to_string(),
    )
}

/// Runs `nft <args>` in `ns` (the current namespace when `None`) with `stdin`, returning
/// its stdout; a non-zero exit is an error carrying nft's stderr.
pub fn run(ns: Option<&Path>, args: &[&str], stdin: &str) -> Result<String> {
    let spawn = || -> Result<std::process::Output> {
        let mut child = Command::new(nft_binary())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| NetError::Nft {
                netns: ns_label(ns),
                detail: format!("cannot run nft (is the nftables package installed?): {e}"),
            })?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin.as_bytes())
                .map_err(|e| NetError::sys("writing the nft script", e))?;
        }
        child
            .wait_with_output()
            .map_err(|e| NetError::sys("waiting for nft", e))
    };
    // The child inherits the namespace of the thread that forks it.
    let out = match ns {
        Some(p) => netns::run_in(p, spawn)?,
        None => spawn()?,
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetError::Nft {
            netns: ns_label(ns),
            detail: format!(
                "nft {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Applies `script` as one atomic transaction (`nft -f -`) in `ns`.
pub fn apply(ns: Option<&Path>, script: &str) -> Result<()> {
    run(ns, &["-f", "-"], script).map(|_| ())
}

/// The compat chains (see [`COMPAT_FORWARD_CHAINS`]) present in `ns`, each with the handles
/// of our rules in it.
pub fn compat_chains(ns: Option<&Path>) -> Result<Vec<(ChainRef, Vec<u64>)>> {
    let tables = list_tables(ns)?;
    compat_chains_in(ns, &tables)
}

/// Like [`compat_chains`] with the table list already at hand (`family name` strings).
pub fn compat_chains_in(ns: Option<&Path>, tables: &[String]) -> Result<Vec<(ChainRef, Vec<u64>)>> {
    let mut out = Vec::new();
    for c in COMPAT_FORWARD_CHAINS {
        if !tables.iter().any(|t| *t == format!("{} {}", c.0, c.1)) {
            continue;
        }
        let Ok(listing) = run(ns, &["-a", "list", "chain", c.0, c.1, c.2], "") else {
            continue;
        };
        out.push((c, parse_handles(&listing, COMPAT_COMMENT)));
    }
    Ok(out)
}

/// Every table in `ns` as `family name`.
pub fn list_tables(ns: Option<&Path>) -> Result<Vec<String>> {
    Ok(run(ns, &["list", "tables"], "")?
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table ").map(str::to_string))
        .collect())
}

/// Our compat rules in `ns`.
pub fn compat_rule_handles(ns: Option<&Path>) -> Result<Vec<CompatRule>> {
    Ok(compat_chains(ns)?
        .into_iter()
        .flat_map(|((f, t, c), hs)| {
            hs.into_iter()
                .map(move |h| ((f.to_string(), t.to_string(), c.to_string()), h))
        })
        .collect())
}

/// Published host ports held by VMs in `ns`: (protocol, host port, guest IP).
pub fn published_ports_in_use(ns: Option<&Path>) -> Result<Vec<(Protocol, u16, Ipv4Addr)>> {
    Ok(HostState::read(ns)?
        .published
        .into_iter()
        .map(|(p, hp, ip, _)| (p, hp, ip))
        .collect())
}
