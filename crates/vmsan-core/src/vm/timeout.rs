//! `--timeout` and interactive sessions.
//!
//! A VM created with `--timeout T` is stopped (gracefully, by its supervisor) at `timeoutAt`,
//! T after it booted. An interactive `vmsan exec -i` session (unless `--no-extend-timeout`)
//! holds that off:
//!
//! - while the session is attached the VM is not stopped for its timeout, however long the
//!   session lasts;
//! - when the session ends, `timeoutAt` becomes the later of the recorded deadline and T from
//!   then: the VM gets at least a full timeout after its last interactive session.
//!
//! A session is recorded in the VM's state as the process identity of its `vmsan exec -i`
//! (`timeoutHolders`). The command takes itself off when the session ends; the supervisor
//! also watches each holder with a pidfd, so a session whose command is killed (even with
//! SIGKILL) ends its hold at that moment and cannot keep the VM up forever.

use crate::error::Result;
use crate::ids::VmId;
use crate::paths::Paths;
use crate::state::{ProcessId, StateStore, VmState, VmStatus};
use crate::{process, time};

/// This process holds off a VM's timeout until [`TimeoutHold::release`] (or drop).
#[derive(Debug)]
pub struct TimeoutHold {
    store: StateStore,
    id: VmId,
    me: ProcessId,
    released: bool,
}

impl TimeoutHold {
    /// Hold off the timeout of VM `id` while this process lives. `None` when the VM has no
    /// timeout or is not running (nothing to hold off).
    pub fn acquire(paths: &Paths, id: &VmId) -> Result<Option<Self>> {
        let store = StateStore::open(paths)?;
        let Some(me) = process::identify(std::process::id()) else {
            return Ok(None);
        };
        let mut held = false;
        let st = store.update(id, |st| {
            if st.timeout_ms.is_none() || st.status != VmStatus::Running {
                return Ok(());
            }
            // Holders that are gone hold nothing.
            st.timeout_holders.retain(process::is_alive);
            st.timeout_holders.push(me);
            held = true;
            Ok(())
        })?;
        if !held {
            return Ok(None);
        }
        notify_supervisor(&st);
        Ok(Some(Self {
            store,
            id: id.clone(),
            me,
            released: false,
        }))
    }

    /// The session is over: the VM gets a full timeout from now (or keeps a later deadline).
    pub fn release(mut self) -> Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<()> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        let me = self.me;
        let st = self.store.update(&self.id, |st| {
            end_holds(st, |h| *h == me, time::epoch_ms());
            Ok(())
        })?;
        notify_supervisor(&st);
        Ok(())
    }
}

impl Drop for TimeoutHold {
    fn drop(&mut self) {
        if let Err(e) = self.release_inner() {
            tracing::warn!(vm = %self.id, "could not end the hold on the VM's timeout: {e}");
        }
    }
}

/// End the holds of the holders `ended` picks (and of holders that are gone): they leave
/// `timeoutHolders`, and the deadline becomes the later of the recorded one and a full
/// timeout from `now_ms`. Returns whether any hold ended.
pub(crate) fn end_holds(
    st: &mut VmState,
    mut ended: impl FnMut(&ProcessId) -> bool,
    now_ms: u64,
) -> bool {
    let before = st.timeout_holders.len();
    st.timeout_holders
        .retain(|h| !ended(h) && process::is_alive(h));
    if st.timeout_holders.len() == before {
        return false;
    }
    if let Some(ms) = st.timeout_ms {
        let recorded = st
            .timeout_at
            .as_deref()
            .and_then(time::parse_rfc3339)
            .unwrap_or(0);
        let at = recorded.max(now_ms.saturating_add(ms));
        st.timeout_at = Some(time::format_rfc3339(at));
    }
    true
}

/// Ask a VM's supervisor to re-read the VM's state (SIGUSR1).
pub(crate) fn notify_supervisor(st: &VmState) {
    if let Some(sup) = st.supervisor {
        crate::vm::protocol::request_reload(&sup);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(timeout_ms: Option<u64>, at: Option<u64>) -> VmState {
        let id = VmId::parse("vm-1a2b3c4d").unwrap();
        let mut st = VmState::new(id, "2026-01-01T00:00:00.000Z");
        st.timeout_ms = timeout_ms;
        st.timeout_at = at.map(time::format_rfc3339);
        st
    }

    #[test]
    fn an_ended_session_gives_a_full_timeout_from_its_end() {
        let me = process::identify(std::process::id()).unwrap();
        let mut st = vm(Some(60_000), Some(1_000_000));
        st.timeout_holders = vec![me];
        assert!(end_holds(&mut st, |h| *h == me, 2_000_000));
        assert!(st.timeout_holders.is_empty());
        assert_eq!(
            st.timeout_at.as_deref(),
            Some(time::format_rfc3339(2_060_000).as_str())
        );
    }

    #[test]
    fn a_later_deadline_is_kept_and_live_holders_stay() {
        let me = process::identify(std::process::id()).unwrap();
        let gone = ProcessId {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        let mut st = vm(Some(60_000), Some(5_000_000));
        st.timeout_holders = vec![me, gone];
        // Nothing picked, but a holder that is gone ends its hold.
        assert!(end_holds(&mut st, |_| false, 2_000_000));
        assert_eq!(st.timeout_holders, vec![me]);
        assert_eq!(
            st.timeout_at.as_deref(),
            Some(time::format_rfc3339(5_000_000).as_str())
        );
        // No change at all: nothing to record.
        assert!(!end_holds(&mut st, |_| false, 2_000_000));
    }
}
