//! Test world for the privileged network tests: throw-away namespaces only.
//!
//! - `host`: stands in for the real host (the product's host side runs here);
//! - `inet`: the "internet", reached through the host's default route, with test servers;
//! - one `guest` namespace per VM, attached to the VM's TAP by a frame relay (two TAP fds,
//!   like a VMM would hold), so guest packets really enter through `tap0`.
//!
//! Every namespace, relay and VM network is removed by Drop guards, also on panic.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmsan_net::{HostConfig, Slot, VmNet, VmNetSpec, netns};

/// Probe timeout for traffic expected to be dropped (RTT here is microseconds).
pub const PROBE: Duration = Duration::from_millis(400);

pub const HOST_UP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const INET: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// A known DoH resolver address (also a plain-DNS server in the test internet).
pub const DOH: Ipv4Addr = Ipv4Addr::new(1, 1, 1, 1);
pub const GOOGLE: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);
/// What `allowed.test` resolves to.
pub const ALLOWED_IP: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);
/// Never resolved by anyone.
pub const UNRESOLVED_IP: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 35);
/// What `tcp.test` resolves to (only ever asked over DNS-over-TCP).
pub const TCP_ONLY_IP: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 36);
pub const CIDR_OK_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const CIDR_DENIED_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 200);
/// Addresses in the private and shared ranges, served by the test internet like any other
/// (what `lan.test` resolves to is the first one).
pub const LAN_IPS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(10, 1, 2, 3),
    Ipv4Addr::new(172, 16, 5, 6),
    Ipv4Addr::new(192, 168, 9, 9),
    Ipv4Addr::new(100, 64, 1, 1),
];
/// Port of a TCP service in the host namespace.
pub const HOST_SVC_PORT: u16 = 7000;
/// TCP/UDP port of the service in every guest.
pub const GUEST_SVC_PORT: u16 = 8000;

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns false (and says why) when the test cannot run here.
pub fn can_run() -> bool {
    if !is_root() {
        vmsan_testkit::skip!("needs root (network namespaces, TAPs, nftables)");
        return false;
    }
    if !Path::new("/usr/sbin/nft").exists() && !Path::new("/sbin/nft").exists() {
        vmsan_testkit::skip!("nft not installed (apt-get install nftables)");
        return false;
    }
    if !Path::new("/dev/net/tun").exists() {
        vmsan_testkit::skip!("/dev/net/tun missing");
        return false;
    }
    true
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique `vm-xxxxxxxx` id for this process.
pub fn vm_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let v = (std::process::id() << 12) ^ n ^ 0x5a00_0000;
    format!("vm-{v:08x}")
}

/// Prefix of every namespace this process creates.
pub fn prefix() -> String {
    format!("vmsnt{}-", std::process::id())
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn ip_out(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the `nft` tool in namespace `ns` (tests only: the product talks netlink) with
/// `stdin`; its stdout, or its stderr as the error.
pub fn nft(ns: &Path, args: &[&str], stdin: &str) -> Result<String, String> {
    let bin = ["/usr/sbin/nft", "/sbin/nft"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nft");
    netns::run_in(ns, || {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write nft input");
        Ok(child.wait_with_output().expect("wait for nft"))
    })
    .map_err(|e| e.to_string())
    .and_then(|out| {
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "nft {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
}

/// A named namespace deleted on drop.
pub struct TestNs {
    pub name: String,
    pub path: PathBuf,
}

impl TestNs {
    /// `vmsnt<pid>w-<tag>`: distinct from the VM namespaces' prefix `vmsnt<pid>-`.
    pub fn new(tag: &str) -> Self {
        let name = format!("vmsnt{}w-{tag}", std::process::id());
        let path = netns::create(Path::new(netns::DEFAULT_DIR), &name).expect("create netns");
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Self { name, path }
    }

    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        netns::run_in(&self.path, || Ok(f())).expect("enter netns")
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = netns::delete(&self.path);
    }
}

/// Host + internet with servers.
pub struct World {
    pub inet: TestNs,
    pub host: TestNs,
}

fn serve_tcp(l: TcpListener, banner: &'static [u8]) {
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let _ = c.write_all(banner);
        }
    });
}

fn serve_udp_echo(s: UdpSocket) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
}

