//! From clap's arguments to validated, typed actions. Every rule lives here or in
//! `vmsan_core::validate`; after [`convert`] returns `Ok`, nothing about the input needs
//! checking again.

use std::path::{Path, PathBuf};

use clap_complete::Shell;
use serde::Serialize;
use vmsan_core::error::{Error, ErrorCode};
use vmsan_core::validate::options::{
    ConnectOptions, CreateOptions, DownloadOptions, ExecOptions, ExecUser, ImageImportOptions,
    ImagePruneOptions, ImagePullOptions, ImageRemoveOptions, InitMode, Isolation, LogsOptions,
    NetworkOptions, PullPolicy, RemoveOptions, RootSource, SetupOptions, SnapshotCreateOptions,
    SnapshotDeleteOptions, SnapshotExportOptions, SnapshotImportOptions, StartOptions, StopOptions,
    UploadOptions,
};
use vmsan_core::validate::{self, MEMORY_MIN_MIB, PolicyInput, Runtime, parse_ipv4, split_list};
use vmsan_core::{SnapshotId, VmId};

use crate::args::{
    Command, CompressionArg, CreateArgs, ExecArgs, ImageCommand, InitArg, LogsArgs, NetworkArgs,
    PullArg, SnapshotCommand,
};

/// `vmsan create`: the engine's request, and what the CLI does around it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateCommand {
    /// What to create.
    #[serde(flatten)]
    pub request: CreateOptions,
    /// `--connect`: open a shell once the VM is up.
    pub connect: bool,
    /// `--silent`: no human output.
    pub silent: bool,
}

