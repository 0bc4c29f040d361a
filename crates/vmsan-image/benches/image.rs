//! Benchmark (not a test): vmsan's pull-and-build against `skopeo copy` + `umoci unpack` +
//! `mkfs.ext4 -d`, on the same 223 MiB, 30,000-file, 6-layer image served by a local
//! `docker-registry`; warm (cached) resolution; per-VM disk preparation. Prints p50/p95.
//! Run as root through `scripts/bench-image`.
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use vmsan_image::{FsType, ImageStore, PullOptions, PullPolicy, create_overlay_disk};

const LAYERS: usize = 6;
const FILES_PER_LAYER: usize = 5000;

fn words() -> Vec<Vec<u8>> {
    let n = noise(512 * 12, 42);
    (0..512)
        .map(|i| {
            let len = 3 + (n[i * 12] as usize % 8);
            n[i * 12 + 1..i * 12 + 1 + len]
                .iter()
                .map(|b| b'a' + b % 26)
                .collect()
        })
        .collect()
}

/// Text-like content (compresses roughly like real binaries and libraries, about 3:1).
fn content(size: usize, seed: u64, w: &[Vec<u8>]) -> Vec<u8> {
    let r = noise(size / 4 + 16, seed);
    let mut out = Vec::with_capacity(size + 16);
    let mut i = 0;
    while out.len() < size {
        let idx =
            (usize::from(r[i % r.len()]) << 1 | usize::from(r[(i + 1) % r.len()] & 1)) % w.len();
        out.extend_from_slice(&w[idx]);
        out.push(if r[(i + 2) % r.len()].is_multiple_of(11) {
            b'\n'
        } else {
            b' '
        });
        if i.is_multiple_of(97) {
            out.extend_from_slice(&r[i % r.len()..(i % r.len() + 3).min(r.len())]);
        }
        i += 3;
    }
    out.truncate(size);
    out
}

