//! Must show 2 and 3: a busybox guest boots in the stand-in (drives, eth0 over the relayed TAP,
//! vsock both ways), powers off, and nothing of it remains; the same under the jailer after
//! SIGKILL. Needs root: skips with a reason otherwise.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use vmsan_testkit::fixture::BusyboxGuest;

const INIT: &str = r#"export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
trap 'echo CAD_RECEIVED; exit 0' INT
echo "ENV rootfs=$vmsan_rootfs vsockdir=$VMSAN_STANDIN_VSOCK_DIR pid=$$"
echo "ARGV $*"
echo "SIGIGN $(grep SigIgn /proc/1/status | cut -f2)"
for d in vda vdb vdc; do echo "DRIVE $d ro=$(blockdev --getro /dev/$d) size=$(blockdev --getsize64 /dev/$d)"; done
if dd if=/dev/zero of=/dev/vda bs=512 count=1 2>/dev/null; then echo "WRITE vda accepted"; else echo "WRITE vda refused"; fi
if echo overlay-written | dd of=/dev/vdb bs=512 count=1 conv=notrunc,sync 2>/dev/null; then echo "WRITE vdb accepted"; else echo "WRITE vdb refused"; fi
echo "HOSTDEV $(ls /dev | tr '\n' ' ')"
if mknod /tmp/vdz b 254 0 2>/dev/null; then echo "MKNOD allowed"; else echo "MKNOD refused"; fi
echo "MAC $(cat /sys/class/net/eth0/address)"
ip link set lo up
ip link set eth0 up
ip addr add 10.0.0.2/30 dev eth0
if ping -c 1 -W 5 10.0.0.1 >/dev/null; then echo PING_OK; else echo PING_FAIL; fi
(echo GUEST_TCP | nc -l -p 8080) &
(while true; do dd if=/dev/zero bs=1024 count=300 2>/dev/null | nc -l -p 9001; done) &
(while true; do echo "RX_BYTES $(nc -l -p 9002 | wc -c)"; done) &
/bin/util listen /.vsock/guest-1024.sock hello-from-guest &
while [ ! -S /.vsock/guest-1024.sock ]; do sleep 0.05; done
/bin/util connect /.vsock/host.sock 1025 ping-from-guest
echo READY
while true; do sleep 1; done
"#;

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::populate(dir.path());
        Self { dir }
    }

    fn populate(d: &Path) {
        std::fs::write(
            d.join("vmlinux"),
            b"not a kernel: the stand-in only checks it opens",
        )
        .unwrap();
        let initrd = BusyboxGuest::new(INIT)
            .host_binary(&guest_util_bin(), "/bin/util")
            .gzip(true)
            .build()
            .unwrap();
        std::fs::write(d.join("initrd.cpio"), initrd).unwrap();
        std::fs::write(d.join("rootfs.img"), vec![1u8; 1 << 20]).unwrap();
        std::fs::write(d.join("overlay.img"), vec![0u8; 2 << 20]).unwrap();
        std::fs::write(d.join("config.img"), vec![0u8; 4096]).unwrap();
    }

    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).to_string_lossy().into_owned()
    }
}

/// The cold-boot requests of firecracker-verified.md, with paths under `root` ("" = relative).
fn configure(sock: &Path, p: &dyn Fn(&str) -> String, tap: &str, marker: &str) {
    configure_with_limit(sock, p, tap, marker, 12_500_000);
}