/// The test internet's DNS records.
fn dns_answer(msg: &[u8]) -> Option<Vec<u8>> {
    let q = vmsan_net::dns::parse_query(msg)?;
    let answers: Vec<(Ipv4Addr, u32)> = match (q.name.as_str(), q.qtype) {
        ("allowed.test" | "www.wild.test", 1) => vec![(ALLOWED_IP, 300)],
        ("other.test", 1) => vec![(CIDR_OK_IP, 300)],
        ("tcp.test", 1) => vec![(TCP_ONLY_IP, 300)],
        ("lan.test", 1) => vec![(LAN_IPS[0], 300)],
        _ => vec![],
    };
    let rcode = if answers.is_empty() { 3 } else { 0 };
    Some(vmsan_net::dns::build_a_response(msg, &q, &answers, rcode))
}

fn serve_dns(s: UdpSocket) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            if let Some(r) = dns_answer(&buf[..n]) {
                let _ = s.send_to(&r, from);
            }
        }
    });
}

/// DNS over TCP: 2-byte length, message; several per connection.
fn serve_dns_tcp(l: TcpListener) {
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            std::thread::spawn(move || {
                while let Some(msg) = read_framed(&mut c) {
                    let Some(r) = dns_answer(&msg) else { return };
                    if write_framed(&mut c, &r).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn read_framed(c: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    c.read_exact(&mut len).ok()?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    c.read_exact(&mut msg).ok()?;
    Some(msg)
}

fn write_framed(c: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let mut out = (msg.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    c.write_all(&out)
}

impl World {
    pub fn new() -> Self {
        let inet = TestNs::new("w-inet");
        let host = TestNs::new("w-host");
        ip(&[
            "-n", &host.name, "link", "add", "up0", "type", "veth", "peer", "name", "down0",
            "netns", &inet.name,
        ]);
        ip(&[
            "-n",
            &host.name,
            "addr",
            "add",
            "192.0.2.1/24",
            "dev",
            "up0",
        ]);
        ip(&["-n", &host.name, "link", "set", "up0", "up"]);
        ip(&[
            "-n",
            &inet.name,
            "addr",
            "add",
            "192.0.2.100/24",
            "dev",
            "down0",
        ]);
        ip(&["-n", &inet.name, "link", "set", "down0", "up"]);
        ip(&[
            "-n",
            &host.name,
            "route",
            "add",
            "default",
            "via",
            "192.0.2.100",
        ]);
        for a in [
            DOH,
            GOOGLE,
            ALLOWED_IP,
            UNRESOLVED_IP,
            TCP_ONLY_IP,
            CIDR_OK_IP,
            CIDR_DENIED_IP,
        ]
        .into_iter()
        .chain(LAN_IPS)
        {
            ip(&[
                "-n",
                &inet.name,
                "addr",
                "add",
                &format!("{a}/32"),
                "dev",
                "lo",
            ]);
        }
        inet.run(|| {
            for port in [80u16, 443, 853, 5000] {
                let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind tcp");
                serve_tcp(l, b"inet\n");
            }
            // Port 53/tcp: a banner on the resolvers' addresses (to see that nothing gets
            // through), DNS over TCP on INET's (the DNS filter's upstream).
            for a in [DOH, GOOGLE, ALLOWED_IP, CIDR_OK_IP] {
                serve_tcp(TcpListener::bind((a, 53)).expect("bind tcp 53"), b"inet\n");
            }
            serve_dns_tcp(TcpListener::bind((INET, 53)).expect("bind dns tcp"));
            // One socket per address: replies must come from the address asked.
            for a in [
                DOH,
                GOOGLE,
                ALLOWED_IP,
                UNRESOLVED_IP,
                CIDR_OK_IP,
                CIDR_DENIED_IP,
                INET,
            ] {
                for port in [5000u16, 443] {
                    serve_udp_echo(UdpSocket::bind((a, port)).expect("bind udp"));
                }
            }
            for a in [INET, GOOGLE, DOH] {
                serve_dns(UdpSocket::bind((a, 53)).expect("bind dns"));
            }
        });
        host.run(|| {
            let l =
                TcpListener::bind((Ipv4Addr::UNSPECIFIED, HOST_SVC_PORT)).expect("bind host svc");
            serve_tcp(l, b"host\n");
        });
        Self { inet, host }
    }

    pub fn host_config(&self) -> HostConfig {
        HostConfig {
            host_netns: Some(self.host.path.clone()),
            netns_dir: PathBuf::from(netns::DEFAULT_DIR),
            netns_prefix: prefix(),
            lock_path: self.lock_path(),
            ..HostConfig::default()
        }
    }

    fn lock_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/lock/vmsnt{}.lock", std::process::id()))
    }

    /// Sets up a VM network; the guard tears it down.
    pub fn vm(&self, spec: VmNetSpec) -> VmGuard {
        let hc = self.host_config();
        let net = vmsan_net::setup(&hc, &spec).expect("setup");
        VmGuard { host: hc, net }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.lock_path());
    }
}

pub fn spec(slot: u32, policy: vmsan_net::Policy) -> VmNetSpec {
    VmNetSpec {
        vm_id: vm_id(),
        slot: Slot::new(slot).expect("slot"),
        jail_uid: 4242,
        jail_gid: 4343,
        policy,
        published_ports: vec![],
        bandwidth: None,
        dns_upstreams: vec![SocketAddrV4::new(INET, 53)],
        allow_udp: false,
        allow_lan: false,
    }
}

pub struct VmGuard {
    pub host: HostConfig,
    pub net: VmNet,
}

impl Drop for VmGuard {
    fn drop(&mut self) {
        if let Err(e) = vmsan_net::teardown(&self.host, &self.net.vm_id, self.net.slot) {
            eprintln!("teardown of {}: {e}", self.net.vm_id);
        }
    }
}

/// Copies frames from `from` to `to` until `stop` is readable.
fn pump(from: std::sync::Arc<OwnedFd>, to: std::sync::Arc<OwnedFd>, stop: std::sync::Arc<OwnedFd>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut buf = vec![0u8; 65_536];
    loop {
        let mut fds = [
            PollFd::new(from.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            return;
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return;
        }
        match nix::unistd::read(from.as_fd(), &mut buf) {
            Ok(n) if n > 0 => {
                let _ = nix::unistd::write(to.as_fd(), &buf[..n]);
            }
            Ok(_) => return,
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(_) => return,
        }
    }
}

/// A guest: a namespace whose `eth0` is a TAP relayed to the VM's `tap0`.
pub struct Guest {
    pub ns: TestNs,
    pub ip: Ipv4Addr,
    stop_w: Option<OwnedFd>,
    threads: Vec<JoinHandle<()>>,
}

impl Guest {
    pub fn attach(net: &VmNet, tag: &str) -> Self {
        let ns = TestNs::new(tag);
        let vm_tap = netns::run_in(&net.netns_path, || vmsan_net::open_tap(&net.tap_name))
            .expect("open VM tap");
        let eth0 = ns
            .run(|| vmsan_net::open_tap("eth0"))
            .expect("create guest eth0");
        let a = net.addrs;
        ip(&[
            "-n",
            &ns.name,
            "link",
            "set",
            "eth0",
            "address",
            &a.guest_mac_string(),
            "up",
        ]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{}/30", a.guest_ip),
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            &ns.name,
            "route",
            "add",
            "default",
            "via",
            &a.tap_ip.to_string(),
        ]);
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let stop = std::sync::Arc::new(r);
        let vm_tap = std::sync::Arc::new(vm_tap);
        let eth0 = std::sync::Arc::new(eth0);
        let threads = vec![
            {
                let (a, b, s) = (vm_tap.clone(), eth0.clone(), stop.clone());
                std::thread::spawn(move || pump(a, b, s))
            },
            {
                let (a, b, s) = (eth0, vm_tap, stop);
                std::thread::spawn(move || pump(a, b, s))
            },
        ];
        Self {
            ns,
            ip: a.guest_ip,
            stop_w: Some(w),
            threads,
        }
    }

    /// Starts a TCP banner server and a UDP echo on GUEST_SVC_PORT in the guest.
    pub fn serve(&self) {
        self.ns.run(|| {
            let l =
                TcpListener::bind((Ipv4Addr::UNSPECIFIED, GUEST_SVC_PORT)).expect("bind guest svc");
            serve_tcp(l, b"guest\n");
            serve_udp_echo(
                UdpSocket::bind((Ipv4Addr::UNSPECIFIED, GUEST_SVC_PORT)).expect("bind guest udp"),
            );
        });
    }

    pub fn tcp(&self, ip: Ipv4Addr, port: u16) -> Option<String> {
        self.ns.run(|| tcp_probe(ip, port))
    }

    pub fn udp(&self, ip: Ipv4Addr, port: u16) -> bool {
        self.ns.run(|| udp_probe(ip, port))
    }

    pub fn icmp(&self, ip: Ipv4Addr) -> bool {
        self.ns.run(|| icmp_probe(ip))
    }

    /// Sends a DNS query to `server` over TCP; `Some((rcode, A records))` when answered.
    pub fn dns_tcp(&self, server: Ipv4Addr, name: &str) -> Option<(u8, Vec<Ipv4Addr>)> {
        self.ns.run(|| dns_tcp_probe(server, name))
    }

    /// Sends a DNS query to `server` over UDP; `Some((rcode, A records))` when answered.
    pub fn dns(&self, server: Ipv4Addr, name: &str) -> Option<(u8, Vec<Ipv4Addr>)> {
        self.ns.run(|| dns_probe(server, name))
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(w) = self.stop_w.take() {
            let _ = nix::unistd::write(&w, b"x");
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Connects and reads the banner; `None` when the connection fails or nothing comes back.
pub fn tcp_probe(ip: Ipv4Addr, port: u16) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::from((ip, port)), PROBE).ok()?;
    s.set_read_timeout(Some(PROBE)).ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

pub fn udp_probe(ip: Ipv4Addr, port: u16) -> bool {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
    s.set_read_timeout(Some(PROBE)).expect("timeout");
    if s.send_to(b"ping", (ip, port)).is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.recv_from(&mut buf), Ok((4, _)))
}

pub fn dns_probe(server: Ipv4Addr, name: &str) -> Option<(u8, Vec<Ipv4Addr>)> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    let q = vmsan_net::dns::build_query(0x4242, name, 1);
    s.send_to(&q, (server, 53)).ok()?;
    let mut buf = [0u8; 1500];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    let r = &buf[..n];
    Some((
        r[3] & 0x0f,
        vmsan_net::dns::a_records(r)
            .into_iter()
            .map(|(a, _)| a)
            .collect(),
    ))
}

pub fn dns_tcp_probe(server: Ipv4Addr, name: &str) -> Option<(u8, Vec<Ipv4Addr>)> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::from((server, 53)), PROBE).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(3000))).ok()?;
    // Two queries on one connection, as RFC 7766 clients may send.
    let mut last = None;
    for id in [0x4243u16, 0x4244] {
        write_framed(&mut s, &vmsan_net::dns::build_query(id, name, 1)).ok()?;
        let r = read_framed(&mut s)?;
        if r.get(0..2) != Some(&id.to_be_bytes()[..]) {
            return None;
        }
        last = Some((
            r[3] & 0x0f,
            vmsan_net::dns::a_records(&r)
                .into_iter()
                .map(|(a, _)| a)
                .collect(),
        ));
    }
    last
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in b.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ICMP echo over a raw socket; true when a matching echo reply arrives in time.
pub fn icmp_probe(ip: Ipv4Addr) -> bool {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, recvfrom, sendto,
        setsockopt, socket, sockopt,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::empty(),
        SockProtocol::Icmp,
    )
    .expect("raw socket");
    let tv = nix::sys::time::TimeVal::new(0, 100_000);
    setsockopt(&fd, sockopt::ReceiveTimeout, &tv).expect("rcvtimeo");
    let ident: u16 = (std::process::id() & 0xffff) as u16;
    let mut pkt = vec![8u8, 0, 0, 0];
    pkt.extend_from_slice(&ident.to_be_bytes());
    pkt.extend_from_slice(&1u16.to_be_bytes());
    pkt.extend_from_slice(b"vmsan-probe");
    let c = checksum(&pkt);
    pkt[2..4].copy_from_slice(&c.to_be_bytes());
    let dst = SockaddrIn::from(SocketAddrV4::new(ip, 0));
    if sendto(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &pkt,
        &dst,
        MsgFlags::empty(),
    )
    .is_err()
    {
        return false;
    }
    let deadline = Instant::now() + PROBE;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let Ok((n, from)) = recvfrom::<SockaddrIn>(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut buf)
        else {
            continue;
        };
        if from.map(|f| f.ip()) != Some(ip) || n < 28 {
            continue;
        }
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        if buf.get(ihl) == Some(&0) && buf.get(ihl + 4..ihl + 6) == Some(&ident.to_be_bytes()[..]) {
            return true;
        }
    }
    false
}
