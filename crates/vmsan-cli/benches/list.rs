//! Benchmark: `vmsan list` with 1,000 VMs in the store, p50 and p95, side by side with the
//! Node.js vmsan's way of listing (a `node` script reading the same files), when `node` is
//! installed, and with another build of vmsan when `VMSAN_BENCH_BASELINE` names one. Not a test:
//! run it with
//!
//! ```text
//! cargo bench -p vmsan-cli --bench list            # VMSAN_BENCH_VMS=1000 VMSAN_BENCH_RUNS=100
//! ```
//!
//! Every sample is one whole process, spawn to exit, with stdout discarded: what a user or a
//! script calling `vmsan list` waits for. A tenth of the VMs are "running" with a live process
//! recorded, so each `list` also reconciles them against `/proc`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmsan_core::paths::Paths;
use vmsan_core::process;
use vmsan_core::state::{NetworkPolicy, Runtime, RuntimeName, StateStore, VmState, VmStatus};
use vmsan_core::time::format_rfc3339;
use vmsan_testkit::bench::env_or;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// CPU time (user + system) of this process's reaped children, from `/proc/self/stat`
/// (fields 16 and 17, in USER_HZ = 100 ticks per second on Linux).
fn children_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // `rest` starts at field 3 (state); cutime is field 16, cstime field 17.
    Duration::from_millis((f[13] + f[14]) * 10)
}

struct Stats {
    p50: Duration,
    p95: Duration,
    cpu_mean: Duration,
}

fn measure(runs: usize, mut cmd: impl FnMut() -> Command) -> Stats {
    for _ in 0..3 {
        let st = cmd().stdout(Stdio::null()).status().unwrap();
        assert!(st.success(), "warm-up run failed: {st}");
    }
    let mut samples = Vec::with_capacity(runs);
    let cpu0 = children_cpu();
    for _ in 0..runs {
        let mut c = cmd();
        c.stdout(Stdio::null());
        let t = Instant::now();
        let st = c.status().unwrap();
        samples.push(t.elapsed());
        assert!(st.success());
    }
    let cpu = children_cpu() - cpu0;
    samples.sort();
    Stats {
        p50: percentile(&samples, 0.50),
        p95: percentile(&samples, 0.95),
        cpu_mean: cpu / u32::try_from(runs).unwrap(),
    }
}

fn populate(home: &Path, n: usize) {
    let store = StateStore::open(&Paths::new(home).with_run_dir(home.join("run"))).unwrap();
    let me = process::identify(std::process::id()).expect("identify this process");
    let base_ms: u64 = 1_790_000_000_000;
    for i in 0..n {
        store
            .create(|id, _slot| {
                let mut st = VmState::new(id.clone(), &format_rfc3339(base_ms + i as u64 * 1000));
                st.vcpu_count = 1 + (i % 4) as u32;
                st.mem_size_mib = 128 << (i % 3);
                st.runtime =
                    RuntimeName::Named([Runtime::Base, Runtime::Node22, Runtime::Python313][i % 3]);
                st.network.guest_ip = format!("198.18.{}.{}", i / 64, (i % 64) * 4 + 2)
                    .parse()
                    .ok();
                st.network.network_policy = NetworkPolicy::AllowAll;
                if i % 10 == 0 {
                    st.status = VmStatus::Running;
                    st.vmm = Some(me);
                    st.pid = Some(me.pid);
                } else {
                    st.status = VmStatus::Stopped;
                }
                st
            })
            .unwrap();
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let n = env_or("VMSAN_BENCH_VMS", 1000);
    let runs = env_or("VMSAN_BENCH_RUNS", 100);
    // VMSAN_BENCH_HOME keeps the store between runs (it is filled only when empty).
    let dir = tempfile::tempdir().unwrap();
    let kept = std::env::var_os("VMSAN_BENCH_HOME").map(std::path::PathBuf::from);
    let home = kept.as_deref().unwrap_or(dir.path());
    if !home.join("vms").exists() {
        let t = Instant::now();
        populate(home, n);
        println!(
            "store: {n} VMs written in {:.1} s under {}",
            t.elapsed().as_secs_f64(),
            home.display()
        );
    }

    let vmsan = env!("CARGO_BIN_EXE_vmsan");
    let check = Command::new(vmsan)
        .args(["--json", "list"])
        .env("VMSAN_HOME", home)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(doc["count"], n, "vmsan list sees every VM");

    // `VMSAN_BENCH_BASELINE`: another build of vmsan (say, an earlier commit's), measured in
    // the same run on the same store.
    let baseline = std::env::var("VMSAN_BENCH_BASELINE").ok();
    let mut binaries = vec![("vmsan", vmsan.to_owned())];
    if let Some(b) = &baseline {
        binaries.push(("baseline", b.clone()));
    }
    let mut rows: Vec<(String, Stats)> = Vec::new();
    for (who, bin) in &binaries {
        for (label, args) in [
            ("list", vec!["list"]),
            ("list --json", vec!["--json", "list"]),
            ("version (process baseline)", vec!["version"]),
        ] {
            let r = measure(runs, || {
                let mut c = Command::new(bin);
                c.args(&args).env("VMSAN_HOME", home);
                c
            });
            rows.push((format!("{who} {label}"), r));
        }
    }

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/list_reference.js");
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if node_ok {
        let out = Command::new("node")
            .arg(&script)
            .arg(home)
            .arg("--json")
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["count"], n, "the node script sees every VM");
        for (label, json) in [
            ("Node.js vmsan list (node)", false),
            ("Node.js vmsan list --json (node)", true),
        ] {
            let r = measure(runs, || {
                let mut c = Command::new("node");
                c.arg(&script).arg(home);
                if json {
                    c.arg("--json");
                }
                c
            });
            rows.push((label.to_owned(), r));
        }
    } else {
        println!(
            "node is not installed: the Node.js comparison is skipped (apt-get install nodejs)"
        );
    }

    println!("\n{n} VMs, {runs} runs each (whole process, spawn to exit)\n");
    println!(
        "{:<38} {:>10} {:>10} {:>14}",
        "command", "p50 ms", "p95 ms", "CPU ms/run"
    );
    for (label, st) in &rows {
        println!(
            "{label:<38} {:>10.2} {:>10.2} {:>14.2}",
            st.p50.as_secs_f64() * 1e3,
            st.p95.as_secs_f64() * 1e3,
            st.cpu_mean.as_secs_f64() * 1e3
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nload average while measuring: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let p50 = rows[0].1.p50;
    let base = rows[2].1.p50;
    println!(
        "vmsan list p50 above the bare process start: {:.2} ms",
        (p50.saturating_sub(base)).as_secs_f64() * 1e3
    );
    let verdict = if p50 < Duration::from_millis(20) {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "\ngoal: vmsan list p50 under 20 ms: {verdict} ({:.2} ms)",
        p50.as_secs_f64() * 1e3
    );
}
