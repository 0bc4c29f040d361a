//! Benchmark: `vmsan create` until the agent is ready, against the stand-in VMM (whose guest
//! "boot" is only starting the agent), with the step-by-step breakdown `create` reports; the
//! supervisor's resident memory per VM; and many creates at once (success rate, wall time).
//! Not a test: run it as root with
//!
//! ```text
//! scripts/build-agent && cargo build -p vmsan-testkit --bins --release \
//!   && VMSAN_STANDIN_DIR=target/release cargo bench -p vmsan-cli --bench create
//! ```
//!
//! `VMSAN_BENCH_RUNS` (default 30) sequential creates; `VMSAN_BENCH_CONCURRENT` (default 100)
//! creates at once; `VMSAN_BENCH_VMSAN` another `vmsan` binary to measure;
//! `VMSAN_BENCH_SMAPS_DIR` a directory to copy one supervisor's smaps and status into.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use vmsan_testkit::bench::{create_at_once, env_or, pct, steps_ms, steps_table};
use vmsan_testkit::e2e::fixture;

fn rss_kib(pid: u64) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Resident memory of a process from /proc/PID/smaps_rollup, in KiB: (Rss, Pss,
/// Private_Clean + Private_Dirty, Anonymous).
fn smaps_kib(pid: u64) -> Option<(u64, u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Some((
        field("Rss:"),
        field("Pss:"),
        field("Private_Clean:") + field("Private_Dirty:"),
        field("Anonymous:"),
    ))
}

fn main() {
    let runs = env_or("VMSAN_BENCH_RUNS", 30);
    let concurrent = env_or("VMSAN_BENCH_CONCURRENT", 100);
    // `VMSAN_BENCH_VMSAN` compares another build of vmsan (say, an earlier commit's).
    let vmsan = std::env::var_os("VMSAN_BENCH_VMSAN").map_or_else(
        || env!("CARGO_BIN_EXE_vmsan").into(),
        std::path::PathBuf::from,
    );
    let Some(fx) = fixture(&vmsan) else {
        return;
    };
    let home = &fx.home;
    // Warm the caches (the overlay template, the initrd) once.
    let id = home.json(&["create", "--from-image", "busybox"])["vmId"]
        .as_str()
        .unwrap()
        .to_owned();
    home.json(&["remove", "--force", &id]);

    let mut wall = Vec::new();
    // The whole command minus what the stand-in does in place of a guest booting (a real
    // InstanceStart returns at once and the guest kernel boots on its own): vmsan's overhead.
    let mut host = Vec::new();
    let mut docs = Vec::new();
    let mut rss = Vec::new();
    let mut mem = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let doc = home.json(&["create", "--from-image", "busybox"]);
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        wall.push(ms);
        host.push(ms - steps_ms(&doc, &["InstanceStart", "agent ready"]));
        let id = doc["vmId"].as_str().unwrap().to_owned();
        let vm = home.json(&["inspect", &id])["vm"].clone();
        if let Some(pid) = vm["supervisor"]["pid"].as_u64() {
            if let Some(kib) = rss_kib(pid) {
                rss.push(kib as f64 / 1024.0);
            }
            if let Some(m) = smaps_kib(pid) {
                mem.push(m);
            }
            if let Some(dir) = std::env::var_os("VMSAN_BENCH_SMAPS_DIR") {
                let _ = std::fs::copy(
                    format!("/proc/{pid}/smaps"),
                    Path::new(&dir).join("supervisor.smaps"),
                );
                let _ = std::fs::copy(
                    format!("/proc/{pid}/status"),
                    Path::new(&dir).join("supervisor.status"),
                );
            }
        }
        home.json(&["remove", "--force", &id]);
        docs.push(doc);
    }
    rss.sort_by(f64::total_cmp);
    steps_table(
        &format!(
            "vmsan create until the agent is ready, stand-in VMM, {runs} runs (whole command)"
        ),
        &docs,
        &mut wall,
    );
    if !rss.is_empty() {
        println!(
            "supervisor resident memory: p50 {:.2} MiB, max {:.2} MiB (goal under 3 MiB)",
            pct(&rss, 0.5),
            rss[rss.len() - 1]
        );
    }
    if !mem.is_empty() {
        let p50 = |f: fn(&(u64, u64, u64, u64)) -> u64| {
            let mut v: Vec<f64> = mem.iter().map(|m| f(m) as f64 / 1024.0).collect();
            v.sort_by(f64::total_cmp);
            pct(&v, 0.5)
        };
        println!(
            "supervisor smaps_rollup p50: Rss {:.2} MiB, Pss {:.2} MiB, Private {:.2} MiB, \
             Anonymous {:.2} MiB",
            p50(|m| m.0),
            p50(|m| m.1),
            p50(|m| m.2),
            p50(|m| m.3)
        );
    }
    host.sort_by(f64::total_cmp);
    println!(
        "{:<64} {:>8.2} {:>8.2}",
        "host side (whole command minus the stand-in's guest boot)",
        pct(&host, 0.5),
        pct(&host, 0.95)
    );
    println!(
        "goal: host-side create p50 under 30 ms: {}",
        if pct(&host, 0.5) < 30.0 {
            "met"
        } else {
            "NOT met"
        }
    );

    // Many at once.
    let many = create_at_once(home, &["create", "--from-image", "busybox"], concurrent);
    println!(
        "{concurrent} concurrent creates: {}",
        many.summary(concurrent)
    );
    let ok = many.ids;
    let t = Instant::now();
    let removers: Vec<_> = ok
        .iter()
        .map(|id| {
            home.vmsan()
                .args(["--json", "remove", "--force", id])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut r in removers {
        r.wait().unwrap();
    }
    println!("removing them at once: {:.2} s", t.elapsed().as_secs_f64());
}
