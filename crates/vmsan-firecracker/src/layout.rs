//! The jail's directory layout and its preparation.
//!
//! The jailer builds its chroot at `<chroot_base>/<exec file name>/<id>/root` and hands its
//! ownership to the jail uid. From then on the jailed (untrusted) Firecracker can put anything
//! in there, symlinks included. Everything here therefore works relative to directory file
//! descriptors, never follows a symlink (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`) and creates files
//! with `O_EXCL`. A jail is rebuilt from scratch for every start: the VM's persistent data
//! (overlay disk) lives outside and is linked in.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, unlinkat};

use crate::jailer::{ArgError, exec_file_name, validate_abs_path, validate_component, validate_id};

/// Longest Unix socket path the kernel accepts (`sun_path` is 108 bytes, NUL included).
pub const MAX_SOCKET_PATH: usize = 107;

/// Where Firecracker listens, as it sees it (absolute inside the jail).
pub const API_SOCKET_IN_JAIL: &str = "/run/firecracker.socket";
/// The hybrid-vsock socket, relative to the jail root (the `uds_path` Firecracker receives).
pub const VSOCK_IN_JAIL: &str = "v.sock";
/// Kernel file name inside the jail.
pub const KERNEL_IN_JAIL: &str = "vmlinux";
/// Initrd file name inside the jail.
pub const INITRD_IN_JAIL: &str = "initrd.cpio";
/// Firecracker's log file inside the jail.
pub const LOG_IN_JAIL: &str = "firecracker.log";
/// Firecracker's metrics file inside the jail.
pub const METRICS_IN_JAIL: &str = "metrics.json";
/// The guest's serial console output inside the jail.
pub const SERIAL_IN_JAIL: &str = "serial.log";
/// A snapshot's microVM state file inside the jail (Firecracker writes it as the jail uid).
pub const SNAPSHOT_STATE_IN_JAIL: &str = "snapshot.vmstate";
/// A snapshot's guest memory file inside the jail.
pub const SNAPSHOT_MEM_IN_JAIL: &str = "snapshot.mem";

/// Failure while preparing, inspecting or removing a jail.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// An argument was refused.
    #[error(transparent)]
    Arg(#[from] ArgError),
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Something in the jail is not what it must be (a symlink, a file owned by someone else).
    #[error("{}: {reason}", path.display())]
    Unsafe {
        /// The offending path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> JailError + 'a {
    move |errno| JailError::Io {
        op,
        path: path.to_owned(),
        source: io::Error::from(errno),
    }
}

/// Paths of one VM's jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailLayout {
    chroot_base: PathBuf,
    exec_name: String,
    id: String,
}

impl JailLayout {
    /// The layout the jailer uses for `exec_file` and `id` under `chroot_base`.
    ///
    /// # Errors
    /// [`ArgError`] for an invalid id, a relative or odd base path, or an exec file whose
    /// name is unusable.
    pub fn new(chroot_base: &Path, exec_file: &Path, id: &str) -> Result<Self, ArgError> {
        validate_id(id)?;
        validate_abs_path("chroot base", chroot_base)?;
        let exec_name = exec_file_name(exec_file)?.to_owned();
        Ok(Self {
            chroot_base: chroot_base.to_owned(),
            exec_name,
            id: id.to_owned(),
        })
    }

    /// The VM id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The exec file's name (`firecracker`).
    #[must_use]
    pub fn exec_name(&self) -> &str {
        &self.exec_name
    }

    /// `<chroot_base>`.
    #[must_use]
    pub fn chroot_base(&self) -> &Path {
        &self.chroot_base
    }

    /// `<chroot_base>/<exec name>/<id>`: removed as a whole on teardown.
    #[must_use]
    pub fn instance_dir(&self) -> PathBuf {
        self.chroot_base.join(&self.exec_name).join(&self.id)
    }

    /// `<chroot_base>/<exec name>/<id>/root`: the jail's `/`.
    #[must_use]
    pub fn root(&self) -> PathBuf {
        self.instance_dir().join("root")
    }

    /// Host path of the API socket.
    #[must_use]
    pub fn api_socket(&self) -> PathBuf {
        self.root().join("run/firecracker.socket")
    }

    /// Host path of the pid file the jailer writes with `--new-pid-ns`.
    #[must_use]
    pub fn pid_file(&self) -> PathBuf {
        self.root().join(format!("{}.pid", self.exec_name))
    }

