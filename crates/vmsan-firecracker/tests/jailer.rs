//! Golden tests of the jailer's and Firecracker's argv, the jail layout and the kernel
//! command line.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use vmsan_firecracker::bootargs::{BootArgs, DRIVE_ORDER, virtio_block_device};
use vmsan_firecracker::models::LogLevel;
use vmsan_firecracker::*;
use vmsan_proto::FsType;

fn strings(args: Vec<OsString>) -> Vec<String> {
    args.into_iter().map(|a| a.into_string().unwrap()).collect()
}

fn spec(version: CgroupVersion) -> JailerSpec {
    let mut firecracker = FirecrackerArgs::new("/run/firecracker.socket");
    firecracker.level = Some(LogLevel::Info);
    firecracker.log_path = Some("/firecracker.log".into());
    JailerSpec {
        id: "vm-0123abcd".into(),
        exec_file: PathBuf::from("/var/lib/vmsan/bin/firecracker"),
        uid: 10_000,
        gid: 10_000,
        chroot_base: PathBuf::from("/var/lib/vmsan/jail"),
        netns: Some(PathBuf::from("/var/run/netns/vmsan-vm-0123abcd")),
        new_pid_ns: true,
        daemonize: true,
        cgroup_version: version,
        cgroups: CgroupLimits {
            cpu: Some(CpuLimit::cpus(1)),
            memory_bytes: Some(268_435_456),
        },
        parent_cgroup: None,
        resource_limits: ResourceLimits::default(),
        firecracker,
    }
}

/// The invocation a real jailer accepted on a cgroup v1 host (firecracker-verified.md).
#[test]
fn jailer_argv_v1_matches_verified_invocation() {
    let args = strings(spec(CgroupVersion::V1).args().unwrap());
    let expected = [
        "--id",
        "vm-0123abcd",
        "--exec-file",
        "/var/lib/vmsan/bin/firecracker",
        "--uid",
        "10000",
        "--gid",
        "10000",
        "--chroot-base-dir",
        "/var/lib/vmsan/jail",
        "--netns",
        "/var/run/netns/vmsan-vm-0123abcd",
        "--new-pid-ns",
        "--daemonize",
        "--cgroup-version",
        "1",
        "--cgroup",
        "cpu.cfs_quota_us=100000",
        "--cgroup",
        "cpu.cfs_period_us=100000",
        "--cgroup",
        "memory.limit_in_bytes=268435456",
        "--",
        "--api-sock",
        "/run/firecracker.socket",
        "--level",
        "Info",
        "--log-path",
        "/firecracker.log",
    ];
    assert_eq!(args, expected);
}

#[test]
fn jailer_argv_v2_with_every_option() {
    let mut spec = spec(CgroupVersion::V2);
    spec.cgroups.cpu = Some(CpuLimit {
        quota_us: 200_000,
        period_us: 100_000,
    });
    spec.parent_cgroup = Some("vmsan/vms".into());
    spec.resource_limits = ResourceLimits {
        fsize: Some(1 << 30),
        no_file: Some(4096),
    };
    spec.firecracker.metrics_path = Some("/metrics.json".into());
    spec.firecracker.show_level = true;
    spec.firecracker.show_log_origin = true;
    spec.firecracker.boot_timer = true;
    spec.firecracker.seccomp = Seccomp::Custom("/seccomp.bpf".into());
    let args = strings(spec.args().unwrap());
    let expected = [
        "--id",
        "vm-0123abcd",
        "--exec-file",
        "/var/lib/vmsan/bin/firecracker",
        "--uid",
        "10000",
        "--gid",
        "10000",
        "--chroot-base-dir",
        "/var/lib/vmsan/jail",
        "--netns",
        "/var/run/netns/vmsan-vm-0123abcd",
        "--new-pid-ns",
        "--daemonize",
        "--cgroup-version",
        "2",
        "--cgroup",
        "cpu.max=200000 100000",
        "--cgroup",
        "memory.max=268435456",
        "--parent-cgroup",
        "vmsan/vms",
        "--resource-limit",
        "fsize=1073741824",
        "--resource-limit",
        "no-file=4096",
        "--",
        "--api-sock",
        "/run/firecracker.socket",
        "--level",
        "Info",
        "--log-path",
        "/firecracker.log",
        "--show-level",
        "--show-log-origin",
        "--metrics-path",
        "/metrics.json",
        "--boot-timer",
        "--seccomp-filter",
        "/seccomp.bpf",
    ];
    assert_eq!(args, expected);
    assert_eq!(spec.cgroup_parent().unwrap(), "vmsan/vms");
}

