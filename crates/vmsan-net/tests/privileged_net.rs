//! Privileged end-to-end tests of VM networks in throw-away namespaces (see `common`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use common::*;
use vmsan_net::dns::{DnsAllow, DnsFilter, NftSetUpdater};
use vmsan_net::{CustomPolicy, Policy, PublishedPort};

/// Runs the VM's DNS filter (listening in the VM namespace, forwarding from the host one) on
/// a runtime that lives as long as the returned value.
struct Filter {
    rt: tokio::runtime::Runtime,
    domains: vmsan_net::dns::AllowedDomains,
}

fn start_filter(w: &World, net: &vmsan_net::VmNet) -> Filter {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let domains = rt.block_on(async {
        let f = DnsFilter::bind(
            Some(&net.netns_path),
            net.dns_listen_addr(),
            Some(&w.host.path),
            DnsAllow::of(&net.policy),
            net.dns_upstreams.clone(),
            Arc::new(NftSetUpdater::new(net.netns_path.clone())),
        )
        .unwrap();
        let d = f.domains();
        tokio::spawn(f.run());
        d
    });
    Filter { rt, domains }
}

impl Drop for Filter {
    fn drop(&mut self) {
        // Dropping the runtime closes the filter's sockets.
        let _ = &self.rt;
    }
}

#[test]
fn privileged_deny_all_and_allow_all_under_real_traffic() {
    if !can_run() {
        return;
    }
    let w = World::new();
    let vm_a = w.vm(spec(0, Policy::DenyAll));
    let vm_b = w.vm(spec(1, Policy::AllowAll));
    let ga = Guest::attach(&vm_a.net, "ga");
    let gb = Guest::attach(&vm_b.net, "gb");
    ga.serve();
    gb.serve();
    let (a, b) = (vm_a.net.addrs, vm_b.net.addrs);

    // The TAP belongs to the jail user.
    let details = ip_out(&[
        "-n",
        vm_a.net.netns_path.file_name().unwrap().to_str().unwrap(),
        "-d",
        "link",
        "show",
        "tap0",
    ]);
    assert!(
        details.contains("user 4242") && details.contains("group 4343"),
        "{details}"
    );

    // allow-all works (so the denials below are the policy, not a broken setup).
    assert_eq!(gb.tcp(ALLOWED_IP, 80).as_deref(), Some("inet"));
    assert_eq!(gb.tcp(CIDR_OK_IP, 443).as_deref(), Some("inet"));

    // deny-all: TCP to the internet, the host, the other VM and the transit ranges.
    assert_eq!(
        ga.tcp(ALLOWED_IP, 80),
        None,
        "deny-all let TCP to the internet through"
    );
    assert_eq!(
        ga.tcp(HOST_UP, HOST_SVC_PORT),
        None,
        "guest reached the host's uplink address"
    );
    assert_eq!(
        ga.tcp(a.host_veth_ip, HOST_SVC_PORT),
        None,
        "guest reached its host veth"
    );
    assert_eq!(
        ga.tcp(b.guest_ip, GUEST_SVC_PORT),
        None,
        "guest reached another VM"
    );
    assert_eq!(
        ga.tcp(b.host_veth_ip, HOST_SVC_PORT),
        None,
        "guest reached another transit"
    );
    assert_eq!(ga.tcp(a.tap_ip, 22), None);
    assert!(!ga.udp(ALLOWED_IP, 5000));
    assert!(!ga.icmp(ALLOWED_IP));

    // allow-all still blocks the host, other VMs, transit, ICMP, UDP (no opt-in), DNS to
    // other servers, DoT and DoH.
    assert_eq!(
        gb.tcp(HOST_UP, HOST_SVC_PORT),
        None,
        "allow-all reached the host"
    );
    assert_eq!(
        gb.tcp(b.host_veth_ip, HOST_SVC_PORT),
        None,
        "allow-all reached its host veth"
    );
    assert_eq!(
        gb.tcp(a.guest_ip, GUEST_SVC_PORT),
        None,
        "allow-all reached another VM"
    );
    assert_eq!(gb.tcp(a.vm_veth_ip, 22), None);
    assert!(!gb.icmp(ALLOWED_IP), "ICMP must be blocked");
    assert!(!gb.icmp(b.tap_ip), "ICMP to the gateway must be blocked");
    assert!(
        !gb.udp(ALLOWED_IP, 5000),
        "UDP must be blocked without the opt-in"
    );
    assert_eq!(gb.tcp(ALLOWED_IP, 853), None, "DoT must be blocked");
    assert_eq!(
        gb.tcp(DOH, 443),
        None,
        "DoH to a known resolver must be blocked"
    );
    assert_eq!(
        gb.tcp(GOOGLE, 53),
        None,
        "TCP DNS to another server must be blocked"
    );
    assert!(
        gb.dns(GOOGLE, "allowed.test").is_none(),
        "UDP DNS to another server"
    );
    assert!(
        gb.dns(INET, "allowed.test").is_none(),
        "UDP DNS to another server"
    );
    // Sanity: the internet's DNS server answers when asked from the host side.
    assert_eq!(
        w.host.run(|| dns_probe(INET, "allowed.test")).map(|r| r.1),
        Some(vec![ALLOWED_IP])
    );
}