/// A fully validated command, ready to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "command", content = "options")]
#[allow(clippy::large_enum_variant)] // Built once per process.
pub enum Action {
    /// `create`.
    Create(CreateCommand),
    /// `list`.
    List,
    /// `start`.
    Start(StartOptions),
    /// `stop`.
    Stop(StopOptions),
    /// `remove`.
    Remove(RemoveOptions),
    /// `connect`.
    Connect(ConnectOptions),
    /// `exec`.
    Exec(ExecOptions),
    /// `upload`.
    Upload(UploadOptions),
    /// `download`.
    Download(DownloadOptions),
    /// `network`.
    Network(NetworkOptions),
    /// `snapshot create`.
    SnapshotCreate(SnapshotCreateOptions),
    /// `snapshot list`.
    SnapshotList,
    /// `snapshot delete`.
    SnapshotDelete(SnapshotDeleteOptions),
    /// `snapshot export`.
    SnapshotExport(SnapshotExportOptions),
    /// `snapshot import`.
    SnapshotImport(SnapshotImportOptions),
    /// `doctor`.
    Doctor,
    /// `setup`.
    Setup(SetupOptions),
    /// `inspect`.
    Inspect(VmId),
    /// `logs`.
    Logs(LogsOptions),
    /// `image ls`.
    ImageList,
    /// `image pull`.
    ImagePull(ImagePullOptions),
    /// `image import`.
    ImageImport(ImageImportOptions),
    /// `image rm`.
    ImageRemove(ImageRemoveOptions),
    /// `image prune`.
    ImagePrune(ImagePruneOptions),
    /// `completion`.
    Completion(#[serde(serialize_with = "ser_shell")] Shell),
    /// `version`.
    Version,
}

fn ser_shell<S: serde::Serializer>(sh: &Shell, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(sh)
}

/// What conversion needs besides the arguments.
#[derive(Debug, Clone)]
pub struct Env {
    /// `--json` is on (some interactive flags conflict with it).
    pub json: bool,
    /// The working directory relative host paths are resolved against (`None` if unknown).
    pub cwd: Option<PathBuf>,
    /// A `--` appears on the line (then an exec command may start with `-`).
    pub dash_dash: bool,
}

impl Env {
    fn host_path(&self, flag: &str, raw: &str) -> Result<PathBuf, Error> {
        let cwd = match (&self.cwd, Path::new(raw).is_absolute()) {
            (_, true) => Path::new("/"),
            (Some(c), false) => c.as_path(),
            (None, false) => {
                return Err(Error::new(
                    ErrorCode::ValidationPath,
                    format!("Cannot resolve the relative path {raw:?} given to {flag}"),
                )
                .why("The current directory is not accessible.")
                .fix("Use an absolute path.")
                .detail("flag", flag));
            }
        };
        validate::parse_host_path(flag, raw, cwd)
    }
}

/// `Cannot use A and B together`.
fn flags_conflict(a: &str, b: &str) -> Error {
    Error::new(
        ErrorCode::ValidationFlags,
        format!("Cannot use {a} and {b} together"),
    )
    .detail("flag", a)
    .detail("conflictsWith", b)
}

fn vm_id(raw: &str) -> Result<VmId, Error> {
    VmId::parse(raw)
}

fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

fn vm_ids(raw: &[String]) -> Result<Vec<VmId>, Error> {
    Ok(dedup(
        raw.iter()
            .map(|s| vm_id(s))
            .collect::<Result<Vec<_>, _>>()?,
    ))
}

/// Validate everything and build the action.
pub fn convert(command: Command, env: &Env) -> Result<Action, Error> {
    Ok(match command {
        Command::Create(a) => Action::Create(create(&a, env)?),
        Command::List => Action::List,
        Command::Start(a) => Action::Start(StartOptions { vm: vm_id(&a.vm)? }),
        Command::Stop(a) => Action::Stop(StopOptions {
            vms: vm_ids(&a.vms)?,
        }),
        Command::Remove(a) => Action::Remove(RemoveOptions {
            vms: vm_ids(&a.vms)?,
            force: a.force,
        }),
        Command::Connect(a) => {
            let opts = ConnectOptions {
                vm: vm_id(&a.vm)?,
                session: a
                    .session
                    .as_deref()
                    .map(validate::parse_session_id)
                    .transpose()?,
            };
            if env.json {
                return Err(flags_conflict("connect", "--json")
                    .why("connect is an interactive shell; it cannot print one JSON document."));
            }
            Action::Connect(opts)
        }
        Command::Exec(a) => Action::Exec(exec(a, env)?),
        Command::Upload(a) => {
            let vm = vm_id(&a.vm)?;
            let files = a
                .files
                .iter()
                .map(|f| env.host_path("FILE", f))
                .collect::<Result<Vec<_>, _>>()?;
            let dest = validate::parse_guest_path("--dest", a.dest.as_deref().unwrap_or("/root"))?;
            let timeout = a.timeout.as_deref().map(transfer_timeout).transpose()?;
            Action::Upload(UploadOptions {
                vm,
                files,
                dest,
                timeout,
            })
        }
        Command::Download(a) => Action::Download(DownloadOptions {
            vm: vm_id(&a.vm)?,
            remote_path: validate::parse_guest_path("REMOTE_PATH", &a.remote_path)?,
            dest: a
                .dest
                .as_deref()
                .map(|d| env.host_path("--dest", d))
                .transpose()?,
            dest_is_dir: a.dest.as_deref().is_some_and(|d| d.ends_with('/')),
            max_size: a
                .max_size
                .as_deref()
                .map(max_size)
                .transpose()?
                .unwrap_or(vmsan_agent_client::DEFAULT_MAX_DOWNLOAD),
            timeout: a.timeout.as_deref().map(transfer_timeout).transpose()?,
        }),
        Command::Network(a) => Action::Network(network(&a)?),
        Command::Snapshot(SnapshotCommand::Create(a)) => {
            Action::SnapshotCreate(SnapshotCreateOptions {
                vm: vm_id(&a.vm)?,
                resume: !a.no_resume,
                diff: a.diff,
            })
        }
        Command::Snapshot(SnapshotCommand::Export(a)) => {
            Action::SnapshotExport(SnapshotExportOptions {
                id: SnapshotId::parse(&a.id)?,
                file: env.host_path("FILE", &a.file)?,
            })
        }
        Command::Snapshot(SnapshotCommand::Import(a)) => {
            Action::SnapshotImport(SnapshotImportOptions {
                file: env.host_path("FILE", &a.file)?,
            })
        }
        Command::Snapshot(SnapshotCommand::List) => Action::SnapshotList,
        Command::Snapshot(SnapshotCommand::Delete(a)) => {
            let ids = a
                .ids
                .iter()
                .map(|s| SnapshotId::parse(s))
                .collect::<Result<Vec<_>, _>>()?;
            Action::SnapshotDelete(SnapshotDeleteOptions { ids: dedup(ids) })
        }
        Command::Doctor => Action::Doctor,
        Command::Setup(a) => Action::Setup(SetupOptions {
            firecracker: a
                .firecracker
                .as_deref()
                .map(|p| env.host_path("--firecracker", p))
                .transpose()?,
            jailer: a
                .jailer
                .as_deref()
                .map(|p| env.host_path("--jailer", p))
                .transpose()?,
            agent: a
                .agent
                .as_deref()
                .map(|p| env.host_path("--agent", p))
                .transpose()?,
            kernel: a
                .kernel
                .as_deref()
                .map(|p| env.host_path("--kernel", p))
                .transpose()?,
            kernel_args: validate::parse_kernel_args(
                "--kernel-args",
                a.kernel_args.as_deref().unwrap_or(""),
            )?,
            image_compression: match a.image_compression {
                None | Some(CompressionArg::Zstd) => vmsan_image::Compression::Zstd,
                Some(CompressionArg::Lz4) => vmsan_image::Compression::Lz4,
            },
            release_url: a
                .release_url
                .as_deref()
                .map(|u| validate::parse_url("--release-url", u))
                .transpose()?,
            force: a.force,
        }),
        Command::Inspect(a) => Action::Inspect(vm_id(&a.vm)?),
        Command::Logs(a) => Action::Logs(logs(&a, env)?),
        Command::Image(ImageCommand::Ls) => Action::ImageList,
        Command::Image(ImageCommand::Pull(a)) => Action::ImagePull(ImagePullOptions {
            reference: validate::parse_image_ref("REF", &a.reference)?,
            platform: a
                .platform
                .as_deref()
                .map(validate::parse_platform)
                .transpose()?,
        }),
        Command::Image(ImageCommand::Import(a)) => Action::ImageImport(ImageImportOptions {
            path: env.host_path("PATH", &a.path)?,
            name: validate::parse_image_ref("--name", &a.name)?,
        }),
        Command::Image(ImageCommand::Rm(a)) => {
            let refs = a
                .references
                .iter()
                .map(|r| validate::parse_image_ref("REF", r))
                .collect::<Result<Vec<_>, _>>()?;
            Action::ImageRemove(ImageRemoveOptions {
                references: dedup(refs),
            })
        }
        Command::Image(ImageCommand::Prune(a)) => {
            Action::ImagePrune(ImagePruneOptions { all: a.all })
        }
        Command::Completion(a) => Action::Completion(a.shell),
        Command::Version => Action::Version,
    })
}

fn create(a: &CreateArgs, env: &Env) -> Result<CreateCommand, Error> {
    // Values first, each with its own code.
    let vcpus = a.vcpus.as_deref().map(validate::parse_vcpus).transpose()?;
    let memory = a
        .memory
        .as_deref()
        .map(validate::parse_memory_mib)
        .transpose()?;
    let kernel = a
        .kernel
        .as_deref()
        .map(|k| env.host_path("--kernel", k))
        .transpose()?;
    let rootfs = a
        .rootfs
        .as_deref()
        .map(|r| env.host_path("--rootfs", r))
        .transpose()?;
    let image = a
        .from_image
        .as_deref()
        .map(|r| validate::parse_image_ref("--from-image", r))
        .transpose()?;
    let runtime = a.runtime.as_deref().map(Runtime::parse).transpose()?;
    let project = validate::parse_project(a.project.as_deref().unwrap_or(""))?;
    let disk = a
        .disk
        .as_deref()
        .map(validate::parse_disk_size)
        .transpose()?;
    let timeout = a
        .timeout
        .as_deref()
        .map(|t| validate::parse_duration("--timeout", t))
        .transpose()?;
    let published_ports = validate::parse_publish_ports(&a.publish_port)?;
    let kernel_args = a
        .kernel_args
        .as_deref()
        .map(|k| validate::parse_kernel_args("--kernel-args", k))
        .transpose()?;
    if a.cpu_template.is_some() && a.cpu_template_file.is_some() {
        return Err(flags_conflict("--cpu-template", "--cpu-template-file")
            .why("A VM boots with one CPU template: a static one or a custom one."));
    }
    let cpu_template = match (&a.cpu_template, &a.cpu_template_file) {
        (Some(name), _) => Some(validate::parse_cpu_template("--cpu-template", name)?),
        (None, Some(file)) => Some(validate::read_cpu_template_file(
            "--cpu-template-file",
            &env.host_path("--cpu-template-file", file)?,
        )?),
        (None, None) => None,
    };
    let boot_timeout = a
        .boot_timeout
        .as_deref()
        .map(|t| validate::parse_boot_timeout("--boot-timeout", t))
        .transpose()?;
    let snapshot = a.snapshot.as_deref().map(SnapshotId::parse).transpose()?;
    let network = validate::resolve_network_policy(&PolicyInput {
        policy: a.network_policy.clone(),
        allowed_domains: a.allowed_domain.clone(),
        allowed_cidrs: a.allowed_cidr.clone(),
        denied_cidrs: a.denied_cidr.clone(),
        allow_udp: a.allow_udp,
        allow_lan: a.allow_lan,
    })?;
    let bandwidth_mbit = a
        .bandwidth
        .as_deref()
        .map(validate::parse_bandwidth)
        .transpose()?;
    let dns_servers = dedup(
        split_list(ErrorCode::ValidationCidr, "--dns", &a.dns)?
            .iter()
            .map(|d| parse_ipv4("--dns", d))
            .collect::<Result<Vec<_>, _>>()?,
    );
    let count = a
        .count
        .as_deref()
        .map(validate::parse_count)
        .transpose()?
        .unwrap_or(1);

    let network_given = a.network_policy.is_some()
        || !a.allowed_domain.is_empty()
        || !a.allowed_cidr.is_empty()
        || !a.denied_cidr.is_empty()
        || a.allow_udp
        || a.allow_lan
        || a.bandwidth.is_some()
        || !a.dns.is_empty()
        || !a.publish_port.is_empty();

    // Then the rules between flags.
    if rootfs.is_some() && image.is_some() {
        return Err(flags_conflict("--rootfs", "--from-image"));
    }
    if runtime.is_some() && image.is_some() {
        return Err(flags_conflict("--runtime", "--from-image"));
    }
    if runtime.is_some() && rootfs.is_some() {
        return Err(flags_conflict("--runtime", "--rootfs"));
    }
    if a.pull.is_some() && image.is_none() {
        return Err(
            Error::new(ErrorCode::ValidationFlags, "--pull needs --from-image")
                .why("--pull says when to fetch the image given with --from-image.")
                .detail("flag", "--pull"),
        );
    }
    if snapshot.is_some() {
        // A snapshot carries its machine configuration, disk and image.
        let carried = [
            (a.from_image.is_some(), "--from-image"),
            (a.rootfs.is_some(), "--rootfs"),
            (a.runtime.is_some(), "--runtime"),
            (a.kernel.is_some(), "--kernel"),
            (a.vcpus.is_some(), "--vcpus"),
            (a.memory.is_some(), "--memory"),
            (a.disk.is_some(), "--disk"),
            (a.init.is_some(), "--init"),
            (a.kernel_args.is_some(), "--kernel-args"),
            (a.cpu_template.is_some(), "--cpu-template"),
            (a.cpu_template_file.is_some(), "--cpu-template-file"),
        ];
        if let Some((_, flag)) = carried.iter().find(|(given, _)| *given) {
            return Err(flags_conflict("--snapshot", flag)
                .why("A snapshot carries its own machine configuration, kernel, kernel arguments, CPU template, image and disk."));
        }
    }
    if count > 1 && a.connect {
        return Err(flags_conflict("--count", "--connect")
            .why("--connect opens one shell; --count above 1 creates several VMs."));
    }
    if count > 1 && !published_ports.is_empty() {
        return Err(flags_conflict("--count", "--publish-port")
            .why("Every VM would need the same host ports."));
    }
    if a.connect && env.json {
        return Err(flags_conflict("--connect", "--json"));
    }

    let root = if snapshot.is_some() {
        None
    } else if let Some(reference) = image {
        let pull = match a.pull {
            Some(PullArg::Always) => PullPolicy::Always,
            Some(PullArg::Never) => PullPolicy::Never,
            Some(PullArg::Missing) | None => PullPolicy::Missing,
        };
        Some(RootSource::Image { reference, pull })
    } else if let Some(path) = rootfs {
        Some(RootSource::Rootfs { path })
    } else {
        Some(RootSource::Runtime {
            runtime: runtime.unwrap_or_default(),
        })
    };

    let request = CreateOptions {
        vcpus: vcpus.unwrap_or(1),
        memory_mib: memory.unwrap_or(MEMORY_MIN_MIB),
        kernel,
        root,
        init: match a.init {
            Some(InitArg::Image) => InitMode::Image,
            Some(InitArg::Agent) | None => InitMode::Agent,
        },
        project,
        disk: disk.unwrap_or_default(),
        timeout,
        published_ports,
        kernel_args,
        cpu_template,
        boot_timeout,
        snapshot,
        network_given,
        network,
        bandwidth_mbit,
        dns_servers,
        isolation: Isolation {
            seccomp: !a.no_seccomp,
            pid_ns: !a.no_pid_ns,
            cgroup: !a.no_cgroup,
            // No flag: a VM's egress policy lives in its own namespace (see `Isolation`).
            netns: true,
            jailer: !a.no_jailer,
        },
        count,
    };
    Ok(CreateCommand {
        request,
        connect: a.connect,
        silent: a.silent,
    })
}

fn exec(a: ExecArgs, env: &Env) -> Result<ExecOptions, Error> {
    let vm = vm_id(&a.vm)?;
    if a.command.first().is_none_or(String::is_empty) {
        return Err(Error::new(ErrorCode::ValidationArgs, "No command provided")
            .fix("Usage: vmsan exec <VM> <COMMAND> [ARGS]...")
            .detail("flag", "COMMAND"));
    }
    if a.command[0].starts_with('-') && !env.dash_dash {
        return Err(Error::new(
            ErrorCode::ValidationArgs,
            format!("Unknown exec flag {:?}", validate_shown(&a.command[0])),
        )
        .why("Flags of exec come before the command; this one is not an exec flag.")
        .fix("To run a command whose name starts with '-', put `--` before it.")
        .detail("flag", a.command[0].clone()));
    }
    let env_vars = a
        .env
        .iter()
        .map(|e| validate::parse_env(e))
        .collect::<Result<Vec<_>, _>>()?;
    let workdir = a
        .workdir
        .as_deref()
        .map(|w| validate::parse_guest_path("--workdir", w))
        .transpose()?;
    let user = a.user.as_deref().map(validate::parse_user).transpose()?;
    let timeout = a
        .timeout
        .as_deref()
        .map(|t| validate::parse_duration("--timeout", t))
        .transpose()?;
    if a.sudo && user.is_some() {
        return Err(flags_conflict("--sudo", "--user"));
    }
    if a.interactive && env.json {
        return Err(flags_conflict("--interactive", "--json"));
    }
    Ok(ExecOptions {
        vm,
        command: a.command,
        env: env_vars,
        workdir,
        user: match (a.sudo, user) {
            (true, _) => ExecUser::Root,
            (false, Some(u)) => ExecUser::Named(u),
            (false, None) => ExecUser::Default,
        },
        timeout,
        interactive: a.interactive,
        tty: a.tty,
        extend_timeout: !a.no_extend_timeout,
    })
}

fn network(a: &NetworkArgs) -> Result<NetworkOptions, Error> {
    let vm = vm_id(&a.vm)?;
    let rules = validate::resolve_network_policy(&PolicyInput {
        policy: Some(a.network_policy.clone()),
        allowed_domains: a.allowed_domain.clone(),
        allowed_cidrs: a.allowed_cidr.clone(),
        denied_cidrs: a.denied_cidr.clone(),
        allow_udp: a.allow_udp,
        allow_lan: a.allow_lan,
    })?;
    Ok(NetworkOptions { vm, rules })
}

fn logs(a: &LogsArgs, env: &Env) -> Result<LogsOptions, Error> {
    let vm = vm_id(&a.vm)?;
    let tail = match a.tail.as_deref() {
        None | Some("all") => None,
        Some(t) => Some(validate::parse_int_in_range(
            "--tail", t, 0, 10_000_000, None,
        )?),
    };
    if a.follow && env.json {
        return Err(flags_conflict("--follow", "--json")
            .why("--json prints one document when the command ends; --follow never ends."));
    }
    Ok(LogsOptions {
        vm,
        follow: a.follow,
        tail,
    })
}

fn validate_shown(s: &str) -> String {
    s.chars().take(80).collect()
}

/// `--timeout` of `upload` and `download`: a duration with its unit (a bare number would
/// read as minutes elsewhere in vmsan, which is not what a transfer's idle time means).
fn transfer_timeout(raw: &str) -> Result<std::time::Duration, Error> {
    if raw.trim().bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::new(
            ErrorCode::ValidationDuration,
            format!("Invalid --timeout: {raw:?}. Give a unit: 90s, 5m, 1h."),
        )
        .detail("flag", "--timeout")
        .detail("value", raw));
    }
    validate::parse_duration("--timeout", raw)
}

