//! Bad API requests with Firecracker v1.16.1's status and `fault_message`: checked against the
//! stand-in (`api_requests.rs`) and, request by request, against the real VMM
//! (`privileged_realfc_api.rs`).
#![allow(dead_code, unreachable_pub)] // shared by several test binaries

pub struct Case {
    pub name: &'static str,
    pub setup: &'static [(&'static str, &'static str, &'static str)],
    pub method: &'static str,
    pub path: &'static str,
    pub body: Option<&'static str>,
    pub status: u16,
    pub message: &'static str,
}

pub const fn case(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    message: &'static str,
) -> Case {
    Case {
        name,
        setup: &[],
        method,
        path,
        body,
        status: 400,
        message,
    }
}

pub const DESER: &str = "An error occurred when deserializing the json body of a request: ";

pub fn cases() -> Vec<Case> {
    vec![
        case(
            "unknown machine-config field",
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":1,"mem_size_mib":128,"bogus":1}"#),
            "unknown field `bogus`, expected one of `vcpu_count`, `mem_size_mib`, `smt`, `cpu_template`, `track_dirty_pages`, `huge_pages`",
        ),
        case(
            "missing mem_size_mib",
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":1}"#),
            "missing field `mem_size_mib`",
        ),
        case(
            "vcpu_count wrong type",
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":"two","mem_size_mib":128}"#),
            "invalid type: string \"two\", expected u8",
        ),
        case(
            "vcpu_count zero",
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":0,"mem_size_mib":128}"#),
            "Machine config error: The number of vCPUs must be greater than 0",
        ),
        case(
            "memory zero",
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":1,"mem_size_mib":0}"#),
            "Machine config error: The memory size (MiB) is either 0",
        ),
        case(
            "odd vcpus with smt",
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":3,"mem_size_mib":128,"smt":true}"#),
            "must be 1 or an even number if SMT is enabled",
        ),
        case(
            "not json",
            "PUT",
            "/machine-config",
            Some("vcpu_count=1"),
            "expected value at line 1 column 1",
        ),
        case(
            "boot-source missing kernel",
            "PUT",
            "/boot-source",
            Some(r#"{"boot_args":"quiet"}"#),
            "missing field `kernel_image_path`",
        ),
        case(
            "boot-source unknown field",
            "PUT",
            "/boot-source",
            Some(r#"{"kernel_image_path":"/x","initrd":"/y"}"#),
            "unknown field `initrd`, expected one of `kernel_image_path`, `initrd_path`, `boot_args`",
        ),
        case(
            "kernel missing",
            "PUT",
            "/boot-source",
            Some(r#"{"kernel_image_path":"/nonexistent/vmlinux"}"#),
            "Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)",
        ),
        case(
            "initrd missing",
            "PUT",
            "/boot-source",
            Some(r#"{"kernel_image_path":"/proc/self/exe","initrd_path":"/nonexistent/initrd"}"#),
            "Boot source error: The initrd file cannot be opened due to invalid path or invalid permissions. No such file or directory (os error 2)",
        ),
        case(
            "drive id mismatch",
            "PUT",
            "/drives/rootfs",
            Some(
                r#"{"drive_id":"other","is_root_device":false,"path_on_host":"/proc/self/exe","is_read_only":true}"#,
            ),
            "The id from the path does not match the id from the body!",
        ),
        case(
            "drive empty id",
            "PUT",
            "/drives",
            Some(r#"{"drive_id":"x","is_root_device":false}"#),
            "The ID cannot be empty.",
        ),
        case(
            "drive id with dash",
            "PUT",
            "/drives/root-fs",
            Some(r#"{"drive_id":"root-fs","is_root_device":false}"#),
            "API Resource IDs can only contain alphanumeric characters and underscores.",
        ),
        case(
            "drive missing is_root_device",
            "PUT",
            "/drives/rootfs",
            Some(r#"{"drive_id":"rootfs","path_on_host":"/proc/self/exe"}"#),
            "missing field `is_root_device`",
        ),
        case(
            "drive bad cache type",
            "PUT",
            "/drives/rootfs",
            Some(r#"{"drive_id":"rootfs","is_root_device":false,"cache_type":"Fast"}"#),
            "unknown variant `Fast`, expected `Unsafe` or `Writeback`",
        ),
        case(
            "drive file missing",
            "PUT",
            "/drives/rootfs",
            Some(
                r#"{"drive_id":"rootfs","is_root_device":false,"is_read_only":true,"path_on_host":"/nonexistent/disk"}"#,
            ),
            "Drive config error: Unable to create the virtio block device",
        ),
        case(
            "drive unknown field",
            "PUT",
            "/drives/rootfs",
            Some(r#"{"drive_id":"rootfs","is_root_device":false,"readonly":true}"#),
            "unknown field `readonly`",
        ),
        case(
            "net id mismatch",
            "PUT",
            "/network-interfaces/eth0",
            Some(r#"{"iface_id":"eth1","host_dev_name":"tap0"}"#),
            "The id from the path [eth0] does not match the id from the body [eth1]!",
        ),
        case(
            "net missing host_dev_name",
            "PUT",
            "/network-interfaces/eth0",
            Some(r#"{"iface_id":"eth0"}"#),
            "missing field `host_dev_name`",
        ),
        case(
            "net rate limiter unknown field",
            "PUT",
            "/network-interfaces/eth0",
            Some(
                r#"{"iface_id":"eth0","host_dev_name":"tap0","rx_rate_limiter":{"bytes":{"size":1,"refill_time":1}}}"#,
            ),
            "unknown field `bytes`, expected `bandwidth` or `ops`",
        ),
        case(
            "token bucket missing refill_time",
            "PUT",
            "/entropy",
            Some(r#"{"rate_limiter":{"bandwidth":{"size":100}}}"#),
            "missing field `refill_time`",
        ),
        case(
            "vsock missing uds_path",
            "PUT",
            "/vsock",
            Some(r#"{"guest_cid":3}"#),
            "missing field `uds_path`",
        ),
        case(
            "unknown action",
            "PUT",
            "/actions",
            Some(r#"{"action_type":"Reboot"}"#),
            "unknown variant `Reboot`, expected one of `FlushMetrics`, `InstanceStart`, `SendCtrlAltDel`",
        ),
        case(
            "start without kernel",
            "PUT",
            "/actions",
            Some(r#"{"action_type":"InstanceStart"}"#),
            "Start microvm error: Cannot start microvm without kernel configuration.",
        ),
        case(
            "ctrl-alt-del before boot",
            "PUT",
            "/actions",
            Some(r#"{"action_type":"SendCtrlAltDel"}"#),
            "The requested operation is not supported before starting the microVM.",
        ),
        case(
            "pause before boot",
            "PATCH",
            "/vm",
            Some(r#"{"state":"Paused"}"#),
            "The requested operation is not supported before starting the microVM.",
        ),
        case(
            "bad vm state",
            "PATCH",
            "/vm",
            Some(r#"{"state":"Frozen"}"#),
            "unknown variant `Frozen`, expected `Paused` or `Resumed`",
        ),
        case(
            "snapshot before boot",
            "PUT",
            "/snapshot/create",
            Some(r#"{"snapshot_path":"s","mem_file_path":"m"}"#),
            "The requested operation is not supported before starting the microVM.",
        ),
        case(
            "snapshot create missing mem path",
            "PUT",
            "/snapshot/create",
            Some(r#"{"snapshot_path":"s"}"#),
            "missing field `mem_file_path`",
        ),
        case(
            "snapshot load both memory sources",
            "PUT",
            "/snapshot/load",
            Some(
                r#"{"snapshot_path":"s","mem_file_path":"m","mem_backend":{"backend_type":"File","backend_path":"m"}}"#,
            ),
            "either `mem_backend` or `mem_file_path` exclusively is required",
        ),
        Case {
            name: "load after configuring",
            setup: &[(
                "PUT",
                "/machine-config",
                r#"{"vcpu_count":1,"mem_size_mib":128}"#,
            )],
            ..case(
                "",
                "PUT",
                "/snapshot/load",
                Some(
                    r#"{"snapshot_path":"s","mem_backend":{"backend_type":"File","backend_path":"m"}}"#,
                ),
                "Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.",
            )
        },
        Case {
            name: "metrics twice",
            setup: &[("PUT", "/metrics", r#"{"metrics_path":"/dev/null"}"#)],
            ..case(
                "",
                "PUT",
                "/metrics",
                Some(r#"{"metrics_path":"/dev/null"}"#),
                "Metrics error: Cannot initialize the metrics system due to bad user input: Reinitialization of metrics not allowed.",
            )
        },
        case(
            "logger bad level",
            "PUT",
            "/logger",
            Some(r#"{"level":"Loud"}"#),
            "Invalid LevelFilter",
        ),
        case(
            "GET with body",
            "GET",
            "/machine-config",
            Some("{}"),
            "GET request cannot have a body.",
        ),
        case(
            "PUT without body",
            "PUT",
            "/boot-source",
            None,
            "Empty PUT request.",
        ),
        case(
            "PATCH without body",
            "PATCH",
            "/vm",
            None,
            "Empty PATCH request.",
        ),
        case(
            "unknown path",
            "PUT",
            "/frobnicate",
            Some("{}"),
            "Invalid request method and/or path: PUT frobnicate.",
        ),
        case(
            "unknown snapshot verb",
            "PUT",
            "/snapshot/delete",
            Some("{}"),
            "Invalid request method and/or path: PUT /snapshot/delete.",
        ),
    ]
}
