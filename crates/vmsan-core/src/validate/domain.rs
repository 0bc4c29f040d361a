//! Domain names with an optional leading `*.` wildcard: `--allowed-domain`.

use std::fmt;

use serde::{Serialize, Serializer};

use super::invalid;
use crate::error::{Error, ErrorCode};

/// A lowercase domain name, possibly `*.`-prefixed (which matches every subdomain, not the
/// name itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    /// The name, e.g. `*.example.com`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a `*.` wildcard.
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// The name without its `*.` prefix.
    pub fn base(&self) -> &str {
        self.0.strip_prefix("*.").unwrap_or(&self.0)
    }

    /// Whether `name` (a lowercase FQDN without trailing dot) is allowed by this entry.
    pub fn matches(&self, name: &str) -> bool {
        if self.is_wildcard() {
            name.strip_suffix(self.base())
                .is_some_and(|head| head.ends_with('.'))
        } else {
            name == self.0
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Domain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

fn valid_label(l: &str) -> bool {
    let b = l.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Parse a domain: lowercased; one trailing dot dropped; no whitespace; `*` only as a single
/// leading `*.`; at most 253 characters; each label `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`.
pub fn parse_domain(flag: &str, raw: &str) -> Result<Domain, Error> {
    let err = |rule: &str| invalid(ErrorCode::ValidationDomain, flag, raw, rule);
    if raw.is_empty() {
        return Err(err("The domain is empty."));
    }
    if raw.chars().any(char::is_whitespace) {
        return Err(err("Domains must not contain whitespace."));
    }
    let lower = raw.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    let (wild, zone) = match name.strip_prefix("*.") {
        Some(z) => (true, z),
        None => (false, name),
    };
    if zone.contains('*') {
        return Err(err(
            "A wildcard is only allowed as a single leading \"*.\" (e.g. *.example.com).",
        ));
    }
    if zone.len() > 253 {
        return Err(err("Domains are at most 253 characters long."));
    }
    if !zone.split('.').all(valid_label) {
        return Err(err(
            "Each label must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'.",
        ));
    }
    Ok(Domain(if wild {
        format!("*.{zone}")
    } else {
        zone.to_owned()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        assert_eq!(
            parse_domain("--d", "Example.COM").unwrap().as_str(),
            "example.com"
        );
        assert_eq!(
            parse_domain("--d", "example.com.").unwrap().as_str(),
            "example.com"
        );
        let w = parse_domain("--d", "*.github.com").unwrap();
        assert!(w.is_wildcard());
        assert_eq!(w.base(), "github.com");
        assert!(w.matches("api.github.com"));
        assert!(w.matches("a.b.github.com"));
        assert!(!w.matches("github.com"));
        assert!(!w.matches("evilgithub.com"));
        assert!(parse_domain("--d", "localhost").is_ok());
        assert!(parse_domain("--d", "xn--bcher-kva.example").is_ok());
        assert!(parse_domain("--d", &format!("{}.com", "a".repeat(63))).is_ok());
    }

    #[test]
    fn rejected() {
        let long = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        for bad in [
            "",
            " ",
            "exa mple.com",
            "example.com\n",
            "*",
            "*.",
            "**.example.com",
            "a.*.com",
            "*example.com",
            "-a.com",
            "a-.com",
            "a..com",
            ".com",
            "exam_ple.com",
            "ex!ample.com",
            &format!("{}.com", "a".repeat(64)),
            &long,
            "*.*.com",
            "é.com",
        ] {
            let e = parse_domain("--allowed-domain", bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationDomain, "{bad:?}");
            assert_eq!(e.details()["flag"], "--allowed-domain");
        }
    }
}
