//! The client against a tiny HTTP/1.1 server on a real Unix socket: method, path, headers and
//! body of every request, error mapping, per-request timeout and waiting for the socket.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use vmsan_firecracker::bootargs::BootArgs;
use vmsan_firecracker::models::*;
use vmsan_firecracker::*;
use vmsan_proto::FsType;

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Debug, Clone)]
enum Reply {
    Status(u16, String),
    /// Read the request, never answer.
    Hang,
    /// Read the request, close the connection without an answer.
    Close,
}

/// Serves `reply_for` on a Unix socket in a temporary directory and reports every request.
struct Server {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    seen: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    fn start(reply_for: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        let reply_for = std::sync::Arc::new(reply_for);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                let reply_for = reply_for.clone();
                tokio::spawn(async move {
                    serve_one(stream, tx, reply_for.as_ref()).await;
                });
            }
        });
        Self {
            _dir: dir,
            socket,
            seen,
            task,
        }
    }

    async fn next(&mut self) -> Seen {
        self.seen.recv().await.unwrap()
    }

    /// A request already reported, if any (every request is reported before it is answered,
    /// so after the client has its answer this does not race).
    fn next_if_any(&mut self) -> Option<Seen> {
        self.seen.try_recv().ok()
    }

    fn client(&self) -> FirecrackerClient {
        FirecrackerClient::new(&self.socket).with_timeout(Duration::from_secs(5))
    }
}

async fn serve_one(
    mut stream: UnixStream,
    tx: mpsc::UnboundedSender<Seen>,
    reply_for: &(dyn Fn(&Seen) -> Reply + Send + Sync),
) {
    let mut buf = Vec::new();
    let header_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
    };
    let head = String::from_utf8(buf[..header_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap().split(' ');
    let method = request_line.next().unwrap().to_owned();
    let path = request_line.next().unwrap().to_owned();
    assert_eq!(request_line.next(), Some("HTTP/1.1"));
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buf[header_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "client closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    let seen = Seen {
        method,
        path,
        headers,
        body,
    };
    let reply = reply_for(&seen);
    tx.send(seen).unwrap();
    match reply {
        Reply::Status(status, body) => {
            let reason = match status {
                200 => "OK",
                204 => "No Content",
                400 => "Bad Request",
                _ => "Internal Server Error",
            };
            let mut response = format!("HTTP/1.1 {status} {reason}\r\nServer: Firecracker API\r\n");
            if status != 204 {
                response.push_str(&format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                ));
            }
            response.push_str("\r\n");
            response.push_str(&body);
            // The client may hang up early (oversized answers): not the server's failure.
            let _ = stream.write_all(response.as_bytes()).await;
            stream.shutdown().await.ok();
        }
        Reply::Close => drop(stream),
        Reply::Hang => {
            // Keep the connection open until the client gives up.
            let mut rest = [0u8; 1];
            let _ = stream.read(&mut rest).await;
        }
    }
}

fn no_content(_: &Seen) -> Reply {
    Reply::Status(204, String::new())
}

