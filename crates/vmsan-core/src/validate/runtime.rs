//! Runtime names: `--runtime`.

use std::fmt;

use serde::Serialize;

use super::invalid;
use crate::error::{Error, ErrorCode};

/// A named runtime image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum Runtime {
    /// The base image.
    #[default]
    #[serde(rename = "base")]
    Base,
    /// Node.js 22.
    #[serde(rename = "node22")]
    Node22,
    /// Node.js 24.
    #[serde(rename = "node24")]
    Node24,
    /// Python 3.13.
    #[serde(rename = "python3.13")]
    Python313,
}

impl Runtime {
    /// Every runtime, in the order help text lists them.
    pub const ALL: [Runtime; 4] = [
        Runtime::Base,
        Runtime::Node22,
        Runtime::Node24,
        Runtime::Python313,
    ];

    /// The name as typed.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Base => "base",
            Runtime::Node22 => "node22",
            Runtime::Node24 => "node24",
            Runtime::Python313 => "python3.13",
        }
    }

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

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
