//! The jailer's command line (Firecracker `docs/jailer.md`) and Firecracker's own arguments.
//!
//! Nothing here runs a process: [`JailerSpec::args`] returns the argv to hand to
//! `std::process::Command`/`tokio::process::Command` directly (no shell). Every value is
//! validated before it is rendered.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::models::LogLevel;

/// A refused jailer or Firecracker argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct ArgError {
    /// Which argument.
    pub what: &'static str,
    /// Its value.
    pub value: String,
    /// Why it was refused.
    pub reason: &'static str,
}

impl ArgError {
    pub(crate) fn new(what: &'static str, value: impl Into<String>, reason: &'static str) -> Self {
        Self {
            what,
            value: value.into(),
            reason,
        }
    }
}

/// Checks a VM id as the jailer does: 1 to 64 ASCII letters, digits and hyphens.
///
/// # Errors
/// [`ArgError`] naming the rule.
pub fn validate_id(id: &str) -> Result<(), ArgError> {
    if id.is_empty() || id.len() > 64 {
        return Err(ArgError::new("VM id", id, "must be 1 to 64 characters"));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(ArgError::new(
            "VM id",
            id,
            "only ASCII letters, digits and '-' are allowed",
        ));
    }
    Ok(())
}

/// Checks that `path` is absolute, valid UTF-8 and free of `.`/`..` components and NULs.
pub(crate) fn validate_abs_path(what: &'static str, path: &Path) -> Result<(), ArgError> {
    let shown = path.display().to_string();
    let Some(text) = path.to_str() else {
        return Err(ArgError::new(what, shown, "must be valid UTF-8"));
    };
    if !path.is_absolute() {
        return Err(ArgError::new(what, shown, "must be an absolute path"));
    }
    if text.contains('\0') {
        return Err(ArgError::new(what, shown, "must not contain NUL"));
    }
    if text.split('/').any(|c| c == "." || c == "..") {
        return Err(ArgError::new(what, shown, "must not contain . or .."));
    }
    Ok(())
}

/// Checks a relative path made of plain components (`a/b`, no `.`/`..`, no empty parts).
pub(crate) fn validate_rel_path(what: &'static str, path: &str) -> Result<(), ArgError> {
    if path.is_empty() || path.len() > 255 {
        return Err(ArgError::new(what, path, "must be 1 to 255 bytes"));
    }
    for component in path.split('/') {
        validate_component(what, component)?;
    }
    Ok(())
}

/// Checks one file name: not empty, not `.`/`..`, no `/`, NUL or control characters.
pub(crate) fn validate_component(what: &'static str, name: &str) -> Result<(), ArgError> {
    if name.is_empty() || name.len() > 255 {
        return Err(ArgError::new(what, name, "must be 1 to 255 bytes"));
    }
    if name == "." || name == ".." {
        return Err(ArgError::new(what, name, "must not be . or .."));
    }
    if name.chars().any(|c| c == '/' || c.is_control()) {
        return Err(ArgError::new(
            what,
            name,
            "must not contain '/' or control characters",
        ));
    }
    Ok(())
}

/// Which cgroup hierarchy the jailer writes to (`--cgroup-version`; serialised as `v1`, `v2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// Per-controller v1 hierarchies.
    V1,
    /// The unified v2 hierarchy.
    V2,
}

impl CgroupVersion {
    fn as_arg(self) -> &'static str {
        match self {
            Self::V1 => "1",
            Self::V2 => "2",
        }
    }
}

/// A CPU bandwidth limit: `quota_us` of CPU time every `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuLimit {
    /// Microseconds of CPU time per period (e.g. 200000 for two CPUs at a 100000 period).
    pub quota_us: u64,
    /// Period in microseconds (1000..=1000000).
    pub period_us: u64,
}

impl CpuLimit {
    /// `cpus` whole CPUs at the usual 100 ms period.
    #[must_use]
    pub fn cpus(cpus: u32) -> Self {
        Self {
            quota_us: u64::from(cpus) * 100_000,
            period_us: 100_000,
        }
    }
}

/// cgroup limits the jailer applies to the Firecracker process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// CPU bandwidth.
    pub cpu: Option<CpuLimit>,
    /// Memory limit in bytes (guest memory plus Firecracker's own overhead).
    pub memory_bytes: Option<u64>,
}

