//! Init mode ("Must show" 2): the agent as PID 1 in new PID, mount, UTS, IPC and network
//! namespaces, chrooted into an initrd-like directory with a private /dev whose drive nodes are
//! real loop devices over image files, the way the stand-in VMM runs it (docs/guest-abi.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{argv, is_root};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use vmsan_agent_client::{AgentClient, Endpoint};
use vmsan_proto::{
    ExecRequest, GUEST_CONFIG_VERSION, GuestConfig, GuestNetwork, ReadyAnnouncement,
};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A loop device, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &Path, read_only: bool) -> Self {
        let mut c = Command::new("losetup");
        c.arg("--find").arg("--show");
        if read_only {
            c.arg("--read-only");
        }
        c.arg(file);
        Self(run(&mut c).trim().to_owned())
    }
    fn rdev(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.0).unwrap().rdev()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A named network namespace holding `eth0` (one end of a veth pair), deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        let name = format!("vmsanagt-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self(name);
        // Both ends live in the namespace: nothing to clean up on the host side.
        run(Command::new("ip").args([
            "-n", &ns.0, "link", "add", "eth0", "type", "veth", "peer", "name", "hostside",
        ]));
        run(Command::new("ip").args(["-n", &ns.0, "link", "set", "hostside", "up"]));
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The guest's PID 1 (through `unshare --kill-child`): killed on drop.
struct Guest(tokio::process::Child);

impl Guest {
    async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(limit, self.0.wait())
            .await
            .unwrap_or_else(|_| panic!("guest did not end within {limit:?}"))
            .unwrap()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

const APPLETS: &[&str] = &[
    "sh", "cat", "hostname", "ip", "sleep", "true", "id", "echo", "env", "ls", "sync", "grep",
];

fn build_rootfs(dir: &Path) -> PathBuf {
    let tree = dir.join("rootfs-tree");
    for d in ["bin", "etc", "root", "sbin"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox");
    std::fs::copy(busybox, tree.join("bin/busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(a)).unwrap();
    }
    std::fs::write(
        tree.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(tree.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(tree.join("etc/marker"), "from-rootfs\n").unwrap();
    // /etc/resolv.conf as a dangling symlink, as in many images: the agent must replace it.
    std::os::unix::fs::symlink(
        "../run/systemd/resolve/stub-resolv.conf",
        tree.join("etc/resolv.conf"),
    )
    .unwrap();
    let img = dir.join("rootfs.sqfs");
    run(Command::new("mksquashfs")
        .arg(&tree)
        .arg(&img)
        .args(["-noappend", "-quiet", "-all-root"]));
    img
}

fn blank_ext4(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(path));
}

fn guest_config() -> GuestConfig {
    GuestConfig {
        version: GUEST_CONFIG_VERSION,
        vm_id: "vm-inittest".into(),
        hostname: "guest-test".into(),
        token: common::TOKEN.into(),
        network: Some(GuestNetwork {
            address: "198.18.0.2/30".into(),
            gateway: "198.18.0.1".into(),
            mac: None,
            dns: vec!["198.18.0.1".into()],
            mtu: Some(1400),
        }),
        default_user: None,
        env: Default::default(),
        init: Default::default(),
        image: Default::default(),
    }
}

fn write_config(dir: &Path, cfg: &GuestConfig) -> PathBuf {
    let p = dir.join("config.img");
    std::fs::write(&p, cfg.to_drive_bytes().unwrap()).unwrap();
    p
}

/// The initrd's root: `/init`, empty mount points, `/.vsock`, and a private `/dev` holding
/// only harmless character devices and the VM's own loop devices as `vda…`.
fn build_initrd(dir: &Path, drives: &[&Loop]) -> PathBuf {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let root = dir.join("initrd");
    for d in ["dev", "proc", "sys", "run", "tmp", "newroot", ".vsock"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    // VMSAN_AGENT_INIT_BIN: run another build as /init (e.g. the static one of scripts/build-agent).
    let agent_override = std::env::var("VMSAN_AGENT_INIT_BIN").ok();
    let agent = agent_override
        .as_deref()
        .unwrap_or(env!("CARGO_BIN_EXE_vmsan-agent"));
    std::fs::copy(agent, root.join("init")).unwrap();
    // The test build is dynamically linked (the static musl build is checked by
    // scripts/build-agent): bring its loader and libraries along, at their own paths.
    let ldd = Command::new("ldd").arg(agent).output().unwrap();
    for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
        if word.starts_with('/') && Path::new(word).is_file() {
            let dest = root.join(word.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(word, dest).unwrap();
        }
    }
    let chr = [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
        ("ptmx", 5, 2),
    ];
    for (name, maj, min) in chr {
        mknod(
            &root.join("dev").join(name),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(maj, min),
        )
        .unwrap();
    }
    for (i, l) in drives.iter().enumerate() {
        let name = format!("vd{}", (b'a' + u8::try_from(i).unwrap()) as char);
        mknod(
            &root.join("dev").join(name),
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o600),
            l.rdev(),
        )
        .unwrap();
    }
    root
}

fn start_guest(netns: &Netns, initrd: &Path, env: &[(&str, &str)], stderr: Stdio) -> Guest {
    let mut c = tokio::process::Command::new("ip");
    c.args([
        "netns",
        "exec",
        &netns.0,
        "unshare",
        "--pid",
        "--mount",
        "--uts",
        "--ipc",
        "--kill-child",
    ])
    .args(["--propagation", "private", "chroot"])
    .arg(initrd)
    .arg("/init")
    .env_clear()
    .env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    )
    .stdin(Stdio::null())
    .stderr(stderr);
    for (k, v) in env {
        c.env(k, v);
    }
    Guest(c.spawn().unwrap())
}

/// Play the stand-in's part for guest → host port 1025: answer CONNECT, read the line.
async fn accept_announcement(listener: &tokio::net::UnixListener) -> ReadyAnnouncement {
    let (s, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .expect("no announcement")
        .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    assert_eq!(line, "CONNECT 1025\n");
    r.get_mut().write_all(b"OK 1025\n").await.unwrap();
    line.clear();
    r.read_line(&mut line).await.unwrap();
    serde_json::from_str(&line).unwrap()
}

async fn sh(c: &AgentClient, script: &str) -> String {
    let out = c
        .exec_collect(ExecRequest {
            argv: argv(&["sh", "-c", script]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        out.status.code,
        0,
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A booted guest: PID 1 in its namespaces, its loop devices, its client. Field order is drop
/// order: the guest ends before its namespace goes and its loop devices are detached.
struct Vm {
    guest: Guest,
    netns: Netns,
    drives: Vec<Loop>,
    overlay_img: PathBuf,
    client: AgentClient,
    dir: tempfile::TempDir,
}

impl Vm {
    async fn boot(cfg: &GuestConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rootfs_img = build_rootfs(dir.path());
        let overlay_img = dir.path().join("overlay.img");
        blank_ext4(&overlay_img, 64 << 20);
        let config_img = write_config(dir.path(), cfg);
        let drives = vec![
            Loop::attach(&rootfs_img, true),
            Loop::attach(&overlay_img, false),
            Loop::attach(&config_img, true),
        ];
        let initrd = build_initrd(dir.path(), &drives.iter().collect::<Vec<_>>());
        let netns = Netns::new();
        let host_sock = tokio::net::UnixListener::bind(initrd.join(".vsock/host.sock")).unwrap();
        let t = Instant::now();
        let guest = start_guest(
            &netns,
            &initrd,
            &[
                ("vmsan_rootfs", "/dev/vda"),
                ("vmsan_rootfs_fs", "squashfs"),
                ("vmsan_overlay", "/dev/vdb"),
                ("vmsan_config", "/dev/vdc"),
                ("VMSAN_STANDIN_VSOCK_DIR", "/.vsock"),
            ],
            Stdio::inherit(),
        );
        let ann = accept_announcement(&host_sock).await;
        assert_eq!(ann.vm_id, cfg.vm_id);
        println!(
            "init to ready announcement: {:.1} ms",
            t.elapsed().as_secs_f64() * 1000.0
        );
        let client = AgentClient::new(
            Endpoint::Unix(initrd.join(".vsock/guest-1024.sock")),
            common::TOKEN,
        );
        Self {
            guest,
            netns,
            drives,
            overlay_img,
            client,
            dir,
        }
    }

    /// Shut down through the agent; wait for PID 1 to end; release namespace and loop devices.
    async fn shutdown(self) -> (tempfile::TempDir, PathBuf) {
        let Self {
            mut guest,
            netns,
            drives,
            overlay_img,
            client,
            dir,
        } = self;
        client.shutdown().await.unwrap();
        let st = guest.wait_exit(Duration::from_secs(30)).await;
        println!("guest ended: {st:?}");
        drop(guest);
        drop(netns);
        drop(drives);
        (dir, overlay_img)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_init_as_pid1_with_loop_drives() {
    if !is_root() {
        vmsan_testkit::skip!("needs root (namespaces, loop devices, mounts)");
        return;
    }
    let mut cfg = guest_config();
    cfg.image.env = vec!["FROM_IMAGE=yes".into()];
    cfg.image.working_dir = Some("/root".into());
    let vm = Vm::boot(&cfg).await;
    let c = &vm.client;
    assert_eq!(c.health().await.unwrap().mode, "init");
    let wrong = AgentClient::new(vm.client.endpoint().clone(), "wrong");
    assert!(vmsan_agent_client::is_auth_error(
        &wrong.health().await.unwrap_err()
    ));
    let rss = sh(c, "for p in /proc/[0-9]*; do [ \"$(cat $p/comm)\" = init ] && grep VmRSS $p/status; done; true").await;
    println!(
        "RSS of the agent's processes (PID 1, server): {}",
        rss.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    // The image's config is the exec default.
    assert_eq!(sh(c, "pwd").await, "/root\n");
    assert!(sh(c, "env").await.contains("FROM_IMAGE=yes\n"));

    // The overlay root: image content readable, writes land in the overlay.
    assert_eq!(sh(c, "cat /etc/marker").await, "from-rootfs\n");
    let mounts = sh(c, "cat /proc/mounts").await;
    assert!(
        mounts.lines().any(|l| l.starts_with("overlay / overlay ")),
        "{mounts}"
    );
    // The prepared /dev stays: devtmpfs (the host's devices, its root disk among them) never.
    assert!(
        !mounts
            .lines()
            .any(|l| l.split(' ').nth(2) == Some("devtmpfs")),
        "{mounts}"
    );
    assert_eq!(sh(c, "cat /proc/1/cmdline").await, "/init\0");
    sh(c, "echo persisted > /root/data.txt").await;
    // Identity and network.
    assert_eq!(sh(c, "hostname").await, "guest-test\n");
    let addr = sh(c, "ip -4 addr show dev eth0").await;
    assert!(addr.contains("inet 198.18.0.2/30"), "{addr}");
    assert!(addr.contains("mtu 1400"), "{addr}");
    let route = sh(c, "ip route").await;
    assert!(route.contains("default via 198.18.0.1 dev eth0"), "{route}");
    assert!(sh(c, "ip link show lo").await.contains("UP"));
    assert!(
        sh(c, "cat /etc/hosts")
            .await
            .contains("198.18.0.2\tguest-test")
    );
    assert_eq!(
        sh(c, "cat /etc/resolv.conf").await,
        "nameserver 198.18.0.1\n"
    );
    // The token is nowhere in a child's environment.
    assert!(!sh(c, "env").await.contains(common::TOKEN));

    // Orphans are re-parented to PID 1, which must reap them.
    sh(c, "for i in 1 2 3 4 5; do sleep 0.1 & done; exit 0").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let stats = sh(c, "cat /proc/[0-9]*/stat 2>/dev/null; true").await;
        let sleeping: Vec<&str> = stats.lines().filter(|l| l.contains("(sleep)")).collect();
        if sleeping.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphans not reaped: {sleeping:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Shutdown request: everything ends, the overlay's data is on disk.
    let (_dir, overlay_img) = vm.shutdown().await;
    let data = run(Command::new("debugfs")
        .args(["-R", "cat /upper/root/data.txt"])
        .arg(&overlay_img));
    assert_eq!(data, "persisted\n");
    let fsck = Command::new("e2fsck")
        .args(["-n", "-f"])
        .arg(&overlay_img)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "overlay not clean: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_init_image_hands_pid1_to_the_images_init() {
    if !is_root() {
        vmsan_testkit::skip!("needs root (namespaces, loop devices, mounts)");
        return;
    }
    let mut cfg = guest_config();
    cfg.init = vmsan_proto::InitMode::Image;
    // The image's "init": a shell that powers off (exits) on SIGTERM.
    cfg.image.entrypoint = argv(&["/bin/sh", "-c"]);
    cfg.image.cmd = argv(&["trap 'exit 0' TERM; while true; do sleep 0.1; done"]);
    let vm = Vm::boot(&cfg).await;
    let c = &vm.client;
    assert_eq!(c.health().await.unwrap().mode, "image");
    let pid1 = sh(c, "cat /proc/1/cmdline").await;
    assert!(pid1.starts_with("/bin/sh\0-c\0trap"), "{pid1:?}");
    // The agent keeps serving beside it, on the same overlay root.
    assert_eq!(sh(c, "cat /etc/marker").await, "from-rootfs\n");
    assert_eq!(sh(c, "hostname").await, "guest-test\n");
    sh(c, "echo kept > /root/image-mode.txt").await;
    // Shutdown asks the image's init to power off; its end ends the guest.
    let (_dir, overlay_img) = vm.shutdown().await;
    let data = run(Command::new("debugfs")
        .args(["-R", "cat /upper/root/image-mode.txt"])
        .arg(&overlay_img));
    assert_eq!(data, "kept\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_init_refuses_to_guess_a_missing_drive() {
    if !is_root() {
        vmsan_testkit::skip!("needs root (namespaces)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let initrd = build_initrd(dir.path(), &[]);
    let netns = Netns::new();
    let mut guest = start_guest(
        &netns,
        &initrd,
        &[
            ("vmsan_rootfs", "/dev/vda"),
            ("vmsan_rootfs_fs", "ext4"),
            ("vmsan_overlay", "/dev/vdb"),
        ],
        Stdio::piped(),
    );
    let st = guest.wait_exit(Duration::from_secs(30)).await;
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(guest.0.stderr.as_mut().unwrap(), &mut err)
        .await
        .unwrap();
    assert!(
        err.contains("vmsan_config is not set"),
        "status {st:?}, stderr: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_init_sigterm_to_pid1_shuts_down_cleanly() {
    if !is_root() {
        vmsan_testkit::skip!("needs root (namespaces, loop devices, mounts)");
        return;
    }
    let mut vm = Vm::boot(&guest_config()).await;
    sh(&vm.client, "echo via-sigterm > /root/term.txt").await;
    // PID 1 of the guest is the only child of `unshare`.
    let unshare = vm.guest.0.id().unwrap();
    let children =
        std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).unwrap();
    let pid1: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid1),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = vm.guest.wait_exit(Duration::from_secs(30)).await;
    println!("guest ended: {st:?}");
    let Vm {
        guest,
        netns,
        drives,
        overlay_img,
        client: _,
        dir: _dir,
    } = vm;
    drop((guest, netns, drives));
    let data = run(Command::new("debugfs")
        .args(["-R", "cat /upper/root/term.txt"])
        .arg(&overlay_img));
    assert_eq!(data, "via-sigterm\n");
}
