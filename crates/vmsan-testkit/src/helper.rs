//! The stand-in's privileged helper.
//!
//! Real Firecracker needs no privilege after the jailer drops it: KVM does the guest. The
//! stand-in's guest is a process tree in fresh namespaces with loop devices and mounts, which
//! needs root. So the privileged steps run in a small helper process that keeps root:
//! `jailer-standin` forks it before the uid drop and chroot (and passes its socket to
//! `firecracker-standin` in `VMSAN_STANDIN_HELPER_FD`); an un-jailed `firecracker-standin`
//! starts it itself. The VMM talks to it over a `SOCK_SEQPACKET` socketpair: JSON messages,
//! file descriptors with `SCM_RIGHTS`. The helper never opens a path the VMM names: the VMM
//! opens drives and the initrd itself (as the jail uid) and passes the descriptors; the only
//! path it takes is the VMM's runtime directory, validated and resolved under the jail root.
//!
//! Process tree of a boot: helper → launcher (new mount, UTS, IPC, net and PID namespaces;
//! creates the guest TAPs, the tmpfs root with the unpacked initrd, the private `/dev`) →
//! guest init (PID 1 of the new PID namespace, chrooted). Each has `PR_SET_PDEATHSIG` =
//! SIGKILL towards its parent, and the helper tears everything down when the VMM's end of the
//! socket closes, so a SIGKILLed VMM leaves nothing behind.

use std::fs::{self, File};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::sys;

/// Environment variable naming the helper socket's fd in `firecracker-standin`.
pub const HELPER_FD_ENV: &str = "VMSAN_STANDIN_HELPER_FD";
/// Environment variable that turns a `firecracker-standin` process into the helper.
pub const ROLE_ENV: &str = "VMSAN_STANDIN_ROLE";
/// Prefix every runtime directory's name must carry.
pub const RUNTIME_PREFIX: &str = "firecracker-standin-";

/// One drive of a boot plan (its fd travels with the message, in plan order).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanDrive {
    /// Drive id (loop device label).
    pub drive_id: String,
    /// Attach read-only.
    pub read_only: bool,
}

/// One network interface of a boot plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanNet {
    /// Guest MAC, if configured.
    pub guest_mac: Option<[u8; 6]>,
}

/// What the VMM asks the helper to boot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootPlan {
    /// The VMM's runtime directory (VMM view; absolute).
    pub runtime_dir: String,
    /// Kernel command line.
    pub boot_args: String,
    /// Drives in guest order (`vda`, `vdb`, …).
    pub drives: Vec<PlanDrive>,
    /// Interfaces in guest order (`eth0`, …).
    pub nets: Vec<PlanNet>,
}

/// Requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HelperRequest {
    /// Boot (fds: stdout, initrd, drives…).
    Boot(BootPlan),
    /// Freeze the guest.
    Pause,
    /// Thaw the guest.
    Resume,
    /// SIGINT to the guest init.
    CtrlAltDel,
    /// SIGKILL the guest.
    Kill,
    /// Connect to the guest's `guest-<port>.sock` (created by guest root, so the jailed VMM's
    /// uid may not be allowed to) and return the connected socket.
    ConnectGuest {
        /// vsock port.
        port: u32,
    },
}

/// Replies and events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HelperMessage {
    /// Success (boot: fds are the guest TAPs).
    Ok {
        /// Host pid of the guest init, for a boot.
        guest_pid: Option<i32>,
        /// Loop device indices, for a boot.
        loops: Vec<u32>,
    },
    /// Failure.
    Err {
        /// Why.
        error: String,
    },
    /// The guest init exited.
    Exited {
        /// Wait status summary.
        status: String,
    },
}

/// Sends `msg` with `fds`.
pub fn send<T: Serialize>(sock: RawFd, msg: &T, fds: &[RawFd]) -> io::Result<()> {
    let data = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let iov = [IoSlice::new(&data)];
    let cmsgs = if fds.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    sendmsg::<()>(sock, &iov, &cmsgs, MsgFlags::empty(), None).map_err(io::Error::from)?;
    Ok(())
}

