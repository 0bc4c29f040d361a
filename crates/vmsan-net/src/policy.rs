//! Egress policies, CIDRs, domain patterns and published ports (pure, validated types).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};

/// An IPv4 network (`a.b.c.d/len`). Host bits must be zero; IPv6 is refused.
///
/// The one CIDR type of vmsan: the CLI's validation (`vmsan-core`'s `parse_cidr`, with its
/// own messages and host bits cleared) produces it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Cidr {
    /// Validates that `prefix <= 32` and host bits are zero.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self> {
        if prefix > 32 {
            return Err(NetError::invalid("CIDR", format!("prefix /{prefix} > 32")));
        }
        let c = Self { addr, prefix };
        if c.network() != addr {
            return Err(NetError::invalid(
                "CIDR",
                format!(
                    "{addr}/{prefix} has host bits set (did you mean {}?)",
                    c.canon()
                ),
            ));
        }
        Ok(c)
    }

    pub(crate) fn new_unchecked(addr: Ipv4Addr, prefix: u8) -> Self {
        Self { addr, prefix }
    }

    /// The network `addr` lies in, `prefix` (0..=32) bits long: host bits are cleared
    /// (`10.1.2.3/8` is `10.0.0.0/8`). `None` for a prefix over 32.
    pub fn containing(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then(|| Self::new_unchecked(addr, prefix).masked())
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The network `addr/prefix` lies in (host bits cleared).
    pub(crate) fn masked(&self) -> Self {
        Self {
            addr: self.network(),
            prefix: self.prefix,
        }
    }

    fn canon(&self) -> String {
        format!("{}/{}", self.network(), self.prefix)
    }

    /// Network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self> {
        if s.contains(':') {
            return Err(NetError::invalid(
                "CIDR",
                format!("{s:?}: IPv6 is not supported (guest IPv6 is off)"),
            ));
        }
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| NetError::invalid("CIDR", format!("{s:?}: bad IPv4 address")))?;
        let prefix = match p {
            None => 32,
            Some(p) if !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .map_err(|_| NetError::invalid("CIDR", format!("{s:?}: bad prefix")))?,
            Some(_) => return Err(NetError::invalid("CIDR", format!("{s:?}: bad prefix"))),
        };
        Self::new(addr, prefix)
    }
}

impl TryFrom<String> for Cidr {
    type Error = NetError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

/// A domain allowed by a policy: `example.com` (exactly that name) or `*.example.com` (any
/// name below it, not the apex). Stored lower-case without a trailing dot.
///
/// One trailing dot is accepted and dropped: `example.com.` is the absolute form of
/// `example.com` (the dot is the root). Two are refused: `example.com..` has an empty label,
/// which no DNS name has (RFC 1035 §3.1). The CLI's validation (`vmsan-core`'s
/// `parse_domain`) applies the same rule, with its own messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainPattern {
    wildcard: bool,
    name: String,
}

impl DomainPattern {
    /// Whether this is a `*.` wildcard.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The name without its `*.` prefix.
    pub fn base(&self) -> &str {
        &self.name
    }

