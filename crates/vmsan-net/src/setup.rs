//! Building, changing and removing a VM's network.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::addr::{self, Slot, SlotAddrs, TAP_NAME, VM_VETH_NAME, validate_vm_id};
use crate::error::{NetError, Result};
use crate::firewalld;
use crate::link;
use crate::linkwatch::LinkWatch;
use crate::netns;
use crate::nfnl::{self, Socket};
use crate::nft;
use crate::policy::{Cidr, Policy, Protocol, PublishedPort};
use crate::ratelimit::{Bandwidth, RateLimiter};
use crate::sys;

/// Where the "host" side lives and how things are named. The default is the real host: the
/// caller's own network namespace, `/run/netns`, prefix `vmsan-`, NAT out of the default
/// route's interface. Tests point `host_netns` at a namespace they created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostConfig {
    /// Namespace that plays the host; `None` = the calling thread's namespace.
    pub host_netns: Option<PathBuf>,
    /// Directory of the per-VM namespace bind mounts.
    pub netns_dir: PathBuf,
    /// Prefix of the per-VM namespace names (`<prefix><vmid>`).
    pub netns_prefix: String,
    /// File locked while the host namespace's firewall is read or changed: it serialises
    /// concurrent setups (port-conflict check and table creation are one step) and keeps
    /// concurrent `nft` transactions from invalidating each other's cache.
    #[serde(default = "default_lock_path")]
    pub lock_path: PathBuf,
    /// The D-Bus socket to reach firewalld through, when its table shows it is active
    /// (see [`crate::firewalld`]).
    #[serde(default = "default_firewalld_bus")]
    pub firewalld_bus: PathBuf,
    /// The firewalld zone (target `ACCEPT`) the VM interfaces are bound to.
    #[serde(default = "default_firewalld_zone")]
    pub firewalld_zone: String,
}

fn default_firewalld_bus() -> PathBuf {
    PathBuf::from(crate::dbus::SYSTEM_BUS)
}

fn default_firewalld_zone() -> String {
    firewalld::DEFAULT_ZONE.to_string()
}

fn default_lock_path() -> PathBuf {
    PathBuf::from("/run/lock/vmsan-net.lock")
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            host_netns: None,
            netns_dir: PathBuf::from(netns::DEFAULT_DIR),
            netns_prefix: "vmsan-".to_string(),
            lock_path: default_lock_path(),
            firewalld_bus: default_firewalld_bus(),
            firewalld_zone: default_firewalld_zone(),
        }
    }
}

impl HostConfig {
    /// The namespace file of VM `vm_id`.
    pub fn netns_path(&self, vm_id: &str) -> Result<PathBuf> {
        validate_vm_id(vm_id)?;
        let name = format!("{}{vm_id}", self.netns_prefix);
        addr::validate_netns_name(&name)?;
        Ok(self.netns_dir.join(name))
    }

    fn host_ns(&self) -> Option<&Path> {
        self.host_netns.as_deref()
    }

    /// Takes the host firewall lock (released when the file is dropped).
    fn lock(&self) -> Result<File> {
        if let Some(dir) = self.lock_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| NetError::sys(format!("mkdir {}", dir.display()), e))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| NetError::sys(format!("open {}", self.lock_path.display()), e))?;
        f.lock()
            .map_err(|e| NetError::sys(format!("lock {}", self.lock_path.display()), e))?;
        Ok(f)
    }
}

/// Everything [`setup`] needs for one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmNetSpec {
    /// `vm-` + 8 hex digits.
    pub vm_id: String,
    /// The VM's slot (allocated by the caller under its global lock).
    pub slot: Slot,
    /// uid the jailed Firecracker runs as (owns the TAP).
    pub jail_uid: u32,
    /// gid the jailed Firecracker runs as.
    pub jail_gid: u32,
    /// Egress policy.
    pub policy: Policy,
    /// Published ports.
    #[serde(default)]
    pub published_ports: Vec<PublishedPort>,
    /// Bandwidth limit (applied by Firecracker, see [`VmNet::rx_rate_limiter`]).
    #[serde(default)]
    pub bandwidth: Option<Bandwidth>,
    /// Resolvers the DNS filter forwards to.
    #[serde(default)]
    pub dns_upstreams: Vec<SocketAddrV4>,
    /// Let guest UDP through the policy (blocked by default).
    #[serde(default)]
    pub allow_udp: bool,
    /// Let `allow-all` and domain answers reach the networks around the host (private
    /// ranges and the host's connected networks; see [`nft::lan_block`]). Off by default.
    #[serde(default)]
    pub allow_lan: bool,
}