impl CgroupLimits {
    /// The `--cgroup` values, as `file=value`, for the given hierarchy version.
    ///
    /// v1: `cpu.cfs_quota_us`, `cpu.cfs_period_us`, `memory.limit_in_bytes`;
    /// v2: `cpu.max` ("quota period"), `memory.max`.
    ///
    /// # Errors
    /// [`ArgError`] for a zero quota or memory, or a period outside 1000..=1000000 µs.
    pub fn render(&self, version: CgroupVersion) -> Result<Vec<String>, ArgError> {
        let mut out = Vec::new();
        if let Some(cpu) = self.cpu {
            if cpu.quota_us < 1000 {
                return Err(ArgError::new(
                    "cpu quota",
                    cpu.quota_us.to_string(),
                    "must be at least 1000 µs",
                ));
            }
            if !(1000..=1_000_000).contains(&cpu.period_us) {
                return Err(ArgError::new(
                    "cpu period",
                    cpu.period_us.to_string(),
                    "must be 1000 to 1000000 µs",
                ));
            }
            match version {
                CgroupVersion::V1 => {
                    out.push(format!("cpu.cfs_quota_us={}", cpu.quota_us));
                    out.push(format!("cpu.cfs_period_us={}", cpu.period_us));
                }
                CgroupVersion::V2 => {
                    out.push(format!("cpu.max={} {}", cpu.quota_us, cpu.period_us));
                }
            }
        }
        if let Some(bytes) = self.memory_bytes {
            if bytes == 0 {
                return Err(ArgError::new(
                    "memory limit",
                    "0",
                    "must be greater than zero",
                ));
            }
            match version {
                CgroupVersion::V1 => out.push(format!("memory.limit_in_bytes={bytes}")),
                CgroupVersion::V2 => out.push(format!("memory.max={bytes}")),
            }
        }
        Ok(out)
    }
}

/// `--resource-limit` values (setrlimit in the jailer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Largest file the process may create, in bytes (`fsize`).
    pub fsize: Option<u64>,
    /// One more than the highest file descriptor (`no-file`; the jailer's default is 2048).
    pub no_file: Option<u64>,
}

/// Firecracker's seccomp choice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// Firecracker's built-in default filter (no flag at all).
    #[default]
    Default,
    /// A custom compiled filter (`--seccomp-filter <file>`, a path Firecracker can open).
    Custom(String),
    /// No filter at all (`--no-seccomp`): development only, the caller warns.
    Disabled,
}

/// Firecracker's own command line (after the jailer's `--`, or directly with `--no-jailer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirecrackerArgs {
    /// `--api-sock`: as Firecracker sees it (absolute inside the jail).
    pub api_sock: String,
    /// `--log-path`.
    pub log_path: Option<String>,
    /// `--level`.
    pub level: Option<LogLevel>,
    /// `--show-level`.
    pub show_level: bool,
    /// `--show-log-origin`.
    pub show_log_origin: bool,
    /// `--metrics-path`.
    pub metrics_path: Option<String>,
    /// `--boot-timer`: log the guest boot time.
    pub boot_timer: bool,
    /// Seccomp filter.
    pub seccomp: Seccomp,
}

impl FirecrackerArgs {
    /// Arguments with the API socket at `api_sock` and everything else at Firecracker's
    /// defaults (including its default seccomp filter).
    #[must_use]
    pub fn new(api_sock: impl Into<String>) -> Self {
        Self {
            api_sock: api_sock.into(),
            log_path: None,
            level: None,
            show_level: false,
            show_log_origin: false,
            metrics_path: None,
            boot_timer: false,
            seccomp: Seccomp::Default,
        }
    }