/// Receives one message and its fds; `None` on EOF.
pub fn recv<T: for<'de> Deserialize<'de>>(sock: RawFd) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; 32]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = loop {
            match recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
                Err(nix::errno::Errno::EINTR) => continue,
                // The peer died: same as an orderly close.
                Err(nix::errno::Errno::ECONNRESET) => return Ok(None),
                other => break other.map_err(io::Error::from)?,
            }
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(list) = c {
                for fd in list {
                    fds.push(sys::owned_fd(fd));
                }
            }
        }
        (msg.bytes, fds)
    };
    if n == 0 {
        return Ok(None);
    }
    let v = serde_json::from_slice(&buf[..n]).map_err(io::Error::other)?;
    Ok(Some((v, fds)))
}

/// A SEQPACKET socketpair (both ends close-on-exec).
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

/// Turns an inherited fd number (from [`HELPER_FD_ENV`]) into an owned, close-on-exec socket.
pub fn adopt_fd(n: RawFd) -> io::Result<OwnedFd> {
    sys::adopt_inherited_fd(n)
}

struct Guest {
    launcher: Pid,
    init: Pid,
    loops: Vec<sys::LoopDevice>,
    events: OwnedFd,
    runtime: PathBuf,
    /// The runtime's `vsock` directory (O_PATH). Guest sockets are reached through it as
    /// `/proc/self/fd/N/guest-P.sock`: their full host path runs through the jail under the
    /// vmsan home and can be longer than the 107 bytes a socket path may have.
    vsock_dir: OwnedFd,
}

impl Guest {
    /// Connect to the guest's listener for vsock `port`.
    fn connect(&self, port: u32) -> io::Result<std::os::unix::net::UnixStream> {
        std::os::unix::net::UnixStream::connect(format!(
            "/proc/self/fd/{}/guest-{port}.sock",
            self.vsock_dir.as_raw_fd()
        ))
    }
}

/// Open the runtime's `vsock` directory without following a symlink in its place.
fn open_vsock_dir(runtime: &Path) -> io::Result<OwnedFd> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode;
    let dir = runtime.join("vsock");
    open(
        &dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io::Error::other(format!("open {}: {e}", dir.display())))
}

