//! Errors of the networking crate.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = NetError> = std::result::Result<T, E>;

/// Everything that can go wrong while building, changing or removing a VM's network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// An input (id, slot, CIDR, domain, port, name) failed validation.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// what was being validated
        what: &'static str,
        /// why it was refused
        detail: String,
    },
    /// A published host port is already taken by another VM or a host listener.
    #[error("host port {port}/{proto} is already in use ({by})")]
    PortInUse {
        /// the host port
        port: u16,
        /// tcp or udp
        proto: &'static str,
        /// who holds it
        by: String,
    },
    /// An object that setup would create already exists (a leak of an earlier VM?).
    #[error("{what} already exists")]
    Exists {
        /// description of the object
        what: String,
    },
    /// A system call failed.
    #[error("{context}: {source}")]
    Sys {
        /// what we were doing
        context: String,
        /// the OS error
        #[source]
        source: std::io::Error,
    },
    /// A netlink request failed.
    #[error("netlink: {context}: {source}")]
    Netlink {
        /// what we were doing
        context: String,
        /// the netlink error
        #[source]
        source: rtnetlink::Error,
    },
    /// The kernel refused an nftables transaction or listing (nf_tables over netlink).
    #[error("nftables in {netns}: {detail}")]
    Nft {
        /// the namespace of the transaction
        netns: String,
        /// which message failed and why
        detail: String,
    },
    /// A namespace file could not be used.
    #[error("network namespace {path}: {detail}")]
    Netns {
        /// the bind-mount path
        path: PathBuf,
        /// what went wrong
        detail: String,
    },
    /// Several cleanup steps failed; each is listed.
    #[error("teardown incomplete: {0:?}")]
    Teardown(Vec<String>),
}

impl NetError {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            detail: detail.into(),
        }
    }

    pub(crate) fn sys(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        Self::Sys {
            context: context.into(),
            source: source.into(),
        }
    }

    pub(crate) fn netlink(context: impl Into<String>, source: rtnetlink::Error) -> Self {
        Self::Netlink {
            context: context.into(),
            source,
        }
    }
}
