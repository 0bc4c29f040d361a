//! The table `inet vmsan` of a VM's namespace: what a VM's policy, UDP opt-in and published
//! ports produce, and the changes to it (policy swaps, addresses learnt from DNS).

use std::net::Ipv4Addr;

use super::destinations::{ALWAYS_BLOCKED, KNOWN_DOH};
use super::ir::{
    Action, CT_ESTABLISHED, CT_INVALID, CT_NEW, CT_RELATED, Chain, Cmd, Dir, ElemOp, ElemV,
    IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Match, Net, Ruleset, SetDecl, SetKind, addr,
    filter_hook, ifname, proto_num, rule,
};
use crate::addr::{SlotAddrs, TAP_NAME, VM_VETH_NAME, slot_range};
use crate::nfnl::{self, Family};
use crate::policy::{Cidr, Policy, PublishedPort};

/// Table name inside every VM namespace.
pub const VM_TABLE: &str = "vmsan";
/// Set of addresses learnt by the DNS filter.
pub const DNS_SET: &str = "dns_allowed";

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
    /// explicitly allowed CIDR still may. From [`super::lan_block`]; empty = `--allow-lan`.
    pub lan: &'a [Cidr],
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