/// Runs the helper loop on `sock` until the VMM closes it. `jail_root` is where the VMM's
/// paths resolve (`/` when not jailed). Must be called in a single-threaded process.
pub fn run(sock: OwnedFd, jail_root: &Path) -> io::Result<()> {
    let mut guest: Option<Guest> = None;
    let result = serve(&sock, jail_root, &mut guest);
    if let Some(g) = guest.take() {
        teardown(g);
    }
    match result {
        // The VMM went away mid-conversation (it exits right after the guest does).
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn serve(sock: &OwnedFd, jail_root: &Path, guest: &mut Option<Guest>) -> io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let ev_fd = guest.as_ref().map(|g| g.events.as_raw_fd());
        let (sock_ready, ev_ready) = {
            let mut fds = vec![PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
            if let Some(g) = guest.as_ref() {
                fds.push(PollFd::new(g.events.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            let s = fds[0].revents().map(|r| !r.is_empty()).unwrap_or(false);
            let e = fds
                .get(1)
                .and_then(|f| f.revents())
                .map(|r| !r.is_empty())
                .unwrap_or(false);
            (s, e)
        };
        if ev_ready {
            if let (Some(fd), Some(g)) = (ev_fd, guest.take()) {
                let _ = fd;
                let status = reap(g);
                send(sock.as_raw_fd(), &HelperMessage::Exited { status }, &[])?;
            }
            continue;
        }
        if !sock_ready {
            continue;
        }
        let Some((req, fds)) = recv::<HelperRequest>(sock.as_raw_fd())? else {
            return Ok(());
        };
        let reply = match req {
            HelperRequest::Boot(plan) => {
                if guest.is_some() {
                    HelperMessage::Err {
                        error: "a guest is already running".into(),
                    }
                } else {
                    match boot(&plan, fds, jail_root) {
                        Ok((g, taps)) => {
                            let msg = HelperMessage::Ok {
                                guest_pid: Some(g.init.as_raw()),
                                loops: g.loops.iter().map(|l| l.index).collect(),
                            };
                            let raw: Vec<RawFd> = taps.iter().map(|t| t.as_raw_fd()).collect();
                            send(sock.as_raw_fd(), &msg, &raw)?;
                            *guest = Some(g);
                            continue;
                        }
                        Err(e) => HelperMessage::Err {
                            error: e.to_string(),
                        },
                    }
                }
            }
            HelperRequest::Pause => signal_all(guest.as_ref(), Signal::SIGSTOP),
            HelperRequest::Resume => signal_all(guest.as_ref(), Signal::SIGCONT),
            HelperRequest::CtrlAltDel => match guest.as_ref() {
                Some(g) => match kill(g.init, Signal::SIGINT) {
                    Ok(()) => HelperMessage::Ok {
                        guest_pid: None,
                        loops: vec![],
                    },
                    Err(e) => HelperMessage::Err {
                        error: format!("SIGINT to guest init: {e}"),
                    },
                },
                None => HelperMessage::Err {
                    error: "no guest".into(),
                },
            },
            HelperRequest::ConnectGuest { port } => match guest.as_ref() {
                Some(g) => match g.connect(port) {
                    Ok(s) => {
                        send(
                            sock.as_raw_fd(),
                            &HelperMessage::Ok {
                                guest_pid: None,
                                loops: vec![],
                            },
                            &[s.as_raw_fd()],
                        )?;
                        continue;
                    }
                    Err(e) => HelperMessage::Err {
                        error: e.to_string(),
                    },
                },
                None => HelperMessage::Err {
                    error: "no guest".into(),
                },
            },
            HelperRequest::Kill => {
                if let Some(g) = guest.as_ref() {
                    let _ = kill(g.init, Signal::SIGKILL);
                }
                HelperMessage::Ok {
                    guest_pid: None,
                    loops: vec![],
                }
            }
        };
        send(sock.as_raw_fd(), &reply, &[])?;
    }
}

fn pidns_of(pid: i32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// Signals every process of the guest's PID namespace (rescanning until no new process
/// appears, so a fork racing with SIGSTOP is caught).
fn signal_all(guest: Option<&Guest>, sig: Signal) -> HelperMessage {
    let Some(g) = guest else {
        return HelperMessage::Err {
            error: "no guest".into(),
        };
    };
    let Some(ns) = pidns_of(g.init.as_raw()) else {
        return HelperMessage::Err {
            error: "guest init is gone".into(),
        };
    };
    let mut done = std::collections::BTreeSet::new();
    loop {
        let mut new = 0;
        if let Ok(rd) = fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if done.contains(&pid) {
                    continue;
                }
                if pidns_of(pid).as_ref() == Some(&ns) {
                    let _ = kill(Pid::from_raw(pid), sig);
                    done.insert(pid);
                    new += 1;
                }
            }
        }
        if new == 0 {
            break;
        }
    }
    // Pause is synchronous in Firecracker (the vCPUs are stopped when the API answers): wait
    // until every process has reached the stopped (or running again) state. There is no event
    // for another process's stop, so poll its state with a deadline.
    let want_stopped = sig == Signal::SIGSTOP;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for pid in &done {
        while let Some(state) = proc_state(*pid) {
            let stopped = state == 'T' || state == 't';
            if stopped == want_stopped || matches!(state, 'Z' | 'X') {
                break;
            }
            if std::time::Instant::now() > deadline {
                return HelperMessage::Err {
                    error: format!(
                        "guest process {pid} did not reach the requested state (state {state})"
                    ),
                };
            }
            std::thread::yield_now();
        }
    }
    HelperMessage::Ok {
        guest_pid: None,
        loops: vec![],
    }
}

fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

fn reap(g: Guest) -> String {
    let status = match nix::sys::wait::waitpid(g.launcher, None) {
        Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => format!("exited {code}"),
        Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => format!("killed by {s}"),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("wait: {e}"),
    };
    drop(g.loops);
    let _ = fs::remove_dir(g.runtime.join("root"));
    status
}

fn teardown(g: Guest) {
    let _ = kill(g.init, Signal::SIGKILL);
    let _ = kill(g.launcher, Signal::SIGKILL);
    let runtime = g.runtime.clone();
    let _ = reap(g);
    let _ = fs::remove_dir_all(runtime);
}

/// Resolves the VMM's runtime directory under `jail_root`, strictly.
pub fn resolve_runtime(jail_root: &Path, dir: &str) -> io::Result<PathBuf> {
    let p = Path::new(dir);
    if !p.is_absolute() {
        return Err(io::Error::other(format!(
            "runtime dir {dir:?} is not absolute"
        )));
    }
    let mut out = jail_root.to_path_buf();
    let mut last = None;
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => {
                out.push(n);
                last = n.to_str();
            }
            _ => {
                return Err(io::Error::other(format!(
                    "runtime dir {dir:?} has a forbidden component"
                )));
            }
        }
    }
    if !last.is_some_and(|l| l.starts_with(RUNTIME_PREFIX)) {
        return Err(io::Error::other(format!(
            "runtime dir {dir:?} must be named {RUNTIME_PREFIX}*"
        )));
    }
    let meta = out.symlink_metadata()?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "runtime dir {} is not a directory",
            out.display()
        )));
    }
    Ok(out)
}

