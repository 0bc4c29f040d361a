//! Benchmark: snapshots against the stand-in VMM. `snapshot create` time against how much the
//! VM wrote to its disk; the host-side overhead of restoring a clone until its agent answers
//! to its own token (the stand-in's guest "boot" is only starting the agent), next to a cold
//! `create`; and 50 clones of one snapshot at once. Not a test: run it as root with
//!
//! ```text
//! scripts/build-agent && cargo build -p vmsan-testkit --bins --release \
//!   && VMSAN_STANDIN_DIR=target/release cargo bench -p vmsan-cli --bench snapshot
//! ```
//!
//! `VMSAN_BENCH_RUNS` (default 30) sequential restores; `VMSAN_BENCH_CLONES` (default 50).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::time::Instant;

use serde_json::Value;
use vmsan_testkit::bench::{create_at_once, env_or, pct, steps_ms, steps_table};
use vmsan_testkit::e2e::{Home, fixture};

fn timed(home: &Home, args: &[&str]) -> (f64, Value) {
    let t = Instant::now();
    let doc = home.json(args);
    (t.elapsed().as_secs_f64() * 1000.0, doc)
}

/// Per run, the whole command minus what the stand-in does in place of the guest (booting it,
/// or booting it again for a snapshot load: it keeps no memory), sorted.
fn host_side(docs: &[Value], wall: &[f64], guest: &[&str]) -> Vec<f64> {
    let mut v: Vec<f64> = docs
        .iter()
        .zip(wall)
        .map(|(d, w)| w - steps_ms(d, guest))
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

fn main() {
    let runs = env_or("VMSAN_BENCH_RUNS", 30);
    let clones = env_or("VMSAN_BENCH_CLONES", 50);
    let Some(fx) = fixture(Path::new(env!("CARGO_BIN_EXE_vmsan"))) else {
        return;
    };
    let home = &fx.home;
    let src = home.json(&["create", "--from-image", "busybox"])["vmId"]
        .as_str()
        .unwrap()
        .to_owned();

    // Snapshot create against the data on the VM's disk.
    println!("vmsan snapshot create, stand-in VMM, 128 MiB guest, 5 runs per size");
    println!(
        "{:>14} {:>12} {:>12} {:>12} {:>12}",
        "disk data MiB", "p50 ms", "p95 ms", "paused ms", "disk copy ms"
    );
    let mut last = String::new();
    let mut written = 0;
    for mib in [0usize, 64, 256, 1024] {
        if mib > written {
            let out = home.run(&[
                "exec",
                &src,
                "sh",
                "-c",
                &format!(
                    "dd if=/dev/zero of=/root/fill bs=1M count={mib} conv=notrunc 2>/dev/null; sync"
                ),
            ]);
            assert!(out.status.success());
            written = mib;
        }
        let (mut wall, mut paused, mut copy) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..5 {
            let (ms, doc) = timed(home, &["snapshot", "create", &src]);
            wall.push(ms);
            paused.push(doc["pausedMs"].as_f64().unwrap());
            copy.push(
                doc["timingsMs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["step"] == "disk copy")
                    .and_then(|s| s["ms"].as_f64())
                    .unwrap_or(0.0),
            );
            let id = doc["snapshotId"].as_str().unwrap().to_owned();
            if !last.is_empty() {
                home.json(&["snapshot", "delete", &last]);
            }
            last = id;
        }
        for v in [&mut wall, &mut paused, &mut copy] {
            v.sort_by(f64::total_cmp);
        }
        println!(
            "{mib:>14} {:>12.1} {:>12.1} {:>12.1} {:>12.1}",
            pct(&wall, 0.5),
            pct(&wall, 0.95),
            pct(&paused, 0.5),
            pct(&copy, 0.5)
        );
    }
    // Restore from a snapshot of a fresh VM (its disk as empty as a cold create's: a disk
    // that was written to, even if the files were deleted, is copied with its data).
    home.json(&["snapshot", "delete", &last]);
    home.json(&["remove", "--force", &src]);
    let fresh = home.json(&["create", "--from-image", "busybox"])["vmId"]
        .as_str()
        .unwrap()
        .to_owned();
    let snap = home.json(&["snapshot", "create", &fresh])["snapshotId"]
        .as_str()
        .unwrap()
        .to_owned();
    home.json(&["remove", "--force", &fresh]);

    // Warm: one restore and one cold create before measuring.
    for args in [
        vec!["create", "--snapshot", &snap],
        vec!["create", "--from-image", "busybox"],
    ] {
        let id = home.json(&args)["vmId"].as_str().unwrap().to_owned();
        home.json(&["remove", "--force", &id]);
    }
    let (mut restore_wall, mut restore_docs) = (Vec::new(), Vec::new());
    let (mut cold_wall, mut cold_docs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (ms, doc) = timed(home, &["create", "--snapshot", &snap]);
        home.json(&["remove", "--force", doc["vmId"].as_str().unwrap()]);
        restore_wall.push(ms);
        restore_docs.push(doc);
        let (ms, doc) = timed(home, &["create", "--from-image", "busybox"]);
        home.json(&["remove", "--force", doc["vmId"].as_str().unwrap()]);
        cold_wall.push(ms);
        cold_docs.push(doc);
    }
    let restore_host = host_side(
        &restore_docs,
        &restore_wall,
        &["snapshot load", "restored agent answers"],
    );
    let cold_host = host_side(&cold_docs, &cold_wall, &["InstanceStart", "agent ready"]);
    println!();
    steps_table(
        &format!("vmsan create --snapshot until the clone's agent answers, {runs} runs"),
        &restore_docs,
        &mut restore_wall,
    );
    println!();
    steps_table(
        &format!("for comparison, a cold vmsan create until the agent is ready, {runs} runs"),
        &cold_docs,
        &mut cold_wall,
    );
    println!();
    println!(
        "host side (whole command minus the stand-in's guest work), p50 / p95 ms: \
         restore {:.2} / {:.2}, cold create {:.2} / {:.2}",
        pct(&restore_host, 0.5),
        pct(&restore_host, 0.95),
        pct(&cold_host, 0.5),
        pct(&cold_host, 0.95)
    );
    println!(
        "goal: host-side restore p50 under 20 ms: {}",
        if pct(&restore_host, 0.5) < 20.0 {
            "met"
        } else {
            "NOT met"
        }
    );

    // Many clones at once: one process each, and one `--count`.
    let many = create_at_once(home, &["create", "--snapshot", &snap], clones);
    println!();
    println!(
        "{clones} clones at once (one process each): {}",
        many.summary(clones)
    );
    let ok = many.ids;
    for id in &ok {
        home.json(&["remove", "--force", id]);
    }
    let n = clones.to_string();
    let (ms, doc) = timed(home, &["create", "--snapshot", &snap, "--count", &n]);
    let made = doc["vms"].as_array().map_or(1, Vec::len);
    println!(
        "vmsan create --snapshot --count {clones}: {made} clones in {:.2} s",
        ms / 1000.0
    );
    for vm in doc["vms"].as_array().into_iter().flatten() {
        home.json(&["remove", "--force", vm["vmId"].as_str().unwrap()]);
    }
}
