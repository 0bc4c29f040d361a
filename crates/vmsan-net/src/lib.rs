//! Per-VM networking for vmsan.
//!
//! Every VM gets a slot `N` (see [`addr`]), a network namespace `vmsan-<vmid>`, a TAP `tap0`
//! inside it owned by the jail's uid/gid, a veth pair to the host (`vmsan-h<N>` ↔ `veth0`)
//! with its own transit /30, routes, NAT out of the host, and one nftables table per VM
//! inside its namespace that every guest-originated packet traverses (see [`nft`] for the
//! rulesets). On the host side one shared table `ip vmsan` holds each VM as set/map elements
//! (its veth and guest address, its published ports), so setup and teardown cost the same
//! with 1 or 4,000 VMs.
//!
//! What the host library hands on (from [`VmNet`]):
//! - jailer `--netns <VmNet::netns_path>`; Firecracker network interface `host_dev_name =
//!   VmNet::tap_name`, `guest_mac = addrs.guest_mac_string()`, `rx_rate_limiter` /
//!   `tx_rate_limiter` from [`VmNet::rx_rate_limiter`] / [`VmNet::tx_rate_limiter`];
//! - the guest's config drive: address `addrs.guest_ip/30`, gateway and DNS server
//!   `addrs.tap_ip`;
//! - the supervisor runs [`dns::DnsFilter`] bound at [`VmNet::dns_listen_addr`] in the VM
//!   namespace, and on `vmsan network` calls [`apply_policy`] and then
//!   `AllowedDomains::set_policy` on the filter's handle.
//!
//! Entry points (all blocking; call them from `tokio::task::spawn_blocking` in async code):
//! - [`setup`] builds a VM's network from a [`VmNetSpec`] and returns a [`VmNet`];
//! - [`apply_policy`] swaps the VM's egress policy in one atomic nftables transaction;
//! - [`teardown`] removes everything [`setup`] created, [`leaks`] and [`scan_leaks`] report
//!   what is left;
//! - [`dns::DnsFilter`] is the per-VM DNS filter (async, tokio) that feeds the domain
//!   allow-list into the VM's nftables set;
//! - [`ratelimit::RateLimiter`] gives Firecracker's rate-limiter values for a bandwidth.
//!
//! When firewalld is active on the host, the VM interfaces are put into a zone that lets
//! their (already filtered) traffic be forwarded, over D-Bus, in firewalld's runtime
//! configuration only (see [`firewalld`]).
//!
//! Netlink and ioctls do all the work, no child process is spawned: rtnetlink for links,
//! addresses and routes, nf_tables over `NETLINK_NETFILTER` for the rulesets (each change one
//! atomic batch, see [`nft::Ruleset::apply`]), from a thread that has entered the right
//! namespace.

mod dbus;
mod error;
mod link;
mod linkwatch;
mod nfnl;
mod setup;
mod sys;

pub mod addr;
pub mod dns;
pub mod firewalld;
pub mod netns;
pub mod nft;
pub mod policy;
pub mod ratelimit;

pub use addr::{Slot, SlotAddrs, validate_vm_id};
pub use error::{NetError, Result};
pub use policy::{Cidr, CustomPolicy, DomainPattern, Policy, Protocol, PublishedPort};
pub use ratelimit::{Bandwidth, RateLimiter, TokenBucket};
pub use setup::{
    HostConfig, Leak, NetBuild, VmFirewall, VmNet, VmNetSpec, apply_policy, begin, host_link_alias,
    host_networks, leaks, scan_leaks, setup, teardown,
};
pub use sys::open_tap;
