//! nftables rulesets: built once as a small description ([`Ruleset`]) that is applied over
//! netlink as one atomic batch ([`Ruleset::apply`], no `nft` process), and that can also be
//! printed in nft's syntax ([`Ruleset::to_nft`]) for review, golden tests and the benchmark's
//! reference script. Both come from the same description, and a privileged test checks that
//! the kernel holds the same ruleset either way.
//!
//! # VM namespace: table `inet vmsan`
//!
//! Base chains hook at `filter - 10`. The forward chain sends **every** packet that enters
//! from the TAP to `guest_egress` before anything can accept it, so no guest packet skips the
//! policy (the Node.js vmsan accepted TAP-to-veth traffic before its policy rules, so a
//! guest's TCP went out whatever the policy said). `guest_egress`, in order:
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
//! See [`host_base`]: per-VM facts are set/map elements, so setup and teardown add
//! and remove elements only, and a packet's cost does not grow with the number of VMs.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::addr::{HOST_VETH_PREFIX, SlotAddrs, TAP_NAME, VM_VETH_NAME, slot_range};
use crate::error::{NetError, Result};
use crate::netns;
use crate::nfnl::{self, Batch, Elem, Expr, Family, Hook, SetDef, Socket};
use crate::policy::{Cidr, Policy, Protocol, PublishedPort};

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

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const CT_INVALID: u32 = 1;
const CT_ESTABLISHED: u32 = 2;
const CT_RELATED: u32 = 4;
const CT_NEW: u32 = 8;
const IPS_DST_NAT: u32 = 0x20;
const RTN_LOCAL: u32 = 2;
/// nft's datatype ids (set key types, used when nft lists the ruleset).
const TYPE_IPADDR: u32 = 7;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_IFNAME: u32 = 41;
const TYPE_BITS: u32 = 6;
/// nft's set userdata: key byte order big-endian (`NFTNL_UDATA_SET_KEYBYTEORDER`).
const UDATA_KEY_BIG_ENDIAN: [u8; 6] = [0, 4, 2, 0, 0, 0];

fn proto_name(p: u8) -> &'static str {
    match p {
        IPPROTO_ICMP => "icmp",
        IPPROTO_TCP => "tcp",
        _ => "udp",
    }
}

fn proto_num(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
    }
}

/// An IPv4 network as written in a rule (`8.8.8.8`, `45.90.28.0/24`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Net {
    text: String,
    ip: Ipv4Addr,
    prefix: u8,
}

impl Net {
    fn parse(s: &str) -> Self {
        let (ip, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, p.parse().unwrap_or(32)),
            None => (s, 32),
        };
        Self {
            text: s.to_string(),
            ip: ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
            prefix,
        }
    }

    fn of(ip: Ipv4Addr, prefix: u8, text: String) -> Self {
        Self { text, ip, prefix }
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix.min(32)))
        }
    }

    /// First and last address.
    fn range(&self) -> (u32, u32) {
        let lo = u32::from(self.ip) & self.mask();
        (lo, lo | !self.mask())
    }
}

/// Which interface an `iifname`/`oifname` match looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    In,
    Out,
}

