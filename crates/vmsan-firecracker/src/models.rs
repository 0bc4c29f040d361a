//! Hand-written serde models of the Firecracker v1.16.1 API bodies vmsan uses.
//!
//! Every struct and field follows Firecracker v1.16.1's published API description
//! (`src/firecracker/swagger/firecracker.yaml` in its repository, Swagger 2.0):
//! names are the yaml's, optional fields are `Option` and are left out of the JSON when `None`,
//! enums carry exactly the yaml's values. Request bodies reject unknown fields when they are
//! parsed back, so a round-trip test notices any drift from the contract. Bodies Firecracker
//! sends us (`GET /`, `GET /version`, errors) accept unknown fields to stay compatible with
//! newer releases.

use serde::{Deserialize, Serialize};

/// `BootSource`: kernel, optional initrd and kernel command line (`PUT /boot-source`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    /// Host level path to the kernel image (relative to the jail root under the jailer).
    pub kernel_image_path: String,
    /// Host level path to the initrd image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    /// Kernel boot arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}

/// `TokenBucket`: a bucket of `size` tokens refilled every `refill_time` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    /// Total number of tokens the bucket holds.
    pub size: u64,
    /// Milliseconds it takes to refill the bucket.
    pub refill_time: u64,
    /// Initial burst on top of `size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
}

impl TokenBucket {
    /// A bucket that allows `bytes_per_second` on average (refilled every second).
    #[must_use]
    pub fn per_second(tokens_per_second: u64) -> Self {
        Self {
            size: tokens_per_second,
            refill_time: 1000,
            one_time_burst: None,
        }
    }
}

/// `RateLimiter`: independent bytes/s and ops/s token buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiter {
    /// Bucket with bytes as tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    /// Bucket with operations as tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

impl RateLimiter {
    /// A bandwidth-only limiter of `bytes_per_second`.
    #[must_use]
    pub fn bandwidth(bytes_per_second: u64) -> Self {
        Self {
            bandwidth: Some(TokenBucket::per_second(bytes_per_second)),
            ops: None,
        }
    }
}

/// Block device caching strategy (`Drive.cache_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    /// Flushes are ignored (Firecracker's default).
    Unsafe,
    /// Flushes reach the host file.
    Writeback,
}

/// Block device I/O engine (`Drive.io_engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    /// Synchronous I/O (Firecracker's default).
    Sync,
    /// io_uring, host kernels newer than 5.10.51.
    Async,
}

/// `Drive` (`PUT /drives/{drive_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// Drive id; must equal the `{drive_id}` of the path.
    pub drive_id: String,
    /// Unique id of the boot partition (only with `is_root_device`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// Whether the kernel uses this drive as its root device.
    pub is_root_device: bool,
    /// Caching strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
    /// Read-only block device (virtio-block only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    /// Backing file (virtio-block only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    /// I/O rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    /// I/O engine (virtio-block only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
    /// vhost-user-block backend socket (vhost-user-block only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

impl Drive {
    /// A virtio-block drive that is not the root device.
    #[must_use]
    pub fn virtio_block(
        drive_id: impl Into<String>,
        path_on_host: impl Into<String>,
        read_only: bool,
    ) -> Self {
        Self {
            drive_id: drive_id.into(),
            partuuid: None,
            is_root_device: false,
            cache_type: None,
            is_read_only: Some(read_only),
            path_on_host: Some(path_on_host.into()),
            rate_limiter: None,
            io_engine: None,
            socket: None,
        }
    }

    /// Sets the cache type.
    #[must_use]
    pub fn with_cache_type(mut self, cache_type: CacheType) -> Self {
        self.cache_type = Some(cache_type);
        self
    }

    /// Sets the rate limiter.
    #[must_use]
    pub fn with_rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.rate_limiter = Some(limiter);
        self
    }
}

/// `PartialDrive` (`PATCH /drives/{drive_id}`, post-boot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialDrive {
    /// Drive id; must equal the `{drive_id}` of the path.
    pub drive_id: String,
    /// New backing file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    /// New rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

/// `CpuTemplate` (deprecated by Firecracker, kept for `GET /vm/config` round-trips).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum CpuTemplate {
    /// Intel C3.
    C3,
    /// Intel T2.
    T2,
    /// Intel T2S.
    T2S,
    /// Intel T2CL.
    T2CL,
    /// AMD T2A.
    T2A,
    /// Arm V1N1.
    V1N1,
    /// No template.
    None,
}

/// Huge pages backing guest memory (`MachineConfiguration.huge_pages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    /// Ordinary pages.
    None,
    /// 2 MiB hugetlbfs pages.
    #[serde(rename = "2M")]
    TwoMiB,
}

