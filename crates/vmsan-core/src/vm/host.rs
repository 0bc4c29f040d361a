//! The host side of one VM run: which binaries, the jail, the network, the DNS filter, the
//! Firecracker process, and the teardown that undoes all of it.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use vmsan_firecracker::cgroup_parents::ParentRegistry;
use vmsan_firecracker::{
    CgroupLimits, CgroupMounts, CpuLimit, FirecrackerArgs, JailFile, JailLayout, JailerSpec,
    ResourceLimits, RootfsFsType, Seccomp,
};
use vmsan_net::dns::{AllowedDomains, DnsFilter, NftSetUpdater};
use vmsan_net::{Bandwidth, HostConfig, Policy, Slot, VmNet, VmNetSpec};

use super::boot::NetPlan;
use super::files::{VmFiles, in_jail};
use crate::artifacts;
use crate::error::{Error, ErrorCode, Result};
use crate::paths::Paths;
use crate::state::{Isolation, NetworkState, VmState};

/// Environment variable naming a network namespace (a bind-mount path such as
/// `/run/netns/uplink`) that plays the host for VM networking: VMs' veths, routes and NAT go
/// there instead of the root namespace. Unset: the real host.
pub const HOST_NETNS_ENV: &str = "VMSAN_HOST_NETNS";

/// Firecracker's own memory on top of the guest's: in the cgroup limit, and in the host memory
/// a restore needs per clone.
pub(crate) const VMM_OVERHEAD_MIB: u64 = 64;

/// The resolved, trusted pieces of one VM run.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) firecracker: PathBuf,
    pub(crate) jailer: Option<PathBuf>,
    pub(crate) layout: JailLayout,
    pub(crate) rootfs_fs: RootfsFsType,
    pub(crate) isolation: Isolation,
}

impl Launch {
    /// Check the binaries this VM needs and compute its jail.
    pub(crate) fn resolve(paths: &Paths, st: &VmState) -> Result<Self> {
        let firecracker = trusted_binary(&artifacts::firecracker_path(paths), "Firecracker")?;
        let jailer = if st.isolation.jailer {
            Some(trusted_binary(&artifacts::jailer_path(paths), "jailer")?)
        } else {
            None
        };
        let layout = JailLayout::new(&paths.jail_dir(), &firecracker, st.id.as_str())
            .map_err(|e| Error::new(ErrorCode::Internal, format!("jail layout: {e}")))?;
        let rootfs_fs = match st.rootfs_fs.as_str() {
            "ext4" => RootfsFsType::Ext4,
            _ => RootfsFsType::Squashfs,
        };
        Ok(Self {
            firecracker,
            jailer,
            layout,
            rootfs_fs,
            isolation: st.isolation,
        })
    }

    /// With the jailer and a PID namespace, the jailer forks Firecracker and exits: we adopt it.
    pub(crate) fn adopts_vmm(&self) -> bool {
        self.jailer.is_some() && self.isolation.pid_ns
    }
}

fn trusted_binary(path: &Path, what: &str) -> Result<PathBuf> {
    if !path.exists() {
        return Err(Error::new(
            ErrorCode::SetupMissingBinary,
            format!("{what} not found at {}", path.display()),
        ));
    }
    artifacts::check_trusted_file(path).map_err(|why| {
        Error::new(
            ErrorCode::SetupUnsafeBinary,
            format!("refusing to run {what}: {why}"),
        )
    })?;
    Ok(path.to_owned())
}

/// The host configuration for VM networking.
pub fn host_config() -> HostConfig {
    let mut host = HostConfig::default();
    if let Some(ns) = std::env::var_os(HOST_NETNS_ENV).filter(|v| !v.is_empty()) {
        host.host_netns = Some(PathBuf::from(ns));
    }
    host
}

