//! nftables over netlink (`NETLINK_NETFILTER`, nf_tables messages), written for vmsan's needs:
//! a batch builder (one batch = one kernel transaction: all of it applies or none of it does),
//! the expressions our rulesets use, and the few dumps we read back (tables, set elements,
//! rules). No `nft` process is involved: applying a ruleset costs a `sendmsg` and the acks.
//!
//! The socket belongs to the network namespace of the thread that opens it (see
//! [`crate::netns::run_in`]); it stays there when used from other threads.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket, sockopt,
};

use crate::error::{NetError, Result};

// Netlink.
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
/// With NEW*: fail if the object exists.
pub(crate) const NLM_F_EXCL: u16 = 0x200;
/// With NEW*: create the object.
pub(crate) const NLM_F_CREATE: u16 = 0x400;
/// With NEWRULE: append (without it, the rule goes first in the chain).
pub(crate) const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

// nfnetlink.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFGENMSG_LEN: usize = 4;

/// nf_tables message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub(crate) enum MsgType {
    NewTable = 0,
    GetTable = 1,
    DelTable = 2,
    NewChain = 3,
    NewRule = 6,
    GetRule = 7,
    DelRule = 8,
    NewSet = 9,
    NewSetElem = 12,
    GetSetElem = 13,
    DelSetElem = 14,
}

/// Address families (`NFPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Family {
    /// `inet`: IPv4 and IPv6.
    Inet = 1,
    /// `ip`: IPv4.
    Ip = 2,
}

impl Family {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Inet => "inet",
            Self::Ip => "ip",
        }
    }
}

// Attribute numbers (linux/netfilter/nf_tables.h).
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// Set flags.
pub(crate) const NFT_SET_ANONYMOUS: u32 = 0x1;
pub(crate) const NFT_SET_CONSTANT: u32 = 0x2;
pub(crate) const NFT_SET_INTERVAL: u32 = 0x4;
pub(crate) const NFT_SET_MAP: u32 = 0x8;
pub(crate) const NFT_SET_TIMEOUT: u32 = 0x10;
/// Set element flag: this element ends an interval.
pub(crate) const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;

/// Registers: the verdict register, the first 16-byte register, and 4-byte registers.
pub(crate) const REG_VERDICT: u32 = 0;
pub(crate) const REG_1: u32 = 1;
pub(crate) const REG_2: u32 = 2;
/// `NFT_REG32_01`: the second 4-byte word of `REG_1`.
pub(crate) const REG32_01: u32 = 9;

/// Verdict codes.
pub(crate) const NF_DROP: i32 = 0;
pub(crate) const NF_ACCEPT: i32 = 1;
pub(crate) const NFT_JUMP: i32 = -3;

/// Hooks (`NF_INET_*`).
pub(crate) const HOOK_PREROUTING: u32 = 0;
pub(crate) const HOOK_INPUT: u32 = 1;
pub(crate) const HOOK_FORWARD: u32 = 2;
pub(crate) const HOOK_OUTPUT: u32 = 3;
pub(crate) const HOOK_POSTROUTING: u32 = 4;

/// Meta keys.
pub(crate) const META_IIF: u32 = 4;
pub(crate) const META_IIFNAME: u32 = 6;
pub(crate) const META_OIFNAME: u32 = 7;
pub(crate) const META_NFPROTO: u32 = 15;
pub(crate) const META_L4PROTO: u32 = 16;
/// Payload bases.
pub(crate) const PAYLOAD_NETWORK: u32 = 1;
pub(crate) const PAYLOAD_TRANSPORT: u32 = 2;
/// Comparison operators.
pub(crate) const CMP_EQ: u32 = 0;
pub(crate) const CMP_NEQ: u32 = 1;
/// Conntrack keys.
pub(crate) const CT_STATE: u32 = 0;
pub(crate) const CT_STATUS: u32 = 2;
/// fib: look up the destination address, return its address type.
pub(crate) const FIB_F_DADDR: u32 = 2;
pub(crate) const FIB_RESULT_ADDRTYPE: u32 = 3;
/// nat types.
pub(crate) const NAT_DNAT: u32 = 1;

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    /// Load a meta key into `dreg`.
    Meta { key: u32, dreg: u32 },
    /// Load `len` bytes at `offset` of header `base` into `dreg`.
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// Compare `sreg` with `data` (the verdict is "break" when false).
    Cmp { op: u32, sreg: u32, data: Vec<u8> },
    /// `reg = (reg & mask) ^ xor` over `mask.len()` bytes.
    Bitwise {
        reg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// Look `sreg` up in a set (named, or anonymous in this batch by id); a map writes the
    /// value to `dreg`.
    Lookup {
        set: String,
        set_id: Option<u32>,
        sreg: u32,
        dreg: Option<u32>,
    },
    /// Load a conntrack key into `dreg`.
    Ct { key: u32, dreg: u32 },
    /// Route lookup.
    Fib { flags: u32, result: u32, dreg: u32 },
    /// Set the verdict (`chain` for jump/goto).
    Verdict { code: i32, chain: Option<String> },
    /// IPv4 NAT to the address in `addr_reg` and the port in `proto_reg`.
    Nat {
        kind: u32,
        addr_reg: u32,
        proto_reg: u32,
    },
    /// Masquerade.
    Masq,
}