    /// The arguments, in a stable order.
    ///
    /// # Errors
    /// [`ArgError`] for an empty or NUL-carrying path.
    pub fn args(&self) -> Result<Vec<OsString>, ArgError> {
        let path_arg = |what: &'static str, value: &str| -> Result<OsString, ArgError> {
            if value.is_empty() || value.contains('\0') {
                return Err(ArgError::new(what, value, "must be a non-empty path"));
            }
            Ok(value.into())
        };
        let mut out: Vec<OsString> =
            vec!["--api-sock".into(), path_arg("--api-sock", &self.api_sock)?];
        if let Some(level) = self.level {
            out.push("--level".into());
            out.push(level.as_str().into());
        }
        if let Some(log_path) = &self.log_path {
            out.push("--log-path".into());
            out.push(path_arg("--log-path", log_path)?);
        }
        if self.show_level {
            out.push("--show-level".into());
        }
        if self.show_log_origin {
            out.push("--show-log-origin".into());
        }
        if let Some(metrics_path) = &self.metrics_path {
            out.push("--metrics-path".into());
            out.push(path_arg("--metrics-path", metrics_path)?);
        }
        if self.boot_timer {
            out.push("--boot-timer".into());
        }
        match &self.seccomp {
            Seccomp::Default => {}
            Seccomp::Custom(filter) => {
                out.push("--seccomp-filter".into());
                out.push(path_arg("--seccomp-filter", filter)?);
            }
            Seccomp::Disabled => out.push("--no-seccomp".into()),
        }
        Ok(out)
    }

    /// Arguments for running Firecracker without the jailer (`--no-jailer`): `--id` first
    /// (the jailer passes it otherwise), then [`Self::args`].
    ///
    /// # Errors
    /// As [`Self::args`], and for an invalid id.
    pub fn direct_args(&self, id: &str) -> Result<Vec<OsString>, ArgError> {
        validate_id(id)?;
        let mut out: Vec<OsString> = vec!["--id".into(), id.into()];
        out.extend(self.args()?);
        Ok(out)
    }
}

/// Everything the jailer needs to start one Firecracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailerSpec {
    /// `--id`: the VM id (1 to 64 of `[A-Za-z0-9-]`).
    pub id: String,
    /// `--exec-file`: a statically linked Firecracker; its file name must contain
    /// "firecracker".
    pub exec_file: PathBuf,
    /// `--uid`: never 0.
    pub uid: u32,
    /// `--gid`: never 0.
    pub gid: u32,
    /// `--chroot-base-dir`.
    pub chroot_base: PathBuf,
    /// `--netns`: path of the VM's network namespace handle (e.g. `/var/run/netns/<name>`).
    pub netns: Option<PathBuf>,
    /// `--new-pid-ns`.
    pub new_pid_ns: bool,
    /// `--daemonize`.
    pub daemonize: bool,
    /// `--cgroup-version`.
    pub cgroup_version: CgroupVersion,
    /// Limits rendered as `--cgroup` values for `cgroup_version`.
    pub cgroups: CgroupLimits,
    /// `--parent-cgroup` (relative; the jailer's default is the exec file's name).
    pub parent_cgroup: Option<String>,
    /// `--resource-limit`s.
    pub resource_limits: ResourceLimits,
    /// Firecracker's arguments, after `--`.
    pub firecracker: FirecrackerArgs,
}

impl JailerSpec {
    /// A spec with vmsan's defaults: its own PID namespace, daemonized, no network
    /// namespace, no cgroup limits, the jailer's default resource limits, the API socket at
    /// [`crate::layout::API_SOCKET_IN_JAIL`] and Firecracker's default seccomp filter.
    #[must_use]
    pub fn new(
        id: impl Into<String>,
        exec_file: impl Into<PathBuf>,
        chroot_base: impl Into<PathBuf>,
        uid: u32,
        gid: u32,
        cgroup_version: CgroupVersion,
    ) -> Self {
        Self {
            id: id.into(),
            exec_file: exec_file.into(),
            uid,
            gid,
            chroot_base: chroot_base.into(),
            netns: None,
            new_pid_ns: true,
            daemonize: true,
            cgroup_version,
            cgroups: CgroupLimits::default(),
            parent_cgroup: None,
            resource_limits: ResourceLimits::default(),
            firecracker: FirecrackerArgs::new(crate::layout::API_SOCKET_IN_JAIL),
        }
    }

    /// The jail layout this spec produces.
    ///
    /// # Errors
    /// [`ArgError`] as [`crate::JailLayout::new`].
    pub fn layout(&self) -> Result<crate::JailLayout, ArgError> {
        crate::JailLayout::new(&self.chroot_base, &self.exec_file, &self.id)
    }