/// The egress policy a VM's state records.
pub(crate) fn policy_of(net: &NetworkState) -> Result<Policy> {
    let bad = |what: &str, v: &str, e: vmsan_net::NetError| {
        Error::new(
            ErrorCode::VmStateCorrupt,
            format!("recorded {what} {v:?} is invalid: {e}"),
        )
    };
    match net.network_policy.as_str() {
        "" | "allow-all" => Ok(Policy::AllowAll),
        "deny-all" => Ok(Policy::DenyAll),
        "custom" => {
            let mut p = vmsan_net::CustomPolicy::default();
            for c in &net.allowed_cidrs {
                p.allowed_cidrs
                    .push(c.parse().map_err(|e| bad("CIDR", c, e))?);
            }
            for c in &net.denied_cidrs {
                p.denied_cidrs
                    .push(c.parse().map_err(|e| bad("CIDR", c, e))?);
            }
            for d in &net.allowed_domains {
                p.allowed_domains
                    .push(d.parse().map_err(|e| bad("domain", d, e))?);
            }
            Ok(Policy::Custom(p))
        }
        other => Err(Error::new(
            ErrorCode::VmStateCorrupt,
            format!("unknown network policy {other:?}"),
        )),
    }
}

fn spec_of(st: &VmState, slot: u32, uid: u32, gid: u32) -> Result<VmNetSpec> {
    let net = &st.network;
    let slot = Slot::new(slot).map_err(|e| super::convert::net(e, "network slot"))?;
    let mut published = Vec::new();
    for p in &net.published_ports {
        published.push(vmsan_net::PublishedPort {
            host_port: p.host_port,
            guest_port: p.guest_port,
            protocol: match p.protocol.as_str() {
                "udp" => vmsan_net::Protocol::Udp,
                _ => vmsan_net::Protocol::Tcp,
            },
        });
    }
    let mut upstreams = Vec::new();
    for s in &net.dns_servers {
        let ip: Ipv4Addr = s.parse().map_err(|_| {
            Error::new(
                ErrorCode::VmStateCorrupt,
                format!("recorded DNS server {s:?} is invalid"),
            )
        })?;
        upstreams.push(SocketAddrV4::new(ip, 53));
    }
    Ok(VmNetSpec {
        vm_id: st.id.to_string(),
        slot,
        jail_uid: uid,
        jail_gid: gid,
        policy: policy_of(net)?,
        published_ports: published,
        bandwidth: net.bandwidth_mbit.map(|m| Bandwidth {
            rx_mbit: m,
            tx_mbit: m,
        }),
        dns_upstreams: upstreams,
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
    let (uid, gid) = super::files::jail_ids(slot);
    let spec = spec_of(st, slot, uid, gid)?;
    let host = host_config();
    Ok(VmNet {
        netns_path: host
            .netns_path(&spec.vm_id)
            .map_err(|e| super::convert::net(e, "network namespace"))?,
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

/// Where the VM's network goes and what it is: the input of [`vmsan_net::begin`] (the
/// namespace) and [`vmsan_net::NetBuild::finish`] (TAP, veth, routes, NAT, nftables).
pub(crate) fn network_plan(st: &VmState, uid: u32, gid: u32) -> Result<(HostConfig, VmNetSpec)> {
    let slot = st
        .network
        .slot
        .ok_or_else(|| Error::new(ErrorCode::Internal, "VM has no slot"))?;
    Ok((host_config(), spec_of(st, slot, uid, gid)?))
}

/// Start the VM's DNS filter on the TAP's host address; it feeds the policy's domain
/// allow-list into the VM's nftables set.
pub(crate) fn start_dns_filter(
    net: &VmNet,
    st: &VmState,
) -> Result<(tokio::task::JoinHandle<()>, AllowedDomains)> {
    let host = host_config();
    let policy = policy_of(&st.network)?;
    let filter = DnsFilter::bind(
        Some(&net.netns_path),
        net.dns_listen_addr(),
        host.host_netns.as_deref(),
        vmsan_net::dns::DnsAllow::of(&policy),
        net.dns_upstreams.clone(),
        Arc::new(NftSetUpdater::new(net.netns_path.clone())),
    )
    .map_err(|e| super::convert::net(e, "starting the DNS filter"))?;
    let domains = filter.domains();
    let task = tokio::spawn(async move {
        if let Err(e) = filter.run().await {
            tracing::warn!("DNS filter stopped: {e}");
        }
    });
    Ok((task, domains))
}

/// Apply a policy change to the running DNS filter.
pub(crate) fn refresh_dns_policy(domains: &AllowedDomains, st: &VmState) {
    match policy_of(&st.network) {
        Ok(p) => domains.set_policy(&p),
        Err(e) => tracing::warn!("keeping the old DNS policy: {e}"),
    }
}

/// Firecracker's network interface for this VM.
pub(crate) fn net_plan(net: &VmNet) -> Option<NetPlan> {
    Some(NetPlan {
        tap: net.tap_name.clone(),
        mac: net.addrs.guest_mac_string(),
        rx: net.rx_rate_limiter(),
        tx: net.tx_rate_limiter(),
    })
}

/// Make a file the jail can hard-link (it must exist before the link).
fn touch_owned(path: &Path, uid: u32, gid: u32) -> Result<()> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
        .map_err(|e| Error::io(format!("chown {}", path.display()), e))
}

/// Lay out the jail: shared read-only kernel, initrd and image; the VM's own disk, config
/// drive and log files, owned by the jail's uid/gid.
/// A VM restored from a snapshot also gets the snapshot's state and memory (links, shared by
/// every clone, read-only).
pub(crate) fn prepare_jail(
    st: &VmState,
    launch: &Launch,
    files: &VmFiles,
    uid: u32,
    gid: u32,
    snapshot: Option<&crate::snapshot::Snapshot>,
) -> Result<()> {
    use crate::snapshot::files as snap_files;
    touch_owned(&files.firecracker_log(), uid, gid)?;
    touch_owned(&files.metrics(), uid, gid)?;
    let mut jail_files = vec![
        JailFile::shared_read_only(&st.kernel, in_jail::KERNEL),
        JailFile::shared_read_only(&st.initrd, in_jail::INITRD),
        JailFile::shared_read_only(&st.rootfs, in_jail::ROOTFS),
        JailFile::per_vm(files.disk(), in_jail::DISK, true),
        JailFile::per_vm(files.config_drive(), in_jail::CONFIG, false),
        JailFile::output(files.firecracker_log(), in_jail::LOG),
        JailFile::output(files.metrics(), in_jail::METRICS),
    ];
    if let Some(snap) = snapshot {
        jail_files.push(JailFile::shared_read_only(
            snap.file(snap_files::VMSTATE),
            in_jail::SNAPSHOT_STATE,
        ));
        jail_files.push(JailFile::shared_read_only(
            snap.file(snap_files::MEMORY),
            in_jail::SNAPSHOT_MEMORY,
        ));
    }
    vmsan_firecracker::prepare_jail(&launch.layout, uid, gid, &jail_files)
        .map_err(super::convert::jail)?;
    // The API socket's directory, writable by Firecracker only.
    let run = launch.layout.root().join("run");
    std::fs::create_dir_all(&run).map_err(|e| Error::io(format!("create {}", run.display()), e))?;
    std::os::unix::fs::chown(&run, Some(uid), Some(gid))
        .map_err(|e| Error::io(format!("chown {}", run.display()), e))?;
    Ok(())
}

fn append_file(path: &Path) -> Result<std::fs::File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))
}

/// Where the VMM's cgroup limits go. cgroup v1: cgroups made here, which it is born in (see
/// `cgroup::spawn_born_in`; the jailer's own `--cgroup` move would cost an RCU grace period
/// per VM). v2: `--cgroup` values for the jailer.
#[derive(Debug)]
pub(crate) struct VmmCgroups {
    version: vmsan_firecracker::CgroupVersion,
    born_in: Vec<PathBuf>,
    for_jailer: CgroupLimits,
}

/// The VM's cgroups (see [`VmmCgroups`]), made now on cgroup v1. Blocking, and it takes a
/// while (the kernel sets up each controller's state): it runs while the network is built.
pub(crate) fn vmm_cgroups(launch: &Launch, vcpus: u32, mem_mib: u32) -> Result<VmmCgroups> {
    let mounts = CgroupMounts::detect().ok();
    let version = mounts
        .as_ref()
        .and_then(CgroupMounts::jailer_version)
        .unwrap_or(vmsan_firecracker::CgroupVersion::V1);
    let limits = if launch.jailer.is_some() && launch.isolation.cgroup {
        CgroupLimits {
            cpu: Some(CpuLimit::cpus(vcpus)),
            memory_bytes: Some((u64::from(mem_mib) + VMM_OVERHEAD_MIB) << 20),
        }
    } else {
        CgroupLimits::default()
    };
    match (&mounts, version) {
        (Some(mounts), vmsan_firecracker::CgroupVersion::V1)
            if limits != CgroupLimits::default() =>
        {
            let values = limits
                .render(version)
                .map_err(|e| Error::new(ErrorCode::Internal, format!("cgroup limits: {e}")))?;
            let absent = ParentRegistry::absent(mounts, &[launch.layout.exec_name()]);
            let born_in = vmsan_firecracker::cgroup::create_v1_cgroups(
                mounts,
                launch.layout.exec_name(),
                launch.layout.id(),
                &values,
            )
            .map_err(|e| Error::io("create the VM's cgroups", e))?;
            record_cgroup_parents(|r| r.record_made(&absent));
            Ok(VmmCgroups {
                version,
                born_in,
                for_jailer: CgroupLimits::default(),
            })
        }
        _ => {
            // The jailer makes the VM's cgroups (and their parent) itself, later.
            if let Some(mounts) = &mounts
                && launch.jailer.is_some()
                && launch.isolation.cgroup
            {
                let absent = ParentRegistry::absent(mounts, &[launch.layout.exec_name()]);
                record_cgroup_parents(|r| r.record(&absent));
            }
            Ok(VmmCgroups {
                version,
                born_in: Vec::new(),
                for_jailer: limits,
            })
        }
    }
}

/// The record of the parent cgroups made for VMs (`/run/vmsan/cgroups`, see
/// [`ParentRegistry`]), host-wide like the cgroups themselves.
fn cgroup_registry() -> Result<ParentRegistry> {
    let run = Path::new(crate::paths::DEFAULT_RUN_DIR);
    let dir = run.join("cgroups");
    crate::state::ensure_private_dir(run)?;
    crate::state::ensure_private_dir(&dir)?;
    Ok(ParentRegistry::new(dir))
}

/// Records parent cgroups as made for vmsan. Best effort: without the record, a parent only
/// stays after the last VM (and `doctor` cannot name it), so the VM goes on.
fn record_cgroup_parents(f: impl FnOnce(&ParentRegistry) -> std::io::Result<()>) {
    let r =
        cgroup_registry().and_then(|r| f(&r).map_err(|e| Error::io("record cgroup parents", e)));
    if let Err(e) = r {
        tracing::warn!("{e}");
    }
}

/// Removes the parent cgroups made for VMs that no VM uses any more (the kernel refuses to
/// remove one that holds a VM's cgroup or a process). `last`: no VM of any home is left, so a
/// parent still busy is one whose last process (a supervisor) is exiting: wait for it a
/// little. Returns the directories removed.
pub(crate) fn remove_unused_cgroup_parents(last: bool) -> Vec<PathBuf> {
    let (Ok(registry), Ok(mounts)) = (cgroup_registry(), CgroupMounts::detect()) else {
        return Vec::new();
    };
    let patience = if last {
        std::time::Duration::from_secs(2)
    } else {
        std::time::Duration::ZERO
    };
    registry.remove_empty(&mounts, patience)
}

/// Parent cgroups made for VMs that exist and hold no VM's cgroup (for `doctor`): the
/// recorded ones, and the jailer's (`firecracker`) and supervisors' (`vmsan`) by name (left
/// by a vmsan that did not record them yet).
pub(crate) fn cgroup_parent_leftovers() -> Vec<PathBuf> {
    let Ok(mounts) = CgroupMounts::detect() else {
        return Vec::new();
    };
    let mut left = cgroup_registry()
        .map(|r| r.leftovers(&mounts))
        .unwrap_or_default();
    for p in vmsan_firecracker::cgroup_parents::empty_parents(
        &mounts,
        &[JAILER_PARENT_CGROUP, CALLER_FREE_CGROUP],
    ) {
        if !left.contains(&p) {
            left.push(p);
        }
    }
    left.sort();
    left
}

/// The jailer's parent cgroup: its `--parent-cgroup` default, the Firecracker binary's name.
const JAILER_PARENT_CGROUP: &str = "firecracker";

/// Start the jailer (or Firecracker directly with `--no-jailer`), its stdout (the serial
/// console) going to the VM's serial log. Returns the child and the log of its stderr.
pub(crate) fn spawn_vmm(
    launch: &Launch,
    files: &VmFiles,
    netns: Option<&Path>,
    uid: u32,
    gid: u32,
    cgroups: VmmCgroups,
) -> Result<(tokio::process::Child, PathBuf)> {
    let vmm_log = files.dir().join("vmm.log");
    let mut fc = FirecrackerArgs::new(in_jail::API_SOCKET);
    if !launch.isolation.seccomp {
        tracing::warn!("seccomp is off for this VM (--no-seccomp)");
        fc.seccomp = Seccomp::Disabled;
    }
    let bad_args = |e: vmsan_firecracker::ArgError| {
        Error::new(ErrorCode::Internal, format!("VMM arguments: {e}"))
    };
    let VmmCgroups {
        version: cgroup_version,
        born_in,
        for_jailer: cgroups,
    } = cgroups;
    let (program, args, cwd): (PathBuf, Vec<OsString>, Option<PathBuf>) = match &launch.jailer {
        Some(jailer) => {
            let spec = JailerSpec {
                id: launch.layout.id().to_owned(),
                exec_file: launch.firecracker.clone(),
                uid,
                gid,
                chroot_base: launch.layout.chroot_base().to_owned(),
                netns: netns.map(Path::to_path_buf),
                new_pid_ns: launch.isolation.pid_ns,
                daemonize: false,
                cgroup_version,
                cgroups,
                parent_cgroup: None,
                resource_limits: ResourceLimits::default(),
                firecracker: fc,
            };
            (jailer.clone(), spec.args().map_err(bad_args)?, None)
        }
        None => {
            tracing::warn!("running Firecracker without the jailer (--no-jailer), as root");
            // Paths Firecracker is given are relative to the jail root: run it there.
            fc.api_sock = "run/firecracker.socket".into();
            let args = fc.direct_args(launch.layout.id()).map_err(bad_args)?;
            (launch.firecracker.clone(), args, Some(launch.layout.root()))
        }
    };
    let mut serial = append_file(&files.serial_log())?;
    super::last_words::mark_boot(&mut serial)
        .map_err(|e| Error::io(format!("write {}", files.serial_log().display()), e))?;
    let mut cmd = std::process::Command::new(&program);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(serial)
        .stderr(append_file(&vmm_log)?);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
        if let Some(path) = netns {
            let ns = std::fs::File::open(path)
                .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
            crate::sys::netns::enter_on_exec(&mut cmd, ns);
        }
    }
    let runtime = tokio::runtime::Handle::current();
    let spawn = move || {
        let _in_runtime = runtime.enter();
        tokio::process::Command::from(cmd)
            .kill_on_drop(false)
            .spawn()
    };
    let child = vmsan_firecracker::cgroup::spawn_born_in(&born_in, spawn)
        .map_err(|e| Error::io(format!("start {}", program.display()), e))?;
    Ok((child, vmm_log))
}