/// A set (or map) to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetDef {
    pub(crate) name: String,
    pub(crate) flags: u32,
    /// nft's datatype id (concatenations: `(a << 6) | b`), for listing only.
    pub(crate) key_type: u32,
    pub(crate) key_len: u32,
    /// Map value: (datatype id, length).
    pub(crate) data: Option<(u32, u32)>,
    /// Id within the batch (anonymous sets are referred to by it).
    pub(crate) id: u32,
    /// nft's set userdata (key byte order), for listing only.
    pub(crate) userdata: Vec<u8>,
}

/// A set element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Elem {
    pub(crate) key: Vec<u8>,
    pub(crate) data: Option<Vec<u8>>,
    pub(crate) flags: u32,
    pub(crate) timeout_ms: Option<u64>,
}

impl Elem {
    pub(crate) fn key(key: Vec<u8>) -> Self {
        Self {
            key,
            data: None,
            flags: 0,
            timeout_ms: None,
        }
    }
}

/// A base chain's hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hook {
    /// `filter` or `nat`.
    pub(crate) kind: &'static str,
    pub(crate) hook: u32,
    pub(crate) priority: i32,
    /// `NF_ACCEPT` or `NF_DROP`.
    pub(crate) policy: i32,
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

fn put_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(pad4(buf.len()), 0);
}

fn put_str(buf: &mut Vec<u8>, ty: u16, s: &str) {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    put_attr(buf, ty, &v);
}

fn put_be32(buf: &mut Vec<u8>, ty: u16, v: u32) {
    put_attr(buf, ty, &v.to_be_bytes());
}

fn nest_start(buf: &mut Vec<u8>, ty: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    at
}

fn nest_end(buf: &mut [u8], at: usize) {
    let len = u16::try_from(buf.len() - at).unwrap_or(u16::MAX);
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

fn put_data_value(buf: &mut Vec<u8>, ty: u16, value: &[u8]) {
    let n = nest_start(buf, ty);
    put_attr(buf, NFTA_DATA_VALUE, value);
    nest_end(buf, n);
}

fn put_expr(buf: &mut Vec<u8>, e: &Expr) {
    let el = nest_start(buf, NFTA_LIST_ELEM);
    let name = match e {
        Expr::Meta { .. } => "meta",
        Expr::Payload { .. } => "payload",
        Expr::Cmp { .. } => "cmp",
        Expr::Bitwise { .. } => "bitwise",
        Expr::Lookup { .. } => "lookup",
        Expr::Ct { .. } => "ct",
        Expr::Fib { .. } => "fib",
        Expr::Verdict { .. } => "immediate",
        Expr::Nat { .. } => "nat",
        Expr::Masq => "masq",
    };
    put_str(buf, NFTA_EXPR_NAME, name);
    let d = nest_start(buf, NFTA_EXPR_DATA);
    match e {
        Expr::Meta { key, dreg } => {
            put_be32(buf, 1, *dreg); // NFTA_META_DREG
            put_be32(buf, 2, *key); // NFTA_META_KEY
        }
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            put_be32(buf, 1, *dreg); // NFTA_PAYLOAD_DREG
            put_be32(buf, 2, *base); // NFTA_PAYLOAD_BASE
            put_be32(buf, 3, *offset); // NFTA_PAYLOAD_OFFSET
            put_be32(buf, 4, *len); // NFTA_PAYLOAD_LEN
        }
        Expr::Cmp { op, sreg, data } => {
            put_be32(buf, 1, *sreg); // NFTA_CMP_SREG
            put_be32(buf, 2, *op); // NFTA_CMP_OP
            put_data_value(buf, 3, data); // NFTA_CMP_DATA
        }
        Expr::Bitwise { reg, mask, xor } => {
            put_be32(buf, 1, *reg); // NFTA_BITWISE_SREG
            put_be32(buf, 2, *reg); // NFTA_BITWISE_DREG
            put_be32(buf, 3, u32::try_from(mask.len()).unwrap_or(0)); // NFTA_BITWISE_LEN
            put_data_value(buf, 4, mask); // NFTA_BITWISE_MASK
            put_data_value(buf, 5, xor); // NFTA_BITWISE_XOR
        }
        Expr::Lookup {
            set,
            set_id,
            sreg,
            dreg,
        } => {
            put_str(buf, 1, set); // NFTA_LOOKUP_SET
            put_be32(buf, 2, *sreg); // NFTA_LOOKUP_SREG
            if let Some(d) = dreg {
                put_be32(buf, 3, *d); // NFTA_LOOKUP_DREG
            }
            if let Some(id) = set_id {
                put_be32(buf, 4, *id); // NFTA_LOOKUP_SET_ID
            }
        }
        Expr::Ct { key, dreg } => {
            put_be32(buf, 1, *dreg); // NFTA_CT_DREG
            put_be32(buf, 2, *key); // NFTA_CT_KEY
        }
        Expr::Fib {
            flags,
            result,
            dreg,
        } => {
            put_be32(buf, 1, *dreg); // NFTA_FIB_DREG
            put_be32(buf, 2, *result); // NFTA_FIB_RESULT
            put_be32(buf, 3, *flags); // NFTA_FIB_FLAGS
        }
        Expr::Verdict { code, chain } => {
            put_be32(buf, 1, REG_VERDICT); // NFTA_IMMEDIATE_DREG
            let data = nest_start(buf, 2); // NFTA_IMMEDIATE_DATA
            let v = nest_start(buf, NFTA_DATA_VERDICT);
            put_attr(buf, NFTA_VERDICT_CODE, &code.to_be_bytes());
            if let Some(c) = chain {
                put_str(buf, NFTA_VERDICT_CHAIN, c);
            }
            nest_end(buf, v);
            nest_end(buf, data);
        }
        Expr::Nat {
            kind,
            addr_reg,
            proto_reg,
        } => {
            put_be32(buf, 1, *kind); // NFTA_NAT_TYPE
            put_be32(buf, 2, u32::from(Family::Ip as u8)); // NFTA_NAT_FAMILY
            put_be32(buf, 3, *addr_reg); // NFTA_NAT_REG_ADDR_MIN
            put_be32(buf, 5, *proto_reg); // NFTA_NAT_REG_PROTO_MIN
        }
        Expr::Masq => {}
    }
    nest_end(buf, d);
    nest_end(buf, el);
}

