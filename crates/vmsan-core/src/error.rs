//! The error catalogue: one enum of stable codes, each with a default "why" and "fix".
//!
//! Codes are part of the public contract (`--json` prints them, scripts match on them), so a
//! code is never renamed or reused. Messages may improve over time; codes may not change.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

/// Stable error codes, printed as `ERR_…` strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    // Validation (command-line flags and ids).
    ValidationInteger,
    ValidationRuntime,
    ValidationNetworkPolicy,
    ValidationPort,
    ValidationPortConflict,
    ValidationDomain,
    ValidationCidr,
    ValidationImageRef,
    ValidationDiskSize,
    ValidationDuration,
    ValidationFlags,
    ValidationPolicyConflict,
    /// A VM or snapshot id that does not match its strict pattern.
    ValidationId,
    /// A path that is empty, relative where it must be absolute, or tries to escape.
    ValidationPath,
    /// Command-line usage: a missing argument, an unknown flag, a bad value.
    ValidationArgs,
    /// `--env` entries that are not `KEY=VALUE`.
    ValidationEnv,

    // VMs.
    VmNotFound,
    VmStateCorrupt,
    VmNotStopped,
    VmNotRunning,
    VmNoAgentToken,
    VmChrootNotFound,
    VmNetworkSlotsExhausted,
    VmSnapshotNotFound,
    VmSnapshotCreateFailed,
    VmSnapshotCorrupt,
    VmSnapshotIncompatible,
    VmSnapshotExists,
    HostMemoryInsufficient,
    HostDiskFull,
    VmCreateFailed,

    // Firecracker.
    FirecrackerApi,
    FirecrackerExited,

    // Networking.
    NetworkSetupFailed,
    NftSetupFailed,

    // Timeouts.
    TimeoutSocket,
    TimeoutLock,
    TimeoutAgent,

    // Setup and environment.
    SetupMissingBinary,
    SetupNoKernel,
    SetupUnsupportedVersion,
    SetupUnsafeBinary,
    /// The home is so long that VM socket paths would not fit in `sun_path`.
    SetupHomePathTooLong,

    // Guest agent.
    AgentRequest,
    AgentUnauthorized,
    AgentFileNotFound,
    AgentFileTooLarge,

    // Images.
    ImageNotFound,
    ImagePullFailed,
    ImageInvalid,
    ImageBuildFailed,

    // Host and process.
    PermissionDenied,
    Io,
    Interrupted,
    Internal,
}