/// Undo a run: network (and a leak check), jail, cgroups. Never fails: returns what it could
/// not clean, for the log.
pub(crate) async fn teardown(paths: &Paths, st: &VmState) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(slot) = st.network.slot {
        let host = host_config();
        let id = st.id.to_string();
        let r = tokio::task::spawn_blocking(move || -> std::result::Result<Vec<String>, String> {
            let slot = Slot::new(slot).map_err(|e| e.to_string())?;
            vmsan_net::teardown(&host, &id, slot).map_err(|e| e.to_string())?;
            let leaks = vmsan_net::leaks(&host, &id, slot).map_err(|e| e.to_string())?;
            Ok(leaks.iter().map(|l| format!("leaked {l:?}")).collect())
        })
        .await;
        match r {
            Ok(Ok(leaks)) => problems.extend(leaks),
            Ok(Err(e)) => problems.push(format!("network: {e}")),
            Err(e) => problems.push(format!("network task: {e}")),
        }
    }
    match Launch::resolve(paths, st) {
        Ok(launch) => {
            if let Err(e) = vmsan_firecracker::remove_jail(&launch.layout) {
                problems.push(format!("jail: {e}"));
            }
            if launch.jailer.is_some() && launch.isolation.cgroup {
                match CgroupMounts::detect() {
                    Ok(m) => {
                        if let Err(e) =
                            remove_cgroups_when_empty(&m, launch.layout.exec_name(), st.id.as_str())
                                .await
                        {
                            problems.push(format!("cgroups: {e}"));
                        }
                    }
                    Err(e) => problems.push(format!("cgroups: {e}")),
                }
            }
        }
        Err(e) => problems.push(format!("jail: {e}")),
    }
    problems
}

