//! Typed, validated options for every command. The CLI builds them from its arguments (after
//! all validation), and the lifecycle, network, image and agent code consume them: nothing in
//! here needs to be checked again.
//!
//! Every struct serialises (camelCase; durations as milliseconds), so callers can log or print
//! exactly what they were asked to do.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::{DiskSize, EnvVar, NetworkRules, PublishedPort, Runtime};
use crate::ids::{SnapshotId, VmId};

#[allow(clippy::ref_option)] // serde's `serialize_with` hands us `&Option<_>`.
fn ms<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => s.serialize_none(),
    }
}

/// When to pull an image from its registry (the image store's type).
pub use vmsan_image::PullPolicy;

/// Who is PID 1 in the guest (`agent`, the default, or `image`): the guest protocol's type,
/// which the config drive carries.
pub use vmsan_proto::InitMode;

/// What the VM's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum RootSource {
    /// A named runtime image (`--runtime`, default `base`).
    Runtime {
        /// The runtime.
        runtime: Runtime,
    },
    /// An OCI image (`--from-image`).
    Image {
        /// The reference as given.
        reference: String,
        /// `--pull`.
        pull: PullPolicy,
    },
    /// A local filesystem image (`--rootfs`).
    Rootfs {
        /// Absolute host path.
        path: PathBuf,
    },
}

/// Isolation features; `--no-seccomp`, `--no-pid-ns`, `--no-cgroup` and `--no-jailer` each turn
/// one off (the network namespace is always on). The same type is persisted in a VM's state,
/// so `start` restores exactly what `create` was given.
pub use crate::state::Isolation;

/// `vmsan create`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateOptions {
    /// vCPUs (1..=32; from the snapshot when restoring).
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u32,
    /// `--kernel`: host path; `None` = the installed kernel.
    pub kernel: Option<PathBuf>,
    /// The root filesystem (`None` when restoring a snapshot, which carries its own).
    pub root: Option<RootSource>,
    /// `--init`.
    pub init: InitMode,
    /// `--project` label (may be empty).
    pub project: String,
    /// `--disk`.
    pub disk: DiskSize,
    /// `--timeout`: stop the VM this long after it starts.
    #[serde(serialize_with = "ms", rename = "timeoutMs")]
    pub timeout: Option<Duration>,
    /// `--publish-port`.
    pub published_ports: Vec<PublishedPort>,
    /// `--kernel-args` (checked): replaces the arguments stored with the installed kernel;
    /// `Some("")` boots without any.
    pub kernel_args: Option<String>,
    /// `--cpu-template` or `--cpu-template-file` (checked).
    pub cpu_template: Option<crate::state::CpuTemplateSetting>,
    /// `--boot-timeout`: how long a cold boot may take (default 60 s).
    #[serde(serialize_with = "ms", rename = "bootTimeoutMs")]
    pub boot_timeout: Option<Duration>,
    /// `--snapshot`: restore this snapshot.
    pub snapshot: Option<SnapshotId>,
    /// Whether any network flag was given: clones of a snapshot keep the snapshot's network
    /// settings unless the command sets them.
    pub network_given: bool,
    /// Egress policy.
    pub network: NetworkRules,
    /// `--bandwidth`, Mbit/s in each direction.
    pub bandwidth_mbit: Option<u32>,
    /// `--dns`: upstream resolvers of the VM's DNS filter (empty = the host's).
    pub dns_servers: Vec<Ipv4Addr>,
    /// Isolation features.
    pub isolation: Isolation,
    /// `--count`: how many identical VMs (all or none).
    pub count: u32,
}

/// `vmsan start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartOptions {
    /// The VM.
    pub vm: VmId,
}

/// `vmsan stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StopOptions {
    /// The VMs, deduplicated, in the order given.
    pub vms: Vec<VmId>,
}

/// `vmsan remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoveOptions {
    /// The VMs, deduplicated, in the order given.
    pub vms: Vec<VmId>,
    /// `--force`: stop running VMs first.
    pub force: bool,
}

/// Which guest user runs a command.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "name")]
pub enum ExecUser {
    /// The image's default user.
    #[default]
    Default,
    /// root (`--sudo`).
    Root,
    /// `--user NAME`.
    Named(String),
}

