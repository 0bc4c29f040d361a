//! Checks of the host: KVM, TUN, cgroups, disk, routing, nftables, firewall, filesystems.

use std::path::{Path, PathBuf};
use std::process::Command;

use vmsan_firecracker::{CgroupMode, CgroupMounts};

use super::Check;
use crate::paths::Paths;
use crate::sys;

const SYSTEM: &str = "System";
const MIN_FREE_BYTES: u64 = 5 << 30;
/// `sun_path` holds 108 bytes including the terminating NUL.
const SUN_PATH_MAX: usize = 107;

pub(super) fn checks(paths: &Paths) -> Vec<Check> {
    vec![
        kvm(),
        tun(),
        cgroups(&CgroupMounts::detect().unwrap_or_default()),
        disk_space(paths.home()),
        disk_overcommit(paths),
        default_interface(),
        nftables(),
        host_firewall(),
        jail_filesystem(&paths.jail_dir()),
        socket_path_length(paths),
        mke2fs(),
        mksquashfs(),
        network_leaks(paths),
        cgroup_leftovers(paths),
    ]
}

/// The check `name`, not made: it needs root (it reads other users' kernel state).
fn needs_root(name: &'static str) -> Option<Check> {
    (!nix::unistd::geteuid().is_root()).then(|| {
        Check::warn(
            SYSTEM,
            name,
            "not checked: needs root",
            "Run `sudo vmsan doctor`.",
        )
    })
}

/// Parent cgroups made for VMs (`firecracker`, `vmsan` in each hierarchy) left empty when no
/// VM of any home exists: they go with the last VM, unless it was removed by other means.
fn cgroup_leftovers(paths: &Paths) -> Check {
    const NAME: &str = "cgroup leftovers";
    if let Some(c) = needs_root(NAME) {
        return c;
    }
    let vms = crate::state::StateStore::open(paths)
        .and_then(|s| s.host_claims())
        .map(|c| c.len())
        .unwrap_or(0);
    let left = crate::vm::cgroup_parent_leftovers();
    if left.is_empty() {
        return Check::pass(SYSTEM, NAME, "none");
    }
    let list: Vec<String> = left.iter().map(|p| p.display().to_string()).collect();
    if vms > 0 {
        return Check::pass(
            SYSTEM,
            NAME,
            format!(
                "{} empty parent cgroups kept for the host's {vms} VMs",
                list.len()
            ),
        );
    }
    Check::warn(
        SYSTEM,
        NAME,
        format!(
            "{} empty, made for VMs that are gone: {}",
            list.len(),
            list.join(", ")
        ),
        format!("Remove them: `rmdir {}`.", list.join(" ")),
    )
}

/// Network objects of VMs that no longer exist (a crashed or killed vmsan leaves them).
fn network_leaks(paths: &Paths) -> Check {
    const NAME: &str = "Network leaks";
    if let Some(c) = needs_root(NAME) {
        return c;
    }
    let store = crate::state::StateStore::open(paths);
    let mut known: Vec<(String, vmsan_net::Slot)> = store
        .as_ref()
        .ok()
        .and_then(|s| s.list().ok())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| match e {
            crate::state::ListEntry::Vm(st) => {
                let slot = vmsan_net::Slot::new(st.network.slot?).ok()?;
                Some((st.id.to_string(), slot))
            }
            crate::state::ListEntry::Corrupt { .. } => None,
        })
        .collect();
    // The VMs of every other home on this host are not leaks either: their network is
    // host-wide too, and their slot claims say which VM holds what.
    let others = store.and_then(|s| s.host_claims()).unwrap_or_default();
    for c in others {
        if let Ok(slot) = vmsan_net::Slot::new(c.slot)
            && !known.iter().any(|(id, _)| *id == c.vm.as_str())
        {
            known.push((c.vm.to_string(), slot));
        }
    }
    match vmsan_net::scan_leaks(&crate::vm::host_config(), &known) {
        Ok(leaks) if leaks.is_empty() => Check::pass(SYSTEM, NAME, "none"),
        Ok(leaks) => Check::warn(
            SYSTEM,
            NAME,
            format!("{} left behind: {:?}", leaks.len(), leaks),
            "They belong to no VM vmsan knows: delete them (`ip netns del`, `ip link del`, \
             `nft delete table`) once you are sure no other tool uses them.",
        ),
        Err(e) => Check::warn(
            SYSTEM,
            NAME,
            format!("could not scan: {e}"),
            "Run `vmsan doctor` again as root.",
        ),
    }
}

