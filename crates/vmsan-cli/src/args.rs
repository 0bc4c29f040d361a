//! The command line, as clap sees it: every command, subcommand, flag and alias.
//!
//! This layer is syntactic only: values are kept as typed text and checked by
//! [`crate::convert`], which turns them into the typed options of
//! [`vmsan_core::validate::options`] with the exact `ERR_VALIDATION_*` codes. Flags are never
//! negations of other flags: each `--no-*` flag is its own boolean (the Node.js vmsan this one
//! re-creates parsed `--no-X` as "X = false", leaving its `no-X` setting unset, so its
//! `--no-seccomp`, `--no-pid-ns` and `--no-cgroup` were silently ignored).

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

/// Make Firecracker microVMs simple: create, exec, shell, files, snapshots, egress rules.
#[derive(Debug, Parser)]
#[command(
    name = "vmsan",
    version,
    about,
    propagate_version = true,
    disable_help_subcommand = true,
    max_term_width = 100,
    after_help = "Exit codes: 0 ok; 1 error (with an ERR_* code); exec returns the guest \
                  command's code, 124 when it timed out; 130 when interrupted.\n\
                  VMSAN_HOME overrides the state directory (/var/lib/vmsan); NO_COLOR turns \
                  colours off."
)]
pub struct Cli {
    /// Machine output: exactly one JSON document on stdout.
    #[arg(long, global = true, display_order = 1000)]
    pub json: bool,

    /// Debug output on stderr.
    #[arg(long, global = true, display_order = 1001)]
    pub verbose: bool,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Every command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and boot a VM (root).
    Create(Box<CreateArgs>),
    /// List VMs, newest first.
    #[command(visible_alias = "ls")]
    List,
    /// Start a stopped VM (root).
    Start(VmArg),
    /// Stop VMs (root).
    Stop(VmsArgs),
    /// Remove VMs and their data (root).
    #[command(visible_alias = "rm")]
    Remove(RemoveArgs),
    /// Open a shell in a VM.
    Connect(ConnectArgs),
    /// Run a command in a VM: `vmsan exec VM ls -la /tmp`.
    Exec(ExecArgs),
    /// Copy local files into a VM.
    Upload(UploadArgs),
    /// Copy a file or a directory out of a VM.
    Download(DownloadArgs),
    /// Change a running VM's network policy (root).
    Network(NetworkArgs),
    /// Snapshot VMs; list, delete, export and import snapshots (restore: `create --snapshot`).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Check that this host can run VMs.
    Doctor,
    /// Install Firecracker, the jailer and a guest kernel (root).
    Setup(SetupArgs),
    /// Show one VM's full state.
    Inspect(VmArg),
    /// Show a VM's serial console output.
    Logs(LogsArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Print a shell completion script.
    Completion(CompletionArgs),
    /// Print the version.
    Version,
}

/// One VM id.
#[derive(Debug, Args)]
pub struct VmArg {
    /// The VM id (vm-xxxxxxxx).
    #[arg(value_name = "VM")]
    pub vm: String,
}

/// One or more VM ids.
#[derive(Debug, Args)]
pub struct VmsArgs {
    /// VM ids.
    #[arg(value_name = "VM", required = true, num_args = 1..)]
    pub vms: Vec<String>,
}

/// `remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// VM ids.
    #[arg(value_name = "VM", required = true, num_args = 1..)]
    pub vms: Vec<String>,
    /// Stop running VMs first.
    #[arg(short, long)]
    pub force: bool,
}

/// When to pull `--from-image`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullArg {
    /// Always ask the registry.
    Always,
    /// Only when not cached.
    Missing,
    /// Never; use the cache.
    Never,
}

/// Compression of squashfs images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// zstd: smaller images (the kernel needs SQUASHFS_ZSTD).
    Zstd,
    /// LZ4: larger images, read by the kernel's plain-C decoder (SQUASHFS_LZ4).
    Lz4,
}

/// Who is PID 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitArg {
    /// vmsan's agent (default).
    Agent,
    /// The image's own init, with the agent beside it.
    Image,
}

