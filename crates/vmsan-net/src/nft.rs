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
//! # Host namespace: table `ip vmsan_<vmid>` per VM
//!
//! Forward accepts the VM's veth traffic (already filtered in the VM namespace) and replies
//! or DNATed flows towards it, and drops anything else towards it; input drops everything
//! the guest sends to the host except replies; nat chains DNAT published ports (prerouting
//! for other hosts, output for the host's own localhost) and masquerade the guest subnet out
//! of the default interface. Because an accept in one table cannot undo a drop in another,
//! when an iptables-nft `ip filter FORWARD` chain exists (Docker, ufw) two accept rules
//! tagged with the comment `vmsan:<vmid>` are inserted at its top and removed at teardown.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::addr::{SlotAddrs, TAP_NAME, VM_VETH_NAME, slot_range};
use crate::error::{NetError, Result};
use crate::netns;
use crate::policy::{Policy, Protocol, PublishedPort};

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

/// Name of a VM's table in the host namespace: `vmsan_vm_<hex>`.
pub fn host_table(vm_id: &str) -> String {
    format!("vmsan_{}", vm_id.replace('-', "_"))
}

/// Comment tagging our rules in foreign chains.
pub fn compat_comment(vm_id: &str) -> String {
    format!("vmsan:{vm_id}")
}

/// What the host-namespace table depends on.
#[derive(Debug, Clone)]
pub struct HostRules<'a> {
    /// VM id (validated).
    pub vm_id: &'a str,
    /// Slot addresses.
    pub addrs: &'a SlotAddrs,
    /// Host end of the veth.
    pub host_veth: &'a str,
    /// Interface of the host's default route (NAT goes out of it).
    pub uplink: &'a str,
    /// Published ports.
    pub published: &'a [PublishedPort],
    /// Foreign forward chains present in the host namespace (family, table, chain).
    pub compat_chains: &'a [(&'a str, &'a str, &'a str)],
}

