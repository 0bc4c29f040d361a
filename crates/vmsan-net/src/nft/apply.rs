//! Applying a ruleset: one netlink transaction in a namespace.

use std::path::Path;

use super::ir::Ruleset;
use crate::error::{NetError, Result};
use crate::netns;
use crate::nfnl::Socket;

impl Ruleset {
    /// Applies the commands as one transaction on `sock` (in the socket's namespace).
    pub(crate) fn apply_on(&self, sock: &mut Socket) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        sock.apply(self.batch())
    }

    /// Applies the commands as one netlink transaction in `ns` (the current namespace when
    /// `None`): all of them take effect at once, or none does.
    pub fn apply(&self, ns: Option<&Path>) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        netns::run_in_opt(ns, || {
            let mut sock = Socket::open()?;
            self.apply_on(&mut sock)
        })
        .map_err(|e| in_ns(e, ns))
    }
}

/// Names the namespace in an nftables error.
pub(crate) fn in_ns(e: NetError, ns: Option<&Path>) -> NetError {
    match e {
        NetError::Nft { detail, .. } => NetError::Nft {
            netns: ns.map_or_else(
                || "the current namespace".to_string(),
                |p| p.display().to_string(),
            ),
            detail,
        },
        e => e,
    }
}
