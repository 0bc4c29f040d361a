//! The persisted shape of a VM: `state.json`, version [`STATE_VERSION`].
//!
//! Field names follow the `state.json` of the Node.js vmsan this one re-creates where they
//! still apply, so scripts that read them keep working; what is new is grouped in objects.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vmsan_net::{Cidr, DomainPattern};
use vmsan_proto::{FsType, InitMode};

/// A published port, `host:guest/proto`: the network crate's type, recorded as it serialises
/// it (`hostPort`, `guestPort`, `protocol`).
pub use vmsan_net::PublishedPort;

use crate::ids::{SnapshotId, VmId};

/// The version written by this build. The Node.js vmsan wrote 2; 3 is the first Rust format.
pub const STATE_VERSION: u32 = 3;

/// Lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmStatus {
    /// Being created: resources are being set up.
    Creating,
    /// Firecracker is running the guest.
    Running,
    /// Firecracker holds the guest paused: while `vmsan snapshot create` captures it, or
    /// after `snapshot create --no-resume`. Its processes live as for `running`.
    Paused,
    /// Stopped cleanly; can be started again.
    Stopped,
    /// Failed, crashed or was killed; `error` says why.
    Error,
}

impl VmStatus {
    /// The lowercase name, as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            VmStatus::Creating => "creating",
            VmStatus::Running => "running",
            VmStatus::Paused => "paused",
            VmStatus::Stopped => "stopped",
            VmStatus::Error => "error",
        }
    }
}

/// The state file's process identity (pid and start time).
pub use crate::process::ProcessId;

/// A `vmsan snapshot create` in progress: who runs it, where it stages the snapshot, and
/// whether it holds the VM paused right now. The supervisor watches `by` with a pidfd: if that
/// process dies (even by SIGKILL) while this is recorded, the supervisor resumes the VM (when
/// `holds_pause`) and removes the staging directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRun {
    /// The `vmsan snapshot create` process.
    pub by: ProcessId,
    /// The name of its staging directory under the snapshots directory (`.tmp-…`).
    pub staging: String,
    /// Whether it paused the VM and has not resumed it yet.
    pub holds_pause: bool,
}

/// The egress policy of a VM (`--network-policy`; `validate` parses the flag).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkPolicy {
    /// Everything but `deniedCidrs` (and vmsan's own isolation rules). The default: a record
    /// without a policy has always meant this one.
    #[default]
    AllowAll,
    /// Nothing.
    DenyAll,
    /// Only `allowedDomains` and `allowedCidrs`, never `deniedCidrs`.
    Custom,
}

impl NetworkPolicy {
    /// `allow-all`, `deny-all` or `custom`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkPolicy::AllowAll => "allow-all",
            NetworkPolicy::DenyAll => "deny-all",
            NetworkPolicy::Custom => "custom",
        }
    }
}

impl fmt::Display for NetworkPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named runtime image (`--runtime`; `validate` parses the flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum Runtime {
    /// The base image.
    #[default]
    #[serde(rename = "base")]
    Base,
    /// Node.js 22.
    #[serde(rename = "node22")]
    Node22,
    /// Node.js 24.
    #[serde(rename = "node24")]
    Node24,
    /// Python 3.13.
    #[serde(rename = "python3.13")]
    Python313,
}

impl Runtime {
    /// Every runtime, in the order help text lists them.
    pub const ALL: [Runtime; 4] = [
        Runtime::Base,
        Runtime::Node22,
        Runtime::Node24,
        Runtime::Python313,
    ];

    /// The name as typed.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Base => "base",
            Runtime::Node22 => "node22",
            Runtime::Node24 => "node24",
            Runtime::Python313 => "python3.13",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a VM's `runtime` records: the named runtime it boots, or where its root came from
/// instead (`image`: `--from-image`, `rootfs`: `--rootfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RuntimeName {
    /// A named runtime (`base`, `node22`, …).
    Named(Runtime),
    /// An OCI image (`image`).
    Image,
    /// A root filesystem file (`rootfs`).
    Rootfs,
}

impl RuntimeName {
    /// The recorded name.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeName::Named(r) => r.as_str(),
            RuntimeName::Image => "image",
            RuntimeName::Rootfs => "rootfs",
        }
    }
}

