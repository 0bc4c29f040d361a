//! The persisted shape of a VM: `state.json`, version [`STATE_VERSION`].
//!
//! Field names follow the `state.json` of the Node.js vmsan this one re-creates where they
//! still apply, so scripts that read them keep working; what is new is grouped in objects.

use serde::{Deserialize, Serialize};

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

/// A published port, `host:guest/proto`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedPort {
    /// Port on the host.
    pub host_port: u16,
    /// Port in the guest.
    pub guest_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// The VM's network identity and policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkState {
    /// Network slot; decides every address below.
    pub slot: Option<u32>,
    /// TAP device name (inside the VM's namespace).
    pub tap_device: String,
    /// Host side of the TAP link.
    pub host_ip: String,
    /// The guest's address.
    pub guest_ip: String,
    /// Netmask of the TAP link.
    pub subnet_mask: String,
    /// The guest's MAC address.
    pub mac_address: String,
    /// `vmsan-<id>`, or none when the VM has no namespace of its own.
    pub netns_name: Option<String>,
    /// `allow-all`, `deny-all` or `custom`.
    pub network_policy: String,
    /// Domains the guest may resolve and reach.
    pub allowed_domains: Vec<String>,
    /// CIDRs the guest may reach.
    pub allowed_cidrs: Vec<String>,
    /// CIDRs the guest may never reach (deny wins).
    pub denied_cidrs: Vec<String>,
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
    pub dns_servers: Vec<String>,
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
    /// Runtime name (`base`, `node22`, …).
    #[serde(default)]
    pub runtime: String,
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
    pub kernel: String,
    /// Root filesystem image (host path of the source).
    #[serde(default)]
    pub rootfs: String,
    /// Filesystem of the root image: `squashfs` or `ext4`.
    #[serde(default)]
    pub rootfs_fs: String,
    /// The initrd the VM boots (host path).
    #[serde(default)]
    pub initrd: String,
    /// Who is PID 1 in the guest: `agent` or `image`.
    #[serde(default)]
    pub init: String,
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
    pub api_socket: Option<String>,
    /// The jail's root directory.
    #[serde(default)]
    pub chroot_dir: Option<String>,
    /// The VM's vsock Unix socket (host path).
    #[serde(default)]
    pub vsock_socket: Option<String>,
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
            runtime: "base".into(),
            image: None,
            vcpu_count: 1,
            mem_size_mib: 128,
            disk_size_gb: 10,
            kernel: String::new(),
            rootfs: String::new(),
            rootfs_fs: String::new(),
            initrd: String::new(),
            init: "agent".into(),
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
