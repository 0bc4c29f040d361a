//! Benchmark: VM network setup + teardown and policy change, vmsan-net vs. the Node.js
//! vmsan's way (benches/reference-net.sh: one `ip`/`sysctl`/`nft` process per step), side by
//! side, p50 and p95 (and vmsan-net's setup and teardown apart; `VMSAN_NET_BENCH_ONLY_OURS=1`
//! stops there, for profiling). Runs as root in throw-away namespaces (the same test world as the
//! privileged tests). `VMSAN_NET_BENCH_ITERS` sets the iteration count (default 40).
//! Run it with `scripts/bench-net`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use vmsan_net::nft;
use vmsan_net::{CustomPolicy, Policy, Slot};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> String {
    format!("{:8.2} ms", d.as_secs_f64() * 1000.0)
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/reference-net.sh")
}

fn bash(args: &[&str]) {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "reference-net.sh {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn custom() -> Policy {
    Policy::Custom(CustomPolicy {
        allowed_cidrs: vec!["203.0.113.0/24".parse().unwrap()],
        denied_cidrs: vec!["203.0.113.128/25".parse().unwrap()],
        allowed_domains: vec!["allowed.test".parse().unwrap()],
        ports: vec![80, 443],
    })
}

struct TmpFiles(Vec<PathBuf>);
impl Drop for TmpFiles {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn main() {
    if !can_run() {
        return;
    }
    let iters: usize = std::env::var("VMSAN_NET_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let w = World::new();
    let hc = w.host_config();

    // vmsan-net: setup + teardown.
    let mut ours = Vec::new();
    let mut ours_setup = Vec::new();
    let mut ours_teardown = Vec::new();
    for i in 0..iters {
        let mut s = spec(100 + i as u32, Policy::AllowAll);
        s.published_ports = vec!["8080:80".parse().unwrap()];
        let t = Instant::now();
        let net = vmsan_net::setup(&hc, &s).expect("setup");
        let t1 = Instant::now();
        vmsan_net::teardown(&hc, &net.vm_id, net.slot).expect("teardown");
        ours.push(t.elapsed());
        ours_setup.push(t1 - t);
        ours_teardown.push(t1.elapsed());
    }
    println!(
        "vmsan-net alone: setup p50 {} p95 {}, teardown p50 {} p95 {}",
        ms(pct(&mut ours_setup, 0.5)),
        ms(pct(&mut ours_setup, 0.95)),
        ms(pct(&mut ours_teardown, 0.5)),
        ms(pct(&mut ours_teardown, 0.95)),
    );
    if std::env::var_os("VMSAN_NET_BENCH_ONLY_OURS").is_some() {
        println!(
            "setup + teardown p50 {} p95 {}",
            ms(pct(&mut ours, 0.5)),
            ms(pct(&mut ours, 0.95))
        );
        return;
    }

    // vmsan-net: policy change on a live VM, with a kept socket (a supervisor's way) and
    // one-shot (`vmsan network`'s way: a socket opened and closed per change).
    let vm = w.vm(spec(1, Policy::AllowAll));
    let mut net = vm.net.clone();
    let mut ours_pol = Vec::new();
    let mut ours_pol_once = Vec::new();
    {
        let mut fw = vmsan_net::VmFirewall::open(&net).expect("open VM firewall");
        for i in 0..iters {
            let p = if i.is_multiple_of(2) {
                custom()
            } else {
                Policy::DenyAll
            };
            let t = Instant::now();
            fw.apply_policy(&mut net, &p).expect("apply policy");
            ours_pol.push(t.elapsed());
        }
    }
    for i in 0..iters {
        let p = if i.is_multiple_of(2) {
            custom()
        } else {
            Policy::DenyAll
        };
        let t = Instant::now();
        vmsan_net::apply_policy(&mut net, &p).expect("apply policy");
        ours_pol_once.push(t.elapsed());
    }

    // Reference: the same steps as a script of ip/sysctl/nft processes.
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let vm_rules = dir.join(format!("vmsan-bench-{pid}-vm.nft"));
    let host_rules = dir.join(format!("vmsan-bench-{pid}-host.nft"));
    let host_remove = dir.join(format!("vmsan-bench-{pid}-host-rm.nft"));
    let pol_rules = dir.join(format!("vmsan-bench-{pid}-pol.nft"));
    let _tmp = TmpFiles(vec![
        vm_rules.clone(),
        host_rules.clone(),
        host_remove.clone(),
        pol_rules.clone(),
    ]);
    let mut theirs = Vec::new();
    for i in 0..iters {
        let slot = Slot::new(100 + i as u32).unwrap();
        let a = slot.addrs();
        let id = vm_id();
        let published: Vec<vmsan_net::PublishedPort> = vec!["8080:80".parse().unwrap()];
        std::fs::write(
            &vm_rules,
            nft::vm_table(&nft::VmRules {
                addrs: &a,
                policy: &Policy::AllowAll,
                allow_udp: false,
                published: &published,
                lan: &nft::lan_block(false, &[]),
            })
            .to_nft(),
        )
        .unwrap();
        let hv = format!("veth-h-{}", slot.get());
        std::fs::write(
            &host_rules,
            nft::host_add(&nft::HostRules {
                addrs: &a,
                host_veth: &hv,
                published: &published,
            })
            .to_nft(),
        )
        .unwrap();
        let state = nft::HostState {
            exists: true,
            guests: vec![
                (hv.clone(), a.guest_ip),
                ("other".into(), Ipv4Addr::new(198, 18, 0, 10)),
            ],
            published: vec![(vmsan_net::Protocol::Tcp, 8080, a.guest_ip, 80)],
        };
        std::fs::write(
            &host_remove,
            nft::host_remove(&state, &hv, a.guest_ip, &[]).to_nft(),
        )
        .unwrap();
        let ns = format!("{}{id}", prefix());
        let n = slot.get().to_string();
        let t = Instant::now();
        bash(&[
            "setup",
            &w.host.name,
            &ns,
            &n,
            &a.tap_ip.to_string(),
            &a.guest_net.to_string(),
            &a.host_veth_ip.to_string(),
            &a.vm_veth_ip.to_string(),
            vm_rules.to_str().unwrap(),
            host_rules.to_str().unwrap(),
        ]);
        bash(&[
            "teardown",
            &w.host.name,
            &ns,
            &n,
            &a.guest_net.to_string(),
            host_remove.to_str().unwrap(),
        ]);
        theirs.push(t.elapsed());
    }
    let mut theirs_pol = Vec::new();
    let vm_ns = vm
        .net
        .netns_path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    for i in 0..iters {
        let p = if i.is_multiple_of(2) {
            custom()
        } else {
            Policy::DenyAll
        };
        std::fs::write(
            &pol_rules,
            nft::policy_change(
                &nft::VmRules {
                    addrs: &vm.net.addrs,
                    policy: &p,
                    allow_udp: false,
                    published: &[],
                    lan: &nft::lan_block(false, &[]),
                },
                true,
            )
            .to_nft(),
        )
        .unwrap();
        let t = Instant::now();
        bash(&["policy", &vm_ns, pol_rules.to_str().unwrap()]);
        theirs_pol.push(t.elapsed());
    }

    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len().max(1) as u32;
    let (omean, tmean) = (mean(&ours), mean(&theirs));
    let (o50, o95) = (pct(&mut ours, 0.5), pct(&mut ours, 0.95));
    let (t50, t95) = (pct(&mut theirs, 0.5), pct(&mut theirs, 0.95));
    let (op50, op95) = (pct(&mut ours_pol, 0.5), pct(&mut ours_pol, 0.95));
    let (tp50, tp95) = (pct(&mut theirs_pol, 0.5), pct(&mut theirs_pol, 0.95));
    let (oo50, oo95) = (pct(&mut ours_pol_once, 0.5), pct(&mut ours_pol_once, 0.95));
    println!("VM network benchmark, {iters} iterations each (2-core machine, shared)");
    println!(
        "(both sides leave kernel cleanup behind, e.g. a namespace's destruction; it lands in \
         the next iteration, which the mean includes)"
    );
    println!(
        "{:<28} {:>11} {:>11} {:>13} {:>13} {:>9}",
        "", "vmsan p50", "vmsan p95", "script p50", "script p95", "speed-up"
    );
    println!(
        "{:<28} {} {} {}   {}   {:>7.1}x",
        "setup + teardown per VM",
        ms(o50),
        ms(o95),
        ms(t50),
        ms(t95),
        t50.as_secs_f64() / o50.as_secs_f64()
    );
    println!(
        "{:<28} {}             {}                 {:>7.1}x",
        "  mean",
        ms(omean),
        ms(tmean),
        tmean.as_secs_f64() / omean.as_secs_f64()
    );
    println!(
        "{:<28} {} {} {}   {}   {:>7.1}x",
        "policy change (kept socket)",
        ms(op50),
        ms(op95),
        ms(tp50),
        ms(tp95),
        tp50.as_secs_f64() / op50.as_secs_f64()
    );
    println!(
        "{:<28} {} {} {}   {}   {:>7.1}x",
        "policy change (one-shot)",
        ms(oo50),
        ms(oo95),
        ms(tp50),
        ms(tp95),
        tp50.as_secs_f64() / oo50.as_secs_f64()
    );
}
