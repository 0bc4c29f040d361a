//! The cgroups around VMs: the parents made for them (recorded host-wide, removed when unused)
//! and the cgroup a supervisor is born into, away from its caller's.

use std::path::{Path, PathBuf};

use vmsan_firecracker::CgroupMounts;
use vmsan_firecracker::cgroup_parents::ParentRegistry;

use crate::error::{Error, Result};

/// The record of the parent cgroups made for VMs (`/run/vmsan/cgroups`, see
/// [`ParentRegistry`]), host-wide like the cgroups themselves.
fn cgroup_registry() -> Result<ParentRegistry> {
    let run = Path::new(crate::paths::DEFAULT_RUN_DIR);
    let dir = run.join("cgroups");
    crate::state::ensure_private_dir(run)?;
    crate::state::ensure_private_dir(&dir)?;
    Ok(ParentRegistry::new(dir))
}

/// Records parent cgroups as made for vmsan. Best effort: without the record, a parent only
/// stays after the last VM (and `doctor` cannot name it), so the VM goes on.
pub(crate) fn record_cgroup_parents(f: impl FnOnce(&ParentRegistry) -> std::io::Result<()>) {
    let r =
        cgroup_registry().and_then(|r| f(&r).map_err(|e| Error::io("record cgroup parents", e)));
    if let Err(e) = r {
        tracing::warn!("{e}");
    }
}

/// Removes the parent cgroups made for VMs that no VM uses any more (the kernel refuses to
/// remove one that holds a VM's cgroup or a process). `last`: no VM of any home is left, so a
/// parent still busy is one whose last process (a supervisor) is exiting: wait for it a
/// little. Returns the directories removed.
pub(crate) fn remove_unused_cgroup_parents(last: bool) -> Vec<PathBuf> {
    let (Ok(registry), Ok(mounts)) = (cgroup_registry(), CgroupMounts::detect()) else {
        return Vec::new();
    };
    let patience = if last {
        std::time::Duration::from_secs(2)
    } else {
        std::time::Duration::ZERO
    };
    registry.remove_empty(&mounts, patience)
}

/// Parent cgroups made for VMs that exist and hold no VM's cgroup (for `doctor`): the
/// recorded ones, and the jailer's (`firecracker`) and supervisors' (`vmsan`) by name (left
/// by a vmsan that did not record them yet).
pub(crate) fn cgroup_parent_leftovers() -> Vec<PathBuf> {
    let Ok(mounts) = CgroupMounts::detect() else {
        return Vec::new();
    };
    let mut left = cgroup_registry()
        .map(|r| r.leftovers(&mounts))
        .unwrap_or_default();
    for p in vmsan_firecracker::cgroup_parents::empty_parents(
        &mounts,
        &[JAILER_PARENT_CGROUP, CALLER_FREE_CGROUP],
    ) {
        if !left.contains(&p) {
            left.push(p);
        }
    }
    left.sort();
    left
}

/// The jailer's parent cgroup: its `--parent-cgroup` default, the Firecracker binary's name.
const JAILER_PARENT_CGROUP: &str = "firecracker";

/// The v1 cgroups a supervisor is spawned into (see `cgroup::spawn_born_in`): the `vmsan`
/// cgroup of each v1 hierarchy where this process sits in some cgroup other than the root or
/// `/vmsan`, created as needed. A hierarchy whose directory cannot be made is left out (the
/// supervisor then moves itself, see [`leave_caller_cgroup`]).
pub(crate) fn caller_free_v1_cgroups() -> Vec<PathBuf> {
    let (Ok(mounts), Ok(own)) = (
        CgroupMounts::detect(),
        std::fs::read_to_string("/proc/self/cgroup"),
    ) else {
        return Vec::new();
    };
    mounts
        .v1
        .iter()
        .filter(|h| in_caller_cgroup(&own, Some(h.controllers.as_slice())))
        .filter_map(|h| caller_free_cgroup(&h.mount_point).ok())
        .collect()
}