/// The VM's host-namespace table (replacing any previous one) plus the compat rules, one
/// transaction.
pub fn render_host_table(r: &HostRules<'_>) -> String {
    let t = host_table(r.vm_id);
    let v = r.host_veth;
    let a = r.addrs;
    let mut out = String::new();
    let _ = writeln!(out, "table ip {t}");
    let _ = writeln!(out, "delete table ip {t}");
    let _ = writeln!(out, "table ip {t} {{");
    let _ = writeln!(out, "\tchain forward {{");
    let _ = writeln!(
        out,
        "\t\ttype filter hook forward priority filter - 10; policy accept;"
    );
    let _ = writeln!(out, "\t\tiifname \"{v}\" ip saddr {} accept", a.guest_ip);
    let _ = writeln!(out, "\t\tiifname \"{v}\" drop");
    let _ = writeln!(
        out,
        "\t\toifname \"{v}\" ct state established,related accept"
    );
    let _ = writeln!(out, "\t\toifname \"{v}\" ct status dnat accept");
    let _ = writeln!(out, "\t\toifname \"{v}\" drop");
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain input {{");
    let _ = writeln!(
        out,
        "\t\ttype filter hook input priority filter - 10; policy accept;"
    );
    let _ = writeln!(
        out,
        "\t\tiifname \"{v}\" ct state established,related accept"
    );
    let _ = writeln!(out, "\t\tiifname \"{v}\" drop");
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain prerouting {{");
    let _ = writeln!(
        out,
        "\t\ttype nat hook prerouting priority dstnat; policy accept;"
    );
    for p in r.published {
        let proto = p.protocol.as_str();
        let _ = writeln!(
            out,
            "\t\tiifname != \"vmsan-h*\" fib daddr type local {proto} dport {} dnat to {}:{} comment \"{}\"",
            p.host_port,
            a.guest_ip,
            p.guest_port,
            publish_comment(p.protocol, p.host_port)
        );
    }
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain output {{");
    let _ = writeln!(
        out,
        "\t\ttype nat hook output priority -100; policy accept;"
    );
    for p in r.published {
        let _ = writeln!(
            out,
            "\t\tfib daddr type local {} dport {} dnat to {}:{}",
            p.protocol.as_str(),
            p.host_port,
            a.guest_ip,
            p.guest_port
        );
    }
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain postrouting {{");
    let _ = writeln!(
        out,
        "\t\ttype nat hook postrouting priority srcnat; policy accept;"
    );
    let _ = writeln!(
        out,
        "\t\tip saddr {} oifname \"{}\" masquerade",
        a.guest_net, r.uplink
    );
    let _ = writeln!(out, "\t\toifname \"{v}\" ip saddr 127.0.0.0/8 masquerade");
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "}}");
    let c = compat_comment(r.vm_id);
    for (fam, table, chain) in r.compat_chains {
        let _ = writeln!(
            out,
            "insert rule {fam} {table} {chain} oifname \"{v}\" accept comment \"{c}\""
        );
        let _ = writeln!(
            out,
            "insert rule {fam} {table} {chain} iifname \"{v}\" accept comment \"{c}\""
        );
    }
    out
}

/// Comment naming a published host port, used to detect conflicts between VMs.
pub fn publish_comment(proto: Protocol, host_port: u16) -> String {
    format!("vmsan-publish {} {host_port}", proto.as_str())
}

/// Deletes the VM's host table (if any) and the compat rules with the given handles.
pub fn render_host_delete(vm_id: &str, compat: &[CompatRule]) -> String {
    let t = host_table(vm_id);
    let mut out = String::new();
    let _ = writeln!(out, "table ip {t}");
    let _ = writeln!(out, "delete table ip {t}");
    for ((fam, table, chain), handle) in compat {
        let _ = writeln!(out, "delete rule {fam} {table} {chain} handle {handle}");
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

/// Whether a table exists in `ns`.
pub fn table_exists(ns: Option<&Path>, family: &str, table: &str) -> Result<bool> {
    let out = run(ns, &["list", "tables", family], "")?;
    Ok(out
        .lines()
        .any(|l| l.trim() == format!("table {family} {table}")))
}

/// The compat chains (see [`COMPAT_FORWARD_CHAINS`]) present in `ns`.
pub fn present_compat_chains(
    ns: Option<&Path>,
) -> Result<Vec<(&'static str, &'static str, &'static str)>> {
    let mut found = Vec::new();
    for c in COMPAT_FORWARD_CHAINS {
        if run(ns, &["list", "chain", c.0, c.1, c.2], "").is_ok() {
            found.push(c);
        }
    }
    Ok(found)
}

/// Handles of our compat rules for `vm_id` in `ns` (one `nft -a list chain` per compat
/// chain; an absent chain has none).
pub fn compat_rule_handles(ns: Option<&Path>, vm_id: &str) -> Result<Vec<CompatRule>> {
    let comment = compat_comment(vm_id);
    let mut out = Vec::new();
    for (fam, table, chain) in COMPAT_FORWARD_CHAINS {
        let Ok(listing) = run(ns, &["-a", "list", "chain", fam, table, chain], "") else {
            continue;
        };
        for h in parse_handles(&listing, &comment) {
            out.push(((fam.to_string(), table.to_string(), chain.to_string()), h));
        }
    }
    Ok(out)
}

/// Published host ports held by any VM's host table in `ns`, with the table's name (one
/// `nft list ruleset ip` call).
pub fn published_ports_in_use(ns: Option<&Path>) -> Result<Vec<(Protocol, u16, String)>> {
    Ok(HostFirewall::read(ns)?.published)
}

/// What setup needs to know about the host namespace's IPv4 ruleset.
#[derive(Debug, Clone, Default)]
pub struct HostFirewall {
    /// Published host ports held by VM tables: (protocol, port, table).
    pub published: Vec<(Protocol, u16, String)>,
    /// The compat chains present.
    pub compat_chains: Vec<(&'static str, &'static str, &'static str)>,
}

impl HostFirewall {
    /// One `nft list ruleset ip` in `ns`.
    pub fn read(ns: Option<&Path>) -> Result<Self> {
        let listing = run(ns, &["list", "ruleset", "ip"], "")?;
        Ok(Self::parse(&listing))
    }

    /// Parses the text listing of the `ip` family.
    pub fn parse(listing: &str) -> Self {
        let mut table = "";
        let mut compat_chains = Vec::new();
        for line in listing.lines() {
            let l = line.trim();
            if let Some(t) = l.strip_prefix("table ip ") {
                table = t.trim_end_matches('{').trim();
            } else if let Some(c) = l.strip_prefix("chain ") {
                let c = c.trim_end_matches('{').trim();
                for cc in COMPAT_FORWARD_CHAINS {
                    if cc.0 == "ip" && cc.1 == table && cc.2 == c && !compat_chains.contains(&cc) {
                        compat_chains.push(cc);
                    }
                }
            }
        }
        Self {
            published: parse_published(listing),
            compat_chains,
        }
    }
}

fn parse_published(listing: &str) -> Vec<(Protocol, u16, String)> {
    let mut used = Vec::new();
    let mut table = String::new();
    for line in listing.lines() {
        if let Some(t) = line.trim().strip_prefix("table ip ") {
            table = t.trim_end_matches('{').trim().to_string();
            continue;
        }
        if !table.starts_with("vmsan_") {
            continue;
        }
        let Some((_, rest)) = line.split_once("comment \"vmsan-publish ") else {
            continue;
        };
        let mut it = rest.trim_end_matches('"').split(' ');
        let proto = match it.next() {
            Some("tcp") => Protocol::Tcp,
            Some("udp") => Protocol::Udp,
            _ => continue,
        };
        if let Some(Ok(port)) = it.next().map(|p| p.trim_end_matches('"').parse::<u16>()) {
            used.push((proto, port, table.clone()));
        }
    }
    used
}
