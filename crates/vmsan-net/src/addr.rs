//! Slots, addresses and names.
//!
//! Layout: every slot `N` (0 ≤ N < [`MAX_SLOTS`]) owns the /29 at `198.18.0.0 + 8·N` inside
//! 198.18.0.0/15 (RFC 2544's benchmarking range, never routed on the Internet):
//!
//! | offset | use |
//! | --- | --- |
//! | +0 /30 | guest subnet (TAP): network |
//! | +1 | TAP address in the VM namespace (gateway and DNS filter for the guest) |
//! | +2 | the guest's `eth0` |
//! | +3 | broadcast |
//! | +4 /30 | transit subnet (veth pair): network |
//! | +5 | host end of the veth (`vmsan-h<N>`, host namespace) |
//! | +6 | VM-namespace end of the veth (`veth0`) |
//! | +7 | broadcast |
//!
//! 16,384 slots fill the /15 exactly. Slot 0 is `198.18.0.0/29`, slot 16383 is
//! `198.19.255.248/29`. Interface names: TAP `tap0` and `veth0` are the same in every VM
//! namespace; the host end `vmsan-h<N>` is at most 12 bytes (limit 15).

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};
use crate::policy::Cidr;

/// First address of the range all slots are carved from.
pub const BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
/// Prefix length of that range.
pub const BASE_PREFIX: u8 = 15;
/// Number of slots (each a /29).
pub const MAX_SLOTS: u32 = 16_384;
/// Name of the TAP inside every VM namespace (Firecracker's `host_dev_name`).
pub const TAP_NAME: &str = "tap0";
/// Name of the VM-namespace end of the veth pair.
pub const VM_VETH_NAME: &str = "veth0";
/// Prefix of the host end of the veth pair.
pub const HOST_VETH_PREFIX: &str = "vmsan-h";
/// Linux interface name limit (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// A network slot: an index into the /15, validated on construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Slot(u32);

impl Slot {
    /// Validates `n < MAX_SLOTS`.
    pub fn new(n: u32) -> Result<Self> {
        if n < MAX_SLOTS {
            Ok(Self(n))
        } else {
            Err(NetError::invalid(
                "slot",
                format!("{n} is out of range 0..{MAX_SLOTS}"),
            ))
        }
    }

    /// The slot number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The addresses of this slot.
    pub fn addrs(self) -> SlotAddrs {
        SlotAddrs::of(self)
    }

    /// The host end of the veth pair, `vmsan-h<N>`.
    pub fn host_veth(self) -> String {
        format!("{HOST_VETH_PREFIX}{}", self.0)
    }

    /// The slot whose /29 contains `ip`, if `ip` lies in the slot range.
    pub fn of_ip(ip: Ipv4Addr) -> Option<Self> {
        let off = u32::from(ip).checked_sub(u32::from(BASE))?;
        Self::new(off / 8).ok()
    }
}

impl TryFrom<u32> for Slot {
    type Error = NetError;
    fn try_from(n: u32) -> Result<Self> {
        Self::new(n)
    }
}