/// Remove the jailer's cgroup directories of a VM. Processes of the VM may still be leaving
/// them for a moment after it ended (rmdir then says EBUSY), so retry for a bounded time.
async fn remove_cgroups_when_empty(
    mounts: &CgroupMounts,
    parent: &str,
    id: &str,
) -> std::result::Result<(), vmsan_firecracker::cgroup::CgroupRemoveError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        match vmsan_firecracker::remove_jailer_cgroups(mounts, parent, id) {
            Ok(_) => return Ok(()),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The v1 cgroups a supervisor is spawned into (see `cgroup::spawn_born_in`): the `vmsan`
/// cgroup of each v1 hierarchy where this process sits in some cgroup other than the root or
/// `/vmsan`, created as needed. A hierarchy whose directory cannot be made is left out (the
/// supervisor then moves itself, see [`leave_caller_cgroup`]).
pub(crate) fn caller_free_v1_cgroups() -> Vec<PathBuf> {
    let (Ok(mounts), Ok(own)) = (
        CgroupMounts::detect(),
        std::fs::read_to_string("/proc/self/cgroup"),
    ) else {
        return Vec::new();
    };
    mounts
        .v1
        .iter()
        .filter(|h| in_caller_cgroup(&own, Some(h.controllers.as_slice())))
        .filter_map(|h| caller_free_cgroup(&h.mount_point).ok())
        .collect()
}

/// The `vmsan` cgroup of the hierarchy mounted at `root`, made if needed. A new cpuset
/// cgroup has no CPUs or memory nodes, and no task can join it until it has: it gets the
/// root's.
fn caller_free_cgroup(root: &Path) -> std::io::Result<PathBuf> {
    let dir = root.join(CALLER_FREE_CGROUP);
    let absent = !dir.exists();
    std::fs::create_dir_all(&dir)?;
    if absent {
        record_cgroup_parents(|r| r.record_made(std::slice::from_ref(&dir)));
    }
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mine = dir.join(file);
        if mine.exists() && std::fs::read_to_string(&mine)?.trim().is_empty() {
            std::fs::write(&mine, std::fs::read_to_string(root.join(file))?.trim())?;
        }
    }
    Ok(dir)
}