impl Default for RuntimeName {
    fn default() -> Self {
        RuntimeName::Named(Runtime::Base)
    }
}

impl fmt::Display for RuntimeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for RuntimeName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "image" => Ok(RuntimeName::Image),
            "rootfs" => Ok(RuntimeName::Rootfs),
            _ => Runtime::ALL
                .into_iter()
                .find(|r| r.as_str() == s)
                .map(RuntimeName::Named)
                .ok_or_else(|| {
                    format!(
                        "unknown runtime {s:?}: expected base, node22, node24, python3.13, image or rootfs"
                    )
                }),
        }
    }
}

impl From<RuntimeName> for String {
    fn from(r: RuntimeName) -> String {
        r.as_str().to_owned()
    }
}

/// An address of [`NetworkState`] as it is recorded and shown: empty while there is none (a
/// record without a network slot, or a snapshot whose host-side addresses were dropped at
/// import).
pub fn ip_text(ip: Option<Ipv4Addr>) -> String {
    ip.map(|ip| ip.to_string()).unwrap_or_default()
}

/// An IPv4 address recorded as a string, empty while there is none (see [`ip_text`]).
mod ip_or_empty {
    use std::net::Ipv4Addr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(ip: &Option<Ipv4Addr>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::ip_text(*ip))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Ipv4Addr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an IPv4 address")))
    }
}

/// The VM's network identity and policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkState {
    /// Network slot; decides every address below.
    pub slot: Option<u32>,
    /// TAP device name (inside the VM's namespace).
    pub tap_device: String,
    /// Host side of the TAP link (recorded as `""` when none).
    #[serde(with = "ip_or_empty")]
    pub host_ip: Option<Ipv4Addr>,
    /// The guest's address (recorded as `""` when none).
    #[serde(with = "ip_or_empty")]
    pub guest_ip: Option<Ipv4Addr>,
    /// Netmask of the TAP link (recorded as `""` when none).
    #[serde(with = "ip_or_empty")]
    pub subnet_mask: Option<Ipv4Addr>,
    /// The guest's MAC address.
    pub mac_address: String,
    /// `vmsan-<id>`, or none when the VM has no namespace of its own.
    pub netns_name: Option<String>,
    /// `allow-all`, `deny-all` or `custom`.
    pub network_policy: NetworkPolicy,
    /// Domains the guest may resolve and reach.
    pub allowed_domains: Vec<DomainPattern>,
    /// CIDRs the guest may reach.
    pub allowed_cidrs: Vec<Cidr>,
    /// CIDRs the guest may never reach (deny wins).
    pub denied_cidrs: Vec<Cidr>,
    /// Ports published on the host.
    pub published_ports: Vec<PublishedPort>,
    /// Bandwidth limit in Mbit/s, both directions.
    pub bandwidth_mbit: Option<u32>,
    /// Whether guest UDP (other than DNS to the filter) is allowed.
    pub allow_udp: bool,
    /// Whether the networks around the host (private ranges, the host's connected networks)
    /// are reachable under `allow-all` and through allowed domains (`--allow-lan`).
    pub allow_lan: bool,
    /// Upstream resolvers of the DNS filter.
    pub dns_servers: Vec<Ipv4Addr>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The CPU template a VM boots with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum CpuTemplateSetting {
    /// One of Firecracker's static templates, by name (`T2`, `T2S`, `C3`, `T2CL`, `T2A`, `None`).
    Static {
        /// The name, as Firecracker spells it.
        name: String,
    },
    /// A custom template (`PUT /cpu-config`), checked when the VM was created.
    Custom {
        /// The template.
        template: vmsan_firecracker::CustomCpuTemplate,
    },
}

