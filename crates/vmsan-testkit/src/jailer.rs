//! `jailer-standin`: the jailer's command line, checks and jail layout, then exec of the VMM.
//!
//! Same steps and order as Firecracker's jailer (`docs/jailer.md`): validate, create
//! `<chroot-base>/<exec name>/<id>/root`, copy the exec file in, join `--netns`, set resource
//! limits, create and join the cgroups (`<controller mount>/<parent>/<id>` on v1,
//! `<unified mount>/<parent>/<id>` on v2; `<parent>` defaults to the exec file's name), pivot
//! into the jail, create `dev/net/tun`, `dev/kvm`, `dev/urandom` (and `dev/userfaultfd`) owned by
//! the jail uid, daemonize, optionally clone into a new PID namespace writing
//! `<exec name>.pid`, and exec the VMM as uid/gid with `--id` and the timing arguments.
//!
//! One addition, invisible to the caller: before pivoting, it forks the stand-in's privileged
//! helper (see [`crate::helper`]) and passes its socket to the VMM in
//! `VMSAN_STANDIN_HELPER_FD`.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::unistd::{Gid, Uid, chown};

use crate::api::validate_instance_id;
use crate::args::{self, Spec};
use crate::helper;
use crate::sys;

/// Version the stand-in jailer reports.
pub const JAILER_VERSION: &str = "1.16.1";

const SPECS: &[Spec] = &[
    args::required("id"),
    args::required("exec-file"),
    args::required("uid"),
    args::required("gid"),
    args::value("chroot-base-dir"),
    args::value("netns"),
    args::flag("daemonize"),
    args::flag("new-pid-ns"),
    args::multiple("cgroup"),
    args::multiple("resource-limit"),
    args::value("cgroup-version"),
    args::value("parent-cgroup"),
    args::flag("version"),
];

/// Runs the jailer; returns the exit code (only on failure: success execs the VMM).
pub fn main(argv: &[String]) -> i32 {
    match run(argv) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// A cgroup the jail uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    /// Directory.
    pub path: PathBuf,
    /// `file=value` settings.
    pub settings: Vec<(String, String)>,
    /// v1 controller name (for cpuset inheritance); empty on v2.
    pub controller: String,
}

/// Parsed and validated jailer arguments.
#[derive(Debug, Clone)]
pub struct JailConfig {
    /// Instance id.
    pub id: String,
    /// Exec file (canonical).
    pub exec_file: PathBuf,
    /// Its file name.
    pub exec_name: String,
    /// `<base>/<exec name>/<id>/root`.
    pub chroot_dir: PathBuf,
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// netns path.
    pub netns: Option<String>,
    /// daemonize.
    pub daemonize: bool,
    /// new pid ns.
    pub new_pid_ns: bool,
    /// cgroup dirs.
    pub cgroups: Vec<CgroupDir>,
    /// rlimits.
    pub rlimits: Vec<(nix::sys::resource::Resource, u64)>,
    /// Args after `--`.
    pub extra: Vec<String>,
}

fn find_cgroup_mount(version: u8, controller: &str) -> Result<PathBuf, String> {
    let mounts = fs::read_to_string("/proc/mounts")
        .map_err(|e| format!("Failed to read file /proc/mounts into a string: {e}"))?;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        if f.len() < 4 {
            continue;
        }
        if version == 2 && f[2] == "cgroup2" {
            return Ok(PathBuf::from(f[1]));
        }
        if version == 1 && f[2] == "cgroup" && f[3].split(',').any(|o| o == controller) {
            return Ok(PathBuf::from(f[1]));
        }
    }
    if version == 2 {
        Err("Hierarchy not found: cgroup2".to_owned())
    } else {
        Err(format!("Controller {controller} is unavailable"))
    }
}