#[test]
fn privileged_custom_policy_domains_cidrs_and_instant_change() {
    if !can_run() {
        return;
    }
    let w = World::new();
    let policy = Policy::Custom(CustomPolicy {
        allowed_cidrs: vec![
            "203.0.113.0/24".parse().unwrap(),
            "1.1.1.1/32".parse().unwrap(),
        ],
        denied_cidrs: vec!["203.0.113.128/25".parse().unwrap()],
        allowed_domains: vec![
            "allowed.test".parse().unwrap(),
            "*.wild.test".parse().unwrap(),
        ],
        ports: vec![],
    });
    let mut s = spec(7, policy);
    s.allow_udp = true;
    let mut vm = w.vm(s);
    let g = Guest::attach(&vm.net, "g");
    let filter = start_filter(&w, &vm.net);
    let tap = vm.net.addrs.tap_ip;

    // CIDRs: allowed passes, a denied CIDR inside the allowed one stays denied.
    assert_eq!(g.tcp(CIDR_OK_IP, 80).as_deref(), Some("inet"));
    assert_eq!(
        g.tcp(CIDR_DENIED_IP, 80),
        None,
        "denied CIDR inside an allowed CIDR"
    );
    // An allowed CIDR does not open DoH / DoT.
    assert_eq!(
        g.tcp(DOH, 443),
        None,
        "DoH must stay blocked even when its CIDR is allowed"
    );
    assert_eq!(g.tcp(CIDR_OK_IP, 853), None, "DoT must stay blocked");

    // Domains: nothing before resolution, any port after; other names refused.
    assert_eq!(g.tcp(ALLOWED_IP, 80), None, "unresolved address reachable");
    assert_eq!(
        g.dns(tap, "other.test"),
        Some((5, vec![])),
        "other names must be REFUSED"
    );
    assert_eq!(g.tcp(CIDR_DENIED_IP, 80), None);
    assert_eq!(g.dns(tap, "allowed.test"), Some((0, vec![ALLOWED_IP])));
    assert_eq!(g.tcp(ALLOWED_IP, 80).as_deref(), Some("inet"));
    assert_eq!(
        g.tcp(ALLOWED_IP, 5000).as_deref(),
        Some("inet"),
        "allowed domain on another port"
    );
    assert!(g.udp(ALLOWED_IP, 5000), "UDP opt-in to an allowed domain");
    assert_eq!(
        g.tcp(UNRESOLVED_IP, 80),
        None,
        "IP literal that was never resolved"
    );
    assert_eq!(
        g.dns(tap, "www.wild.test"),
        Some((0, vec![ALLOWED_IP])),
        "wildcard"
    );
    assert_eq!(
        g.dns(tap, "wild.test").map(|r| r.0),
        Some(5),
        "wildcard does not cover the apex"
    );
    assert!(
        g.dns(INET, "allowed.test").is_none(),
        "other resolvers must be unreachable"
    );
    assert!(
        g.dns(DOH, "allowed.test").is_none(),
        "other resolvers must be unreachable"
    );
    assert!(!g.icmp(ALLOWED_IP));

    // A policy change applies to new connections at once.
    let t = Instant::now();
    vmsan_net::apply_policy(&mut vm.net, &Policy::DenyAll).unwrap();
    filter.domains.set_policy(&Policy::DenyAll);
    let took = t.elapsed();
    eprintln!("policy change took {took:?}");
    assert_eq!(
        g.tcp(CIDR_OK_IP, 80),
        None,
        "deny-all not in force right after the change"
    );
    assert_eq!(g.tcp(ALLOWED_IP, 80), None);
    assert_eq!(g.dns(tap, "allowed.test").map(|r| r.0), Some(5));
    vmsan_net::apply_policy(&mut vm.net, &Policy::AllowAll).unwrap();
    filter.domains.set_policy(&Policy::AllowAll);
    assert_eq!(g.tcp(UNRESOLVED_IP, 80).as_deref(), Some("inet"));
    assert_eq!(g.dns(tap, "other.test"), Some((0, vec![CIDR_OK_IP])));
    drop(filter);
}