/// The `vmsan` cgroup of the hierarchy mounted at `root`, made if needed. A new cpuset
/// cgroup has no CPUs or memory nodes, and no task can join it until it has: it gets the
/// root's.
fn caller_free_cgroup(root: &Path) -> std::io::Result<PathBuf> {
    let dir = root.join(CALLER_FREE_CGROUP);
    let absent = !dir.exists();
    std::fs::create_dir_all(&dir)?;
    if absent {
        record_cgroup_parents(|r| r.record_made(std::slice::from_ref(&dir)));
    }
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mine = dir.join(file);
        if mine.exists() && std::fs::read_to_string(&mine)?.trim().is_empty() {
            std::fs::write(&mine, std::fs::read_to_string(root.join(file))?.trim())?;
        }
    }
    Ok(dir)
}

/// Move this process out of the caller's cgroups (into `vmsan` cgroups), so that stopping the
/// service or session that ran `vmsan create` does not take the VM down. On cgroup v1 the
/// supervisor is normally born there already ([`caller_free_v1_cgroups`]); this handles the
/// unified hierarchy, and any v1 hierarchy that was not left at birth. Only hierarchies
/// where this process is in some cgroup other than the root (or `/vmsan`) are touched: each
/// move is costly (the kernel waits for an RCU grace period before the first), and the root
/// cgroup belongs to no caller. Best effort: a failure is logged, and the VM still runs.
pub(crate) fn leave_caller_cgroup() {
    let Ok(mounts) = CgroupMounts::detect() else {
        return;
    };
    let own = match std::fs::read_to_string("/proc/self/cgroup") {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!("cannot read /proc/self/cgroup: {e}");
            return;
        }
    };
    let pid = std::process::id().to_string();
    let hierarchies = mounts
        .v1
        .iter()
        .map(|h| (h.mount_point.as_path(), Some(h.controllers.as_slice())))
        .chain(mounts.unified.as_deref().map(|u| (u, None)));
    for (root, controllers) in hierarchies {
        if !in_caller_cgroup(&own, controllers) {
            continue;
        }
        let dir = root.join(CALLER_FREE_CGROUP);
        let moved =
            caller_free_cgroup(root).and_then(|dir| std::fs::write(dir.join("cgroup.procs"), &pid));
        if let Err(e) = moved {
            tracing::warn!("could not move into {}: {e}", dir.display());
        }
    }
}

/// The cgroup (in each hierarchy) that supervisors move into.
const CALLER_FREE_CGROUP: &str = "vmsan";

/// Whether `/proc/self/cgroup` (its text) puts us in a cgroup other than the root and
/// `/vmsan` of the v1 hierarchy with these controllers (`None`: the v2 hierarchy). A
/// hierarchy the file does not list is left alone.
fn in_caller_cgroup(proc_cgroup: &str, controllers: Option<&[String]>) -> bool {
    proc_cgroup.lines().any(|line| {
        let mut f = line.splitn(3, ':');
        let (Some(_id), Some(list), Some(path)) = (f.next(), f.next(), f.next()) else {
            return false;
        };
        let matches = match controllers {
            None => list.is_empty(),
            Some(cs) => {
                !list.is_empty()
                    && list.split(',').all(|c| cs.iter().any(|m| m == c))
                    && cs.iter().all(|m| list.split(',').any(|c| c == m))
            }
        };
        matches && path != "/" && path.trim_end_matches('/') != format!("/{CALLER_FREE_CGROUP}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_CGROUP: &str = "\
9:name=systemd:/
4:memory:/process_api/4cecf20e
2:cpu,cpuacct:/user.slice
1:pids:/vmsan
0::/
";

    fn v1(cs: &[&str]) -> Vec<String> {
        cs.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn only_hierarchies_where_we_sit_in_a_callers_cgroup_are_left() {
        assert!(in_caller_cgroup(PROC_CGROUP, Some(&v1(&["memory"]))));
        assert!(in_caller_cgroup(
            PROC_CGROUP,
            Some(&v1(&["cpuacct", "cpu"]))
        ));
        // The root, our own cgroup, and hierarchies not listed are left alone.
        assert!(!in_caller_cgroup(PROC_CGROUP, Some(&v1(&["name=systemd"]))));
        assert!(!in_caller_cgroup(PROC_CGROUP, Some(&v1(&["pids"]))));
        assert!(!in_caller_cgroup(PROC_CGROUP, Some(&v1(&["cpu"]))));
        assert!(!in_caller_cgroup(PROC_CGROUP, Some(&v1(&["blkio"]))));
        assert!(!in_caller_cgroup(PROC_CGROUP, None));
        assert!(in_caller_cgroup("0::/user.slice/session-1.scope\n", None));
    }
}
