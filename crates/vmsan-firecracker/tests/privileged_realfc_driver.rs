//! The driver against real Firecracker v1.16.1 and its jailer (issue 13, driver level), with the
//! halting guest as kernel and the VM laid out as vmsan lays it out: jail uid/gid, v1 cgroups
//! the VMM is born in (`<controller>/firecracker/<id>`), its own network namespace holding a
//! TAP owned by the jail uid, a PID namespace, the jailer not daemonized and Firecracker
//! adopted as subreaper, the log and metrics hard-linked into the jail.
//!
//! One source VM: every cold-boot request, `GET /vm/config`, pause/resume, full and diff
//! snapshots, `FlushMetrics`, `SendCtrlAltDel` ignored by the guest and then SIGKILL. Two
//! clones loaded at once from its full snapshot, each in a fresh jail with its own namespace,
//! TAP (a different name: `network_overrides` must be honoured) and vsock socket
//! (`vsock_override`), `clock_realtime`. Afterwards no process, cgroup, mount, namespace, TAP
//! or jail is left.
//!
//! Needs root, `/dev/kvm` and the real binaries (see `vmsan_testkit::realfc`); skips with a
//! reason elsewhere and fails under `CI=true`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::time::Instant;
use vmsan_firecracker::layout::{INITRD_IN_JAIL, KERNEL_IN_JAIL, remove_jail};
use vmsan_firecracker::models::{
    BootSource, CacheType, Drive, EntropyDevice, InstanceState, LogLevel, Logger,
    MachineConfiguration, Metrics, NetworkInterface, NetworkOverride, RateLimiter,
    SnapshotCreateParams, SnapshotLoadParams, SnapshotType, Vsock, VsockOverride,
};
use vmsan_firecracker::*;
use vmsan_proto::FsType;
use vmsan_testkit::realfc;

const MEM_MIB: u64 = 128;
/// The jail uids of this test (vmsan uses 400000 + slot; these cannot meet a real VM's).
const UID_BASE: u32 = 61_300;
const OUT_DIR: &str = "snapshot-out";

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?}");
}

/// One jailed Firecracker with its namespace, TAP and cgroups; everything goes on drop.
struct JailedVm {
    layout: JailLayout,
    netns: String,
    tap: String,
    cgroups: Vec<PathBuf>,
    fc: Option<ProcessIdentity>,
    /// Where the VM's own files (log, metrics, serial, disks) live outside the jail.
    dir: PathBuf,
    uid: u32,
}

