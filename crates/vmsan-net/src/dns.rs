//! The per-VM DNS filter.
//!
//! It listens (UDP, and TCP for DNS-over-TCP) on the TAP's host address inside the VM's
//! namespace, the only DNS server the guest can reach. Queries for names outside the allow-list get `REFUSED`; the others are
//! forwarded to the configured upstream resolvers, and every `A` record of the answer is put
//! into the VM's nftables set (with the record's TTL as timeout) **before** the answer is
//! passed back, so the guest's connection that follows the lookup is already allowed.
//!
//! ```no_run
//! # async fn f(net: vmsan_net::VmNet) -> vmsan_net::Result<()> {
//! use std::sync::Arc;
//! use vmsan_net::dns::{DnsAllow, DnsFilter, NftSetUpdater};
//! let updater = Arc::new(NftSetUpdater::new(net.netns_path.clone()));
//! let filter = DnsFilter::bind(
//!     Some(&net.netns_path),
//!     net.dns_listen_addr(),
//!     None,
//!     DnsAllow::of(&net.policy),
//!     net.dns_upstreams.clone(),
//!     updater,
//! )?;
//! let domains = filter.domains(); // `domains.set_policy(..)` on `vmsan network`
//! tokio::spawn(filter.run());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;

use crate::error::{NetError, Result};
use crate::netns;
use crate::nfnl::Socket;
use crate::nft;
use crate::policy::{DomainPattern, Policy};

/// DNS header length.
const HDR: usize = 12;
/// Largest UDP message handled.
const MAX_MSG: usize = 4096;
/// How long one upstream gets to answer.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// A parsed query: the only things the filter needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Message id.
    pub id: u16,
    /// Lower-case name without the trailing dot.
    pub name: String,
    /// Query type (1 = A, 28 = AAAA, ...).
    pub qtype: u16,
    /// Offset just past the question.
    pub question_end: usize,
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

/// Reads a (possibly compressed) name at `at`; returns it and the offset after it.
fn read_name(b: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *b.get(at)?;
        if len & 0xc0 == 0xc0 {
            let ptr = usize::from(read_u16(b, at)? & 0x3fff);
            end.get_or_insert(at + 2);
            jumps += 1;
            if jumps > 16 || ptr >= b.len() {
                return None;
            }
            at = ptr;
            continue;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        if len == 0 {
            end.get_or_insert(at + 1);
            break;
        }
        let l = b.get(at + 1..at + 1 + usize::from(len))?;
        labels.push(String::from_utf8_lossy(l).to_ascii_lowercase());
        at += 1 + usize::from(len);
        if labels.len() > 127 {
            return None;
        }
    }
    Some((labels.join("."), end?))
}

/// Parses a standard query with exactly one question.
pub fn parse_query(b: &[u8]) -> Option<Query> {
    if b.len() < HDR {
        return None;
    }
    let flags = read_u16(b, 2)?;
    let qr = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0xf;
    if qr || opcode != 0 || read_u16(b, 4)? != 1 {
        return None;
    }
    let (name, at) = read_name(b, HDR)?;
    let qtype = read_u16(b, at)?;
    read_u16(b, at + 2)?;
    Some(Query {
        id: read_u16(b, 0)?,
        name,
        qtype,
        question_end: at + 4,
    })
}

/// An answer to `query` (the original message) with response code `rcode` and no records.
pub fn error_response(query: &[u8], q: &Query, rcode: u8) -> Vec<u8> {
    let mut out = query[..q.question_end].to_vec();
    let rd = out[2] & 0x01;
    out[2] = 0x80 | rd; // QR, opcode 0, RD copied
    out[3] = 0x80 | (rcode & 0x0f); // RA
    for b in &mut out[6..HDR] {
        *b = 0;
    }
    out
}

