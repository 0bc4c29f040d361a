//! Undoing a run: network, jail, cgroups.

use vmsan_firecracker::CgroupMounts;
use vmsan_net::Slot;

use super::launch::Launch;
use super::network::host_config;
use crate::paths::Paths;
use crate::state::VmState;

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