    /// Host path of the jailer's copy of the Firecracker binary.
    #[must_use]
    pub fn exec_copy(&self) -> PathBuf {
        self.root().join(&self.exec_name)
    }

    /// Host path of the hybrid-vsock socket.
    #[must_use]
    pub fn vsock_socket(&self) -> PathBuf {
        self.root().join(VSOCK_IN_JAIL)
    }

    /// Host path where the host listens for guest-initiated vsock connections to `port`
    /// (`<uds_path>_<port>`).
    #[must_use]
    pub fn vsock_listener(&self, port: u32) -> PathBuf {
        self.root().join(format!("{VSOCK_IN_JAIL}_{port}"))
    }

    /// Host path of a file the jail holds under the relative name `name`.
    ///
    /// # Errors
    /// [`ArgError`] unless `name` is one plain file name.
    pub fn host_path(&self, name: &str) -> Result<PathBuf, ArgError> {
        validate_component("jail file name", name)?;
        Ok(self.root().join(name))
    }

    /// Checks that every socket the host connects to fits in `sun_path`.
    ///
    /// # Errors
    /// [`ArgError`] naming the longest offending path.
    pub fn check_socket_paths(&self) -> Result<(), ArgError> {
        for path in [self.api_socket(), self.vsock_listener(u32::MAX)] {
            if path.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(ArgError::new(
                    "socket path",
                    path.display().to_string(),
                    "longer than the 107 bytes a Unix socket path may have: use a shorter chroot base",
                ));
            }
        }
        Ok(())
    }
}

/// How a file gets into the jail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Hard link; fails across filesystems.
    HardLink,
    /// Copy (a reflink where the filesystem supports it).
    Copy,
    /// Hard link, falling back to a copy across filesystems.
    HardLinkOrCopy,
}

/// One file to put into the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailFile {
    /// Regular file on the host (a symlink is refused).
    pub source: PathBuf,
    /// Name inside the jail root (one component); also the relative path Firecracker gets.
    pub name: String,
    /// How it gets there.
    pub placement: Placement,
    /// Give the file to the jail uid/gid. For a hard link this changes the owner of the
    /// shared inode, so use it only for per-VM files (overlay, config); shared read-only files
    /// (kernel, rootfs) keep their owner and must be world-readable.
    pub chown: bool,
    /// Mode of a copied file (links keep the source's mode unless `chown`, which then sets it).
    pub mode: u32,
}

impl JailFile {
    /// A shared read-only file (kernel, initrd, image rootfs): hard-linked (copied across
    /// filesystems), owner kept, must be readable by others.
    #[must_use]
    pub fn shared_read_only(source: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            name: name.into(),
            placement: Placement::HardLinkOrCopy,
            chown: false,
            mode: 0o444,
        }
    }

    /// A per-VM file Firecracker reads and, with `writable`, writes (overlay disk, config
    /// drive): hard-linked (copied across filesystems) and given to the jail uid/gid.
    #[must_use]
    pub fn per_vm(source: impl Into<PathBuf>, name: impl Into<String>, writable: bool) -> Self {
        Self {
            source: source.into(),
            name: name.into(),
            placement: Placement::HardLinkOrCopy,
            chown: true,
            mode: if writable { 0o600 } else { 0o400 },
        }
    }

    /// A file Firecracker writes and vmsan reads after the jail is gone (its log, metrics,
    /// the serial console): the caller creates it (empty) in the VM's directory and it is
    /// hard-linked into the jail, never copied, so every byte written lands in the VM's
    /// directory; it is given to the jail uid/gid with mode 0600. The VM's directory and the
    /// chroot base must share a filesystem.
    #[must_use]
    pub fn output(source: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            name: name.into(),
            placement: Placement::HardLink,
            chown: true,
            mode: 0o600,
        }
    }

    /// A private copy owned by the jail uid/gid (a reflink where possible).
    #[must_use]
    pub fn copy(source: impl Into<PathBuf>, name: impl Into<String>, mode: u32) -> Self {
        Self {
            source: source.into(),
            name: name.into(),
            placement: Placement::Copy,
            chown: true,
            mode,
        }
    }
}

/// What [`prepare_jail`] did with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// Hard-linked.
    Linked,
    /// Cloned (reflink).
    Reflinked,
    /// Copied byte by byte.
    Copied,
}