/// The `A` records (address, TTL) in the answer section of a response.
pub fn a_records(b: &[u8]) -> Vec<(Ipv4Addr, u32)> {
    let mut out = Vec::new();
    let (Some(qd), Some(an)) = (read_u16(b, 4), read_u16(b, 6)) else {
        return out;
    };
    let mut at = HDR;
    for _ in 0..qd {
        let Some((_, end)) = read_name(b, at) else {
            return out;
        };
        at = end + 4;
    }
    for _ in 0..an {
        let Some((_, end)) = read_name(b, at) else {
            return out;
        };
        let (Some(rtype), Some(class), Some(ttl), Some(rdlen)) = (
            read_u16(b, end),
            read_u16(b, end + 2),
            read_u32(b, end + 4),
            read_u16(b, end + 8),
        ) else {
            return out;
        };
        let data = end + 10;
        let Some(rdata) = b.get(data..data + usize::from(rdlen)) else {
            return out;
        };
        if rtype == 1 && class == 1 && rdata.len() == 4 {
            out.push((Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]), ttl));
        }
        at = data + usize::from(rdlen);
    }
    out
}

/// Puts learnt addresses where the firewall looks for them.
pub trait SetUpdater: Send + Sync + std::fmt::Debug + 'static {
    /// Adds `(address, ttl seconds)` entries; returns once they are in force. Blocking.
    fn add(&self, entries: &[(Ipv4Addr, u32)]) -> Result<()>;
}

/// The real updater: one nftables transaction over netlink in the VM's namespace per
/// answer, on a socket opened there once and kept (reopened after an error).
#[derive(Debug)]
pub struct NftSetUpdater {
    netns: PathBuf,
    sock: Mutex<Option<Socket>>,
}

impl NftSetUpdater {
    /// Updates the set of the VM whose namespace is bound at `netns`.
    pub fn new(netns: PathBuf) -> Self {
        Self {
            netns,
            sock: Mutex::new(None),
        }
    }
}

impl SetUpdater for NftSetUpdater {
    fn add(&self, entries: &[(Ipv4Addr, u32)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut guard = match self.sock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut sock = match guard.take() {
            Some(s) => s,
            None => netns::run_in(&self.netns, Socket::open)?,
        };
        let r = nft::dns_update(entries)
            .apply_on(&mut sock)
            .map_err(|e| nft::in_ns(e, Some(&self.netns)));
        if r.is_ok() {
            *guard = Some(sock);
        }
        r
    }
}

/// Which names the filter answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DnsAllow {
    /// Every name (policy `allow-all`).
    Any,
    /// No name (policy `deny-all`).
    #[default]
    Nothing,
    /// Names matching one of the patterns (policy `custom`).
    List(Vec<DomainPattern>),
}

impl DnsAllow {
    /// What `policy` allows.
    pub fn of(policy: &Policy) -> Self {
        match policy {
            Policy::AllowAll => Self::Any,
            Policy::DenyAll => Self::Nothing,
            Policy::Custom(c) => Self::List(c.allowed_domains.clone()),
        }
    }
}

/// The allow-list, shared with the running filter (swap it on a policy change).
#[derive(Debug, Clone, Default)]
pub struct AllowedDomains(Arc<RwLock<DnsAllow>>);

impl AllowedDomains {
    /// Replaces the list.
    pub fn set(&self, allow: DnsAllow) {
        match self.0.write() {
            Ok(mut g) => *g = allow,
            Err(p) => *p.into_inner() = allow,
        }
    }

    /// Follows a policy change.
    pub fn set_policy(&self, policy: &Policy) {
        self.set(DnsAllow::of(policy));
    }

    /// Whether `name` is allowed.
    pub fn allows(&self, name: &str) -> bool {
        let g = match self.0.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match &*g {
            DnsAllow::Any => true,
            DnsAllow::Nothing => false,
            DnsAllow::List(l) => l.iter().any(|d| d.matches(name)),
        }
    }
}

type Pending = Arc<Mutex<HashMap<u16, (SocketAddr, oneshot::Sender<Vec<u8>>)>>>;

/// The DNS filter of one VM.
#[derive(Debug)]
pub struct DnsFilter {
    listen: UdpSocket,
    listen_tcp: TcpListener,
    upstream: UdpSocket,
    upstream_ns: Option<PathBuf>,
    upstreams: Vec<SocketAddrV4>,
    domains: AllowedDomains,
    updater: Arc<dyn SetUpdater>,
}