#[test]
fn privileged_published_ports_from_outside_and_localhost() {
    if !can_run() {
        return;
    }
    let w = World::new();
    let mut s = spec(3, Policy::DenyAll);
    s.published_ports = vec![
        "8080:8000".parse().unwrap(),
        "9090:8000/udp".parse().unwrap(),
    ];
    let vm = w.vm(s);
    let g = Guest::attach(&vm.net, "g");
    g.serve();

    // From the "internet" to the host's address, and from the host's own localhost.
    assert_eq!(
        w.inet.run(|| tcp_probe(HOST_UP, 8080)).as_deref(),
        Some("guest")
    );
    assert!(
        w.inet.run(|| udp_probe(HOST_UP, 9090)),
        "published UDP from outside"
    );
    assert_eq!(
        w.host
            .run(|| tcp_probe(Ipv4Addr::LOCALHOST, 8080))
            .as_deref(),
        Some("guest")
    );
    assert_eq!(
        w.host.run(|| tcp_probe(HOST_UP, 8080)).as_deref(),
        Some("guest")
    );
    // Unpublished guest ports stay closed.
    assert_eq!(w.inet.run(|| tcp_probe(HOST_UP, 8000)), None);
    // deny-all still stops the guest from opening connections.
    assert_eq!(g.tcp(ALLOWED_IP, 80), None);

    // Conflicts: another VM, a host listener; the agent's port.
    let mut other = spec(4, Policy::AllowAll);
    other.published_ports = vec!["8080".parse().unwrap()];
    let err = vmsan_net::setup(&w.host_config(), &other).unwrap_err();
    assert!(
        matches!(err, vmsan_net::NetError::PortInUse { port: 8080, .. }),
        "{err}"
    );
    other.published_ports = vec![PublishedPort {
        host_port: HOST_SVC_PORT,
        guest_port: 80,
        protocol: vmsan_net::Protocol::Tcp,
    }];
    let err = vmsan_net::setup(&w.host_config(), &other).unwrap_err();
    assert!(
        matches!(err, vmsan_net::NetError::PortInUse { .. }),
        "{err}"
    );
    assert!("1024".parse::<PublishedPort>().is_err());
    // The failed setups left nothing behind.
    assert_eq!(
        vmsan_net::leaks(&w.host_config(), &other.vm_id, other.slot).unwrap(),
        vec![]
    );
}