fn make_layers() -> (Vec<(Vec<u8>, &'static str)>, u64, usize) {
    let w = words();
    let mut total = 0u64;
    let mut files = 0;
    let mut layers = Vec::new();
    for l in 0..LAYERS {
        let mut layer = Layer::new()
            .dir("usr", 0o755, 0, 0)
            .dir("usr/share", 0o755, 0, 0)
            .dir(&format!("usr/share/l{l}"), 0o755, 0, 0);
        for d in 0..FILES_PER_LAYER / 50 {
            layer = layer.dir(&format!("usr/share/l{l}/d{d}"), 0o755, 0, 0);
            for f in 0..50 {
                let seed = (l * 1_000_000 + d * 100 + f) as u64 + 1;
                // 1.5 KiB to 14.5 KiB, 7.4 KiB on average: 223 MiB over 30,000 files, as in the issue.
                let size = 1548 + (noise(2, seed)[1] as usize * 53 % 13_000);
                let data = content(size, seed, &w);
                total += data.len() as u64;
                files += 1;
                layer = layer.file(&format!("usr/share/l{l}/d{d}/f{f}"), &data, 0o644, 0, 0);
            }
        }
        layers.push((layer.gz(), GZ));
    }
    (layers, total, files)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.3} ms", d.as_secs_f64() * 1000.0)
    } else if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn run(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

fn main() {
    if !is_root() {
        println!("bench-image: needs root (ownership is reproduced, umoci unpacks as root)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let t = Instant::now();
    let (layers, bytes, files) = make_layers();
    let compressed: usize = layers.iter().map(|(l, _)| l.len()).sum();
    rt.block_on(reg.push_image(
        "bench/img",
        "v1",
        "amd64",
        serde_json::json!({"config": {"Cmd": ["/bin/sh"]}}),
        &layers,
    ));
    println!(
        "image: {} layers, {files} files, {:.1} MiB uncompressed, {:.1} MiB compressed (generated and pushed in {})",
        LAYERS,
        bytes as f64 / 1048576.0,
        compressed as f64 / 1048576.0,
        fmt(t.elapsed())
    );
    let name = format!("{}/bench/img:v1", reg.addr);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);

    // vmsan cold: fresh store each time (no blobs, no build).
    let mut cold = Vec::new();
    let mut phases = Vec::new();
    for _ in 0..runs {
        let home = tempfile::tempdir_in("/var/tmp").unwrap();
        let store = ImageStore::open(home.path()).unwrap();
        let t = Instant::now();
        let img = rt
            .block_on(store.pull(&name, &PullOptions::default()))
            .unwrap();
        cold.push(t.elapsed());
        phases.push((
            img.record.merge_ms.unwrap_or(0),
            img.record.build_ms.unwrap_or(0),
        ));
    }
    let cold_unsorted = cold.clone();
    // vmsan warm: the same store, image built.
    let home = tempfile::tempdir_in("/var/tmp").unwrap();
    let store = ImageStore::open(home.path()).unwrap();
    let img = rt
        .block_on(store.pull(&name, &PullOptions::default()))
        .unwrap();
    let mut warm = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        rt.block_on(store.pull(&name, &PullOptions::default()))
            .unwrap();
        warm.push(t.elapsed());
    }
    let always = PullOptions {
        policy: PullPolicy::Always,
        ..Default::default()
    };
    let mut warm_always = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        rt.block_on(store.pull(&name, &always)).unwrap();
        warm_always.push(t.elapsed());
    }
    // vmsan with ext4 instead of squashfs (layers cached, so this is merge + mkfs.ext4 -d).
    let ext4_opts = PullOptions {
        build: vmsan_image::BuildOptions {
            fs_type: FsType::Ext4,
            ..Default::default()
        },
        ..Default::default()
    };
    let home_e = tempfile::tempdir_in("/var/tmp").unwrap();
    let store_e = ImageStore::open(home_e.path()).unwrap();
    let t = Instant::now();
    rt.block_on(store_e.pull(&name, &ext4_opts)).unwrap();
    let ext4_cold = t.elapsed();

    // Per-VM disk preparation: overlay copy of a 1 GiB template + config drive.
    let tpl = store.overlay_template(1 << 30).unwrap();
    let vmdir = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut disk = Vec::new();
    let mut method = None;
    for i in 0..100 {
        let t = Instant::now();
        method = Some(create_overlay_disk(&tpl, &vmdir.path().join(format!("o{i}.ext4"))).unwrap());
        // The config drive: a small JSON document padded to 4 KiB, as vmsan-core writes it.
        let mut drive = br#"{"version":1,"vmId":"vm-00000000"}"#.to_vec();
        drive.resize(4096, 0);
        std::fs::write(vmdir.path().join(format!("c{i}.json")), &drive).unwrap();
        disk.push(t.elapsed());
    }

    let c50 = pct(&mut cold, 0.5);
    let c95 = pct(&mut cold, 0.95);
    println!();
    println!("{:<44} {:>12} {:>12}", "", "p50", "p95");
    println!(
        "{:<44} {:>12} {:>12}",
        format!("vmsan cold pull+build (squashfs, {runs} runs)"),
        fmt(c50),
        fmt(c95)
    );
    println!(
        "{:<44} {:>12} {:>12}",
        "vmsan warm (cached, --pull missing, 50)",
        fmt(pct(&mut warm, 0.5)),
        fmt(pct(&mut warm, 0.95))
    );
    println!(
        "{:<44} {:>12} {:>12}",
        "vmsan warm (--pull always: manifest GET, 50)",
        fmt(pct(&mut warm_always, 0.5)),
        fmt(pct(&mut warm_always, 0.95))
    );
    println!(
        "{:<44} {:>12}",
        "vmsan cold pull+build with ext4 (1 run)",
        fmt(ext4_cold)
    );
    println!(
        "{:<44} {:>12} {:>12}   ({:?}, 1 GiB template)",
        "per-VM disk: overlay copy + config drive",
        fmt(pct(&mut disk, 0.5)),
        fmt(pct(&mut disk, 0.95)),
        method.unwrap()
    );
    for (i, (m, b)) in phases.iter().enumerate() {
        let total = cold_unsorted[i].as_millis() as u64;
        println!(
            "  cold run {i}: download + unpack + compress + merge {m} ms, squashfs write {b} ms, record {} ms",
            total.saturating_sub(m + b)
        );
    }
    println!(
        "{:<44} {:>12}",
        "built squashfs size",
        format!("{:.1} MiB", img.record.size as f64 / 1048576.0)
    );
    // Baseline pipeline: skopeo copy + umoci unpack + mkfs.ext4 -d.
    let have_baseline = have("skopeo") && have("umoci");
    let mut base = None;
    if have_baseline {
        let w = tempfile::tempdir_in("/var/tmp").unwrap();
        let oci = w.path().join("oci");
        let bundle = w.path().join("bundle");
        let ext4 = w.path().join("rootfs.ext4");
        let src = format!("docker://{name}");
        let dst = format!("oci:{}:v1", oci.display());
        let s = run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &src,
            &dst,
        ]));
        let u = run(Command::new("umoci")
            .args(["unpack", "--image", &format!("{}:v1", oci.display())])
            .arg(&bundle));
        let size = (bytes * 2 + (256 << 20)) / 1048576;
        let m = run(Command::new("mkfs.ext4")
            .args(["-F", "-q", "-m", "0", "-d"])
            .arg(bundle.join("rootfs"))
            .arg(&ext4)
            .arg(format!("{size}M")));
        // Warm for the pipeline: blobs already in the layout, but it has no build cache.
        let bundle2 = w.path().join("bundle2");
        let ext42 = w.path().join("rootfs2.ext4");
        let s2 = run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &src,
            &dst,
        ]));
        let u2 = run(Command::new("umoci")
            .args(["unpack", "--image", &format!("{}:v1", oci.display())])
            .arg(&bundle2));
        let m2 = run(Command::new("mkfs.ext4")
            .args(["-F", "-q", "-m", "0", "-d"])
            .arg(bundle2.join("rootfs"))
            .arg(&ext42)
            .arg(format!("{size}M")));
        base = Some((s, u, m, s2 + u2 + m2));
    }

    match base {
        Some((s, u, m, warm_b)) => {
            let total = s + u + m;
            println!();
            println!(
                "baseline (1 run): skopeo copy {} + umoci unpack {} + mkfs.ext4 -d {} = {}",
                fmt(s),
                fmt(u),
                fmt(m),
                fmt(total)
            );
            println!(
                "baseline warm (blobs present, no build cache): {}",
                fmt(warm_b)
            );
            println!();
            println!(
                "{:<28} {:>12} {:>12} {:>10}",
                "side by side", "vmsan", "baseline", "ratio"
            );
            println!(
                "{:<28} {:>12} {:>12} {:>9.1}x",
                "cold",
                fmt(c50),
                fmt(total),
                total.as_secs_f64() / c50.as_secs_f64()
            );
            let w50 = pct(&mut warm, 0.5);
            println!(
                "{:<28} {:>12} {:>12} {:>9.0}x",
                "warm",
                fmt(w50),
                fmt(warm_b),
                warm_b.as_secs_f64() / w50.as_secs_f64()
            );
            println!(
                "goals: cold <= 1/10 of baseline: {}; warm < 50 ms: {}; per-VM disk < 5 ms: {}",
                if c50.as_secs_f64() * 10.0 <= total.as_secs_f64() {
                    "met"
                } else {
                    "NOT met"
                },
                if pct(&mut warm, 0.95) < Duration::from_millis(50) {
                    "met"
                } else {
                    "NOT met"
                },
                if pct(&mut disk, 0.95) < Duration::from_millis(5) {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
        None => println!("baseline skipped: install skopeo and umoci (Debian packages) to compare"),
    }
}
