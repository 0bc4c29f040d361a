//! The ruleset in nft's syntax (`nft -f` input), for review, golden tests and the
//! benchmark's reference script.

use std::fmt::Write as _;

use super::ir::{
    Action, CT_ESTABLISHED, CT_INVALID, CT_NEW, CT_RELATED, Cmd, Dir, ElemOp, ElemV, IPPROTO_ICMP,
    IPPROTO_TCP, Match, Rule, Ruleset, SetKind,
};
use crate::nfnl;

fn proto_name(p: u8) -> &'static str {
    match p {
        IPPROTO_ICMP => "icmp",
        IPPROTO_TCP => "tcp",
        _ => "udp",
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

fn elem_text(e: &ElemV) -> String {
    match e {
        ElemV::Ip(ip, None) => ip.to_string(),
        ElemV::Ip(ip, Some(t)) => format!("{ip} timeout {t}s"),
        ElemV::IfIp(d, ip) => format!("\"{d}\" . {ip}"),
        ElemV::Published(p, hp, ip, gp) => format!("{} . {hp} : {ip} . {gp}", p.as_str()),
        ElemV::PublishedKey(p, hp) => format!("{} . {hp}", p.as_str()),
    }
}

impl Ruleset {
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
}