static SEQ: AtomicU32 = AtomicU32::new(1);

fn next_seq(n: u32) -> u32 {
    SEQ.fetch_add(n, Ordering::Relaxed)
}

fn put_header(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by end_msg
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    buf.push(family);
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&res_id.to_be_bytes());
    at
}

fn end_msg(buf: &mut [u8], at: usize) {
    let len = u32::try_from(buf.len() - at).unwrap_or(u32::MAX);
    buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
}

fn nft_type(t: MsgType) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | t as u16
}

/// One nf_tables transaction: every message between BATCH_BEGIN and BATCH_END is applied
/// atomically by the kernel, or none is.
#[derive(Debug)]
pub(crate) struct Batch {
    buf: Vec<u8>,
    /// (seq, what the message does) of every message, for acks and error context.
    msgs: Vec<(u32, String)>,
    begin_seq: u32,
    next_set_id: u32,
    /// Offset of the last message (the only one asking for an ack).
    last_at: usize,
}

/// Sequence numbers reserved per batch (a batch never holds more messages).
const BATCH_SEQ_SPACE: u32 = 1 << 16;

impl Batch {
    pub(crate) fn new() -> Self {
        let begin_seq = next_seq(BATCH_SEQ_SPACE);
        let mut buf = Vec::with_capacity(4096);
        let at = put_header(
            &mut buf,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            begin_seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        end_msg(&mut buf, at);
        Self {
            buf,
            msgs: Vec::new(),
            begin_seq,
            next_set_id: 1,
            last_at: 0,
        }
    }

    /// Whether the batch holds no message.
    pub(crate) fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    fn msg(
        &mut self,
        ty: MsgType,
        family: Family,
        flags: u16,
        what: String,
        body: impl FnOnce(&mut Vec<u8>),
    ) {
        let n = u32::try_from(self.msgs.len()).unwrap_or(u32::MAX);
        let seq = self.begin_seq.wrapping_add(1).wrapping_add(n);
        let at = put_header(
            &mut self.buf,
            nft_type(ty),
            NLM_F_REQUEST | flags,
            seq,
            family as u8,
            0,
        );
        body(&mut self.buf);
        end_msg(&mut self.buf, at);
        self.last_at = at;
        self.msgs.push((seq, what));
    }

    /// Creates table `name` (no error if it exists).
    pub(crate) fn add_table(&mut self, family: Family, name: &str) {
        self.msg(
            MsgType::NewTable,
            family,
            NLM_F_CREATE,
            format!("add table {} {name}", family.as_str()),
            |b| put_str(b, NFTA_TABLE_NAME, name),
        );
    }

    /// Deletes table `name` with everything in it (error if it does not exist).
    pub(crate) fn del_table(&mut self, family: Family, name: &str) {
        self.msg(
            MsgType::DelTable,
            family,
            0,
            format!("delete table {} {name}", family.as_str()),
            |b| put_str(b, NFTA_TABLE_NAME, name),
        );
    }

    /// Creates chain `name` in `table` (a base chain when `hook` is given).
    pub(crate) fn add_chain(
        &mut self,
        family: Family,
        table: &str,
        name: &str,
        hook: Option<Hook>,
    ) {
        self.msg(
            MsgType::NewChain,
            family,
            NLM_F_CREATE,
            format!("add chain {} {table} {name}", family.as_str()),
            |b| {
                put_str(b, NFTA_CHAIN_TABLE, table);
                put_str(b, NFTA_CHAIN_NAME, name);
                if let Some(h) = hook {
                    let n = nest_start(b, NFTA_CHAIN_HOOK);
                    put_be32(b, NFTA_HOOK_HOOKNUM, h.hook);
                    put_attr(b, NFTA_HOOK_PRIORITY, &h.priority.to_be_bytes());
                    nest_end(b, n);
                    put_attr(b, NFTA_CHAIN_POLICY, &h.policy.to_be_bytes());
                    put_str(b, NFTA_CHAIN_TYPE, h.kind);
                }
            },
        );
    }

    /// Removes every rule of a chain.
    pub(crate) fn flush_chain(&mut self, family: Family, table: &str, chain: &str) {
        self.msg(
            MsgType::DelRule,
            family,
            0,
            format!("flush chain {} {table} {chain}", family.as_str()),
            |b| {
                put_str(b, NFTA_RULE_TABLE, table);
                put_str(b, NFTA_RULE_CHAIN, chain);
            },
        );
    }

    /// Appends (or, `append` false, prepends) a rule; `comment` becomes nft's rule comment.
    pub(crate) fn add_rule(
        &mut self,
        family: Family,
        table: &str,
        chain: &str,
        exprs: &[Expr],
        comment: Option<&str>,
        append: bool,
    ) {
        self.msg(
            MsgType::NewRule,
            family,
            NLM_F_CREATE | if append { NLM_F_APPEND } else { 0 },
            format!(
                "{} rule {} {table} {chain}",
                if append { "add" } else { "insert" },
                family.as_str()
            ),
            |b| {
                put_str(b, NFTA_RULE_TABLE, table);
                put_str(b, NFTA_RULE_CHAIN, chain);
                let l = nest_start(b, NFTA_RULE_EXPRESSIONS);
                for e in exprs {
                    put_expr(b, e);
                }
                nest_end(b, l);
                if let Some(c) = comment {
                    put_attr(b, NFTA_RULE_USERDATA, &rule_comment_udata(c));
                }
            },
        );
    }

    /// Deletes the rule with `handle`.
    pub(crate) fn del_rule(&mut self, family: Family, table: &str, chain: &str, handle: u64) {
        self.msg(
            MsgType::DelRule,
            family,
            0,
            format!(
                "delete rule {} {table} {chain} handle {handle}",
                family.as_str()
            ),
            |b| {
                put_str(b, NFTA_RULE_TABLE, table);
                put_str(b, NFTA_RULE_CHAIN, chain);
                put_attr(b, NFTA_RULE_HANDLE, &handle.to_be_bytes());
            },
        );
    }

    /// An id for an anonymous set of this batch.
    pub(crate) fn new_set_id(&mut self) -> u32 {
        let id = self.next_set_id;
        self.next_set_id += 1;
        id
    }

    /// Creates a set.
    pub(crate) fn add_set(&mut self, family: Family, table: &str, s: &SetDef) {
        self.msg(
            MsgType::NewSet,
            family,
            NLM_F_CREATE,
            format!("add set {} {table} {}", family.as_str(), s.name),
            |b| {
                put_str(b, NFTA_SET_TABLE, table);
                put_str(b, NFTA_SET_NAME, &s.name);
                put_be32(b, NFTA_SET_FLAGS, s.flags);
                put_be32(b, NFTA_SET_KEY_TYPE, s.key_type);
                put_be32(b, NFTA_SET_KEY_LEN, s.key_len);
                if let Some((t, l)) = s.data {
                    put_be32(b, NFTA_SET_DATA_TYPE, t);
                    put_be32(b, NFTA_SET_DATA_LEN, l);
                }
                put_be32(b, NFTA_SET_ID, s.id);
                if !s.userdata.is_empty() {
                    put_attr(b, NFTA_SET_USERDATA, &s.userdata);
                }
            },
        );
    }

    fn elems_msg(
        &mut self,
        (ty, family, flags): (MsgType, Family, u16),
        (table, set): (&str, (&str, Option<u32>)),
        elems: &[Elem],
        what: String,
    ) {
        self.msg(ty, family, flags, what, |b| {
            put_str(b, NFTA_SET_ELEM_LIST_TABLE, table);
            put_str(b, NFTA_SET_ELEM_LIST_SET, set.0);
            if let Some(id) = set.1 {
                put_be32(b, NFTA_SET_ELEM_LIST_SET_ID, id);
            }
            if elems.is_empty() {
                return;
            }
            let l = nest_start(b, NFTA_SET_ELEM_LIST_ELEMENTS);
            for e in elems {
                let n = nest_start(b, NFTA_LIST_ELEM);
                put_data_value(b, NFTA_SET_ELEM_KEY, &e.key);
                if let Some(d) = &e.data {
                    put_data_value(b, NFTA_SET_ELEM_DATA, d);
                }
                if e.flags != 0 {
                    put_be32(b, NFTA_SET_ELEM_FLAGS, e.flags);
                }
                if let Some(t) = e.timeout_ms {
                    put_attr(b, NFTA_SET_ELEM_TIMEOUT, &t.to_be_bytes());
                }
                nest_end(b, n);
            }
            nest_end(b, l);
        });
    }

    /// Adds elements to a set (named, or anonymous of this batch with `set_id`); `create`
    /// makes an existing element an error.
    pub(crate) fn add_elems(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        set_id: Option<u32>,
        elems: &[Elem],
        create: bool,
    ) {
        let what = format!(
            "{} {} element(s) in {} {table} {set}",
            if create { "create" } else { "add" },
            elems.len(),
            family.as_str()
        );
        self.elems_msg(
            (
                MsgType::NewSetElem,
                family,
                NLM_F_CREATE | if create { NLM_F_EXCL } else { 0 },
            ),
            (table, (set, set_id)),
            elems,
            what,
        );
    }

    /// Deletes elements from a set (an empty list flushes it).
    pub(crate) fn del_elems(&mut self, family: Family, table: &str, set: &str, elems: &[Elem]) {
        let what = if elems.is_empty() {
            format!("flush set {} {table} {set}", family.as_str())
        } else {
            format!(
                "delete {} element(s) from {} {table} {set}",
                elems.len(),
                family.as_str()
            )
        };
        self.elems_msg(
            (MsgType::DelSetElem, family, 0),
            (table, (set, None)),
            elems,
            what,
        );
    }

    /// The batch's bytes, its messages and the BATCH_BEGIN sequence number. Only the last
    /// message asks for an ack: the kernel reports every refused message anyway, and
    /// replies in message order once the whole batch is processed, so the last message's
    /// reply closes the transaction's answer.
    fn finish(mut self) -> (Vec<u8>, Vec<(u32, String)>, u32) {
        if !self.msgs.is_empty() {
            let f = self.last_at + 6;
            let flags = u16::from_ne_bytes([self.buf[f], self.buf[f + 1]]) | NLM_F_ACK;
            self.buf[f..f + 2].copy_from_slice(&flags.to_ne_bytes());
        }
        let n = u32::try_from(self.msgs.len()).unwrap_or(u32::MAX);
        let at = put_header(
            &mut self.buf,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            self.begin_seq.wrapping_add(1).wrapping_add(n),
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        end_msg(&mut self.buf, at);
        (self.buf, self.msgs, self.begin_seq)
    }
}

/// nft's rule userdata holding a comment (`NFTNL_UDATA_RULE_COMMENT`, NUL-terminated).
fn rule_comment_udata(c: &str) -> Vec<u8> {
    let mut v = vec![0u8, u8::try_from(c.len() + 1).unwrap_or(u8::MAX)];
    v.extend_from_slice(c.as_bytes());
    v.push(0);
    v
}

/// The comment in a rule's userdata, if any.
fn comment_of_udata(u: &[u8]) -> Option<String> {
    let mut at = 0;
    while at + 2 <= u.len() {
        let (ty, len) = (u[at], usize::from(u[at + 1]));
        let val = u.get(at + 2..at + 2 + len)?;
        if ty == 0 {
            return Some(
                String::from_utf8_lossy(val)
                    .trim_end_matches('\0')
                    .to_string(),
            );
        }
        at += 2 + len;
    }
    None
}

/// Iterates the attributes in `b`: (type without flags, payload).
pub(crate) fn attrs(b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let hdr = b.get(at..at + 4)?;
        let len = usize::from(u16::from_ne_bytes([hdr[0], hdr[1]]));
        let ty = u16::from_ne_bytes([hdr[2], hdr[3]]) & NLA_TYPE_MASK;
        if len < 4 {
            return None;
        }
        let val = b.get(at + 4..at + len)?;
        at += pad4(len);
        Some((ty, val))
    })
}