#[test]
fn privileged_docker_forward_drop_and_clean_teardown() {
    if !can_run() {
        return;
    }
    let w = World::new();
    // What Docker (iptables-nft) leaves on a host: FORWARD policy drop.
    let docker = "table ip filter {\n chain FORWARD {\n  type filter hook forward priority 0; policy drop;\n }\n}\n";
    nft(&w.host.path, &["-f", "-"], docker).unwrap();
    let hc = w.host_config();
    let s = spec(9, Policy::AllowAll);
    let (id, slot) = (s.vm_id.clone(), s.slot);
    {
        let vm = w.vm(s);
        let g = Guest::attach(&vm.net, "g");
        assert_eq!(
            g.tcp(ALLOWED_IP, 80).as_deref(),
            Some("inet"),
            "FORWARD drop blocked the VM"
        );
        let leaks = vmsan_net::leaks(&hc, &id, slot).unwrap();
        assert_eq!(
            leaks.len(),
            3,
            "a live VM shows its netns, link and host-table element: {leaks:?}"
        );
        let chain = nft(
            &w.host.path,
            &["list", "chain", "ip", "filter", "FORWARD"],
            "",
        )
        .unwrap();
        assert_eq!(chain.matches("comment \"vmsan\"").count(), 2, "{chain}");
    }
    assert_eq!(vmsan_net::leaks(&hc, &id, slot).unwrap(), vec![]);
    assert_eq!(vmsan_net::scan_leaks(&hc, &[]).unwrap(), vec![]);
    let chain = nft(
        &w.host.path,
        &["list", "chain", "ip", "filter", "FORWARD"],
        "",
    )
    .unwrap();
    assert!(
        chain.contains("policy drop") && !chain.contains("vmsan"),
        "{chain}"
    );
}

#[test]
fn privileged_custom_policy_port_list() {
    if !can_run() {
        return;
    }
    let w = World::new();
    let policy = Policy::Custom(CustomPolicy {
        allowed_cidrs: vec!["203.0.113.0/24".parse().unwrap()],
        denied_cidrs: vec![],
        allowed_domains: vec![],
        ports: vec![80],
    });
    let vm = w.vm(spec(12, policy));
    let g = Guest::attach(&vm.net, "g");
    assert_eq!(g.tcp(CIDR_OK_IP, 80).as_deref(), Some("inet"));
    assert_eq!(g.tcp(CIDR_OK_IP, 443), None, "port outside the list");
    assert_eq!(g.tcp(CIDR_OK_IP, 5000), None, "port outside the list");
    assert_eq!(
        g.tcp(ALLOWED_IP, 80),
        None,
        "address outside the allowed CIDRs"
    );
}

#[test]
fn privileged_dns_over_tcp_answers_allowed_names_and_fills_the_set() {
    if !can_run() {
        return;
    }
    let w = World::new();
    let policy = Policy::Custom(CustomPolicy {
        allowed_cidrs: vec![],
        denied_cidrs: vec![],
        allowed_domains: vec!["tcp.test".parse().unwrap()],
        ports: vec![],
    });
    let vm = w.vm(spec(14, policy));
    let g = Guest::attach(&vm.net, "g");
    let filter = start_filter(&w, &vm.net);
    let tap = vm.net.addrs.tap_ip;

    assert_eq!(g.tcp(TCP_ONLY_IP, 80), None, "unresolved address reachable");
    assert_eq!(
        g.dns_tcp(tap, "other.test"),
        Some((5, vec![])),
        "other names must be REFUSED over TCP too"
    );
    assert_eq!(
        g.dns_tcp(INET, "tcp.test"),
        None,
        "DNS over TCP to another server must be blocked"
    );
    assert_eq!(g.tcp(TCP_ONLY_IP, 80), None);
    // Answered over TCP (by the upstream over TCP), and the answer is in the set.
    assert_eq!(g.dns_tcp(tap, "tcp.test"), Some((0, vec![TCP_ONLY_IP])));
    assert_eq!(
        g.tcp(TCP_ONLY_IP, 80).as_deref(),
        Some("inet"),
        "address learnt over DNS-over-TCP not allowed"
    );
    assert_eq!(g.tcp(TCP_ONLY_IP, 5000).as_deref(), Some("inet"));
    // The allow-list change reaches the TCP side as well.
    filter.domains.set_policy(&Policy::DenyAll);
    assert_eq!(g.dns_tcp(tap, "tcp.test").map(|r| r.0), Some(5));
    drop(filter);
}

