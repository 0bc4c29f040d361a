//! `vmsan network`: change a running VM's egress policy in one atomic nftables transaction.

use crate::error::{Error, ErrorCode, Result};
use crate::ids::VmId;
use crate::paths::Paths;
use crate::state::{NetworkState, StateStore, VmStatus};
use crate::validate::NetworkRules;

/// The policy before and after a change.
#[derive(Debug, Clone)]
pub struct PolicyChange {
    /// The previous policy.
    pub previous: crate::state::NetworkPolicy,
    /// The network state now in force.
    pub network: NetworkState,
}

/// Replace a running VM's policy: the VM's nftables table first (no window without rules),
/// then its record, then its supervisor's DNS filter (signalled to re-read the record).
pub fn set_policy(paths: &Paths, id: &VmId, rules: &NetworkRules) -> Result<PolicyChange> {
    let store = StateStore::open(paths)?;
    let lock = store.lock_vm(id)?;
    let mut st = store.get(id)?;
    // Host-side rules: a VM a snapshot holds paused gets them as well.
    if !matches!(st.status, VmStatus::Running | VmStatus::Paused) {
        return Err(Error::new(
            ErrorCode::VmNotRunning,
            format!("VM {id} is {}", st.status.as_str()),
        )
        .detail("vmId", id.as_str()));
    }
    let previous = st.network.network_policy;
    let mut net = crate::vm::host::vm_net_of(&st)?;
    st.network.network_policy = rules.policy;
    st.network.allowed_domains = rules.allowed_domains.clone();
    st.network.allowed_cidrs = rules.allowed_cidrs.clone();
    st.network.denied_cidrs = rules.denied_cidrs.clone();
    st.network.allow_udp = rules.allow_udp;
    st.network.allow_lan = rules.allow_lan;
    let policy = crate::vm::host::policy_of(&st.network);
    net.allow_udp = rules.allow_udp;
    net.allow_lan = rules.allow_lan;
    // The networks around the host as they are now (an uplink may have changed since the
    // VM started).
    net.host_nets = vmsan_net::host_networks(&crate::vm::host::host_config()).map_err(|e| {
        Error::new(
            ErrorCode::NftSetupFailed,
            format!("reading the host's connected networks: {e}"),
        )
    })?;
    vmsan_net::apply_policy(&mut net, &policy).map_err(|e| {
        Error::new(
            ErrorCode::NftSetupFailed,
            format!("applying the new policy: {e}"),
        )
    })?;
    let network = st.network.clone();
    let updated = store.update_locked(&lock, |rec| {
        rec.network = network.clone();
        Ok(())
    })?;
    if let Some(sup) = updated.supervisor {
        crate::vm::protocol::request_reload(&sup);
    }
    Ok(PolicyChange { previous, network })
}
