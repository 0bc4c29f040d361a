//! Init mode: the agent as PID 1 (docs/guest-abi.md).
//!
//! PID 1 mounts the basics, reads the config drive, builds the overlay root, switches into it,
//! configures the network, then forks once: the child serves the host (and reaps only its own
//! children, through tokio), while PID 1 stays a small loop that reaps orphans, restarts a
//! crashed server, and runs the shutdown sequence.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MsFlags, mount};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use vmsan_proto::{AGENT_API_PORT, FsType, GuestConfig, InitMode, boot_env};

use crate::listen::{Announce, Listener};
use crate::netlink::{Netlink, parse_cidr};
use crate::server::{Agent, AgentOptions};

/// Drive paths handed over by the kernel command line (as environment variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Drives {
    pub(crate) rootfs: String,
    pub(crate) rootfs_fs: FsType,
    pub(crate) overlay: String,
    pub(crate) config: String,
}

fn valid_dev_path(p: &str) -> bool {
    p.starts_with("/dev/")
        && p.len() < 256
        && !p.split('/').any(|c| c == ".." || c == ".")
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
}

impl Drives {
    /// Read the four variables; never guess a missing one.
    pub(crate) fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let need = |k: &str| {
            let v = get(k).ok_or_else(|| {
                format!("{k} is not set (kernel command line): refusing to boot without knowing which drive it is")
            })?;
            Ok::<String, String>(v)
        };
        let d = Self {
            rootfs: need(boot_env::ROOTFS)?,
            rootfs_fs: need(boot_env::ROOTFS_FS)?
                .parse()
                .map_err(|e| format!("{}={e}", boot_env::ROOTFS_FS))?,
            overlay: need(boot_env::OVERLAY)?,
            config: need(boot_env::CONFIG)?,
        };
        for (k, v) in [
            (boot_env::ROOTFS, &d.rootfs),
            (boot_env::OVERLAY, &d.overlay),
            (boot_env::CONFIG, &d.config),
        ] {
            if !valid_dev_path(v) {
                return Err(format!("{k}={v:?} is not a path under /dev"));
            }
        }
        Ok(d)
    }
}

enum BootListener {
    Unix(std::os::unix::net::UnixListener),
    Vsock,
}

struct Booted {
    cfg: GuestConfig,
    listener: BootListener,
    announce_host: Option<PathBuf>,
    /// Keeps the stand-in's vsock directory reachable after the root switch.
    _vsock_dir: Option<OwnedFd>,
}

/// Entry point of init mode. PID 1 must not exit: on a fatal error it reports and powers off.
pub(crate) fn run() -> ExitCode {
    match boot() {
        Ok(b) => supervise(b),
        Err(e) => {
            eprintln!("vmsan-agent: boot failed: {e}");
            power_off();
        }
    }
}

fn mnt(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mount(Some(src), target, Some(fstype), flags, data)
        .map_err(|e| format!("mount {fstype} {src} on {target}: {e}"))
}

fn mkdir(p: &str) -> Result<(), String> {
    std::fs::create_dir_all(p).map_err(|e| format!("create {p}: {e}"))
}

/// Where the guest's `/dev` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DevSource {
    /// A real kernel: mount devtmpfs on `/dev` whatever is already there. Every real kernel
    /// unpacks its built-in initramfs (which holds `/dev/console`) before ours, so `/dev` is never
    /// empty at this point and its contents say nothing about the drives.
    Devtmpfs,
    /// The stand-in: it prepared `/dev` with the VM's own nodes only. Mounting devtmpfs there
    /// would hand the guest the host's devices (its root disk among them).
    Prepared,
}

/// The stand-in announces itself with `VMSAN_STANDIN_VSOCK_DIR`; anything else is a real kernel.
/// (The host never lets a user's kernel arguments set that variable.)
pub(crate) fn dev_source(standin_vsock_dir: Option<&std::ffi::OsStr>) -> DevSource {
    match standin_vsock_dir {
        Some(_) => DevSource::Prepared,
        None => DevSource::Devtmpfs,
    }
}

