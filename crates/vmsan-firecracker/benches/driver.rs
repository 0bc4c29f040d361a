//! Host-side cost of the driver's steps, p50 and p95 (not a timed test: run with
//! `cargo bench -p vmsan-firecracker --bench driver`).
//!
//! - one API request on a fresh connection (what `FirecrackerClient` does) next to the same
//!   request on a reused keep-alive connection;
//! - the whole pre-boot configuration plus InstanceStart (`VmConfig::boot`, 12 requests);
//! - preparing and removing a jail with hard links next to copies;
//! - checking a process's pid + start time.
//!
//! The API server is an in-process hyper server on a Unix socket that answers 204 at once, so
//! the numbers are the client's and the kernel's share, not Firecracker's.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark binary reports on stdout

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use vmsan_firecracker::bootargs::BootArgs;
use vmsan_firecracker::layout::remove_jail;
use vmsan_firecracker::models::*;
use vmsan_firecracker::*;
use vmsan_proto::FsType;

const ROUNDS: usize = 2000;

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[index]
    };
    (at(0.50), at(0.95))
}

fn report(name: &str, samples: Vec<Duration>) {
    let n = samples.len();
    let (p50, p95) = percentiles(samples);
    println!(
        "{name:<52} n={n:<5} p50={:>9.1} µs  p95={:>9.1} µs",
        p50.as_secs_f64() * 1e6,
        p95.as_secs_f64() * 1e6
    );
}

async fn serve(listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                // Read the whole body as Firecracker does before answering.
                let _ = req.into_body().collect().await;
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::NO_CONTENT;
                Ok::<_, hyper::Error>(response)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn sample_config() -> VmConfig {
    let limiter = RateLimiter::bandwidth(12_500_000);
    VmConfig {
        logger: Some(Logger {
            log_path: Some("firecracker.log".into()),
            level: Some(LogLevel::Info),
            ..Logger::default()
        }),
        metrics: Some(Metrics {
            metrics_path: "metrics.json".into(),
        }),
        serial: Some(SerialDevice {
            serial_out_path: Some("serial.log".into()),
            rate_limiter: None,
        }),
        boot_source: BootSource {
            kernel_image_path: "vmlinux".into(),
            initrd_path: Some("initrd.cpio".into()),
            boot_args: Some(BootArgs::new(FsType::Squashfs).render()),
        },
        drives: vec![
            Drive::virtio_block("rootfs", "rootfs.sqfs", true),
            Drive::virtio_block("overlay", "overlay.ext4", false)
                .with_cache_type(CacheType::Writeback),
            Drive::virtio_block("config", "config.json", true),
        ],
        machine: MachineConfiguration::new(2, 256),
        cpu_config: None,
        network_interfaces: vec![NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "vmsan0".into(),
            guest_mac: Some("06:00:c6:12:00:02".into()),
            mtu: None,
            rx_rate_limiter: Some(limiter),
            tx_rate_limiter: Some(limiter),
        }],
        vsock: Some(Vsock {
            guest_cid: 3,
            uds_path: "v.sock".into(),
            vsock_id: None,
        }),
        entropy: Some(EntropyDevice::default()),
    }
}

async fn api_benches(socket: &Path) {
    let client = FirecrackerClient::new(socket);
    let body = serde_json::to_vec(&MachineConfiguration::new(2, 256)).unwrap();
    for _ in 0..100 {
        client.pause().await.unwrap();
    }

    let mut fresh = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        client
            .put_machine_config(&MachineConfiguration::new(2, 256))
            .await
            .unwrap();
        fresh.push(started.elapsed());
    }

    // The same request on one keep-alive connection.
    let stream = UnixStream::connect(socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    let mut reused = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        sender.ready().await.unwrap();
        let request = Request::put("/machine-config")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let _ = response.into_body().collect().await.unwrap();
        reused.push(started.elapsed());
    }
    drop(sender);
    driver.abort();

    println!("-- one API request (PUT /machine-config), side by side");
    report("fresh connection per request (FirecrackerClient)", fresh);
    report("reused keep-alive connection (raw hyper)", reused);

    let config = sample_config();
    let mut whole = Vec::with_capacity(ROUNDS / 4);
    let mut per_step: Vec<(String, Vec<Duration>)> = Vec::new();
    for _ in 0..ROUNDS / 4 {
        let started = Instant::now();
        let timings = config.boot(&client).await.unwrap();
        whole.push(started.elapsed());
        if per_step.is_empty() {
            per_step = timings
                .iter()
                .map(|t| (t.step.clone(), Vec::new()))
                .collect();
        }
        for (slot, timing) in per_step.iter_mut().zip(timings) {
            slot.1.push(timing.took);
        }
    }
    println!("-- VmConfig::boot: pre-boot configuration + InstanceStart");
    report("whole sequence (12 requests)", whole);
    for (step, samples) in per_step {
        report(&format!("  {step}"), samples);
    }
}

fn jail_benches() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let kernel = src.join("vmlinux");
    std::fs::write(&kernel, vec![1u8; 32 << 20]).unwrap();
    let initrd = src.join("initrd.cpio");
    std::fs::write(&initrd, vec![2u8; 2 << 20]).unwrap();
    let overlay = src.join("overlay.ext4");
    let file = std::fs::File::create(&overlay).unwrap();
    file.set_len(1 << 30).unwrap();
    let config = src.join("config.json");
    std::fs::write(&config, vec![0u8; 4096]).unwrap();
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let layout = JailLayout::new(
        &dir.path().join("jail"),
        Path::new("/usr/bin/firecracker"),
        "vm-bench",
    )
    .unwrap();

    let linked = [
        JailFile::shared_read_only(&kernel, "vmlinux"),
        JailFile::shared_read_only(&initrd, "initrd.cpio"),
        JailFile::per_vm(&overlay, "overlay.ext4", true),
        JailFile::per_vm(&config, "config.json", false),
    ];
    let copied = [
        JailFile::copy(&kernel, "vmlinux", 0o400),
        JailFile::copy(&initrd, "initrd.cpio", 0o400),
        JailFile::per_vm(&overlay, "overlay.ext4", true),
        JailFile::copy(&config, "config.json", 0o400),
    ];
    println!(
        "-- jail preparation (kernel 32 MiB, initrd 2 MiB, overlay 1 GiB sparse, config 4 KiB)"
    );
    for (name, files, rounds) in [
        ("prepare_jail, hard links", &linked, 500),
        ("prepare_jail, kernel+initrd copied", &copied, 50),
    ] {
        let mut prepare = Vec::with_capacity(rounds);
        let mut remove = Vec::with_capacity(rounds);
        let mut how = Vec::new();
        for _ in 0..rounds {
            let started = Instant::now();
            how = prepare_jail(&layout, uid, gid, files).unwrap();
            prepare.push(started.elapsed());
            let started = Instant::now();
            remove_jail(&layout).unwrap();
            remove.push(started.elapsed());
        }
        report(&format!("{name} {how:?}"), prepare);
        report("remove_jail", remove);
    }
}

fn process_benches() {
    let me = i32::try_from(std::process::id()).unwrap();
    let identity = ProcessIdentity::of(me).unwrap();
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        assert_eq!(identity.liveness().unwrap(), Liveness::Alive);
        samples.push(started.elapsed());
    }
    println!("-- process identity");
    report("ProcessIdentity::liveness (/proc/<pid>/stat)", samples);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = tokio::spawn(serve(listener));
        api_benches(&socket).await;
        server.abort();
    });
    jail_benches();
    process_benches();
}
