//! The models serialise to exactly the bodies a real Firecracker v1.16.1 accepted (sent to
//! the binary and recorded when these models were written), and parse them back without
//! loss.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use vmsan_firecracker::models::*;

/// Serialises `ours`, compares it with `expected`, then parses `expected` back and checks it
/// gives `ours` again.
fn round_trip<T>(ours: &T, expected: &Value)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let serialised = serde_json::to_value(ours).unwrap();
    assert_eq!(&serialised, expected, "serialised body differs");
    let parsed: T = serde_json::from_value(expected.clone()).unwrap();
    assert_eq!(&parsed, ours, "parsed body differs");
}

#[test]
fn logger_matches_verified_body() {
    round_trip(
        &Logger {
            log_path: Some("/vm/firecracker.log".into()),
            level: Some(LogLevel::Info),
            ..Logger::default()
        },
        &json!({"log_path": "/vm/firecracker.log", "level": "Info"}),
    );
}

#[test]
fn metrics_matches_verified_body() {
    round_trip(
        &Metrics {
            metrics_path: "/vm/metrics.json".into(),
        },
        &json!({"metrics_path": "/vm/metrics.json"}),
    );
}

#[test]
fn boot_source_matches_verified_body() {
    let args = "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.dumbkbd quiet";
    round_trip(
        &BootSource {
            kernel_image_path: "vmlinux".into(),
            initrd_path: Some("initrd.cpio".into()),
            boot_args: Some(args.into()),
        },
        &json!({"kernel_image_path": "vmlinux", "initrd_path": "initrd.cpio", "boot_args": args}),
    );
    // Only the kernel is required.
    round_trip(
        &BootSource {
            kernel_image_path: "vmlinux".into(),
            initrd_path: None,
            boot_args: None,
        },
        &json!({"kernel_image_path": "vmlinux"}),
    );
}

#[test]
fn drives_match_verified_bodies() {
    round_trip(
        &Drive::virtio_block("rootfs", "rootfs.sqfs", true),
        &json!({"drive_id": "rootfs", "path_on_host": "rootfs.sqfs", "is_root_device": false, "is_read_only": true}),
    );
    round_trip(
        &Drive::virtio_block("overlay", "overlay.ext4", false)
            .with_cache_type(CacheType::Writeback),
        &json!({"drive_id": "overlay", "path_on_host": "overlay.ext4", "is_root_device": false, "is_read_only": false, "cache_type": "Writeback"}),
    );
    round_trip(
        &Drive::virtio_block("config", "config.json", true),
        &json!({"drive_id": "config", "path_on_host": "config.json", "is_root_device": false, "is_read_only": true}),
    );
}

#[test]
fn drive_with_every_field() {
    let drive = Drive {
        drive_id: "d".into(),
        partuuid: Some("0eaa91a0-01".into()),
        is_root_device: true,
        cache_type: Some(CacheType::Unsafe),
        is_read_only: Some(false),
        path_on_host: Some("d.img".into()),
        rate_limiter: Some(RateLimiter {
            bandwidth: Some(TokenBucket {
                size: 1000,
                refill_time: 100,
                one_time_burst: Some(5000),
            }),
            ops: Some(TokenBucket::per_second(10)),
        }),
        io_engine: Some(IoEngine::Async),
        socket: None,
    };
    round_trip(
        &drive,
        &json!({
            "drive_id": "d", "partuuid": "0eaa91a0-01", "is_root_device": true,
            "cache_type": "Unsafe", "is_read_only": false, "path_on_host": "d.img",
            "rate_limiter": {
                "bandwidth": {"size": 1000, "refill_time": 100, "one_time_burst": 5000},
                "ops": {"size": 10, "refill_time": 1000}
            },
            "io_engine": "Async"
        }),
    );
}

