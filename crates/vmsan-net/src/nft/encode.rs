//! The ruleset as one nf_tables netlink batch: rules as expressions, sets with their key
//! types, elements as key/data bytes.

use super::ir::{Action, Cmd, Dir, ElemOp, ElemV, Match, Net, Rule, Ruleset, SetKind, proto_num};
use crate::nfnl::{self, Batch, Elem, Expr, Family, SetDef};
use crate::policy::Protocol;

const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
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
    /// The netlink batch of these commands.
    pub(super) fn batch(&self) -> Batch {
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
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

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
