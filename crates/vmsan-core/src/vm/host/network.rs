//! A VM's network identity and policy as its record holds them, in the network crate's shapes.

use std::net::SocketAddrV4;
use std::path::PathBuf;

use vmsan_net::{Bandwidth, HostConfig, Policy, Slot, VmNet, VmNetSpec};

use crate::error::{Error, ErrorCode, Result};
use crate::state::{NetworkPolicy, NetworkState, VmState};
use crate::vm::{convert, files};

/// Environment variable naming a network namespace (a bind-mount path such as
/// `/run/netns/uplink`) that plays the host for VM networking: VMs' veths, routes and NAT go
/// there instead of the root namespace. Unset: the real host.
pub const HOST_NETNS_ENV: &str = "VMSAN_HOST_NETNS";

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
    let slot = Slot::new(slot).map_err(|e| convert::net(e, "network slot"))?;
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
    let (uid, gid) = files::jail_ids(slot);
    let spec = spec_of(st, slot, uid, gid)?;
    let host = host_config();
    Ok(VmNet {
        netns_path: host
            .netns_path(&spec.vm_id)
            .map_err(|e| convert::net(e, "network namespace"))?,
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
