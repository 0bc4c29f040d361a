//! cgroup mode detection, placing a new process in v1 cgroups without a migration, and
//! removal of the directories the jailer leaves behind.
//!
//! The jailer creates `<hierarchy>/<parent cgroup>/<id>` (v1: in each controller hierarchy a
//! `--cgroup` names; v2: in the unified hierarchy) and never removes it. Once the VM's
//! processes are gone, [`remove_jailer_cgroups`] does.
//!
//! Moving a process into a cgroup (writing its pid to `tasks` or `cgroup.procs`) makes the
//! kernel take a global lock whose first writer waits for an RCU grace period: 6 to 21 ms
//! measured on a 2-CPU host, for every VM started. A thread that moves only itself (`0` to
//! `tasks`, cgroup v1) skips that lock on recent kernels (0.06 ms there), and whatever it then
//! spawns is born where it sits:
//! [`spawn_born_in`] starts a process that way, and [`create_v1_cgroups`] makes and limits
//! the cgroups the jailer would have made for `--cgroup` values.

use std::io;
use std::path::{Path, PathBuf};

use crate::jailer::{ArgError, CgroupVersion, validate_id, validate_rel_path};

/// The host's cgroup set-up (serialised as `v1`, `hybrid`, `v2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only v1 controller hierarchies.
    V1,
    /// v1 controllers plus a (controller-less or partly used) v2 hierarchy, usually at
    /// `/sys/fs/cgroup/unified`.
    Hybrid,
    /// Only the unified v2 hierarchy.
    V2,
}

/// One cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Mount point.
    pub mount_point: PathBuf,
    /// Controllers bound to it (`cpu`, `cpuacct`, …; `name=systemd` for named ones).
    pub controllers: Vec<String>,
}

/// The cgroup hierarchies mounted in our mount namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// v1 hierarchies.
    pub v1: Vec<V1Hierarchy>,
    /// Mount point of the v2 hierarchy.
    pub unified: Option<PathBuf>,
}

impl CgroupMounts {
    /// Reads `/proc/self/mountinfo`.
    ///
    /// # Errors
    /// I/O errors reading it.
    pub fn detect() -> io::Result<Self> {
        Ok(Self::parse_mountinfo(&std::fs::read_to_string(
            "/proc/self/mountinfo",
        )?))
    }

    /// Parses the text of a `mountinfo` file.
    #[must_use]
    pub fn parse_mountinfo(text: &str) -> Self {
        let mut mounts = Self::default();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split(' ').nth(4) else {
                continue;
            };
            let mut right = right.split(' ');
            let (Some(fstype), Some(_source), Some(options)) =
                (right.next(), right.next(), right.next())
            else {
                continue;
            };
            let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
            match fstype {
                "cgroup2" => {
                    // With several mounts of the hierarchy, prefer the canonical place.
                    let replace = match &mounts.unified {
                        None => true,
                        Some(current) => {
                            !current.starts_with("/sys/fs/cgroup")
                                && mount_point.starts_with("/sys/fs/cgroup")
                        }
                    };
                    if replace {
                        mounts.unified = Some(mount_point);
                    }
                }
                "cgroup" => {
                    let controllers: Vec<String> = options
                        .split(',')
                        .filter(|o| is_v1_controller(o) || o.starts_with("name="))
                        .map(str::to_owned)
                        .collect();
                    if controllers.is_empty()
                        || mounts.v1.iter().any(|h| h.controllers == controllers)
                    {
                        continue;
                    }
                    mounts.v1.push(V1Hierarchy {
                        mount_point,
                        controllers,
                    });
                }
                _ => {}
            }
        }
        mounts
    }

    /// The mode these mounts amount to; `None` without any cgroup hierarchy.
    #[must_use]
    pub fn mode(&self) -> Option<CgroupMode> {
        let has_v1_controllers = self
            .v1
            .iter()
            .any(|h| h.controllers.iter().any(|c| !c.starts_with("name=")));
        match (has_v1_controllers, &self.unified) {
            (true, Some(_)) => Some(CgroupMode::Hybrid),
            (true, None) => Some(CgroupMode::V1),
            (false, Some(_)) => Some(CgroupMode::V2),
            (false, None) => None,
        }
    }

    /// The `--cgroup-version` to give the jailer: 2 on a pure v2 host, else 1 (on hybrid
    /// hosts the controllers vmsan limits are in the v1 hierarchies).
    #[must_use]
    pub fn jailer_version(&self) -> Option<CgroupVersion> {
        self.mode().map(|mode| match mode {
            CgroupMode::V2 => CgroupVersion::V2,
            CgroupMode::V1 | CgroupMode::Hybrid => CgroupVersion::V1,
        })
    }

    /// The mount point of the v1 hierarchy holding `controller`.
    #[must_use]
    pub fn v1_controller_mount(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.mount_point.as_path())
    }

    /// Every directory the jailer may have created for `parent`/`id`: one per v1 hierarchy
    /// and one in the unified hierarchy.
    ///
    /// # Errors
    /// [`ArgError`] for an invalid id or parent.
    pub fn jailer_cgroup_dirs(&self, parent: &str, id: &str) -> Result<Vec<PathBuf>, ArgError> {
        validate_id(id)?;
        validate_rel_path("parent cgroup", parent)?;
        let mut dirs: Vec<PathBuf> = self
            .v1
            .iter()
            .map(|h| h.mount_point.join(parent).join(id))
            .collect();
        if let Some(unified) = &self.unified {
            dirs.push(unified.join(parent).join(id));
        }
        Ok(dirs)
    }
}

