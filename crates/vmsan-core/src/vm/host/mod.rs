//! Host resources of a VM that both processes handle: the resolved binaries and jail
//! ([`launch`]), the network's identity and policy as the state records them ([`network`]), the
//! cgroups ([`cgroups`]), and the teardown that undoes a run ([`teardown`]: the supervisor's at
//! the end of a run; a caller's when the supervisor is gone). What only the supervisor sets up
//! is in `supervisor::launch`.

mod cgroups;
mod launch;
mod network;
mod teardown;

pub(crate) use cgroups::{
    caller_free_v1_cgroups, cgroup_parent_leftovers, leave_caller_cgroup, record_cgroup_parents,
    remove_unused_cgroup_parents,
};
pub(crate) use launch::{Launch, VMM_OVERHEAD_MIB};
pub use network::{HOST_NETNS_ENV, host_config};
pub(crate) use network::{policy_of, spec_of, vm_net_of};
pub(crate) use teardown::teardown;