/// Builds a fresh jail root for `layout`: removes any previous instance directory, creates
/// `<instance>/root` and `root/run` (owned by the jail uid/gid), and places `files` in the
/// root. Returns how each file was placed, in order.
///
/// The chroot base and `<base>/<exec name>` are created when missing (root-owned, 0755 or
/// kept as they are).
///
/// # Errors
/// [`JailError`]; on error the caller removes the instance with [`remove_jail`].
pub fn prepare_jail(
    layout: &JailLayout,
    uid: u32,
    gid: u32,
    files: &[JailFile],
) -> Result<Vec<Placed>, JailError> {
    for file in files {
        validate_component("jail file name", &file.name)?;
        if file.name == layout.exec_name
            || file.name == "run"
            || file.name == "dev"
            || file.name == format!("{}.pid", layout.exec_name)
        {
            return Err(ArgError::new(
                "jail file name",
                file.name.clone(),
                "is reserved for the jailer",
            )
            .into());
        }
    }
    remove_jail(layout)?;

    let exec_dir = layout.chroot_base.join(&layout.exec_name);
    std::fs::create_dir_all(&exec_dir).map_err(|source| JailError::Io {
        op: "creating",
        path: exec_dir.clone(),
        source,
    })?;
    let exec_dir_fd = open_dir(AT_FDCWD, exec_dir.as_os_str(), &exec_dir)?;
    let instance = layout.instance_dir();
    mkdirat(
        &exec_dir_fd,
        layout.id.as_str(),
        Mode::from_bits_truncate(0o700),
    )
    .map_err(io_err("creating", &instance))?;
    let instance_fd = open_dir(&exec_dir_fd, OsStr::new(&layout.id), &instance)?;
    let root = layout.root();
    mkdirat(&instance_fd, "root", Mode::from_bits_truncate(0o755))
        .map_err(io_err("creating", &root))?;
    let root_fd = open_dir(&instance_fd, OsStr::new("root"), &root)?;

    let run = root.join("run");
    mkdirat(&root_fd, "run", Mode::from_bits_truncate(0o700)).map_err(io_err("creating", &run))?;
    fchownat(
        &root_fd,
        "run",
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io_err("chown", &run))?;

    let mut placed = Vec::with_capacity(files.len());
    for file in files {
        placed.push(place_file(&root_fd, &root, file, uid, gid)?);
    }
    Ok(placed)
}

fn open_dir<Fd: AsFd>(dirfd: Fd, name: &OsStr, shown: &Path) -> Result<OwnedFd, JailError> {
    openat(
        dirfd,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err("opening directory", shown))
}