/// `teardown` returns once the veth pair is unlisted (it does not wait for the kernel's
/// final cleanup): checked right after each return, many times over, from both sides. The
/// test keeps the VM namespace open across the teardown to look inside it afterwards.
#[test]
fn privileged_teardown_returns_with_the_veth_pair_and_routes_gone() {
    if !can_run() {
        return;
    }
    let w = World::new();
    let hc = w.host_config();
    for i in 0..20 {
        let vm = w.vm(spec(20 + i, Policy::AllowAll));
        let held = std::fs::File::open(&vm.net.netns_path).unwrap();
        let held_path = format!("/proc/{}/fd/{}", std::process::id(), {
            use std::os::fd::AsRawFd as _;
            held.as_raw_fd()
        });
        if i == 0 {
            // IPv6 off and IPv4 forwarding on for both of the namespace's devices.
            let conf = vmsan_net::netns::run_in(&vm.net.netns_path, || {
                let mut v = Vec::new();
                for dev in ["tap0", vmsan_net::addr::VM_VETH_NAME] {
                    v.push(vmsan_net::netns::read_sysctl(&format!(
                        "net/ipv6/conf/{dev}/disable_ipv6"
                    ))?);
                    v.push(vmsan_net::netns::read_sysctl(&format!(
                        "net/ipv4/conf/{dev}/forwarding"
                    ))?);
                }
                Ok(v)
            })
            .unwrap();
            assert_eq!(conf, ["1"; 4]);
        }
        let guest_net = vm.net.addrs.guest_net.to_string();
        let hv = vm.net.host_veth.clone();
        vmsan_net::teardown(&hc, &vm.net.vm_id, vm.net.slot).unwrap();
        let host_routes = ip_out(&["-n", &w.host.name, "route", "show", &guest_net]);
        assert_eq!(
            host_routes.trim(),
            "",
            "route to the guest left: {host_routes}"
        );
        let host_links = ip_out(&["-n", &w.host.name, "-o", "link", "show"]);
        assert!(!host_links.contains(&hv), "{hv} left: {host_links}");
        let inside = vmsan_net::netns::run_in(std::path::Path::new(&held_path), || {
            let out = std::process::Command::new("ip")
                .args(["-o", "link", "show"])
                .output()
                .map_err(|e| vmsan_net::NetError::Sys {
                    context: "run ip".into(),
                    source: e,
                })?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .unwrap();
        assert!(
            !inside.contains(vmsan_net::addr::VM_VETH_NAME),
            "the veth's VM end is left: {inside}"
        );
        assert_eq!(
            vmsan_net::leaks(&hc, &vm.net.vm_id, vm.net.slot).unwrap(),
            vec![]
        );
        drop(held);
        drop(vm); // a second teardown: idempotent
    }
    assert_eq!(vmsan_net::scan_leaks(&hc, &[]).unwrap(), vec![]);
}

/// `allow-all` means the internet (issue 17, item 21): with real TCP from a guest, the
/// private and shared ranges and the host's own connected network (192.0.2.0/24 here) are out
/// of reach while a public address answers; an explicitly allowed CIDR and `--allow-lan`
/// (at setup or by a policy change) open them; a domain answer pointing into the LAN opens
/// nothing.
#[test]
fn privileged_allow_all_means_the_internet_not_the_lan() {
    if !can_run() {
        return;
    }
    let w = World::new();
    let mut vm = w.vm(spec(11, Policy::AllowAll));
    let g = Guest::attach(&vm.net, "g");
    let blocked = |g: &Guest, why: &str| {
        for ip in LAN_IPS.into_iter().chain([INET]) {
            assert_eq!(g.tcp(ip, 80), None, "{why}: the guest reached {ip}");
        }
    };
    let open = |g: &Guest, why: &str| {
        for ip in LAN_IPS.into_iter().chain([INET]) {
            assert_eq!(g.tcp(ip, 80).as_deref(), Some("inet"), "{why}: {ip}");
        }
    };
    // The rules know the host's network.
    assert!(
        vm.net.host_nets.contains(&"192.0.2.0/24".parse().unwrap()),
        "{:?}",
        vm.net.host_nets
    );
    assert_eq!(g.tcp(ALLOWED_IP, 80).as_deref(), Some("inet"), "public");
    blocked(&g, "allow-all");

    // --allow-lan by a policy change, and back.
    vm.net.allow_lan = true;
    vmsan_net::apply_policy(&mut vm.net, &Policy::AllowAll).unwrap();
    open(&g, "allow-all --allow-lan");
    vm.net.allow_lan = false;
    vmsan_net::apply_policy(&mut vm.net, &Policy::AllowAll).unwrap();
    blocked(&g, "allow-all after --allow-lan was dropped");

    // An explicitly allowed CIDR wins over the block; a domain answer does not.
    let custom = Policy::Custom(CustomPolicy {
        allowed_cidrs: vec!["172.16.0.0/12".parse().unwrap()],
        denied_cidrs: vec![],
        allowed_domains: vec!["lan.test".parse().unwrap()],
        ports: vec![],
    });
    vmsan_net::apply_policy(&mut vm.net, &custom).unwrap();
    let filter = start_filter(&w, &vm.net);
    assert_eq!(g.tcp(LAN_IPS[1], 80).as_deref(), Some("inet"));
    assert_eq!(
        g.dns(vm.net.addrs.tap_ip, "lan.test"),
        Some((0, vec![LAN_IPS[0]]))
    );
    assert_eq!(
        g.tcp(LAN_IPS[0], 80),
        None,
        "a domain resolving into the LAN opened it"
    );
    assert_eq!(g.tcp(LAN_IPS[2], 80), None);
    drop(filter);
    drop(g);
    drop(vm);

    // --allow-lan from the start.
    let mut s = spec(12, Policy::AllowAll);
    s.allow_lan = true;
    let vm = w.vm(s);
    let g = Guest::attach(&vm.net, "g2");
    open(&g, "created with --allow-lan");
}

/// A VM never deletes a host link it did not make (issue 17, item 8): when a second VM is
/// given a slot whose `vmsan-h<N>` another VM holds (two homes before slots were host-wide,
/// or claims lost), its failed setup and its teardown leave that link, its route and its host
/// table entries alone, and the first VM keeps its network.
#[test]
fn privileged_a_vm_never_deletes_a_host_link_it_did_not_make() {
    if !can_run() {
        return;
    }
    let w = World::new();
    let hc = w.host_config();
    let a = w.vm(spec(30, Policy::AllowAll));
    let ga = Guest::attach(&a.net, "ga");
    assert_eq!(ga.tcp(ALLOWED_IP, 80).as_deref(), Some("inet"));
    let host_veth = a.net.host_veth.clone();
    let link = || ip_out(&["-n", &w.host.name, "-o", "link", "show", "dev", &host_veth]);
    assert!(
        link().contains(&format!("alias vmsan {}", a.net.vm_id)),
        "{}",
        link()
    );

    let b = spec(30, Policy::AllowAll);
    let e = vmsan_net::setup(&hc, &b).expect_err("the slot's host link is taken");
    assert!(e.to_string().contains("exists"), "{e}");
    assert!(!link().is_empty(), "B's rollback deleted A's host link");
    assert_eq!(
        ga.tcp(ALLOWED_IP, 80).as_deref(),
        Some("inet"),
        "A lost its network when B's setup failed"
    );

    // B's teardown (what `remove` runs) refuses to touch what is A's.
    let e = vmsan_net::teardown(&hc, &b.vm_id, b.slot).expect_err("not B's link");
    assert!(e.to_string().contains("is not"), "{e}");
    assert!(!link().is_empty(), "B's teardown deleted A's host link");
    assert_eq!(
        vmsan_net::nft::HostState::read(Some(&w.host.path))
            .unwrap()
            .guests
            .len(),
        1
    );
    assert_eq!(ga.tcp(ALLOWED_IP, 80).as_deref(), Some("inet"));
    drop(ga);
    drop(a);
    assert!(link().is_empty(), "A's own teardown removes its link");
}