impl JailedVm {
    /// Lay out and start one VM: namespace + TAP `tap`, cgroups, jail with `files`, jailer.
    async fn start(
        bins: &realfc::RealBinaries,
        base: &Path,
        name: &str,
        uid: u32,
        tap: &str,
        files: &[(PathBuf, &str, bool)],
    ) -> Self {
        let id = format!("realfc-{name}-{}", std::process::id());
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mounts = CgroupMounts::detect().unwrap();
        let version = mounts.jailer_version().unwrap();
        let mut spec =
            JailerSpec::new(&id, &bins.firecracker, base.join("jail"), uid, uid, version);
        spec.daemonize = false;
        let netns = id.clone();
        spec.netns = Some(PathBuf::from(format!("/var/run/netns/{netns}")));
        let layout = spec.layout().unwrap();
        let mut vm = Self {
            layout: layout.clone(),
            netns: netns.clone(),
            tap: tap.to_owned(),
            cgroups: Vec::new(),
            fc: None,
            dir: dir.clone(),
            uid,
        };
        // The VM's network namespace and its TAP, owned by the jail uid (vmsan-net's layout).
        ip(&["netns", "add", &netns]);
        let owner = uid.to_string();
        ip(&[
            "-n", &netns, "tuntap", "add", "dev", tap, "mode", "tap", "user", &owner, "group",
            &owner,
        ]);
        ip(&["-n", &netns, "link", "set", tap, "up"]);

        // Output files created by us and hard-linked in, as vmsan does.
        let mut jail_files = Vec::new();
        for out in [layout::LOG_IN_JAIL, layout::METRICS_IN_JAIL] {
            let p = dir.join(out);
            std::fs::write(&p, b"").unwrap();
            jail_files.push(JailFile::output(p, out));
        }
        for (src, name, per_vm) in files {
            jail_files.push(if *per_vm {
                JailFile::per_vm(src, *name, true)
            } else {
                JailFile::shared_read_only(src, *name)
            });
        }
        layout.check_socket_paths().unwrap();
        prepare_jail(&layout, uid, uid, &jail_files).unwrap();
        for sub in ["run", OUT_DIR] {
            let d = layout.root().join(sub);
            std::fs::create_dir_all(&d).unwrap();
            std::os::unix::fs::chown(&d, Some(uid), Some(uid)).unwrap();
        }

        // cgroups made by us, Firecracker born in them (vmsan's cgroup v1 path).
        let limits = CgroupLimits {
            cpu: Some(CpuLimit::cpus(1)),
            memory_bytes: Some((MEM_MIB + 64) << 20),
        };
        vm.cgroups = cgroup::create_v1_cgroups(
            &mounts,
            layout.exec_name(),
            &id,
            &limits.render(version).unwrap(),
        )
        .unwrap();
        let serial = std::fs::File::create(dir.join("serial.log")).unwrap();
        let args = spec.args().unwrap();
        let jailer = bins.jailer.clone();
        let mut child = cgroup::spawn_born_in(&vm.cgroups, move || {
            Command::new(&jailer)
                .args(&args)
                .stdin(std::process::Stdio::null())
                .stdout(serial)
                .spawn()
        })
        .unwrap();
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "jailer: {status:?}");
        let pid = wait_for_pid_file(&layout, Instant::now() + Duration::from_secs(10), || true)
            .await
            .unwrap();
        let fc = ProcessIdentity::of(pid).unwrap();
        vm.fc = Some(fc);
        wait_for_socket_while(
            &layout.api_socket(),
            Instant::now() + Duration::from_secs(10),
            || fc.liveness().ok() == Some(Liveness::Alive),
        )
        .await
        .unwrap();
        assert!(fc.exe_is(&layout.exec_copy()).unwrap());
        let creds = fc.credentials().unwrap().unwrap();
        assert_eq!((creds.uid, creds.gid), (uid, uid), "runs as the jail uid");
        vm
    }

    fn client(&self) -> FirecrackerClient {
        FirecrackerClient::new(self.layout.api_socket())
    }

    fn pid(&self) -> i32 {
        self.fc.unwrap().pid
    }

    /// SIGKILL (PID 1 of its namespace ignores SIGTERM) and reap it as its subreaper.
    fn kill(&mut self) {
        if let Some(fc) = self.fc.take() {
            let _ = kill(Pid::from_raw(fc.pid), Signal::SIGKILL);
            let waited = waitpid(Pid::from_raw(fc.pid), None).unwrap();
            assert_eq!(
                waited,
                WaitStatus::Signaled(Pid::from_raw(fc.pid), Signal::SIGKILL, false)
            );
            assert_eq!(fc.liveness().unwrap(), Liveness::Exited);
        }
    }

    /// Everything this VM set up, removed; returns what is still there.
    fn teardown(&mut self) -> Vec<String> {
        if let Some(fc) = self.fc.take()
            && fc.liveness().ok() == Some(Liveness::Alive)
        {
            let _ = kill(Pid::from_raw(fc.pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(fc.pid), None);
        }
        // The cgroup empties once the killed process has fully exited: the kernel gives no
        // event for that, so retry briefly on EBUSY.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for dir in &self.cgroups {
            while std::fs::remove_dir(dir).is_err()
                && dir.exists()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = remove_jail(&self.layout);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let mut left = Vec::new();
        for dir in &self.cgroups {
            if dir.exists() {
                left.push(format!("cgroup {}", dir.display()));
            }
        }
        if self.layout.instance_dir().exists() {
            left.push(format!("jail {}", self.layout.instance_dir().display()));
        }
        if Path::new(&format!("/var/run/netns/{}", self.netns)).exists() {
            left.push(format!("netns {}", self.netns));
        }
        if Path::new("/sys/class/net").join(&self.tap).exists() {
            left.push(format!("TAP {} in the host namespace", self.tap));
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        if let Some(l) = mountinfo
            .lines()
            .find(|l| l.contains(self.layout.id()) || l.contains(&self.netns))
        {
            left.push(format!("mount {l}"));
        }
        left
    }
}

impl Drop for JailedVm {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

/// Every field that was sent comes back with the same value (Firecracker fills in defaults
/// for the ones left out).
fn sent_comes_back(sent: &Value, got: &Value, at: &str, problems: &mut Vec<String>) {
    match (sent, got) {
        (Value::Null, _) => {}
        (Value::Object(s), Value::Object(g)) => {
            for (k, v) in s {
                let null = Value::Null;
                sent_comes_back(v, g.get(k).unwrap_or(&null), &format!("{at}.{k}"), problems);
            }
        }
        (Value::Array(s), Value::Array(g)) if s.len() == g.len() => {
            for (i, (s, g)) in s.iter().zip(g).enumerate() {
                sent_comes_back(s, g, &format!("{at}[{i}]"), problems);
            }
        }
        _ if sent == got => {}
        _ => problems.push(format!("{at}: sent {sent}, got {got}")),
    }
}

fn source_config(tap: &str) -> VmConfig {
    let limiter = RateLimiter::bandwidth(12_500_000);
    VmConfig {
        logger: Some(Logger {
            log_path: Some(layout::LOG_IN_JAIL.into()),
            level: Some(LogLevel::Info),
            show_level: None,
            show_log_origin: None,
            module: None,
        }),
        metrics: Some(Metrics {
            metrics_path: layout::METRICS_IN_JAIL.into(),
        }),
        serial: None,
        boot_source: BootSource {
            kernel_image_path: KERNEL_IN_JAIL.into(),
            initrd_path: Some(INITRD_IN_JAIL.into()),
            boot_args: Some(BootArgs::new(FsType::Ext4).render()),
        },
        drives: vec![
            Drive::virtio_block("rootfs", "rootfs.img", true),
            Drive::virtio_block("overlay", "disk.ext4", false)
                .with_cache_type(CacheType::Writeback),
            Drive::virtio_block("config", "config.drive", true),
        ],
        machine: MachineConfiguration {
            smt: Some(false),
            track_dirty_pages: Some(true),
            ..MachineConfiguration::new(1, MEM_MIB)
        },
        cpu_config: None,
        network_interfaces: vec![NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: tap.into(),
            guest_mac: Some("06:00:c6:12:00:02".into()),
            mtu: None,
            rx_rate_limiter: Some(limiter),
            tx_rate_limiter: Some(limiter),
        }],
        vsock: Some(Vsock {
            guest_cid: 3,
            uds_path: layout::VSOCK_IN_JAIL.into(),
            vsock_id: None,
        }),
        entropy: Some(EntropyDevice::default()),
    }
}

/// The pid's exit within `within`, as its subreaper (polled: `waitpid` has no timeout).
fn exits_within(pid: i32, within: Duration) -> bool {
    use nix::sys::wait::WaitPidFlag;
    let end = std::time::Instant::now() + within;
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            _ => return true,
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_realfc_driver_boot_snapshot_clone_and_teardown() {
    let Some(bins) = realfc::require() else {
        return;
    };
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    // The jail root must share a filesystem with the VM's files (hard links): one temp dir.
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let shared = base.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let kernel = shared.join("vmlinux");
    realfc::write_halting_guest(&kernel).unwrap();
    let initrd = shared.join("initrd.cpio");
    std::fs::write(&initrd, vec![0u8; 4096]).unwrap();
    let rootfs = shared.join("rootfs.img");
    std::fs::write(&rootfs, vec![0u8; 1 << 20]).unwrap();
    for f in [&kernel, &initrd, &rootfs] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let own_disks = |name: &str| -> Vec<(PathBuf, &'static str, bool)> {
        let d = base.join(format!("{name}-disks"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("disk.ext4"), vec![0u8; 1 << 20]).unwrap();
        std::fs::write(d.join("config.drive"), vec![0u8; 4096]).unwrap();
        vec![
            (rootfs.clone(), "rootfs.img", false),
            (d.join("disk.ext4"), "disk.ext4", true),
            (d.join("config.drive"), "config.drive", true),
        ]
    };

    // --- The source VM: cold boot.
    let mut files = own_disks("src");
    files.push((kernel.clone(), KERNEL_IN_JAIL, false));
    files.push((initrd.clone(), INITRD_IN_JAIL, false));
    let mut src = JailedVm::start(&bins, base, "src", UID_BASE, "tap0", &files).await;
    let client = src.client();
    let config = source_config(&src.tap);
    let timings = config.boot(&client).await.unwrap();
    assert_eq!(
        timings.len(),
        11,
        "every cold-boot request accepted: {timings:?}"
    );
    let info = client.describe_instance().await.unwrap();
    assert_eq!(info.state, InstanceState::Running);
    assert_eq!(info.vmm_version, "1.16.1");

    // What was sent comes back (Firecracker v1.16.1 never echoes logger and metrics).
    let mut got = serde_json::to_value(client.vm_config().await.unwrap()).unwrap();
    // A running Firecracker lists its drives in no fixed order (a hash map): compare by id.
    if let Some(drives) = got["drives"].as_array_mut() {
        let rank = |d: &Value| {
            config
                .drives
                .iter()
                .position(|s| d["drive_id"] == s.drive_id)
        };
        drives.sort_by_key(rank);
    }
    let sent = serde_json::json!({
        "boot-source": config.boot_source,
        "drives": config.drives,
        "machine-config": config.machine,
        "network-interfaces": config.network_interfaces,
        "vsock": config.vsock,
        "entropy": config.entropy,
    });
    let mut problems = Vec::new();
    sent_comes_back(&sent, &got, "vm/config", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}\n{got:#}");
    assert_eq!(
        got["drives"][0]["cache_type"], "Unsafe",
        "defaults filled: {got}"
    );

    // Pause, full snapshot, resume; pause, diff snapshot (dirty-page tracking on), resume.
    client.pause().await.unwrap();
    assert_eq!(
        client.describe_instance().await.unwrap().state,
        InstanceState::Paused
    );
    let full = SnapshotCreateParams {
        snapshot_type: Some(SnapshotType::Full),
        snapshot_path: format!("{OUT_DIR}/full.vmstate"),
        mem_file_path: format!("{OUT_DIR}/full.mem"),
    };
    client.create_snapshot(&full).await.unwrap();
    client.resume().await.unwrap();
    client.pause().await.unwrap();
    let diff = SnapshotCreateParams {
        snapshot_type: Some(SnapshotType::Diff),
        snapshot_path: format!("{OUT_DIR}/diff.vmstate"),
        mem_file_path: format!("{OUT_DIR}/diff.mem"),
    };
    client.create_snapshot(&diff).await.unwrap();
    client.resume().await.unwrap();
    assert_eq!(
        client.describe_instance().await.unwrap().state,
        InstanceState::Running
    );
    let out = src.layout.root().join(OUT_DIR);
    let full_mem = std::fs::metadata(out.join("full.mem")).unwrap();
    assert_eq!(full_mem.len(), MEM_MIB << 20, "the full memory file");
    assert_eq!(full_mem.uid(), src.uid, "written by the jailed Firecracker");
    let diff_mem = std::fs::metadata(out.join("diff.mem")).unwrap();
    assert_eq!(
        diff_mem.len(),
        MEM_MIB << 20,
        "a diff file spans guest memory"
    );
    assert!(
        diff_mem.blocks() * 512 < full_mem.blocks() * 512,
        "the diff holds only dirtied pages: {} vs {} bytes allocated",
        diff_mem.blocks() * 512,
        full_mem.blocks() * 512
    );

    // --- Two clones at once from the full snapshot, each in its own jail and namespace, with
    // a TAP of another name (so the override must be used) and its own vsock socket.
    let mut clones = Vec::new();
    for k in 0..2u32 {
        let mut files = own_disks(&format!("clone{k}"));
        files.push((
            out.join("full.vmstate"),
            layout::SNAPSHOT_STATE_IN_JAIL,
            false,
        ));
        files.push((out.join("full.mem"), layout::SNAPSHOT_MEM_IN_JAIL, false));
        clones.push(
            JailedVm::start(
                &bins,
                base,
                &format!("c{k}"),
                UID_BASE + 1 + k,
                "tapclone",
                &files,
            )
            .await,
        );
    }
    let load = |vm: &JailedVm| {
        let client = vm.client();
        let params = SnapshotLoadParams {
            resume_vm: Some(true),
            network_overrides: Some(vec![NetworkOverride {
                iface_id: "eth0".into(),
                host_dev_name: vm.tap.clone(),
            }]),
            vsock_override: Some(VsockOverride {
                uds_path: "clone.sock".into(),
            }),
            clock_realtime: Some(true),
            ..SnapshotLoadParams::from_file(
                layout::SNAPSHOT_STATE_IN_JAIL,
                layout::SNAPSHOT_MEM_IN_JAIL,
            )
        };
        async move { client.load_snapshot(&params).await }
    };
    let (a, b) = tokio::join!(load(&clones[0]), load(&clones[1]));
    a.unwrap();
    b.unwrap();
    for c in &clones {
        let info = c.client().describe_instance().await.unwrap();
        assert_eq!(info.state, InstanceState::Running, "{}", c.layout.id());
        assert!(
            c.layout.root().join("clone.sock").exists(),
            "vsock_override"
        );
        assert!(
            !c.layout.root().join("v.sock").exists(),
            "not the snapshot's socket"
        );
        let cfg = serde_json::to_value(c.client().vm_config().await.unwrap()).unwrap();
        assert_eq!(cfg["machine-config"]["mem_size_mib"], MEM_MIB, "{cfg}");
    }
    assert_ne!(clones[0].pid(), clones[1].pid());

    // --- Ctrl-Alt-Del reaches a guest that ignores it: Firecracker keeps running, and the
    // kill path ends it.
    client.send_ctrl_alt_del().await.unwrap();
    assert!(
        !exits_within(src.pid(), Duration::from_secs(1)),
        "the halting guest ignores Ctrl-Alt-Del"
    );
    client.flush_metrics().await.unwrap();
    src.kill();
    for c in &mut clones {
        c.kill();
    }

    // Firecracker's log and metrics, written through the jail into the VM's directory.
    let log = std::fs::read_to_string(src.dir.join(layout::LOG_IN_JAIL)).unwrap();
    for needle in [
        "The API server received a Put request on \"/actions\" with body \"{\\\"action_type\\\":\\\"InstanceStart\\\"}\"",
        "'create full snapshot' VMM action took",
        "Status code: 204 No Content",
    ] {
        assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }
    let metrics = std::fs::read_to_string(src.dir.join(layout::METRICS_IN_JAIL)).unwrap();
    let last: Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert!(last["utc_timestamp_ms"].as_u64().is_some(), "{last}");
    assert!(last["api_server"].is_object(), "{last}");

    // --- Nothing left.
    let mut left = src.teardown();
    for c in &mut clones {
        left.extend(c.teardown());
    }
    assert!(left.is_empty(), "left behind: {left:#?}");
}
