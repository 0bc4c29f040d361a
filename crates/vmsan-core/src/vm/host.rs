//! Host resources of a VM that both processes handle: the resolved binaries and jail
//! (`Launch`), the network's identity and policy as the state records them, the cgroups, and
//! the teardown that undoes a run (the supervisor's at the end of a run; a caller's when the
//! supervisor is gone). What only the supervisor sets up is in `supervisor::launch`.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

use vmsan_firecracker::cgroup_parents::ParentRegistry;
use vmsan_firecracker::{CgroupMounts, JailLayout};
use vmsan_net::{Bandwidth, HostConfig, Policy, Slot, VmNet, VmNetSpec};
use vmsan_proto::FsType;

use crate::artifacts;
use crate::error::{Error, ErrorCode, Result};
use crate::paths::Paths;
use crate::state::{Isolation, NetworkPolicy, NetworkState, VmState};

/// Environment variable naming a network namespace (a bind-mount path such as
/// `/run/netns/uplink`) that plays the host for VM networking: VMs' veths, routes and NAT go
/// there instead of the root namespace. Unset: the real host.
pub const HOST_NETNS_ENV: &str = "VMSAN_HOST_NETNS";

/// Firecracker's own memory on top of the guest's: in the cgroup limit, and in the host memory
/// a restore needs per clone.
pub(crate) const VMM_OVERHEAD_MIB: u64 = 64;

/// The resolved, trusted pieces of one VM run.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) firecracker: PathBuf,
    pub(crate) jailer: Option<PathBuf>,
    pub(crate) layout: JailLayout,
    pub(crate) rootfs_fs: FsType,
    pub(crate) isolation: Isolation,
}

impl Launch {
    /// Check the binaries this VM needs and compute its jail.
    pub(crate) fn resolve(paths: &Paths, st: &VmState) -> Result<Self> {
        let firecracker = trusted_binary(&artifacts::firecracker_path(paths), "Firecracker")?;
        let jailer = if st.isolation.jailer {
            Some(trusted_binary(&artifacts::jailer_path(paths), "jailer")?)
        } else {
            None
        };
        let layout = JailLayout::new(&paths.jail_dir(), &firecracker, st.id.as_str())
            .map_err(|e| Error::new(ErrorCode::Internal, format!("jail layout: {e}")))?;
        Ok(Self {
            firecracker,
            jailer,
            layout,
            rootfs_fs: st.rootfs_fs,
            isolation: st.isolation,
        })
    }

    /// With the jailer and a PID namespace, the jailer forks Firecracker and exits: we adopt it.
    pub(crate) fn adopts_vmm(&self) -> bool {
        self.jailer.is_some() && self.isolation.pid_ns
    }
}

fn trusted_binary(path: &Path, what: &str) -> Result<PathBuf> {
    if !path.exists() {
        return Err(Error::new(
            ErrorCode::SetupMissingBinary,
            format!("{what} not found at {}", path.display()),
        ));
    }
    artifacts::check_trusted_file(path).map_err(|why| {
        Error::new(
            ErrorCode::SetupUnsafeBinary,
            format!("refusing to run {what}: {why}"),
        )
    })?;
    Ok(path.to_owned())
}

/// The host configuration for VM networking.
pub fn host_config() -> HostConfig {
    let mut host = HostConfig::default();
    if let Some(ns) = std::env::var_os(HOST_NETNS_ENV).filter(|v| !v.is_empty()) {
        host.host_netns = Some(PathBuf::from(ns));
    }
    host
}

/// The egress policy a VM's state records, in the network crate's shape (the record's
/// values are typed: nothing is parsed here).
pub(crate) fn policy_of(net: &NetworkState) -> Policy {
    match net.network_policy {
        NetworkPolicy::AllowAll => Policy::AllowAll,
        NetworkPolicy::DenyAll => Policy::DenyAll,
        NetworkPolicy::Custom => Policy::Custom(vmsan_net::CustomPolicy {
            allowed_cidrs: net.allowed_cidrs.clone(),
            denied_cidrs: net.denied_cidrs.clone(),
            allowed_domains: net.allowed_domains.clone(),
            ..vmsan_net::CustomPolicy::default()
        }),
    }
}