impl VmNetSpec {
    /// Validates every field.
    pub fn validate(&self) -> Result<()> {
        validate_vm_id(&self.vm_id)?;
        self.policy.validate()?;
        let mut seen = std::collections::HashSet::new();
        for p in &self.published_ports {
            p.validate()?;
            if !seen.insert((p.protocol, p.host_port)) {
                return Err(NetError::invalid(
                    "published port",
                    format!("host port {p} published twice"),
                ));
            }
        }
        if let Some(b) = &self.bandwidth {
            b.validate()?;
        }
        if self.dns_upstreams.len() > 8 {
            return Err(NetError::invalid("dns upstreams", "more than 8"));
        }
        Ok(())
    }
}

/// A VM's network as built by [`setup`]; keep it in the VM's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmNet {
    /// VM id.
    pub vm_id: String,
    /// Slot.
    pub slot: Slot,
    /// Addresses of the slot.
    pub addrs: SlotAddrs,
    /// The VM namespace's bind mount (give it to the jailer's `--netns`).
    pub netns_path: PathBuf,
    /// TAP name inside the namespace (Firecracker's `host_dev_name`).
    pub tap_name: String,
    /// Host end of the veth pair.
    pub host_veth: String,
    /// The policy in force.
    pub policy: Policy,
    /// Guest UDP allowed.
    pub allow_udp: bool,
    /// The networks around the host are not blocked (`--allow-lan`).
    #[serde(default)]
    pub allow_lan: bool,
    /// The host namespace's directly connected networks, as read when the rules were last
    /// written ([`host_networks`]): blocked with the private ranges unless `allow_lan`.
    #[serde(default)]
    pub host_nets: Vec<Cidr>,
    /// Published ports.
    pub published_ports: Vec<PublishedPort>,
    /// Bandwidth limit.
    pub bandwidth: Option<Bandwidth>,
    /// DNS upstreams for the filter.
    pub dns_upstreams: Vec<SocketAddrV4>,
}

impl VmNet {
    /// Firecracker `rx_rate_limiter` (guest download), if limited.
    pub fn rx_rate_limiter(&self) -> Option<RateLimiter> {
        self.bandwidth.map(|b| b.rx_limiter())
    }

    /// Firecracker `tx_rate_limiter` (guest upload), if limited.
    pub fn tx_rate_limiter(&self) -> Option<RateLimiter> {
        self.bandwidth.map(|b| b.tx_limiter())
    }

    /// Where the VM's DNS filter listens (TAP address, port 53, inside the VM namespace);
    /// also the guest's resolver and gateway is `addrs.tap_ip`.
    pub fn dns_listen_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.addrs.tap_ip, 53)
    }
}

/// Something a torn-down VM left behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Leak {
    /// A namespace bind mount.
    Netns {
        /// its path
        path: PathBuf,
    },
    /// A host interface.
    Link {
        /// its name
        name: String,
    },
    /// An nftables table in the host namespace.
    Table {
        /// `family name`
        name: String,
    },
    /// A VM's element in the shared host table.
    Element {
        /// `set` or `map` name
        set: String,
        /// the element as nft prints it
        element: String,
    },
    /// Our binding of the VM interfaces to a firewalld zone.
    FirewalldBinding {
        /// the zone
        zone: String,
        /// the interface pattern
        interfaces: String,
    },
    /// One of our rules in a foreign chain.
    CompatRule {
        /// `family table chain`
        chain: String,
        /// rule handle
        handle: u64,
        /// comment naming the VM
        comment: String,
    },
}