/// Parses and validates the command line (no side effects).
pub fn parse(argv: &[String]) -> Result<Option<JailConfig>, String> {
    let p = args::parse(SPECS, argv).map_err(|e| format!("Failed to parse arguments: {e}"))?;
    if p.flag("help") {
        println!("Jailer v{JAILER_VERSION} (jailer-standin, test equipment)\n");
        for s in SPECS {
            println!(
                "  --{}{}",
                s.name,
                if s.takes_value { " <value>" } else { "" }
            );
        }
        println!("\nAny arguments after the -- separator will be supplied to the jailed binary.\n");
        return Ok(None);
    }
    if p.flag("version") {
        println!("Jailer v{JAILER_VERSION}\n");
        return Ok(None);
    }
    let id = p.value("id").unwrap_or_default().to_owned();
    validate_instance_id(&id).map_err(|e| format!("Invalid instance ID: {e}"))?;
    let exec = p.value("exec-file").unwrap_or_default();
    let exec_file =
        fs::canonicalize(exec).map_err(|e| format!("Failed to canonicalize path {exec}: {e}"))?;
    if !exec_file.is_file() {
        return Err(format!("{} is not a file", exec_file.display()));
    }
    let exec_name = exec_file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            format!(
                "Failed to extract filename from path {}",
                exec_file.display()
            )
        })?
        .to_owned();
    let base = p.value("chroot-base-dir").unwrap_or("/srv/jailer");
    let base_c =
        fs::canonicalize(base).map_err(|e| format!("Failed to canonicalize path {base}: {e}"))?;
    if !base_c.is_dir() {
        return Err(format!("{} is not a directory", base_c.display()));
    }
    let chroot_dir = base_c.join(&exec_name).join(&id).join("root");
    let uid_s = p.value("uid").unwrap_or_default();
    let uid: u32 = uid_s.parse().map_err(|_| format!("Invalid uid: {uid_s}"))?;
    let gid_s = p.value("gid").unwrap_or_default();
    let gid: u32 = gid_s.parse().map_err(|_| format!("Invalid gid: {gid_s}"))?;
    let parent = p.value("parent-cgroup").unwrap_or(&exec_name).to_owned();
    if Path::new(&parent).components().any(|c| {
        matches!(
            c,
            Component::CurDir | Component::ParentDir | Component::RootDir
        )
    }) {
        return Err(
            "Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'"
                .to_owned(),
        );
    }
    let ver_s = p.value("cgroup-version").unwrap_or("1");
    let version: u8 = ver_s
        .parse()
        .ok()
        .filter(|v| *v == 1 || *v == 2)
        .ok_or_else(|| format!("{ver_s} is an invalid cgroup version specifier"))?;
    let mut cgroups: Vec<CgroupDir> = Vec::new();
    for cg in p.values("cgroup") {
        let parts: Vec<&str> = cg.split('=').collect();
        if parts.len() != 2 || parts[1].is_empty() {
            return Err(format!("Invalid format for cgroups: {cg}"));
        }
        let file = parts[0];
        if file.is_empty()
            || Path::new(file)
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(format!("Cgroup invalid file: {cg}"));
        }
        let controller = file.split('.').next().unwrap_or_default().to_owned();
        let mount = find_cgroup_mount(version, &controller)?;
        let path = mount.join(&parent).join(&id);
        let ctl = if version == 1 {
            controller
        } else {
            String::new()
        };
        match cgroups.iter_mut().find(|c| c.path == path) {
            Some(c) => c.settings.push((file.to_owned(), parts[1].to_owned())),
            None => cgroups.push(CgroupDir {
                path,
                settings: vec![(file.to_owned(), parts[1].to_owned())],
                controller: ctl,
            }),
        }
    }
    let mut rlimits = Vec::new();
    for r in p.values("resource-limit") {
        let parts: Vec<&str> = r.split('=').collect();
        if parts.len() != 2 {
            return Err(format!("Invalid format for resources limits: {r}"));
        }
        let res = match parts[0] {
            "fsize" => nix::sys::resource::Resource::RLIMIT_FSIZE,
            "no-file" => nix::sys::resource::Resource::RLIMIT_NOFILE,
            other => return Err(format!("Invalid resource argument: {other}")),
        };
        let v: u64 = parts[1]
            .parse()
            .map_err(|e| format!("Invalid limit value for resource: {}: {e}", parts[0]))?;
        rlimits.push((res, v));
    }
    Ok(Some(JailConfig {
        id,
        exec_file,
        exec_name,
        chroot_dir,
        uid,
        gid,
        netns: p.value("netns").map(str::to_owned),
        daemonize: p.flag("daemonize"),
        new_pid_ns: p.flag("new-pid-ns"),
        cgroups,
        rlimits,
        extra: p.extra.clone(),
    }))
}