/// `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// vCPUs, 1-32 [default: 1].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub vcpus: Option<String>,
    /// Memory in MiB, 128-32768; m/mib and g/gib suffixes accepted [default: 128].
    #[arg(long, value_name = "MIB", allow_negative_numbers = true)]
    pub memory: Option<String>,
    /// Guest kernel [default: the installed one].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<String>,
    /// Extra kernel arguments, space-separated, after vmsan's own; replaces those stored with
    /// the installed kernel at setup ("" for none).
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub kernel_args: Option<String>,
    /// Firecracker static CPU template: C3, T2, T2S, T2CL, T2A or None.
    #[arg(long, value_name = "NAME")]
    pub cpu_template: Option<String>,
    /// A custom CPU template (Firecracker's JSON format, PUT /cpu-config).
    #[arg(long, value_name = "PATH")]
    pub cpu_template_file: Option<String>,
    /// How long the guest may take to boot until its agent answers (90s, 5m) [default: 60s].
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true)]
    pub boot_timeout: Option<String>,
    /// A local root filesystem image (ext4 or squashfs).
    #[arg(long, value_name = "PATH")]
    pub rootfs: Option<String>,
    /// Boot an OCI image (registry reference).
    #[arg(long, value_name = "REF")]
    pub from_image: Option<String>,
    /// When to pull --from-image.
    #[arg(long, value_enum, value_name = "WHEN")]
    pub pull: Option<PullArg>,
    /// Who is PID 1 in the guest.
    #[arg(long, value_enum, value_name = "WHO")]
    pub init: Option<InitArg>,
    /// Runtime image: base, node22, node24, python3.13 [default: base].
    #[arg(long, value_name = "NAME")]
    pub runtime: Option<String>,
    /// Free-form project label.
    #[arg(long, value_name = "LABEL")]
    pub project: Option<String>,
    /// Writable disk size in GiB, 1-1024 (10, 20g, 50gib) [default: 10].
    #[arg(long, value_name = "SIZE", allow_negative_numbers = true)]
    pub disk: Option<String>,
    /// Stop the VM after this long, with a unit: 90s, 30m, 1h30m, 1d.
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true)]
    pub timeout: Option<String>,
    /// Publish ports: PORT, HOST:GUEST, with /tcp or /udp; repeatable or comma-separated.
    #[arg(long, value_name = "SPEC", allow_negative_numbers = true)]
    pub publish_port: Vec<String>,
    /// Restore this snapshot.
    #[arg(long, value_name = "ID")]
    pub snapshot: Option<String>,
    /// Egress policy: allow-all, deny-all, custom [default: allow-all].
    #[arg(long, value_name = "POLICY")]
    pub network_policy: Option<String>,
    /// Domains the guest may reach (*.example.com for subdomains); repeatable or comma-separated.
    #[arg(long, value_name = "DOMAIN")]
    pub allowed_domain: Vec<String>,
    /// Networks the guest may reach (a.b.c.d/nn); repeatable or comma-separated.
    #[arg(long, value_name = "CIDR")]
    pub allowed_cidr: Vec<String>,
    /// Networks the guest may never reach; repeatable or comma-separated.
    #[arg(long, value_name = "CIDR")]
    pub denied_cidr: Vec<String>,
    /// Allow guest UDP (blocked by default; DNS always goes through vmsan's filter).
    #[arg(long)]
    pub allow_udp: bool,
    /// Let the guest reach the networks around the host: private ranges (10/8, 172.16/12,
    /// 192.168/16, 100.64/10) and the host's own connected networks, blocked by default.
    #[arg(long)]
    pub allow_lan: bool,
    /// Bandwidth limit in Mbit/s each way, 1-1000 (10, 10m, 10mbit).
    #[arg(long, value_name = "MBIT", allow_negative_numbers = true)]
    pub bandwidth: Option<String>,
    /// Upstream DNS resolvers (IPv4); repeatable or comma-separated.
    #[arg(long, value_name = "IP")]
    pub dns: Vec<String>,
    /// Turn off Firecracker's seccomp filter.
    #[arg(long)]
    pub no_seccomp: bool,
    /// Do not give the VM its own PID namespace.
    #[arg(long)]
    pub no_pid_ns: bool,
    /// Do not apply cgroup CPU and memory limits.
    #[arg(long)]
    pub no_cgroup: bool,
    /// Run Firecracker without the jailer.
    #[arg(long)]
    pub no_jailer: bool,
    /// Create this many identical VMs, 1-100 [default: 1].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub count: Option<String>,
    /// Open a shell once the VM is up.
    #[arg(long)]
    pub connect: bool,
    /// No human output.
    #[arg(long)]
    pub silent: bool,
}

