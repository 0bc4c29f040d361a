//! Firecracker v1.16.1 API bodies, as the stand-in parses them: serde with
//! `deny_unknown_fields`, so unknown, missing and mistyped fields fail with serde's messages,
//! which are also Firecracker's (it parses with serde too).

use serde::{Deserialize, Serialize};

/// `TokenBucket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    /// Bucket size in bytes or operations.
    pub size: u64,
    /// Initial extra credit, consumed once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill the whole bucket.
    pub refill_time: u64,
}

/// `RateLimiter`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiter {
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    /// Operations (frames, requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

/// `BootSource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    /// Path of the kernel image.
    pub kernel_image_path: String,
    /// Path of the initrd.
    #[serde(default)]
    pub initrd_path: Option<String>,
    /// Kernel command line.
    #[serde(default)]
    pub boot_args: Option<String>,
}

/// Firecracker's default kernel command line (used when `boot_args` is absent).
pub const DEFAULT_KERNEL_CMDLINE: &str = "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce";

/// `cache_type` of a drive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    /// Flushes ignored (default).
    #[default]
    Unsafe,
    /// Flushes honoured.
    Writeback,
}

/// `io_engine` of a drive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    /// Default.
    #[default]
    Sync,
    /// io_uring.
    Async,
}

/// `Drive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// Drive id.
    pub drive_id: String,
    /// Partition UUID of the root device.
    #[serde(default)]
    pub partuuid: Option<String>,
    /// Whether this is the root device.
    pub is_root_device: bool,
    /// Cache type.
    #[serde(default)]
    pub cache_type: CacheType,
    /// Read-only flag (virtio-block).
    #[serde(default)]
    pub is_read_only: Option<bool>,
    /// Backing file (virtio-block).
    #[serde(default)]
    pub path_on_host: Option<String>,
    /// Rate limiter.
    #[serde(default)]
    pub rate_limiter: Option<RateLimiter>,
    /// I/O engine.
    #[serde(default)]
    pub io_engine: IoEngine,
    /// vhost-user socket.
    #[serde(default)]
    pub socket: Option<String>,
}

/// `huge_pages`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    /// 4 KiB pages.
    #[default]
    None,
    /// 2 MiB hugetlbfs pages.
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

/// A static CPU template, as Firecracker v1.16.1 on x86_64 names them (in its order, which its
/// "unknown variant" message lists; aarch64's `V1N1` is refused there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StaticCpuTemplate {
    /// Intel C3.
    C3,
    /// Intel T2.
    T2,
    /// Intel T2S.
    T2S,
    /// No template.
    None,
    /// Intel T2CL.
    T2CL,
    /// AMD T2A.
    T2A,
}

/// `MachineConfiguration` (PUT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// vCPUs.
    pub vcpu_count: u8,
    /// Memory.
    pub mem_size_mib: usize,
    /// SMT.
    #[serde(default)]
    pub smt: bool,
    /// Static CPU template (left out of answers when unset, as Firecracker does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<StaticCpuTemplate>,
    /// Dirty page tracking.
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// Huge pages.
    #[serde(default)]
    pub huge_pages: HugePages,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            vcpu_count: 1,
            mem_size_mib: 128,
            smt: false,
            cpu_template: None,
            track_dirty_pages: false,
            huge_pages: HugePages::None,
        }
    }
}

/// `MachineConfiguration` (PATCH): every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigUpdate {
    /// vCPUs.
    #[serde(default)]
    pub vcpu_count: Option<u8>,
    /// Memory.
    #[serde(default)]
    pub mem_size_mib: Option<usize>,
    /// SMT.
    #[serde(default)]
    pub smt: Option<bool>,
    /// Static CPU template.
    #[serde(default)]
    pub cpu_template: Option<StaticCpuTemplate>,
    /// Dirty page tracking.
    #[serde(default)]
    pub track_dirty_pages: Option<bool>,
    /// Huge pages.
    #[serde(default)]
    pub huge_pages: Option<HugePages>,
}

/// `NetworkInterface`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    /// Interface id.
    pub iface_id: String,
    /// Host TAP name.
    pub host_dev_name: String,
    /// Guest MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    /// MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Limiter on frames towards the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// Limiter on frames from the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// `PartialNetworkInterface` (PATCH).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterfaceUpdate {
    /// Interface id.
    pub iface_id: String,
    /// New rx limiter.
    #[serde(default)]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// New tx limiter.
    #[serde(default)]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// `Vsock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// Guest CID (>= 3).
    pub guest_cid: u32,
    /// Host-side Unix socket.
    pub uds_path: String,
    /// Deprecated id.
    #[serde(default, skip_serializing)]
    pub vsock_id: Option<String>,
}

/// `EntropyDevice`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entropy {
    /// Rate limiter (`null` in answers when unset, as Firecracker shows it).
    #[serde(default)]
    pub rate_limiter: Option<RateLimiter>,
}

/// Log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Level {
    /// Off.
    Off,
    /// Error.
    Error,
    /// Warning.
    Warning,
    /// Info.
    Info,
    /// Debug.
    Debug,
    /// Trace.
    Trace,
}

impl Level {
    /// Parses a level name case-insensitively, as Firecracker does.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Some(Self::Off),
            "error" => Some(Self::Error),
            "warning" | "warn" => Some(Self::Warning),
            "info" => Some(Self::Info),
            "debug" => Some(Self::Debug),
            "trace" => Some(Self::Trace),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // Firecracker parses it as a `log::LevelFilter`, whose error names neither the value
        // nor the choices.
        Level::parse(&s).ok_or_else(|| serde::de::Error::custom("Invalid LevelFilter"))
    }
}