/// Move this process out of the caller's cgroups (into `vmsan` cgroups), so that stopping the
/// service or session that ran `vmsan create` does not take the VM down. On cgroup v1 the
/// supervisor is normally born there already ([`caller_free_v1_cgroups`]); this handles the
/// unified hierarchy, and any v1 hierarchy that was not left at birth. Only hierarchies
/// where this process is in some cgroup other than the root (or `/vmsan`) are touched: each
/// move is costly (the kernel waits for an RCU grace period before the first), and the root
/// cgroup belongs to no caller. Best effort: a failure is logged, and the VM still runs.
pub(crate) fn leave_caller_cgroup() {
    let Ok(mounts) = CgroupMounts::detect() else {
        return;
    };
    let own = match std::fs::read_to_string("/proc/self/cgroup") {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!("cannot read /proc/self/cgroup: {e}");
            return;
        }
    };
    let pid = std::process::id().to_string();
    let hierarchies = mounts
        .v1
        .iter()
        .map(|h| (h.mount_point.as_path(), Some(h.controllers.as_slice())))
        .chain(mounts.unified.as_deref().map(|u| (u, None)));
    for (root, controllers) in hierarchies {
        if !in_caller_cgroup(&own, controllers) {
            continue;
        }
        let dir = root.join(CALLER_FREE_CGROUP);
        let moved =
            caller_free_cgroup(root).and_then(|dir| std::fs::write(dir.join("cgroup.procs"), &pid));
        if let Err(e) = moved {
            tracing::warn!("could not move into {}: {e}", dir.display());
        }
    }
}