/// Refuses published host ports held by another VM (in `state`).
fn check_published_free(state: &nft::HostState, ports: &[PublishedPort]) -> Result<()> {
    for p in ports {
        if let Some((_, _, ip, _)) = state
            .published
            .iter()
            .find(|(proto, port, _, _)| *proto == p.protocol && *port == p.host_port)
        {
            return Err(NetError::PortInUse {
                port: p.host_port,
                proto: p.protocol.as_str(),
                by: format!("published by the VM at {ip}"),
            });
        }
    }
    Ok(())
}

/// Refuses published host ports a host process listens on. Runs in the host namespace.
fn check_listeners_free(ports: &[PublishedPort]) -> Result<()> {
    for p in ports {
        let a = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, p.host_port);
        let r = match p.protocol {
            Protocol::Tcp => TcpListener::bind(a).map(drop),
            Protocol::Udp => UdpSocket::bind(a).map(drop),
        };
        if let Err(e) = r {
            return Err(NetError::PortInUse {
                port: p.host_port,
                proto: p.protocol.as_str(),
                by: format!("a host listener ({e})"),
            });
        }
    }
    Ok(())
}

/// Builds the VM's network: namespace, veth pair, TAP (owned by the jail uid/gid), addresses,
/// routes, sysctls, the VM's nftables table and the host-side table. On failure everything
/// already created is removed again. Blocking.
pub fn setup(host: &HostConfig, spec: &VmNetSpec) -> Result<VmNet> {
    begin(host, spec)?.finish()
}

/// A VM's network whose namespace exists and is empty: a process can join it (the jailer)
/// while [`NetBuild::finish`] builds the rest on another thread. Dropped unfinished, it
/// leaves the namespace behind for [`teardown`].
#[derive(Debug)]
pub struct NetBuild {
    host: HostConfig,
    spec: VmNetSpec,
    net: VmNet,
}

/// The first step of [`setup`]: the VM's network namespace. Nothing in it can reach anything
/// until [`NetBuild::finish`] has made the devices (after their firewall rules).
///
/// # Errors
/// An invalid spec, or the namespace could not be made (nothing is left behind then).
pub fn begin(host: &HostConfig, spec: &VmNetSpec) -> Result<NetBuild> {
    spec.validate()?;
    let netns_path = host.netns_path(&spec.vm_id)?;
    let addrs = spec.slot.addrs();
    let host_veth = spec.slot.host_veth();

    let name = netns_path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    // The new namespace's defaults, set before any device is in it, go to every device
    // created there (TAP and the veth's end): IPv4 forwarding on, IPv6 off. Only the
    // defaults are written: they take effect without the rtnl lock, whereas the `all`
    // values must take it (and a sysctl write that finds it taken spins until it is free).
    netns::create_with(&host.netns_dir, &name, || {
        netns::write_sysctl("net/ipv4/conf/default/forwarding", "1")?;
        netns::write_sysctl("net/ipv6/conf/default/disable_ipv6", "1")
    })?;
    let net = VmNet {
        vm_id: spec.vm_id.clone(),
        slot: spec.slot,
        addrs,
        netns_path,
        tap_name: TAP_NAME.to_string(),
        host_veth,
        policy: spec.policy.clone(),
        allow_udp: spec.allow_udp,
        allow_lan: spec.allow_lan,
        host_nets: Vec::new(),
        published_ports: spec.published_ports.clone(),
        bandwidth: spec.bandwidth,
        dns_upstreams: spec.dns_upstreams.clone(),
    };
    Ok(NetBuild {
        host: host.clone(),
        spec: spec.clone(),
        net,
    })
}

impl NetBuild {
    /// The namespace's file.
    #[must_use]
    pub fn netns_path(&self) -> &Path {
        &self.net.netns_path
    }