#[test]
fn minimal_jailer_argv_has_default_seccomp() {
    let mut spec = spec(CgroupVersion::V1);
    spec.netns = None;
    spec.new_pid_ns = false;
    spec.daemonize = false;
    spec.cgroups = CgroupLimits::default();
    spec.firecracker = FirecrackerArgs::new("/run/firecracker.socket");
    let args = strings(spec.args().unwrap());
    let expected = [
        "--id",
        "vm-0123abcd",
        "--exec-file",
        "/var/lib/vmsan/bin/firecracker",
        "--uid",
        "10000",
        "--gid",
        "10000",
        "--chroot-base-dir",
        "/var/lib/vmsan/jail",
        "--cgroup-version",
        "1",
        "--",
        "--api-sock",
        "/run/firecracker.socket",
    ];
    assert_eq!(args, expected);
    assert!(!args.iter().any(|a| a.contains("seccomp")));
    assert_eq!(spec.cgroup_parent().unwrap(), "firecracker");
}

#[test]
fn no_seccomp_only_when_asked() {
    let mut args = FirecrackerArgs::new("/tmp/fc.sock");
    assert_eq!(
        strings(args.args().unwrap()),
        ["--api-sock", "/tmp/fc.sock"]
    );
    args.seccomp = Seccomp::Disabled;
    assert_eq!(
        strings(args.args().unwrap()),
        ["--api-sock", "/tmp/fc.sock", "--no-seccomp"]
    );
    // Without the jailer, --id comes first.
    assert_eq!(
        strings(args.direct_args("vm-1").unwrap()),
        ["--id", "vm-1", "--api-sock", "/tmp/fc.sock", "--no-seccomp"]
    );
    assert!(args.direct_args("bad id").is_err());
}

#[test]
fn jailer_spec_refuses_bad_values() {
    type Mutation = Box<dyn Fn(&mut JailerSpec)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("root uid", Box::new(|s| s.uid = 0)),
        ("root gid", Box::new(|s| s.gid = 0)),
        ("empty id", Box::new(|s| s.id = String::new())),
        ("slash in id", Box::new(|s| s.id = "a/b".into())),
        ("dots in id", Box::new(|s| s.id = "..".into())),
        ("long id", Box::new(|s| s.id = "a".repeat(65))),
        ("underscore id", Box::new(|s| s.id = "a_b".into())),
        (
            "exec name",
            Box::new(|s| s.exec_file = "/usr/bin/qemu".into()),
        ),
        (
            "relative exec",
            Box::new(|s| s.exec_file = "bin/firecracker".into()),
        ),
        ("relative base", Box::new(|s| s.chroot_base = "jail".into())),
        (
            "dotdot base",
            Box::new(|s| s.chroot_base = "/srv/../etc".into()),
        ),
        (
            "relative netns",
            Box::new(|s| s.netns = Some("netns/x".into())),
        ),
        (
            "absolute parent",
            Box::new(|s| s.parent_cgroup = Some("/sys".into())),
        ),
        (
            "dotdot parent",
            Box::new(|s| s.parent_cgroup = Some("a/../../b".into())),
        ),
        (
            "empty parent part",
            Box::new(|s| s.parent_cgroup = Some("a//b".into())),
        ),
        (
            "zero memory",
            Box::new(|s| s.cgroups.memory_bytes = Some(0)),
        ),
        (
            "tiny quota",
            Box::new(|s| {
                s.cgroups.cpu = Some(CpuLimit {
                    quota_us: 10,
                    period_us: 100_000,
                });
            }),
        ),
        (
            "huge period",
            Box::new(|s| {
                s.cgroups.cpu = Some(CpuLimit {
                    quota_us: 100_000,
                    period_us: 2_000_000,
                });
            }),
        ),
        (
            "zero no-file",
            Box::new(|s| s.resource_limits.no_file = Some(0)),
        ),
        (
            "relative api sock",
            Box::new(|s| s.firecracker.api_sock = "run/fc.sock".into()),
        ),
    ];
    for (name, mutate) in cases {
        let mut s = spec(CgroupVersion::V1);
        mutate(&mut s);
        assert!(s.args().is_err(), "{name}: accepted {s:?}");
    }
}