pub(crate) fn spec_of(st: &VmState, slot: u32, uid: u32, gid: u32) -> Result<VmNetSpec> {
    let net = &st.network;
    let slot = Slot::new(slot).map_err(|e| super::convert::net(e, "network slot"))?;
    Ok(VmNetSpec {
        vm_id: st.id.to_string(),
        slot,
        jail_uid: uid,
        jail_gid: gid,
        policy: policy_of(net),
        published_ports: net.published_ports.clone(),
        bandwidth: net.bandwidth_mbit.map(|m| Bandwidth {
            rx_mbit: m,
            tx_mbit: m,
        }),
        dns_upstreams: net
            .dns_servers
            .iter()
            .map(|ip| SocketAddrV4::new(*ip, 53))
            .collect(),
        allow_udp: net.allow_udp,
        allow_lan: net.allow_lan,
    })
}

/// The network a running VM already has, as recorded in its state.
pub(crate) fn vm_net_of(st: &VmState) -> Result<VmNet> {
    let slot = st
        .network
        .slot
        .ok_or_else(|| Error::new(ErrorCode::Internal, "VM has no slot"))?;
    let (uid, gid) = super::files::jail_ids(slot);
    let spec = spec_of(st, slot, uid, gid)?;
    let host = host_config();
    Ok(VmNet {
        netns_path: host
            .netns_path(&spec.vm_id)
            .map_err(|e| super::convert::net(e, "network namespace"))?,
        vm_id: spec.vm_id,
        slot: spec.slot,
        addrs: spec.slot.addrs(),
        tap_name: "tap0".into(),
        host_veth: spec.slot.host_veth(),
        policy: spec.policy,
        allow_udp: spec.allow_udp,
        allow_lan: spec.allow_lan,
        host_nets: Vec::new(),
        published_ports: spec.published_ports,
        bandwidth: spec.bandwidth,
        dns_upstreams: spec.dns_upstreams,
    })
}

/// The record of the parent cgroups made for VMs (`/run/vmsan/cgroups`, see
/// [`ParentRegistry`]), host-wide like the cgroups themselves.
pub(crate) fn cgroup_registry() -> Result<ParentRegistry> {
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
pub(crate) const JAILER_PARENT_CGROUP: &str = "firecracker";

/// Undo a run: network (and a leak check), jail, cgroups. Never fails: returns what it could
/// not clean, for the log.
pub(crate) async fn teardown(paths: &Paths, st: &VmState) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(slot) = st.network.slot {
        let host = host_config();
        let id = st.id.to_string();
        let r = tokio::task::spawn_blocking(move || -> std::result::Result<Vec<String>, String> {
            let slot = Slot::new(slot).map_err(|e| e.to_string())?;
            vmsan_net::teardown(&host, &id, slot).map_err(|e| e.to_string())?;
            let leaks = vmsan_net::leaks(&host, &id, slot).map_err(|e| e.to_string())?;
            Ok(leaks.iter().map(|l| format!("leaked {l:?}")).collect())
        })
        .await;
        match r {
            Ok(Ok(leaks)) => problems.extend(leaks),
            Ok(Err(e)) => problems.push(format!("network: {e}")),
            Err(e) => problems.push(format!("network task: {e}")),
        }
    }
    match Launch::resolve(paths, st) {
        Ok(launch) => {
            if let Err(e) = vmsan_firecracker::remove_jail(&launch.layout) {
                problems.push(format!("jail: {e}"));
            }
            if launch.jailer.is_some() && launch.isolation.cgroup {
                match CgroupMounts::detect() {
                    Ok(m) => {
                        if let Err(e) =
                            remove_cgroups_when_empty(&m, launch.layout.exec_name(), st.id.as_str())
                                .await
                        {
                            problems.push(format!("cgroups: {e}"));
                        }
                    }
                    Err(e) => problems.push(format!("cgroups: {e}")),
                }
            }
        }
        Err(e) => problems.push(format!("jail: {e}")),
    }
    problems
}

/// Remove the jailer's cgroup directories of a VM. Processes of the VM may still be leaving
/// them for a moment after it ended (rmdir then says EBUSY), so retry for a bounded time.
async fn remove_cgroups_when_empty(
    mounts: &CgroupMounts,
    parent: &str,
    id: &str,
) -> std::result::Result<(), vmsan_firecracker::cgroup::CgroupRemoveError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        match vmsan_firecracker::remove_jailer_cgroups(mounts, parent, id) {
            Ok(_) => return Ok(()),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

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