/// How a VM's kernel boots, beyond vmsan's own settings: kept so `start` and clones of its
/// snapshots boot the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BootSettings {
    /// Kernel parameters appended to vmsan's own (space-separated; `KernelArgs` rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_args: Option<String>,
    /// The CPU template (none: Firecracker's default, the host's CPU as KVM reports it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplateSetting>,
    /// How long a cold boot may take until the agent announces itself, in milliseconds (none:
    /// the default, 60 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_timeout_ms: Option<u64>,
}

/// Which isolation features the VM runs with, kept so that `start` restores them (a restart
/// that forgot them would run the VM with less isolation than it was created with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Isolation {
    /// Firecracker's default seccomp filter (`--no-seccomp` turns it off).
    pub seccomp: bool,
    /// A PID namespace of its own (`--no-pid-ns`).
    pub pid_ns: bool,
    /// cgroup CPU and memory limits (`--no-cgroup`).
    pub cgroup: bool,
    /// A network namespace of its own: always, as the VM's egress policy lives there (in the
    /// host's namespace its rules would apply to everything else). There is no flag to turn it
    /// off; the field stays because state files and snapshot metadata carry it, and an engine
    /// request with it off is refused.
    pub netns: bool,
    /// Run Firecracker under the jailer (`--no-jailer`).
    pub jailer: bool,
}

impl Default for Isolation {
    fn default() -> Self {
        Self {
            seccomp: true,
            pid_ns: true,
            cgroup: true,
            netns: true,
            jailer: true,
        }
    }
}

/// The image a VM boots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ImageState {
    /// The reference as the user gave it.
    pub reference: String,
    /// Manifest digest it resolved to.
    pub digest: Option<String>,
}

/// Everything vmsan knows about one VM. This is also `vmsan inspect --json`'s `vm` object
/// (with the agent token left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmState {
    /// Format version of this document.
    pub state_version: u32,
    /// Incremented on every write; lets readers and tests see lost updates.
    #[serde(default)]
    pub generation: u64,
    /// The VM's id.
    pub id: VmId,
    /// Current status.
    pub status: VmStatus,
    /// Free-form label.
    #[serde(default)]
    pub project: String,
    /// Runtime name (`base`, `node22`, …), or `image`/`rootfs`.
    #[serde(default)]
    pub runtime: RuntimeName,
    /// Image, when created from one.
    #[serde(default)]
    pub image: Option<ImageState>,
    /// vCPUs.
    pub vcpu_count: u32,
    /// Memory in MiB.
    pub mem_size_mib: u32,
    /// Size of the VM's writable disk in GiB.
    pub disk_size_gb: u32,
    /// Kernel the VM boots (host path of the source).
    #[serde(default)]
    pub kernel: PathBuf,
    /// Root filesystem image (host path of the source).
    #[serde(default)]
    pub rootfs: PathBuf,
    /// Filesystem of the root image: `squashfs` or `ext4` (every record has it: a value
    /// other than these two fails to load, it is never guessed).
    pub rootfs_fs: FsType,
    /// The initrd the VM boots (host path).
    #[serde(default)]
    pub initrd: PathBuf,
    /// Who is PID 1 in the guest: `agent` or `image`.
    #[serde(default)]
    pub init: InitMode,
    /// Network identity and policy.
    #[serde(default)]
    pub network: NetworkState,
    /// Isolation features.
    #[serde(default)]
    pub isolation: Isolation,
    /// Kernel arguments, CPU template and boot timeout.
    #[serde(default, skip_serializing_if = "is_default")]
    pub boot: BootSettings,
    /// Snapshot the VM was restored from.
    #[serde(default)]
    pub snapshot: Option<SnapshotId>,
    /// Set while a VM created from [`Self::snapshot`] has not been restored yet: its first
    /// run loads the snapshot instead of booting.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restore_pending: bool,
    /// The snapshot a diff snapshot of this run would build on: the last one taken, or the
    /// one it was restored from. A cold boot clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_base: Option<SnapshotId>,
    /// A `vmsan snapshot create` in progress (see [`SnapshotRun`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_run: Option<SnapshotRun>,
    /// `--timeout` in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// When the timeout fires (RFC 3339).
    #[serde(default)]
    pub timeout_at: Option<String>,
    /// Interactive sessions (`exec -i`) holding the timeout off: while one of these processes
    /// lives, the VM is not stopped for its timeout (see `vm::timeout`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeout_holders: Vec<ProcessId>,
    /// Creation time (RFC 3339, UTC).
    pub created_at: String,
    /// Last write (RFC 3339, UTC).
    #[serde(default)]
    pub updated_at: String,
    /// Why the VM is in `error` (or why it stopped).
    #[serde(default)]
    pub error: Option<String>,
    /// Firecracker's pid (host namespace): the Node.js vmsan's `pid`, which scripts read.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Firecracker's process identity.
    #[serde(default)]
    pub vmm: Option<ProcessId>,
    /// The per-VM supervisor's process identity (or `vmsan create`'s while creating).
    #[serde(default)]
    pub supervisor: Option<ProcessId>,
    /// Firecracker's API socket (host path).
    #[serde(default)]
    pub api_socket: Option<PathBuf>,
    /// The jail's root directory.
    #[serde(default)]
    pub chroot_dir: Option<PathBuf>,
    /// The VM's vsock Unix socket (host path).
    #[serde(default)]
    pub vsock_socket: Option<PathBuf>,
    /// The agent's bearer token (never printed by `inspect`).
    #[serde(default)]
    pub agent_token: Option<String>,
}