#[test]
fn machine_config_matches_verified_body() {
    let mut config = MachineConfiguration::new(2, 256);
    config.smt = Some(false);
    config.track_dirty_pages = Some(true);
    round_trip(
        &config,
        &json!({"vcpu_count": 2, "mem_size_mib": 256, "smt": false, "track_dirty_pages": true}),
    );
    let mut huge = MachineConfiguration::new(1, 128);
    huge.huge_pages = Some(HugePages::TwoMiB);
    huge.cpu_template = Some(CpuTemplate::None);
    round_trip(
        &huge,
        &json!({"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "2M", "cpu_template": "None"}),
    );
}

#[test]
fn machine_config_rejects_unknown_field_like_firecracker() {
    let err = serde_json::from_value::<MachineConfiguration>(
        json!({"vcpu_count": 1, "mem_size_mib": 128, "bogus": 1}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `bogus`"), "{err}");
}

#[test]
fn network_interface_matches_verified_body() {
    let limiter = RateLimiter::bandwidth(12_500_000);
    round_trip(
        &NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "vmsan0".into(),
            guest_mac: Some("06:00:c6:12:00:02".into()),
            mtu: None,
            rx_rate_limiter: Some(limiter),
            tx_rate_limiter: Some(limiter),
        },
        &json!({
            "iface_id": "eth0", "host_dev_name": "vmsan0", "guest_mac": "06:00:c6:12:00:02",
            "rx_rate_limiter": {"bandwidth": {"size": 12_500_000, "refill_time": 1000}},
            "tx_rate_limiter": {"bandwidth": {"size": 12_500_000, "refill_time": 1000}}
        }),
    );
    round_trip(
        &PartialNetworkInterface {
            iface_id: "eth0".into(),
            rx_rate_limiter: None,
            tx_rate_limiter: Some(RateLimiter::default()),
        },
        &json!({"iface_id": "eth0", "tx_rate_limiter": {}}),
    );
}

#[test]
fn vsock_entropy_serial_match() {
    round_trip(
        &Vsock {
            guest_cid: 3,
            uds_path: "v.sock".into(),
            vsock_id: None,
        },
        &json!({"guest_cid": 3, "uds_path": "v.sock"}),
    );
    round_trip(&EntropyDevice::default(), &json!({}));
    round_trip(
        &SerialDevice {
            serial_out_path: Some("serial.log".into()),
            rate_limiter: None,
        },
        &json!({"serial_out_path": "serial.log"}),
    );
}

#[test]
fn actions_and_vm_state_match_verified_bodies() {
    for (action, name) in [
        (ActionType::InstanceStart, "InstanceStart"),
        (ActionType::SendCtrlAltDel, "SendCtrlAltDel"),
        (ActionType::FlushMetrics, "FlushMetrics"),
    ] {
        round_trip(
            &InstanceActionInfo {
                action_type: action,
            },
            &json!({"action_type": name}),
        );
    }
    round_trip(
        &Vm {
            state: VmState::Paused,
        },
        &json!({"state": "Paused"}),
    );
    round_trip(
        &Vm {
            state: VmState::Resumed,
        },
        &json!({"state": "Resumed"}),
    );
}

#[test]
fn snapshot_create_matches_verified_body() {
    round_trip(
        &SnapshotCreateParams {
            snapshot_type: Some(SnapshotType::Full),
            snapshot_path: "snap".into(),
            mem_file_path: "mem".into(),
        },
        &json!({"snapshot_type": "Full", "snapshot_path": "snap", "mem_file_path": "mem"}),
    );
    round_trip(
        &SnapshotCreateParams {
            snapshot_type: Some(SnapshotType::Diff),
            snapshot_path: "s".into(),
            mem_file_path: "m".into(),
        },
        &json!({"snapshot_type": "Diff", "snapshot_path": "s", "mem_file_path": "m"}),
    );
}

#[test]
fn snapshot_load_matches_verified_body() {
    let mut params = SnapshotLoadParams::from_file("snap", "mem");
    params.resume_vm = Some(true);
    params.network_overrides = Some(vec![NetworkOverride {
        iface_id: "eth0".into(),
        host_dev_name: "vmsan1".into(),
    }]);
    params.vsock_override = Some(VsockOverride {
        uds_path: "v2.sock".into(),
    });
    params.clock_realtime = Some(true);
    assert_eq!(params.validate(), Ok(()));
    round_trip(
        &params,
        &json!({
            "snapshot_path": "snap",
            "mem_backend": {"backend_type": "File", "backend_path": "mem"},
            "resume_vm": true,
            "network_overrides": [{"iface_id": "eth0", "host_dev_name": "vmsan1"}],
            "vsock_override": {"uds_path": "v2.sock"},
            "clock_realtime": true
        }),
    );
    let uffd = SnapshotLoadParams {
        mem_backend: Some(MemoryBackend {
            backend_type: MemoryBackendType::Uffd,
            backend_path: "uffd.sock".into(),
        }),
        track_dirty_pages: Some(true),
        ..SnapshotLoadParams::from_file("snap", "unused")
    };
    round_trip(
        &uffd,
        &json!({"snapshot_path": "snap", "track_dirty_pages": true,
                "mem_backend": {"backend_type": "Uffd", "backend_path": "uffd.sock"}}),
    );
}

#[test]
fn snapshot_load_requires_exactly_one_memory_source() {
    let mut both = SnapshotLoadParams::from_file("snap", "mem");
    both.mem_file_path = Some("mem".into());
    assert!(both.validate().is_err());
    let mut neither = SnapshotLoadParams::from_file("snap", "mem");
    neither.mem_backend = None;
    assert!(neither.validate().is_err());
    let mut legacy = neither.clone();
    legacy.mem_file_path = Some("mem".into());
    assert_eq!(legacy.validate(), Ok(()));
}

#[test]
fn responses_parse() {
    let info: InstanceInfo = serde_json::from_value(json!({
        "app_name": "Firecracker", "id": "vm-1", "state": "Not started", "vmm_version": "1.16.1"
    }))
    .unwrap();
    assert_eq!(info.state, InstanceState::NotStarted);
    let running: InstanceInfo = serde_json::from_value(json!({
        "app_name": "Firecracker", "id": "vm-1", "state": "Running", "vmm_version": "1.16.1",
        "something_new": 1
    }))
    .unwrap();
    assert_eq!(running.state, InstanceState::Running);
    let version: FirecrackerVersion =
        serde_json::from_value(json!({"firecracker_version": "1.16.1"})).unwrap();
    assert_eq!(version.firecracker_version, "1.16.1");
    let err: ApiErrorBody =
        serde_json::from_value(json!({"fault_message": "Boot source error"})).unwrap();
    assert_eq!(err.fault_message.as_deref(), Some("Boot source error"));
}

/// The shape `GET /vm/config` answered after the cold-boot sequence (defaults filled in,
/// absent devices as null).
#[test]
fn full_vm_config_parses_and_round_trips() {
    let body = json!({
        "balloon": null,
        "drives": [
            {"drive_id": "rootfs", "partuuid": null, "is_root_device": false, "cache_type": "Unsafe",
             "is_read_only": true, "path_on_host": "rootfs.sqfs", "rate_limiter": null,
             "io_engine": "Sync", "socket": null},
            {"drive_id": "overlay", "partuuid": null, "is_root_device": false, "cache_type": "Writeback",
             "is_read_only": false, "path_on_host": "overlay.ext4", "rate_limiter": null,
             "io_engine": "Sync", "socket": null}
        ],
        "boot-source": {"kernel_image_path": "vmlinux", "initrd_path": "initrd.cpio", "boot_args": "quiet"},
        "cpu-config": null,
        "logger": null,
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 256, "smt": false, "track_dirty_pages": true, "huge_pages": "None"},
        "metrics": null,
        "mmds-config": null,
        "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "vmsan0", "guest_mac": "06:00:c6:12:00:02",
            "rx_rate_limiter": null, "tx_rate_limiter": null}],
        "vsock": {"guest_cid": 3, "uds_path": "v.sock"},
        "entropy": {"rate_limiter": null}
    });
    let config: FullVmConfiguration = serde_json::from_value(body).unwrap();
    let drives = config.drives.as_ref().unwrap();
    assert_eq!(drives.len(), 2);
    assert_eq!(drives[0].cache_type, Some(CacheType::Unsafe));
    assert_eq!(drives[0].io_engine, Some(IoEngine::Sync));
    assert_eq!(drives[1].cache_type, Some(CacheType::Writeback));
    assert_eq!(
        config.boot_source.as_ref().unwrap().initrd_path.as_deref(),
        Some("initrd.cpio")
    );
    assert_eq!(
        config.machine_config.as_ref().unwrap().huge_pages,
        Some(HugePages::None)
    );
    assert_eq!(config.vsock.as_ref().unwrap().uds_path, "v.sock");
    assert_eq!(config.entropy, Some(EntropyDevice::default()));
    assert!(config.balloon.is_none() && config.logger.is_none());
    // What we serialise parses back to the same configuration.
    let again: FullVmConfiguration =
        serde_json::from_value(serde_json::to_value(&config).unwrap()).unwrap();
    assert_eq!(again, config);
}

#[test]
fn full_vm_config_tolerates_a_new_device_but_not_a_changed_one() {
    // A device a newer Firecracker adds at the top level is ignored …
    let config: FullVmConfiguration = serde_json::from_value(json!({
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
        "serial": {"serial_out_path": "serial.log"}
    }))
    .unwrap();
    assert_eq!(config.machine_config.unwrap().vcpu_count, 1);
    // … but a changed field inside a device vmsan relies on is an error, not silently lost.
    assert!(
        serde_json::from_value::<FullVmConfiguration>(json!({
            "drives": [{"drive_id": "x", "is_root_device": false, "new_field": 1}]
        }))
        .is_err()
    );
}
