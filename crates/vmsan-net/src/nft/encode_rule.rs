//! A rule in nf_tables' wire form: its matches and action as expressions, with anonymous sets
//! added to the batch where a match needs one.

use super::encode_set::{
    TYPE_INET_PROTOCOL, TYPE_INET_SERVICE, TYPE_IPADDR, anon_def, ifname_bytes, interval_elems,
};
use super::ir::{Action, Dir, Match, Rule};
use crate::nfnl::{self, Batch, Elem, Expr, Family, SetDef};

const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

const IPS_DST_NAT: u32 = 0x20;
const RTN_LOCAL: u32 = 2;

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

pub(super) fn encode_rule(b: &mut Batch, f: Family, table: &str, r: &Rule) -> Vec<Expr> {
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
