//! Errors of the image crate.
//!
//! Each message describes what failed at this layer and, where it helps, what to do next; the
//! underlying cause is kept as the error's `source`.

use std::path::PathBuf;

/// Broad class of an [`Error`], for mapping onto the CLI's stable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The reference or transport given by the user is not valid.
    InvalidReference,
    /// No such image (locally, or in the registry).
    NotFound,
    /// Talking to a registry or reading a local source failed.
    PullFailed,
    /// The image content is invalid or unsafe (digest, manifest, layer entries, limits).
    Invalid,
    /// Building the filesystem image failed.
    BuildFailed,
    /// Installing or checking Firecracker, the jailer or the kernel failed.
    Setup,
    /// Local I/O failed.
    Io,
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The reference does not follow the OCI distribution grammar.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference {
        /// What the user typed.
        input: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A `transport:` prefix we do not support.
    #[error(
        "unknown image transport {0:?}: use a registry reference (e.g. docker.io/library/alpine:3.20), docker-archive:PATH, oci:DIR or oci-archive:PATH"
    )]
    UnknownTransport(String),
    /// A local file operation failed.
    #[error("{context}")]
    Io {
        /// What we were doing.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An HTTP request could not be made or completed.
    #[error("request to {url} failed")]
    Http {
        /// URL.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an unexpected status.
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        /// URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// The registry wants credentials we do not have, or refused ours.
    #[error(
        "authentication to {registry} failed: {reason} (run `docker login {registry}` or add credentials to the Docker config file)"
    )]
    Auth {
        /// Registry host.
        registry: String,
        /// Detail.
        reason: String,
    },
    /// Content did not hash to its digest.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked.
        what: String,
        /// Expected digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// Content was shorter or longer than its descriptor says.
    #[error(
        "size mismatch for {what}: expected {expected} bytes, got {actual} (truncated or corrupted transfer; pull again)"
    )]
    SizeMismatch {
        /// What was checked.
        what: String,
        /// Expected size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// A manifest, index, config or archive is malformed.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which document.
        what: String,
        /// Why.
        reason: String,
    },
    /// A layer entry would escape the root or is otherwise unsafe.
    #[error("layer {layer}: entry {path:?} rejected: {reason}")]
    UnsafeEntry {
        /// Layer digest or name.
        layer: String,
        /// Entry path as in the archive.
        path: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A size or count limit was exceeded (decompression bombs, huge images).
    #[error("limit exceeded in {what}: {reason}")]
    LimitExceeded {
        /// Where.
        what: String,
        /// Which limit.
        reason: String,
    },
    /// No manifest in an index matches the requested platform.
    #[error(
        "no image for platform {wanted} in {reference} (available: {available}); pass another platform"
    )]
    NoMatchingPlatform {
        /// Reference.
        reference: String,
        /// Requested platform.
        wanted: String,
        /// Platforms in the index.
        available: String,
    },
    /// The image is not present locally (and pulling is not allowed or not possible).
    #[error("image {0} not found{1}")]
    NotFound(String, &'static str),
    /// An external tool failed.
    #[error("{program} failed: {detail}")]
    Command {
        /// Program name.
        program: String,
        /// Exit status and the end of its stderr.
        detail: String,
    },
    /// Setup of Firecracker, jailer or kernel failed.
    #[error("{message}; {hint}")]
    Setup {
        /// What failed.
        message: String,
        /// What to do next.
        hint: String,
    },
    /// A path given to us is not acceptable.
    #[error("invalid path {0}: {1}")]
    InvalidPath(PathBuf, String),
}

impl Error {
    /// The broad class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidReference { .. } | Self::UnknownTransport(_) | Self::InvalidPath(..) => {
                ErrorKind::InvalidReference
            }
            Self::NotFound(..) => ErrorKind::NotFound,
            Self::Http { .. }
            | Self::Status { .. }
            | Self::Auth { .. }
            | Self::NoMatchingPlatform { .. } => ErrorKind::PullFailed,
            Self::DigestMismatch { .. }
            | Self::SizeMismatch { .. }
            | Self::Malformed { .. }
            | Self::UnsafeEntry { .. }
            | Self::LimitExceeded { .. } => ErrorKind::Invalid,
            Self::Command { .. } => ErrorKind::BuildFailed,
            Self::Setup { .. } => ErrorKind::Setup,
            Self::Io { .. } => ErrorKind::Io,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn malformed(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Malformed {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to I/O results.
pub(crate) trait IoContext<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(f(), std::io::Error::from(e)))
    }
}

/// An error's text followed by each cause under it that adds something (`a: b: c`). HTTP
/// errors need it: reqwest's own text is only "error sending request", and what went wrong
/// (DNS, connection refused, TLS) is further down the chain.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}
