//! The kernel check: does nf_tables accept vmsan's VM ruleset.

use std::net::Ipv4Addr;

use super::destinations::lan_block;
use super::vm::{VmRules, dns_update, vm_table};
use crate::error::{NetError, Result};
use crate::policy::Policy;

/// Checks that the kernel accepts vmsan's VM ruleset (nf_tables with sets, timeouts,
/// intervals, conntrack and the `inet` family): loads it over netlink in a throw-away
/// network namespace that exists only for the check (the host's rules are never touched).
pub fn probe_kernel() -> Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetError::sys("unshare a scratch network namespace", e))?;
            let addrs = crate::addr::Slot::new(0)?.addrs();
            let policy = Policy::Custom(crate::policy::CustomPolicy {
                allowed_cidrs: vec![crate::policy::Cidr::new(Ipv4Addr::new(192, 0, 2, 0), 24)?],
                denied_cidrs: Vec::new(),
                allowed_domains: vec!["example.com".parse()?],
                ports: vec![80, 443],
            });
            let mut rs = vm_table(&VmRules {
                addrs: &addrs,
                policy: &policy,
                allow_udp: false,
                published: &[],
                lan: &lan_block(false, &[]),
            });
            rs.extend(dns_update(&[(Ipv4Addr::new(192, 0, 2, 1), 60)]));
            rs.apply(None)
        })
        .join()
        .unwrap_or_else(|_| Err(NetError::invalid("nftables probe", "worker panicked")))
    })
}