/// `vmsan exec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecOptions {
    /// The VM.
    pub vm: VmId,
    /// The program and its arguments, exactly as given.
    pub command: Vec<String>,
    /// `--env`, in order (a later key overrides an earlier one).
    pub env: Vec<EnvVar>,
    /// `--workdir`: absolute guest path.
    pub workdir: Option<String>,
    /// `--sudo` / `--user`.
    pub user: ExecUser,
    /// `--timeout`: kill the command's process group after this long.
    #[serde(serialize_with = "ms", rename = "timeoutMs")]
    pub timeout: Option<Duration>,
    /// `-i`: interactive PTY session.
    pub interactive: bool,
    /// `-t`: allocate a PTY.
    pub tty: bool,
    /// Extend the VM's `--timeout` while the command runs (`--no-extend-timeout` turns it off).
    pub extend_timeout: bool,
}

/// `vmsan connect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectOptions {
    /// The VM.
    pub vm: VmId,
    /// `--session`: attach to this existing session.
    pub session: Option<String>,
}

/// `vmsan upload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadOptions {
    /// The VM.
    pub vm: VmId,
    /// Local files, absolute.
    pub files: Vec<PathBuf>,
    /// Guest directory (absolute).
    pub dest: String,
    /// `--timeout`: how long the agent may stay silent before the upload fails (`None`: the
    /// client's default).
    #[serde(serialize_with = "ms", rename = "timeoutMs")]
    pub timeout: Option<Duration>,
}

/// `vmsan download`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DownloadOptions {
    /// The VM.
    pub vm: VmId,
    /// Guest file (absolute).
    pub remote_path: String,
    /// Local destination, absolute (`None` = `./<basename>`); a directory when it ends in `/`.
    pub dest: Option<PathBuf>,
    /// Whether `dest` was written with a trailing `/`.
    pub dest_is_dir: bool,
    /// `--max-size`: the largest download accepted, bytes (a file's size, or a directory's
    /// file sizes summed).
    pub max_size: u64,
    /// `--timeout`: how long the agent may stay silent before the download fails (`None`: the
    /// client's default).
    #[serde(serialize_with = "ms", rename = "timeoutMs")]
    pub timeout: Option<Duration>,
}

/// `vmsan network`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkOptions {
    /// The VM.
    pub vm: VmId,
    /// The new policy.
    pub rules: NetworkRules,
}

/// `vmsan snapshot create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotCreateOptions {
    /// The VM.
    pub vm: VmId,
    /// Resume the VM afterwards (`--no-resume` turns it off).
    pub resume: bool,
    /// `--diff`: only the memory dirtied since the previous snapshot.
    pub diff: bool,
}

/// `vmsan snapshot export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotExportOptions {
    /// The snapshot.
    pub id: SnapshotId,
    /// The archive to write (absolute; must not exist).
    pub file: PathBuf,
}

/// `vmsan snapshot import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotImportOptions {
    /// The archive (absolute).
    pub file: PathBuf,
}

/// `vmsan snapshot delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotDeleteOptions {
    /// The snapshots, deduplicated.
    pub ids: Vec<SnapshotId>,
}

/// `vmsan setup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetupOptions {
    /// `--firecracker`: a local binary instead of a download.
    pub firecracker: Option<PathBuf>,
    /// `--jailer`: a local binary instead of a download.
    pub jailer: Option<PathBuf>,
    /// `--kernel`: a local kernel instead of a download.
    pub kernel: Option<PathBuf>,
    /// `--kernel-args` (checked): extra arguments stored with the installed kernel.
    pub kernel_args: String,
    /// `--image-compression`: how every squashfs image of this home is compressed.
    pub image_compression: vmsan_image::Compression,
    /// `--agent`: the static guest agent to install.
    pub agent: Option<PathBuf>,
    /// `--release-url`: where to download releases from.
    pub release_url: Option<String>,
    /// `--force`: reinstall what is already there.
    pub force: bool,
}

/// `vmsan logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsOptions {
    /// The VM.
    pub vm: VmId,
    /// `-f`: keep printing new output until the VM stops.
    pub follow: bool,
    /// `--tail N`: only the last N lines (`None` = everything).
    pub tail: Option<u64>,
}

/// `vmsan image pull`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullOptions {
    /// The reference.
    pub reference: String,
    /// `--platform` (`None` = the host's).
    pub platform: Option<String>,
}

/// `vmsan image import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageImportOptions {
    /// A `docker save` archive or an OCI layout directory, absolute.
    pub path: PathBuf,
    /// `--name`: the reference to store it under.
    pub name: String,
}

/// `vmsan image rm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRemoveOptions {
    /// The references, deduplicated.
    pub references: Vec<String>,
}

/// `vmsan image prune`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImagePruneOptions {
    /// `--all`: also images that no VM uses, not only dangling blobs.
    pub all: bool,
}