fn attr(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b).find(|(t, _)| *t == ty).map(|(_, v)| v)
}

fn attr_str(b: &[u8], ty: u16) -> Option<String> {
    attr(b, ty).map(|v| {
        String::from_utf8_lossy(v)
            .trim_end_matches('\0')
            .to_string()
    })
}

/// A set element as dumped: (key, map value).
pub(crate) type ElemKv = (Vec<u8>, Option<Vec<u8>>);

/// One received netlink message.
#[derive(Debug)]
struct RawMsg {
    ty: u16,
    seq: u32,
    payload: Vec<u8>,
}

/// A table as dumped: (family, name).
pub(crate) type TableId = (u8, String);

/// A rule as dumped: handle and comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleInfo {
    pub(crate) handle: u64,
    pub(crate) comment: Option<String>,
}

/// A NETLINK_NETFILTER socket in the namespace of the thread that opened it.
///
/// Dropping it hands the descriptor to a closer thread: when a netfilter socket is
/// released, nf_tables first finishes freeing what earlier transactions replaced, which
/// waits for an RCU grace period (about 10 ms here). That memory is no longer in use, and the
/// transaction was in force when its ack arrived, so nobody needs to wait for it.
#[derive(Debug)]
pub(crate) struct Socket {
    fd: Option<OwnedFd>,
    buf: Vec<u8>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            close_later(fd);
        }
    }
}

