//! IPv4 addresses and CIDRs: `--allowed-cidr`, `--denied-cidr`, `--dns`.

use std::net::Ipv4Addr;

use vmsan_net::Cidr;

use super::invalid;
use crate::error::{Error, ErrorCode};

/// Strict dotted-quad: four decimal octets 0..=255, no leading zeros (`010` is ambiguous).
fn dotted_quad(s: &str) -> Result<Ipv4Addr, &'static str> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return Err("Expected an IPv4 address a.b.c.d.");
    }
    let mut octets = [0u8; 4];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err("Expected an IPv4 address a.b.c.d.");
        }
        if p.len() > 1 && p.starts_with('0') {
            return Err("Octets must not have leading zeros.");
        }
        octets[i] = p
            .parse::<u8>()
            .map_err(|_| "Each octet must be between 0 and 255.")?;
    }
    Ok(Ipv4Addr::from(octets))
}

/// Parse an IPv4 address (`--dns`).
pub fn parse_ipv4(flag: &str, raw: &str) -> Result<Ipv4Addr, Error> {
    if raw.contains(':') {
        return Err(invalid(
            ErrorCode::ValidationCidr,
            flag,
            raw,
            "Only IPv4 addresses are supported (guests have IPv4 networking only).",
        ));
    }
    dotted_quad(raw).map_err(|rule| invalid(ErrorCode::ValidationCidr, flag, raw, rule))
}

/// Parse `a.b.c.d/nn` (prefix 0..=32) or a bare address (= `/32`). Host bits are cleared:
/// `10.1.2.3/8` is `10.0.0.0/8`. IPv6 is rejected: guests have IPv4 networking only.
pub fn parse_cidr(flag: &str, raw: &str) -> Result<Cidr, Error> {
    let err = |rule: &str| invalid(ErrorCode::ValidationCidr, flag, raw, rule);
    if raw.contains(':') {
        return Err(err(
            "Only IPv4 CIDRs are supported (guests have IPv4 networking only).",
        ));
    }
    let (addr, prefix) = match raw.split_once('/') {
        None => (raw, 32u8),
        Some((a, p)) => {
            if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(
                    "Expected a.b.c.d/nn with a prefix length between 0 and 32.",
                ));
            }
            match p.parse::<u8>() {
                Ok(n) if n <= 32 => (a, n),
                _ => return Err(err("The prefix length must be between 0 and 32.")),
            }
        }
    };
    let ip = dotted_quad(addr).map_err(err)?;
    Cidr::containing(ip, prefix).ok_or_else(|| err("The prefix length must be between 0 and 32."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        let c = parse_cidr("--allowed-cidr", "10.0.0.0/8").unwrap();
        assert_eq!((c.addr(), c.prefix()), (Ipv4Addr::new(10, 0, 0, 0), 8));
        assert_eq!(
            parse_cidr("--x", "10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_cidr("--x", "1.2.3.4").unwrap().to_string(),
            "1.2.3.4/32"
        );
        assert_eq!(
            parse_cidr("--x", "0.0.0.0/0").unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            parse_cidr("--x", "255.255.255.255/32").unwrap().prefix(),
            32
        );
        assert!(c.contains(Ipv4Addr::new(10, 9, 9, 9)));
        assert!(!c.contains(Ipv4Addr::new(11, 0, 0, 0)));
        assert_eq!(
            parse_ipv4("--dns", "1.1.1.1").unwrap(),
            Ipv4Addr::new(1, 1, 1, 1)
        );
    }

    #[test]
    fn rejected() {
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "256.0.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "a.b.c.d/8",
            "::/0",
            "fe80::1",
            "10.0.0.010/32",
            "10.0.0.0/8/8",
            "10.0.0.0 /8",
            "10..0.0/8",
        ] {
            let e = parse_cidr("--denied-cidr", bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationCidr, "{bad}");
            assert_eq!(e.details()["flag"], "--denied-cidr");
        }
        for bad in ["", "1.1.1", "1.1.1.1/32", "::1", "dns.google"] {
            assert_eq!(
                parse_ipv4("--dns", bad).unwrap_err().code(),
                ErrorCode::ValidationCidr
            );
        }
    }
}
