//! The ruleset description: tables, chains, rules, sets and elements as plain values, built
//! by [`super::vm`] and [`super::host`], printed by [`super::text`] and encoded by
//! [`super::encode`].

use std::net::Ipv4Addr;

use crate::nfnl::{Family, Hook};
use crate::policy::Protocol;

pub(super) const IPPROTO_ICMP: u8 = 1;
pub(super) const IPPROTO_TCP: u8 = 6;
pub(super) const IPPROTO_UDP: u8 = 17;
pub(super) const CT_INVALID: u32 = 1;
pub(super) const CT_ESTABLISHED: u32 = 2;
pub(super) const CT_RELATED: u32 = 4;
pub(super) const CT_NEW: u32 = 8;

pub(super) fn proto_num(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
    }
}

/// An IPv4 network as written in a rule (`8.8.8.8`, `45.90.28.0/24`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Net {
    pub(super) text: String,
    pub(super) ip: Ipv4Addr,
    pub(super) prefix: u8,
}

impl Net {
    pub(super) fn parse(s: &str) -> Self {
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

    pub(super) fn of(ip: Ipv4Addr, prefix: u8, text: String) -> Self {
        Self { text, ip, prefix }
    }

    pub(super) fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix.min(32)))
        }
    }

    /// First and last address.
    pub(super) fn range(&self) -> (u32, u32) {
        let lo = u32::from(self.ip) & self.mask();
        (lo, lo | !self.mask())
    }
}

/// Which interface an `iifname`/`oifname` match looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dir {
    In,
    Out,
}

/// One match of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Match {
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
pub(super) enum Action {
    Accept,
    Drop,
    Jump(&'static str),
    /// `dnat ip to meta l4proto . th dport map @map`
    DnatMap(&'static str),
    Masquerade,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rule {
    pub(super) matches: Vec<Match>,
    pub(super) action: Action,
    pub(super) comment: Option<&'static str>,
}

pub(super) fn rule(matches: Vec<Match>, action: Action) -> Rule {
    Rule {
        matches,
        action,
        comment: None,
    }
}

pub(super) fn ifname(dir: Dir, neg: bool, name: &str) -> Match {
    Match::IfName {
        dir,
        neg,
        name: name.to_string(),
    }
}

pub(super) fn addr(dst: bool, neg: bool, ip: Ipv4Addr) -> Match {
    Match::Addr {
        dst,
        neg,
        net: Net::of(ip, 32, ip.to_string()),
    }
}

impl Match {
    pub(super) fn is_ip_header(&self) -> bool {
        matches!(
            self,
            Self::Addr { .. } | Self::AddrIn { .. } | Self::AddrInSet { .. }
        )
    }
}

/// A named set or map of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SetKind {
    /// `type ipv4_addr; flags timeout`
    Ipv4Timeout,
    /// `type ifname . ipv4_addr`
    IfnameIpv4,
    /// `type inet_proto . inet_service : ipv4_addr . inet_service`
    ProtoPortToAddrPort,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SetDecl {
    pub(super) name: &'static str,
    pub(super) kind: SetKind,
}

/// A base chain's hook, with its priority as nft writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BaseHook {
    pub(super) hook: Hook,
    pub(super) hook_name: &'static str,
    pub(super) prio_text: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Chain {
    pub(super) name: &'static str,
    pub(super) base: Option<BaseHook>,
    pub(super) rules: Vec<Rule>,
}

/// A set element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ElemV {
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
pub(super) enum ElemOp {
    Add,
    Create,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cmd {
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

pub(super) fn filter_hook(hook: u32, hook_name: &'static str, policy: i32) -> Option<BaseHook> {
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

pub(super) fn family_of(s: &str) -> Family {
    if s == "inet" {
        Family::Inet
    } else {
        Family::Ip
    }
}

/// A list of nftables commands applied as one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub(super) cmds: Vec<Cmd>,
}

impl Ruleset {
    pub(super) fn push(&mut self, c: Cmd) {
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
}