/// The identity (device, inode) of the network namespace at `ns`, or of the calling
/// thread's.
fn netns_id(ns: Option<&Path>) -> Result<(u64, u64)> {
    let p = ns.unwrap_or(Path::new("/proc/thread-self/ns/net"));
    let md = std::fs::metadata(p).map_err(|e| NetError::sys(format!("stat {}", p.display()), e))?;
    Ok((md.dev(), md.ino()))
}

/// Runs `f` with this process's socket in the namespace at `ns` (the calling thread's when
/// `None`), opened on first use and kept: meant for the host namespace, which outlives every
/// VM. Keeping it open spares each transaction the grace-period wait that closing a
/// netfilter socket right after a commit costs every later transaction in that namespace
/// (see [`Socket`]). One namespace is cached at a time; asking for another replaces it.
pub(crate) fn with_host_socket<T>(
    ns: Option<&Path>,
    f: impl FnOnce(&mut Socket) -> Result<T>,
) -> Result<T> {
    static HOST: std::sync::Mutex<Option<((u64, u64), Socket)>> = std::sync::Mutex::new(None);
    let id = netns_id(ns)?;
    let mut g = match HOST.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if g.as_ref().is_none_or(|(k, _)| *k != id) {
        *g = None;
        let sock = crate::netns::run_in_opt(ns, Socket::open)?;
        *g = Some((id, sock));
    }
    match g.as_mut() {
        Some((_, sock)) => f(sock),
        None => Err(NetError::invalid("netlink", "no host socket")),
    }
}

