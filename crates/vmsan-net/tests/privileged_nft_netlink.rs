//! The rulesets applied over netlink are the rulesets nft itself would load: each one is
//! loaded with `nft -f` (its nft-syntax form, the golden files' text) into one throw-away
//! namespace and over netlink into another, and `nft list ruleset` must print the same in
//! both. The traffic tests (privileged_net) check what the rules do; this checks that
//! the netlink encoding is exactly the reviewed ruleset.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;

use common::*;
use vmsan_net::nft::{self, HostRules, HostState, Ruleset, VmRules};
use vmsan_net::{CustomPolicy, Policy, PublishedPort, Slot};

/// `nft list ruleset` without what differs between two loads of the same rules (element
/// expiry countdowns).
fn normalized(listing: &str) -> String {
    listing
        .lines()
        .map(|l| {
            let mut l = l.to_string();
            // "timeout 5m expires 4m59s123ms" -> "timeout 5m"
            while let Some(i) = l.find(" expires ") {
                let from = i + " expires ".len();
                let end = l[from..].find([',', ' ']).map_or(l.len(), |e| from + e);
                l.replace_range(i..end, "");
            }
            l
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads `before` (nft syntax) in two fresh namespaces, then `rs` with nft in one and over
/// netlink in the other; both listings must be equal. Returns the listing.
fn same(tag: &str, before: &str, rs: &Ruleset) -> String {
    let a = TestNs::new(&format!("{tag}-nft"));
    let b = TestNs::new(&format!("{tag}-nl"));
    if !before.is_empty() {
        nft(&a.path, &["-f", "-"], before).unwrap();
        nft(&b.path, &["-f", "-"], before).unwrap();
    }
    nft(&a.path, &["-f", "-"], &rs.to_nft()).unwrap();
    rs.apply(Some(&b.path)).unwrap();
    let la = nft(&a.path, &["list", "ruleset"], "").unwrap();
    let lb = nft(&b.path, &["list", "ruleset"], "").unwrap();
    assert_eq!(
        normalized(&lb),
        normalized(&la),
        "{tag}: netlink (left) and nft (right) loaded different rulesets\n--- netlink:\n{lb}\n--- nft:\n{la}"
    );
    lb
}

fn custom() -> Policy {
    Policy::Custom(CustomPolicy {
        allowed_cidrs: vec![
            "203.0.113.0/24".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
            "1.2.3.4/32".parse().unwrap(),
        ],
        denied_cidrs: vec!["203.0.113.128/25".parse().unwrap()],
        allowed_domains: vec!["example.com".parse().unwrap()],
        ports: vec![443, 80, 443],
    })
}

fn published() -> Vec<PublishedPort> {
    vec!["8080:80".parse().unwrap(), "5353:53/udp".parse().unwrap()]
}

const DOCKER: &str = "table ip filter {\n chain FORWARD {\n  type filter hook forward priority 0; policy drop;\n }\n}\n";

#[test]
fn privileged_netlink_vm_rulesets_equal_nft() {
    if !can_run() {
        return;
    }
    let a = Slot::new(3).unwrap().addrs();
    let p = published();
    let policy = custom();
    // The LAN block with connected networks of a host, one inside a private range.
    let lan = nft::lan_block(
        false,
        &[
            "192.168.7.0/24".parse().unwrap(),
            "192.0.2.0/24".parse().unwrap(),
        ],
    );
    let vm = |policy: &Policy, allow_udp, published: &[PublishedPort]| {
        nft::vm_table(&VmRules {
            addrs: &a,
            policy,
            allow_udp,
            published,
            lan: &lan,
        })
    };
    let listing = same("vm-custom", "", &vm(&policy, false, &p));
    assert!(listing.contains("jump guest_egress"), "{listing}");
    same("vm-allow", "", &vm(&Policy::AllowAll, true, &[]));
    same("vm-deny", "", &vm(&Policy::DenyAll, false, &p));
    // Replacing a loaded table (the setup path deletes any previous one in the batch).
    let before = vm(&Policy::AllowAll, false, &[]).to_nft();
    same("vm-replace", &before, &vm(&policy, false, &p));
    // Policy changes on a live table, with and without flushing the DNS set.
    let change = |policy: &Policy, flush| {
        nft::policy_change(
            &VmRules {
                addrs: &a,
                policy,
                allow_udp: false,
                published: &[],
                lan: &lan,
            },
            flush,
        )
    };
    let mut with_dns = vm(&policy, false, &[]).to_nft();
    with_dns.push_str(&nft::dns_update(&[(Ipv4Addr::new(93, 184, 216, 34), 300)]).to_nft());
    same("pol-deny", &with_dns, &change(&Policy::DenyAll, true));
    same("pol-custom", &with_dns, &change(&policy, false));
    // DNS answers: new elements and a refreshed timeout.
    let answers = nft::dns_update(&[
        (Ipv4Addr::new(93, 184, 216, 34), 60),
        (Ipv4Addr::new(93, 184, 216, 35), 0),
        (Ipv4Addr::new(93, 184, 216, 34), 600),
    ]);
    let listing = same("dns", &with_dns, &answers);
    assert!(listing.contains("timeout 10m"), "{listing}");
}

#[test]
fn privileged_netlink_host_rulesets_equal_nft() {
    if !can_run() {
        return;
    }
    let (a3, a4) = (Slot::new(3).unwrap().addrs(), Slot::new(4).unwrap().addrs());
    let p = published();
    let add = |a, veth, published| {
        nft::host_add(&HostRules {
            addrs: a,
            host_veth: veth,
            published,
        })
    };
    let compat = [("ip", "filter", "FORWARD")];
    let mut first = nft::host_base(&compat);
    first.extend(add(&a3, "vmsan-h3", &p));
    let listing = same("host-first", DOCKER, &first);
    assert_eq!(listing.matches("comment \"vmsan\"").count(), 2, "{listing}");
    let mut before = String::from(DOCKER);
    before.push_str(&first.to_nft());
    same("host-second", &before, &add(&a4, "vmsan-h4", &[]));
    before.push_str(&add(&a4, "vmsan-h4", &[]).to_nft());
    // Compat rules only (the table exists, Docker's chain appeared later).
    same(
        "host-compat",
        &format!("{DOCKER}table ip vmsan {{\n}}\n"),
        &nft::host_compat(&compat),
    );

    // The state read back over netlink is what was added.
    let ns = TestNs::new("host-read");
    nft(&ns.path, &["-f", "-"], &before).unwrap();
    let st = HostState::read(Some(&ns.path)).unwrap();
    assert!(st.exists);
    let mut guests = st.guests.clone();
    guests.sort();
    assert_eq!(
        guests,
        vec![
            ("vmsan-h3".to_string(), a3.guest_ip),
            ("vmsan-h4".to_string(), a4.guest_ip)
        ]
    );
    let mut pubs = st.published.clone();
    pubs.sort_by_key(|x| x.1);
    assert_eq!(
        pubs,
        vec![
            (vmsan_net::Protocol::Udp, 5353, a3.guest_ip, 53),
            (vmsan_net::Protocol::Tcp, 8080, a3.guest_ip, 80),
        ]
    );
    let handles = nft::compat_rule_handles(Some(&ns.path)).unwrap();
    assert_eq!(handles.len(), 2, "{handles:?}");
    assert!(
        nft::list_tables(Some(&ns.path))
            .unwrap()
            .contains(&"ip vmsan".to_string())
    );

    // Removing one VM, then the last one with the compat rules.
    same(
        "host-rm",
        &before,
        &nft::host_remove(&st, "vmsan-h3", a3.guest_ip, &handles),
    );
    let one = HostState {
        guests: vec![("vmsan-h4".to_string(), a4.guest_ip)],
        published: vec![],
        exists: true,
    };
    let listing = same(
        "host-rm-last",
        &before,
        &nft::host_remove(&one, "vmsan-h4", a4.guest_ip, &handles),
    );
    assert!(!listing.contains("vmsan"), "{listing}");
    assert!(HostState::read(Some(&ns.path)).unwrap().exists);
    nft(&ns.path, &["delete", "table", "ip", "vmsan"], "").unwrap();
    assert_eq!(
        HostState::read(Some(&ns.path)).unwrap(),
        HostState::default()
    );
}

#[test]
fn privileged_netlink_errors_name_the_refused_message_and_apply_nothing() {
    if !can_run() {
        return;
    }
    let ns = TestNs::new("nl-err");
    let a = Slot::new(5).unwrap().addrs();
    let p = published();
    let mut rs = nft::host_base(&[]);
    rs.extend(nft::host_add(&HostRules {
        addrs: &a,
        host_veth: "vmsan-h5",
        published: &p,
    }));
    rs.apply(Some(&ns.path)).unwrap();
    // The same published port again: `create element` fails, and the batch's other element
    // (a new guest) must not be in force either.
    let b = Slot::new(6).unwrap().addrs();
    let again = nft::host_add(&HostRules {
        addrs: &b,
        host_veth: "vmsan-h6",
        published: &p[..1],
    });
    let err = again.apply(Some(&ns.path)).unwrap_err().to_string();
    assert!(
        err.contains("create 1 element(s) in ip vmsan published") && err.contains("exists"),
        "{err}"
    );
    assert!(err.contains(&ns.path.display().to_string()), "{err}");
    let st = HostState::read(Some(&ns.path)).unwrap();
    assert_eq!(st.guests, vec![("vmsan-h5".to_string(), a.guest_ip)]);
}

#[test]
fn privileged_kernel_probe_loads_the_vm_ruleset_in_a_scratch_namespace() {
    if !can_run() {
        return;
    }
    let before = nft(
        std::path::Path::new("/proc/self/ns/net"),
        &["list", "tables"],
        "",
    )
    .unwrap();
    nft::probe_kernel().unwrap();
    let after = nft(
        std::path::Path::new("/proc/self/ns/net"),
        &["list", "tables"],
        "",
    )
    .unwrap();
    assert_eq!(before, after, "the probe touched the caller's namespace");
}