fn setup_cgroups(cfg: &JailConfig) -> Result<(), String> {
    for cg in &cfg.cgroups {
        fs::create_dir_all(&cg.path)
            .map_err(|e| format!("Failed to create directory {}: {e}", cg.path.display()))?;
        if cg.controller == "cpuset" {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                inherit(&cg.path, f);
            }
        }
        if cg.controller.is_empty() {
            // v2: enable the controllers this jail sets, in every ancestor below the mount.
            for (file, _) in &cg.settings {
                let ctl = file.split('.').next().unwrap_or_default();
                let mut anc: Vec<&Path> = cg.path.ancestors().skip(1).collect();
                anc.reverse();
                for a in anc {
                    let sc = a.join("cgroup.subtree_control");
                    if sc.exists() {
                        let _ = fs::write(&sc, format!("+{ctl}"));
                    }
                }
            }
        }
        for (file, value) in &cg.settings {
            let p = cg.path.join(file);
            fs::write(&p, format!("{value}\n"))
                .map_err(|e| format!("Failed to write to {}: {e}", p.display()))?;
        }
        let procs = if cg.controller.is_empty() {
            "cgroup.procs"
        } else {
            "tasks"
        };
        let p = cg.path.join(procs);
        fs::write(&p, format!("{}\n", std::process::id()))
            .map_err(|e| format!("Failed to write to {}: {e}", p.display()))?;
    }
    Ok(())
}

fn inherit(path: &Path, file: &str) {
    let mut chain: Vec<&Path> = Vec::new();
    let mut cur = path;
    while let Some(parent) = cur.parent() {
        chain.push(cur);
        if parent.join(file).exists()
            && fs::read_to_string(parent.join(file))
                .map(|s| !s.trim().is_empty())
                .unwrap_or(false)
        {
            break;
        }
        cur = parent;
    }
    for dir in chain.iter().rev() {
        if let Some(parent) = dir.parent()
            && let Ok(v) = fs::read_to_string(parent.join(file))
        {
            let _ = fs::write(dir.join(file), v);
        }
    }
}