fn boot(plan: &BootPlan, fds: Vec<OwnedFd>, jail_root: &Path) -> io::Result<(Guest, Vec<OwnedFd>)> {
    let runtime = resolve_runtime(jail_root, &plan.runtime_dir)?;
    let mut fds = fds.into_iter();
    let stdout = fds
        .next()
        .ok_or_else(|| io::Error::other("boot: missing stdout fd"))?;
    let initrd = File::from(
        fds.next()
            .ok_or_else(|| io::Error::other("boot: missing initrd fd"))?,
    );
    let drive_files: Vec<File> = fds.map(File::from).collect();
    if drive_files.len() != plan.drives.len() {
        return Err(io::Error::other(format!(
            "boot: {} drive fds for {} drives",
            drive_files.len(),
            plan.drives.len()
        )));
    }
    // Safety on machines whose own disk is /dev/vda: only regular files become guest drives.
    for (d, f) in plan.drives.iter().zip(&drive_files) {
        if !f.metadata()?.file_type().is_file() {
            return Err(io::Error::other(format!(
                "drive {}: backing is not a regular file (the stand-in never hands a host device to a guest)",
                d.drive_id
            )));
        }
    }
    let mut loops = Vec::new();
    for (d, f) in plan.drives.iter().zip(&drive_files) {
        let l = sys::loop_attach(f, d.read_only, &format!("standin-{}", d.drive_id))
            .map_err(|e| io::Error::other(format!("drive {}: {e}", d.drive_id)))?;
        loops.push(l);
    }
    drop(drive_files);
    let (ours, theirs) = pair()?;
    if sys::thread_count() != 1 {
        return Err(io::Error::other("helper is not single-threaded"));
    }
    let parent = nix::unistd::getpid();
    match sys::fork()? {
        sys::Forked::Child => {
            drop(ours);
            let code = match launcher(plan, &runtime, &loops, &theirs, &stdout, &initrd, parent) {
                Ok(code) => code,
                Err(e) => {
                    let _ = send(
                        theirs.as_raw_fd(),
                        &HelperMessage::Err {
                            error: e.to_string(),
                        },
                        &[],
                    );
                    127
                }
            };
            std::process::exit(code);
        }
        sys::Forked::Parent(child) => {
            drop(theirs);
            // (Opened after the fork: the guest's launcher has no use for it.)
            let vsock_dir = open_vsock_dir(&runtime)?;
            let reply = recv::<HelperMessage>(ours.as_raw_fd())?;
            match reply {
                Some((HelperMessage::Ok { guest_pid, .. }, taps)) => {
                    let init = Pid::from_raw(guest_pid.unwrap_or(0));
                    Ok((
                        Guest {
                            launcher: child,
                            init,
                            loops,
                            events: ours,
                            runtime,
                            vsock_dir,
                        },
                        taps,
                    ))
                }
                Some((HelperMessage::Err { error }, _)) => {
                    let _ = nix::sys::wait::waitpid(child, None);
                    Err(io::Error::other(error))
                }
                _ => {
                    let _ = nix::sys::wait::waitpid(child, None);
                    Err(io::Error::other("guest launcher died during set-up"))
                }
            }
        }
    }
}