impl VmState {
    /// A new VM record in `creating` state.
    pub fn new(id: VmId, now: &str) -> Self {
        Self {
            state_version: STATE_VERSION,
            generation: 0,
            id,
            status: VmStatus::Creating,
            project: String::new(),
            runtime: RuntimeName::default(),
            image: None,
            vcpu_count: 1,
            mem_size_mib: 128,
            disk_size_gb: 10,
            kernel: PathBuf::new(),
            rootfs: PathBuf::new(),
            rootfs_fs: FsType::default(),
            initrd: PathBuf::new(),
            init: InitMode::Agent,
            network: NetworkState::default(),
            isolation: Isolation::default(),
            boot: BootSettings::default(),
            snapshot: None,
            restore_pending: false,
            snapshot_base: None,
            snapshot_run: None,
            timeout_ms: None,
            timeout_at: None,
            timeout_holders: Vec::new(),
            created_at: now.to_owned(),
            updated_at: now.to_owned(),
            error: None,
            pid: None,
            vmm: None,
            supervisor: None,
            api_socket: None,
            chroot_dir: None,
            vsock_socket: None,
            agent_token: None,
        }
    }

    /// The JSON shown to users: everything but the agent token.
    pub fn public_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(obj) = v.as_object_mut() {
            obj.remove("agentToken");
            obj.insert(
                "hasAgentToken".into(),
                serde_json::Value::Bool(self.agent_token.is_some()),
            );
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as earlier builds wrote it (compact here; the store writes it pretty), every
    /// typed field set.
    const RECORD: &str = r#"{"stateVersion":3,"generation":4,"id":"vm-0123abcd","status":"running","project":"p","runtime":"python3.13","image":{"reference":"busybox","digest":"sha256:ab"},"vcpuCount":1,"memSizeMib":128,"diskSizeGb":10,"kernel":"/h/kernels/vmlinux","rootfs":"/h/images/built/x/rootfs.ext4","rootfsFs":"ext4","initrd":"/h/images/initrd/y.cpio","init":"image","network":{"slot":3,"tapDevice":"tap0","hostIp":"198.19.0.13","guestIp":"198.19.0.14","subnetMask":"255.255.255.252","macAddress":"02:00:c6:13:00:0e","netnsName":"vmsan-vm-0123abcd","networkPolicy":"custom","allowedDomains":["example.com","*.example.org"],"allowedCidrs":["10.0.0.0/8"],"deniedCidrs":["10.1.0.0/16"],"publishedPorts":[{"hostPort":8080,"guestPort":80,"protocol":"tcp"},{"hostPort":5353,"guestPort":53,"protocol":"udp"}],"bandwidthMbit":100,"allowUdp":true,"allowLan":false,"dnsServers":["1.1.1.1","8.8.8.8"]},"isolation":{"seccomp":true,"pidNs":true,"cgroup":true,"netns":true,"jailer":true},"snapshot":null,"timeoutMs":null,"timeoutAt":null,"createdAt":"2026-01-01T00:00:00.000Z","updatedAt":"2026-01-01T00:00:01.000Z","error":null,"pid":42,"vmm":{"pid":42,"startTime":7},"supervisor":{"pid":41,"startTime":6},"apiSocket":"/h/jail/firecracker/vm-0123abcd/root/run/firecracker.socket","chrootDir":"/h/jail/firecracker/vm-0123abcd/root","vsockSocket":"/h/jail/firecracker/vm-0123abcd/root/v.sock","agentToken":"t"}"#;

    #[test]
    fn earlier_records_read_typed_and_write_the_same_bytes() {
        let st: VmState = serde_json::from_str(RECORD).unwrap();
        assert_eq!(st.rootfs_fs, FsType::Ext4);
        assert_eq!(st.runtime, RuntimeName::Named(Runtime::Python313));
        assert_eq!(st.init, InitMode::Image);
        assert_eq!(st.network.network_policy, NetworkPolicy::Custom);
        assert_eq!(st.network.guest_ip, Some(Ipv4Addr::new(198, 19, 0, 14)));
        assert_eq!(
            st.network.published_ports[1].protocol,
            vmsan_net::Protocol::Udp
        );
        assert_eq!(st.kernel, PathBuf::from("/h/kernels/vmlinux"));
        assert_eq!(serde_json::to_string(&st).unwrap(), RECORD);

        // A record without a slot keeps its empty addresses; `image` and `rootfs` runtimes.
        let mut fresh = VmState::new(VmId::parse("vm-0123abcd").unwrap(), "2026-01-01T00:00:00Z");
        for runtime in [RuntimeName::Image, RuntimeName::Rootfs] {
            fresh.runtime = runtime;
            let text = serde_json::to_string(&fresh).unwrap();
            assert!(
                text.contains(r#""hostIp":"","guestIp":"","subnetMask":"""#),
                "{text}"
            );
            assert!(
                text.contains(&format!(r#""runtime":"{runtime}""#)),
                "{text}"
            );
            let back: VmState = serde_json::from_str(&text).unwrap();
            assert_eq!(back, fresh);
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
        }
    }

    #[test]
    fn unknown_values_fail_to_read_and_are_never_guessed() {
        // (what is replaced, by what, what the error says)
        for (from, to, says) in [
            (r#""rootfsFs":"ext4""#, r#""rootfsFs":"xfs""#, "xfs"),
            (
                r#""rootfsFs":"ext4""#,
                r#""rootfsFs":"""#,
                "unknown variant",
            ),
            (
                r#""runtime":"python3.13""#,
                r#""runtime":"node99""#,
                "node99",
            ),
            (r#""init":"image""#, r#""init":"systemd""#, "systemd"),
            (
                r#""networkPolicy":"custom""#,
                r#""networkPolicy":"open""#,
                "open",
            ),
            (
                r#""networkPolicy":"custom""#,
                r#""networkPolicy":"""#,
                "unknown variant",
            ),
            (r#""protocol":"udp""#, r#""protocol":"sctp""#, "sctp"),
            (r#"["10.0.0.0/8"]"#, r#"["10.0.0.0/33"]"#, "CIDR"),
            (r#"["example.com","#, r#"["exa mple.com","#, "exa mple.com"),
            (
                r#""guestIp":"198.19.0.14""#,
                r#""guestIp":"guest""#,
                "guest",
            ),
            (
                r#""dnsServers":["1.1.1.1","#,
                r#""dnsServers":["resolver","#,
                "IP",
            ),
        ] {
            assert!(RECORD.contains(from), "{from}");
            let text = RECORD.replacen(from, to, 1);
            let e = serde_json::from_str::<VmState>(&text).unwrap_err();
            assert!(e.to_string().contains(says), "{to}: {e}");
        }
    }
}