#[tokio::test]
async fn cold_boot_sequence_sends_the_verified_requests() {
    let mut server = Server::start(no_content);
    let client = server.client();
    let boot_args = BootArgs::new(FsType::Squashfs).render();

    client
        .put_logger(&Logger {
            log_path: Some("firecracker.log".into()),
            level: Some(LogLevel::Info),
            ..Logger::default()
        })
        .await
        .unwrap();
    client
        .put_metrics(&Metrics {
            metrics_path: "metrics.json".into(),
        })
        .await
        .unwrap();
    client
        .put_boot_source(&BootSource {
            kernel_image_path: "vmlinux".into(),
            initrd_path: Some("initrd.cpio".into()),
            boot_args: Some(boot_args.clone()),
        })
        .await
        .unwrap();
    client
        .put_drive(&Drive::virtio_block("rootfs", "rootfs.sqfs", true))
        .await
        .unwrap();
    client
        .put_drive(
            &Drive::virtio_block("overlay", "overlay.ext4", false)
                .with_cache_type(CacheType::Writeback),
        )
        .await
        .unwrap();
    let mut machine = MachineConfiguration::new(2, 256);
    machine.smt = Some(false);
    machine.track_dirty_pages = Some(true);
    client.put_machine_config(&machine).await.unwrap();
    client
        .put_network_interface(&NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "vmsan0".into(),
            guest_mac: Some("06:00:c6:12:00:02".into()),
            mtu: None,
            rx_rate_limiter: Some(RateLimiter::bandwidth(12_500_000)),
            tx_rate_limiter: Some(RateLimiter::bandwidth(12_500_000)),
        })
        .await
        .unwrap();
    client
        .put_vsock(&Vsock {
            guest_cid: 3,
            uds_path: "v.sock".into(),
            vsock_id: None,
        })
        .await
        .unwrap();
    client.put_entropy(&EntropyDevice::default()).await.unwrap();
    client
        .put_serial(&SerialDevice {
            serial_out_path: Some("serial.log".into()),
            rate_limiter: None,
        })
        .await
        .unwrap();
    client.instance_start().await.unwrap();
    client.pause().await.unwrap();
    client
        .create_snapshot(&SnapshotCreateParams {
            snapshot_type: Some(SnapshotType::Full),
            snapshot_path: "snap".into(),
            mem_file_path: "mem".into(),
        })
        .await
        .unwrap();
    client.resume().await.unwrap();
    client.send_ctrl_alt_del().await.unwrap();
    client.flush_metrics().await.unwrap();
    client
        .patch_network_interface(&PartialNetworkInterface {
            iface_id: "eth0".into(),
            rx_rate_limiter: None,
            tx_rate_limiter: Some(RateLimiter::bandwidth(1000)),
        })
        .await
        .unwrap();
    client
        .patch_drive(&PartialDrive {
            drive_id: "overlay".into(),
            path_on_host: Some("other.ext4".into()),
            rate_limiter: None,
        })
        .await
        .unwrap();

    let expected: Vec<(&str, &str, Value)> = vec![
        (
            "PUT",
            "/logger",
            json!({"log_path": "firecracker.log", "level": "Info"}),
        ),
        ("PUT", "/metrics", json!({"metrics_path": "metrics.json"})),
        (
            "PUT",
            "/boot-source",
            json!({"kernel_image_path": "vmlinux", "initrd_path": "initrd.cpio", "boot_args": boot_args}),
        ),
        (
            "PUT",
            "/drives/rootfs",
            json!({"drive_id": "rootfs", "path_on_host": "rootfs.sqfs", "is_root_device": false, "is_read_only": true}),
        ),
        (
            "PUT",
            "/drives/overlay",
            json!({"drive_id": "overlay", "path_on_host": "overlay.ext4", "is_root_device": false, "is_read_only": false, "cache_type": "Writeback"}),
        ),
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 2, "mem_size_mib": 256, "smt": false, "track_dirty_pages": true}),
        ),
        (
            "PUT",
            "/network-interfaces/eth0",
            json!({"iface_id": "eth0", "host_dev_name": "vmsan0", "guest_mac": "06:00:c6:12:00:02",
                   "rx_rate_limiter": {"bandwidth": {"size": 12_500_000, "refill_time": 1000}},
                   "tx_rate_limiter": {"bandwidth": {"size": 12_500_000, "refill_time": 1000}}}),
        ),
        (
            "PUT",
            "/vsock",
            json!({"guest_cid": 3, "uds_path": "v.sock"}),
        ),
        ("PUT", "/entropy", json!({})),
        ("PUT", "/serial", json!({"serial_out_path": "serial.log"})),
        ("PUT", "/actions", json!({"action_type": "InstanceStart"})),
        ("PATCH", "/vm", json!({"state": "Paused"})),
        (
            "PUT",
            "/snapshot/create",
            json!({"snapshot_type": "Full", "snapshot_path": "snap", "mem_file_path": "mem"}),
        ),
        ("PATCH", "/vm", json!({"state": "Resumed"})),
        ("PUT", "/actions", json!({"action_type": "SendCtrlAltDel"})),
        ("PUT", "/actions", json!({"action_type": "FlushMetrics"})),
        (
            "PATCH",
            "/network-interfaces/eth0",
            json!({"iface_id": "eth0", "tx_rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 1000}}}),
        ),
        (
            "PATCH",
            "/drives/overlay",
            json!({"drive_id": "overlay", "path_on_host": "other.ext4"}),
        ),
    ];
    for (method, path, body) in expected {
        let seen = server.next().await;
        assert_eq!((seen.method.as_str(), seen.path.as_str()), (method, path));
        assert_eq!(seen.json(), body, "{method} {path}");
        assert_eq!(seen.header("content-type"), Some("application/json"));
        assert_eq!(
            seen.header("content-length"),
            Some(seen.body.len().to_string().as_str())
        );
        assert_eq!(seen.header("host"), Some("localhost"));
    }
}