#[test]
fn jail_layout_paths() {
    let layout = JailLayout::new(
        Path::new("/var/lib/vmsan/jail"),
        Path::new("/var/lib/vmsan/bin/firecracker"),
        "vm-0123abcd",
    )
    .unwrap();
    let root = "/var/lib/vmsan/jail/firecracker/vm-0123abcd/root";
    assert_eq!(
        layout.instance_dir(),
        Path::new("/var/lib/vmsan/jail/firecracker/vm-0123abcd")
    );
    assert_eq!(layout.root(), Path::new(root));
    assert_eq!(
        layout.api_socket(),
        Path::new(&format!("{root}/run/firecracker.socket"))
    );
    assert_eq!(
        layout.pid_file(),
        Path::new(&format!("{root}/firecracker.pid"))
    );
    assert_eq!(
        layout.exec_copy(),
        Path::new(&format!("{root}/firecracker"))
    );
    assert_eq!(layout.vsock_socket(), Path::new(&format!("{root}/v.sock")));
    assert_eq!(
        layout.vsock_listener(1025),
        Path::new(&format!("{root}/v.sock_1025"))
    );
    assert_eq!(
        layout.host_path("vmlinux").unwrap(),
        Path::new(&format!("{root}/vmlinux"))
    );
    assert!(layout.host_path("../etc").is_err());
    assert!(layout.host_path("a/b").is_err());
    assert!(layout.host_path("").is_err());
    layout.check_socket_paths().unwrap();
    // The API socket path the spec hands Firecracker is the one the layout expects.
    assert_eq!(
        layout.api_socket(),
        layout
            .root()
            .join(layout::API_SOCKET_IN_JAIL.trim_start_matches('/'))
    );

    let long_base = format!("/{}", "b".repeat(60));
    let long = JailLayout::new(
        Path::new(&long_base),
        Path::new("/x/firecracker"),
        "vm-0123abcd",
    )
    .unwrap();
    assert!(long.check_socket_paths().is_err());
    assert!(JailLayout::new(Path::new("/j"), Path::new("/x/firecracker"), "../x").is_err());
    assert!(JailLayout::new(Path::new("j"), Path::new("/x/firecracker"), "vm").is_err());
}

#[test]
fn boot_args_follow_the_guest_abi() {
    assert_eq!(
        BootArgs::new(FsType::Squashfs).render(),
        "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.dumbkbd quiet \
         vmsan_rootfs=/dev/vda vmsan_rootfs_fs=squashfs vmsan_overlay=/dev/vdb vmsan_config=/dev/vdc"
    );
    let args = BootArgs::new(FsType::Ext4)
        .with_extra("loglevel=7")
        .unwrap()
        .to_string();
    assert_eq!(
        args,
        "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.dumbkbd quiet \
         loglevel=7 vmsan_rootfs=/dev/vda vmsan_rootfs_fs=ext4 vmsan_overlay=/dev/vdb vmsan_config=/dev/vdc"
    );
    for bad in ["", "a b", "x=\"y\"", "--", "vmsan_rootfs=/dev/vdz", "a\nb"] {
        assert!(
            BootArgs::new(FsType::Ext4).with_extra(bad).is_err(),
            "{bad:?}"
        );
    }
    assert_eq!(DRIVE_ORDER, ["rootfs", "overlay", "config"]);
    assert_eq!(virtio_block_device(0).as_deref(), Some("/dev/vda"));
    assert_eq!(virtio_block_device(2).as_deref(), Some("/dev/vdc"));
    assert_eq!(virtio_block_device(26), None);
}

#[test]
fn defaults_and_layout_of_a_spec() {
    let spec = JailerSpec::new(
        "vm-1",
        "/opt/fc/firecracker-v1.16.1",
        "/srv/vmsan",
        10_001,
        10_001,
        CgroupVersion::V2,
    );
    let args = strings(spec.args().unwrap());
    assert_eq!(
        args,
        [
            "--id",
            "vm-1",
            "--exec-file",
            "/opt/fc/firecracker-v1.16.1",
            "--uid",
            "10001",
            "--gid",
            "10001",
            "--chroot-base-dir",
            "/srv/vmsan",
            "--new-pid-ns",
            "--daemonize",
            "--cgroup-version",
            "2",
            "--",
            "--api-sock",
            "/run/firecracker.socket",
        ]
    );
    let layout = spec.layout().unwrap();
    // The jail is named after the exec file, whatever it is called.
    assert_eq!(
        layout.root(),
        Path::new("/srv/vmsan/firecracker-v1.16.1/vm-1/root")
    );
    assert_eq!(
        layout.pid_file(),
        layout.root().join("firecracker-v1.16.1.pid")
    );
    assert_eq!(spec.cgroup_parent().unwrap(), "firecracker-v1.16.1");
}
