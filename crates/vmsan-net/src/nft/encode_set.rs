//! Sets and their elements in nf_tables' wire form: set definitions with nft's key types,
//! element keys and data as padded bytes, address intervals.

use super::ir::{ElemV, Net, SetKind, proto_num};
use crate::nfnl::{self, Batch, Elem, SetDef};
use crate::policy::Protocol;

/// nft's datatype ids (set key types, used when nft lists the ruleset).
pub(super) const TYPE_IPADDR: u32 = 7;
pub(super) const TYPE_INET_PROTOCOL: u32 = 12;
pub(super) const TYPE_INET_SERVICE: u32 = 13;
const TYPE_IFNAME: u32 = 41;
const TYPE_BITS: u32 = 6;
/// nft's set userdata: key byte order big-endian (`NFTNL_UDATA_SET_KEYBYTEORDER`).
const UDATA_KEY_BIG_ENDIAN: [u8; 6] = [0, 4, 2, 0, 0, 0];

fn pad4(v: &mut Vec<u8>) {
    v.resize((v.len() + 3) & !3, 0);
}

pub(super) fn ifname_bytes(name: &str) -> Vec<u8> {
    let mut v = vec![0u8; libc::IFNAMSIZ];
    let n = name.len().min(libc::IFNAMSIZ - 1);
    v[..n].copy_from_slice(&name.as_bytes()[..n]);
    v
}

pub(super) fn elem_encode(e: &ElemV) -> Elem {
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

pub(super) fn set_def(kind: SetKind, name: &str, id: u32) -> SetDef {
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

pub(super) fn anon_def(b: &mut Batch, flags: u32, key_type: u32, key_len: u32) -> SetDef {
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
pub(super) fn interval_elems(nets: &[Net]) -> Vec<Elem> {
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