/// Programs are looked up in the system directories only, never in a user-controlled PATH:
/// doctor and the library run as root.
pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(name))
    .find(|p| p.is_file())
}

fn kvm() -> Check {
    const FIX: &str = "Enable virtualisation (VT-x/AMD-V) in the BIOS or the hypervisor, load the \
        module (`modprobe kvm_intel` or `modprobe kvm_amd`), and make /dev/kvm read-write for root.";
    let kvm = match sys::kvm::open() {
        Ok(f) => f,
        Err(e) => return Check::fail(SYSTEM, "KVM", format!("/dev/kvm: {e}"), FIX),
    };
    match sys::kvm::api_version(&kvm) {
        Ok(v) if v == sys::kvm::KVM_API_VERSION => {}
        Ok(v) => {
            return Check::fail(
                SYSTEM,
                "KVM",
                format!("unexpected KVM API version {v}"),
                FIX,
            );
        }
        Err(e) => return Check::fail(SYSTEM, "KVM", format!("KVM_GET_API_VERSION: {e}"), FIX),
    }
    match sys::kvm::can_create_vm(&kvm) {
        Ok(()) => Check::pass(
            SYSTEM,
            "KVM",
            "/dev/kvm read-write, API 12, can create a VM",
        ),
        Err(e) => Check::fail(SYSTEM, "KVM", format!("KVM_CREATE_VM: {e}"), FIX),
    }
}

fn tun() -> Check {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => Check::pass(SYSTEM, "TUN device", "/dev/net/tun read-write"),
        Err(e) => Check::fail(
            SYSTEM,
            "TUN device",
            format!("/dev/net/tun: {e}"),
            "Load the module with `modprobe tun`; if it exists but cannot be opened, check that \
             /dev is not mounted nodev.",
        ),
    }
}

/// The cgroup set-up, as the jailer will see it (the Firecracker driver's mountinfo-based
/// detection, so non-standard mount points count too).
fn cgroups(mounts: &CgroupMounts) -> Check {
    const NAME: &str = "cgroups";
    match mounts.mode() {
        Some(CgroupMode::V2) => {
            let controllers = mounts
                .unified
                .as_ref()
                .and_then(|u| std::fs::read_to_string(u.join("cgroup.controllers")).ok())
                .unwrap_or_default();
            let have = |c: &str| controllers.split_whitespace().any(|x| x == c);
            if have("cpu") && have("memory") {
                Check::pass(
                    SYSTEM,
                    NAME,
                    "v2 (unified), cpu and memory controllers available",
                )
            } else {
                Check::warn(
                    SYSTEM,
                    NAME,
                    format!("v2 (unified), controllers: {}", controllers.trim()),
                    "Enable the cpu and memory controllers (cgroup.subtree_control), or create VMs \
                     with --no-cgroup.",
                )
            }
        }
        Some(mode @ (CgroupMode::V1 | CgroupMode::Hybrid)) => {
            let kind = if mode == CgroupMode::Hybrid {
                "v1 (hybrid)"
            } else {
                "v1 (legacy)"
            };
            let missing: Vec<&str> = ["cpu", "memory"]
                .into_iter()
                .filter(|c| mounts.v1_controller_mount(c).is_none())
                .collect();
            if missing.is_empty() {
                Check::pass(
                    SYSTEM,
                    NAME,
                    format!("{kind}, cpu and memory controllers mounted"),
                )
            } else {
                Check::warn(
                    SYSTEM,
                    NAME,
                    format!("{kind}, missing controllers: {}", missing.join(", ")),
                    "Mount the missing cgroup v1 controllers, or create VMs with --no-cgroup.",
                )
            }
        }
        None => Check::fail(
            SYSTEM,
            NAME,
            "no cgroup hierarchy is mounted",
            "Mount cgroup2 on /sys/fs/cgroup (or create VMs with --no-cgroup).",
        ),
    }
}

fn nearest_existing(path: &Path) -> &Path {
    let mut p = path;
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    p
}