/// `exec`. Flags of `exec` itself come before the command; everything from the command on
/// is passed to the guest verbatim (`--` is optional).
#[derive(Debug, Args)]
#[command(
    after_help = "Everything from COMMAND on is passed to the guest verbatim, flags \
                        included: `vmsan exec VM ls -la /tmp` runs `ls -la /tmp`. Put exec's \
                        own flags before COMMAND; use `--` before a command that starts \
                        with '-'.\nExit code: the command's own; 124 when --timeout killed \
                        it; 130 when interrupted."
)]
pub struct ExecArgs {
    /// Run as root.
    #[arg(long)]
    pub sudo: bool,
    /// Run as this guest user.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Interactive session on a PTY.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a PTY.
    #[arg(short, long)]
    pub tty: bool,
    /// Do not extend the VM's --timeout while the command runs.
    #[arg(long)]
    pub no_extend_timeout: bool,
    /// Working directory in the guest (absolute).
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Environment variable KEY=VALUE; repeatable.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Kill the command after this long, with a unit: 10s, 5m (exit code 124 when it is killed).
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true)]
    pub timeout: Option<String>,
    /// The VM id.
    #[arg(value_name = "VM")]
    pub vm: String,
    /// The command and its arguments.
    #[arg(
        value_name = "COMMAND",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

/// `connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The VM id.
    #[arg(value_name = "VM")]
    pub vm: String,
    /// Attach to an existing shell session.
    #[arg(short, long, value_name = "ID")]
    pub session: Option<String>,
}

/// `upload`.
#[derive(Debug, Args)]
#[command(
    after_help = "All or nothing: files appear under their names only once the whole \
upload has been accepted; a refused upload (a name or symlink leaving the destination, a \
symlink on the way) leaves the guest as it was."
)]
pub struct UploadArgs {
    /// The VM id.
    #[arg(value_name = "VM")]
    pub vm: String,
    /// Local files.
    #[arg(value_name = "FILE", required = true, num_args = 1..)]
    pub files: Vec<String>,
    /// Directory in the guest [default: /root].
    #[arg(short, long, value_name = "DIR")]
    pub dest: Option<String>,
    /// Fail when the guest neither takes data nor answers for this long (90s, 5m) [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
}

/// `download`.
#[derive(Debug, Args)]
#[command(
    after_help = "What the guest sends is not trusted: files get the guest's rwx bits \
without setuid, setgid or sticky, through your umask (as cp and tar do for a non-root user); \
a file appears under its name only once complete; no symlink on the host is followed below \
the destination (a symlink where a file goes is replaced); holes of sparse files are kept."
)]
pub struct DownloadArgs {
    /// The VM id.
    #[arg(value_name = "VM")]
    pub vm: String,
    /// File or directory in the guest (absolute).
    #[arg(value_name = "REMOTE_PATH")]
    pub remote_path: String,
    /// Local file or directory (ending in /) [default: ./<name>].
    #[arg(short, long, value_name = "PATH")]
    pub dest: Option<String>,
    /// Refuse a download larger than this (k, m, g, t: 500m, 64g) [default: 16g].
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
    /// Fail when the guest sends nothing for this long (with a unit: 90s, 5m) [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
}

/// `network`.
#[derive(Debug, Args)]
pub struct NetworkArgs {
    /// The VM id.
    #[arg(value_name = "VM")]
    pub vm: String,
    /// Egress policy: allow-all, deny-all, custom.
    #[arg(long, value_name = "POLICY", required = true)]
    pub network_policy: String,
    /// Domains the guest may reach; repeatable or comma-separated.
    #[arg(long, value_name = "DOMAIN")]
    pub allowed_domain: Vec<String>,
    /// Networks the guest may reach; repeatable or comma-separated.
    #[arg(long, value_name = "CIDR")]
    pub allowed_cidr: Vec<String>,
    /// Networks the guest may never reach; repeatable or comma-separated.
    #[arg(long, value_name = "CIDR")]
    pub denied_cidr: Vec<String>,
    /// Allow guest UDP.
    #[arg(long)]
    pub allow_udp: bool,
    /// Let the guest reach private ranges and the host's connected networks (blocked by
    /// default).
    #[arg(long)]
    pub allow_lan: bool,
}

