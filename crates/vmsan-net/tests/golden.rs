//! Golden tests of the rendered nftables scripts (no privileges needed). Regenerate with
//! `VMSAN_UPDATE_GOLDEN=1 cargo test -p vmsan-net --test golden` and review the diff.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::Path;

use vmsan_net::nft::{self, HostRules, HostState, VmRules};
use vmsan_net::{Cidr, CustomPolicy, Policy, Protocol, PublishedPort, Slot};

fn check(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("VMSAN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set VMSAN_UPDATE_GOLDEN=1 to create)",
            path.display()
        )
    });
    assert_eq!(actual, expected, "{name} differs from the golden file");
}

fn custom() -> Policy {
    Policy::Custom(CustomPolicy {
        allowed_cidrs: vec!["203.0.113.0/24".parse().unwrap()],
        denied_cidrs: vec!["203.0.113.128/25".parse().unwrap()],
        allowed_domains: vec![
            "example.com".parse().unwrap(),
            "*.example.org".parse().unwrap(),
        ],
        ports: vec![443, 80, 443],
    })
}

/// The LAN block of a host whose uplink is 192.0.2.0/24 and which also sits in
/// 192.168.7.0/24 (inside a private range, so left out as covered).
fn lan() -> Vec<Cidr> {
    nft::lan_block(
        false,
        &[
            "192.0.2.0/24".parse().unwrap(),
            "192.168.7.0/24".parse().unwrap(),
        ],
    )
}

fn published() -> Vec<PublishedPort> {
    vec!["8080:80".parse().unwrap(), "5353:53/udp".parse().unwrap()]
}

#[test]
fn vm_table_custom_policy() {
    let a = Slot::new(3).unwrap().addrs();
    let p = published();
    let policy = custom();
    check(
        "vm-custom.nft",
        &nft::vm_table(&VmRules {
            addrs: &a,
            policy: &policy,
            allow_udp: false,
            published: &p,
            lan: &lan(),
        })
        .to_nft(),
    );
}

#[test]
fn vm_table_allow_all_with_udp() {
    let a = Slot::new(0).unwrap().addrs();
    check(
        "vm-allow-all-udp.nft",
        &nft::vm_table(&VmRules {
            addrs: &a,
            policy: &Policy::AllowAll,
            allow_udp: true,
            published: &[],
            lan: &lan(),
        })
        .to_nft(),
    );
}

#[test]
fn policy_change_to_deny_all() {
    let a = Slot::new(3).unwrap().addrs();
    check(
        "policy-deny-all.nft",
        &nft::policy_change(
            &VmRules {
                addrs: &a,
                policy: &Policy::DenyAll,
                allow_udp: false,
                published: &[],
                lan: &lan(),
            },
            true,
        )
        .to_nft(),
    );
}

#[test]
fn every_guest_packet_meets_the_policy_first() {
    // The Node.js vmsan's bypass: a `tap -> veth accept` before the policy. Here the forward
    // chain's first verdict for TAP traffic is the jump into guest_egress, and nothing in
    // guest_egress accepts before the blocked destinations and the policy, except replies.
    let a = Slot::new(3).unwrap().addrs();
    let s = nft::vm_table(&VmRules {
        addrs: &a,
        policy: &Policy::DenyAll,
        allow_udp: true,
        published: &published(),
        lan: &lan(),
    })
    .to_nft();
    let fwd = s.split("chain forward {").nth(1).unwrap();
    let first_verdict = fwd
        .lines()
        .find(|l| l.contains("accept") || l.contains("jump"))
        .unwrap();
    assert!(
        first_verdict.contains("iifname \"tap0\" jump guest_egress"),
        "{first_verdict}"
    );
    let egress = s.split("chain guest_egress {").nth(1).unwrap();
    let egress = &egress[..egress.find('}').unwrap()];
    let accepts: Vec<_> = egress.lines().filter(|l| l.contains("accept")).collect();
    assert_eq!(accepts, vec!["\t\tct state established,related accept"]);
    let deny_all = s.split("chain egress_policy {").nth(1).unwrap();
    assert!(!deny_all[..deny_all.find('}').unwrap()].contains("accept"));
}

#[test]
fn allow_all_means_the_internet_unless_the_lan_is_allowed() {
    let a = Slot::new(0).unwrap().addrs();
    let policy_of = |lan: &[Cidr]| {
        let s = nft::vm_table(&VmRules {
            addrs: &a,
            policy: &Policy::AllowAll,
            allow_udp: false,
            published: &[],
            lan,
        })
        .to_nft();
        let p = s.split("chain egress_policy {").nth(1).unwrap();
        p[..p.find("\n\t}").unwrap()].trim().to_string()
    };
    assert_eq!(
        policy_of(&lan()),
        "ip daddr { 10.0.0.0/8, 100.64.0.0/10, 172.16.0.0/12, 192.168.0.0/16, 192.0.2.0/24 } drop\n\t\taccept"
    );
    // --allow-lan: nothing but the accept.
    assert_eq!(policy_of(&nft::lan_block(true, &[])), "accept");
}

#[test]
fn host_table_and_elements() {
    let a = Slot::new(3).unwrap().addrs();
    let p = published();
    check(
        "host-base-docker.nft",
        &nft::host_base(&[("ip", "filter", "FORWARD")]).to_nft(),
    );
    check(
        "host-add.nft",
        &nft::host_add(&HostRules {
            addrs: &a,
            host_veth: "vmsan-h3",
            published: &p,
        })
        .to_nft(),
    );
    // Two VMs in the shared table, the first one with two published ports.
    let st = HostState {
        exists: true,
        guests: vec![
            ("vmsan-h3".to_string(), Ipv4Addr::new(198, 18, 0, 26)),
            ("vmsan-h4".to_string(), Ipv4Addr::new(198, 18, 0, 34)),
        ],
        published: vec![
            (Protocol::Udp, 5353, Ipv4Addr::new(198, 18, 0, 26), 53),
            (Protocol::Tcp, 8080, Ipv4Addr::new(198, 18, 0, 26), 80),
        ],
    };
    check(
        "host-remove.nft",
        &nft::host_remove(&st, "vmsan-h3", a.guest_ip, &[]).to_nft(),
    );
    let last = HostState {
        guests: vec![("vmsan-h3".into(), a.guest_ip)],
        ..st
    };
    check(
        "host-remove-last.nft",
        &nft::host_remove(
            &last,
            "vmsan-h3",
            a.guest_ip,
            &[(("ip".into(), "filter".into(), "FORWARD".into()), 17)],
        )
        .to_nft(),
    );
}

#[test]
fn dns_set_update() {
    check(
        "dns-update.nft",
        &nft::dns_update(&[
            (Ipv4Addr::new(93, 184, 216, 34), 300),
            (Ipv4Addr::new(93, 184, 216, 34), 60),
            (Ipv4Addr::new(1, 2, 3, 4), 0),
        ])
        .to_nft(),
    );
}