fn mount_early(dev: DevSource) -> Result<(), String> {
    for d in ["/proc", "/sys", "/run", "/dev", "/newroot"] {
        mkdir(d)?;
    }
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt("proc", "/proc", "proc", nse, None)?;
    mnt("sysfs", "/sys", "sysfs", nse, None)?;
    mnt(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    if dev == DevSource::Devtmpfs {
        mnt(
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        )?;
    }
    mkdir("/dev/pts")?;
    mnt(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    if std::fs::symlink_metadata("/dev/ptmx").is_err() {
        std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx")
            .map_err(|e| format!("link /dev/ptmx: {e}"))?;
    }
    mkdir("/dev/shm")?;
    mnt(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    Ok(())
}

fn read_config(dev: &str) -> Result<GuestConfig, String> {
    let mut f = std::fs::File::open(dev).map_err(|e| format!("open config drive {dev}: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while buf.len() < (1 << 20) {
        let n = f
            .read(&mut chunk)
            .map_err(|e| format!("read config drive {dev}: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if chunk[..n].contains(&0) {
            break;
        }
    }
    GuestConfig::from_drive_bytes(&buf)
}

fn mount_root(d: &Drives) -> Result<(), String> {
    mkdir("/.vmsan/lower")?;
    mkdir("/.vmsan/disk")?;
    mnt(
        &d.rootfs,
        "/.vmsan/lower",
        d.rootfs_fs.as_str(),
        MsFlags::MS_RDONLY,
        None,
    )?;
    mnt(
        &d.overlay,
        "/.vmsan/disk",
        "ext4",
        MsFlags::MS_NOATIME,
        None,
    )?;
    mkdir("/.vmsan/disk/upper")?;
    mkdir("/.vmsan/disk/work")?;
    mnt(
        "overlay",
        "/newroot",
        "overlay",
        MsFlags::empty(),
        Some("lowerdir=/.vmsan/lower,upperdir=/.vmsan/disk/upper,workdir=/.vmsan/disk/work"),
    )
}

fn switch_root() -> Result<(), String> {
    for d in ["/dev", "/proc", "/sys", "/run"] {
        let target = format!("/newroot{d}");
        mkdir(&target)?;
        match mount(
            Some(d),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        ) {
            Ok(()) => {}
            // Not a mount point (a /dev directory prepared by whoever started us): bind it.
            Err(Errno::EINVAL) => {
                let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
                mount(Some(d), target.as_str(), None::<&str>, flags, None::<&str>)
                    .map_err(|e| format!("bind {d} into the new root: {e}"))?;
            }
            Err(e) => return Err(format!("move {d} into the new root: {e}")),
        }
    }
    std::env::set_current_dir("/newroot").map_err(|e| format!("chdir /newroot: {e}"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("move the new root onto /: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot into the new root: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

pub(crate) fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Replace a file in the guest (a symlink there is replaced, not followed).
pub(crate) fn write_etc(path: &str, content: &str) -> Result<(), String> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        std::fs::remove_file(path).map_err(|e| format!("replace {path}: {e}"))?;
    }
    std::fs::write(path, content).map_err(|e| format!("write {path}: {e}"))
}

/// Bring `eth0` up with the network's address and default route (and its MAC, when the VMM
/// did not set it: a restored clone's). Returns the address.
pub(crate) fn configure_eth0(
    nl: &mut Netlink,
    net: &vmsan_proto::GuestNetwork,
    set_mac: bool,
) -> Result<std::net::Ipv4Addr, String> {
    let (addr, prefix) = parse_cidr(&net.address)?;
    let gw: std::net::Ipv4Addr = net
        .gateway
        .parse()
        .map_err(|e| format!("gateway {:?}: {e}", net.gateway))?;
    let eth0 = nix::net::if_::if_nametoindex("eth0").map_err(|e| format!("find eth0: {e}"))?;
    if set_mac && let Some(mac) = &net.mac {
        nl.set_mac(eth0, crate::netlink::parse_mac(mac)?)
            .map_err(|e| format!("set eth0's MAC to {mac}: {e}"))?;
    }
    nl.link_up(eth0, net.mtu)
        .map_err(|e| format!("bring eth0 up: {e}"))?;
    nl.add_address(eth0, addr, prefix)
        .map_err(|e| format!("add {} to eth0: {e}", net.address))?;
    nl.default_route(eth0, gw)
        .map_err(|e| format!("default route via {gw}: {e}"))?;
    Ok(addr)
}

fn configure(cfg: &GuestConfig) -> Result<(), String> {
    mkdir("/tmp")?;
    mnt(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    mkdir("/etc")?;
    if !valid_hostname(&cfg.hostname) {
        return Err(format!("invalid hostname {:?}", cfg.hostname));
    }
    nix::unistd::sethostname(&cfg.hostname).map_err(|e| format!("sethostname: {e}"))?;
    write_etc("/etc/hostname", &format!("{}\n", cfg.hostname))?;
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let mut nl = Netlink::open().map_err(|e| format!("open rtnetlink: {e}"))?;
    let lo = nix::net::if_::if_nametoindex("lo").map_err(|e| format!("find lo: {e}"))?;
    nl.link_up(lo, None)
        .map_err(|e| format!("bring lo up: {e}"))?;
    if let Some(net) = &cfg.network {
        // The VMM gave eth0 its MAC.
        let addr = configure_eth0(&mut nl, net, false)?;
        hosts.push_str(&format!("{addr}\t{}\n", cfg.hostname));
        let mut resolv = String::new();
        for d in &net.dns {
            let ip: std::net::IpAddr = d.parse().map_err(|e| format!("DNS server {d:?}: {e}"))?;
            resolv.push_str(&format!("nameserver {ip}\n"));
        }
        if !resolv.is_empty() {
            write_etc("/etc/resolv.conf", &resolv)?;
        }
    } else {
        hosts.push_str(&format!("127.0.1.1\t{}\n", cfg.hostname));
    }
    write_etc("/etc/hosts", &hosts)?;
    seed_entropy(cfg);
    Ok(())
}

/// Mix per-VM material into the kernel pool (not credited: the kernel's own sources and
/// VMGENID stay in charge of the entropy estimate).
fn seed_entropy(cfg: &GuestConfig) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/urandom") {
        let _ = f.write_all(format!("{}{}{now}", cfg.vm_id, cfg.token).as_bytes());
    }
}

fn boot() -> Result<Booted, String> {
    mount_early(dev_source(
        std::env::var_os(boot_env::STANDIN_VSOCK_DIR).as_deref(),
    ))?;
    let drives = Drives::from_env(|k| std::env::var(k).ok())?;
    let (listener, announce_host, vsock_dir) = match std::env::var(boot_env::STANDIN_VSOCK_DIR) {
        Ok(dir) => {
            let dfd = nix::fcntl::open(
                dir.as_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| format!("open stand-in vsock directory {dir}: {e}"))?;
            let sock = format!("{dir}/guest-{AGENT_API_PORT}.sock");
            let _ = std::fs::remove_file(&sock);
            let l = std::os::unix::net::UnixListener::bind(&sock)
                .map_err(|e| format!("bind {sock}: {e}"))?;
            let host = PathBuf::from(format!("/proc/self/fd/{}/host.sock", dfd.as_raw_fd()));
            (BootListener::Unix(l), Some(host), Some(dfd))
        }
        Err(_) => (BootListener::Vsock, None, None),
    };
    let cfg = read_config(&drives.config)?;
    mount_root(&drives)?;
    switch_root()?;
    if let Err(e) = configure(&cfg) {
        // The host can still reach the agent and look; a half-configured guest is easier to
        // debug than one that powered off.
        eprintln!("vmsan-agent: configuring the guest: {e}");
    }
    Ok(Booted {
        cfg,
        listener,
        announce_host,
        _vsock_dir: vsock_dir,
    })
}

fn agent_options(cfg: &GuestConfig) -> AgentOptions {
    let mut env = BTreeMap::new();
    for kv in &cfg.image.env {
        if let Some((k, v)) = kv.split_once('=') {
            env.insert(k.to_owned(), v.to_owned());
        }
    }
    for (k, v) in &cfg.env {
        env.insert(k.clone(), v.clone());
    }
    AgentOptions {
        token: cfg.token.clone(),
        mode: match cfg.init {
            InitMode::Agent => "init",
            InitMode::Image => "image",
        },
        default_user: cfg.default_user.clone().or_else(|| cfg.image.user.clone()),
        default_env: env,
        default_cwd: cfg.image.working_dir.clone(),
        network: cfg.network.clone(),
    }
}

/// The server process (PID 1's child). Returns its exit code: 0 = shutdown requested.
fn server_main(b: &Booted) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vmsan-agent: start runtime: {e}");
            return 1;
        }
    };
    let agent = Agent::new(agent_options(&b.cfg));
    let image_mode = b.cfg.init == InitMode::Image;
    let res = rt.block_on(async {
        let listener = match &b.listener {
            BootListener::Unix(l) => {
                let l = l.try_clone().map_err(|e| format!("clone listener: {e}"))?;
                l.set_nonblocking(true)
                    .map_err(|e| format!("listener: {e}"))?;
                Listener::Unix(
                    tokio::net::UnixListener::from_std(l).map_err(|e| format!("listener: {e}"))?,
                )
            }
            BootListener::Vsock => Listener::vsock()
                .map_err(|e| format!("listen on vsock port {AGENT_API_PORT}: {e}"))?,
        };
        let announce = match &b.announce_host {
            Some(p) => Announce::Standin(p.clone()),
            None => Announce::Vsock,
        };
        crate::listen::serve(
            Arc::clone(&agent),
            listener,
            announce,
            &b.cfg.vm_id,
            Duration::from_secs(2),
        )
        .await
    });
    if let Err(e) = res {
        eprintln!("vmsan-agent: {e}");
        return 1;
    }
    if image_mode {
        nix::unistd::sync();
        // PID 1 is the image's init: ask it to power off.
        let systemd = std::fs::read_link("/proc/1/exe")
            .map(|p| p.to_string_lossy().contains("systemd"))
            .unwrap_or(false);
        let sig = if systemd {
            crate::sys::sigrtmin_plus(4)
        } else {
            Signal::SIGTERM as i32
        };
        let _ = crate::sys::kill_raw(1, sig);
    }
    0
}

fn signal_mask() -> SigSet {
    let mut m = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGALRM,
    ] {
        m.add(s);
    }
    m
}

fn spawn_server(b: &Booted) -> Result<Pid, String> {
    match crate::sys::fork_single_threaded().map_err(|e| format!("fork the server: {e}"))? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            let _ = signal_mask().thread_unblock();
            std::process::exit(server_main(b));
        }
    }
}