fn bind_udp(ns: Option<&Path>, addr: SocketAddrV4) -> Result<std::net::UdpSocket> {
    netns::run_in_opt(ns, || {
        let s = std::net::UdpSocket::bind(addr)
            .map_err(|e| NetError::sys(format!("bind DNS socket {addr}"), e))?;
        s.set_nonblocking(true)
            .map_err(|e| NetError::sys("nonblocking DNS socket", e))?;
        Ok(s)
    })
}

impl DnsFilter {
    /// Binds the listening socket at `listen` inside `listen_ns` (the VM namespace) and the
    /// forwarding socket inside `upstream_ns` (`None`: the caller's namespace, the host).
    /// Must be called inside a tokio runtime.
    pub fn bind(
        listen_ns: Option<&Path>,
        listen: SocketAddrV4,
        upstream_ns: Option<&Path>,
        allowed: DnsAllow,
        upstreams: Vec<SocketAddrV4>,
        updater: Arc<dyn SetUpdater>,
    ) -> Result<Self> {
        if upstreams.is_empty() {
            return Err(NetError::invalid("dns upstreams", "none configured"));
        }
        let l = bind_udp(listen_ns, listen)?;
        let t = netns::run_in_opt(listen_ns, || {
            let s = std::net::TcpListener::bind(listen)
                .map_err(|e| NetError::sys(format!("bind DNS TCP socket {listen}"), e))?;
            s.set_nonblocking(true)
                .map_err(|e| NetError::sys("nonblocking DNS TCP socket", e))?;
            Ok(s)
        })?;
        let u = bind_udp(upstream_ns, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        let domains = AllowedDomains::default();
        domains.set(allowed);
        Ok(Self {
            listen: UdpSocket::from_std(l).map_err(|e| NetError::sys("register DNS socket", e))?,
            listen_tcp: TcpListener::from_std(t)
                .map_err(|e| NetError::sys("register DNS TCP socket", e))?,
            upstream_ns: upstream_ns.map(Path::to_path_buf),
            upstream: UdpSocket::from_std(u)
                .map_err(|e| NetError::sys("register upstream socket", e))?,
            upstreams,
            domains,
            updater,
        })
    }

    /// The shared allow-list.
    pub fn domains(&self) -> AllowedDomains {
        self.domains.clone()
    }

    /// Serves until the listening socket fails (or the task is dropped).
    pub async fn run(self) -> Result<()> {
        let listen = Arc::new(self.listen);
        let upstream = Arc::new(self.upstream);
        let pending: Pending = Arc::default();
        let rx = tokio::spawn(upstream_reader(upstream.clone(), pending.clone()));
        let upstreams = Arc::new(self.upstreams);
        let tcp = tokio::spawn(serve_tcp(
            self.listen_tcp,
            TcpCtx {
                upstreams: upstreams.clone(),
                upstream_ns: self.upstream_ns.clone(),
                domains: self.domains.clone(),
                updater: self.updater.clone(),
            },
        ));
        let mut next_id: u16 = rand_seed();
        let mut buf = vec![0u8; MAX_MSG];
        let r = loop {
            let (n, peer) = match listen.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => break Err(NetError::sys("DNS filter receive", e)),
            };
            let msg = buf[..n].to_vec();
            let Some(q) = parse_query(&msg) else { continue };
            if !self.domains.allows(&q.name) {
                tracing::debug!(name = %q.name, "DNS query refused");
                let _ = listen.send_to(&error_response(&msg, &q, 5), peer).await;
                continue;
            }
            let id = {
                let map = match pending.lock() {
                    Ok(m) => m,
                    Err(p) => p.into_inner(),
                };
                let mut tries = 0u32;
                while map.contains_key(&next_id) && tries < 65_536 {
                    next_id = next_id.wrapping_add(1);
                    tries += 1;
                }
                next_id = next_id.wrapping_add(1);
                next_id.wrapping_sub(1)
            };
            tokio::spawn(forward(
                ForwardCtx {
                    listen: listen.clone(),
                    upstream: upstream.clone(),
                    upstreams: upstreams.clone(),
                    pending: pending.clone(),
                    updater: self.updater.clone(),
                },
                msg,
                q,
                id,
                peer,
            ));
        };
        rx.abort();
        tcp.abort();
        r
    }
}

