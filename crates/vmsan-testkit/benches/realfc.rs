//! Issue 13, must show 2: real Firecracker v1.16.1 and the stand-in side by side, on the same
//! requests: process start to API socket, cold-boot configuration to InstanceStart, pause, a
//! full snapshot of 128 MiB and of 512 MiB, and snapshot load + resume in a fresh process, for
//! one clone and for ten at once. p50/p95 in milliseconds.
//!
//! Both run un-jailed (the jailer's own cost is outside these steps), each VMM in a fresh
//! directory, with the halting guest as kernel (the stand-in runs its busybox initrd instead).
//! Needs root and `/dev/kvm` and the real binaries (`vmsan_testkit::realfc`).
//! `cargo bench -p vmsan-testkit --bench realfc`; `REALFC_RUNS` (default 10) runs per row.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmsan_testkit::bench::{env_or, pct};
use vmsan_testkit::fixture::BusyboxGuest;
use vmsan_testkit::http::call;
use vmsan_testkit::realfc;

struct Vmm {
    child: Child,
    sock: PathBuf,
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Start a VMM in `dir`; returns it and the time until its API socket accepts.
fn start(bin: &Path, dir: &Path) -> (Vmm, f64) {
    std::fs::create_dir_all(dir).unwrap();
    let sock = dir.join("api.sock");
    let t = Instant::now();
    let child = Command::new(bin)
        .args(["--api-sock", "api.sock", "--id", "bench"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = t + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < end, "no API socket in {}", dir.display());
        std::thread::sleep(Duration::from_micros(200));
    }
    (Vmm { child, sock }, ms(t.elapsed()))
}

fn put(vmm: &Vmm, method: &str, path: &str, body: &str) -> f64 {
    let t = Instant::now();
    let (st, resp) = call(&vmm.sock, method, path, Some(body)).unwrap();
    assert_eq!(st, 204, "{method} {path}: {resp}");
    ms(t.elapsed())
}

fn lay_files(dir: &Path, initrd: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    realfc::write_halting_guest(&dir.join("vmlinux")).unwrap();
    std::fs::write(dir.join("initrd.cpio"), initrd).unwrap();
    std::fs::write(dir.join("disk.ext4"), vec![0u8; 1 << 20]).unwrap();
}

/// Configure and boot; returns the time from the first request to InstanceStart's answer.
fn boot(vmm: &Vmm, mem_mib: u32) -> f64 {
    let t = Instant::now();
    put(
        vmm,
        "PUT",
        "/boot-source",
        r#"{"kernel_image_path":"vmlinux","initrd_path":"initrd.cpio","boot_args":"console=ttyS0 reboot=k panic=1 pci=off"}"#,
    );
    put(
        vmm,
        "PUT",
        "/drives/overlay",
        r#"{"drive_id":"overlay","path_on_host":"disk.ext4","is_root_device":false,"is_read_only":false}"#,
    );
    put(
        vmm,
        "PUT",
        "/machine-config",
        &format!(r#"{{"vcpu_count":1,"mem_size_mib":{mem_mib},"track_dirty_pages":true}}"#),
    );
    put(
        vmm,
        "PUT",
        "/vsock",
        r#"{"guest_cid":3,"uds_path":"v.sock"}"#,
    );
    put(vmm, "PUT", "/actions", r#"{"action_type":"InstanceStart"}"#);
    ms(t.elapsed())
}

#[derive(Default)]
struct Rows {
    rows: Vec<(String, Vec<f64>, Vec<f64>)>,
}

impl Rows {
    fn add(&mut self, name: &str, real: Vec<f64>, standin: Vec<f64>) {
        self.rows.push((name.to_owned(), real, standin));
    }

    fn print(&self, runs: usize) {
        println!(
            "\nreal Firecracker v1.16.1 vs the stand-in, {runs} runs per row (ms)\n\
             {:<44} {:>9} {:>9}   {:>9} {:>9}",
            "step", "real p50", "real p95", "s-in p50", "s-in p95"
        );
        for (name, real, standin) in &self.rows {
            let mut r = real.clone();
            let mut s = standin.clone();
            r.sort_by(f64::total_cmp);
            s.sort_by(f64::total_cmp);
            println!(
                "{name:<44} {:>9.2} {:>9.2}   {:>9.2} {:>9.2}",
                pct(&r, 0.5),
                pct(&r, 0.95),
                pct(&s, 0.5),
                pct(&s, 0.95)
            );
        }
    }
}

/// Every figure for one VMM binary, in row order.
fn measure(bin: &Path, base: &Path, initrd: &[u8], runs: usize) -> Vec<Vec<f64>> {
    let mut socket = Vec::new();
    let mut configure = Vec::new();
    let mut pause = Vec::new();
    let mut snap128 = Vec::new();
    let mut snap512 = Vec::new();
    let mut load1 = Vec::new();
    let mut load10 = Vec::new();
    let mut load10_wall = Vec::new();
    for run in 0..runs {
        let run_dir = base.join(run.to_string());
        // Source VMs of 128 and 512 MiB; full snapshots of each.
        for (mem, out) in [(128, &mut snap128), (512, &mut snap512)] {
            let dir = run_dir.join(format!("src{mem}"));
            lay_files(&dir, initrd);
            let (vmm, t_sock) = start(bin, &dir);
            let t_boot = boot(&vmm, mem);
            let t_pause = put(&vmm, "PATCH", "/vm", r#"{"state":"Paused"}"#);
            out.push(put(
                &vmm,
                "PUT",
                "/snapshot/create",
                r#"{"snapshot_type":"Full","snapshot_path":"snap","mem_file_path":"mem"}"#,
            ));
            if mem == 128 {
                socket.push(t_sock);
                configure.push(t_boot);
                pause.push(t_pause);
            }
        }
        let load_body = |src: &Path| {
            format!(
                r#"{{"snapshot_path":"{0}/snap","mem_backend":{{"backend_type":"File","backend_path":"{0}/mem"}},"resume_vm":true,"vsock_override":{{"uds_path":"clone.sock"}},"clock_realtime":true}}"#,
                src.display()
            )
        };
        let src = run_dir.join("src128");
        // One clone: a fresh process, then load + resume.
        let dir = run_dir.join("clone");
        lay_files(&dir, initrd);
        let (vmm, _) = start(bin, &dir);
        load1.push(put(&vmm, "PUT", "/snapshot/load", &load_body(&src)));
        drop(vmm);
        // Ten at once: ten fresh processes, their loads sent together.
        let clones: Vec<(Vmm, PathBuf)> = (0..10)
            .map(|k| {
                let dir = run_dir.join(format!("clone{k}"));
                lay_files(&dir, initrd);
                (start(bin, &dir).0, dir)
            })
            .collect();
        let wall = Instant::now();
        let times: Vec<f64> = std::thread::scope(|s| {
            let handles: Vec<_> = clones
                .iter()
                .map(|(vmm, _)| {
                    let body = load_body(&src);
                    s.spawn(move || put(vmm, "PUT", "/snapshot/load", &body))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        load10_wall.push(ms(wall.elapsed()));
        load10.extend(times);
        drop(clones);
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    vec![
        socket,
        configure,
        pause,
        snap128,
        snap512,
        load1,
        load10,
        load10_wall,
    ]
}

fn main() {
    let Some(real) = realfc::require() else {
        return;
    };
    let runs = env_or("REALFC_RUNS", 10);
    let initrd = BusyboxGuest::new("exec sleep 100000\n").build().unwrap();
    let standin = PathBuf::from(env!("CARGO_BIN_EXE_firecracker-standin"));
    let tmp = tempfile::tempdir().unwrap();
    let r = measure(&real.firecracker, &tmp.path().join("real"), &initrd, runs);
    let s = measure(&standin, &tmp.path().join("standin"), &initrd, runs);
    let names = [
        "process start -> API socket",
        "configure -> InstanceStart answered",
        "pause (PATCH /vm Paused)",
        "full snapshot, 128 MiB",
        "full snapshot, 512 MiB",
        "load + resume, fresh process, 1 clone",
        "load + resume, 10 clones at once (each)",
        "load + resume, 10 clones at once (wall)",
    ];
    let mut rows = Rows::default();
    for ((name, real), standin) in names.iter().zip(r).zip(s) {
        rows.add(name, real, standin);
    }
    rows.print(runs);
}