impl ErrorCode {
    /// Every code, for documentation and for the test that checks codes are distinct.
    pub const ALL: &'static [ErrorCode] = &[
        Self::ValidationInteger,
        Self::ValidationRuntime,
        Self::ValidationNetworkPolicy,
        Self::ValidationPort,
        Self::ValidationPortConflict,
        Self::ValidationDomain,
        Self::ValidationCidr,
        Self::ValidationImageRef,
        Self::ValidationDiskSize,
        Self::ValidationDuration,
        Self::ValidationFlags,
        Self::ValidationPolicyConflict,
        Self::ValidationId,
        Self::ValidationPath,
        Self::ValidationArgs,
        Self::ValidationEnv,
        Self::VmNotFound,
        Self::VmStateCorrupt,
        Self::VmNotStopped,
        Self::VmNotRunning,
        Self::VmNoAgentToken,
        Self::VmChrootNotFound,
        Self::VmNetworkSlotsExhausted,
        Self::VmSnapshotNotFound,
        Self::VmSnapshotCreateFailed,
        Self::VmSnapshotCorrupt,
        Self::VmSnapshotIncompatible,
        Self::VmSnapshotExists,
        Self::HostMemoryInsufficient,
        Self::HostDiskFull,
        Self::VmCreateFailed,
        Self::FirecrackerApi,
        Self::FirecrackerExited,
        Self::NetworkSetupFailed,
        Self::NftSetupFailed,
        Self::TimeoutSocket,
        Self::TimeoutLock,
        Self::TimeoutAgent,
        Self::SetupMissingBinary,
        Self::SetupNoKernel,
        Self::SetupUnsupportedVersion,
        Self::SetupUnsafeBinary,
        Self::SetupHomePathTooLong,
        Self::AgentRequest,
        Self::AgentUnauthorized,
        Self::AgentFileNotFound,
        Self::AgentFileTooLarge,
        Self::ImageNotFound,
        Self::ImagePullFailed,
        Self::ImageInvalid,
        Self::ImageBuildFailed,
        Self::PermissionDenied,
        Self::Io,
        Self::Interrupted,
        Self::Internal,
    ];

    /// Codes that were in the catalogue but that nothing ever produced (most came from the
    /// catalogue of the Node.js vmsan this one re-creates, which never threw them either).
    /// They are gone from the enum, and stay reserved: no new code may take one of these
    /// names.
    pub const RETIRED: &'static [&'static str] = &[
        "ERR_VM_STATE_NOT_FOUND",
        "ERR_NETWORK_DEFAULT_INTERFACE",
        "ERR_NFT_TEARDOWN_FAILED",
        "ERR_NFT_BINARY_MISSING",
        "ERR_NFT_TABLE_MISSING",
        "ERR_SETUP_NO_KERNEL_DIR",
        "ERR_SETUP_NO_ROOTFS_DIR",
        "ERR_SETUP_NO_EXT4_ROOTFS",
        "ERR_SETUP_KVM_UNAVAILABLE",
        "ERR_SETUP_CHECKSUM",
        "ERR_NOT_IMPLEMENTED",
    ];

    /// The stable string form, e.g. `ERR_VM_NOT_FOUND`.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            ValidationInteger => "ERR_VALIDATION_INTEGER",
            ValidationRuntime => "ERR_VALIDATION_RUNTIME",
            ValidationNetworkPolicy => "ERR_VALIDATION_NETWORK_POLICY",
            ValidationPort => "ERR_VALIDATION_PORT",
            ValidationPortConflict => "ERR_VALIDATION_PORT_CONFLICT",
            ValidationDomain => "ERR_VALIDATION_DOMAIN",
            ValidationCidr => "ERR_VALIDATION_CIDR",
            ValidationImageRef => "ERR_VALIDATION_IMAGE_REF",
            ValidationDiskSize => "ERR_VALIDATION_DISK_SIZE",
            ValidationDuration => "ERR_VALIDATION_DURATION",
            ValidationFlags => "ERR_VALIDATION_FLAGS",
            ValidationPolicyConflict => "ERR_VALIDATION_POLICY_CONFLICT",
            ValidationId => "ERR_VALIDATION_ID",
            ValidationPath => "ERR_VALIDATION_PATH",
            ValidationArgs => "ERR_VALIDATION_ARGS",
            ValidationEnv => "ERR_VALIDATION_ENV",
            VmNotFound => "ERR_VM_NOT_FOUND",
            VmStateCorrupt => "ERR_VM_STATE_CORRUPT",
            VmNotStopped => "ERR_VM_NOT_STOPPED",
            VmNotRunning => "ERR_VM_NOT_RUNNING",
            VmNoAgentToken => "ERR_VM_NO_AGENT_TOKEN",
            VmChrootNotFound => "ERR_VM_CHROOT_NOT_FOUND",
            VmNetworkSlotsExhausted => "ERR_VM_NETWORK_SLOTS_EXHAUSTED",
            VmSnapshotNotFound => "ERR_VM_SNAPSHOT_NOT_FOUND",
            VmSnapshotCreateFailed => "ERR_VM_SNAPSHOT_CREATE_FAILED",
            VmSnapshotCorrupt => "ERR_VM_SNAPSHOT_CORRUPT",
            VmSnapshotIncompatible => "ERR_VM_SNAPSHOT_INCOMPATIBLE",
            VmSnapshotExists => "ERR_VM_SNAPSHOT_EXISTS",
            HostMemoryInsufficient => "ERR_HOST_MEMORY_INSUFFICIENT",
            HostDiskFull => "ERR_HOST_DISK_FULL",
            VmCreateFailed => "ERR_VM_CREATE_FAILED",
            FirecrackerApi => "ERR_FIRECRACKER_API",
            FirecrackerExited => "ERR_FIRECRACKER_EXITED",
            NetworkSetupFailed => "ERR_NETWORK_SETUP_FAILED",
            NftSetupFailed => "ERR_NFT_SETUP_FAILED",
            TimeoutSocket => "ERR_TIMEOUT_SOCKET",
            TimeoutLock => "ERR_TIMEOUT_LOCK",
            TimeoutAgent => "ERR_TIMEOUT_AGENT",
            SetupMissingBinary => "ERR_SETUP_MISSING_BINARY",
            SetupNoKernel => "ERR_SETUP_NO_KERNEL",
            SetupUnsupportedVersion => "ERR_SETUP_UNSUPPORTED_VERSION",
            SetupUnsafeBinary => "ERR_SETUP_UNSAFE_BINARY",
            SetupHomePathTooLong => "ERR_SETUP_HOME_PATH_TOO_LONG",
            AgentRequest => "ERR_AGENT_REQUEST",
            AgentUnauthorized => "ERR_AGENT_UNAUTHORIZED",
            AgentFileNotFound => "ERR_AGENT_FILE_NOT_FOUND",
            AgentFileTooLarge => "ERR_AGENT_FILE_TOO_LARGE",
            ImageNotFound => "ERR_IMAGE_NOT_FOUND",
            ImagePullFailed => "ERR_IMAGE_PULL_FAILED",
            ImageInvalid => "ERR_IMAGE_INVALID",
            ImageBuildFailed => "ERR_IMAGE_BUILD_FAILED",
            PermissionDenied => "ERR_PERMISSION_DENIED",
            Io => "ERR_IO",
            Interrupted => "ERR_INTERRUPTED",
            Internal => "ERR_INTERNAL",
        }
    }

    /// The code for its string form, e.g. `ERR_VM_NOT_FOUND`.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        Self::ALL.iter().copied().find(|c| c.as_str() == s)
    }

    /// Why this class of error happens, when the specific error does not say more.
    pub fn default_why(self) -> Option<&'static str> {
        use ErrorCode::*;
        Some(match self {
            ValidationFlags => "These options are mutually exclusive.",
            ValidationPolicyConflict => {
                "deny-all blocks all traffic, so allow rules would never apply."
            }
            ValidationId => "Ids are checked against a strict pattern before they touch any path.",
            VmStateCorrupt => "The VM's state.json could not be parsed.",
            VmChrootNotFound => "The VM data may have been removed.",
            VmNoAgentToken => "The VM was created without a guest agent.",
            TimeoutLock => "Another vmsan process holds the lock.",
            PermissionDenied => "This operation changes host networking, devices or VM processes.",
            _ => return None,
        })
    }

    /// What to do next, when the specific error does not say more.
    pub fn default_fix(self) -> Option<&'static str> {
        use ErrorCode::*;
        Some(match self {
            ValidationInteger
            | ValidationRuntime
            | ValidationNetworkPolicy
            | ValidationPort
            | ValidationDomain
            | ValidationCidr
            | ValidationImageRef
            | ValidationDiskSize
            | ValidationDuration
            | ValidationFlags
            | ValidationPolicyConflict
            | ValidationArgs
            | ValidationEnv
            | ValidationPath => "Run the command with --help to see the accepted values.",
            ValidationPortConflict => "Choose another host port, or stop the VM that holds it.",
            ValidationId => {
                "Use the id exactly as `vmsan list` (or `vmsan snapshot list`) prints it."
            }
            VmNotFound => "Run `vmsan list` to see the VMs that exist.",
            VmStateCorrupt => {
                "Inspect the file, or remove the VM with `vmsan remove --force <id>`."
            }
            VmNotStopped => "Stop the VM first with `vmsan stop <id>`, or use --force (-f).",
            VmNotRunning => "Start the VM with `vmsan start <id>`.",
            VmNoAgentToken => "Recreate the VM; every VM vmsan creates gets an agent.",
            VmChrootNotFound => "The VM must be recreated.",
            VmNetworkSlotsExhausted => "Remove VMs you no longer need with `vmsan remove`.",
            VmSnapshotNotFound | VmSnapshotCorrupt => {
                "Run `vmsan snapshot list` to see the snapshots that exist."
            }
            VmSnapshotIncompatible => {
                "Restore it on a host with the Firecracker version and CPU it was taken with, \
                 or take a new snapshot here."
            }
            VmSnapshotExists => {
                "Delete the existing one with `vmsan snapshot delete <id>`, or keep it."
            }
            HostDiskFull => {
                "Free space on the filesystem holding VMSAN_HOME, or move VMSAN_HOME to a larger one; \
                 give VMs smaller --disk sizes. The guest saw write errors while it was full."
            }
            HostMemoryInsufficient => {
                "Stop or remove VMs you no longer need, or restore fewer clones (--count)."
            }
            VmSnapshotCreateFailed | VmCreateFailed | FirecrackerExited => {
                "See `vmsan logs <id>` and run `vmsan doctor`."
            }
            FirecrackerApi => "Run `vmsan doctor`; the message above is Firecracker's own.",
            NetworkSetupFailed | NftSetupFailed => {
                "Run `vmsan doctor` to check the host's networking prerequisites."
            }
            TimeoutSocket => "See `vmsan logs <id>`; Firecracker may have failed to start.",
            TimeoutLock => "Wait for the other vmsan command to finish, then retry.",
            TimeoutAgent => "See `vmsan logs <id>`; the guest may have failed to boot.",
            SetupMissingBinary | SetupNoKernel | SetupUnsupportedVersion => {
                "Run `sudo vmsan setup` (or pass local files with --firecracker/--jailer/--kernel)."
            }
            SetupUnsafeBinary => {
                "Make the file owned by root and not group- or world-writable (chown root:root; chmod 755)."
            }
            SetupHomePathTooLong => {
                "Set VMSAN_HOME to a shorter path (the default is /var/lib/vmsan)."
            }
            AgentRequest | AgentUnauthorized => {
                "Check that the VM is running with `vmsan inspect <id>`."
            }
            AgentFileNotFound => "Check the path with `vmsan exec <id> ls -la <dir>`.",
            AgentFileTooLarge => {
                "If you expect a file this large, raise the limit with `--max-size` (e.g. 64G)."
            }
            ImageNotFound => "Check the reference, or list local images with `vmsan image ls`.",
            ImagePullFailed => {
                "Check the registry address and your credentials (~/.docker/config.json)."
            }
            ImageInvalid | ImageBuildFailed => "Use another image, or rebuild it.",
            PermissionDenied => "Run it as root: sudo vmsan <command>.",
            Io | Interrupted | Internal => return None,
        })
    }

    /// The process exit code this error maps to.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::Interrupted => 130,
            _ => 1,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A vmsan error: a stable code, a message, optional why and fix, and structured details
