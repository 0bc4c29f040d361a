//! The shared table `ip vmsan` of the host namespace: its chains, one VM's elements, their
//! removal, and the accept rules in foreign forward chains.

use std::net::Ipv4Addr;

use super::ir::{
    Action, BaseHook, CT_ESTABLISHED, CT_RELATED, Chain, Cmd, Dir, ElemOp, ElemV, Match, Net, Rule,
    Ruleset, SetDecl, SetKind, family_of, filter_hook, ifname, rule,
};
use super::query::HostState;
use crate::addr::{HOST_VETH_PREFIX, SlotAddrs, slot_range};
use crate::nfnl::{self, Family, Hook};
use crate::policy::PublishedPort;

/// A chain: (family, table, chain).
pub type ChainRef = (&'static str, &'static str, &'static str);

/// One of our rules in a foreign chain: ((family, table, chain), handle).
pub type CompatRule = ((String, String, String), u64);

/// Chains of a compatible iptables-nft `FORWARD` chain we add accept rules to when present.
pub const COMPAT_FORWARD_CHAINS: [(&str, &str, &str); 1] = [("ip", "filter", "FORWARD")];

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
