//! Runtime names: `--runtime`.

use super::invalid;
use crate::error::{Error, ErrorCode};

/// A named runtime image (recorded in a VM's state, where the type lives).
pub use crate::state::Runtime;

impl Runtime {
    /// Parse `--runtime` (exact names).
    pub fn parse(raw: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == raw)
            .ok_or_else(|| {
                invalid(
                    ErrorCode::ValidationRuntime,
                    "--runtime",
                    raw,
                    "Must be one of base, node22, node24, python3.13.",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes() {
        for r in Runtime::ALL {
            assert_eq!(Runtime::parse(r.as_str()).unwrap(), r);
        }
        for bad in ["", "node", "Node22", "python3", "python", "base "] {
            assert_eq!(
                Runtime::parse(bad).unwrap_err().code(),
                ErrorCode::ValidationRuntime
            );
        }
    }
}