/// `Logger`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    /// Log file.
    #[serde(default)]
    pub log_path: Option<String>,
    /// Level.
    #[serde(default)]
    pub level: Option<Level>,
    /// Prefix lines with the level.
    #[serde(default)]
    pub show_level: Option<bool>,
    /// Prefix lines with file:line.
    #[serde(default)]
    pub show_log_origin: Option<bool>,
    /// Module filter.
    #[serde(default)]
    pub module: Option<String>,
}

/// `Metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Metrics file.
    pub metrics_path: String,
}

/// `InstanceActionInfo.action_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ActionType {
    /// Flush metrics.
    FlushMetrics,
    /// Boot.
    InstanceStart,
    /// Ctrl-Alt-Del.
    SendCtrlAltDel,
}

/// `InstanceActionInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// Which action.
    pub action_type: ActionType,
}

/// `Vm.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum VmStateRequest {
    /// Pause.
    Paused,
    /// Resume.
    Resumed,
}

/// `Vm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmState {
    /// Requested state.
    pub state: VmStateRequest,
}

/// `snapshot_type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    /// Full.
    #[default]
    Full,
    /// Diff.
    Diff,
}

/// `SnapshotCreateParams`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    /// Type.
    #[serde(default)]
    pub snapshot_type: SnapshotType,
    /// State file.
    pub snapshot_path: String,
    /// Memory file.
    pub mem_file_path: String,
}

/// `MemoryBackend.backend_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum BackendType {
    /// A file.
    File,
    /// A userfaultfd handler.
    Uffd,
}

/// `MemoryBackend`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBackend {
    /// Type.
    pub backend_type: BackendType,
    /// Path.
    pub backend_path: String,
}

/// `NetworkOverride`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    /// Interface id.
    pub iface_id: String,
    /// New TAP.
    pub host_dev_name: String,
}

/// `VsockOverride`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockOverride {
    /// New socket.
    pub uds_path: String,
}

/// `SnapshotLoadParams`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoad {
    /// Deprecated.
    #[serde(default)]
    pub enable_diff_snapshots: Option<bool>,
    /// Dirty page tracking.
    #[serde(default)]
    pub track_dirty_pages: Option<bool>,
    /// Deprecated memory file.
    #[serde(default)]
    pub mem_file_path: Option<String>,
    /// Memory backend.
    #[serde(default)]
    pub mem_backend: Option<MemoryBackend>,
    /// State file.
    pub snapshot_path: String,
    /// Resume after load.
    #[serde(default)]
    pub resume_vm: bool,
    /// TAP overrides.
    #[serde(default)]
    pub network_overrides: Vec<NetworkOverride>,
    /// Vsock override.
    #[serde(default)]
    pub vsock_override: Option<VsockOverride>,
    /// Realtime clock.
    #[serde(default)]
    pub clock_realtime: bool,
    /// Huge pages on load.
    #[serde(default)]
    pub huge_pages: Option<String>,
}

/// Parses a MAC address `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for o in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(out)
}

/// Firecracker's API resource id check (`checked_id`): non-empty, alphanumeric or `_`.
pub fn checked_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("The ID cannot be empty.".to_owned());
    }
    if !id.chars().all(|c| c == '_' || c.is_alphanumeric()) {
        return Err(
            "API Resource IDs can only contain alphanumeric characters and underscores.".to_owned(),
        );
    }
    Ok(())
}

/// The jailer's instance id check: 1..=64 characters, alphanumeric or `-`.
pub fn validate_instance_id(id: &str) -> Result<(), String> {
    let len = id.chars().count();
    if !(1..=64).contains(&len) {
        return Err(format!(
            "Invalid len ({len});  the length must be between 1 and 64"
        ));
    }
    for (i, c) in id.chars().enumerate() {
        if !(c == '-' || c.is_alphanumeric()) {
            return Err(format!("Invalid char ({c}) at position {i}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_message_has_firecrackers_shape() {
        let err = serde_json::from_str::<MachineConfig>(
            r#"{"vcpu_count":1,"mem_size_mib":128,"bogus":1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("unknown field `bogus`, expected one of `vcpu_count`, `mem_size_mib`, `smt`, `cpu_template`, `track_dirty_pages`, `huge_pages`"),
            "{err}"
        );
    }

    #[test]
    fn mac_parsing_is_strict() {
        assert_eq!(
            parse_mac("06:00:c6:12:00:02"),
            Some([6, 0, 0xc6, 0x12, 0, 2])
        );
        assert_eq!(parse_mac("06:00:c6:12:00"), None);
        assert_eq!(parse_mac("06:00:c6:12:00:02:03"), None);
        assert_eq!(parse_mac("6:00:c6:12:00:02"), None);
        assert_eq!(parse_mac("zz:00:c6:12:00:02"), None);
    }

    #[test]
    fn instance_ids_follow_the_jailer() {
        assert!(validate_instance_id("abc-123").is_ok());
        assert_eq!(
            validate_instance_id("12_3aa").unwrap_err(),
            "Invalid char (_) at position 2"
        );
        assert!(validate_instance_id("").is_err());
        assert!(validate_instance_id(&"a".repeat(65)).is_err());
        assert!(checked_id("rootfs").is_ok());
        assert!(checked_id("root-fs").is_err());
    }
}