/// `MachineConfiguration` (`PUT|PATCH|GET /machine-config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfiguration {
    /// Number of vCPUs, 1..=32 (1 or even with SMT).
    pub vcpu_count: u32,
    /// Guest memory in MiB.
    pub mem_size_mib: u64,
    /// Simultaneous multithreading (x86 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// Deprecated static CPU template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
    /// Dirty page tracking (needed for diff snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Huge pages configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
}

impl MachineConfiguration {
    /// `vcpu_count` vCPUs and `mem_size_mib` MiB, everything else left to Firecracker.
    #[must_use]
    pub fn new(vcpu_count: u32, mem_size_mib: u64) -> Self {
        Self {
            vcpu_count,
            mem_size_mib,
            smt: None,
            cpu_template: None,
            track_dirty_pages: None,
            huge_pages: None,
        }
    }
}

/// `NetworkInterface` (`PUT /network-interfaces/{iface_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    /// Interface id; must equal the `{iface_id}` of the path.
    pub iface_id: String,
    /// Name of the TAP device (in Firecracker's network namespace).
    pub host_dev_name: String,
    /// MAC address the guest sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    /// MTU advertised through VIRTIO_NET_F_MTU (68..=65535).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Limits what the guest receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// Limits what the guest sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// `PartialNetworkInterface` (`PATCH /network-interfaces/{iface_id}`, post-boot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialNetworkInterface {
    /// Interface id; must equal the `{iface_id}` of the path.
    pub iface_id: String,
    /// New receive limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// New transmit limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// `Vsock` (`PUT /vsock`): hybrid vsock backed by a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// Guest CID, at least 3.
    pub guest_cid: u32,
    /// Unix socket Firecracker listens on for host-initiated connections.
    pub uds_path: String,
    /// Deprecated device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
}

/// `EntropyDevice` (`PUT /entropy`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntropyDevice {
    /// Rate limiter of the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

/// `SerialDevice` (`PUT /serial`): where the guest's serial console output goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialDevice {
    /// File or named pipe receiving the serial output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_out_path: Option<String>,
    /// Output rate limit (excess is dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<TokenBucket>,
}

/// Log level (`Logger.level`, also Firecracker's `--level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warning,
    /// Informational (Firecracker's default).
    Info,
    /// Debug.
    Debug,
    /// Trace.
    Trace,
    /// Nothing.
    Off,
}

impl LogLevel {
    /// The spelling Firecracker's API and command line use.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "Error",
            Self::Warning => "Warning",
            Self::Info => "Info",
            Self::Debug => "Debug",
            Self::Trace => "Trace",
            Self::Off => "Off",
        }
    }
}

/// `Logger` (`PUT /logger`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    /// File or named pipe for the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// Level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    /// Prefix lines with their level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    /// Prefix lines with file and line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    /// Module path filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// `Metrics` (`PUT /metrics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// File or named pipe receiving JSON metrics.
    pub metrics_path: String,
}

/// `InstanceActionInfo.action_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Flush metrics to the metrics file.
    FlushMetrics,
    /// Boot the configured VM.
    InstanceStart,
    /// Press Ctrl-Alt-Del in the guest (x86).
    SendCtrlAltDel,
}

/// `InstanceActionInfo` (`PUT /actions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceActionInfo {
    /// What to do.
    pub action_type: ActionType,
}

/// `Vm.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// Pause the vCPUs.
    Paused,
    /// Resume the vCPUs.
    Resumed,
}

/// `Vm` (`PATCH /vm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    /// Desired state.
    pub state: VmState,
}

/// `SnapshotCreateParams.snapshot_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    /// The whole guest memory.
    Full,
    /// Only memory dirtied since the previous snapshot (needs `track_dirty_pages`).
    Diff,
}

/// `SnapshotCreateParams` (`PUT /snapshot/create`, VM paused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateParams {
    /// Full (default) or diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<SnapshotType>,
    /// File receiving the microVM state.
    pub snapshot_path: String,
    /// File receiving the guest memory.
    pub mem_file_path: String,
}

/// `MemoryBackend.backend_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryBackendType {
    /// Memory is read from a file.
    File,
    /// Page faults are served by a userfaultfd handler listening on a Unix socket.
    Uffd,
}

/// `MemoryBackend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBackend {
    /// File or Uffd.
    pub backend_type: MemoryBackendType,
    /// Memory file, or the Unix socket of the UFFD handler.
    pub backend_path: String,
}