fn rand_seed() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (t ^ (t >> 16)) as u16
}

async fn upstream_reader(sock: Arc<UdpSocket>, pending: Pending) {
    let mut buf = vec![0u8; MAX_MSG];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            return;
        };
        let Some(id) = read_u16(&buf[..n], 0) else {
            continue;
        };
        let mut map = match pending.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        // Only the server the query went to may answer it.
        if map.get(&id).is_some_and(|(to, _)| *to == from)
            && let Some((_, tx)) = map.remove(&id)
        {
            let _ = tx.send(buf[..n].to_vec());
        }
    }
}

struct ForwardCtx {
    listen: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    upstreams: Arc<Vec<SocketAddrV4>>,
    pending: Pending,
    updater: Arc<dyn SetUpdater>,
}

async fn forward(ctx: ForwardCtx, mut msg: Vec<u8>, q: Query, id: u16, peer: SocketAddr) {
    msg[0..2].copy_from_slice(&id.to_be_bytes());
    let mut answer = None;
    for up in ctx.upstreams.iter() {
        let to = SocketAddr::V4(*up);
        let (tx, rx) = oneshot::channel();
        match ctx.pending.lock() {
            Ok(mut m) => m.insert(id, (to, tx)),
            Err(p) => p.into_inner().insert(id, (to, tx)),
        };
        if ctx.upstream.send_to(&msg, to).await.is_err() {
            continue;
        }
        if let Ok(Ok(resp)) = tokio::time::timeout(UPSTREAM_TIMEOUT, rx).await {
            answer = Some(resp);
            break;
        }
    }
    match ctx.pending.lock() {
        Ok(mut m) => m.remove(&id),
        Err(p) => p.into_inner().remove(&id),
    };
    msg[0..2].copy_from_slice(&q.id.to_be_bytes());
    let Some(mut resp) = answer else {
        let _ = ctx.listen.send_to(&error_response(&msg, &q, 2), peer).await;
        return;
    };
    resp[0..2].copy_from_slice(&q.id.to_be_bytes());
    let records = a_records(&resp);
    if !records.is_empty() {
        let up = ctx.updater.clone();
        let r = tokio::task::spawn_blocking(move || up.add(&records)).await;
        if !matches!(r, Ok(Ok(()))) {
            tracing::warn!(name = %q.name, "could not add DNS answers to the firewall set");
            let _ = ctx.listen.send_to(&error_response(&msg, &q, 2), peer).await;
            return;
        }
    }
    let _ = ctx.listen.send_to(&resp, peer).await;
}

/// Most DNS-over-TCP connections served at once (each holds a socket and a task).
pub const MAX_TCP_CONNECTIONS: usize = 64;
/// How long a DNS-over-TCP connection may stay idle between queries.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct TcpCtx {
    upstreams: Arc<Vec<SocketAddrV4>>,
    upstream_ns: Option<PathBuf>,
    domains: AllowedDomains,
    updater: Arc<dyn SetUpdater>,
}

/// Accepts DNS-over-TCP connections (RFC 7766: messages with a 2-byte length prefix, several
/// per connection) until the listener fails.
async fn serve_tcp(listener: TcpListener, ctx: TcpCtx) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            return;
        };
        // Over the limit, the connection is closed at once.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            serve_tcp_conn(conn, ctx).await;
            drop(permit);
        });
    }
}

async fn read_framed<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.ok()?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut msg).await.ok()?;
    Some(msg)
}

async fn write_framed<S: tokio::io::AsyncWrite + Unpin>(s: &mut S, msg: &[u8]) -> Option<()> {
    let len = u16::try_from(msg.len()).ok()?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    s.write_all(&out).await.ok()
}

