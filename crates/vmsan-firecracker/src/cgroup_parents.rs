//! Parent cgroups made for VMs, removed again with the last VM.
//!
//! The jailer's parent (`<hierarchy>/firecracker`, holding one cgroup per VM) and the
//! supervisors' `<hierarchy>/vmsan` are made on demand in every hierarchy, and nothing removes
//! them: the kernel does not, the jailer does not. A [`ParentRegistry`] records which of them
//! were made for vmsan (one file per directory, in a root-only directory under `/run`), so a
//! parent that existed before (an administrator's, another tool's) is never removed.
//!
//! Removal is `rmdir`, which the kernel refuses (`EBUSY`) while a cgroup holds a child cgroup
//! or a process: a parent in use by any VM, of any vmsan home, stays. A create racing with the
//! removal finds the parent gone and makes it again (`create_dir_all`, or the jailer's own
//! `mkdir -p`); the record is kept when its directory goes, so that parent is still known as
//! vmsan's and goes with the next last VM. `/run` is a tmpfs: records do not outlive a reboot,
//! and neither do cgroups.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cgroup::CgroupMounts;

/// Records of the parent cgroups made for vmsan (see the module documentation).
#[derive(Debug, Clone)]
pub struct ParentRegistry {
    dir: PathBuf,
}

impl ParentRegistry {
    /// A registry kept in `dir` (which the caller has made private to root).
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The parents `<hierarchy>/<name>` (for every hierarchy of `mounts` and every name) that
    /// do not exist now: take this before something may make them.
    #[must_use]
    pub fn absent(mounts: &CgroupMounts, names: &[&str]) -> Vec<PathBuf> {
        roots(mounts)
            .flat_map(|root| names.iter().map(move |n| root.join(n)))
            .filter(|p| single_child_of_a_root(mounts, p) && !p.exists())
            .collect()
    }

    /// Records those of `was_absent` ([`absent`](Self::absent) before) that exist now: made
    /// by this VM's create (or by a concurrent one).
    ///
    /// # Errors
    /// The record that could not be written.
    pub fn record_made(&self, was_absent: &[PathBuf]) -> io::Result<()> {
        let made: Vec<PathBuf> = was_absent.iter().filter(|p| p.exists()).cloned().collect();
        self.record(&made)
    }

    /// Records `parents` as vmsan's, whether or not they exist yet (the jailer makes them
    /// later).
    ///
    /// # Errors
    /// The record that could not be written.
    pub fn record(&self, parents: &[PathBuf]) -> io::Result<()> {
        for p in parents {
            let file = self.dir.join(record_name(p));
            if !file.exists() {
                std::fs::write(&file, b"").map_err(|e| at(&file, e))?;
            }
        }
        Ok(())
    }

    /// The recorded parents that are still `<hierarchy root>/<one name>` of `mounts` (a
    /// record naming anything else is ignored), whether they exist or not.
    #[must_use]
    pub fn recorded(&self, mounts: &CgroupMounts) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(parse_record_name))
            .filter(|p| single_child_of_a_root(mounts, p))
            .collect();
        out.sort();
        out
    }

    /// Removes every recorded parent that is empty (no child cgroup, no process). A parent
    /// with no child cgroup that is still busy (a supervisor that is exiting) is retried for
    /// up to `patience`. Returns the directories removed.
    #[must_use]
    pub fn remove_empty(&self, mounts: &CgroupMounts, patience: Duration) -> Vec<PathBuf> {
        let deadline = Instant::now() + patience;
        let mut removed = Vec::new();
        for dir in self.recorded(mounts) {
            let mut pause = Duration::from_millis(5);
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => {
                        removed.push(dir);
                        break;
                    }
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY)
                            && !has_child_cgroup(&dir)
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(100));
                    }
                    Err(_) => break,
                }
            }
        }
        removed
    }

    /// The recorded parents that exist and hold neither a child cgroup nor a process:
    /// leftovers.
    #[must_use]
    pub fn leftovers(&self, mounts: &CgroupMounts) -> Vec<PathBuf> {
        self.recorded(mounts)
            .into_iter()
            .filter(|p| is_empty_cgroup(p))
            .collect()
    }
}

/// The parents `<hierarchy>/<name>` (every hierarchy, every name) that exist and hold
/// neither a child cgroup nor a process, recorded or not: what `doctor` shows.
#[must_use]
pub fn empty_parents(mounts: &CgroupMounts, names: &[&str]) -> Vec<PathBuf> {
    roots(mounts)
        .flat_map(|root| names.iter().map(move |n| root.join(n)))
        .filter(|p| single_child_of_a_root(mounts, p) && is_empty_cgroup(p))
        .collect()
}

/// A cgroup directory with no child cgroup and no process (`cgroup.procs` is empty).
fn is_empty_cgroup(dir: &Path) -> bool {
    dir.is_dir()
        && !has_child_cgroup(dir)
        && std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|t| t.trim().is_empty())
}

fn roots(mounts: &CgroupMounts) -> impl Iterator<Item = &Path> {
    mounts
        .v1
        .iter()
        .map(|h| h.mount_point.as_path())
        .chain(mounts.unified.as_deref())
}

/// Whether `p` is `<root>/<name>` for a hierarchy root of `mounts` and one plain name.
fn single_child_of_a_root(mounts: &CgroupMounts, p: &Path) -> bool {
    let plain_name = p
        .file_name()
        .is_some_and(|n| matches!(Path::new(n).components().next(), Some(Component::Normal(_))));
    plain_name
        && p.parent()
            .is_some_and(|parent| roots(mounts).any(|r| r == parent))
}

fn has_child_cgroup(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        })
        .unwrap_or(false)
}

/// A record's file name: the path's bytes in hex (any path fits one file name).
fn record_name(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    p.as_os_str()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_record_name(name: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt as _;
    if !name.len().is_multiple_of(2) || name.len() > 512 {
        return None;
    }
    let bytes = (0..name.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(name.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(PathBuf::from(std::ffi::OsString::from_vec(bytes))).filter(|p| p.is_absolute())
}

fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::V1Hierarchy;

    #[test]
    fn records_round_trip_and_only_name_a_child_of_a_root() {
        let p = Path::new("/sys/fs/cgroup/memory/firecracker");
        assert_eq!(parse_record_name(&record_name(p)).as_deref(), Some(p));
        assert_eq!(parse_record_name("zz"), None);
        assert_eq!(parse_record_name(&record_name(Path::new("rel"))), None);
        let mounts = CgroupMounts {
            v1: vec![V1Hierarchy {
                mount_point: "/sys/fs/cgroup/memory".into(),
                controllers: vec!["memory".into()],
            }],
            unified: None,
        };
        assert!(single_child_of_a_root(&mounts, p));
        for bad in [
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/memory/a/b",
            "/sys/fs/cgroup/memory/..",
            "/etc/firecracker",
        ] {
            assert!(!single_child_of_a_root(&mounts, Path::new(bad)), "{bad}");
        }
    }
}
