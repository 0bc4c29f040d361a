//! What the supervisor sets up for one VM run besides its `Launch`: the network plan and DNS
//! filter, the jail's files, the VMM's cgroups, and the jailer or Firecracker process. Their
//! teardown, which a caller also runs when a supervisor is gone, is in `vm::host`.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use vmsan_firecracker::cgroup_parents::ParentRegistry;
use vmsan_firecracker::{
    CgroupLimits, CgroupMounts, CpuLimit, FirecrackerArgs, JailFile, JailerSpec, ResourceLimits,
    Seccomp,
};
use vmsan_net::dns::{AllowedDomains, DnsFilter, NftSetUpdater};
use vmsan_net::{HostConfig, VmNet, VmNetSpec};

use super::plan::NetPlan;
use crate::error::{Error, ErrorCode, Result};
use crate::state::VmState;
use crate::vm::files::{VmFiles, in_jail};
use crate::vm::host::{
    Launch, VMM_OVERHEAD_MIB, host_config, policy_of, record_cgroup_parents, spec_of,
};

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
    let policy = policy_of(&st.network);
    let filter = DnsFilter::bind(
        Some(&net.netns_path),
        net.dns_listen_addr(),
        host.host_netns.as_deref(),
        vmsan_net::dns::DnsAllow::of(&policy),
        net.dns_upstreams.clone(),
        Arc::new(NftSetUpdater::new(net.netns_path.clone())),
    )
    .map_err(|e| crate::vm::convert::net(e, "starting the DNS filter"))?;
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
    domains.set_policy(&policy_of(&st.network));
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
        .map_err(crate::vm::convert::jail)?;
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
    crate::vm::last_words::mark_boot(&mut serial)
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