    /// Builds TAP, veth, routes, NAT and nftables tables; on failure undoes everything of
    /// this VM's network, the namespace included.
    ///
    /// # Errors
    /// What failed (the rest is torn down).
    pub fn finish(self) -> Result<VmNet> {
        let Self {
            host,
            spec,
            mut net,
        } = self;
        let made = HostMade::default();
        let built = host_networks(&host).and_then(|nets| {
            net.host_nets = nets;
            build(&host, &spec, &net, &made)
        });
        match built {
            Ok(()) => Ok(net),
            Err(e) => {
                // Undo only what this build made: a host link or table entries that were
                // there before (another VM's, or another home's) are not ours to delete.
                let parts = HostParts {
                    elements: made.elements.load(Ordering::SeqCst),
                    link: made.link.load(Ordering::SeqCst),
                };
                if let Err(t) = remove_parts(&host, &spec.vm_id, spec.slot, parts) {
                    tracing::warn!(vm = %spec.vm_id, error = %t, "rollback after failed setup was incomplete");
                }
                Err(e)
            }
        }
    }
}

/// What a build made in the host namespace, so that a failed build removes that and nothing
/// else.
#[derive(Debug, Default)]
struct HostMade {
    /// The host end of the veth pair was created by this build.
    link: AtomicBool,
    /// The VM's elements went into the host table.
    elements: AtomicBool,
}

/// The alias a VM's host link carries (`ip link` shows it): the mark of the VM that made it.
/// [`teardown`] deletes a host link only when it carries its VM's mark.
pub fn host_link_alias(vm_id: &str) -> String {
    format!("vmsan {vm_id}")
}

/// Who a host link `vmsan-h<N>` belongs to, as its alias says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LinkOwner {
    Absent,
    This,
    Other(String),
}

/// The owner of `host_veth` in the current thread's namespace, from the point of view of
/// `vm_id`.
fn host_link_owner(host_veth: &str, vm_id: &str) -> Result<LinkOwner> {
    let found = link::with_netlink(|h| async move { link::index_and_alias(&h, host_veth).await })?;
    Ok(match found {
        None => LinkOwner::Absent,
        Some((_, alias)) if alias == host_link_alias(vm_id) => LinkOwner::This,
        Some((_, alias)) => LinkOwner::Other(alias),
    })
}

fn build(host: &HostConfig, spec: &VmNetSpec, net: &VmNet, made: &HostMade) -> Result<()> {
    let a = net.addrs;
    // The VM side (TAP, sysctls, its table) and the host side (veth pair, route, host
    // table) are independent until the veth exists: build them in parallel.
    std::thread::scope(|s| {
        let vm = s.spawn(|| {
            netns::run_in(&net.netns_path, || {
                // The ruleset names interfaces, it does not need them: load it first, so
                // the TAP never carries a packet without the policy.
                let mut sock = Socket::open()?;
                nft::vm_table(&nft::VmRules {
                    addrs: &a,
                    policy: &net.policy,
                    allow_udp: net.allow_udp,
                    published: &net.published_ports,
                    lan: &nft::lan_block(net.allow_lan, &net.host_nets),
                })
                .apply_on(&mut sock)
                .map_err(|e| nft::in_ns(e, Some(&net.netns_path)))?;
                sys::create_persistent_tap(TAP_NAME, spec.jail_uid, spec.jail_gid)?;
                link::with_netlink(|h| async move {
                    let lo = link::require_index(&h, "lo").await?;
                    link::up(&h, lo, "lo").await?;
                    let tap = link::require_index(&h, TAP_NAME).await?;
                    link::add_addr(&h, tap, a.tap_ip, a.prefix, TAP_NAME).await?;
                    link::up(&h, tap, TAP_NAME).await
                })
            })
        });
        let host_side = build_host_side(host, spec, net, made);
        let vm_side = vm
            .join()
            .unwrap_or_else(|_| Err(NetError::invalid("setup", "VM-side worker panicked")));
        host_side.and(vm_side)
    })?;
    // The veth's VM end exists now: address, up, default route.
    netns::run_in(&net.netns_path, || {
        link::with_netlink(|h| async move {
            let veth = link::require_index(&h, VM_VETH_NAME).await?;
            link::add_addr(&h, veth, a.vm_veth_ip, a.prefix, VM_VETH_NAME).await?;
            link::up(&h, veth, VM_VETH_NAME).await?;
            link::add_route(&h, Ipv4Addr::UNSPECIFIED, 0, a.host_veth_ip).await
        })
    })
}