fn disk_space(home: &Path) -> Check {
    let at = nearest_existing(home);
    match nix::sys::statvfs::statvfs(at) {
        Ok(s) => {
            let free = s.blocks_available().saturating_mul(s.fragment_size());
            let gib = free as f64 / f64::from(1u32 << 30);
            let detail = format!("{gib:.1} GiB free for {}", home.display());
            if free >= MIN_FREE_BYTES {
                Check::pass(SYSTEM, "Disk space", detail)
            } else {
                Check::warn(
                    SYSTEM,
                    "Disk space",
                    detail,
                    "Free at least 5 GiB there, or point VMSAN_HOME at a larger filesystem.",
                )
            }
        }
        Err(e) => Check::fail(
            SYSTEM,
            "Disk space",
            format!("statvfs {}: {e}", at.display()),
            "Check that the vmsan home directory is on a mounted filesystem.",
        ),
    }
}

/// Whether the home's thin disks may grow past the free space (see `vm::disk_room`).
fn disk_overcommit(paths: &Paths) -> Check {
    use crate::vm::disk_room::{gib, measure};
    const NAME: &str = "Disk overcommit";
    if !paths.vms_dir().is_dir() {
        return Check::pass(SYSTEM, NAME, "no VMs yet");
    }
    match measure(paths) {
        Ok(room) => {
            let detail = format!(
                "VM disks may grow by {}; {} free",
                gib(room.promised),
                gib(room.free)
            );
            match room.overcommit_with(0) {
                None => Check::pass(SYSTEM, NAME, detail),
                Some(over) => Check::warn(
                    SYSTEM,
                    NAME,
                    format!(
                        "{detail}: {} short if every guest fills its disk",
                        gib(over)
                    ),
                    "Free space under VMSAN_HOME, move it to a larger filesystem, or give VMs \
                     smaller --disk sizes: a guest that fills its disk then fills the host's \
                     filesystem and its writes fail (ERR_HOST_DISK_FULL).",
                ),
            }
        }
        Err(e) => Check::warn(
            SYSTEM,
            NAME,
            format!("could not measure: {e}"),
            "Check that the vmsan home is readable (run as root).",
        ),
    }
}

/// The interface of the IPv4 default route, from `/proc/net/route`.
pub(crate) fn default_route_interface(route_table: &str) -> Option<String> {
    route_table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_owned())
    })
}

fn default_interface() -> Check {
    let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    match default_route_interface(&table) {
        Some(dev) => Check::pass(SYSTEM, "Default interface", dev),
        None => Check::warn(
            SYSTEM,
            "Default interface",
            "no IPv4 default route",
            "VMs can only reach the outside through a default route: add one (`ip route add \
             default via <gateway>`).",
        ),
    }
}

fn nftables() -> Check {
    const NAME: &str = "nftables";
    if !nix::unistd::geteuid().is_root() {
        return Check::warn(
            SYSTEM,
            NAME,
            "the kernel test needs root",
            "Run `sudo vmsan doctor` to test that the kernel accepts vmsan's tables.",
        );
    }
    // vmsan's own VM ruleset, loaded over netlink into a scratch namespace that disappears
    // with the probe: the host's own rules are never touched, no `nft` binary is needed.
    match vmsan_net::nft::probe_kernel() {
        Ok(()) => Check::pass(
            SYSTEM,
            NAME,
            "kernel accepted a VM ruleset in a scratch namespace",
        ),
        Err(e) => Check::fail(
            SYSTEM,
            NAME,
            format!("test ruleset rejected: {e}"),
            "Load nf_tables (`modprobe nf_tables`), use a kernel of 5.10 or newer and check that \
             network namespaces are available (CONFIG_NET_NS).",
        ),
    }
}

fn host_firewall() -> Check {
    let ufw = std::fs::read_to_string("/etc/ufw/ufw.conf")
        .map(|c| c.lines().any(|l| l.trim() == "ENABLED=yes"))
        .unwrap_or(false);
    let firewalld = Path::new("/run/firewalld/firewalld.pid").exists()
        || Path::new("/var/run/firewalld.pid").exists();
    match (ufw, firewalld) {
        (false, false) => Check::pass(SYSTEM, "Host firewall", "neither ufw nor firewalld active"),
        _ => Check::warn(
            SYSTEM,
            "Host firewall",
            if ufw {
                "ufw is active"
            } else {
                "firewalld is active"
            },
            "vmsan adds its own forward and NAT rules beside it; if VMs cannot reach the network, \
             allow forwarding from the vmsan-* interfaces in its configuration.",
        ),
    }
}