/// `snapshot …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a running VM (root).
    Create(SnapshotCreateArgs),
    /// List snapshots.
    #[command(visible_alias = "ls")]
    List,
    /// Delete snapshots (root).
    #[command(visible_alias = "rm")]
    Delete(SnapshotDeleteArgs),
    /// Write a snapshot to a portable archive (root).
    Export(SnapshotExportArgs),
    /// Add a snapshot from an archive (root).
    Import(SnapshotImportArgs),
}

/// `snapshot export`.
#[derive(Debug, Args)]
pub struct SnapshotExportArgs {
    /// The snapshot id.
    #[arg(value_name = "ID")]
    pub id: String,
    /// The archive to write (must not exist).
    #[arg(value_name = "FILE")]
    pub file: String,
}

/// `snapshot import`.
#[derive(Debug, Args)]
pub struct SnapshotImportArgs {
    /// The archive.
    #[arg(value_name = "FILE")]
    pub file: String,
}

/// `snapshot create`.
#[derive(Debug, Args)]
pub struct SnapshotCreateArgs {
    /// The VM id.
    #[arg(value_name = "VM")]
    pub vm: String,
    /// Resume the VM afterwards (the default).
    #[arg(long, overrides_with = "no_resume")]
    pub resume: bool,
    /// Leave the VM paused afterwards.
    #[arg(long, overrides_with = "resume")]
    pub no_resume: bool,
    /// Only the memory written since the previous snapshot of this VM (stored merged, so it
    /// restores on its own).
    #[arg(long)]
    pub diff: bool,
}

/// `snapshot delete`.
#[derive(Debug, Args)]
pub struct SnapshotDeleteArgs {
    /// Snapshot ids.
    #[arg(value_name = "ID", required = true, num_args = 1..)]
    pub ids: Vec<String>,
}

/// `setup`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Use this local Firecracker binary.
    #[arg(long, value_name = "PATH")]
    pub firecracker: Option<String>,
    /// Use this local jailer binary.
    #[arg(long, value_name = "PATH")]
    pub jailer: Option<String>,
    /// Use this local guest kernel.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<String>,
    /// Extra arguments the installed kernel always boots with (space-separated, after vmsan's
    /// own; `create --kernel-args` replaces them).
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub kernel_args: Option<String>,
    /// Compression of the squashfs images every later pull, import and create builds: lz4
    /// for guest kernels that cannot read zstd (no SQUASHFS_ZSTD, or a host that cannot run
    /// its decoder) [default: zstd].
    #[arg(long, value_enum, value_name = "ALGO")]
    pub image_compression: Option<CompressionArg>,
    /// Install this static guest agent (default: the one installed beside vmsan).
    #[arg(long, value_name = "PATH")]
    pub agent: Option<String>,
    /// Download releases from this URL.
    #[arg(long, value_name = "URL")]
    pub release_url: Option<String>,
    /// Reinstall what is already installed.
    #[arg(long)]
    pub force: bool,
}

/// `logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The VM id.
    #[arg(value_name = "VM")]
    pub vm: String,
    /// Keep printing new output until the VM stops.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines (or "all").
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub tail: Option<String>,
}

/// `image …`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List local images.
    #[command(visible_alias = "list")]
    Ls,
    /// Pull an image from a registry (root).
    Pull(ImagePullArgs),
    /// Import a `docker save` archive or OCI layout (root).
    Import(ImageImportArgs),
    /// Remove images (root).
    #[command(visible_alias = "remove")]
    Rm(ImageRmArgs),
    /// Remove unused image data (root).
    Prune(ImagePruneArgs),
}

/// `image pull`.
#[derive(Debug, Args)]
pub struct ImagePullArgs {
    /// Image reference.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Platform os/arch[/variant] [default: the host's].
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

/// `image import`.
#[derive(Debug, Args)]
pub struct ImageImportArgs {
    /// A root filesystem (a directory, or a tarball: plain, gzip or zstd), a `docker save`
    /// archive, or an OCI image layout (a directory, or a plain tar of one).
    #[arg(value_name = "PATH")]
    pub path: String,
    /// Reference to store the image under.
    #[arg(long, value_name = "NAME", required = true)]
    pub name: String,
}

/// `image rm`.
#[derive(Debug, Args)]
pub struct ImageRmArgs {
    /// Image references.
    #[arg(value_name = "REF", required = true, num_args = 1..)]
    pub references: Vec<String>,
}

/// `image prune`.
#[derive(Debug, Args)]
pub struct ImagePruneArgs {
    /// Also remove images no VM uses.
    #[arg(long)]
    pub all: bool,
}

/// `completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}