#[tokio::test]
async fn get_endpoints_decode_answers() {
    let mut server = Server::start(|seen| {
        match seen.path.as_str() {
        "/" => Reply::Status(
            200,
            json!({"app_name": "Firecracker", "id": "vm-1", "state": "Running", "vmm_version": "1.16.1"})
                .to_string(),
        ),
        "/version" => Reply::Status(200, json!({"firecracker_version": "1.16.1"}).to_string()),
        "/machine-config" => Reply::Status(
            200,
            json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": false, "track_dirty_pages": false, "huge_pages": "None"}).to_string(),
        ),
        "/vm/config" => Reply::Status(
            200,
            json!({"boot-source": {"kernel_image_path": "vmlinux", "initrd_path": null, "boot_args": null},
                   "drives": [], "vsock": null, "entropy": null}).to_string(),
        ),
        _ => Reply::Status(400, json!({"fault_message": "unexpected"}).to_string()),
    }
    });
    let client = server.client();
    let info = client.describe_instance().await.unwrap();
    assert_eq!(info.id, "vm-1");
    assert_eq!(info.state, InstanceState::Running);
    assert_eq!(
        client.version().await.unwrap().firecracker_version,
        "1.16.1"
    );
    assert_eq!(client.machine_config().await.unwrap().mem_size_mib, 128);
    let config = client.vm_config().await.unwrap();
    assert_eq!(config.boot_source.unwrap().kernel_image_path, "vmlinux");
    for path in ["/", "/version", "/machine-config", "/vm/config"] {
        let seen = server.next().await;
        assert_eq!((seen.method.as_str(), seen.path.as_str()), ("GET", path));
        assert!(seen.body.is_empty());
        assert_eq!(seen.header("content-type"), None);
        // Firecracker refuses a GET with a body: not even an empty one is announced.
        assert_eq!(seen.header("content-length"), None);
        assert_eq!(seen.header("transfer-encoding"), None);
    }
}

#[tokio::test]
async fn api_errors_carry_method_path_status_and_fault_message() {
    let mut server = Server::start(|seen| {
        match seen.path.as_str() {
        "/boot-source" => Reply::Status(
            400,
            json!({"fault_message": "Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)"})
                .to_string(),
        ),
        "/network-interfaces/eth0" => Reply::Status(
            400,
            json!({"fault_message": "Could not create the network device: Open tap device failed: Error while creating ifreq structure: Permission denied (os error 13). Invalid TUN/TAP Backend provided by vmsan0. Check our documentation on setting up the network devices: /dev/net/tun"})
                .to_string(),
        ),
        "/actions" => Reply::Status(500, "not json at all".into()),
        _ => Reply::Status(204, String::new()),
    }
    });
    let client = server.client();

    let err = client
        .put_boot_source(&BootSource {
            kernel_image_path: "missing".into(),
            initrd_path: None,
            boot_args: None,
        })
        .await
        .unwrap_err();
    let api = err.api().unwrap();
    assert_eq!(api.method, "PUT");
    assert_eq!(api.path, "/boot-source");
    assert_eq!(api.status, 400);
    assert!(api.fault_message.starts_with("Boot source error"));
    assert!(!api.is_tun_permission_denied());
    assert_eq!(
        err.to_string(),
        "PUT /boot-source failed (400): Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)"
    );

    let err = client
        .put_network_interface(&NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "vmsan0".into(),
            guest_mac: None,
            mtu: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        })
        .await
        .unwrap_err();
    assert!(err.api().unwrap().is_tun_permission_denied());

    let err = client.instance_start().await.unwrap_err();
    let api = err.api().unwrap();
    assert_eq!(
        (api.status, api.fault_message.as_str()),
        (500, "not json at all")
    );

    for _ in 0..3 {
        server.next().await;
    }
    assert!(is_tun_permission_denied(
        "Open tap device failed: /dev/net/tun: Permission denied (os error 13)"
    ));
    assert!(!is_tun_permission_denied("Permission denied"));
}