/// The mount options of the mount that holds `path`, from `/proc/self/mountinfo`.
pub(crate) fn mount_options_for(mountinfo: &str, path: &Path) -> Option<(String, String)> {
    let mut best: Option<(usize, String, String)> = None;
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 6 {
            continue;
        }
        let mount_point = f[4].replace("\\040", " ");
        let mp = Path::new(&mount_point);
        if path.starts_with(mp) {
            let len = mount_point.len();
            // Later lines over-mount earlier ones at the same point.
            if best.as_ref().is_none_or(|(l, _, _)| len >= *l) {
                best = Some((len, mount_point.clone(), f[5].to_owned()));
            }
        }
    }
    best.map(|(_, mp, opts)| (mp, opts))
}

fn jail_filesystem(jail: &Path) -> Check {
    const NAME: &str = "Jail filesystem";
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let at = nearest_existing(jail);
    let canon = at.canonicalize().unwrap_or_else(|_| at.to_owned());
    match mount_options_for(&mountinfo, &canon) {
        Some((mp, opts)) => {
            let bad: Vec<&str> = opts
                .split(',')
                .filter(|o| matches!(*o, "nodev" | "noexec" | "ro"))
                .collect();
            if bad.is_empty() {
                Check::pass(SYSTEM, NAME, format!("{} on {mp} ({opts})", jail.display()))
            } else {
                Check::fail(
                    SYSTEM,
                    NAME,
                    format!("{} is on {mp}, mounted {}", jail.display(), bad.join(",")),
                    format!(
                        "The jailer creates device nodes and runs Firecracker there: remount \
                         (`mount -o remount,dev,exec,rw {mp}`) or set VMSAN_HOME elsewhere."
                    ),
                )
            }
        }
        None => Check::warn(
            SYSTEM,
            NAME,
            format!("could not find the mount holding {}", jail.display()),
            "Check that /proc is mounted.",
        ),
    }
}

/// Whether the sockets vmsan makes under the home (the longest: a VM's Firecracker API socket
/// in its jail) fit in a Unix socket path; the same check `setup` and `create` make.
fn socket_path_length(paths: &Paths) -> Check {
    const NAME: &str = "Socket paths";
    match crate::vm::socket_room::check_home(paths) {
        Ok(()) => Check::pass(
            SYSTEM,
            NAME,
            match crate::vm::socket_room::longest_socket_path(paths) {
                Some(p) => format!(
                    "longest socket path {} of {SUN_PATH_MAX} bytes",
                    p.as_os_str().len()
                ),
                None => "the home is not an absolute path".into(),
            },
        ),
        Err(e) => Check::fail(
            SYSTEM,
            NAME,
            format!("{} ({})", e.message(), e.code().as_str()),
            e.fix_text().unwrap_or_default(),
        ),
    }
}

/// Parse `mke2fs 1.47.0 (5-Feb-2023)` into (1, 47, 0).
pub(crate) fn parse_mke2fs_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.lines().find_map(|l| l.strip_prefix("mke2fs "))?;
    let v = v.split_whitespace().next()?;
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