/// `NetworkOverride`: re-points a network interface at another TAP on snapshot load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    /// Interface to change.
    pub iface_id: String,
    /// New TAP name.
    pub host_dev_name: String,
}

/// `VsockOverride`: re-points the vsock device at another Unix socket on snapshot load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockOverride {
    /// New Unix socket path.
    pub uds_path: String,
}

/// `SnapshotLoadParams` (`PUT /snapshot/load`, fresh process only).
///
/// Exactly one of `mem_backend` and the deprecated `mem_file_path` must be present:
/// [`SnapshotLoadParams::validate`] checks it and the client calls it before sending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoadParams {
    /// Deprecated alias of `track_dirty_pages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_diff_snapshots: Option<bool>,
    /// Dirty page tracking after load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Deprecated: memory file (only without `mem_backend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_file_path: Option<String>,
    /// Memory backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_backend: Option<MemoryBackend>,
    /// MicroVM state file.
    pub snapshot_path: String,
    /// Resume the VM once loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_vm: Option<bool>,
    /// TAPs to use instead of the recorded ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_overrides: Option<Vec<NetworkOverride>>,
    /// Vsock socket to use instead of the recorded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
    /// x86_64: advance kvmclock by the wall-clock time elapsed since the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_realtime: Option<bool>,
}

impl SnapshotLoadParams {
    /// Loads `snapshot_path` with guest memory from the file `mem_path`.
    #[must_use]
    pub fn from_file(snapshot_path: impl Into<String>, mem_path: impl Into<String>) -> Self {
        Self {
            enable_diff_snapshots: None,
            track_dirty_pages: None,
            mem_file_path: None,
            mem_backend: Some(MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: mem_path.into(),
            }),
            snapshot_path: snapshot_path.into(),
            resume_vm: None,
            network_overrides: None,
            vsock_override: None,
            clock_realtime: None,
        }
    }

    /// Checks the rule the yaml states in prose: exactly one of `mem_backend` and
    /// `mem_file_path`.
    ///
    /// # Errors
    /// A description of the violation.
    pub fn validate(&self) -> Result<(), &'static str> {
        match (&self.mem_backend, &self.mem_file_path) {
            (Some(_), Some(_)) => Err("mem_backend and mem_file_path are mutually exclusive"),
            (None, None) => Err("one of mem_backend and mem_file_path is required"),
            _ => Ok(()),
        }
    }
}

/// `InstanceInfo.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    /// Configured but not booted.
    #[serde(rename = "Not started")]
    NotStarted,
    /// Running.
    Running,
    /// Paused.
    Paused,
}

/// `InstanceInfo` (`GET /`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Application name ("Firecracker").
    pub app_name: String,
    /// Instance id (the jailer's `--id`).
    pub id: String,
    /// Current state.
    pub state: InstanceState,
    /// VMM version.
    pub vmm_version: String,
}

/// `FirecrackerVersion` (`GET /version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirecrackerVersion {
    /// Build version, e.g. "1.16.1".
    pub firecracker_version: String,
}

/// `Error`: the body of every non-2xx answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// Firecracker's description of the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_message: Option<String>,
}

/// `FullVmConfiguration` (`GET /vm/config`).
///
/// Devices vmsan does not configure (balloon, CPU config, memory hot-plug, MMDS, pmem) are
/// kept as raw JSON so that the document round-trips without modelling them. Unknown
/// top-level keys (a device a newer Firecracker adds) are ignored so that `inspect` keeps
/// working; the device models inside stay strict.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FullVmConfiguration {
    /// Balloon device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<serde_json::Value>,
    /// Block devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drives: Option<Vec<Drive>>,
    /// Boot source (empty after a snapshot load).
    #[serde(
        rename = "boot-source",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub boot_source: Option<BootSource>,
    /// Custom CPU template.
    #[serde(
        rename = "cpu-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_config: Option<serde_json::Value>,
    /// Logger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<Logger>,
    /// Machine configuration.
    #[serde(
        rename = "machine-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub machine_config: Option<MachineConfiguration>,
    /// Metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// virtio-mem device.
    #[serde(
        rename = "memory-hotplug",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_hotplug: Option<serde_json::Value>,
    /// MMDS configuration.
    #[serde(
        rename = "mmds-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mmds_config: Option<serde_json::Value>,
    /// Network devices.
    #[serde(
        rename = "network-interfaces",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub network_interfaces: Option<Vec<NetworkInterface>>,
    /// pmem devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pmem: Option<Vec<serde_json::Value>>,
    /// Vsock device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<Vsock>,
    /// Entropy device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<EntropyDevice>,
}