/// The image's init for `--init image`.
fn image_init(cfg: &GuestConfig) -> Option<Vec<String>> {
    if Path::new("/sbin/init").exists() {
        return Some(vec!["/sbin/init".into()]);
    }
    let argv: Vec<String> = cfg
        .image
        .entrypoint
        .iter()
        .chain(&cfg.image.cmd)
        .cloned()
        .collect();
    (!argv.is_empty()).then_some(argv)
}

fn supervise(b: Booted) -> ExitCode {
    let mask = signal_mask();
    if let Err(e) = mask.thread_block() {
        eprintln!("vmsan-agent: block signals: {e}");
    }
    let _ = nix::sys::reboot::set_cad_enabled(false);
    if b.cfg.init == InitMode::Image
        && let Some(argv) = image_init(&b.cfg)
    {
        match crate::sys::fork_single_threaded() {
            Ok(ForkResult::Child) => {
                let _ = nix::unistd::setsid();
                let _ = mask.thread_unblock();
                std::process::exit(server_main(&b));
            }
            Ok(ForkResult::Parent { .. }) => {
                let _ = mask.thread_unblock();
                let cargs: Vec<CString> = argv
                    .iter()
                    .filter_map(|a| CString::new(a.as_str()).ok())
                    .collect();
                if let Some(prog) = cargs.first() {
                    let e = nix::unistd::execv(prog, &cargs);
                    eprintln!("vmsan-agent: exec image init {argv:?}: {e:?}; staying init");
                }
                let _ = mask.thread_block();
            }
            Err(e) => eprintln!("vmsan-agent: fork: {e}"),
        }
    }
    let mut server = match spawn_server(&b) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vmsan-agent: {e}");
            shutdown(&mask);
        }
    };
    let mut restarts = 0u32;
    let mut stopping = false;
    loop {
        let sig = match mask.wait() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("vmsan-agent: sigwait: {e}");
                continue;
            }
        };
        match sig {
            Signal::SIGCHLD => loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(st) if st.pid() == Some(server) => {
                        let clean = matches!(st, WaitStatus::Exited(_, 0));
                        if clean || stopping || restarts >= 10 {
                            shutdown(&mask);
                        }
                        restarts += 1;
                        eprintln!("vmsan-agent: server ended ({st:?}); restarting");
                        server = match spawn_server(&b) {
                            Ok(p) => p,
                            Err(e) => {
                                eprintln!("vmsan-agent: {e}");
                                shutdown(&mask);
                            }
                        };
                    }
                    Ok(_) => {}
                }
            },
            Signal::SIGTERM | Signal::SIGINT => {
                stopping = true;
                let _ = kill(server, Signal::SIGTERM);
                nix::unistd::alarm::set(5);
            }
            Signal::SIGALRM if stopping => {
                let _ = kill(server, Signal::SIGKILL);
            }
            _ => {}
        }
    }
}

