//! Processes identified by pid and start time, read from `/proc`.

use crate::state::ProcessId;

/// The start time (field 22 of `/proc/<pid>/stat`) of a live process, or `None`.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards; start time is field 22, the 20th of these.
    after.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// The identity of a live process.
pub fn identify(pid: u32) -> Option<ProcessId> {
    start_time(pid).map(|start_time| ProcessId { pid, start_time })
}

/// Is this exact process (not a later one that reused its pid) still alive? Zombies count as
/// gone: they have exited and only wait to be reaped.
pub fn is_alive(p: &ProcessId) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", p.pid)) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_ascii_whitespace().next());
    if matches!(state, Some("Z" | "X")) {
        return false;
    }
    parse_start_time(&stat) == Some(p.start_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(line), Some(987_654));
    }

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
}