/// Host side: veth pair (peer created inside the VM namespace), address, route, sysctls;
/// then, under the host firewall lock, the port checks and the host table's elements (and
/// the table itself for the first VM) in one nftables transaction.
fn build_host_side(
    host: &HostConfig,
    spec: &VmNetSpec,
    net: &VmNet,
    made: &HostMade,
) -> Result<()> {
    let a = net.addrs;
    let ns_file = File::open(&net.netns_path)
        .map_err(|e| NetError::sys(format!("open {}", net.netns_path.display()), e))?;
    let host_veth = net.host_veth.as_str();
    let alias = host_link_alias(&spec.vm_id);
    netns::run_in_opt(host.host_ns(), || {
        check_listeners_free(&spec.published_ports)?;
        link::with_netlink(|h| async move {
            // An existing link of that name fails here (EEXIST) and stays untouched.
            link::add_veth(&h, host_veth, VM_VETH_NAME, ns_file.as_raw_fd()).await?;
            made.link.store(true, Ordering::SeqCst);
            let idx = link::require_index(&h, host_veth).await?;
            link::set_alias(&h, idx, &alias, host_veth).await?;
            link::add_addr(&h, idx, a.host_veth_ip, a.prefix, host_veth).await?;
            link::up(&h, idx, host_veth).await?;
            link::add_route(&h, a.guest_net.addr(), a.prefix, a.vm_veth_ip).await
        })?;
        if netns::read_sysctl("net/ipv4/ip_forward")? != "1" {
            netns::write_sysctl("net/ipv4/ip_forward", "1")?;
        }
        netns::write_sysctl(&format!("net/ipv4/conf/{host_veth}/route_localnet"), "1")?;
        let _ = netns::write_sysctl(&format!("net/ipv6/conf/{host_veth}/disable_ipv6"), "1");
        let lock = host.lock()?;
        let r = host_table_add(host, spec, net, host_veth, &made.elements);
        drop(lock);
        r.map_err(|e| nft::in_ns(e, host.host_ns()))
    })
}

/// Adds the VM to the host table (creating the table and the compat rules as needed), in
/// the current thread's namespace. Call it under the host lock.
/// `added` is set once the VM's elements are in the table (a later step may still fail).
fn host_table_add(
    host: &HostConfig,
    spec: &VmNetSpec,
    net: &VmNet,
    host_veth: &str,
    added: &AtomicBool,
) -> Result<()> {
    nfnl::with_host_socket(None, |sock| {
        host_table_add_on(sock, host, spec, net, host_veth, added)
    })
}

fn host_table_add_on(
    sock: &mut Socket,
    host: &HostConfig,
    spec: &VmNetSpec,
    net: &VmNet,
    host_veth: &str,
    added: &AtomicBool,
) -> Result<()> {
    let tables = nft::list_tables_on(sock)?;
    let exists = tables
        .iter()
        .any(|t| *t == format!("ip {}", nft::HOST_TABLE));
    // The compat rules follow foreign chains that may appear after our table (Docker
    // started later), so they are checked on every setup.
    let missing: Vec<_> = nft::compat_chains_on(sock, &tables)?
        .into_iter()
        .filter(|(_, handles)| handles.is_empty())
        .map(|(c, _)| c)
        .collect();
    let mut rs = if exists {
        nft::host_compat(&missing)
    } else {
        nft::host_base(&missing)
    };
    rs.extend(nft::host_add(&nft::HostRules {
        addrs: &net.addrs,
        host_veth,
        published: &net.published_ports,
    }));
    if let Err(e) = rs.apply_on(sock) {
        // `create element` refused a published port another VM holds: say which.
        if !spec.published_ports.is_empty() {
            check_published_free(&nft::HostState::read_on(sock)?, &spec.published_ports)?;
        }
        return Err(e);
    }
    added.store(true, Ordering::SeqCst);
    // firewalld rejects forwarded flows it was not told about (see `firewalld`).
    if firewalld::active(&tables) {
        firewalld::bind(&host.firewalld_bus, &host.firewalld_zone)?;
    }
    Ok(())
}

