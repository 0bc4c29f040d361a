//! Named network namespaces (bind mounts under `/run/netns`, like iproute2) and running code
//! inside one on a dedicated thread.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::error::{NetError, Result};

/// Where named namespaces live by default (iproute2's directory).
pub const DEFAULT_DIR: &str = "/run/netns";

fn ns_err(path: &Path, detail: impl Into<String>) -> NetError {
    NetError::Netns {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Runs `f` on a fresh OS thread that has entered the network namespace at `path`. Sockets
/// and child processes created by `f` belong to that namespace; the calling thread's
/// namespace is untouched.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let file = File::open(path).map_err(|e| ns_err(path, format!("open: {e}")))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| ns_err(path, format!("setns: {e}")))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(ns_err(path, "worker thread panicked")))
    })
}

/// Like [`run_in`] but stays in the current namespace when `path` is `None`.
pub fn run_in_opt<T: Send>(path: Option<&Path>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    match path {
        Some(p) => run_in(p, f),
        None => f(),
    }
}

/// Makes `dir` a shared mount point (as iproute2 does) so namespaces mounted there are seen
/// by other mount namespaces.
fn prepare_dir(dir: &Path) -> Result<()> {
    // Once per directory and process: changing propagation walks every mount below it.
    static DONE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut done = DONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if done.iter().any(|d| d == dir) {
        return Ok(());
    }
    prepare_dir_once(dir)?;
    done.push(dir.to_path_buf());
    Ok(())
}

fn prepare_dir_once(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| NetError::sys(format!("mkdir {}", dir.display()), e))?;
    let shared = |d: &Path| {
        mount(
            None::<&str>,
            d,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
    };
    if shared(dir).is_ok() {
        return Ok(());
    }
    // Not a mount point yet: bind it onto itself, then make it shared.
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| NetError::sys(format!("bind-mount {}", dir.display()), e))?;
    shared(dir).map_err(|e| NetError::sys(format!("make {} shared", dir.display()), e))
}

/// Creates a new network namespace bound at `dir/name` (fails if it already exists).
pub fn create(dir: &Path, name: &str) -> Result<PathBuf> {
    create_with(dir, name, || Ok(()))
}

/// [`create`], running `init` inside the new namespace (on the thread that created it)
/// before it is bound under its name: nothing else can be in it yet.
pub fn create_with(
    dir: &Path,
    name: &str,
    init: impl FnOnce() -> Result<()> + Send,
) -> Result<PathBuf> {
    crate::addr::validate_netns_name(name)?;
    prepare_dir(dir)?;
    let path = dir.join(name);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                NetError::Exists {
                    what: format!("network namespace {}", path.display()),
                }
            } else {
                ns_err(&path, format!("create: {e}"))
            }
        })?;
    let bound = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| ns_err(&path, format!("unshare: {e}")))?;
            init()?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| ns_err(&path, format!("bind mount: {e}")))
        })
        .join()
        .unwrap_or_else(|_| Err(ns_err(&path, "worker thread panicked")))
    });
    if let Err(e) = bound {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Unmounts and removes a namespace file; missing is fine. The namespace itself goes away
/// when its last user (process, socket, open fd) is gone.
pub fn delete(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(ns_err(path, format!("umount: {e}"))),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ns_err(path, format!("remove: {e}"))),
    }
}

/// Writes a sysctl of the current thread's network namespace (`key` like
/// `net/ipv4/ip_forward`). Call it from [`run_in`].
pub fn write_sysctl(key: &str, value: &str) -> Result<()> {
    if key.contains("..") || key.starts_with('/') {
        return Err(NetError::invalid("sysctl", key.to_string()));
    }
    let p = Path::new("/proc/sys").join(key);
    fs::write(&p, value).map_err(|e| NetError::sys(format!("write {}", p.display()), e))
}

/// Reads a sysctl of the current thread's network namespace.
pub fn read_sysctl(key: &str) -> Result<String> {
    let p = Path::new("/proc/sys").join(key);
    fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| NetError::sys(format!("read {}", p.display()), e))
}
