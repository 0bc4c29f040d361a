//! Network policy: `--network-policy`, `--allowed-domain`, `--allowed-cidr`, `--denied-cidr`,
//! `--allow-udp`, with the auto-promotion and conflict rules.

use serde::Serialize;

use vmsan_net::{Cidr, DomainPattern};

use super::{invalid, parse_cidr, parse_domain, split_list};
use crate::error::{Error, ErrorCode};

/// The egress policy of a VM (recorded in its state, where the type lives).
pub use crate::state::NetworkPolicy;

impl NetworkPolicy {
    /// Parse the flag value (exact, lowercase).
    pub fn parse(raw: &str) -> Result<Self, Error> {
        match raw {
            "allow-all" => Ok(Self::AllowAll),
            "deny-all" => Ok(Self::DenyAll),
            "custom" => Ok(Self::Custom),
            _ => Err(invalid(
                ErrorCode::ValidationNetworkPolicy,
                "--network-policy",
                raw,
                "Must be one of allow-all, deny-all, custom.",
            )),
        }
    }
}

/// The raw policy flags, as typed.
#[derive(Debug, Clone, Default)]
pub struct PolicyInput {
    /// `--network-policy`, if given.
    pub policy: Option<String>,
    /// `--allowed-domain` values (each may be a comma list).
    pub allowed_domains: Vec<String>,
    /// `--allowed-cidr` values.
    pub allowed_cidrs: Vec<String>,
    /// `--denied-cidr` values.
    pub denied_cidrs: Vec<String>,
    /// `--allow-udp`.
    pub allow_udp: bool,
    /// `--allow-lan`.
    pub allow_lan: bool,
}

/// A validated, normalised egress policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkRules {
    /// The effective policy (after auto-promotion).
    pub policy: NetworkPolicy,
    /// True when the user asked for `allow-all` (or nothing) but gave allow-list entries, so the
    /// policy became `custom`. Callers may tell the user.
    pub promoted: bool,
    /// Domains the guest may resolve and reach (deduplicated, in input order).
    pub allowed_domains: Vec<DomainPattern>,
    /// Networks the guest may reach.
    pub allowed_cidrs: Vec<Cidr>,
    /// Networks the guest may never reach; deny wins over every allow, in every policy.
    pub denied_cidrs: Vec<Cidr>,
    /// Whether guest UDP is allowed (DNS always goes to the DNS filter).
    pub allow_udp: bool,
    /// Whether `allow-all` and allowed domains reach the networks around the host.
    pub allow_lan: bool,
}

impl Default for NetworkRules {
    fn default() -> Self {
        Self {
            policy: NetworkPolicy::AllowAll,
            promoted: false,
            allowed_domains: Vec::new(),
            allowed_cidrs: Vec::new(),
            denied_cidrs: Vec::new(),
            allow_udp: false,
            allow_lan: false,
        }
    }
}

fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Validate every policy flag and apply the rules:
///
/// - `deny-all` with any allowed domain, allowed CIDR, denied CIDR or `--allow-udp` is a
///   conflict (`ERR_VALIDATION_POLICY_CONFLICT`): nothing could ever apply;
/// - `allow-all` (explicit or the default) with an allowed domain or allowed CIDR is promoted
///   to `custom` (`promoted = true`): an allow-list only means something if the rest is
///   denied. This applies to `create` and to `network` alike (promoting at `create` only
///   would let a VM's state say `allow-all` while its rules were custom);
/// - `allow-all` with only denied CIDRs stays `allow-all`: everything but those networks;
/// - `custom` keeps its lists as given (empty lists deny everything).
pub fn resolve_network_policy(input: &PolicyInput) -> Result<NetworkRules, Error> {
    let requested = match input.policy.as_deref() {
        Some(p) => NetworkPolicy::parse(p)?,
        None => NetworkPolicy::AllowAll,
    };
    let domains = split_list(
        ErrorCode::ValidationDomain,
        "--allowed-domain",
        &input.allowed_domains,
    )?
    .iter()
    .map(|d| parse_domain("--allowed-domain", d))
    .collect::<Result<Vec<_>, _>>()?;
    let allowed = split_list(
        ErrorCode::ValidationCidr,
        "--allowed-cidr",
        &input.allowed_cidrs,
    )?
    .iter()
    .map(|c| parse_cidr("--allowed-cidr", c))
    .collect::<Result<Vec<_>, _>>()?;
    let denied = split_list(
        ErrorCode::ValidationCidr,
        "--denied-cidr",
        &input.denied_cidrs,
    )?
    .iter()
    .map(|c| parse_cidr("--denied-cidr", c))
    .collect::<Result<Vec<_>, _>>()?;

    if requested == NetworkPolicy::DenyAll {
        let offending = [
            (!domains.is_empty(), "--allowed-domain"),
            (!allowed.is_empty(), "--allowed-cidr"),
            (!denied.is_empty(), "--denied-cidr"),
            (input.allow_udp, "--allow-udp"),
            (input.allow_lan, "--allow-lan"),
        ]
        .into_iter()
        .find_map(|(bad, flag)| bad.then_some(flag));
        if let Some(flag) = offending {
            return Err(Error::new(
                ErrorCode::ValidationPolicyConflict,
                format!("Cannot use --network-policy deny-all with {flag}"),
            )
            .why("deny-all blocks all traffic, so allow and deny rules would never apply.")
            .fix("Use --network-policy custom with the allow rules you need, or drop them.")
            .detail("flag", flag));
        }
    }

    let promote =
        requested == NetworkPolicy::AllowAll && (!domains.is_empty() || !allowed.is_empty());
    Ok(NetworkRules {
        policy: if promote {
            NetworkPolicy::Custom
        } else {
            requested
        },
        promoted: promote,
        allowed_domains: dedup(domains),
        allowed_cidrs: dedup(allowed),
        denied_cidrs: dedup(denied),
        allow_udp: input.allow_udp,
        allow_lan: input.allow_lan,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(policy: Option<&str>) -> PolicyInput {
        PolicyInput {
            policy: policy.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_to_allow_all() {
        let r = resolve_network_policy(&input(None)).unwrap();
        assert_eq!(r, NetworkRules::default());
    }

    #[test]
    fn policies_parse() {
        for (s, p) in [
            ("allow-all", NetworkPolicy::AllowAll),
            ("deny-all", NetworkPolicy::DenyAll),
            ("custom", NetworkPolicy::Custom),
        ] {
            assert_eq!(resolve_network_policy(&input(Some(s))).unwrap().policy, p);
        }
        for bad in ["", "allow", "ALLOW-ALL", "deny_all", "open"] {
            let e = resolve_network_policy(&input(Some(bad))).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationNetworkPolicy, "{bad}");
        }
    }

    #[test]
    fn allow_lists_promote_allow_all() {
        let mut i = input(None);
        i.allowed_domains = vec!["github.com,*.github.com".into(), "github.com".into()];
        let r = resolve_network_policy(&i).unwrap();
        assert_eq!(r.policy, NetworkPolicy::Custom);
        assert!(r.promoted);
        assert_eq!(r.allowed_domains.len(), 2);

        let mut i = input(Some("allow-all"));
        i.allowed_cidrs = vec!["10.0.0.0/8".into()];
        let r = resolve_network_policy(&i).unwrap();
        assert_eq!((r.policy, r.promoted), (NetworkPolicy::Custom, true));

        let mut i = input(Some("allow-all"));
        i.denied_cidrs = vec!["10.0.0.0/8".into()];
        let r = resolve_network_policy(&i).unwrap();
        assert_eq!((r.policy, r.promoted), (NetworkPolicy::AllowAll, false));
        assert_eq!(r.denied_cidrs[0].to_string(), "10.0.0.0/8");

        let mut i = input(Some("custom"));
        i.allowed_cidrs = vec!["1.1.1.1".into()];
        i.allow_udp = true;
        let r = resolve_network_policy(&i).unwrap();
        assert_eq!(
            (r.policy, r.promoted, r.allow_udp),
            (NetworkPolicy::Custom, false, true)
        );
    }

    #[test]
    fn deny_all_conflicts() {
        for (field, flag) in [
            (0, "--allowed-domain"),
            (1, "--allowed-cidr"),
            (2, "--denied-cidr"),
            (3, "--allow-udp"),
            (4, "--allow-lan"),
        ] {
            let mut i = input(Some("deny-all"));
            match field {
                0 => i.allowed_domains = vec!["a.com".into()],
                1 => i.allowed_cidrs = vec!["1.0.0.0/8".into()],
                2 => i.denied_cidrs = vec!["1.0.0.0/8".into()],
                3 => i.allow_udp = true,
                _ => i.allow_lan = true,
            }
            let e = resolve_network_policy(&i).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationPolicyConflict, "{flag}");
            assert_eq!(e.details()["flag"], flag);
        }
    }

    #[test]
    fn bad_entries_keep_their_codes() {
        let mut i = input(Some("custom"));
        i.allowed_domains = vec!["bad domain".into()];
        assert_eq!(
            resolve_network_policy(&i).unwrap_err().code(),
            ErrorCode::ValidationDomain
        );
        let mut i = input(Some("custom"));
        i.denied_cidrs = vec!["10.0.0.0/99".into()];
        assert_eq!(
            resolve_network_policy(&i).unwrap_err().code(),
            ErrorCode::ValidationCidr
        );
    }
}