fn place_file(
    root_fd: &OwnedFd,
    root: &Path,
    file: &JailFile,
    uid: u32,
    gid: u32,
) -> Result<Placed, JailError> {
    let dest = root.join(&file.name);
    // The source must be a regular file, not a symlink (O_NONBLOCK: a FIFO must not hang us
    // before fstat refuses it).
    let src_fd = openat(
        AT_FDCWD,
        file.source.as_path(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| {
        if errno == Errno::ELOOP {
            JailError::Unsafe {
                path: file.source.clone(),
                reason: "is a symlink; only regular files go into a jail".to_owned(),
            }
        } else {
            io_err("opening", &file.source)(errno)
        }
    })?;
    let st = fstat(&src_fd).map_err(io_err("stat", &file.source))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(JailError::Unsafe {
            path: file.source.clone(),
            reason: "is not a regular file".to_owned(),
        });
    }

    // A file that stays root's must be readable by the jail uid through its "other" bits.
    if !file.chown {
        let linked_mode = st.st_mode & 0o7777;
        let readable = match file.placement {
            Placement::HardLink => linked_mode & 0o004 != 0,
            Placement::Copy => file.mode & 0o004 != 0,
            Placement::HardLinkOrCopy => linked_mode & 0o004 != 0 && file.mode & 0o004 != 0,
        };
        if !readable {
            return Err(JailError::Unsafe {
                path: file.source.clone(),
                reason: format!(
                    "stays owned by uid {} but is not readable by others (mode {linked_mode:o}), \
                     so the jailed Firecracker could not open it",
                    st.st_uid
                ),
            });
        }
    }

    let try_link = matches!(
        file.placement,
        Placement::HardLink | Placement::HardLinkOrCopy
    );
    if try_link {
        match linkat(
            &src_fd,
            "",
            root_fd,
            file.name.as_str(),
            AtFlags::AT_EMPTY_PATH,
        ) {
            Ok(()) => {
                if file.chown {
                    chown_entry(root_fd, &file.name, &dest, uid, gid, file.mode)?;
                }
                return Ok(Placed::Linked);
            }
            // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; fall back to linking the path, which
            // we checked to be a regular file (the source directory is trusted, root-owned).
            Err(Errno::ENOENT | Errno::EPERM) => match linkat(
                AT_FDCWD,
                file.source.as_path(),
                root_fd,
                file.name.as_str(),
                AtFlags::empty(),
            ) {
                Ok(()) => {
                    if file.chown {
                        chown_entry(root_fd, &file.name, &dest, uid, gid, file.mode)?;
                    }
                    return Ok(Placed::Linked);
                }
                Err(Errno::EXDEV) if file.placement == Placement::HardLinkOrCopy => {}
                Err(errno) => return Err(io_err("hard-linking into", &dest)(errno)),
            },
            Err(Errno::EXDEV) if file.placement == Placement::HardLinkOrCopy => {}
            Err(errno) => return Err(io_err("hard-linking into", &dest)(errno)),
        }
    }

    let dst_fd = openat(
        root_fd,
        file.name.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(io_err("creating", &dest))?;
    let how = if crate::sys::ficlone(&dst_fd, &src_fd).is_ok() {
        Placed::Reflinked
    } else {
        let mut src = File::from(src_fd);
        let mut dst = File::from(dst_fd.try_clone().map_err(|source| JailError::Io {
            op: "duplicating descriptor of",
            path: dest.clone(),
            source,
        })?);
        io::copy(&mut src, &mut dst).map_err(|source| JailError::Io {
            op: "copying into",
            path: dest.clone(),
            source,
        })?;
        Placed::Copied
    };
    if file.chown {
        fchown(&dst_fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(io_err("chown", &dest))?;
    }
    fchmod(&dst_fd, Mode::from_bits_truncate(file.mode)).map_err(io_err("chmod", &dest))?;
    Ok(how)
}

fn chown_entry(
    root_fd: &OwnedFd,
    name: &str,
    dest: &Path,
    uid: u32,
    gid: u32,
    mode: u32,
) -> Result<(), JailError> {
    let fd = openat(
        root_fd,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err("opening", dest))?;
    fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .map_err(io_err("chown", dest))?;
    fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(io_err("chmod", dest))?;
    Ok(())
}

/// Removes `<chroot_base>/<exec name>/<id>` and everything in it, without following any
/// symlink found inside. A missing directory is not an error.
///
/// # Errors
/// [`JailError::Io`].
pub fn remove_jail(layout: &JailLayout) -> Result<(), JailError> {
    let instance = layout.instance_dir();
    match std::fs::remove_dir_all(&instance) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(JailError::Io {
            op: "removing",
            path: instance,
            source,
        }),
    }
}

/// Removes one entry (file, socket or symlink, never what it points to) from the jail root;
/// missing is fine. Used e.g. for a stale vsock listener socket.
///
/// # Errors
/// [`JailError`].
pub fn remove_jail_entry(layout: &JailLayout, name: &str) -> Result<(), JailError> {
    let path = layout.host_path(name)?;
    let root = layout.root();
    let root_fd = open_dir(AT_FDCWD, root.as_os_str(), &root)?;
    match unlinkat(&root_fd, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(errno) => Err(io_err("removing", &path)(errno)),
    }
}

/// Reads the jailer's pid file (`<root>/<exec name>.pid`).
///
/// The jail root belongs to the jail uid, so the file is only trusted when it is a regular
/// file owned by root (the jailer writes it as root); a symlink or a file owned by anyone else
/// is refused.
///
/// # Errors
/// [`JailError::Io`] (`NotFound` when the jailer has not written it yet),
/// [`JailError::Unsafe`] for an untrusted or malformed file.
pub fn read_pid_file(layout: &JailLayout) -> Result<i32, JailError> {
    let path = layout.pid_file();
    let fd = openat(
        AT_FDCWD,
        path.as_path(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(|errno| {
        if errno == Errno::ELOOP {
            JailError::Unsafe {
                path: path.clone(),
                reason: "is a symlink".to_owned(),
            }
        } else {
            io_err("opening", &path)(errno)
        }
    })?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|source| JailError::Io {
        op: "stat",
        path: path.clone(),
        source,
    })?;
    if !meta.file_type().is_file() || meta.uid() != 0 {
        return Err(JailError::Unsafe {
            path,
            reason: format!(
                "is not a regular file owned by root (uid {}), so the jailer did not write it",
                meta.uid()
            ),
        });
    }
    let mut text = String::new();
    file.take(64)
        .read_to_string(&mut text)
        .map_err(|source| JailError::Io {
            op: "reading",
            path: path.clone(),
            source,
        })?;
    parse_pid(text.trim()).ok_or_else(|| JailError::Unsafe {
        path,
        reason: format!("does not hold a pid: {:?}", text.trim()),
    })
}

pub(crate) fn parse_pid(text: &str) -> Option<i32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i32>().ok().filter(|pid| *pid > 0)
}

/// Whether `path` (inside the jail, not followed if a symlink) is a regular file owned by
/// root: used to trust the jailer's copy of Firecracker before comparing it with
/// `/proc/<pid>/exe`.
///
/// # Errors
/// [`JailError::Io`].
pub fn is_root_owned_file(path: &Path) -> Result<bool, JailError> {
    let st = fstatat(AT_FDCWD, path, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io_err("stat", path))?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_uid == 0)
}