/// `--max-size`: a number with a binary unit k, m, g or t (optionally followed by `b` or
/// `ib`), at least 1 KiB.
fn max_size(raw: &str) -> Result<u64, Error> {
    let err = || {
        Error::new(
            ErrorCode::ValidationInteger,
            format!(
                "Invalid --max-size: {raw:?}. Use a whole number with a unit k, m, g or t \
                 (500m, 64g, 2t)."
            ),
        )
        .detail("flag", "--max-size")
        .detail("value", raw)
    };
    let lower = raw.trim().to_ascii_lowercase();
    let digits = lower.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = lower.split_at(digits);
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(err()),
    };
    let n: u64 = num.parse().map_err(|_| err())?;
    n.checked_mul(1u64 << shift)
        .filter(|b| *b >= 1024)
        .ok_or_else(err)
}

#[cfg(test)]
mod tests {
    //! Accepted forms of every flag of every command, with the typed values they produce.
    //! (Rejected forms are checked end to end, through the binary, in `tests/cli.rs`.)

    use std::net::Ipv4Addr;
    use std::path::Path;
    use std::time::Duration;

    use clap::Parser;
    use vmsan_core::validate::{NetworkPolicy, Protocol, PublishedPort};

    use super::*;
    use crate::args::Cli;

    fn action(args: &[&str]) -> Result<Action, Error> {
        let mut argv = vec!["vmsan"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let env = Env {
            json: cli.json,
            cwd: Some("/cwd".into()),
            dash_dash: argv.contains(&"--"),
        };
        convert(cli.command, &env)
    }

    fn ok(args: &[&str]) -> Action {
        action(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn code(args: &[&str]) -> ErrorCode {
        action(args)
            .map(|a| panic!("{args:?} was accepted: {a:?}"))
            .unwrap_err()
            .code()
    }

    fn create_command(args: &[&str]) -> CreateCommand {
        let mut v = vec!["create"];
        v.extend_from_slice(args);
        match ok(&v) {
            Action::Create(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn create(args: &[&str]) -> CreateOptions {
        let mut v = vec!["create"];
        v.extend_from_slice(args);
        match ok(&v) {
            Action::Create(c) => c.request,
            other => panic!("{other:?}"),
        }
    }

    fn exec(args: &[&str]) -> ExecOptions {
        let mut v = vec!["exec"];
        v.extend_from_slice(args);
        match ok(&v) {
            Action::Exec(o) => o,
            other => panic!("{other:?}"),
        }
    }

    fn vm(s: &str) -> VmId {
        VmId::parse(s).unwrap()
    }

    const VM: &str = "vm-0123abcd";

    #[test]
    fn create_defaults() {
        let o = create(&[]);
        assert_eq!(o.vcpus, 1);
        assert_eq!(o.memory_mib, 128);
        assert_eq!(o.kernel, None);
        assert_eq!(
            o.root,
            Some(RootSource::Runtime {
                runtime: Runtime::Base
            })
        );
        assert_eq!(o.init, InitMode::Agent);
        assert_eq!(o.project, "");
        assert_eq!(o.disk.gib, 10);
        assert_eq!(o.timeout, None);
        assert!(o.published_ports.is_empty());
        assert_eq!(o.snapshot, None);
        assert_eq!(o.network.policy, NetworkPolicy::AllowAll);
        assert_eq!(o.bandwidth_mbit, None);
        assert!(o.dns_servers.is_empty());
        assert_eq!(o.isolation, Isolation::default());
        assert_eq!(o.count, 1);
        let c = create_command(&[]);
        assert_eq!((c.connect, c.silent), (false, false));
    }

    #[test]
    fn create_sizes() {
        assert_eq!(create(&["--vcpus", "4"]).vcpus, 4);
        assert_eq!(create(&["--vcpus=32"]).vcpus, 32);
        assert_eq!(create(&["--memory", "1024"]).memory_mib, 1024);
        assert_eq!(create(&["--memory", "2g"]).memory_mib, 2048);
        assert_eq!(create(&["--disk", "20"]).disk.gib, 20);
        assert_eq!(create(&["--disk", "20gb"]).disk.gib, 20);
        assert_eq!(create(&["--disk", "20GiB"]).disk.gib, 20);
        assert_eq!(create(&["--disk", "3g"]).disk.gib, 3);
        assert_eq!(create(&["--count", "5"]).count, 5);
        assert_eq!(create(&["--bandwidth", "50"]).bandwidth_mbit, Some(50));
        assert_eq!(create(&["--bandwidth", "50mbit"]).bandwidth_mbit, Some(50));
        assert_eq!(create(&["--bandwidth", "50m"]).bandwidth_mbit, Some(50));
    }

    #[test]
    fn create_sources() {
        assert_eq!(
            create(&["--kernel", "/k/vmlinux"]).kernel.as_deref(),
            Some(Path::new("/k/vmlinux"))
        );
        assert_eq!(
            create(&["--kernel", "k/vmlinux"]).kernel.as_deref(),
            Some(Path::new("/cwd/k/vmlinux"))
        );
        assert_eq!(
            create(&["--rootfs", "./r.ext4"]).root,
            Some(RootSource::Rootfs {
                path: "/cwd/r.ext4".into()
            })
        );
        assert_eq!(
            create(&["--from-image", "alpine:3.20"]).root,
            Some(RootSource::Image {
                reference: "alpine:3.20".into(),
                pull: PullPolicy::Missing
            })
        );
        for (p, want) in [
            ("always", PullPolicy::Always),
            ("missing", PullPolicy::Missing),
            ("never", PullPolicy::Never),
        ] {
            assert_eq!(
                create(&["--from-image", "alpine", "--pull", p]).root,
                Some(RootSource::Image {
                    reference: "alpine".into(),
                    pull: want
                })
            );
        }
        for r in Runtime::ALL {
            assert_eq!(
                create(&["--runtime", r.as_str()]).root,
                Some(RootSource::Runtime { runtime: r })
            );
        }
        assert_eq!(create(&["--init", "image"]).init, InitMode::Image);
        assert_eq!(create(&["--init", "agent"]).init, InitMode::Agent);
        let o = create(&["--snapshot", "vm-0123abcd-1767225600000"]);
        assert_eq!(o.snapshot.unwrap().as_str(), "vm-0123abcd-1767225600000");
        assert_eq!(o.root, None);
        assert_eq!(create(&["--project", "web app"]).project, "web app");
    }

    #[test]
    fn create_timeout_and_ports() {
        assert_eq!(
            create(&["--timeout", "30m"]).timeout,
            Some(Duration::from_secs(1800))
        );
        assert_eq!(
            create(&["--timeout", "1h30m"]).timeout,
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            create(&["--timeout", "90s"]).timeout,
            Some(Duration::from_secs(90))
        );
        let p = |h, g, protocol| PublishedPort {
            host_port: h,
            guest_port: g,
            protocol,
        };
        assert_eq!(
            create(&["--publish-port", "8080"]).published_ports,
            [p(8080, 8080, Protocol::Tcp)]
        );
        assert_eq!(
            create(&[
                "--publish-port",
                "8080:80,5353:53/udp",
                "--publish-port",
                "443/tcp"
            ])
            .published_ports,
            [
                p(8080, 80, Protocol::Tcp),
                p(5353, 53, Protocol::Udp),
                p(443, 443, Protocol::Tcp)
            ]
        );
    }

    #[test]
    fn create_network() {
        let o = create(&["--network-policy", "deny-all"]);
        assert_eq!(o.network.policy, NetworkPolicy::DenyAll);
        let o = create(&[
            "--network-policy",
            "custom",
            "--allowed-cidr",
            "10.0.0.0/8,1.1.1.1",
        ]);
        assert_eq!(o.network.policy, NetworkPolicy::Custom);
        assert_eq!(o.network.allowed_cidrs.len(), 2);
        assert_eq!(o.network.allowed_cidrs[1].to_string(), "1.1.1.1/32");
        // Auto-promotion.
        let o = create(&[
            "--allowed-domain",
            "GitHub.com",
            "--allowed-domain",
            "*.npmjs.org",
        ]);
        assert_eq!(
            (o.network.policy, o.network.promoted),
            (NetworkPolicy::Custom, true)
        );
        assert_eq!(o.network.allowed_domains[0].to_string(), "github.com");
        assert!(o.network.allowed_domains[1].is_wildcard());
        let o = create(&["--denied-cidr", "169.254.0.0/16"]);
        assert_eq!(o.network.policy, NetworkPolicy::AllowAll);
        assert_eq!(o.network.denied_cidrs[0].to_string(), "169.254.0.0/16");
        assert!(create(&["--allow-udp"]).network.allow_udp);
        assert!(!create(&[]).network.allow_udp);
        assert!(create(&["--allow-lan"]).network.allow_lan);
        assert!(
            !create(&[]).network.allow_lan,
            "the LAN is blocked by default"
        );
        assert_eq!(
            create(&["--dns", "1.1.1.1,9.9.9.9", "--dns", "1.1.1.1"]).dns_servers,
            [Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(9, 9, 9, 9)]
        );
    }

    #[test]
    fn every_no_flag_changes_the_parsed_value() {
        let d = Isolation::default();
        assert!(d.seccomp && d.pid_ns && d.cgroup && d.netns && d.jailer);
        assert_eq!(
            create(&["--no-seccomp"]).isolation,
            Isolation {
                seccomp: false,
                ..d
            }
        );
        assert_eq!(
            create(&["--no-pid-ns"]).isolation,
            Isolation { pid_ns: false, ..d }
        );
        assert_eq!(
            create(&["--no-cgroup"]).isolation,
            Isolation { cgroup: false, ..d }
        );
        assert_eq!(
            create(&["--no-jailer"]).isolation,
            Isolation { jailer: false, ..d }
        );
        let all = create(&["--no-seccomp", "--no-pid-ns", "--no-cgroup", "--no-jailer"]);
        assert_eq!(
            all.isolation,
            Isolation {
                seccomp: false,
                pid_ns: false,
                cgroup: false,
                netns: true,
                jailer: false
            }
        );
        assert!(exec(&[VM, "ls"]).extend_timeout);
        assert!(!exec(&["--no-extend-timeout", VM, "ls"]).extend_timeout);
        match ok(&["snapshot", "create", VM]) {
            Action::SnapshotCreate(o) => assert!(o.resume),
            other => panic!("{other:?}"),
        }
        match ok(&["snapshot", "create", VM, "--no-resume"]) {
            Action::SnapshotCreate(o) => assert!(!o.resume),
            other => panic!("{other:?}"),
        }
        match ok(&["snapshot", "create", VM, "--no-resume", "--resume"]) {
            Action::SnapshotCreate(o) => assert!(o.resume, "the last of --resume/--no-resume wins"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_bools() {
        assert!(create_command(&["--connect"]).connect);
        assert!(create_command(&["--silent"]).silent);
    }

    #[test]
    fn create_conflicts() {
        let c = |a: &[&str]| {
            let mut v = vec!["create"];
            v.extend_from_slice(a);
            code(&v)
        };
        assert_eq!(
            c(&["--rootfs", "/r", "--from-image", "alpine"]),
            ErrorCode::ValidationFlags
        );
        assert_eq!(
            c(&["--runtime", "node22", "--from-image", "alpine"]),
            ErrorCode::ValidationFlags
        );
        assert_eq!(
            c(&["--runtime", "node22", "--rootfs", "/r"]),
            ErrorCode::ValidationFlags
        );
        assert_eq!(c(&["--pull", "never"]), ErrorCode::ValidationFlags);
        for f in [
            ["--vcpus", "2"],
            ["--memory", "256"],
            ["--disk", "5"],
            ["--kernel", "/k"],
            ["--rootfs", "/r"],
            ["--runtime", "base"],
            ["--from-image", "a"],
            ["--init", "image"],
        ] {
            assert_eq!(
                c(&["--snapshot", "vm-0123abcd-1", f[0], f[1]]),
                ErrorCode::ValidationFlags,
                "{f:?}"
            );
        }
        assert_eq!(
            c(&["--count", "2", "--connect"]),
            ErrorCode::ValidationFlags
        );
        assert_eq!(
            c(&["--count", "2", "--publish-port", "80"]),
            ErrorCode::ValidationFlags
        );
        assert_eq!(c(&["--json", "--connect"]), ErrorCode::ValidationFlags);
        assert_eq!(
            c(&["--network-policy", "deny-all", "--allowed-domain", "a.com"]),
            ErrorCode::ValidationPolicyConflict
        );
    }

    #[test]
    fn exec_passes_everything_after_the_command_through() {
        let o = exec(&[VM, "ls", "-la", "/tmp"]);
        assert_eq!(o.vm, vm(VM));
        assert_eq!(o.command, ["ls", "-la", "/tmp"]);
        assert_eq!(
            exec(&[VM, "ping", "-c", "1", "-W", "3", "8.8.8.8"]).command,
            ["ping", "-c", "1", "-W", "3", "8.8.8.8"]
        );
        // Our own flags after the command belong to the command.
        assert_eq!(
            exec(&[
                VM,
                "sh",
                "-e",
                "-w",
                "/x",
                "--sudo",
                "--json",
                "--help",
                "--version"
            ])
            .command,
            [
                "sh",
                "-e",
                "-w",
                "/x",
                "--sudo",
                "--json",
                "--help",
                "--version"
            ]
        );
        assert_eq!(exec(&[VM, "--", "ls", "-la"]).command, ["ls", "-la"]);
        assert_eq!(exec(&[VM, "--", "-weird"]).command, ["-weird"]);
        assert_eq!(exec(&[VM, "echo", "--", "x"]).command, ["echo", "--", "x"]);
        assert_eq!(exec(&[VM, "echo", "a b", ""]).command, ["echo", "a b", ""]);
    }

    #[test]
    fn exec_flags() {
        let o = exec(&[
            "-e",
            "A=1",
            "--env",
            "B=x=y",
            "-w",
            "/app",
            "--timeout",
            "5m",
            VM,
            "env",
        ]);
        assert_eq!(o.env.len(), 2);
        assert_eq!(
            (o.env[1].key.as_str(), o.env[1].value.as_str()),
            ("B", "x=y")
        );
        assert_eq!(o.workdir.as_deref(), Some("/app"));
        assert_eq!(o.timeout, Some(Duration::from_secs(300)));
        // Flags between the VM and the command are exec's.
        let o = exec(&[VM, "--workdir", "/srv", "-e", "K=V", "--sudo", "pwd"]);
        assert_eq!(
            (o.workdir.as_deref(), o.env.len(), &o.user),
            (Some("/srv"), 1, &ExecUser::Root)
        );
        assert_eq!(o.command, ["pwd"]);
        assert_eq!(
            exec(&["--user", "ubuntu", VM, "id"]).user,
            ExecUser::Named("ubuntu".into())
        );
        assert_eq!(exec(&[VM, "id"]).user, ExecUser::Default);
        let o = exec(&["-i", "-t", VM, "bash"]);
        assert!(o.interactive && o.tty);
        let o = exec(&["-it", VM, "bash"]);
        assert!(o.interactive && o.tty);
        let o = exec(&["--interactive", "--tty", VM, "bash"]);
        assert!(o.interactive && o.tty);
        let o = exec(&[VM, "bash"]);
        assert!(!o.interactive && !o.tty);
    }

    #[test]
    fn exec_rejections() {
        assert_eq!(code(&["exec", VM, "-x"]), ErrorCode::ValidationArgs);
        assert_eq!(
            code(&["exec", "--sudo", "--user", "u", VM, "id"]),
            ErrorCode::ValidationFlags
        );
        assert_eq!(
            code(&["--json", "exec", "-i", VM, "sh"]),
            ErrorCode::ValidationFlags
        );
        assert_eq!(
            code(&["exec", "-e", "1=2", VM, "sh"]),
            ErrorCode::ValidationEnv
        );
        assert_eq!(
            code(&["exec", "-w", "rel", VM, "sh"]),
            ErrorCode::ValidationPath
        );
        assert_eq!(
            code(&["exec", "--timeout", "0", VM, "sh"]),
            ErrorCode::ValidationDuration
        );
        assert_eq!(
            code(&["exec", "--user", "a:b", VM, "sh"]),
            ErrorCode::ValidationArgs
        );
        assert_eq!(code(&["exec", "vm-nope", "sh"]), ErrorCode::ValidationId);
        assert_eq!(code(&["exec", VM, ""]), ErrorCode::ValidationArgs);
    }

    #[test]
    fn lifecycle_commands() {
        assert_eq!(
            ok(&["start", VM]),
            Action::Start(StartOptions { vm: vm(VM) })
        );
        assert_eq!(
            ok(&["stop", VM, "vm-00000001", VM]),
            Action::Stop(StopOptions {
                vms: vec![vm(VM), vm("vm-00000001")]
            })
        );
        for form in [["remove", "-f"], ["rm", "--force"]] {
            assert_eq!(
                ok(&[form[0], form[1], VM]),
                Action::Remove(RemoveOptions {
                    vms: vec![vm(VM)],
                    force: true
                })
            );
        }
        assert_eq!(
            ok(&["rm", VM]),
            Action::Remove(RemoveOptions {
                vms: vec![vm(VM)],
                force: false
            })
        );
        assert_eq!(ok(&["list"]), Action::List);
        assert_eq!(ok(&["ls"]), Action::List);
        assert_eq!(ok(&["inspect", VM]), Action::Inspect(vm(VM)));
        assert_eq!(ok(&["doctor"]), Action::Doctor);
        assert_eq!(ok(&["version"]), Action::Version);
        assert_eq!(ok(&["completion", "bash"]), Action::Completion(Shell::Bash));
        assert_eq!(ok(&["completion", "zsh"]), Action::Completion(Shell::Zsh));
        for bad in [
            ["start", "x"],
            ["stop", "vm-1"],
            ["rm", "../etc"],
            ["inspect", "VM-0123ABCD"],
        ] {
            assert_eq!(code(&bad), ErrorCode::ValidationId, "{bad:?}");
        }
    }

    #[test]
    fn connect_upload_download() {
        assert_eq!(
            ok(&["connect", VM]),
            Action::Connect(ConnectOptions {
                vm: vm(VM),
                session: None
            })
        );
        for s in ["-s", "--session"] {
            assert_eq!(
                ok(&["connect", VM, s, "0123456789abcdef0123456789abcdef"]),
                Action::Connect(ConnectOptions {
                    vm: vm(VM),
                    session: Some("0123456789abcdef0123456789abcdef".into())
                })
            );
        }
        assert_eq!(
            code(&["connect", VM, "-s", "../x"]),
            ErrorCode::ValidationId
        );
        assert_eq!(code(&["--json", "connect", VM]), ErrorCode::ValidationFlags);

        assert_eq!(
            ok(&["upload", VM, "a.txt", "/etc/hosts"]),
            Action::Upload(UploadOptions {
                vm: vm(VM),
                files: vec!["/cwd/a.txt".into(), "/etc/hosts".into()],
                dest: "/root".into(),
                timeout: None
            })
        );
        for d in ["-d", "--dest"] {
            match ok(&["upload", VM, "a", d, "/srv"]) {
                Action::Upload(o) => assert_eq!(o.dest, "/srv"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            code(&["upload", VM, "a", "-d", "srv"]),
            ErrorCode::ValidationPath
        );
        assert_eq!(code(&["upload", VM, ""]), ErrorCode::ValidationPath);

        assert_eq!(
            ok(&["download", VM, "/var/log/syslog"]),
            Action::Download(DownloadOptions {
                vm: vm(VM),
                remote_path: "/var/log/syslog".into(),
                dest: None,
                dest_is_dir: false,
                max_size: 16 << 30,
                timeout: None
            })
        );
        match ok(&[
            "download",
            VM,
            "/f",
            "--max-size",
            "64G",
            "--timeout",
            "90s",
        ]) {
            Action::Download(o) => {
                assert_eq!(o.max_size, 64 << 30);
                assert_eq!(o.timeout, Some(std::time::Duration::from_secs(90)));
            }
            other => panic!("{other:?}"),
        }
        for bad in ["64", "0k", "1x", "g", "99999999999t"] {
            assert_eq!(
                code(&["download", VM, "/f", "--max-size", bad]),
                ErrorCode::ValidationInteger,
                "{bad}"
            );
        }
        assert_eq!(
            code(&["download", VM, "/f", "--timeout", "5"]),
            ErrorCode::ValidationDuration
        );
        match ok(&["upload", VM, "a", "--timeout", "2m"]) {
            Action::Upload(o) => assert_eq!(o.timeout, Some(std::time::Duration::from_secs(120))),
            other => panic!("{other:?}"),
        }
        match ok(&["download", VM, "/f", "-d", "out/"]) {
            Action::Download(o) => {
                assert_eq!(o.dest.as_deref(), Some(Path::new("/cwd/out")));
                assert!(o.dest_is_dir);
            }
            other => panic!("{other:?}"),
        }
        match ok(&["download", VM, "/f", "--dest", "/tmp/x"]) {
            Action::Download(o) => assert!(!o.dest_is_dir && o.dest.is_some()),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            code(&["download", VM, "relative"]),
            ErrorCode::ValidationPath
        );
    }

    #[test]
    fn network_command() {
        match ok(&[
            "network",
            VM,
            "--network-policy",
            "allow-all",
            "--allowed-domain",
            "a.com",
        ]) {
            Action::Network(o) => {
                assert_eq!(o.vm, vm(VM));
                assert_eq!(
                    (o.rules.policy, o.rules.promoted),
                    (NetworkPolicy::Custom, true)
                );
            }
            other => panic!("{other:?}"),
        }
        match ok(&[
            "network",
            VM,
            "--network-policy",
            "custom",
            "--allowed-cidr",
            "10.0.0.0/8",
            "--denied-cidr",
            "10.1.0.0/16",
            "--allow-udp",
            "--allow-lan",
        ]) {
            Action::Network(o) => {
                assert_eq!(o.rules.allowed_cidrs.len(), 1);
                assert_eq!(o.rules.denied_cidrs.len(), 1);
                assert!(o.rules.allow_udp);
                assert!(o.rules.allow_lan);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            code(&["network", VM, "--network-policy", "open"]),
            ErrorCode::ValidationNetworkPolicy
        );
    }

    #[test]
    fn snapshot_commands() {
        assert_eq!(ok(&["snapshot", "list"]), Action::SnapshotList);
        assert_eq!(ok(&["snapshot", "ls"]), Action::SnapshotList);
        let id = "vm-0123abcd-17";
        for verb in ["delete", "rm"] {
            assert_eq!(
                ok(&["snapshot", verb, id, id]),
                Action::SnapshotDelete(SnapshotDeleteOptions {
                    ids: vec![SnapshotId::parse(id).unwrap()]
                })
            );
        }
        assert_eq!(code(&["snapshot", "rm", "../.."]), ErrorCode::ValidationId);
        assert_eq!(code(&["snapshot", "create", "x"]), ErrorCode::ValidationId);
    }

    #[test]
    fn setup_command() {
        assert_eq!(
            ok(&["setup"]),
            Action::Setup(SetupOptions {
                firecracker: None,
                jailer: None,
                kernel: None,
                kernel_args: String::new(),
                image_compression: vmsan_image::Compression::Zstd,
                agent: None,
                release_url: None,
                force: false
            })
        );
        assert_eq!(
            ok(&[
                "setup",
                "--firecracker",
                "fc",
                "--jailer",
                "/bin/j",
                "--kernel",
                "/k",
                "--kernel-args",
                " noxsave  tsc=reliable",
                "--image-compression",
                "lz4",
                "--agent",
                "agent",
                "--release-url",
                "https://mirror.example/fc",
                "--force",
            ]),
            Action::Setup(SetupOptions {
                firecracker: Some("/cwd/fc".into()),
                jailer: Some("/bin/j".into()),
                kernel: Some("/k".into()),
                kernel_args: "noxsave tsc=reliable".into(),
                image_compression: vmsan_image::Compression::Lz4,
                agent: Some("/cwd/agent".into()),
                release_url: Some("https://mirror.example/fc".into()),
                force: true
            })
        );
        assert_eq!(
            code(&["setup", "--release-url", "ftp://x"]),
            ErrorCode::ValidationArgs
        );
        assert_eq!(code(&["setup", "--kernel", ""]), ErrorCode::ValidationPath);
        assert_eq!(
            code(&["setup", "--kernel-args", "vmsan_config=/dev/vda"]),
            ErrorCode::ValidationArgs
        );
    }

    #[test]
    fn create_kernel_args_cpu_template_and_boot_timeout() {
        let o = create(&[]);
        assert_eq!(
            (o.kernel_args, o.cpu_template, o.boot_timeout),
            (None, None, None)
        );
        let o = create(&[
            "--kernel-args",
            "loglevel=7  noxsave",
            "--cpu-template",
            "T2S",
            "--boot-timeout",
            "5m",
        ]);
        assert_eq!(o.kernel_args.as_deref(), Some("loglevel=7 noxsave"));
        assert_eq!(
            o.cpu_template,
            Some(vmsan_core::state::CpuTemplateSetting::Static { name: "T2S".into() })
        );
        assert_eq!(o.boot_timeout, Some(Duration::from_secs(300)));
        // An empty value boots without the kernel's stored arguments.
        assert_eq!(
            create(&["--kernel-args", ""]).kernel_args.as_deref(),
            Some("")
        );
        for (args, want) in [
            (
                &["--kernel-args", "rdinit=/bin/sh"][..],
                ErrorCode::ValidationArgs,
            ),
            (
                &["--kernel-args", "VMSAN_STANDIN_VSOCK_DIR=/x"][..],
                ErrorCode::ValidationArgs,
            ),
            (&["--cpu-template", "V1N1"][..], ErrorCode::ValidationArgs),
            (&["--boot-timeout", "2s"][..], ErrorCode::ValidationDuration),
            (
                &["--cpu-template", "T2", "--cpu-template-file", "/t.json"][..],
                ErrorCode::ValidationFlags,
            ),
            (
                &[
                    "--snapshot",
                    "vm-0123abcd-1767225600000",
                    "--kernel-args",
                    "quiet",
                ][..],
                ErrorCode::ValidationFlags,
            ),
            (
                &[
                    "--snapshot",
                    "vm-0123abcd-1767225600000",
                    "--cpu-template",
                    "T2",
                ][..],
                ErrorCode::ValidationFlags,
            ),
        ] {
            let mut argv = vec!["create"];
            argv.extend_from_slice(args);
            assert_eq!(code(&argv), want, "{args:?}");
        }
        // A snapshot's clones may get a longer boot timeout (for their later cold boots).
        assert_eq!(
            create(&[
                "--snapshot",
                "vm-0123abcd-1767225600000",
                "--boot-timeout",
                "10m"
            ])
            .boot_timeout,
            Some(Duration::from_secs(600))
        );
    }

    #[test]
    fn logs_command() {
        assert_eq!(
            ok(&["logs", VM]),
            Action::Logs(LogsOptions {
                vm: vm(VM),
                follow: false,
                tail: None
            })
        );
        for f in ["-f", "--follow"] {
            assert_eq!(
                ok(&["logs", VM, f]),
                Action::Logs(LogsOptions {
                    vm: vm(VM),
                    follow: true,
                    tail: None
                })
            );
        }
        assert_eq!(
            ok(&["logs", VM, "--tail", "20"]),
            Action::Logs(LogsOptions {
                vm: vm(VM),
                follow: false,
                tail: Some(20)
            })
        );
        assert_eq!(
            ok(&["logs", VM, "--tail", "all"]),
            Action::Logs(LogsOptions {
                vm: vm(VM),
                follow: false,
                tail: None
            })
        );
        assert_eq!(
            code(&["logs", VM, "--tail", "-1"]),
            ErrorCode::ValidationInteger
        );
        assert_eq!(
            code(&["--json", "logs", VM, "-f"]),
            ErrorCode::ValidationFlags
        );
    }

    #[test]
    fn image_commands() {
        assert_eq!(ok(&["image", "ls"]), Action::ImageList);
        assert_eq!(ok(&["image", "list"]), Action::ImageList);
        assert_eq!(
            ok(&["image", "pull", "alpine:3.20"]),
            Action::ImagePull(ImagePullOptions {
                reference: "alpine:3.20".into(),
                platform: None
            })
        );
        assert_eq!(
            ok(&["image", "pull", "alpine", "--platform", "linux/arm64/v8"]),
            Action::ImagePull(ImagePullOptions {
                reference: "alpine".into(),
                platform: Some("linux/arm64/v8".into())
            })
        );
        assert_eq!(
            ok(&["image", "import", "img.tar", "--name", "mine:1"]),
            Action::ImageImport(ImageImportOptions {
                path: "/cwd/img.tar".into(),
                name: "mine:1".into()
            })
        );
        for verb in ["rm", "remove"] {
            assert_eq!(
                ok(&["image", verb, "a", "b", "a"]),
                Action::ImageRemove(ImageRemoveOptions {
                    references: vec!["a".into(), "b".into()]
                })
            );
        }
        assert_eq!(
            ok(&["image", "prune"]),
            Action::ImagePrune(ImagePruneOptions { all: false })
        );
        assert_eq!(
            ok(&["image", "prune", "--all"]),
            Action::ImagePrune(ImagePruneOptions { all: true })
        );
        assert_eq!(code(&["image", "pull", ""]), ErrorCode::ValidationImageRef);
        assert_eq!(
            code(&["image", "pull", "a", "--platform", "amd64"]),
            ErrorCode::ValidationArgs
        );
        assert_eq!(
            code(&["image", "import", "x", "--name", "bad:"]),
            ErrorCode::ValidationImageRef
        );
    }

    #[test]
    fn global_flags_anywhere() {
        for argv in [
            vec!["vmsan", "--json", "list"],
            vec!["vmsan", "list", "--json"],
            vec!["vmsan", "snapshot", "--json", "list"],
            vec!["vmsan", "exec", VM, "--json", "ls"],
        ] {
            let cli = Cli::try_parse_from(&argv).unwrap();
            assert!(cli.json, "{argv:?}");
        }
        for argv in [
            vec!["vmsan", "--verbose", "ls"],
            vec!["vmsan", "create", "--verbose"],
        ] {
            assert!(Cli::try_parse_from(&argv).unwrap().verbose, "{argv:?}");
        }
        // After the command, --json belongs to the guest command.
        let cli = Cli::try_parse_from(["vmsan", "exec", VM, "ls", "--json"]).unwrap();
        assert!(!cli.json);
    }

    #[test]
    fn root_check_looks_at_the_parsed_command() {
        use crate::privilege::{check, needs_root};
        let root_only: &[&[&str]] = &[
            &["create"],
            &["--json", "create"],
            &["--verbose", "--json", "create", "--vcpus", "2"],
            &["start", VM],
            &["stop", VM],
            &["remove", VM],
            &["rm", VM],
            &["network", VM, "--network-policy", "deny-all"],
            &["setup"],
            &["snapshot", "create", VM],
            &["--json", "snapshot", "delete", "vm-0123abcd-1"],
            &["image", "pull", "a"],
            &["image", "import", "p", "--name", "n"],
            &["image", "rm", "a"],
            &["image", "prune"],
        ];
        for args in root_only {
            let mut argv = vec!["vmsan"];
            argv.extend_from_slice(args);
            let cli = Cli::try_parse_from(&argv).unwrap();
            assert!(needs_root(&cli.command), "{args:?}");
            let os: Vec<std::ffi::OsString> = argv.iter().map(Into::into).collect();
            let e = check(&cli.command, &os, false).unwrap_err();
            assert_eq!(e.code(), ErrorCode::PermissionDenied, "{args:?}");
            assert!(
                e.fix_text()
                    .unwrap()
                    .starts_with("Run it as root: sudo vmsan "),
                "{args:?}"
            );
            assert!(check(&cli.command, &os, true).is_ok());
        }
        let anyone: &[&[&str]] = &[
            &["list"],
            &["ls"],
            &["inspect", VM],
            &["logs", VM],
            &["exec", VM, "id"],
            &["connect", VM],
            &["upload", VM, "f"],
            &["download", VM, "/f"],
            &["doctor"],
            &["snapshot", "list"],
            &["image", "ls"],
            &["completion", "bash"],
            &["version"],
        ];
        for args in anyone {
            let mut argv = vec!["vmsan"];
            argv.extend_from_slice(args);
            let cli = Cli::try_parse_from(&argv).unwrap();
            assert!(!needs_root(&cli.command), "{args:?}");
        }
    }
}