/// The directly connected IPv4 networks of the host namespace (`host.host_netns`, or the
/// caller's): the network of every address on every interface, except loopback and vmsan's
/// own slot range (both blocked for every policy anyway). These are the networks around the
/// host that `allow-all` does not reach without `--allow-lan`.
pub fn host_networks(host: &HostConfig) -> Result<Vec<Cidr>> {
    let loopback = Cidr::new_unchecked(Ipv4Addr::new(127, 0, 0, 0), 8);
    let slots = addr::slot_range();
    let addrs = netns::run_in_opt(host.host_ns(), || {
        link::with_netlink(|h| async move { link::ipv4_addresses(&h).await })
    })?;
    let mut nets: Vec<Cidr> = addrs
        .into_iter()
        .map(|(ip, prefix)| Cidr::new_unchecked(ip, prefix.min(32)).masked())
        .filter(|c| !loopback.contains(c.addr()) && !slots.contains(c.addr()))
        .collect();
    nets.sort_by_key(|c| (u32::from(c.addr()), c.prefix()));
    nets.dedup();
    Ok(nets)
}

/// Replaces the VM's egress policy in one atomic nftables transaction: new connections see
/// the new policy at once, established ones continue. Addresses learnt by the DNS filter
/// are kept when the allowed domains are unchanged and dropped otherwise (the filter
/// re-learns them on the guest's next lookup). Updates `net.policy`. One-shot; for
/// repeated changes keep a [`VmFirewall`].
pub fn apply_policy(net: &mut VmNet, policy: &Policy) -> Result<()> {
    VmFirewall::open(net)?.apply_policy(net, policy)
}

/// A netlink socket in a VM's namespace for its policy changes. Holding one spares repeated
/// changes the cost of opening and closing a socket (see the crate's `nfnl` notes); it keeps
/// the namespace alive, so drop it before [`teardown`].
#[derive(Debug)]
pub struct VmFirewall {
    sock: Socket,
    netns: PathBuf,
}

impl VmFirewall {
    /// Opens the socket in `net`'s namespace.
    pub fn open(net: &VmNet) -> Result<Self> {
        Ok(Self {
            sock: netns::run_in(&net.netns_path, Socket::open)?,
            netns: net.netns_path.clone(),
        })
    }

    /// [`apply_policy`] over this socket (`net` must be the VM it was opened for).
    pub fn apply_policy(&mut self, net: &mut VmNet, policy: &Policy) -> Result<()> {
        policy.validate()?;
        if net.netns_path != self.netns {
            return Err(NetError::invalid(
                "policy change",
                format!(
                    "firewall handle of {} used for {}",
                    self.netns.display(),
                    net.netns_path.display()
                ),
            ));
        }
        let flush_dns = net.policy.allowed_domains() != policy.allowed_domains();
        nft::policy_change(
            &nft::VmRules {
                addrs: &net.addrs,
                policy,
                allow_udp: net.allow_udp,
                published: &net.published_ports,
                lan: &nft::lan_block(net.allow_lan, &net.host_nets),
            },
            flush_dns,
        )
        .apply_on(&mut self.sock)
        .map_err(|e| nft::in_ns(e, Some(&self.netns)))?;
        net.policy = policy.clone();
        Ok(())
    }
}

