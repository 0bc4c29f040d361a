//! Processes identified by pid and start time (so a recycled pid is never mistaken for the
//! process vmsan recorded). The `/proc` parsing is the Firecracker driver's; this module adapts
//! it to [`ProcessId`], the form the state files record.

use serde::{Deserialize, Serialize};
use vmsan_firecracker::process::{Liveness, ProcessIdentity};

/// A process identified by pid *and* start time, so a recycled pid is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessId {
    /// The pid in the host's PID namespace.
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks since boot).
    pub start_time: u64,
}

/// The identity of a live process (`None` if it does not exist or is a zombie).
pub fn identify(pid: u32) -> Option<ProcessId> {
    let p = ProcessIdentity::of(i32::try_from(pid).ok()?).ok()?;
    Some(ProcessId {
        pid,
        start_time: p.start_time,
    })
}

/// Is this exact process (not a later one that reused its pid) still alive? Zombies count as
/// gone: they have exited and only wait to be reaped.
pub fn is_alive(p: &ProcessId) -> bool {
    let Ok(pid) = i32::try_from(p.pid) else {
        return false;
    };
    matches!(
        ProcessIdentity {
            pid,
            start_time: p.start_time
        }
        .liveness(),
        Ok(Liveness::Alive)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = identify(std::process::id()).unwrap();
        assert!(is_alive(&me));
        let recycled = ProcessId {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(!is_alive(&recycled));
    }

    #[test]
    fn exited_child_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = identify(child.id());
        child.wait().unwrap();
        if let Some(id) = id {
            assert!(!is_alive(&id));
        }
    }

    #[test]
    fn missing_pids_are_not_alive() {
        assert!(identify(u32::MAX).is_none());
        assert!(!is_alive(&ProcessId {
            pid: u32::MAX,
            start_time: 1
        }));
    }
}