/// Kill everything, sync, make the root read-only, power off.
fn shutdown(mask: &SigSet) -> ! {
    eprintln!("vmsan-agent: shutting down");
    let everyone = Pid::from_raw(-1);
    // ESRCH: nothing else is running; no SIGCHLD will come, so skip the grace period.
    let others = kill(everyone, Signal::SIGTERM).is_ok();
    nix::unistd::alarm::set(3);
    'grace: loop {
        if !others {
            break;
        }
        // Children that ended before the signal: a SIGCHLD may already have been consumed.
        match waitpid(everyone, Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => break,
            Ok(WaitStatus::StillAlive) => {}
            _ => continue,
        }
        match mask.wait() {
            Ok(Signal::SIGCHLD) => loop {
                match waitpid(everyone, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => break,
                    Err(Errno::ECHILD) => break 'grace,
                    Err(_) => break,
                    Ok(_) => {}
                }
            },
            Ok(Signal::SIGALRM) => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = kill(everyone, Signal::SIGKILL);
    while !matches!(waitpid(everyone, None), Err(Errno::ECHILD)) {}
    nix::unistd::sync();
    let _ = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    );
    nix::unistd::sync();
    power_off()
}

fn power_off() -> ! {
    nix::unistd::sync();
    let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    eprintln!("vmsan-agent: reboot: {e}");
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn drives_come_from_the_environment_and_are_never_guessed() {
        let ok = [
            ("vmsan_rootfs", "/dev/vda"),
            ("vmsan_rootfs_fs", "squashfs"),
            ("vmsan_overlay", "/dev/vdb"),
            ("vmsan_config", "/dev/vdc"),
        ];
        let d = Drives::from_env(env(&ok)).unwrap();
        assert_eq!(d.overlay, "/dev/vdb");
        let e = Drives::from_env(env(&ok[..3])).unwrap_err();
        assert!(e.contains("vmsan_config"), "{e}");
        let mut bad = ok;
        bad[0].1 = "/dev/../etc/passwd";
        assert!(Drives::from_env(env(&bad)).is_err());
        let mut bad = ok;
        bad[1].1 = "xfs";
        assert!(Drives::from_env(env(&bad)).is_err());
    }

    #[test]
    fn devtmpfs_is_mounted_in_a_real_guest_and_never_under_the_stand_in() {
        // A real kernel: /dev already holds the built-in initramfs's console; mount anyway.
        assert_eq!(dev_source(None), DevSource::Devtmpfs);
        // The stand-in, whatever directory it names (even an empty value).
        assert_eq!(
            dev_source(Some(std::ffi::OsStr::new("/.vsock"))),
            DevSource::Prepared
        );
        assert_eq!(
            dev_source(Some(std::ffi::OsStr::new(""))),
            DevSource::Prepared
        );
    }

    #[test]
    fn hostnames_are_validated() {
        assert!(valid_hostname("vm-1.example"));
        assert!(!valid_hostname("-x"));
        assert!(!valid_hostname("a b"));
        assert!(!valid_hostname(""));
    }
}