/// Removes everything [`setup`] creates for `vm_id`/`slot` (idempotent: absent parts are
/// fine): the VM's elements in the host table (with the compat rules and the firewalld
/// binding after the last VM, of any vmsan home), the veth pair, the namespace's name. A host
/// link `vmsan-h<slot>` that does not carry this VM's mark ([`host_link_alias`]) belongs to
/// another VM: it and the table elements naming it are left alone, and the error says so.
/// When it returns, none of it can be seen any more; the kernel frees the devices' memory and
/// destroys the unnamed namespace (its TAP, its table) in the background, as `ip netns del`
/// leaves it. Stop the VM's DNS filter and Firecracker first: their sockets and TAP fd keep
/// the namespace alive (unnamed) until they exit. Blocking.
pub fn teardown(host: &HostConfig, vm_id: &str, slot: Slot) -> Result<()> {
    validate_vm_id(vm_id)?;
    let host_veth = slot.host_veth();
    let owner = netns::run_in_opt(host.host_ns(), || host_link_owner(&host_veth, vm_id))?;
    let parts = match &owner {
        LinkOwner::Absent => HostParts {
            elements: true,
            link: false,
        },
        LinkOwner::This => HostParts {
            elements: true,
            link: true,
        },
        LinkOwner::Other(_) => HostParts {
            elements: false,
            link: false,
        },
    };
    let r = remove_parts(host, vm_id, slot, parts);
    match owner {
        LinkOwner::Other(alias) => {
            let mut errors = match r {
                Err(NetError::Teardown(e)) => e,
                Err(e) => vec![e.to_string()],
                Ok(()) => Vec::new(),
            };
            errors.push(format!(
                "host link {host_veth} is not {vm_id}'s (its alias is {alias:?}): left it and \
                 its host table entries alone"
            ));
            Err(NetError::Teardown(errors))
        }
        _ => r,
    }
}

/// Which host-namespace parts of a VM's network to remove (its namespace always goes).
#[derive(Debug, Clone, Copy)]
struct HostParts {
    /// Its elements in the shared host table (and the table after the last VM).
    elements: bool,
    /// The host link `vmsan-h<slot>`.
    link: bool,
}

