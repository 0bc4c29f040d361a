//! The `--json` documents of `vmsan list` and `vmsan inspect`. Their shape is a documented,
//! versioned contract (README, "JSON output"): fields may be added, never renamed or removed
//! without bumping [`REPORT_SCHEMA_VERSION`].

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::state::{ListEntry, VmState};

/// Version of the `list` and `inspect` JSON documents.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// One row of `vmsan list --json`.
pub fn list_row(st: &VmState) -> Value {
    json!({
        "id": st.id,
        "status": st.status,
        "createdAt": st.created_at,
        "memSizeMib": st.mem_size_mib,
        "vcpuCount": st.vcpu_count,
        "runtime": st.runtime,
        "image": st.image.as_ref().map(|i| i.reference.clone()),
        "project": st.project,
        "guestIp": st.network.guest_ip.map(|ip| ip.to_string()),
        "networkPolicy": st.network.network_policy,
        "pid": st.pid,
        "timeoutAt": st.timeout_at,
        "snapshot": st.snapshot,
        "error": st.error,
    })
}

/// The whole `vmsan list --json` document.
pub fn list_json(entries: &[ListEntry]) -> Value {
    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    let mut vms = Vec::with_capacity(entries.len());
    let mut corrupt = Vec::new();
    for e in entries {
        match e {
            ListEntry::Vm(st) => {
                *statuses.entry(st.status.as_str()).or_default() += 1;
                vms.push(list_row(st));
            }
            ListEntry::Corrupt { id, path, error } => corrupt.push(json!({
                "id": id,
                "path": path.display().to_string(),
                "error": error,
            })),
        }
    }
    json!({
        "schemaVersion": REPORT_SCHEMA_VERSION,
        "count": vms.len(),
        "statuses": statuses,
        "vms": vms,
        "corrupt": corrupt,
    })
}

/// The whole `vmsan inspect --json` document: the full state, minus the agent token.
pub fn inspect_json(st: &VmState) -> Value {
    json!({ "schemaVersion": REPORT_SCHEMA_VERSION, "vm": st.public_json() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::VmId;
    use crate::state::VmStatus;

    fn vm(id: &str, status: VmStatus) -> VmState {
        let mut st = VmState::new(VmId::parse(id).unwrap(), "2026-11-28T21:00:00.000Z");
        st.status = status;
        st.agent_token = Some("secret-token".into());
        st
    }

    #[test]
    fn list_counts_statuses_and_reports_corrupt_entries() {
        let entries = vec![
            ListEntry::Vm(Box::new(vm("vm-00000001", VmStatus::Running))),
            ListEntry::Vm(Box::new(vm("vm-00000002", VmStatus::Running))),
            ListEntry::Vm(Box::new(vm("vm-00000003", VmStatus::Stopped))),
            ListEntry::Corrupt {
                id: "vm-00000004".into(),
                path: "/x/state.json".into(),
                error: "bad".into(),
            },
        ];
        let v = list_json(&entries);
        assert_eq!(v["schemaVersion"], 1);
        assert_eq!(v["count"], 3);
        assert_eq!(v["statuses"]["running"], 2);
        assert_eq!(v["statuses"]["stopped"], 1);
        assert_eq!(v["vms"][0]["id"], "vm-00000001");
        assert_eq!(v["vms"][0]["memSizeMib"], 128);
        assert_eq!(v["corrupt"][0]["id"], "vm-00000004");
        assert!(!v.to_string().contains("secret-token"));
    }

    #[test]
    fn inspect_never_prints_the_token() {
        let v = inspect_json(&vm("vm-00000001", VmStatus::Running));
        assert_eq!(v["vm"]["id"], "vm-00000001");
        assert_eq!(v["vm"]["hasAgentToken"], true);
        assert!(v["vm"].get("agentToken").is_none());
        assert!(!v.to_string().contains("secret-token"));
    }
}