/// Gives the jail entry `name` (typically the host's `v.sock_<port>` listener socket, which
/// Firecracker must be able to connect to) to the jail uid/gid, without following a symlink.
///
/// # Errors
/// [`JailError`].
pub fn give_to_jail(layout: &JailLayout, name: &str, uid: u32, gid: u32) -> Result<(), JailError> {
    let path = layout.host_path(name)?;
    let root = layout.root();
    let root_fd = open_dir(AT_FDCWD, root.as_os_str(), &root)?;
    fchownat(
        &root_fd,
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io_err("chown", &path))
}

/// Waits until the jailer has written a trustworthy pid file (see [`read_pid_file`]),
/// polling with a short backoff (1 ms doubling to 20 ms) until `deadline`, and giving up
/// early when `still_alive` returns false (the jailer exited without writing it).
///
/// # Errors
/// The last [`JailError`] at the deadline, an `Unsafe` error at once, or an `Io` error of
/// kind `BrokenPipe` when `still_alive` said the jailer is gone.
pub async fn wait_for_pid_file(
    layout: &JailLayout,
    deadline: tokio::time::Instant,
    mut still_alive: impl FnMut() -> bool,
) -> Result<i32, JailError> {
    let mut backoff = std::time::Duration::from_millis(1);
    loop {
        let err = match read_pid_file(layout) {
            Ok(pid) => return Ok(pid),
            Err(e @ JailError::Unsafe { .. }) => {
                // The jailer writes the file in one go, but a reader may see it empty for a
                // moment: only a non-empty malformed file is final.
                let empty = std::fs::symlink_metadata(layout.pid_file())
                    .map(|m| m.is_file() && m.len() == 0)
                    .unwrap_or(false);
                if !empty {
                    return Err(e);
                }
                e
            }
            Err(e) => e,
        };
        if !still_alive() {
            return Err(JailError::Io {
                op: "waiting for",
                path: layout.pid_file(),
                source: io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the jailer exited without writing its pid file",
                ),
            });
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(err);
        }
        tokio::time::sleep_until((now + backoff).min(deadline)).await;
        backoff = (backoff * 2).min(std::time::Duration::from_millis(20));
    }
}

/// Whether device nodes work on the filesystem holding `path` (it is not mounted `nodev`).
/// The jailer creates `dev/kvm` and `dev/net/tun` inside the jail; on a `nodev` mount
/// Firecracker then fails with "Permission denied" on `/dev/net/tun`.
///
/// # Errors
/// `statvfs` errors (e.g. `path` missing).
pub fn allows_device_nodes(path: &Path) -> io::Result<bool> {
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok(!st.flags().contains(nix::sys::statvfs::FsFlags::ST_NODEV))
}

impl JailLayout {
    /// Checks, before the jailer runs, that the chroot base is not on a `nodev` mount.
    ///
    /// # Errors
    /// [`JailError::Unsafe`] naming the problem and the fix, or [`JailError::Io`].
    pub fn check_device_nodes_allowed(&self) -> Result<(), JailError> {
        match allows_device_nodes(&self.chroot_base) {
            Ok(true) => Ok(()),
            Ok(false) => Err(JailError::Unsafe {
                path: self.chroot_base.clone(),
                reason: "is on a filesystem mounted nodev: the jail's /dev/kvm and /dev/net/tun \
                         would not open (remount it with `dev`, or put the state directory on \
                         another filesystem)"
                    .to_owned(),
            }),
            Err(source) => Err(JailError::Io {
                op: "statvfs",
                path: self.chroot_base.clone(),
                source,
            }),
        }
    }
}
