//! nftables rulesets: built once as a small description ([`Ruleset`]) that is applied over
//! netlink as one atomic batch ([`Ruleset::apply`], no `nft` process), and that can also be
//! printed in nft's syntax ([`Ruleset::to_nft`]) for review, golden tests and the benchmark's
//! reference script. Both come from the same description, and a privileged test checks that
//! the kernel holds the same ruleset either way.
//!
//! # VM namespace: table `inet vmsan`
//!
//! Base chains hook at `filter - 10`. The forward chain sends **every** packet that enters
//! from the TAP to `guest_egress` before anything can accept it, so no guest packet skips the
//! policy (the Node.js vmsan accepted TAP-to-veth traffic before its policy rules, so a
//! guest's TCP went out whatever the policy said). `guest_egress`, in order:
//! anti-spoofing (must leave through the veth, must carry the guest's source address),
//! replies of established flows, the always-blocked destinations (the whole slot range
//! 198.18.0.0/15 — every VM, every TAP and transit address, the host's veth ends — plus
//! loopback, link-local, this-network and multicast), ICMP, DNS and DoT (53, 853) to anyone
//! (the guest's DNS goes to the filter on the TAP address, an `input` packet), DoH/QUIC to
//! known resolvers, UDP unless opted in, then the `policy` chain, then drop. The `input`
//! chain accepts from the guest only DNS to the TAP address; IPv6 is dropped everywhere
//! (and disabled by sysctl in the namespace).
//!
//! Published ports: `veth0 -> tap0` accepts new TCP/UDP flows to the guest's published
//! ports only; the host namespace does the DNAT.
//!
//! # Host namespace: one shared table `ip vmsan`
//!
//! See [`host_base`]: per-VM facts are set/map elements, so setup and teardown add
//! and remove elements only, and a packet's cost does not grow with the number of VMs.

mod apply;
mod destinations;
mod encode;
mod encode_rule;
mod encode_set;
mod host;
mod ir;
mod probe;
mod query;
mod text;
mod vm;

pub(crate) use apply::in_ns;
pub use destinations::{KNOWN_DOH, LAN_RANGES, lan_block};
pub use host::{
    COMPAT_COMMENT, COMPAT_FORWARD_CHAINS, ChainRef, CompatRule, GUEST_SRC_SET, HOST_TABLE,
    HostRules, PUBLISHED_MAP, host_add, host_base, host_compat, host_remove,
};
pub use ir::Ruleset;
pub use probe::probe_kernel;
pub use query::{HostState, compat_rule_handles, list_tables, published_ports_in_use};
pub(crate) use query::{compat_chains_on, compat_rule_handles_on, list_tables_on};
pub use vm::{DNS_SET, VM_TABLE, VmRules, dns_update, policy_change, vm_table};