fn run(argv: &[String]) -> Result<(), String> {
    let Some(cfg) = parse(argv)? else {
        return Ok(());
    };
    if sys::thread_count() != 1 {
        return Err("jailer-standin must be single-threaded".into());
    }
    fs::create_dir_all(&cfg.chroot_dir).map_err(|e| {
        format!(
            "Failed to create directory {}: {e}",
            cfg.chroot_dir.display()
        )
    })?;
    let jailed_exec = cfg.chroot_dir.join(&cfg.exec_name);
    fs::copy(&cfg.exec_file, &jailed_exec).map_err(|e| {
        format!(
            "Failed to copy {} to {}: {e}",
            cfg.exec_file.display(),
            jailed_exec.display()
        )
    })?;
    if let Some(ns) = &cfg.netns {
        let f = File::open(ns).map_err(|e| format!("Failed to open file {ns}: {e}"))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("Failed to join network namespace: netns: {e}"))?;
    }
    for (res, v) in &cfg.rlimits {
        nix::sys::resource::setrlimit(*res, *v, *v)
            .map_err(|e| format!("Failed to set limit for resource: {e}"))?;
    }
    setup_cgroups(&cfg)?;
    let dev_null = if cfg.daemonize {
        Some(File::open("/dev/null").map_err(|e| format!("Failed to open /dev/null: {e}"))?)
    } else {
        None
    };

    // The privileged helper: forked before the jail closes over us.
    let (vmm_end, helper_end) = helper::pair().map_err(|e| format!("helper socketpair: {e}"))?;
    match sys::fork().map_err(|e| format!("Failed cloning into a new child process: {e}"))? {
        sys::Forked::Child => {
            drop(vmm_end);
            if let Some(n) = &dev_null {
                let _ = nix::unistd::setsid();
                let _ = nix::unistd::dup2_stdin(n);
                let _ = nix::unistd::dup2_stdout(n);
                let _ = nix::unistd::dup2_stderr(n);
            }
            let code = match helper::run(helper_end, &cfg.chroot_dir) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("jailer-standin helper: {e}");
                    1
                }
            };
            std::process::exit(code);
        }
        sys::Forked::Parent(_) => drop(helper_end),
    }

    let root = &cfg.chroot_dir;
    for f in ["", "dev", "dev/net", "run"] {
        let p = root.join(f);
        let shown = format!("/{f}");
        fs::create_dir_all(&p).map_err(|e| format!("Failed to create directory {shown}: {e}"))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("Failed to change permissions on {shown}: {e}"))?;
        chown(
            &p,
            Some(Uid::from_raw(cfg.uid)),
            Some(Gid::from_raw(cfg.gid)),
        )
        .map_err(|e| format!("Failed to change owner for {shown}: {e}"))?;
    }
    let node = |path: &str, major: u64, minor: u64| -> Result<(), String> {
        let p = root.join(path.trim_start_matches('/'));
        mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::S_IRUSR | Mode::S_IWUSR,
            makedev(major, minor),
        )
        .map_err(|e| format!("Failed to create {path} via mknod inside the jail: {e}"))?;
        chown(
            &p,
            Some(Uid::from_raw(cfg.uid)),
            Some(Gid::from_raw(cfg.gid)),
        )
        .map_err(|e| format!("Failed to change owner for {path}: {e}"))
    };
    node("/dev/net/tun", 10, 200)?;
    node("/dev/kvm", 10, 232)?;
    if let Err(e) = node("/dev/urandom", 1, 9) {
        println!("Warning! Could not create /dev/urandom device inside jailer: {e}.");
        println!("MMDS version 2 will not be available to use.");
    }

    if let Some(n) = &dev_null {
        if let sys::Forked::Parent(_) =
            sys::fork().map_err(|e| format!("Failed to daemonize: {e}"))?
        {
            std::process::exit(0);
        }
        nix::unistd::setsid().map_err(|e| format!("Failed to daemonize: setsid: {e}"))?;
        if let sys::Forked::Parent(_) =
            sys::fork().map_err(|e| format!("Failed to daemonize: {e}"))?
        {
            std::process::exit(0);
        }
        nix::unistd::dup2_stdin(n).map_err(|e| format!("Failed to duplicate fd: {e}"))?;
        nix::unistd::dup2_stdout(n).map_err(|e| format!("Failed to duplicate fd: {e}"))?;
        nix::unistd::dup2_stderr(n).map_err(|e| format!("Failed to duplicate fd: {e}"))?;
    }

    // The stand-in is dynamically linked (real Firecracker is static), so it cannot be exec'd
    // from inside the chroot: it is exec'd from its copy in the jail by host path and pivots
    // into the jail and drops to uid/gid itself, first thing, before any thread exists
    // ([`enter_jail_from_env`]).
    let exec_in_jail = root.join(&cfg.exec_name);
    let pid_file = format!("{}/{}.pid", root.display(), cfg.exec_name);
    if cfg.new_pid_ns {
        let session_leader =
            !cfg.daemonize && nix::unistd::getsid(None).ok() == Some(nix::unistd::getpid());
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
            .map_err(|e| format!("Failed cloning into a new child process: {e}"))?;
        match sys::fork().map_err(|e| format!("Failed cloning into a new child process: {e}"))? {
            sys::Forked::Parent(child) => {
                write_pid(&pid_file, child.as_raw())?;
                std::process::exit(0);
            }
            sys::Forked::Child => {
                if session_leader {
                    let _ = nix::unistd::setsid();
                }
            }
        }
    } else {
        write_pid(&pid_file, i32::try_from(std::process::id()).unwrap_or(0))?;
    }
    sys::clear_cloexec(&vmm_end).map_err(|e| format!("helper fd: {e}"))?;
    let start_us = now_us();
    let err = std::process::Command::new(&exec_in_jail)
        .args(["--id", &cfg.id])
        .args(["--start-time-us", &start_us.to_string()])
        .args(["--start-time-cpu-us", "0"])
        .args(["--parent-cpu-time-us", "0"])
        .args(&cfg.extra)
        .env(helper::HELPER_FD_ENV, vmm_end.as_raw_fd().to_string())
        .env(
            JAIL_ENV,
            format!("{}:{}:{}", cfg.uid, cfg.gid, root.display()),
        )
        .exec();
    Err(format!("Failed to exec into Firecracker: {err}"))
}

