//! Domain names with an optional leading `*.` wildcard: `--allowed-domain`.

use vmsan_net::DomainPattern;

use super::invalid;
use crate::error::{Error, ErrorCode};

fn valid_label(l: &str) -> bool {
    let b = l.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Parse a domain: lowercased; one trailing dot dropped (the root of the absolute form; a
/// second would leave an empty label); no whitespace; `*` only as a single leading `*.`,
/// followed by at least two labels; at most 253 characters; each label
/// `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`.
pub fn parse_domain(flag: &str, raw: &str) -> Result<DomainPattern, Error> {
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
    if wild && !zone.contains('.') {
        // The network layer refuses these (a wildcard over a whole top-level domain): say so
        // here, not when the VM starts.
        return Err(err(
            "A wildcard needs at least two labels after \"*.\" (e.g. *.example.com).",
        ));
    }
    let name = if wild {
        format!("*.{zone}")
    } else {
        zone.to_owned()
    };
    name.parse::<DomainPattern>()
        .map_err(|e| err(&format!("The network layer refuses it: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        assert_eq!(
            parse_domain("--d", "Example.COM").unwrap().to_string(),
            "example.com"
        );
        assert_eq!(
            parse_domain("--d", "example.com.").unwrap().to_string(),
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
            // Two trailing dots leave an empty label (one is the root, and is dropped).
            "example.com..",
            "*.example.com..",
            // A wildcard over a top-level domain, which the network layer refuses.
            "*.com",
            "*.localhost",
        ] {
            let e = parse_domain("--allowed-domain", bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationDomain, "{bad:?}");
            assert_eq!(e.details()["flag"], "--allowed-domain");
        }
    }
}