fn mke2fs() -> Check {
    const NAME: &str = "mke2fs";
    const FIX: &str = "Install e2fsprogs 1.43 or newer (`apt-get install e2fsprogs`).";
    let Some(tool) = find_tool("mke2fs") else {
        return Check::fail(SYSTEM, NAME, "mke2fs not found", FIX);
    };
    let out = Command::new(&tool).arg("-V").output();
    let text = out.map(|o| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    match text.ok().as_deref().and_then(parse_mke2fs_version) {
        Some(v) if v >= (1, 43, 0) => Check::pass(
            SYSTEM,
            NAME,
            format!("{}.{}.{} (supports -d)", v.0, v.1, v.2),
        ),
        Some(v) => Check::fail(
            SYSTEM,
            NAME,
            format!("{}.{}.{} is too old for -d", v.0, v.1, v.2),
            FIX,
        ),
        None => Check::fail(
            SYSTEM,
            NAME,
            format!("could not read the version of {}", tool.display()),
            FIX,
        ),
    }
}

fn mksquashfs() -> Check {
    match find_tool("mksquashfs") {
        Some(p) => Check::pass(SYSTEM, "mksquashfs", p.display().to_string()),
        None => Check::fail(
            SYSTEM,
            "mksquashfs",
            "mksquashfs not found",
            "Install squashfs-tools (`apt-get install squashfs-tools`): images are built with it.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_from_proc_table() {
        let t = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                 eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
                 eth1\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\n";
        assert_eq!(default_route_interface(t).as_deref(), Some("eth1"));
        assert_eq!(default_route_interface("Iface\n"), None);
    }

    #[test]
    fn longest_mount_prefix_wins() {
        let mi = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                  30 22 0:5 / /var/lib rw,nodev shared:2 - tmpfs tmpfs rw\n\
                  31 22 0:6 / /var/libx rw shared:3 - tmpfs tmpfs rw\n";
        let (mp, opts) = mount_options_for(mi, Path::new("/var/lib/vmsan/jail")).unwrap();
        assert_eq!(mp, "/var/lib");
        assert!(opts.contains("nodev"));
        let (mp, _) = mount_options_for(mi, Path::new("/srv")).unwrap();
        assert_eq!(mp, "/");
    }

    #[test]
    fn mke2fs_versions() {
        assert_eq!(
            parse_mke2fs_version(
                "mke2fs 1.47.0 (5-Feb-2023)\n\tUsing EXT2FS Library version 1.47.0"
            ),
            Some((1, 47, 0))
        );
        assert_eq!(
            parse_mke2fs_version("mke2fs 1.42 (29-Nov-2011)"),
            Some((1, 42, 0))
        );
        assert_eq!(parse_mke2fs_version("garbage"), None);
    }

    #[test]
    fn cgroup_modes() {
        use super::super::Status;
        use vmsan_firecracker::cgroup::V1Hierarchy;
        assert_eq!(cgroups(&CgroupMounts::default()).status, Status::Fail);
        let v1 = |c: &str| V1Hierarchy {
            mount_point: PathBuf::from(format!("/sys/fs/cgroup/{c}")),
            controllers: vec![c.to_owned()],
        };
        let legacy = CgroupMounts {
            v1: vec![v1("memory")],
            unified: None,
        };
        let check = cgroups(&legacy);
        assert_eq!(check.status, Status::Warn);
        assert!(
            check.detail.contains("missing controllers: cpu"),
            "{}",
            check.detail
        );
        let hybrid = CgroupMounts {
            v1: vec![v1("cpu"), v1("memory")],
            unified: Some(PathBuf::from("/sys/fs/cgroup/unified")),
        };
        let check = cgroups(&hybrid);
        assert_eq!(check.status, Status::Pass);
        assert!(check.detail.starts_with("v1 (hybrid)"), "{}", check.detail);
        let d = tempfile::tempdir().unwrap();
        let v2 = CgroupMounts {
            v1: Vec::new(),
            unified: Some(d.path().to_owned()),
        };
        std::fs::write(d.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        assert_eq!(cgroups(&v2).status, Status::Pass);
        std::fs::write(d.path().join("cgroup.controllers"), "io\n").unwrap();
        assert_eq!(cgroups(&v2).status, Status::Warn);
    }

    #[test]
    fn long_homes_fail_the_socket_check() {
        // 51 bytes: the API socket under it would have 108 (the old check, which measured
        // the shorter vsock socket, passed it).
        let long = Paths::new(format!("/{}", "x".repeat(50)));
        let c = socket_path_length(&long);
        assert_eq!(c.status, super::super::Status::Fail, "{}", c.detail);
        assert!(
            c.detail.contains("ERR_SETUP_HOME_PATH_TOO_LONG"),
            "{}",
            c.detail
        );
        assert!(c.detail.contains("at most 107"), "{}", c.detail);
        let c = socket_path_length(&Paths::new(format!("/{}", "x".repeat(49))));
        assert_eq!(c.status, super::super::Status::Pass, "{}", c.detail);
        assert_eq!(
            socket_path_length(&Paths::new("/var/lib/vmsan")).status,
            super::super::Status::Pass
        );
    }
}