async fn serve_tcp_conn(mut conn: TcpStream, ctx: TcpCtx) {
    loop {
        let Ok(Some(msg)) = tokio::time::timeout(TCP_IDLE_TIMEOUT, read_framed(&mut conn)).await
        else {
            return;
        };
        let Some(q) = parse_query(&msg) else { return };
        let reply = if ctx.domains.allows(&q.name) {
            match forward_tcp(&ctx, &msg).await {
                Some(resp) => {
                    let records = a_records(&resp);
                    if records.is_empty() || add_records(&ctx.updater, records).await {
                        resp
                    } else {
                        tracing::warn!(name = %q.name, "could not add DNS answers to the firewall set");
                        error_response(&msg, &q, 2)
                    }
                }
                None => error_response(&msg, &q, 2),
            }
        } else {
            tracing::debug!(name = %q.name, "DNS query (TCP) refused");
            error_response(&msg, &q, 5)
        };
        if write_framed(&mut conn, &reply).await.is_none() {
            return;
        }
    }
}

/// Puts `records` into the firewall set; true once they are in force.
async fn add_records(updater: &Arc<dyn SetUpdater>, records: Vec<(Ipv4Addr, u32)>) -> bool {
    let up = updater.clone();
    matches!(
        tokio::task::spawn_blocking(move || up.add(&records)).await,
        Ok(Ok(()))
    )
}

/// Asks the upstreams in turn over TCP (from the upstream namespace); the first answer
/// with the query's id wins.
async fn forward_tcp(ctx: &TcpCtx, msg: &[u8]) -> Option<Vec<u8>> {
    let id = read_u16(msg, 0)?;
    for up in ctx.upstreams.iter() {
        let ns = ctx.upstream_ns.clone();
        let Ok(Ok(sock)) = tokio::task::spawn_blocking(move || {
            netns::run_in_opt(ns.as_deref(), || {
                tokio::net::TcpSocket::new_v4()
                    .map_err(|e| NetError::sys("upstream DNS TCP socket", e))
            })
        })
        .await
        else {
            continue;
        };
        let exchange = async {
            let mut s = sock.connect(SocketAddr::V4(*up)).await.ok()?;
            write_framed(&mut s, msg).await?;
            read_framed(&mut s).await
        };
        if let Ok(Some(resp)) = tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await
            && read_u16(&resp, 0) == Some(id)
        {
            return Some(resp);
        }
    }
    None
}

/// Builds a query for `name`/`qtype` (for tests and health checks).
pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(HDR + name.len() + 6);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        let l = label.len().min(63);
        out.push(l as u8);
        out.extend_from_slice(&label.as_bytes()[..l]);
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out
}

/// Builds a response to `query` with the given `A` records (for test servers).
pub fn build_a_response(
    query: &[u8],
    q: &Query,
    answers: &[(Ipv4Addr, u32)],
    rcode: u8,
) -> Vec<u8> {
    let mut out = error_response(query, q, rcode);
    let n = u16::try_from(answers.len()).unwrap_or(u16::MAX);
    out[6..8].copy_from_slice(&n.to_be_bytes());
    for (ip, ttl) in answers.iter().take(usize::from(n)) {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trip_and_answers() {
        let q = build_query(0x1234, "WWW.Example.com.", 1);
        let p = parse_query(&q).unwrap();
        assert_eq!(p.id, 0x1234);
        assert_eq!(p.name, "www.example.com");
        assert_eq!(p.qtype, 1);
        let resp = build_a_response(
            &q,
            &p,
            &[
                (Ipv4Addr::new(1, 2, 3, 4), 300),
                (Ipv4Addr::new(5, 6, 7, 8), 60),
            ],
            0,
        );
        assert_eq!(
            a_records(&resp),
            vec![
                (Ipv4Addr::new(1, 2, 3, 4), 300),
                (Ipv4Addr::new(5, 6, 7, 8), 60)
            ]
        );
        assert!(parse_query(&resp).is_none(), "responses are not queries");
        let refused = error_response(&q, &p, 5);
        assert_eq!(refused[3] & 0x0f, 5);
        assert_eq!(a_records(&refused), vec![]);
    }

    #[test]
    fn malformed_messages_do_not_panic() {
        assert!(parse_query(&[]).is_none());
        assert!(parse_query(&[0; 12]).is_none());
        let mut loopy = build_query(1, "a.b", 1);
        loopy[12] = 0xc0;
        loopy[13] = 12; // pointer to itself
        assert!(parse_query(&loopy).is_none());
        for len in 0..40 {
            let q = build_query(7, "example.com", 1);
            let _ = a_records(&q[..len.min(q.len())]);
        }
    }
}
