//! Must show 4: time from `InstanceStart` to the guest's `/init` running under the stand-in
//! (the floor of every create benchmark that uses it). Prints p50/p95 per configuration, side
//! by side. Needs root; run with `scripts/bench-standin`.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmsan_testkit::fixture::BusyboxGuest;
use vmsan_testkit::http::call;

const INIT: &str = "trap 'exit 0' INT\necho INIT_RUNNING\nwhile true; do /bin/sleep 1; done\n";

struct Config {
    name: &'static str,
    gzip: bool,
    drives: bool,
}

fn wait_socket(p: &Path) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if std::os::unix::net::UnixStream::connect(p).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("no API socket");
}

/// One boot; returns (InstanceStart → /init's first line, InstanceStart → 204).
fn boot_once(dir: &Path, cfg: &Config) -> (Duration, Duration) {
    let api = dir.join("api.sock");
    let _ = std::fs::remove_file(&api);
    let _ = std::fs::remove_file(dir.join("v.sock"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_firecracker-standin"))
        .arg("--api-sock")
        .arg(&api)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_socket(&api);
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let initrd = if cfg.gzip { "initrd.gz" } else { "initrd.cpio" };
    let mut reqs = vec![(
        "/boot-source".to_owned(),
        format!(
            r#"{{"kernel_image_path":"{}","initrd_path":"{}","boot_args":"console=ttyS0 reboot=k panic=1"}}"#,
            p("vmlinux"),
            p(initrd)
        ),
    )];
    if cfg.drives {
        for (id, ro) in [("rootfs", true), ("overlay", false), ("config", true)] {
            reqs.push((
                format!("/drives/{id}"),
                format!(r#"{{"drive_id":"{id}","path_on_host":"{}","is_root_device":false,"is_read_only":{ro}}}"#, p(&format!("{id}.img"))),
            ));
        }
        reqs.push((
            "/vsock".into(),
            format!(r#"{{"guest_cid":3,"uds_path":"{}"}}"#, p("v.sock")),
        ));
    }
    for (path, body) in &reqs {
        let (st, r) = call(&api, "PUT", path, Some(body)).unwrap();
        assert_eq!(st, 204, "{path}: {r}");
    }
    let t0 = Instant::now();
    let (st, r) = call(
        &api,
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    )
    .unwrap();
    let api_done = t0.elapsed();
    assert_eq!(st, 204, "{r}");
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "console closed");
        if line.contains("INIT_RUNNING") {
            break;
        }
    }
    let init_running = t0.elapsed();
    let (st, _) = call(
        &api,
        "PUT",
        "/actions",
        Some(r#"{"action_type":"SendCtrlAltDel"}"#),
    )
    .unwrap();
    assert_eq!(st, 204);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    (init_running, api_done)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn main() {
    if !nix::unistd::geteuid().is_root() || !BusyboxGuest::available() {
        println!("standin_boot: skipped (needs root and busybox-static)");
        return;
    }
    let runs: usize = std::env::var("STANDIN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("vmlinux"), b"x").unwrap();
    let g = BusyboxGuest::new(INIT);
    std::fs::write(d.join("initrd.cpio"), g.clone().build().unwrap()).unwrap();
    std::fs::write(d.join("initrd.gz"), g.gzip(true).build().unwrap()).unwrap();
    std::fs::write(d.join("rootfs.img"), vec![0u8; 1 << 20]).unwrap();
    std::fs::write(d.join("overlay.img"), vec![0u8; 1 << 20]).unwrap();
    std::fs::write(d.join("config.img"), vec![0u8; 4096]).unwrap();
    let configs = [
        Config {
            name: "initrd (raw cpio), no drives",
            gzip: false,
            drives: false,
        },
        Config {
            name: "initrd (gzip cpio), no drives",
            gzip: true,
            drives: false,
        },
        Config {
            name: "raw cpio + 3 loop drives + vsock",
            gzip: false,
            drives: true,
        },
    ];
    println!(
        "firecracker-standin: InstanceStart -> guest /init running ({runs} boots each, busybox initrd)"
    );
    println!(
        "{:<36} {:>12} {:>12} {:>14} {:>14}",
        "configuration", "init p50", "init p95", "204 p50", "204 p95"
    );
    for c in &configs {
        let _ = boot_once(d, c); // warm-up
        let mut init = Vec::new();
        let mut api = Vec::new();
        for _ in 0..runs {
            let (a, b) = boot_once(d, c);
            init.push(a);
            api.push(b);
        }
        println!(
            "{:<36} {:>10.2}ms {:>10.2}ms {:>12.2}ms {:>12.2}ms",
            c.name,
            pct(&mut init, 0.5).as_secs_f64() * 1e3,
            pct(&mut init, 0.95).as_secs_f64() * 1e3,
            pct(&mut api, 0.5).as_secs_f64() * 1e3,
            pct(&mut api, 0.95).as_secs_f64() * 1e3,
        );
    }
}