/// Closes `fd` on the closer thread (inline if that thread cannot run).
fn close_later(fd: OwnedFd) {
    static CLOSER: std::sync::OnceLock<Option<std::sync::Mutex<std::sync::mpsc::Sender<OwnedFd>>>> =
        std::sync::OnceLock::new();
    let tx = CLOSER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<OwnedFd>();
        std::thread::Builder::new()
            .name("nfnl-close".into())
            .spawn(move || {
                for fd in rx {
                    drop(fd);
                }
            })
            .ok()
            .map(|_| std::sync::Mutex::new(tx))
    });
    let Some(tx) = tx else {
        drop(fd);
        return;
    };
    let tx = match tx.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if let Err(std::sync::mpsc::SendError(fd)) = tx.send(fd) {
        drop(fd);
    }
}

fn nl_err(context: impl Into<String>, e: Errno) -> NetError {
    NetError::Nft {
        netns: "the namespace of the netlink socket".to_string(),
        detail: format!("{}: {}", context.into(), std::io::Error::from(e)),
    }
}

/// How long the kernel gets to answer (a guard against a lost reply, never a pacing delay).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

impl Socket {
    /// Opens a socket in the current thread's network namespace.
    pub(crate) fn open() -> Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(|e| nl_err("open NETLINK_NETFILTER socket", e))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .map_err(|e| nl_err("bind NETLINK_NETFILTER socket", e))?;
        let tv =
            nix::sys::time::TimeVal::new(i64::try_from(REPLY_TIMEOUT.as_secs()).unwrap_or(10), 0);
        setsockopt(&fd, sockopt::ReceiveTimeout, &tv)
            .map_err(|e| nl_err("set netlink receive timeout", e))?;
        Ok(Self {
            fd: Some(fd),
            buf: vec![0u8; 1 << 16],
        })
    }

    fn raw_fd(&self) -> i32 {
        self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    fn send_all(&self, msg: &[u8], what: &str) -> Result<()> {
        loop {
            match send(self.raw_fd(), msg, MsgFlags::empty()) {
                Ok(n) if n == msg.len() => return Ok(()),
                Ok(n) => {
                    return Err(nl_err(
                        format!("{what}: short send ({n} of {} bytes)", msg.len()),
                        Errno::EMSGSIZE,
                    ));
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(nl_err(what.to_string(), e)),
            }
        }
    }

    /// Receives one datagram; returns its messages.
    fn recv_msgs(&mut self, what: &str) -> Result<Vec<RawMsg>> {
        let n = loop {
            match recv(self.raw_fd(), &mut self.buf, MsgFlags::empty()) {
                Ok(n) => break n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    return Err(nl_err(
                        format!("{what}: no reply from the kernel in {REPLY_TIMEOUT:?}"),
                        Errno::ETIMEDOUT,
                    ));
                }
                Err(e) => return Err(nl_err(format!("{what}: receive"), e)),
            }
        };
        let mut out = Vec::new();
        let mut at = 0;
        let b = &self.buf[..n];
        while at + NLMSG_HDRLEN <= n {
            let len = u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
            if len < NLMSG_HDRLEN || at + len > n {
                break;
            }
            out.push(RawMsg {
                ty: u16::from_ne_bytes([b[at + 4], b[at + 5]]),
                seq: u32::from_ne_bytes([b[at + 8], b[at + 9], b[at + 10], b[at + 11]]),
                payload: b[at + NLMSG_HDRLEN..at + len].to_vec(),
            });
            at += pad4(len);
        }
        Ok(out)
    }

    /// Applies `batch` as one transaction; on failure nothing of it is in force, and the
    /// error names the first refused message.
    pub(crate) fn apply(&mut self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let (buf, msgs, begin) = batch.finish();
        let last = msgs.last().map_or(begin, |(s, _)| *s);
        let what: HashMap<u32, String> = msgs.into_iter().collect();
        self.send_all(&buf, "send nftables batch")?;
        let mut first_err: Option<(u32, i32)> = None;
        loop {
            for RawMsg { ty, seq, payload } in self.recv_msgs("nftables batch")? {
                if ty != NLMSG_ERROR {
                    continue;
                }
                let code = payload
                    .get(0..4)
                    .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .unwrap_or(-libc::EPROTO);
                if seq == begin && code != 0 {
                    // The batch as a whole was refused.
                    return Err(nl_err("nftables batch", Errno::from_raw(-code)));
                }
                if !what.contains_key(&seq) {
                    continue; // a stale reply of an earlier, abandoned request
                }
                if code != 0 && first_err.is_none_or(|(s, _)| seq < s) {
                    first_err = Some((seq, code));
                }
                if seq == last {
                    return match first_err {
                        None => Ok(()),
                        Some((seq, code)) => Err(nl_err(
                            what.get(&seq).cloned().unwrap_or_default(),
                            Errno::from_raw(-code),
                        )),
                    };
                }
            }
        }
    }

    /// Sends a dump request and returns the payload (attributes, after the nfgenmsg
    /// header) and family of every object.
    fn dump(
        &mut self,
        ty: MsgType,
        family: u8,
        what: &str,
        body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Vec<(u8, Vec<u8>)>> {
        let seq = next_seq(1);
        let mut buf = Vec::with_capacity(256);
        let at = put_header(
            &mut buf,
            nft_type(ty),
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            family,
            0,
        );
        body(&mut buf);
        end_msg(&mut buf, at);
        self.send_all(&buf, what)?;
        let mut out = Vec::new();
        loop {
            for RawMsg {
                ty: t,
                seq: s,
                payload,
            } in self.recv_msgs(what)?
            {
                if s != seq {
                    continue;
                }
                match t {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = payload
                            .get(0..4)
                            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                            .unwrap_or(-libc::EPROTO);
                        if code == 0 {
                            return Ok(out);
                        }
                        return Err(nl_err(what.to_string(), Errno::from_raw(-code)));
                    }
                    _ if payload.len() >= NFGENMSG_LEN => {
                        out.push((payload[0], payload[NFGENMSG_LEN..].to_vec()));
                    }
                    _ => {}
                }
            }
        }
    }

    /// Every table: (family, name).
    pub(crate) fn tables(&mut self) -> Result<Vec<TableId>> {
        Ok(self
            .dump(MsgType::GetTable, 0, "list tables", |_| {})?
            .into_iter()
            .filter_map(|(f, p)| Some((f, attr_str(&p, NFTA_TABLE_NAME)?)))
            .collect())
    }

    /// The elements of a set: (key, data). `None` when the table or set does not exist.
    pub(crate) fn set_elems(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
    ) -> Result<Option<Vec<ElemKv>>> {
        let what = format!("list set {} {table} {set}", family.as_str());
        let objs = match self.dump(MsgType::GetSetElem, family as u8, &what, |b| {
            put_str(b, NFTA_SET_ELEM_LIST_TABLE, table);
            put_str(b, NFTA_SET_ELEM_LIST_SET, set);
        }) {
            Ok(o) => o,
            Err(NetError::Nft { detail, .. })
                if detail.ends_with(&std::io::Error::from(Errno::ENOENT).to_string()) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for (_, p) in objs {
            let Some(list) = attr(&p, NFTA_SET_ELEM_LIST_ELEMENTS) else {
                continue;
            };
            for (_, el) in attrs(list) {
                let value = |ty| attr(el, ty).and_then(|d| attr(d, NFTA_DATA_VALUE));
                if let Some(k) = value(NFTA_SET_ELEM_KEY) {
                    out.push((k.to_vec(), value(NFTA_SET_ELEM_DATA).map(<[u8]>::to_vec)));
                }
            }
        }
        Ok(Some(out))
    }

    /// The rules of a chain (handle, comment); `None` when the chain does not exist.
    pub(crate) fn rules(
        &mut self,
        family: Family,
        table: &str,
        chain: &str,
    ) -> Result<Option<Vec<RuleInfo>>> {
        let what = format!("list chain {} {table} {chain}", family.as_str());
        let objs = match self.dump(MsgType::GetRule, family as u8, &what, |b| {
            put_str(b, NFTA_RULE_TABLE, table);
            put_str(b, NFTA_RULE_CHAIN, chain);
        }) {
            Ok(o) => o,
            Err(NetError::Nft { detail, .. })
                if detail.ends_with(&std::io::Error::from(Errno::ENOENT).to_string()) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        Ok(Some(
            objs.into_iter()
                .filter(|(_, p)| {
                    attr_str(p, NFTA_RULE_TABLE).as_deref() == Some(table)
                        && attr_str(p, NFTA_RULE_CHAIN).as_deref() == Some(chain)
                })
                .filter_map(|(_, p)| {
                    let h = attr(&p, NFTA_RULE_HANDLE)?;
                    let handle = u64::from_be_bytes(h.try_into().ok()?);
                    let comment = attr(&p, NFTA_RULE_USERDATA).and_then(comment_of_udata);
                    Some(RuleInfo { handle, comment })
                })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_with_padding_and_nesting() {
        let mut b = Vec::new();
        put_str(&mut b, 1, "abc");
        let n = nest_start(&mut b, 2);
        put_be32(&mut b, 1, 7);
        put_attr(&mut b, 2, &[1, 2, 3, 4, 5]);
        nest_end(&mut b, n);
        assert_eq!(b.len() % 4, 0);
        let all: Vec<_> = attrs(&b).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], (1, &b"abc\0"[..]));
        let inner: Vec<_> = attrs(all[1].1).collect();
        assert_eq!(
            inner,
            vec![(1, &[0, 0, 0, 7][..]), (2, &[1, 2, 3, 4, 5][..])]
        );
    }

    #[test]
    fn batch_framing_and_comments() {
        let mut batch = Batch::new();
        batch.add_table(Family::Inet, "t");
        batch.add_rule(
            Family::Ip,
            "filter",
            "FORWARD",
            &[Expr::Verdict {
                code: NF_ACCEPT,
                chain: None,
            }],
            Some("vmsan"),
            false,
        );
        let (buf, msgs, begin) = batch.finish();
        assert_eq!(msgs.len(), 2);
        // begin, 2 messages, end; every length is consistent.
        let mut at = 0;
        let mut seqs = Vec::new();
        while at < buf.len() {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            seqs.push(u32::from_ne_bytes(buf[at + 8..at + 12].try_into().unwrap()));
            at += len;
        }
        assert_eq!(at, buf.len());
        assert_eq!(seqs, vec![begin, begin + 1, begin + 2, begin + 3]);
        assert_eq!(
            comment_of_udata(&rule_comment_udata("vmsan")).as_deref(),
            Some("vmsan")
        );
    }
}