/// The cgroup (in each hierarchy) that supervisors move into.
const CALLER_FREE_CGROUP: &str = "vmsan";

/// Whether `/proc/self/cgroup` (its text) puts us in a cgroup other than the root and
/// `/vmsan` of the v1 hierarchy with these controllers (`None`: the v2 hierarchy). A
/// hierarchy the file does not list is left alone.
fn in_caller_cgroup(proc_cgroup: &str, controllers: Option<&[String]>) -> bool {
    proc_cgroup.lines().any(|line| {
        let mut f = line.splitn(3, ':');
        let (Some(_id), Some(list), Some(path)) = (f.next(), f.next(), f.next()) else {
            return false;
        };
        let matches = match controllers {
            None => list.is_empty(),
            Some(cs) => {
                !list.is_empty()
                    && list.split(',').all(|c| cs.iter().any(|m| m == c))
                    && cs.iter().all(|m| list.split(',').any(|c| c == m))
            }
        };
        matches && path != "/" && path.trim_end_matches('/') != format!("/{CALLER_FREE_CGROUP}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_CGROUP: &str = "\
9:name=systemd:/
4:memory:/process_api/4cecf20e
2:cpu,cpuacct:/user.slice
1:pids:/vmsan
0::/
";

    fn v1(cs: &[&str]) -> Vec<String> {
        cs.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn only_hierarchies_where_we_sit_in_a_callers_cgroup_are_left() {
        assert!(in_caller_cgroup(PROC_CGROUP, Some(&v1(&["memory"]))));
        assert!(in_caller_cgroup(
            PROC_CGROUP,
            Some(&v1(&["cpuacct", "cpu"]))
        ));
        // The root, our own cgroup, and hierarchies not listed are left alone.
        assert!(!in_caller_cgroup(PROC_CGROUP, Some(&v1(&["name=systemd"]))));
        assert!(!in_caller_cgroup(PROC_CGROUP, Some(&v1(&["pids"]))));
        assert!(!in_caller_cgroup(PROC_CGROUP, Some(&v1(&["cpu"]))));
        assert!(!in_caller_cgroup(PROC_CGROUP, Some(&v1(&["blkio"]))));
        assert!(!in_caller_cgroup(PROC_CGROUP, None));
        assert!(in_caller_cgroup("0::/user.slice/session-1.scope\n", None));
    }
}