#[tokio::test]
async fn invalid_ids_are_refused_before_any_request() {
    let mut server = Server::start(no_content);
    let client = server.client();
    for id in ["", "../vm", "a/b", "a b", "x?y=1", &"d".repeat(65)] {
        let err = client
            .put_drive(&Drive::virtio_block(id, "x", true))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::InvalidArgument { .. }),
            "{id:?}: {err}"
        );
    }
    let mut params = SnapshotLoadParams::from_file("snap", "mem");
    params.mem_backend = None;
    assert!(matches!(
        client.load_snapshot(&params).await.unwrap_err(),
        ClientError::InvalidArgument { .. }
    ));
    // Nothing reached the server; a valid request does.
    client
        .load_snapshot(&SnapshotLoadParams::from_file("snap", "mem"))
        .await
        .unwrap();
    let seen = server.next().await;
    assert_eq!(seen.path, "/snapshot/load");
    assert!(server.seen.try_recv().is_err());
}

#[tokio::test]
async fn a_request_without_answer_times_out() {
    let mut server = Server::start(|_| Reply::Hang);
    let client = server.client().with_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let err = client.pause().await.unwrap_err();
    let took = started.elapsed();
    match &err {
        ClientError::Timeout {
            method,
            path,
            timeout,
        } => {
            assert_eq!((method.as_str(), path.as_str()), ("PATCH", "/vm"));
            assert_eq!(*timeout, Duration::from_millis(200));
        }
        other => panic!("expected a timeout, got {other}"),
    }
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The request did arrive: the timeout is on the answer.
    assert_eq!(server.next().await.path, "/vm");
}

#[tokio::test]
async fn connect_errors_name_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let err = FirecrackerClient::new(&socket)
        .instance_start()
        .await
        .unwrap_err();
    match err {
        ClientError::Connect { path, source } => {
            assert_eq!(path, socket);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected a connect error, got {other}"),
    }
}

#[tokio::test]
async fn wait_for_socket_returns_once_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("late.sock");
    // The listener is bound only after the waiter has seen a failed connect (its liveness
    // callback runs after each failure), so the waiter must really notice the change.
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<()>();
    let bind_path = socket.clone();
    let binder = tokio::spawn(async move {
        failed_rx.await.unwrap();
        UnixListener::bind(&bind_path).unwrap()
    });
    let mut failed_tx = Some(failed_tx);
    let mut failures = 0;
    wait_for_socket_while(&socket, Instant::now() + Duration::from_secs(10), || {
        failures += 1;
        if let Some(tx) = failed_tx.take() {
            tx.send(()).unwrap();
        }
        true
    })
    .await
    .unwrap();
    assert!(failures >= 1);
    let _listener = binder.await.unwrap();
}

#[tokio::test]
async fn wait_for_socket_gives_up_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("never.sock");
    let started = Instant::now();
    let err = wait_for_socket(&socket, Instant::now() + Duration::from_millis(150))
        .await
        .unwrap_err();
    assert!(matches!(err, WaitError::Timeout { .. }), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn wait_for_socket_stops_when_the_process_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("never.sock");
    let mut calls = 0;
    let err = wait_for_socket_while(&socket, Instant::now() + Duration::from_secs(30), || {
        calls += 1;
        calls < 3
    })
    .await
    .unwrap_err();
    assert!(matches!(err, WaitError::ProcessExited { .. }), "{err}");
    assert_eq!(calls, 3);
}

#[tokio::test]
async fn wait_for_socket_refuses_a_path_that_cannot_become_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file is not a socket: connect fails with ECONNREFUSED on Linux, which is
    // transient (a stale socket file looks the same); a too-long path is fatal at once.
    let long: PathBuf = Path::new("/").join("x".repeat(200));
    let err = wait_for_socket(&long, Instant::now() + Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(err, WaitError::Fatal { .. }), "{err}");
    drop(dir);
}