    /// Checks every field.
    ///
    /// # Errors
    /// The first [`ArgError`] found.
    pub fn validate(&self) -> Result<(), ArgError> {
        validate_id(&self.id)?;
        validate_abs_path("--exec-file", &self.exec_file)?;
        let exec_name = exec_file_name(&self.exec_file)?;
        if !exec_name.contains("firecracker") {
            return Err(ArgError::new(
                "--exec-file",
                self.exec_file.display().to_string(),
                "the file name must contain \"firecracker\" (the jailer requires it)",
            ));
        }
        if self.uid == 0 {
            return Err(ArgError::new(
                "--uid",
                "0",
                "Firecracker must not run as root",
            ));
        }
        if self.gid == 0 {
            return Err(ArgError::new(
                "--gid",
                "0",
                "Firecracker must not run as root",
            ));
        }
        validate_abs_path("--chroot-base-dir", &self.chroot_base)?;
        if let Some(netns) = &self.netns {
            validate_abs_path("--netns", netns)?;
        }
        if let Some(parent) = &self.parent_cgroup {
            validate_rel_path("--parent-cgroup", parent)?;
        }
        if self.resource_limits.no_file == Some(0) {
            return Err(ArgError::new("no-file limit", "0", "must be at least 1"));
        }
        if !self.firecracker.api_sock.starts_with('/') {
            return Err(ArgError::new(
                "--api-sock",
                self.firecracker.api_sock.clone(),
                "must be absolute inside the jail",
            ));
        }
        Ok(())
    }

    /// The jailer's arguments (without the program itself), validated.
    ///
    /// Order: `--id --exec-file --uid --gid --chroot-base-dir [--netns] [--new-pid-ns]
    /// [--daemonize] --cgroup-version [--cgroup …] [--parent-cgroup] [--resource-limit …]
    /// -- <firecracker args>`.
    ///
    /// # Errors
    /// [`ArgError`] from [`Self::validate`] or the cgroup limits.
    pub fn args(&self) -> Result<Vec<OsString>, ArgError> {
        self.validate()?;
        let mut out: Vec<OsString> = vec![
            "--id".into(),
            self.id.clone().into(),
            "--exec-file".into(),
            self.exec_file.clone().into_os_string(),
            "--uid".into(),
            self.uid.to_string().into(),
            "--gid".into(),
            self.gid.to_string().into(),
            "--chroot-base-dir".into(),
            self.chroot_base.clone().into_os_string(),
        ];
        if let Some(netns) = &self.netns {
            out.push("--netns".into());
            out.push(netns.clone().into_os_string());
        }
        if self.new_pid_ns {
            out.push("--new-pid-ns".into());
        }
        if self.daemonize {
            out.push("--daemonize".into());
        }
        out.push("--cgroup-version".into());
        out.push(self.cgroup_version.as_arg().into());
        for cgroup in self.cgroups.render(self.cgroup_version)? {
            out.push("--cgroup".into());
            out.push(cgroup.into());
        }
        if let Some(parent) = &self.parent_cgroup {
            out.push("--parent-cgroup".into());
            out.push(parent.clone().into());
        }
        if let Some(fsize) = self.resource_limits.fsize {
            out.push("--resource-limit".into());
            out.push(format!("fsize={fsize}").into());
        }
        if let Some(no_file) = self.resource_limits.no_file {
            out.push("--resource-limit".into());
            out.push(format!("no-file={no_file}").into());
        }
        out.push("--".into());
        out.extend(self.firecracker.args()?);
        Ok(out)
    }

    /// The cgroup directory name under which the jailer puts this VM: the parent cgroup
    /// (default: the exec file's name) followed by the id.
    ///
    /// # Errors
    /// [`ArgError`] for an exec file without a usable name.
    pub fn cgroup_parent(&self) -> Result<String, ArgError> {
        match &self.parent_cgroup {
            Some(parent) => Ok(parent.clone()),
            None => Ok(exec_file_name(&self.exec_file)?.to_owned()),
        }
    }
}

/// The last component of the exec file, as the jailer names the jail after it.
pub(crate) fn exec_file_name(exec_file: &Path) -> Result<&str, ArgError> {
    let name = exec_file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            ArgError::new(
                "--exec-file",
                exec_file.display().to_string(),
                "has no UTF-8 file name",
            )
        })?;
    validate_component("--exec-file name", name)?;
    Ok(name)
}