fn is_v1_controller(option: &str) -> bool {
    matches!(
        option,
        "cpu"
            | "cpuacct"
            | "cpuset"
            | "memory"
            | "devices"
            | "freezer"
            | "net_cls"
            | "net_prio"
            | "blkio"
            | "perf_event"
            | "hugetlb"
            | "pids"
            | "rdma"
            | "misc"
    )
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = u32::from(bytes[i + 1] - b'0') * 64
                + u32::from(bytes[i + 2] - b'0') * 8
                + u32::from(bytes[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The host's cgroup mode.
///
/// # Errors
/// I/O errors reading `/proc/self/mountinfo`, or `NotFound` without any cgroup hierarchy.
pub fn detect_mode() -> io::Result<CgroupMode> {
    CgroupMounts::detect()?.mode().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no cgroup hierarchy is mounted (see /proc/self/mountinfo)",
        )
    })
}

/// Creates the v1 cgroups the jailer would for these `--cgroup` values (`file=value`, the
/// controller being the file name's first part): `<controller's hierarchy>/<parent>/<id>`,
/// with each value written in the order given. Returns the directories, one per hierarchy.
///
/// # Errors
/// `InvalidInput` for a bad id, parent or value, `NotFound` when no hierarchy has the
/// controller, else the I/O error with the file it concerns.
pub fn create_v1_cgroups(
    mounts: &CgroupMounts,
    parent: &str,
    id: &str,
    values: &[String],
) -> io::Result<Vec<PathBuf>> {
    let invalid = |e: ArgError| io::Error::new(io::ErrorKind::InvalidInput, e);
    validate_id(id).map_err(invalid)?;
    validate_rel_path("parent cgroup", parent).map_err(invalid)?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for value in values {
        let (file, setting) = value
            .split_once('=')
            .filter(|(f, _)| !f.contains('/') && f.contains('.'))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cgroup value {value:?} is not <controller>.<file>=<value>"),
                )
            })?;
        let controller = file.split('.').next().unwrap_or_default();
        let mount = mounts.v1_controller_mount(controller).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no cgroup v1 hierarchy has the {controller} controller"),
            )
        })?;
        let dir = mount.join(parent).join(id);
        if !dirs.contains(&dir) {
            create_dir_racing(&dir).map_err(|e| at(&dir, "create", e))?;
            dirs.push(dir.clone());
        }
        let path = dir.join(file);
        std::fs::write(&path, setting).map_err(|e| at(&path, "write", e))?;
    }
    Ok(dirs)
}