/// (`flag`, `vmId`, `target`, …) that `--json` mode prints beside them.
#[derive(Debug)]
pub struct Error {
    code: ErrorCode,
    message: String,
    why: Option<String>,
    fix: Option<String>,
    details: Map<String, Value>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Result alias for the host library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error with the code's default why and fix.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            why: code.default_why().map(str::to_owned),
            fix: code.default_fix().map(str::to_owned),
            details: Map::new(),
            source: None,
        }
    }

    /// Replace the why.
    #[must_use]
    pub fn why(mut self, why: impl Into<String>) -> Self {
        self.why = Some(why.into());
        self
    }

    /// Replace the fix.
    #[must_use]
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// Attach a structured detail (e.g. `flag`, `vmId`).
    #[must_use]
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// Attach the underlying cause.
    #[must_use]
    pub fn source(mut self, err: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(err));
        self
    }

    /// An I/O failure with what was being done.
    pub fn io(context: impl fmt::Display, err: std::io::Error) -> Self {
        let code = match err.kind() {
            std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
            _ => ErrorCode::Io,
        };
        Self::new(code, format!("{context}: {err}")).source(err)
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The one-line message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Why it happened, if known.
    pub fn why_text(&self) -> Option<&str> {
        self.why.as_deref()
    }

    /// What to do next, if known.
    pub fn fix_text(&self) -> Option<&str> {
        self.fix.as_deref()
    }

    /// Structured details.
    pub fn details(&self) -> &Map<String, Value> {
        &self.details
    }

    /// The exit code for the process.
    pub fn exit_code(&self) -> i32 {
        self.code.exit_code()
    }

    /// The `{"code","message","why","fix",…details}` object printed under `"error"`.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("code".into(), Value::from(self.code.as_str()));
        obj.insert("message".into(), Value::from(self.message.clone()));
        obj.insert(
            "why".into(),
            self.why.clone().map_or(Value::Null, Value::from),
        );
        obj.insert(
            "fix".into(),
            self.fix.clone().map_or(Value::Null, Value::from),
        );
        for (k, v) in &self.details {
            obj.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(obj)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// An image-crate failure, with a stable code and its causes (an HTTP failure's own text is
/// only "request to URL failed").
impl From<vmsan_image::Error> for Error {
    fn from(e: vmsan_image::Error) -> Self {
        use vmsan_image::ErrorKind as K;
        let code = match e.kind() {
            K::InvalidReference => ErrorCode::ValidationImageRef,
            K::NotFound => ErrorCode::ImageNotFound,
            K::PullFailed => ErrorCode::ImagePullFailed,
            K::Invalid => ErrorCode::ImageInvalid,
            K::BuildFailed => ErrorCode::ImageBuildFailed,
            K::Setup => ErrorCode::SetupMissingBinary,
            K::Io => ErrorCode::Io,
        };
        Error::new(code, vmsan_image::with_causes(&e)).source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_distinct_and_prefixed() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            assert!(code.as_str().starts_with("ERR_"), "{code}");
            assert!(seen.insert(code.as_str()), "duplicate {code}");
            assert!(
                !ErrorCode::RETIRED.contains(&code.as_str()),
                "{code} is retired: a code never changes meaning, so its name is not reused"
            );
        }
    }

    #[test]
    fn json_shape_has_code_message_why_fix() {
        let e = Error::new(ErrorCode::VmNotFound, "VM not found: vm-00000000")
            .detail("vmId", "vm-00000000");
        let v = e.to_json();
        assert_eq!(v["code"], "ERR_VM_NOT_FOUND");
        assert_eq!(v["message"], "VM not found: vm-00000000");
        assert!(v["fix"].as_str().is_some_and(|f| f.contains("vmsan list")));
        assert_eq!(v["vmId"], "vm-00000000");
        assert!(v.get("why").is_some());
    }

    #[test]
    fn details_never_override_the_core_fields() {
        let e = Error::new(ErrorCode::Io, "x").detail("code", "nope");
        assert_eq!(e.to_json()["code"], "ERR_IO");
    }

    #[test]
    fn interrupted_exits_130() {
        assert_eq!(Error::new(ErrorCode::Interrupted, "x").exit_code(), 130);
        assert_eq!(Error::new(ErrorCode::VmNotFound, "x").exit_code(), 1);
    }
}