impl From<Slot> for u32 {
    fn from(s: Slot) -> u32 {
        s.0
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Every address of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotAddrs {
    /// Guest subnet (/30).
    pub guest_net: Cidr,
    /// TAP address in the VM namespace: the guest's gateway and DNS server.
    pub tap_ip: Ipv4Addr,
    /// The guest's address.
    pub guest_ip: Ipv4Addr,
    /// Transit subnet (/30) of the veth pair.
    pub transit_net: Cidr,
    /// Host end of the veth.
    pub host_veth_ip: Ipv4Addr,
    /// VM-namespace end of the veth.
    pub vm_veth_ip: Ipv4Addr,
    /// Prefix length of both subnets (30).
    pub prefix: u8,
    /// The guest's MAC: `02:fc` followed by the guest IPv4 octets (locally administered).
    pub guest_mac: [u8; 6],
}

impl SlotAddrs {
    fn of(slot: Slot) -> Self {
        let block = u32::from(BASE) + slot.0 * 8;
        let ip = |off: u32| Ipv4Addr::from(block + off);
        let g = ip(2).octets();
        Self {
            guest_net: Cidr::new_unchecked(ip(0), 30),
            tap_ip: ip(1),
            guest_ip: ip(2),
            transit_net: Cidr::new_unchecked(ip(4), 30),
            host_veth_ip: ip(5),
            vm_veth_ip: ip(6),
            prefix: 30,
            guest_mac: [0x02, 0xfc, g[0], g[1], g[2], g[3]],
        }
    }

    /// The guest MAC as `aa:bb:cc:dd:ee:ff` (Firecracker's `guest_mac`).
    pub fn guest_mac_string(&self) -> String {
        self.guest_mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// The whole slot range, 198.18.0.0/15.
pub fn slot_range() -> Cidr {
    Cidr::new_unchecked(BASE, BASE_PREFIX)
}

/// Validates a VM id: `vm-` followed by exactly 8 lowercase hex digits.
pub fn validate_vm_id(id: &str) -> Result<()> {
    let ok = id.len() == 11
        && id.starts_with("vm-")
        && id[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(NetError::invalid(
            "vm id",
            format!("{id:?} does not match vm-[0-9a-f]{{8}}"),
        ))
    }
}

/// Validates an interface name (1..=15 bytes of `[A-Za-z0-9_.-]`).
pub fn validate_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(NetError::invalid(
            "interface name",
            format!("{name:?} (1..=15 bytes of [A-Za-z0-9_.-])"),
        ))
    }
}

/// Validates a namespace file name: 1..=64 bytes of `[A-Za-z0-9_.-]`, not `.` or `..`.
pub fn validate_netns_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(NetError::invalid("namespace name", format!("{name:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_slot_addresses() {
        let a = Slot::new(0).unwrap().addrs();
        assert_eq!(a.guest_net.to_string(), "198.18.0.0/30");
        assert_eq!(a.tap_ip, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(a.guest_ip, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(a.transit_net.to_string(), "198.18.0.4/30");
        assert_eq!(a.host_veth_ip, Ipv4Addr::new(198, 18, 0, 5));
        assert_eq!(a.vm_veth_ip, Ipv4Addr::new(198, 18, 0, 6));
        assert_eq!(a.guest_mac_string(), "02:fc:c6:12:00:02");

        let last = Slot::new(MAX_SLOTS - 1).unwrap();
        let z = last.addrs();
        assert_eq!(z.guest_net.to_string(), "198.19.255.248/30");
        assert_eq!(z.vm_veth_ip, Ipv4Addr::new(198, 19, 255, 254));
        assert!(last.host_veth().len() <= IFNAME_MAX);
        assert!(Slot::new(MAX_SLOTS).is_err());
    }

    #[test]
    fn slots_never_overlap_and_stay_in_range() {
        let range = slot_range();
        let mut seen = std::collections::HashSet::new();
        for n in 0..MAX_SLOTS {
            let s = Slot::new(n).unwrap();
            let a = s.addrs();
            for ip in [a.tap_ip, a.guest_ip, a.host_veth_ip, a.vm_veth_ip] {
                assert!(range.contains(ip));
                assert!(seen.insert(ip), "{ip} reused");
                assert_eq!(Slot::of_ip(ip), Some(s));
            }
            validate_ifname(&s.host_veth()).unwrap();
        }
        const { assert!(MAX_SLOTS >= 4096) };
    }

    #[test]
    fn vm_id_validation() {
        validate_vm_id("vm-0123abcd").unwrap();
        for bad in [
            "vm-0123ABCD",
            "vm-0123abc",
            "vm-0123abcde",
            "../../etc",
            "vm-0123abc/",
            "",
        ] {
            assert!(validate_vm_id(bad).is_err(), "{bad}");
        }
    }
}