/// Runs `spawn` on a short-lived thread that has first moved itself into each of these v1
/// cgroup directories, so that the process it starts is born in them and nothing is ever
/// migrated (see the module's note on why). The calling thread stays where it is. Without
/// directories, `spawn` simply runs here.
///
/// # Errors
/// The first directory the thread could not join (with its path), or `spawn`'s error.
pub fn spawn_born_in<T: Send>(
    dirs: &[PathBuf],
    spawn: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    if dirs.is_empty() {
        return spawn();
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            for dir in dirs {
                // "0" is the writing thread itself.
                let tasks = dir.join("tasks");
                std::fs::write(&tasks, "0").map_err(|e| at(&tasks, "write", e))?;
            }
            spawn()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the spawning thread panicked")))
    })
}

/// `create_dir_all`, again when a parent it made was removed before the child could be made
/// in it: an empty parent cgroup is removed with the last VM (see
/// [`crate::cgroup_parents`]) while another VM's create may be making it.
fn create_dir_racing(dir: &Path) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::create_dir_all(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 5 => tries += 1,
            r => return r,
        }
    }
}

fn at(path: &Path, op: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
}

/// A cgroup directory that could not be removed.
#[derive(Debug, thiserror::Error)]
#[error("removing cgroup directory {}: {source}", path.display())]
pub struct CgroupRemoveError {
    /// The directory.
    pub path: PathBuf,
    /// Cause (`EBUSY`: processes are still in it).
    pub source: io::Error,
}

/// Removes the cgroup directories the jailer created for `id` under `parent` (the jailer's
/// `--parent-cgroup`, by default the exec file's name) in every hierarchy of `mounts`.
/// Missing directories are skipped. Returns the directories removed.
///
/// The VM's processes must be gone: a directory that still holds one fails with `EBUSY`.
///
/// # Errors
/// [`ArgError`] (as an `InvalidInput` error) for bad arguments, else the first
/// [`CgroupRemoveError`] after trying every directory.
pub fn remove_jailer_cgroups(
    mounts: &CgroupMounts,
    parent: &str,
    id: &str,
) -> Result<Vec<PathBuf>, CgroupRemoveError> {
    let dirs = mounts
        .jailer_cgroup_dirs(parent, id)
        .map_err(|e| CgroupRemoveError {
            path: PathBuf::from(parent).join(id),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
    let mut removed = Vec::new();
    let mut first_error = None;
    for dir in dirs {
        match std::fs::remove_dir(&dir) {
            Ok(()) => removed.push(dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                if first_error.is_none() {
                    first_error = Some(CgroupRemoveError { path: dir, source });
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}

/// Parses the counter `key` from a cgroup "flat keyed" file (`key value` per line), as in
/// v1 `memory.oom_control` and v2 `memory.events`.
#[must_use]
pub fn parse_keyed_counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// How many processes the kernel's OOM killer has killed in the VM's memory cgroup
/// (`oom_kill` of v1 `memory.oom_control` or v2 `memory.events`). The supervisor reads it
/// when Firecracker has died, before removing the cgroup, to tell "killed for lack of memory"
/// from other deaths. `Ok(None)` when the cgroup does not exist (or has no memory controller).
///
/// # Errors
/// [`ArgError`] as `InvalidInput` for a bad parent or id, other I/O errors, and
/// `InvalidData` when the file has no `oom_kill` line (kernels before 4.13).
pub fn oom_kill_count(mounts: &CgroupMounts, parent: &str, id: &str) -> io::Result<Option<u64>> {
    validate_id(id).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    validate_rel_path("parent cgroup", parent)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let file = match (mounts.mode(), mounts.v1_controller_mount("memory")) {
        (Some(CgroupMode::V1 | CgroupMode::Hybrid), Some(memory)) => {
            memory.join(parent).join(id).join("memory.oom_control")
        }
        (Some(CgroupMode::V2), _) => match &mounts.unified {
            Some(unified) => unified.join(parent).join(id).join("memory.events"),
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("reading {}: {e}", file.display()),
            ));
        }
    };
    parse_keyed_counter(&text, "oom_kill")
        .map(Some)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} has no oom_kill counter", file.display()),
            )
        })
}
