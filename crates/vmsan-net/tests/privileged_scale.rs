//! 200 VM networks set up concurrently, then torn down concurrently: zero leaks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::*;
use vmsan_net::Policy;

/// Tears down whatever is still listed, also when the test fails half-way.
struct Cleanup<'a> {
    host: vmsan_net::HostConfig,
    vms: &'a std::sync::Mutex<Vec<(String, vmsan_net::Slot)>>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let vms = std::mem::take(&mut *self.vms.lock().unwrap_or_else(|p| p.into_inner()));
        for (id, slot) in vms {
            let _ = vmsan_net::teardown(&self.host, &id, slot);
        }
    }
}

#[test]
fn privileged_200_concurrent_setups_then_teardowns_leave_no_leaks() {
    if !can_run() {
        return;
    }
    // VMSAN_NET_SCALE_VMS overrides the count for quick local runs.
    let vms: u32 = std::env::var("VMSAN_NET_SCALE_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let w = World::new();
    let hc = w.host_config();
    let live = std::sync::Mutex::new(Vec::new());
    let _cleanup = Cleanup {
        host: hc.clone(),
        vms: &live,
    };

    // All setups are in flight together, bounded by a pool of `workers` threads (default 32,
    // VMSAN_NET_SCALE_WORKERS) so the kernel's global locks (RTNL, pernet) are not swamped.
    let workers: u32 = std::env::var("VMSAN_NET_SCALE_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let next = std::sync::atomic::AtomicU32::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= vms {
                        return;
                    }
                    // Slots spread over the whole range, past 255 (the Node.js vmsan's most).
                    let mut sp = spec(
                        i * 81,
                        if i.is_multiple_of(2) {
                            Policy::AllowAll
                        } else {
                            Policy::DenyAll
                        },
                    );
                    if i.is_multiple_of(5) {
                        sp.published_ports = vec![format!("{}:80", 20_000 + i).parse().unwrap()];
                    }
                    let r = vmsan_net::setup(&hc, &sp);
                    if let Ok(n) = &r {
                        live.lock().unwrap().push((n.vm_id.clone(), n.slot));
                    }
                    results.lock().unwrap().push(r.map(|n| (n.vm_id, n.slot)));
                }
            });
        }
    });
    let results = results.into_inner().unwrap();
    let setup_time = t.elapsed();
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} setups failed, first: {}",
        failed.len(),
        failed[0]
    );
    let known: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    // Every VM's objects exist, and nothing else does.
    assert_eq!(vmsan_net::scan_leaks(&hc, &known).unwrap(), vec![]);
    // Unknown to the scan, each VM shows its netns, link and element, plus one element per
    // published port and the shared table.
    let published = known.len().div_ceil(5);
    assert_eq!(
        vmsan_net::scan_leaks(&hc, &[]).unwrap().len(),
        known.len() * 3 + published + 1
    );

    let t = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((id, slot)) = known.get(i) else {
                        return;
                    };
                    vmsan_net::teardown(&hc, id, *slot).unwrap();
                }
            });
        }
    });
    let teardown_time = t.elapsed();
    live.lock().unwrap().clear();
    eprintln!("{vms} concurrent setups: {setup_time:?}, teardowns: {teardown_time:?}");

    assert_eq!(vmsan_net::scan_leaks(&hc, &[]).unwrap(), vec![]);
    for (id, slot) in &known {
        assert_eq!(vmsan_net::leaks(&hc, id, *slot).unwrap(), vec![]);
    }
    let links = ip_out(&["-n", &w.host.name, "-o", "link", "show"]);
    assert!(!links.contains("vmsan-h"), "{links}");
    let routes = ip_out(&["-n", &w.host.name, "route", "show"]);
    assert!(!routes.contains("198.1"), "{routes}");
    let tables = nft(&w.host.path, &["list", "tables"], "").unwrap();
    assert!(!tables.contains("vmsan"), "{tables}");
}