fn remove_parts(host: &HostConfig, vm_id: &str, slot: Slot, parts: HostParts) -> Result<()> {
    let path = host.netns_path(vm_id)?;
    let host_veth = slot.host_veth();
    let guest_ip = slot.addrs().guest_ip;
    let mut errors = Vec::new();
    // Host table, host link and namespace go in parallel (each waits on the kernel).
    let (fw, ln, ns) = std::thread::scope(|s| {
        let fw = s.spawn(|| {
            if !parts.elements {
                return Ok(());
            }
            let _lock = host.lock()?;
            nfnl::with_host_socket(host.host_ns(), |sock| {
                let state = nft::HostState::read_on(sock)?;
                // The table is shared by every home's VMs: the last VM of all removes it.
                let last = state.guests.iter().all(|(d, _)| *d == host_veth);
                let compat = if state.exists && last {
                    nft::compat_rule_handles_on(sock)?
                } else {
                    Vec::new()
                };
                nft::host_remove(&state, &host_veth, guest_ip, &compat).apply_on(sock)?;
                if state.exists && last && firewalld::active(&nft::list_tables_on(sock)?) {
                    firewalld::unbind(&host.firewalld_bus, &host.firewalld_zone)?;
                }
                Ok(())
            })
            .map_err(|e| nft::in_ns(e, host.host_ns()))
        });
        // Deleting the host veth deletes its peer too; the call returns once the pair is
        // unlisted (see `linkwatch`).
        let ln = s.spawn(|| {
            if !parts.link {
                return Ok(());
            }
            netns::run_in_opt(host.host_ns(), || {
                let mut w = LinkWatch::open()?;
                match w.index_of(&host_veth)? {
                    Some(idx) => w.delete(idx, &host_veth),
                    None => Ok(()),
                }
            })
        });
        let ns = netns::delete(&path);
        let dead = || Err(NetError::invalid("teardown", "worker panicked"));
        (
            fw.join().unwrap_or_else(|_| dead()),
            ln.join().unwrap_or_else(|_| dead()),
            ns,
        )
    });
    for r in [fw, ln, ns] {
        if let Err(e) = r {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(NetError::Teardown(errors))
    }
}

fn element_leaks(
    state: &nft::HostState,
    keep: impl Fn(&str, Ipv4Addr) -> bool,
    keep_ip: impl Fn(Ipv4Addr) -> bool,
) -> Vec<Leak> {
    let mut out = Vec::new();
    for (dev, ip) in &state.guests {
        if !keep(dev, *ip) {
            out.push(Leak::Element {
                set: nft::GUEST_SRC_SET.to_string(),
                element: format!("\"{dev}\" . {ip}"),
            });
        }
    }
    for (proto, hp, ip, gp) in &state.published {
        if !keep_ip(*ip) {
            out.push(Leak::Element {
                set: nft::PUBLISHED_MAP.to_string(),
                element: format!("{} . {hp} : {ip} . {gp}", proto.as_str()),
            });
        }
    }
    out
}

/// What is left of `vm_id`/`slot` (empty after a clean [`teardown`]): its namespace, host
/// veth and elements in the shared host table. Used by `remove` and `doctor`.
pub fn leaks(host: &HostConfig, vm_id: &str, slot: Slot) -> Result<Vec<Leak>> {
    validate_vm_id(vm_id)?;
    let path = host.netns_path(vm_id)?;
    let mut out = Vec::new();
    if path.exists() {
        out.push(Leak::Netns { path });
    }
    let hv = slot.host_veth();
    let gip = slot.addrs().guest_ip;
    netns::run_in_opt(host.host_ns(), || {
        match host_link_owner(&hv, vm_id)? {
            LinkOwner::Absent => {}
            // Without a mark it may be ours from a build killed between creating and marking.
            LinkOwner::This => out.push(Leak::Link { name: hv.clone() }),
            LinkOwner::Other(alias) if alias.is_empty() => {
                out.push(Leak::Link { name: hv.clone() });
            }
            // Another VM holds the link, and the table entries naming it are its own.
            LinkOwner::Other(_) => return Ok(()),
        }
        let state = nft::HostState::read(None)?;
        out.extend(element_leaks(
            &state,
            |d, ip| !(d == hv || ip == gip),
            |ip| ip != gip,
        ));
        Ok(())
    })?;
    Ok(out)
}

/// Every vmsan object on the host that does not belong to one of `known` VMs: namespace
/// files with our prefix, `vmsan-h*` links, elements of the shared table, and, when no VM
/// is known, the shared table itself and the compat rules.
pub fn scan_leaks(host: &HostConfig, known: &[(String, Slot)]) -> Result<Vec<Leak>> {
    let mut out = Vec::new();
    let known_ns: Vec<PathBuf> = known
        .iter()
        .filter_map(|(id, _)| host.netns_path(id).ok())
        .collect();
    if let Ok(rd) = std::fs::read_dir(&host.netns_dir) {
        for e in rd.flatten() {
            let p = e.path();
            let ours = e
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&host.netns_prefix));
            if ours && !known_ns.contains(&p) {
                out.push(Leak::Netns { path: p });
            }
        }
    }
    let known_links: Vec<String> = known.iter().map(|(_, s)| s.host_veth()).collect();
    let known_ips: Vec<Ipv4Addr> = known.iter().map(|(_, s)| s.addrs().guest_ip).collect();
    netns::run_in_opt(host.host_ns(), || {
        let links = link::with_netlink(|h| async move {
            link::links_with_prefix(&h, addr::HOST_VETH_PREFIX).await
        })?;
        for l in links {
            if !known_links.contains(&l) {
                out.push(Leak::Link { name: l });
            }
        }
        let state = nft::HostState::read(None)?;
        out.extend(element_leaks(
            &state,
            |d, ip| known_links.iter().any(|k| k == d) && known_ips.contains(&ip),
            |ip| known_ips.contains(&ip),
        ));
        if known.is_empty() {
            if state.exists {
                out.push(Leak::Table {
                    name: format!("ip {}", nft::HOST_TABLE),
                });
            }
            if firewalld::active(&nft::list_tables(None)?)
                && firewalld::bound_zone(&host.firewalld_bus)? == host.firewalld_zone
            {
                out.push(Leak::FirewalldBinding {
                    zone: host.firewalld_zone.clone(),
                    interfaces: firewalld::interfaces(),
                });
            }
            for ((f, t, c), handle) in nft::compat_rule_handles(None)? {
                out.push(Leak::CompatRule {
                    chain: format!("{f} {t} {c}"),
                    handle,
                    comment: nft::COMPAT_COMMENT.to_string(),
                });
            }
        }
        Ok(())
    })?;
    Ok(out)
}