fn die_with_parent(parent: Pid) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
    if nix::unistd::getppid() != parent {
        return Err(io::Error::other("parent exited during set-up"));
    }
    Ok(())
}

fn mount_err(what: &str, e: nix::errno::Errno) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

/// In the launcher child: new namespaces, TAPs, root, /dev, then fork the guest init.
fn launcher(
    plan: &BootPlan,
    runtime: &Path,
    loops: &[sys::LoopDevice],
    sock: &OwnedFd,
    stdout: &OwnedFd,
    initrd: &File,
    parent: Pid,
) -> io::Result<i32> {
    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, unshare};
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};

    die_with_parent(parent)?;
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWPID,
    )
    .map_err(|e| mount_err("unshare guest namespaces", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| mount_err("make / private", e))?;

    let mut taps = Vec::new();
    for (i, n) in plan.nets.iter().enumerate() {
        let name = format!("eth{i}");
        let tap = sys::tap_open(Path::new("/dev/net/tun"), &name)
            .map_err(|e| io::Error::other(format!("guest TAP {name}: {e}")))?;
        if let Some(mac) = n.guest_mac {
            sys::set_mac(&name, mac)?;
        }
        taps.push(tap);
    }

    let root = runtime.join("root");
    match fs::create_dir(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io::Error::other(format!("mkdir {}: {e}", root.display()))),
    }
    mount(
        Some("tmpfs"),
        &root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )
    .map_err(|e| mount_err("mount guest root tmpfs", e))?;
    crate::cpio::unpack(initrd, &root)?;

    let vsock = root.join(".vsock");
    fs::create_dir_all(&vsock)?;
    mount(
        Some(&runtime.join("vsock")),
        &vsock,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| mount_err("bind the vsock directory", e))?;

    let dev = root.join("dev");
    fs::create_dir_all(&dev)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=0755,size=1m"),
    )
    .map_err(|e| mount_err("mount guest /dev tmpfs", e))?;
    let chr = |name: &str, major: u64, minor: u64, perm: u32| -> io::Result<()> {
        mknod(
            &dev.join(name),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(perm),
            makedev(major, minor),
        )
        .map_err(|e| mount_err(&format!("mknod /dev/{name}"), e))?;
        fs::set_permissions(dev.join(name), fs::Permissions::from_mode(perm))
    };
    chr("null", 1, 3, 0o666)?;
    chr("zero", 1, 5, 0o666)?;
    chr("full", 1, 7, 0o666)?;
    chr("random", 1, 8, 0o666)?;
    chr("urandom", 1, 9, 0o666)?;
    chr("tty", 5, 0, 0o666)?;
    chr("ptmx", 5, 2, 0o666)?;
    // The console is where the init's output goes (the VMM's stdout): never a host device node.
    std::os::unix::fs::symlink("/proc/1/fd/1", dev.join("console"))?;
    fs::create_dir(dev.join("pts"))?;
    fs::create_dir(dev.join("shm"))?;
    for (i, l) in loops.iter().enumerate() {
        let name = format!("vd{}", drive_letter(i));
        let mode = if plan.drives[i].read_only {
            0o440
        } else {
            0o660
        };
        mknod(
            &dev.join(&name),
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(mode),
            makedev(u64::from(l.major), u64::from(l.minor)),
        )
        .map_err(|e| mount_err(&format!("mknod /dev/{name}"), e))?;
    }

    let args = crate::cmdline::split(&plan.boot_args);
    let mut env = args.env.clone();
    env.push("VMSAN_STANDIN_VSOCK_DIR=/.vsock".to_owned());
    let init_c = sys::cstring(&args.init)?;
    let argv_c = args
        .argv
        .iter()
        .map(|a| sys::cstring(a))
        .collect::<io::Result<Vec<_>>>()?;
    let env_c = env
        .iter()
        .map(|a| sys::cstring(a))
        .collect::<io::Result<Vec<_>>>()?;
    let root_c = root.clone();
    let devnull = File::open("/dev/null")?;
    match sys::fork()? {
        sys::Forked::Child => {
            // The guest init, PID 1 of the new namespace.
            let err = (|| -> io::Result<()> {
                // getppid() is 0 here (the parent is outside the new PID namespace), so only
                // the death signal is set; the launcher blocks in waitpid for us meanwhile.
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
                nix::unistd::setsid().map_err(io::Error::from)?;
                sys::reset_signals()?;
                sys::drop_guest_caps()?;
                nix::unistd::chroot(&root_c).map_err(|e| mount_err("chroot", e))?;
                nix::unistd::chdir("/").map_err(|e| mount_err("chdir /", e))?;
                let _ = nix::unistd::sethostname("standin");
                nix::unistd::dup2_stdin(&devnull).map_err(io::Error::from)?;
                nix::unistd::dup2_stdout(stdout).map_err(io::Error::from)?;
                nix::unistd::dup2_stderr(stdout).map_err(io::Error::from)?;
                let e = nix::unistd::execve(&init_c, &argv_c, &env_c);
                Err(io::Error::other(format!("exec {}: {e:?}", args.init)))
            })();
            if let Err(e) = err {
                eprintln!("firecracker-standin: guest init: {e}");
            }
            std::process::exit(127);
        }
        sys::Forked::Parent(init) => {
            // Host pid of the init: our pid namespace is the helper's (only children moved).
            let raw: Vec<RawFd> = taps.iter().map(|t| t.as_raw_fd()).collect();
            send(
                sock.as_raw_fd(),
                &HelperMessage::Ok {
                    guest_pid: Some(init.as_raw()),
                    loops: vec![],
                },
                &raw,
            )?;
            drop(taps);
            let code = loop {
                match nix::sys::wait::waitpid(init, None) {
                    Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => break c,
                    Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
                    Ok(_) => continue,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            Ok(code)
        }
    }
}

/// `a`, `b`, … `z`, `aa`, … as Linux names virtio disks.
pub fn drive_letter(i: usize) -> String {
    let mut n = i + 1;
    let mut s = Vec::new();
    while n > 0 {
        n -= 1;
        s.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_letters() {
        assert_eq!(drive_letter(0), "a");
        assert_eq!(drive_letter(2), "c");
        assert_eq!(drive_letter(25), "z");
        assert_eq!(drive_letter(26), "aa");
    }

    #[test]
    fn runtime_dir_validation() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("firecracker-standin-1")).unwrap();
        assert!(resolve_runtime(d.path(), "/firecracker-standin-1").is_ok());
        assert!(resolve_runtime(d.path(), "firecracker-standin-1").is_err());
        assert!(resolve_runtime(d.path(), "/../firecracker-standin-1").is_err());
        assert!(resolve_runtime(d.path(), "/etc").is_err());
    }
}