fn sample_config() -> VmConfig {
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
            boot_args: Some(BootArgs::new(FsType::Ext4).render()),
        },
        drives: vec![
            Drive::virtio_block("rootfs", "rootfs.ext4", true),
            Drive::virtio_block("overlay", "overlay.ext4", false),
            Drive::virtio_block("config", "config.json", true),
        ],
        machine: MachineConfiguration::new(1, 128),
        cpu_config: None,
        network_interfaces: vec![NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "vmsan0".into(),
            guest_mac: None,
            mtu: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }],
        vsock: Some(Vsock {
            guest_cid: 3,
            uds_path: "v.sock".into(),
            vsock_id: None,
        }),
        entropy: Some(EntropyDevice::default()),
    }
}

#[tokio::test]
async fn vm_config_boots_in_the_verified_order() {
    let mut server = Server::start(no_content);
    let timings = sample_config().boot(&server.client()).await.unwrap();
    let order = [
        ("PUT", "/logger"),
        ("PUT", "/metrics"),
        ("PUT", "/serial"),
        ("PUT", "/boot-source"),
        ("PUT", "/drives/rootfs"),
        ("PUT", "/drives/overlay"),
        ("PUT", "/drives/config"),
        ("PUT", "/machine-config"),
        ("PUT", "/network-interfaces/eth0"),
        ("PUT", "/vsock"),
        ("PUT", "/entropy"),
        ("PUT", "/actions"),
    ];
    assert_eq!(timings.len(), order.len());
    for (i, (method, path)) in order.into_iter().enumerate() {
        let seen = server.next().await;
        assert_eq!((seen.method.as_str(), seen.path.as_str()), (method, path));
        assert!(timings[i].step.starts_with(&format!("{method} {path}")));
    }
    assert!(
        server.next_if_any().is_none(),
        "nothing after InstanceStart"
    );
}

#[tokio::test]
async fn vm_config_stops_at_the_first_error() {
    let mut server = Server::start(|seen| {
        if seen.path == "/drives/overlay" {
            Reply::Status(
                400,
                json!({"fault_message": "Unable to open the overlay"}).to_string(),
            )
        } else {
            Reply::Status(204, String::new())
        }
    });
    let err = sample_config().boot(&server.client()).await.unwrap_err();
    let api = err.api().unwrap();
    assert_eq!(api.path, "/drives/overlay");
    let mut paths = Vec::new();
    while let Some(seen) = server.next_if_any() {
        paths.push(seen.path);
    }
    assert_eq!(
        paths,
        [
            "/logger",
            "/metrics",
            "/serial",
            "/boot-source",
            "/drives/rootfs",
            "/drives/overlay"
        ]
    );
}

#[tokio::test]
async fn a_connection_closed_without_answer_is_an_http_error() {
    let mut server = Server::start(|_| Reply::Close);
    let err = server.client().instance_start().await.unwrap_err();
    match &err {
        ClientError::Http { method, path, .. } => {
            assert_eq!((method.as_str(), path.as_str()), ("PUT", "/actions"));
        }
        other => panic!("expected an HTTP error, got {other}"),
    }
    assert_eq!(server.next().await.path, "/actions");
}

#[tokio::test]
async fn oversized_answers_are_refused() {
    let server = Server::start(|_| Reply::Status(200, "x".repeat(2 << 20)));
    let err = server.client().version().await.unwrap_err();
    assert!(matches!(err, ClientError::BodyTooLarge { .. }), "{err}");
}

#[tokio::test]
async fn undecodable_success_bodies_are_reported() {
    let server = Server::start(|_| Reply::Status(200, json!({"unexpected": true}).to_string()));
    let err = server.client().version().await.unwrap_err();
    match &err {
        ClientError::Decode { method, path, .. } => {
            assert_eq!((method.as_str(), path.as_str()), ("GET", "/version"));
        }
        other => panic!("expected a decode error, got {other}"),
    }
    assert!(
        err.to_string().starts_with("GET /version: cannot decode"),
        "{err}"
    );
}