/// One match of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Match {
    /// `meta nfproto ipv6`
    NfprotoIpv6,
    /// `iif "lo"`
    IifLo,
    /// `ct state <bits>`
    CtState(u32),
    /// `ct status dnat`
    CtStatusDnat,
    /// `iifname/oifname [!=] "name"` (a trailing `*` matches a prefix)
    IfName { dir: Dir, neg: bool, name: String },
    /// `ip saddr/daddr [!=] net`
    Addr { dst: bool, neg: bool, net: Net },
    /// `ip saddr/daddr { nets }` (an anonymous interval set)
    AddrIn { dst: bool, nets: Vec<Net> },
    /// `ip saddr/daddr @set`
    AddrInSet { dst: bool, set: &'static str },
    /// `meta l4proto p`
    L4(u8),
    /// `meta l4proto { p, q }`
    L4In(Vec<u8>),
    /// `th dport { ports }` (a single port is `th dport p`)
    ThDport(Vec<u16>),
    /// `tcp/udp dport p`
    ProtoDport(u8, u16),
    /// `iifname . ip saddr @set`
    IifSaddrInSet(&'static str),
    /// `fib daddr type local`
    FibDaddrLocal,
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Accept,
    Drop,
    Jump(&'static str),
    /// `dnat ip to meta l4proto . th dport map @map`
    DnatMap(&'static str),
    Masquerade,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    matches: Vec<Match>,
    action: Action,
    comment: Option<&'static str>,
}

fn rule(matches: Vec<Match>, action: Action) -> Rule {
    Rule {
        matches,
        action,
        comment: None,
    }
}

fn ct_state_text(bits: u32) -> String {
    let mut v = Vec::new();
    for (b, n) in [
        (CT_INVALID, "invalid"),
        (CT_ESTABLISHED, "established"),
        (CT_RELATED, "related"),
        (CT_NEW, "new"),
    ] {
        if bits & b != 0 {
            v.push(n);
        }
    }
    v.join(",")
}

impl Match {
    fn text(&self) -> String {
        let addr = |dst: bool| if dst { "ip daddr" } else { "ip saddr" };
        match self {
            Self::NfprotoIpv6 => "meta nfproto ipv6".into(),
            Self::IifLo => "iif \"lo\"".into(),
            Self::CtState(b) => format!("ct state {}", ct_state_text(*b)),
            Self::CtStatusDnat => "ct status dnat".into(),
            Self::IfName { dir, neg, name } => format!(
                "{} {}\"{name}\"",
                if *dir == Dir::In {
                    "iifname"
                } else {
                    "oifname"
                },
                if *neg { "!= " } else { "" }
            ),
            Self::Addr { dst, neg, net } => {
                format!(
                    "{} {}{}",
                    addr(*dst),
                    if *neg { "!= " } else { "" },
                    net.text
                )
            }
            Self::AddrIn { dst, nets } => format!(
                "{} {{ {} }}",
                addr(*dst),
                nets.iter()
                    .map(|n| n.text.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::AddrInSet { dst, set } => format!("{} @{set}", addr(*dst)),
            Self::L4(p) => format!("meta l4proto {}", proto_name(*p)),
            Self::L4In(ps) => format!(
                "meta l4proto {{ {} }}",
                ps.iter()
                    .map(|p| proto_name(*p))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::ThDport(ports) if ports.len() == 1 => format!("th dport {}", ports[0]),
            Self::ThDport(ports) => format!(
                "th dport {{ {} }}",
                ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::ProtoDport(p, port) => format!("{} dport {port}", proto_name(*p)),
            Self::IifSaddrInSet(s) => format!("iifname . ip saddr @{s}"),
            Self::FibDaddrLocal => "fib daddr type local".into(),
        }
    }

    fn is_ip_header(&self) -> bool {
        matches!(
            self,
            Self::Addr { .. } | Self::AddrIn { .. } | Self::AddrInSet { .. }
        )
    }
}

impl Action {
    fn text(&self) -> String {
        match self {
            Self::Accept => "accept".into(),
            Self::Drop => "drop".into(),
            Self::Jump(c) => format!("jump {c}"),
            Self::DnatMap(m) => format!("dnat ip to meta l4proto . th dport map @{m}"),
            Self::Masquerade => "masquerade".into(),
        }
    }
}

impl Rule {
    fn text(&self) -> String {
        let mut parts: Vec<String> = self.matches.iter().map(Match::text).collect();
        parts.push(self.action.text());
        if let Some(c) = self.comment {
            parts.push(format!("comment \"{c}\""));
        }
        parts.join(" ")
    }
}

/// A named set or map of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetKind {
    /// `type ipv4_addr; flags timeout`
    Ipv4Timeout,
    /// `type ifname . ipv4_addr`
    IfnameIpv4,
    /// `type inet_proto . inet_service : ipv4_addr . inet_service`
    ProtoPortToAddrPort,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SetDecl {
    name: &'static str,
    kind: SetKind,
}

/// A base chain's hook, with its priority as nft writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BaseHook {
    hook: Hook,
    hook_name: &'static str,
    prio_text: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Chain {
    name: &'static str,
    base: Option<BaseHook>,
    rules: Vec<Rule>,
}

/// A set element.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ElemV {
    /// an address, optionally with a timeout in seconds
    Ip(Ipv4Addr, Option<u32>),
    /// `"ifname" . address`
    IfIp(String, Ipv4Addr),
    /// `proto . port : address . port`
    Published(Protocol, u16, Ipv4Addr, u16),
    /// `proto . port` (the key of a published-port element)
    PublishedKey(Protocol, u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElemOp {
    Add,
    Create,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Cmd {
    /// `table f t` (create if missing)
    Table(Family, &'static str),
    /// `delete table f t`
    DeleteTable(Family, &'static str),
    /// `table f t { sets; chains }`
    TableBlock {
        family: Family,
        name: &'static str,
        sets: Vec<SetDecl>,
        chains: Vec<Chain>,
    },
    /// `flush chain f t c`
    FlushChain(Family, &'static str, &'static str),
    /// `flush set f t s`
    FlushSet(Family, &'static str, &'static str),
    /// `add|create|delete element f t s { e }`
    Element {
        op: ElemOp,
        family: Family,
        table: &'static str,
        set: &'static str,
        elem: ElemV,
    },
    /// `insert rule f t c <rule>` (the rule goes first)
    InsertRule {
        family: Family,
        table: String,
        chain: String,
        rule: Rule,
    },
    /// `delete rule f t c handle h`
    DeleteRule {
        family: Family,
        table: String,
        chain: String,
        handle: u64,
    },
}

fn family_of(s: &str) -> Family {
    if s == "inet" {
        Family::Inet
    } else {
        Family::Ip
    }
}

/// A list of nftables commands applied as one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    cmds: Vec<Cmd>,
}

fn elem_text(e: &ElemV) -> String {
    match e {
        ElemV::Ip(ip, None) => ip.to_string(),
        ElemV::Ip(ip, Some(t)) => format!("{ip} timeout {t}s"),
        ElemV::IfIp(d, ip) => format!("\"{d}\" . {ip}"),
        ElemV::Published(p, hp, ip, gp) => format!("{} . {hp} : {ip} . {gp}", p.as_str()),
        ElemV::PublishedKey(p, hp) => format!("{} . {hp}", p.as_str()),
    }
}

fn pad4(v: &mut Vec<u8>) {
    v.resize((v.len() + 3) & !3, 0);
}

fn ifname_bytes(name: &str) -> Vec<u8> {
    let mut v = vec![0u8; libc::IFNAMSIZ];
    let n = name.len().min(libc::IFNAMSIZ - 1);
    v[..n].copy_from_slice(&name.as_bytes()[..n]);
    v
}

fn elem_encode(e: &ElemV) -> Elem {
    match e {
        ElemV::Ip(ip, t) => Elem {
            key: ip.octets().to_vec(),
            data: None,
            flags: 0,
            timeout_ms: t.map(|s| u64::from(s) * 1000),
        },
        ElemV::IfIp(d, ip) => {
            let mut k = ifname_bytes(d);
            k.extend_from_slice(&ip.octets());
            Elem::key(k)
        }
        ElemV::Published(p, hp, ip, gp) => {
            let mut e = Elem::key(published_key(*p, *hp));
            let mut d = ip.octets().to_vec();
            d.extend_from_slice(&gp.to_be_bytes());
            pad4(&mut d);
            e.data = Some(d);
            e
        }
        ElemV::PublishedKey(p, hp) => Elem::key(published_key(*p, *hp)),
    }
}

fn published_key(p: Protocol, port: u16) -> Vec<u8> {
    let mut k = vec![proto_num(p)];
    pad4(&mut k);
    k.extend_from_slice(&port.to_be_bytes());
    pad4(&mut k);
    k
}

fn set_def(kind: SetKind, name: &str, id: u32) -> SetDef {
    match kind {
        SetKind::Ipv4Timeout => SetDef {
            name: name.to_string(),
            flags: nfnl::NFT_SET_TIMEOUT,
            key_type: TYPE_IPADDR,
            key_len: 4,
            data: None,
            id,
            userdata: UDATA_KEY_BIG_ENDIAN.to_vec(),
        },
        SetKind::IfnameIpv4 => SetDef {
            name: name.to_string(),
            flags: 0,
            key_type: (TYPE_IFNAME << TYPE_BITS) | TYPE_IPADDR,
            key_len: 20,
            data: None,
            id,
            userdata: Vec::new(),
        },
        SetKind::ProtoPortToAddrPort => SetDef {
            name: name.to_string(),
            flags: nfnl::NFT_SET_MAP,
            key_type: (TYPE_INET_PROTOCOL << TYPE_BITS) | TYPE_INET_SERVICE,
            key_len: 8,
            data: Some(((TYPE_IPADDR << TYPE_BITS) | TYPE_INET_SERVICE, 8)),
            id,
            userdata: Vec::new(),
        },
    }
}

/// The loopback device's index, the same in every namespace (`LOOPBACK_IFINDEX`).
const LOOPBACK_IFINDEX: u32 = 1;

fn load_reg(dreg: u32) -> impl Fn(u32) -> Expr {
    move |key| Expr::Meta { key, dreg }
}

fn cmp(op: u32, data: Vec<u8>) -> Expr {
    Expr::Cmp {
        op,
        sreg: nfnl::REG_1,
        data,
    }
}

fn bits_set(load: Expr, mask: u32) -> [Expr; 3] {
    [
        load,
        Expr::Bitwise {
            reg: nfnl::REG_1,
            mask: mask.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        cmp(nfnl::CMP_NEQ, vec![0; 4]),
    ]
}

/// Adds an anonymous constant set with `elems` to the batch; returns the lookup of `sreg`.
fn anon_set(b: &mut Batch, f: Family, table: &str, def: SetDef, elems: &[Elem]) -> Expr {
    let id = def.id;
    b.add_set(f, table, &def);
    b.add_elems(f, table, &def.name, Some(id), elems, false);
    Expr::Lookup {
        set: def.name,
        set_id: Some(id),
        sreg: nfnl::REG_1,
        dreg: None,
    }
}

fn anon_def(b: &mut Batch, flags: u32, key_type: u32, key_len: u32) -> SetDef {
    SetDef {
        name: "__set%d".to_string(),
        flags: nfnl::NFT_SET_ANONYMOUS | nfnl::NFT_SET_CONSTANT | flags,
        key_type,
        key_len,
        data: None,
        id: b.new_set_id(),
        userdata: if key_len > 1 {
            UDATA_KEY_BIG_ENDIAN.to_vec()
        } else {
            Vec::new()
        },
    }
}

/// Interval elements of `nets`, merged where they touch (start, then end = last + 1 unless
/// the range reaches the top of the address space).
fn interval_elems(nets: &[Net]) -> Vec<Elem> {
    let mut ranges: Vec<(u32, u32)> = nets.iter().map(Net::range).collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::new();
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if u64::from(lo) <= u64::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    let mut out = Vec::new();
    for (lo, hi) in merged {
        out.push(Elem::key(lo.to_be_bytes().to_vec()));
        if let Some(end) = hi.checked_add(1) {
            let mut e = Elem::key(end.to_be_bytes().to_vec());
            e.flags = nfnl::NFT_SET_ELEM_INTERVAL_END;
            out.push(e);
        }
    }
    out
}

fn encode_rule(b: &mut Batch, f: Family, table: &str, r: &Rule) -> Vec<Expr> {
    let mut out = Vec::new();
    let meta = load_reg(nfnl::REG_1);
    let mut nfproto_done = f != Family::Inet;
    for m in &r.matches {
        if m.is_ip_header() && !nfproto_done {
            out.push(meta(nfnl::META_NFPROTO));
            out.push(cmp(nfnl::CMP_EQ, vec![NFPROTO_IPV4]));
            nfproto_done = true;
        }
        let addr_load = |dst: bool| Expr::Payload {
            base: nfnl::PAYLOAD_NETWORK,
            offset: if dst { 16 } else { 12 },
            len: 4,
            dreg: nfnl::REG_1,
        };
        let dport = |dreg| Expr::Payload {
            base: nfnl::PAYLOAD_TRANSPORT,
            offset: 2,
            len: 2,
            dreg,
        };
        match m {
            Match::NfprotoIpv6 => {
                out.push(meta(nfnl::META_NFPROTO));
                out.push(cmp(nfnl::CMP_EQ, vec![NFPROTO_IPV6]));
            }
            Match::IifLo => {
                out.push(meta(nfnl::META_IIF));
                out.push(cmp(nfnl::CMP_EQ, LOOPBACK_IFINDEX.to_ne_bytes().to_vec()));
            }
            Match::CtState(bits) => out.extend(bits_set(
                Expr::Ct {
                    key: nfnl::CT_STATE,
                    dreg: nfnl::REG_1,
                },
                *bits,
            )),
            Match::CtStatusDnat => out.extend(bits_set(
                Expr::Ct {
                    key: nfnl::CT_STATUS,
                    dreg: nfnl::REG_1,
                },
                IPS_DST_NAT,
            )),
            Match::IfName { dir, neg, name } => {
                out.push(meta(if *dir == Dir::In {
                    nfnl::META_IIFNAME
                } else {
                    nfnl::META_OIFNAME
                }));
                let data = match name.strip_suffix('*') {
                    Some(prefix) => prefix.as_bytes().to_vec(),
                    None => ifname_bytes(name),
                };
                out.push(cmp(if *neg { nfnl::CMP_NEQ } else { nfnl::CMP_EQ }, data));
            }
            Match::Addr { dst, neg, net } => {
                out.push(addr_load(*dst));
                if net.prefix < 32 {
                    out.push(Expr::Bitwise {
                        reg: nfnl::REG_1,
                        mask: net.mask().to_be_bytes().to_vec(),
                        xor: vec![0; 4],
                    });
                }
                let v = u32::from(net.ip) & net.mask();
                out.push(cmp(
                    if *neg { nfnl::CMP_NEQ } else { nfnl::CMP_EQ },
                    v.to_be_bytes().to_vec(),
                ));
            }
            Match::AddrIn { dst, nets } => {
                out.push(addr_load(*dst));
                let def = anon_def(b, nfnl::NFT_SET_INTERVAL, TYPE_IPADDR, 4);
                out.push(anon_set(b, f, table, def, &interval_elems(nets)));
            }
            Match::AddrInSet { dst, set } => {
                out.push(addr_load(*dst));
                out.push(Expr::Lookup {
                    set: (*set).to_string(),
                    set_id: None,
                    sreg: nfnl::REG_1,
                    dreg: None,
                });
            }
            Match::L4(p) => {
                out.push(meta(nfnl::META_L4PROTO));
                out.push(cmp(nfnl::CMP_EQ, vec![*p]));
            }
            Match::L4In(ps) => {
                out.push(meta(nfnl::META_L4PROTO));
                let def = anon_def(b, 0, TYPE_INET_PROTOCOL, 1);
                let elems: Vec<Elem> = ps.iter().map(|p| Elem::key(vec![*p])).collect();
                out.push(anon_set(b, f, table, def, &elems));
            }
            Match::ThDport(ports) => {
                out.push(dport(nfnl::REG_1));
                if let [p] = ports.as_slice() {
                    out.push(cmp(nfnl::CMP_EQ, p.to_be_bytes().to_vec()));
                } else {
                    let def = anon_def(b, 0, TYPE_INET_SERVICE, 2);
                    let elems: Vec<Elem> = ports
                        .iter()
                        .map(|p| Elem::key(p.to_be_bytes().to_vec()))
                        .collect();
                    out.push(anon_set(b, f, table, def, &elems));
                }
            }
            Match::ProtoDport(p, port) => {
                out.push(meta(nfnl::META_L4PROTO));
                out.push(cmp(nfnl::CMP_EQ, vec![*p]));
                out.push(dport(nfnl::REG_1));
                out.push(cmp(nfnl::CMP_EQ, port.to_be_bytes().to_vec()));
            }
            Match::IifSaddrInSet(set) => {
                out.push(meta(nfnl::META_IIFNAME));
                out.push(Expr::Payload {
                    base: nfnl::PAYLOAD_NETWORK,
                    offset: 12,
                    len: 4,
                    dreg: nfnl::REG_2,
                });
                out.push(Expr::Lookup {
                    set: (*set).to_string(),
                    set_id: None,
                    sreg: nfnl::REG_1,
                    dreg: None,
                });
            }
            Match::FibDaddrLocal => {
                out.push(Expr::Fib {
                    flags: nfnl::FIB_F_DADDR,
                    result: nfnl::FIB_RESULT_ADDRTYPE,
                    dreg: nfnl::REG_1,
                });
                out.push(cmp(nfnl::CMP_EQ, RTN_LOCAL.to_ne_bytes().to_vec()));
            }
        }
    }
    let verdict = |code| Expr::Verdict { code, chain: None };
    match &r.action {
        Action::Accept => out.push(verdict(nfnl::NF_ACCEPT)),
        Action::Drop => out.push(verdict(nfnl::NF_DROP)),
        Action::Jump(c) => out.push(Expr::Verdict {
            code: nfnl::NFT_JUMP,
            chain: Some((*c).to_string()),
        }),
        Action::DnatMap(map) => {
            out.push(meta(nfnl::META_L4PROTO));
            out.push(Expr::Payload {
                base: nfnl::PAYLOAD_TRANSPORT,
                offset: 2,
                len: 2,
                dreg: nfnl::REG32_01,
            });
            out.push(Expr::Lookup {
                set: (*map).to_string(),
                set_id: None,
                sreg: nfnl::REG_1,
                dreg: Some(nfnl::REG_1),
            });
            out.push(Expr::Nat {
                kind: nfnl::NAT_DNAT,
                addr_reg: nfnl::REG_1,
                proto_reg: nfnl::REG32_01,
            });
        }
        Action::Masquerade => out.push(Expr::Masq),
    }
    out
}

impl Ruleset {
    fn push(&mut self, c: Cmd) {
        self.cmds.push(c);
    }

    /// Appends `other`'s commands.
    pub fn extend(&mut self, other: Self) {
        self.cmds.extend(other.cmds);
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    /// The same commands in nft's syntax (`nft -f` input).
    pub fn to_nft(&self) -> String {
        let mut out = String::new();
        for c in &self.cmds {
            match c {
                Cmd::Table(f, t) => {
                    let _ = writeln!(out, "table {} {t}", f.as_str());
                }
                Cmd::DeleteTable(f, t) => {
                    let _ = writeln!(out, "delete table {} {t}", f.as_str());
                }
                Cmd::TableBlock {
                    family,
                    name,
                    sets,
                    chains,
                } => {
                    let _ = writeln!(out, "table {} {name} {{", family.as_str());
                    for s in sets {
                        let (kw, ty, flags) = match s.kind {
                            SetKind::Ipv4Timeout => ("set", "ipv4_addr", Some("timeout")),
                            SetKind::IfnameIpv4 => ("set", "ifname . ipv4_addr", None),
                            SetKind::ProtoPortToAddrPort => (
                                "map",
                                "inet_proto . inet_service : ipv4_addr . inet_service",
                                None,
                            ),
                        };
                        let _ = writeln!(out, "\t{kw} {} {{", s.name);
                        let _ = writeln!(out, "\t\ttype {ty}");
                        if let Some(fl) = flags {
                            let _ = writeln!(out, "\t\tflags {fl}");
                        }
                        let _ = writeln!(out, "\t}}");
                    }
                    for ch in chains {
                        let _ = writeln!(out, "\tchain {} {{", ch.name);
                        if let Some(b) = ch.base {
                            let _ = writeln!(
                                out,
                                "\t\ttype {} hook {} priority {}; policy {};",
                                b.hook.kind,
                                b.hook_name,
                                b.prio_text,
                                if b.hook.policy == nfnl::NF_DROP {
                                    "drop"
                                } else {
                                    "accept"
                                }
                            );
                        }
                        for r in &ch.rules {
                            let _ = writeln!(out, "\t\t{}", r.text());
                        }
                        let _ = writeln!(out, "\t}}");
                    }
                    let _ = writeln!(out, "}}");
                }
                Cmd::FlushChain(f, t, c) => {
                    let _ = writeln!(out, "flush chain {} {t} {c}", f.as_str());
                }
                Cmd::FlushSet(f, t, s) => {
                    let _ = writeln!(out, "flush set {} {t} {s}", f.as_str());
                }
                Cmd::Element {
                    op,
                    family,
                    table,
                    set,
                    elem,
                } => {
                    let verb = match op {
                        ElemOp::Add => "add",
                        ElemOp::Create => "create",
                        ElemOp::Delete => "delete",
                    };
                    let _ = writeln!(
                        out,
                        "{verb} element {} {table} {set} {{ {} }}",
                        family.as_str(),
                        elem_text(elem)
                    );
                }
                Cmd::InsertRule {
                    family,
                    table,
                    chain,
                    rule,
                } => {
                    let _ = writeln!(
                        out,
                        "insert rule {} {table} {chain} {}",
                        family.as_str(),
                        rule.text()
                    );
                }
                Cmd::DeleteRule {
                    family,
                    table,
                    chain,
                    handle,
                } => {
                    let _ = writeln!(
                        out,
                        "delete rule {} {table} {chain} handle {handle}",
                        family.as_str()
                    );
                }
            }
        }
        out
    }

    /// The netlink batch of these commands.
    fn batch(&self) -> Batch {
        let mut b = Batch::new();
        for c in &self.cmds {
            match c {
                Cmd::Table(f, t) => b.add_table(*f, t),
                Cmd::DeleteTable(f, t) => b.del_table(*f, t),
                Cmd::TableBlock {
                    family,
                    name,
                    sets,
                    chains,
                } => {
                    b.add_table(*family, name);
                    for s in sets {
                        let id = b.new_set_id();
                        b.add_set(*family, name, &set_def(s.kind, s.name, id));
                    }
                    // Every chain exists before any rule can jump to it.
                    for ch in chains {
                        b.add_chain(*family, name, ch.name, ch.base.map(|h| h.hook));
                    }
                    for ch in chains {
                        for r in &ch.rules {
                            let exprs = encode_rule(&mut b, *family, name, r);
                            b.add_rule(*family, name, ch.name, &exprs, r.comment, true);
                        }
                    }
                }
                Cmd::FlushChain(f, t, ch) => b.flush_chain(*f, t, ch),
                Cmd::FlushSet(f, t, s) => b.del_elems(*f, t, s, &[]),
                Cmd::Element {
                    op,
                    family,
                    table,
                    set,
                    elem,
                } => {
                    let e = [elem_encode(elem)];
                    match op {
                        ElemOp::Add => b.add_elems(*family, table, set, None, &e, false),
                        ElemOp::Create => b.add_elems(*family, table, set, None, &e, true),
                        ElemOp::Delete => b.del_elems(*family, table, set, &e),
                    }
                }
                Cmd::InsertRule {
                    family,
                    table,
                    chain,
                    rule,
                } => {
                    let exprs = encode_rule(&mut b, *family, table, rule);
                    b.add_rule(*family, table, chain, &exprs, rule.comment, false);
                }
                Cmd::DeleteRule {
                    family,
                    table,
                    chain,
                    handle,
                } => b.del_rule(*family, table, chain, *handle),
            }
        }
        b
    }

    /// Applies the commands as one transaction on `sock` (in the socket's namespace).
    pub(crate) fn apply_on(&self, sock: &mut Socket) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        sock.apply(self.batch())
    }

    /// Applies the commands as one netlink transaction in `ns` (the current namespace when
    /// `None`): all of them take effect at once, or none does.
    pub fn apply(&self, ns: Option<&Path>) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        netns::run_in_opt(ns, || {
            let mut sock = Socket::open()?;
            self.apply_on(&mut sock)
        })
        .map_err(|e| in_ns(e, ns))
    }
}

/// Names the namespace in an nftables error.
pub(crate) fn in_ns(e: NetError, ns: Option<&Path>) -> NetError {
    match e {
        NetError::Nft { detail, .. } => NetError::Nft {
            netns: ns.map_or_else(
                || "the current namespace".to_string(),
                |p| p.display().to_string(),
            ),
            detail,
        },
        e => e,
    }
}

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
    /// Destinations `allow-all` and addresses learnt from DNS answers may not reach; an
    /// explicitly allowed CIDR still may. From [`lan_block`]; empty = `--allow-lan`.
    pub lan: &'a [Cidr],
}

fn ifname(dir: Dir, neg: bool, name: &str) -> Match {
    Match::IfName {
        dir,
        neg,
        name: name.to_string(),
    }
}

fn addr(dst: bool, neg: bool, ip: Ipv4Addr) -> Match {
    Match::Addr {
        dst,
        neg,
        net: Net::of(ip, 32, ip.to_string()),
    }
}

fn tcp_udp() -> Match {
    Match::L4In(vec![IPPROTO_TCP, IPPROTO_UDP])
}

fn egress_chain(r: &VmRules<'_>) -> Chain {
    let g = r.addrs.guest_ip;
    let blocked = std::iter::once(slot_range().to_string())
        .chain(ALWAYS_BLOCKED.iter().map(|s| (*s).to_string()))
        .map(|s| Net::parse(&s))
        .collect();
    let mut rules = vec![
        rule(vec![ifname(Dir::Out, true, VM_VETH_NAME)], Action::Drop),
        rule(vec![addr(false, true, g)], Action::Drop),
        rule(
            vec![Match::CtState(CT_ESTABLISHED | CT_RELATED)],
            Action::Accept,
        ),
        rule(
            vec![Match::AddrIn {
                dst: true,
                nets: blocked,
            }],
            Action::Drop,
        ),
        rule(vec![Match::L4(IPPROTO_ICMP)], Action::Drop),
        rule(vec![tcp_udp(), Match::ThDport(vec![53, 853])], Action::Drop),
        rule(
            vec![
                Match::AddrIn {
                    dst: true,
                    nets: KNOWN_DOH.iter().map(|s| Net::parse(s)).collect(),
                },
                tcp_udp(),
                Match::ThDport(vec![443]),
            ],
            Action::Drop,
        ),
    ];
    if !r.allow_udp {
        rules.push(rule(vec![Match::L4(IPPROTO_UDP)], Action::Drop));
    }
    rules.push(rule(vec![tcp_udp()], Action::Jump("egress_policy")));
    rules.push(rule(vec![], Action::Drop));
    Chain {
        name: "guest_egress",
        base: None,
        rules,
    }
}

fn policy_chain(policy: &Policy, lan: &[Cidr]) -> Chain {
    let cidr = |c: &Cidr| Net::of(c.addr(), c.prefix(), c.to_string());
    let lan_drop = || {
        (!lan.is_empty()).then(|| {
            rule(
                vec![Match::AddrIn {
                    dst: true,
                    nets: lan.iter().map(cidr).collect(),
                }],
                Action::Drop,
            )
        })
    };
    let mut rules = Vec::new();
    match policy {
        Policy::AllowAll => {
            rules.extend(lan_drop());
            rules.push(rule(vec![], Action::Accept));
        }
        Policy::DenyAll => {}
        Policy::Custom(c) => {
            let ports: Vec<Match> = if c.ports.is_empty() {
                Vec::new()
            } else {
                let mut p = c.ports.clone();
                p.sort_unstable();
                p.dedup();
                vec![Match::ThDport(p)]
            };
            for d in &c.denied_cidrs {
                rules.push(rule(
                    vec![Match::Addr {
                        dst: true,
                        neg: false,
                        net: cidr(d),
                    }],
                    Action::Drop,
                ));
            }
            for a in &c.allowed_cidrs {
                let mut m = vec![Match::Addr {
                    dst: true,
                    neg: false,
                    net: cidr(a),
                }];
                m.extend(ports.iter().cloned());
                rules.push(rule(m, Action::Accept));
            }
            if !c.allowed_domains.is_empty() {
                // A name may resolve to an address next to the host (DNS rebinding): only
                // an explicitly allowed CIDR or --allow-lan lets the guest there.
                rules.extend(lan_drop());
                let mut m = vec![Match::AddrInSet {
                    dst: true,
                    set: DNS_SET,
                }];
                m.extend(ports.iter().cloned());
                rules.push(rule(m, Action::Accept));
            }
        }
    }
    Chain {
        name: "egress_policy",
        base: None,
        rules,
    }
}

fn filter_hook(hook: u32, hook_name: &'static str, policy: i32) -> Option<BaseHook> {
    Some(BaseHook {
        hook: Hook {
            kind: "filter",
            hook,
            priority: -10,
            policy,
        },
        hook_name,
        prio_text: "filter - 10",
    })
}

/// The whole VM-namespace table, replacing any previous one, as one transaction.
pub fn vm_table(r: &VmRules<'_>) -> Ruleset {
    let a = r.addrs;
    let v6 = || rule(vec![Match::NfprotoIpv6], Action::Drop);
    let established = || Match::CtState(CT_ESTABLISHED | CT_RELATED);
    let input = Chain {
        name: "input",
        base: filter_hook(nfnl::HOOK_INPUT, "input", nfnl::NF_DROP),
        rules: vec![
            v6(),
            rule(vec![Match::IifLo], Action::Accept),
            rule(vec![established()], Action::Accept),
            rule(
                vec![
                    ifname(Dir::In, false, TAP_NAME),
                    addr(false, false, a.guest_ip),
                    addr(true, false, a.tap_ip),
                    tcp_udp(),
                    Match::ThDport(vec![53]),
                ],
                Action::Accept,
            ),
        ],
    };
    let mut fwd = vec![
        v6(),
        rule(
            vec![ifname(Dir::In, false, TAP_NAME)],
            Action::Jump("guest_egress"),
        ),
        rule(vec![Match::CtState(CT_INVALID)], Action::Drop),
        rule(
            vec![
                ifname(Dir::In, false, VM_VETH_NAME),
                ifname(Dir::Out, false, TAP_NAME),
                established(),
            ],
            Action::Accept,
        ),
    ];
    for p in r.published {
        fwd.push(rule(
            vec![
                ifname(Dir::In, false, VM_VETH_NAME),
                ifname(Dir::Out, false, TAP_NAME),
                addr(true, false, a.guest_ip),
                Match::ProtoDport(proto_num(p.protocol), p.guest_port),
                Match::CtState(CT_NEW),
            ],
            Action::Accept,
        ));
    }
    let forward = Chain {
        name: "forward",
        base: filter_hook(nfnl::HOOK_FORWARD, "forward", nfnl::NF_DROP),
        rules: fwd,
    };
    let output = Chain {
        name: "output",
        base: filter_hook(nfnl::HOOK_OUTPUT, "output", nfnl::NF_ACCEPT),
        rules: vec![v6()],
    };
    let mut rs = Ruleset::default();
    rs.push(Cmd::Table(Family::Inet, VM_TABLE));
    rs.push(Cmd::DeleteTable(Family::Inet, VM_TABLE));
    rs.push(Cmd::TableBlock {
        family: Family::Inet,
        name: VM_TABLE,
        sets: vec![SetDecl {
            name: DNS_SET,
            kind: SetKind::Ipv4Timeout,
        }],
        chains: vec![
            input,
            forward,
            output,
            egress_chain(r),
            policy_chain(r.policy, r.lan),
        ],
    });
    rs
}

/// A policy change: the egress and policy chains are flushed and refilled in one transaction
/// (no window); the DNS-learnt set is emptied when `flush_dns` (the domain list changed).
pub fn policy_change(r: &VmRules<'_>, flush_dns: bool) -> Ruleset {
    let mut rs = Ruleset::default();
    rs.push(Cmd::FlushChain(Family::Inet, VM_TABLE, "guest_egress"));
    rs.push(Cmd::FlushChain(Family::Inet, VM_TABLE, "egress_policy"));
    if flush_dns {
        rs.push(Cmd::FlushSet(Family::Inet, VM_TABLE, DNS_SET));
    }
    rs.push(Cmd::TableBlock {
        family: Family::Inet,
        name: VM_TABLE,
        sets: vec![],
        chains: vec![egress_chain(r), policy_chain(r.policy, r.lan)],
    });
    rs
}

/// Adds addresses learnt from DNS answers to the VM's set, (re)setting their timeout to the
/// record's TTL (clamped to 1 s ..= 1 day).
pub fn dns_update(entries: &[(Ipv4Addr, u32)]) -> Ruleset {
    let mut best: std::collections::BTreeMap<Ipv4Addr, u32> = std::collections::BTreeMap::new();
    for &(ip, ttl) in entries {
        let t = ttl.clamp(1, 86_400);
        let e = best.entry(ip).or_insert(t);
        *e = (*e).max(t);
    }
    let mut rs = Ruleset::default();
    let el = |op, elem| Cmd::Element {
        op,
        family: Family::Inet,
        table: VM_TABLE,
        set: DNS_SET,
        elem,
    };
    for (ip, ttl) in best {
        rs.push(el(ElemOp::Add, ElemV::Ip(ip, None)));
        rs.push(el(ElemOp::Delete, ElemV::Ip(ip, None)));
        rs.push(el(ElemOp::Add, ElemV::Ip(ip, Some(ttl))));
    }
    rs
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

fn compat_rules(compat_chains: &[(&str, &str, &str)]) -> Vec<Cmd> {
    let mut out = Vec::new();
    let veths = format!("{HOST_VETH_PREFIX}*");
    for (fam, table, chain) in compat_chains {
        for dir in [Dir::Out, Dir::In] {
            out.push(Cmd::InsertRule {
                family: family_of(fam),
                table: (*table).to_string(),
                chain: (*chain).to_string(),
                rule: Rule {
                    matches: vec![ifname(dir, false, &veths)],
                    action: Action::Accept,
                    comment: Some(COMPAT_COMMENT),
                },
            });
        }
    }
    out
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
pub fn host_base(compat_chains: &[(&str, &str, &str)]) -> Ruleset {
    let veths = format!("{HOST_VETH_PREFIX}*");
    let from_vm = |neg| ifname(Dir::In, neg, &veths);
    let to_vm = |neg| ifname(Dir::Out, neg, &veths);
    let established = || Match::CtState(CT_ESTABLISHED | CT_RELATED);
    let nat = |hook, hook_name, priority, prio_text| {
        Some(BaseHook {
            hook: Hook {
                kind: "nat",
                hook,
                priority,
                policy: nfnl::NF_ACCEPT,
            },
            hook_name,
            prio_text,
        })
    };
    let chains = vec![
        Chain {
            name: "forward",
            base: filter_hook(nfnl::HOOK_FORWARD, "forward", nfnl::NF_ACCEPT),
            rules: vec![
                rule(vec![Match::IifSaddrInSet(GUEST_SRC_SET)], Action::Accept),
                rule(vec![from_vm(false)], Action::Drop),
                rule(vec![to_vm(false), established()], Action::Accept),
                rule(vec![to_vm(false), Match::CtStatusDnat], Action::Accept),
                rule(vec![to_vm(false)], Action::Drop),
            ],
        },
        Chain {
            name: "input",
            base: filter_hook(nfnl::HOOK_INPUT, "input", nfnl::NF_ACCEPT),
            rules: vec![
                rule(vec![from_vm(false), established()], Action::Accept),
                rule(vec![from_vm(false)], Action::Drop),
            ],
        },
        Chain {
            name: "prerouting",
            base: nat(nfnl::HOOK_PREROUTING, "prerouting", -100, "dstnat"),
            rules: vec![rule(
                vec![from_vm(true), Match::FibDaddrLocal],
                Action::DnatMap(PUBLISHED_MAP),
            )],
        },
        Chain {
            name: "output",
            base: nat(nfnl::HOOK_OUTPUT, "output", -100, "-100"),
            rules: vec![rule(
                vec![Match::FibDaddrLocal],
                Action::DnatMap(PUBLISHED_MAP),
            )],
        },
        Chain {
            name: "postrouting",
            base: nat(nfnl::HOOK_POSTROUTING, "postrouting", 100, "srcnat"),
            rules: vec![
                rule(
                    vec![
                        Match::Addr {
                            dst: false,
                            neg: false,
                            net: Net::parse(&slot_range().to_string()),
                        },
                        to_vm(true),
                    ],
                    Action::Masquerade,
                ),
                rule(
                    vec![
                        to_vm(false),
                        Match::Addr {
                            dst: false,
                            neg: false,
                            net: Net::parse("127.0.0.0/8"),
                        },
                    ],
                    Action::Masquerade,
                ),
            ],
        },
    ];
    let mut rs = Ruleset::default();
    rs.push(Cmd::TableBlock {
        family: Family::Ip,
        name: HOST_TABLE,
        sets: vec![
            SetDecl {
                name: GUEST_SRC_SET,
                kind: SetKind::IfnameIpv4,
            },
            SetDecl {
                name: PUBLISHED_MAP,
                kind: SetKind::ProtoPortToAddrPort,
            },
        ],
        chains,
    });
    rs.cmds.extend(compat_rules(compat_chains));
    rs
}

/// Only the compat rules of [`host_base`] (the table exists, a foreign chain appeared).
pub fn host_compat(compat_chains: &[(&str, &str, &str)]) -> Ruleset {
    Ruleset {
        cmds: compat_rules(compat_chains),
    }
}

/// Adds one VM's elements; published ports use `create`, so a port another VM holds makes
/// the whole transaction fail.
pub fn host_add(r: &HostRules<'_>) -> Ruleset {
    let a = r.addrs;
    let mut rs = Ruleset::default();
    rs.push(Cmd::Element {
        op: ElemOp::Add,
        family: Family::Ip,
        table: HOST_TABLE,
        set: GUEST_SRC_SET,
        elem: ElemV::IfIp(r.host_veth.to_string(), a.guest_ip),
    });
    for p in r.published {
        rs.push(Cmd::Element {
            op: ElemOp::Create,
            family: Family::Ip,
            table: HOST_TABLE,
            set: PUBLISHED_MAP,
            elem: ElemV::Published(p.protocol, p.host_port, a.guest_ip, p.guest_port),
        });
    }
    rs
}

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

/// Removes one VM's elements (as found in `state`); when it was the last VM, removes the
/// table and the compat rules (`compat`) too.
pub fn host_remove(
    state: &HostState,
    host_veth: &str,
    guest_ip: Ipv4Addr,
    compat: &[CompatRule],
) -> Ruleset {
    let mut rs = Ruleset::default();
    if !state.exists {
        return rs;
    }
    let others = state
        .guests
        .iter()
        .filter(|(d, ip)| !(d == host_veth && *ip == guest_ip))
        .count();
    if others == 0 {
        rs.push(Cmd::DeleteTable(Family::Ip, HOST_TABLE));
        for ((fam, table, chain), handle) in compat {
            rs.push(Cmd::DeleteRule {
                family: family_of(fam),
                table: table.clone(),
                chain: chain.clone(),
                handle: *handle,
            });
        }
        return rs;
    }
    for (d, ip) in &state.guests {
        if d == host_veth && *ip == guest_ip {
            rs.push(Cmd::Element {
                op: ElemOp::Delete,
                family: Family::Ip,
                table: HOST_TABLE,
                set: GUEST_SRC_SET,
                elem: ElemV::IfIp(d.clone(), *ip),
            });
        }
    }
    for (proto, hp, ip, _) in &state.published {
        if *ip == guest_ip {
            rs.push(Cmd::Element {
                op: ElemOp::Delete,
                family: Family::Ip,
                table: HOST_TABLE,
                set: PUBLISHED_MAP,
                elem: ElemV::PublishedKey(*proto, *hp),
            });
        }
    }
    rs
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

/// Checks that the kernel accepts vmsan's VM ruleset (nf_tables with sets, timeouts,
/// intervals, conntrack and the `inet` family): loads it over netlink in a throw-away
/// network namespace that exists only for the check (the host's rules are never touched).
pub fn probe_kernel() -> Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetError::sys("unshare a scratch network namespace", e))?;
            let addrs = crate::addr::Slot::new(0)?.addrs();
            let policy = Policy::Custom(crate::policy::CustomPolicy {
                allowed_cidrs: vec![crate::policy::Cidr::new(Ipv4Addr::new(192, 0, 2, 0), 24)?],
                denied_cidrs: Vec::new(),
                allowed_domains: vec!["example.com".parse()?],
                ports: vec![80, 443],
            });
            let mut rs = vm_table(&VmRules {
                addrs: &addrs,
                policy: &policy,
                allow_udp: false,
                published: &[],
                lan: &lan_block(false, &[]),
            });
            rs.extend(dns_update(&[(Ipv4Addr::new(192, 0, 2, 1), 60)]));
            rs.apply(None)
        })
        .join()
        .unwrap_or_else(|_| Err(NetError::invalid("nftables probe", "worker panicked")))
    })
}

/// Published host ports held by VMs in `ns`: (protocol, host port, guest IP).
pub fn published_ports_in_use(ns: Option<&Path>) -> Result<Vec<(Protocol, u16, Ipv4Addr)>> {
    Ok(HostState::read(ns)?
        .published
        .into_iter()
        .map(|(p, hp, ip, _)| (p, hp, ip))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_merge_and_end_at_the_top() {
        let nets: Vec<Net> = ["1.1.1.1", "1.1.1.2", "1.1.1.3", "224.0.0.0/3", "10.0.0.0/8"]
            .iter()
            .map(|s| Net::parse(s))
            .collect();
        let e = interval_elems(&nets);
        let keys: Vec<(Vec<u8>, u32)> = e.into_iter().map(|e| (e.key, e.flags)).collect();
        assert_eq!(
            keys,
            vec![
                (vec![1, 1, 1, 1], 0),
                (vec![1, 1, 1, 4], 1),
                (vec![10, 0, 0, 0], 0),
                (vec![11, 0, 0, 0], 1),
                (vec![224, 0, 0, 0], 0),
            ]
        );
    }

    #[test]
    fn published_elements_are_padded_per_field() {
        let e = elem_encode(&ElemV::Published(
            Protocol::Udp,
            5353,
            Ipv4Addr::new(198, 18, 0, 26),
            53,
        ));
        assert_eq!(e.key, vec![17, 0, 0, 0, 0x14, 0xe9, 0, 0]);
        assert_eq!(e.data, Some(vec![198, 18, 0, 26, 0, 53, 0, 0]));
        let k = elem_encode(&ElemV::IfIp("vmsan-h3".into(), Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(k.key.len(), 20);
        assert_eq!(&k.key[..9], b"vmsan-h3\0");
        assert_eq!(&k.key[16..], &[1, 2, 3, 4]);
    }
}