fn write_pid(path: &str, pid: i32) -> Result<(), String> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("Failed to open file {path}: {e}"))?;
    write!(f, "{pid}").map_err(|e| format!("Failed to write to {path}: {e}"))
}

fn now_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// Environment variable carrying `uid:gid:jail root` from `jailer-standin` to the VMM.
pub const JAIL_ENV: &str = "VMSAN_STANDIN_JAIL";

/// In `firecracker-standin`, first thing: when started by `jailer-standin`, pivot into the jail
/// (private mount namespace), drop supplementary groups, then gid and uid.
pub fn enter_jail_from_env() -> Result<(), String> {
    let Ok(v) = std::env::var(JAIL_ENV) else {
        return Ok(());
    };
    let mut it = v.splitn(3, ':');
    let (Some(uid), Some(gid), Some(root)) = (it.next(), it.next(), it.next()) else {
        return Err(format!("{JAIL_ENV}: malformed"));
    };
    let uid: u32 = uid.parse().map_err(|_| format!("Invalid uid: {uid}"))?;
    let gid: u32 = gid.parse().map_err(|_| format!("Invalid gid: {gid}"))?;
    if sys::thread_count() != 1 {
        return Err("entering the jail needs a single-threaded process".into());
    }
    pivot_into(Path::new(root))?;
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    let g = Gid::from_raw(gid);
    nix::unistd::setresgid(g, g, g).map_err(|e| format!("Invalid gid: {gid}: {e}"))?;
    let u = Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, u).map_err(|e| format!("Invalid uid: {uid}: {e}"))?;
    Ok(())
}

fn pivot_into(root: &Path) -> Result<(), String> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("Failed to unshare into new mount namespace: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("Failed to change the propagation type to slave: {e}"))?;
    mount(
        Some(root),
        root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("Failed to bind mount the jail root directory: {e}"))?;
    nix::unistd::chdir(root).map_err(|e| format!("Failed to chdir into chroot directory: {e}"))?;
    let old = "old_root";
    fs::create_dir_all(old).map_err(|e| {
        format!("Failed to create the jail root directory before pivoting root: {e}")
    })?;
    nix::unistd::pivot_root(".", old).map_err(|e| format!("Failed to pivot root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("Failed to change current directory: {e}"))?;
    umount2("/old_root", MntFlags::MNT_DETACH)
        .map_err(|e| format!("Failed to unmount the old jail root: {e}"))?;
    fs::remove_dir("/old_root")
        .map_err(|e| format!("Failed to remove old jail root directory: {e}"))?;
    Ok(())
}