fn configure_with_limit(
    sock: &Path,
    p: &dyn Fn(&str) -> String,
    tap: &str,
    marker: &str,
    bytes_per_s: u64,
) {
    let steps: Vec<(&str, String)> = vec![
        (
            "/logger",
            format!(
                r#"{{"log_path":"{}","level":"Info"}}"#,
                p("firecracker.log")
            ),
        ),
        (
            "/metrics",
            format!(r#"{{"metrics_path":"{}"}}"#, p("metrics.json")),
        ),
        (
            "/boot-source",
            format!(
                r#"{{"kernel_image_path":"{}","initrd_path":"{}","boot_args":"console=ttyS0 reboot=k panic=1 pci=off i8042.noaux quiet vmsan_rootfs=/dev/vda single {marker}"}}"#,
                p("vmlinux"),
                p("initrd.cpio")
            ),
        ),
        (
            "/drives/rootfs",
            format!(
                r#"{{"drive_id":"rootfs","path_on_host":"{}","is_root_device":false,"is_read_only":true}}"#,
                p("rootfs.img")
            ),
        ),
        (
            "/drives/overlay",
            format!(
                r#"{{"drive_id":"overlay","path_on_host":"{}","is_root_device":false,"is_read_only":false,"cache_type":"Writeback"}}"#,
                p("overlay.img")
            ),
        ),
        (
            "/drives/config",
            format!(
                r#"{{"drive_id":"config","path_on_host":"{}","is_root_device":false,"is_read_only":true}}"#,
                p("config.img")
            ),
        ),
        (
            "/machine-config",
            r#"{"vcpu_count":2,"mem_size_mib":256,"smt":false,"track_dirty_pages":true}"#
                .to_owned(),
        ),
        (
            "/network-interfaces/eth0",
            format!(
                r#"{{"iface_id":"eth0","host_dev_name":"{tap}","guest_mac":"06:00:c6:12:00:02","rx_rate_limiter":{{"bandwidth":{{"size":{bytes_per_s},"refill_time":1000}}}},"tx_rate_limiter":{{"bandwidth":{{"size":{bytes_per_s},"refill_time":1000}}}}}}"#
            ),
        ),
        (
            "/vsock",
            format!(r#"{{"guest_cid":3,"uds_path":"{}"}}"#, p("v.sock")),
        ),
        ("/entropy", "{}".to_owned()),
    ];
    for (path, body) in steps {
        let (st, resp) = call(sock, "PUT", path, Some(&body)).unwrap();
        assert_eq!(st, 204, "PUT {path}: {resp}");
    }
    let (st, _) = call(sock, "GET", "/vm/config", None).unwrap();
    assert_eq!(st, 200);
}

/// Accepts the guest's connection on `<uds>_1025`, answers `pong`.
fn host_listener(uds_1025: &Path) -> std::thread::JoinHandle<String> {
    let l = UnixListener::bind(uds_1025).unwrap();
    std::thread::spawn(move || {
        let (c, _) = l.accept().unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let mut c = c;
        c.write_all(b"pong\n").unwrap();
        line
    })
}

fn host_connect(uds: &Path, port: u32, msg: &str) -> (String, String) {
    let mut c = UnixStream::connect(uds).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut ok = String::new();
    r.read_line(&mut ok).unwrap();
    c.write_all(format!("{msg}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    r.read_line(&mut reply).unwrap();
    (ok, reply)
}

fn check_guest(
    console: &mut Console,
    ns: &NetNs,
    uds: &Path,
    from_guest: std::thread::JoinHandle<String>,
) {
    let t = Duration::from_secs(20);
    let env = console.wait_for("ENV ", t);
    assert!(
        env.contains("rootfs=/dev/vda vsockdir=/.vsock pid=1"),
        "{env}"
    );
    let argv = console.wait_for("ARGV", t);
    let ign = console.wait_for("SIGIGN", t);
    let mask = u64::from_str_radix(ign.trim().trim_start_matches("SIGIGN "), 16).unwrap();
    assert_eq!(
        mask & (1 << (libc::SIGPIPE - 1)),
        0,
        "init starts with SIGPIPE at its default: {ign}"
    );
    assert!(argv.trim().starts_with("ARGV single marker-"), "{argv}");
    assert!(
        console
            .wait_for("DRIVE vda", t)
            .contains("ro=1 size=1048576")
    );
    assert!(
        console
            .wait_for("DRIVE vdb", t)
            .contains("ro=0 size=2097152")
    );
    assert!(console.wait_for("DRIVE vdc", t).contains("ro=1 size=4096"));
    console.wait_for("WRITE vda refused", t);
    console.wait_for("WRITE vdb accepted", t);
    let devs = console.wait_for("HOSTDEV", t);
    console.wait_for("MKNOD refused", t);
    assert!(
        !devs.contains("vdd") && !devs.contains("loop") && !devs.contains("sda"),
        "{devs}"
    );
    assert_eq!(console.wait_for("MAC", t).trim(), "MAC 06:00:c6:12:00:02");
    console.wait_for("PING_OK", t);
    assert_eq!(from_guest.join().unwrap(), "ping-from-guest\n");
    console.wait_for("guest got: pong", t);
    console.wait_for("READY", t);
    let (ok, reply) = host_connect(uds, 1024, "hi");
    assert_eq!(ok, "OK 1073741824\n");
    assert_eq!(reply, "hello-from-guest hi\n");
    // No listener on a port: closed without a reply, as Firecracker does.
    let mut c = UnixStream::connect(uds).unwrap();
    if let Err(e) = c.write_all(b"CONNECT 4242\n") {
        let log = std::fs::read_to_string(uds.parent().unwrap().join("fc.log")).unwrap_or_default();
        panic!("write CONNECT: {e}; log:\n{log}");
    }
    let mut buf = String::new();
    let n = BufReader::new(c).read_line(&mut buf).unwrap();
    assert_eq!(n, 0, "expected EOF, got {buf:?}");
    // TCP from the host side of the TAP to the guest.
    let (data, _) = read_from_guest(ns, 8080);
    assert_eq!(String::from_utf8_lossy(&data).trim(), "GUEST_TCP");
}

#[test]
fn privileged_busybox_guest_boots_and_powers_off_cleanly() {
    if skip_unless_root() {
        return;
    }
    let files = Files::new();
    let ns = NetNs::new("boot", 0);
    let api = files.dir.path().join("api.sock");
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", ns.path()))
        .arg("--")
        .arg(fc_bin())
        .args(["--id", "boot-1", "--api-sock"])
        .arg(&api)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut console = Console::new(child.stdout.take().unwrap());
    let vmm_pid = child.id();
    let mut proc_guard = Proc(child);
    wait_socket(&api, Duration::from_secs(10));
    let p = |f: &str| files.path(f);
    configure(&api, &p, "tap0", "marker-boot");
    let uds = files.dir.path().join("v.sock");
    let from_guest = host_listener(&files.dir.path().join("v.sock_1025"));
    let (st, resp) = call(
        &api,
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    )
    .unwrap();
    assert_eq!(st, 204, "{resp}");
    let loops = vmm_loops(&files.dir.path().join("firecracker.log"));
    assert_eq!(loops.len(), 3);
    assert!(
        loops[0].1.ends_with("rootfs.img")
            && loops[1].1.ends_with("overlay.img")
            && loops[2].1.ends_with("config.img"),
        "{loops:?}"
    );
    check_guest(&mut console, &ns, &uds, from_guest);

    // Post-boot: configuration is refused, pause/snapshot/resume work (verified sequence).
    let (st, resp) = call(
        &api,
        "PUT",
        "/machine-config",
        Some(r#"{"vcpu_count":1,"mem_size_mib":128}"#),
    )
    .unwrap();
    assert_eq!(
        (st, resp.contains("not supported after starting")),
        (400, true),
        "{resp}"
    );
    let (st, resp) = call(
        &api,
        "PUT",
        "/snapshot/load",
        Some(r#"{"snapshot_path":"s","mem_backend":{"backend_type":"File","backend_path":"m"}}"#),
    )
    .unwrap();
    assert_eq!(st, 400, "{resp}");
    let (st, resp) = call(
        &api,
        "PUT",
        "/snapshot/create",
        Some(&format!(
            r#"{{"snapshot_path":"{}","mem_file_path":"{}"}}"#,
            p("snap"),
            p("mem")
        )),
    )
    .unwrap();
    assert_eq!(st, 400, "running VM: {resp}");
    assert_eq!(
        call(&api, "PATCH", "/vm", Some(r#"{"state":"Paused"}"#))
            .unwrap()
            .0,
        204
    );
    let (_, info) = call(&api, "GET", "/", None).unwrap();
    assert!(info.contains("\"Paused\""), "{info}");
    let frozen = guest_states("marker-boot");
    assert!(frozen.len() >= 3, "init, nc, util, sleep…: {frozen:?}");
    assert!(
        frozen.iter().all(|s| *s == 'T'),
        "every guest process stopped: {frozen:?}"
    );
    let (st, resp) = call(
        &api,
        "PUT",
        "/snapshot/create",
        Some(&format!(
            r#"{{"snapshot_type":"Full","snapshot_path":"{}","mem_file_path":"{}"}}"#,
            p("snap"),
            p("mem")
        )),
    )
    .unwrap();
    assert_eq!(st, 204, "{resp}");
    let snap = std::fs::read_to_string(p("snap")).unwrap();
    assert!(snap.contains("guest memory is NOT preserved"), "{snap}");
    assert_eq!(std::fs::metadata(p("mem")).unwrap().len(), 256 << 20);
    assert_eq!(
        call(&api, "PATCH", "/vm", Some(r#"{"state":"Resumed"}"#))
            .unwrap()
            .0,
        204
    );
    assert_eq!(
        call(
            &api,
            "PUT",
            "/actions",
            Some(r#"{"action_type":"FlushMetrics"}"#)
        )
        .unwrap()
        .0,
        204
    );

    // Ctrl-Alt-Del: SIGINT to the init, which exits; the stand-in exits and cleans up.
    assert_eq!(
        call(
            &api,
            "PUT",
            "/actions",
            Some(r#"{"action_type":"SendCtrlAltDel"}"#)
        )
        .unwrap()
        .0,
        204
    );
    console.wait_for("CAD_RECEIVED", Duration::from_secs(10));
    let status = proc_guard.0.wait().unwrap();
    assert!(status.success(), "stand-in exit: {status:?}");
    let log = std::fs::read_to_string(p("firecracker.log")).unwrap();
    assert!(log.contains("guest memory is NOT preserved"), "{log}");
    assert_nothing_remains(
        files.dir.path(),
        &["v.sock", "api.sock"],
        &loops,
        Some(vmm_pid),
    );
}

fn assert_nothing_remains(
    dir: &Path,
    sockets: &[&str],
    loops: &[(String, String)],
    vmm_pid: Option<u32>,
) {
    assert_loops_detached(loops);
    eventually("loop devices detached", Duration::from_secs(10), || {
        loops_backed_by(dir).is_empty()
    });
    eventually("processes gone", Duration::from_secs(10), || {
        processes_mentioning("firecracker-standin")
            .iter()
            .all(|p| !p.contains(&dir.to_string_lossy().to_string()))
            && processes_mentioning("marker-boot").is_empty()
            && vmm_pid
                .is_none_or(|p| processes_mentioning(&format!("standin-helper-of {p}")).is_empty())
    });
    for s in sockets {
        assert!(!dir.join(s).exists(), "{s} left behind");
    }
    if let Some(pid) = vmm_pid {
        assert!(
            !Path::new(&format!("/run/firecracker-standin-{pid}")).exists(),
            "runtime dir left behind"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir("/run")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("firecracker-standin-"))
        .collect();
    let _ = leftovers; // other stand-ins may run concurrently on a shared machine; checked per-pid below
}

const JAIL_UID: u32 = 10_000;

struct Jail {
    base: tempfile::TempDir,
    id: String,
    root: std::path::PathBuf,
    cgroups: Vec<std::path::PathBuf>,
}

impl Jail {
    fn new(tag: &str) -> Self {
        let base = tempfile::tempdir().unwrap();
        let id = format!("standin-{tag}-{}", std::process::id());
        let root = base.path().join("firecracker").join(&id).join("root");
        std::fs::create_dir_all(&root).unwrap();
        Files::populate(&root);
        for e in std::fs::read_dir(&root).unwrap().flatten() {
            std::os::unix::fs::chown(e.path(), Some(JAIL_UID), Some(JAIL_UID)).unwrap();
        }
        let cgroups = ["cpu", "memory"]
            .iter()
            .map(|c| {
                Path::new("/sys/fs/cgroup")
                    .join(c)
                    .join("firecracker")
                    .join(&id)
            })
            .collect();
        Self {
            base,
            id,
            root,
            cgroups,
        }
    }

    fn jailer(&self, ns: &NetNs, daemonize: bool) -> Command {
        let (fc, _) =
            vmsan_testkit::standin::install_as_real_names(&self.base.path().join("bin")).unwrap();
        let mut c = Command::new(jailer_bin());
        c.args(["--id", &self.id, "--exec-file"])
            .arg(&fc)
            .args([
                "--uid",
                &JAIL_UID.to_string(),
                "--gid",
                &JAIL_UID.to_string(),
                "--chroot-base-dir",
            ])
            .arg(self.base.path())
            .args([
                "--netns",
                &ns.path(),
                "--new-pid-ns",
                "--cgroup-version",
                "1",
            ])
            .args([
                "--cgroup",
                "cpu.cfs_quota_us=100000",
                "--cgroup",
                "cpu.cfs_period_us=100000",
            ])
            .args(["--cgroup", "memory.limit_in_bytes=1073741824"]);
        if daemonize {
            c.arg("--daemonize");
        }
        c.args([
            "--",
            "--api-sock",
            "/run/firecracker.socket",
            "--level",
            "Info",
            "--log-path",
            "/fc.log",
        ]);
        c
    }

    fn pid(&self) -> i32 {
        let p = self.root.join("firecracker.pid");
        eventually("pid file", Duration::from_secs(10), || p.exists());
        std::fs::read_to_string(&p).unwrap().trim().parse().unwrap()
    }

    /// What the caller does after the VMM is gone: remove the jail and the cgroups.
    fn clean(&self) {
        let _ = std::fs::remove_dir_all(self.base.path().join("firecracker").join(&self.id));
        for c in &self.cgroups {
            let _ = std::fs::remove_dir(c);
        }
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        if let Ok(s) = std::fs::read_to_string(self.root.join("firecracker.pid"))
            && let Ok(pid) = s.trim().parse::<i32>()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for p in processes_mentioning(&self.id) {
            if let Some(pid) = p.split(':').next().and_then(|x| x.parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        eventually("jail processes gone", Duration::from_secs(10), || {
            processes_mentioning(&self.id).is_empty()
        });
        self.clean();
    }
}

fn uid_of(pid: i32) -> (u32, String) {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = st
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let nspid = st
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .unwrap_or("")
        .trim()
        .to_owned();
    (uid, nspid)
}

/// The loop devices the VMM attached (from its log line), with their backing files.
fn vmm_loops(log: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("guest init started"))
        .expect("boot logged");
    let list = line
        .split("loop devices [")
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap();
    list.split(", ")
        .filter(|x| !x.is_empty())
        .map(|n| {
            let name = format!("loop{n}");
            let b =
                std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).unwrap();
            (name, b.trim().to_owned())
        })
        .collect()
}

fn assert_loops_detached(loops: &[(String, String)]) {
    eventually("loop devices detached", Duration::from_secs(10), || {
        loops.iter().all(|(n, b)| {
            std::fs::read_to_string(format!("/sys/block/{n}/loop/backing_file"))
                .map(|now| now.trim() != b)
                .unwrap_or(true)
        })
    });
}

fn jailed_boot(jail: &Jail, ns: &NetNs, console: Option<&mut Console>) -> std::path::PathBuf {
    let api = jail.root.join("run/firecracker.socket");
    wait_socket(&api, Duration::from_secs(10));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&api).unwrap().uid(),
        JAIL_UID,
        "API socket belongs to the jail uid"
    );
    let pid = jail.pid();
    assert_eq!(
        std::fs::metadata(jail.root.join("firecracker.pid"))
            .unwrap()
            .uid(),
        0
    );
    let (uid, nspid) = uid_of(pid);
    assert_eq!(uid, JAIL_UID);
    assert!(
        nspid.ends_with(" 1") || nspid.ends_with("\t1"),
        "PID 1 of its namespace: {nspid:?}"
    );
    for c in &jail.cgroups {
        let tasks = std::fs::read_to_string(c.join("tasks")).unwrap();
        assert!(
            tasks.lines().any(|t| t == pid.to_string()),
            "{} holds the VMM",
            c.display()
        );
    }
    assert_eq!(
        std::fs::read_to_string(jail.cgroups[1].join("memory.limit_in_bytes"))
            .unwrap()
            .trim(),
        "1073741824"
    );
    for n in ["dev/net/tun", "dev/kvm", "firecracker"] {
        assert!(jail.root.join(n).exists(), "{n} in the jail");
    }
    // A TAP the jail uid does not own cannot be opened, as with real Firecracker.
    let st = Command::new("ip")
        .args([
            "-n", &ns.name, "tuntap", "add", "dev", "taproot", "mode", "tap", "user", "0", "group",
            "0",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let (st, resp) = call(
        &api,
        "PUT",
        "/network-interfaces/eth9",
        Some(r#"{"iface_id":"eth9","host_dev_name":"taproot"}"#),
    )
    .unwrap();
    assert_eq!(st, 400, "{resp}");
    assert!(resp.contains("Open tap device failed"), "{resp}");
    let rel = |f: &str| f.to_owned();
    configure(&api, &rel, "tap0", &format!("marker-{}", jail.id));
    let l = jail.root.join("v.sock_1025");
    let from_guest = host_listener(&l);
    std::os::unix::fs::chown(&l, Some(JAIL_UID), Some(JAIL_UID)).unwrap();
    let (st, resp) = call(
        &api,
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    )
    .unwrap();
    assert_eq!(st, 204, "{resp}");
    let uds = jail.root.join("v.sock");
    match console {
        Some(c) => check_guest(c, ns, &uds, from_guest),
        None => {
            assert_eq!(from_guest.join().unwrap(), "ping-from-guest\n");
            eventually("guest listener", Duration::from_secs(10), || {
                jail.root
                    .join("run/firecracker-standin-1/vsock/guest-1024.sock")
                    .exists()
            });
            let (ok, reply) = host_connect(&uds, 1024, "hi");
            assert_eq!(
                (ok.as_str(), reply.as_str()),
                ("OK 1073741824\n", "hello-from-guest hi\n")
            );
        }
    }
    api
}

fn assert_jail_gone(jail: &Jail, loops: &[(String, String)]) {
    assert_eq!(loops.len(), 3, "{loops:?}");
    assert_loops_detached(loops);
    eventually("processes gone", Duration::from_secs(10), || {
        processes_mentioning(&jail.id).is_empty()
    });
    for c in &jail.cgroups {
        assert!(!c.exists(), "{} left", c.display());
    }
    assert!(!jail.base.path().join("firecracker").join(&jail.id).exists());
}

#[test]
fn privileged_jailed_guest_boots_and_powers_off() {
    if skip_unless_root() {
        return;
    }
    let ns = NetNs::new("jail", JAIL_UID);
    let jail = Jail::new("j1");
    let mut child = jail
        .jailer(&ns, false)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut console = Console::new(child.stdout.take().unwrap());
    let api = jailed_boot(&jail, &ns, Some(&mut console));
    let loops = vmm_loops(&jail.root.join("firecracker.log"));
    assert_eq!(
        call(
            &api,
            "PUT",
            "/actions",
            Some(r#"{"action_type":"SendCtrlAltDel"}"#)
        )
        .unwrap()
        .0,
        204
    );
    console.wait_for("CAD_RECEIVED", Duration::from_secs(10));
    let pid = jail.pid();
    eventually(
        "VMM exits after the guest powers off",
        Duration::from_secs(10),
        || !Path::new(&format!("/proc/{pid}")).exists(),
    );
    let _ = child.wait();
    let early = std::fs::read_to_string(jail.root.join("fc.log")).unwrap();
    assert!(
        early.contains("[standin-j1-"),
        "--log-path /fc.log, relative to the jail: {early}"
    );
    let log = std::fs::read_to_string(jail.root.join("firecracker.log")).unwrap();
    assert!(log.contains("The API server received a Put request on \"/actions\" with body \"{\\\"action_type\\\":\\\"SendCtrlAltDel\\\"}\""), "{log}");
    assert!(
        !jail.root.join("run/firecracker-standin-1").exists(),
        "runtime dir removed on exit"
    );
    jail.clean();
    assert_jail_gone(&jail, &loops);
}

#[test]
fn privileged_sigkilled_daemonized_vmm_leaves_nothing_after_jail_cleanup() {
    if skip_unless_root() {
        return;
    }
    let ns = NetNs::new("kill", JAIL_UID);
    let jail = Jail::new("k1");
    let st = jail
        .jailer(&ns, true)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "daemonizing jailer returns at once: {st:?}");
    jailed_boot(&jail, &ns, None);
    let loops = vmm_loops(&jail.root.join("firecracker.log"));
    let pid = jail.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("VMM gone", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    eventually("guest and helper gone", Duration::from_secs(10), || {
        processes_mentioning(&jail.id).is_empty()
    });
    jail.clean();
    assert_jail_gone(&jail, &loops);
}

#[test]
fn privileged_snapshot_load_reboots_with_network_and_vsock_overrides() {
    if skip_unless_root() {
        return;
    }
    let files = Files::new();
    let d = files.dir.path();
    let p = |f: &str| files.path(f);
    // Source VM.
    let ns1 = NetNs::new("snapa", 0);
    let api1 = d.join("api1.sock");
    let mut a = Command::new("nsenter")
        .arg(format!("--net={}", ns1.path()))
        .arg("--")
        .arg(fc_bin())
        .arg("--api-sock")
        .arg(&api1)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut console_a = Console::new(a.stdout.take().unwrap());
    let a_pid = a.id();
    let guard_a = Proc(a);
    wait_socket(&api1, Duration::from_secs(10));
    configure(&api1, &p, "tap0", "marker-snap");
    let from_a = host_listener(&d.join("v.sock_1025"));
    assert_eq!(
        call(
            &api1,
            "PUT",
            "/actions",
            Some(r#"{"action_type":"InstanceStart"}"#)
        )
        .unwrap()
        .0,
        204
    );
    console_a.wait_for("READY", Duration::from_secs(20));
    assert_eq!(from_a.join().unwrap(), "ping-from-guest\n");
    assert_eq!(
        call(&api1, "PATCH", "/vm", Some(r#"{"state":"Paused"}"#))
            .unwrap()
            .0,
        204
    );
    let (st, r) = call(
        &api1,
        "PUT",
        "/snapshot/create",
        Some(&format!(
            r#"{{"snapshot_path":"{}","mem_file_path":"{}"}}"#,
            p("snap"),
            p("mem")
        )),
    )
    .unwrap();
    assert_eq!(st, 204, "{r}");
    let loops_a = vmm_loops(&d.join("firecracker.log"));
    assert_eq!(loops_a.len(), 3);
    // SIGKILL of an un-jailed VMM: its helper notices and removes the guest, loops, runtime dir.
    drop(guard_a);
    assert_loops_detached(&loops_a);
    eventually("helper and guest gone", Duration::from_secs(10), || {
        processes_mentioning(&format!("standin-helper-of {a_pid}")).is_empty()
            && processes_mentioning("marker-snap").is_empty()
    });
    eventually("runtime dir removed", Duration::from_secs(10), || {
        !Path::new(&format!("/run/firecracker-standin-{a_pid}")).exists()
    });

    // Clone: another namespace whose TAP has another name, another vsock socket.
    let ns2 = NetNs::new("snapb", 0);
    let st = Command::new("ip")
        .args(["-n", &ns2.name, "link", "set", "tap0", "name", "tapclone"])
        .status()
        .unwrap();
    assert!(st.success());
    let api2 = d.join("api2.sock");
    let mut b = Command::new("nsenter")
        .arg(format!("--net={}", ns2.path()))
        .arg("--")
        .arg(fc_bin())
        .arg("--api-sock")
        .arg(&api2)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut console_b = Console::new(b.stdout.take().unwrap());
    let mut guard_b = Proc(b);
    wait_socket(&api2, Duration::from_secs(10));
    let from_b = host_listener(&d.join("v2.sock_1025"));
    let body = format!(
        r#"{{"snapshot_path":"{}","mem_backend":{{"backend_type":"File","backend_path":"{}"}},"resume_vm":true,"network_overrides":[{{"iface_id":"eth0","host_dev_name":"tapclone"}}],"vsock_override":{{"uds_path":"{}"}},"clock_realtime":true}}"#,
        p("snap"),
        p("mem"),
        p("v2.sock")
    );
    let (st, r) = call(&api2, "PUT", "/snapshot/load", Some(&body)).unwrap();
    assert_eq!(st, 204, "{r}");
    let v: serde_json::Value =
        serde_json::from_str(&call(&api2, "GET", "/vm/config", None).unwrap().1).unwrap();
    assert_eq!(v["network-interfaces"][0]["host_dev_name"], "tapclone");
    assert_eq!(v["vsock"]["uds_path"], p("v2.sock"));
    // The guest's init runs again from the start (memory is not preserved).
    console_b.wait_for("ENV ", Duration::from_secs(20));
    console_b.wait_for("PING_OK", Duration::from_secs(20));
    assert_eq!(from_b.join().unwrap(), "ping-from-guest\n");
    console_b.wait_for("READY", Duration::from_secs(20));
    let (ok, reply) = host_connect(&d.join("v2.sock"), 1024, "clone");
    assert_eq!(
        (ok.as_str(), reply.as_str()),
        ("OK 1073741824\n", "hello-from-guest clone\n")
    );
    // Loading again into a booted VMM is refused.
    let (st, _) = call(&api2, "PUT", "/snapshot/load", Some(&body)).unwrap();
    assert_eq!(st, 400);
    assert_eq!(
        call(
            &api2,
            "PUT",
            "/actions",
            Some(r#"{"action_type":"SendCtrlAltDel"}"#)
        )
        .unwrap()
        .0,
        204
    );
    assert!(guard_b.0.wait().unwrap().success());
}

/// Sends 300 KiB to the guest's TCP 9002 from the host-side namespace; returns when the guest
/// has counted them on its console, with the elapsed seconds.
fn write_to_guest(ns: &NetNs, console: &mut Console) -> f64 {
    let path = ns.path();
    let t0 = std::time::Instant::now();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match std::net::TcpStream::connect(("10.0.0.2", 9002)) {
                Ok(s) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && std::time::Instant::now() < end =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("connect 10.0.0.2:9002: {e}"),
            }
        };
        s.write_all(&vec![7u8; 300 * 1024]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let line = console.wait_for("RX_BYTES", Duration::from_secs(30));
    writer.join().unwrap();
    assert_eq!(line.trim(), format!("RX_BYTES {}", 300 * 1024));
    t0.elapsed().as_secs_f64()
}

/// Connects from the namespace of the host-side TAP to the guest's TCP `port` and reads until
/// the guest closes; returns (bytes, seconds). The thread joins the namespace, the test process
/// stays where it was.
fn read_from_guest(ns: &NetNs, port: u16) -> (Vec<u8>, f64) {
    let path = ns.path();
    std::thread::spawn(move || {
        use std::io::Read;
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        // The guest re-arms its listener after each transfer; nothing on the host side tells
        // when, so retry a refused connection until a deadline.
        let end = std::time::Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match std::net::TcpStream::connect(("10.0.0.2", port)) {
                Ok(s) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && std::time::Instant::now() < end =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("connect 10.0.0.2:{port}: {e}"),
            }
        };
        let t0 = std::time::Instant::now();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        (buf, t0.elapsed().as_secs_f64())
    })
    .join()
    .unwrap()
}

#[test]
fn privileged_tx_rate_limiter_paces_guest_frames() {
    if skip_unless_root() {
        return;
    }
    let files = Files::new();
    let p = |f: &str| files.path(f);
    let mut secs = Vec::new();
    for (tag, limit) in [("rlfast", 12_500_000u64), ("rlslow", 100_000u64)] {
        let ns = NetNs::new(tag, 0);
        let api = files.dir.path().join(format!("{tag}.sock"));
        let _ = std::fs::remove_file(files.dir.path().join("v.sock"));
        let _ = std::fs::remove_file(files.dir.path().join("v.sock_1025"));
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", ns.path()))
            .arg("--")
            .arg(fc_bin())
            .arg("--api-sock")
            .arg(&api)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut console = Console::new(child.stdout.take().unwrap());
        let mut guard = Proc(child);
        wait_socket(&api, Duration::from_secs(10));
        configure_with_limit(&api, &p, "tap0", "marker-rl", limit);
        let from_guest = host_listener(&files.dir.path().join("v.sock_1025"));
        assert_eq!(
            call(
                &api,
                "PUT",
                "/actions",
                Some(r#"{"action_type":"InstanceStart"}"#)
            )
            .unwrap()
            .0,
            204
        );
        console.wait_for("READY", Duration::from_secs(20));
        let _ = from_guest.join();
        let (data, s) = read_from_guest(&ns, 9001);
        let n = data.len();
        assert_eq!(
            n,
            300 * 1024,
            "{tag}: all bytes arrive (got {n} in {s:.3}s)"
        );
        eprintln!("{tag}: 300 KiB guest->host in {s:.3}s with tx limit {limit} B/s");
        secs.push(s);
        let rx = write_to_guest(&ns, &mut console);
        eprintln!("{tag}: 300 KiB host->guest in {rx:.3}s with rx limit {limit} B/s");
        if limit > 1_000_000 {
            assert!(rx < 1.0, "unlimited rx took {rx:.3}s");
        } else {
            assert!((1.8..15.0).contains(&rx), "rx limiter: {rx:.3}s");
        }
        if limit > 1_000_000 {
            // Live update, as Firecracker allows after boot.
            let (st, r) = call(
                &api,
                "PATCH",
                "/network-interfaces/eth0",
                Some(r#"{"iface_id":"eth0","tx_rate_limiter":{"bandwidth":{"size":100000,"refill_time":1000}}}"#),
            )
            .unwrap();
            assert_eq!(st, 204, "{r}");
            let (data, s) = read_from_guest(&ns, 9001);
            assert_eq!(data.len(), 300 * 1024);
            eprintln!("{tag}: after PATCH to 100000 B/s: 300 KiB in {s:.3}s");
            assert!(s >= 1.8, "patched limiter not applied: {s:.3}s");
        }
        assert_eq!(
            call(
                &api,
                "PUT",
                "/actions",
                Some(r#"{"action_type":"SendCtrlAltDel"}"#)
            )
            .unwrap()
            .0,
            204
        );
        assert!(guard.0.wait().unwrap().success());
    }
    // 100 KB/s with a 100 KB bucket: the first 100 KB pass at once, the other ~207 KB (plus
    // TCP/IP headers) take about 2 s. Unlimited (12.5 MB/s) takes a fraction of that.
    assert!(secs[1] >= 1.8, "limited transfer took only {:.3}s", secs[1]);
    assert!(secs[1] < 15.0, "limited transfer took {:.3}s", secs[1]);
    assert!(secs[0] < 1.0, "unlimited transfer took {:.3}s", secs[0]);
}

/// States (`R`, `S`, `T`, …) of every process in the PID namespace of the guest init whose
/// command line carries `marker`.
fn guest_states(marker: &str) -> Vec<char> {
    let init = processes_mentioning(marker);
    let init_pid = init
        .iter()
        .filter_map(|p| p.split(':').next())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map(|s| {
                    s.lines()
                        .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1"))
                })
                .unwrap_or(false)
        })
        .expect("guest init")
        .to_owned();
    let ns = std::fs::read_link(format!("/proc/{init_pid}/ns/pid")).unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if std::fs::read_link(e.path().join("ns/pid")).ok().as_ref() != Some(&ns) {
            continue;
        }
        if let Ok(stat) = std::fs::read_to_string(e.path().join("stat"))
            && let Some(state) = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.trim_start().chars().next())
        {
            out.push(state);
        }
    }
    out
}