    /// Whether `qname` (any case, optional trailing dot) is allowed by this pattern.
    pub fn matches(&self, qname: &str) -> bool {
        let q = without_root_dot(qname).to_ascii_lowercase();
        if self.wildcard {
            q.len() > self.name.len() + 1
                && q.ends_with(&self.name)
                && q.as_bytes()[q.len() - self.name.len() - 1] == b'.'
        } else {
            q == self.name
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

/// `name` without the one trailing dot of its absolute form.
fn without_root_dot(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

impl FromStr for DomainPattern {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self> {
        let lower = without_root_dot(s).to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower.clone()),
        };
        let bad = |why: &str| NetError::invalid("domain", format!("{s:?}: {why}"));
        if name.is_empty() || name.len() > 253 {
            return Err(bad("length must be 1..=253"));
        }
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(bad("each label must be 1..=63 bytes"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(bad("labels may hold only letters, digits, '-' and '_'"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(bad("labels may not start or end with '-'"));
            }
        }
        if !name.contains('.') && wildcard {
            return Err(bad("a wildcard needs at least two labels after '*.'"));
        }
        Ok(Self { wildcard, name })
    }
}

impl TryFrom<String> for DomainPattern {
    type Error = NetError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DomainPattern> for String {
    fn from(d: DomainPattern) -> String {
        d.to_string()
    }
}

/// The rules of a `custom` policy. Denied CIDRs always win.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomPolicy {
    /// Destinations the guest may reach.
    #[serde(default)]
    pub allowed_cidrs: Vec<Cidr>,
    /// Destinations the guest may never reach, even when inside an allowed CIDR or resolved
    /// from an allowed domain.
    #[serde(default)]
    pub denied_cidrs: Vec<Cidr>,
    /// Names whose resolved addresses the guest may reach (on any port, or on `ports`).
    #[serde(default)]
    pub allowed_domains: Vec<DomainPattern>,
    /// When not empty, allowed destinations are reachable on these TCP/UDP ports only.
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// A VM's egress policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Policy {
    /// Everything but the always-blocked traffic (host, other VMs, transit ranges, ICMP, DNS
    /// to other servers, DoT/DoH, UDP unless opted in).
    AllowAll,
    /// Nothing leaves the VM (the DNS filter still answers, but no address is reachable).
    DenyAll,
    /// Allow-lists and deny-lists.
    Custom(CustomPolicy),
}

impl Policy {
    /// Checks limits (at most 1024 CIDRs and domains, ports non-zero).
    pub fn validate(&self) -> Result<()> {
        if let Self::Custom(c) = self {
            if c.allowed_cidrs.len() + c.denied_cidrs.len() > 1024 {
                return Err(NetError::invalid("policy", "more than 1024 CIDRs"));
            }
            if c.allowed_domains.len() > 1024 {
                return Err(NetError::invalid("policy", "more than 1024 domains"));
            }
            if c.ports.contains(&0) {
                return Err(NetError::invalid("policy", "port 0"));
            }
        }
        Ok(())
    }

    /// The allowed domains (empty unless `custom`).
    pub fn allowed_domains(&self) -> &[DomainPattern] {
        match self {
            Self::Custom(c) => &c.allowed_domains,
            _ => &[],
        }
    }
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Guest ports that may never be published: the agent's vsock ports (`vmsan-proto`'s
/// `AGENT_PORT` 1024 and `READY_PORT` 1025; the agent is not on the guest network, this only
/// stops a guest service from posing as it) and 9119, where the Node.js vmsan's agent
/// listened.
pub const RESERVED_GUEST_PORTS: [u16; 3] = [1024, 1025, 9119];

/// `--publish-port host:guest[/tcp|udp]`; plain `P` means `P:P/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedPort {
    /// Port on the host.
    pub host_port: u16,
    /// Port in the guest.
    pub guest_port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

impl PublishedPort {
    /// Checks the ports are non-zero and the guest port is not reserved.
    pub fn validate(&self) -> Result<()> {
        if self.host_port == 0 || self.guest_port == 0 {
            return Err(NetError::invalid("published port", "port 0"));
        }
        if RESERVED_GUEST_PORTS.contains(&self.guest_port) {
            return Err(NetError::invalid(
                "published port",
                format!("guest port {} is reserved for the agent", self.guest_port),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for PublishedPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}/{}",
            self.host_port,
            self.guest_port,
            self.protocol.as_str()
        )
    }
}

impl FromStr for PublishedPort {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            NetError::invalid(
                "published port",
                format!("{s:?} (want host:guest[/tcp|udp])"),
            )
        };
        let (ports, protocol) = match s.rsplit_once('/') {
            Some((p, "tcp")) => (p, Protocol::Tcp),
            Some((p, "udp")) => (p, Protocol::Udp),
            Some(_) => return Err(bad()),
            None => (s, Protocol::Tcp),
        };
        let port = |p: &str| -> Result<u16> {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let (host_port, guest_port) = match ports.split_once(':') {
            Some((h, g)) => (port(h)?, port(g)?),
            None => {
                let p = port(ports)?;
                (p, p)
            }
        };
        let pp = Self {
            host_port,
            guest_port,
            protocol,
        };
        pp.validate()?;
        Ok(pp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!("1.2.3.4".parse::<Cidr>().unwrap().to_string(), "1.2.3.4/32");
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().prefix(), 0);
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "::1/128",
            "x/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(
            Cidr::containing(Ipv4Addr::new(10, 1, 2, 3), 8)
                .unwrap()
                .to_string(),
            "10.0.0.0/8"
        );
        assert!(Cidr::containing(Ipv4Addr::new(10, 1, 2, 3), 33).is_none());
        let c: Cidr = "203.0.113.128/25".parse().unwrap();
        assert!(c.contains(Ipv4Addr::new(203, 0, 113, 200)));
        assert!(!c.contains(Ipv4Addr::new(203, 0, 113, 10)));
    }

    #[test]
    fn domain_patterns() {
        let exact: DomainPattern = "Example.COM.".parse().unwrap();
        assert!(exact.matches("example.com"));
        assert!(exact.matches("EXAMPLE.com."));
        assert!(!exact.matches("www.example.com"));
        let wild: DomainPattern = "*.example.com".parse().unwrap();
        assert!(wild.matches("www.example.com"));
        assert!(wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("badexample.com"));
        // One trailing dot is the root (the absolute form); two leave an empty label.
        assert!(!exact.matches("example.com.."));
        assert!("example.com..".parse::<DomainPattern>().is_err());
        assert!("*.example.com..".parse::<DomainPattern>().is_err());
        assert_eq!(
            "*.Example.com."
                .parse::<DomainPattern>()
                .unwrap()
                .to_string(),
            "*.example.com"
        );
        assert!(wild.is_wildcard() && !exact.is_wildcard());
        assert_eq!(wild.base(), "example.com");
        for bad in [
            "",
            "*.com",
            "a..b",
            "-a.com",
            "a b.com",
            "*.*.a.com",
            "exa\"mple.com",
        ] {
            assert!(bad.parse::<DomainPattern>().is_err(), "{bad}");
        }
    }

    #[test]
    fn published_ports() {
        let p: PublishedPort = "8080".parse().unwrap();
        assert_eq!(p.to_string(), "8080:8080/tcp");
        let p: PublishedPort = "5353:53/udp".parse().unwrap();
        assert_eq!(
            (p.host_port, p.guest_port, p.protocol),
            (5353, 53, Protocol::Udp)
        );
        for bad in ["0", "1:0", "70000", "80/sctp", "a:b", "8080:1024", "9119"] {
            assert!(bad.parse::<PublishedPort>().is_err(), "{bad}");
        }
    }

    #[test]
    fn policy_json_round_trip() {
        let p = Policy::Custom(CustomPolicy {
            allowed_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
            denied_cidrs: vec![],
            allowed_domains: vec!["*.example.com".parse().unwrap()],
            ports: vec![443],
        });
        let j = serde_json::to_string(&p).unwrap();
        assert!(j.contains("\"mode\":\"custom\""), "{j}");
        assert_eq!(serde_json::from_str::<Policy>(&j).unwrap(), p);
        assert!(
            serde_json::from_str::<Policy>(r#"{"mode":"custom","allowedCidrs":["10.0.0.1/8"]}"#)
                .is_err()
        );
    }
}
