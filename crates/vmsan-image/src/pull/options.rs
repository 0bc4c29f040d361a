//! What a pull or an import may do: the pull policy and the options.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::build::BuildOptions;
use crate::error::{Error, Result};
use crate::layer::Limits;
use crate::manifest::Platform;
use crate::progress::ProgressFn;
use crate::registry::Credentials;

/// When to contact the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Always resolve the tag again (the layers and the build stay cached by digest).
    Always,
    /// Only when the name is not present locally (the default).
    #[default]
    Missing,
    /// Never: fail when the name is not present locally.
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "always" => Ok(Self::Always),
            "missing" => Ok(Self::Missing),
            "never" => Ok(Self::Never),
            other => Err(Error::InvalidReference {
                input: other.to_owned(),
                reason: "pull policy must be always, missing or never".into(),
            }),
        }
    }
}

/// Options of [`ImageStore::pull`](crate::ImageStore::pull) and
/// [`ImageStore::import`](crate::ImageStore::import).
#[derive(Clone, Default)]
pub struct PullOptions {
    /// Pull policy.
    pub policy: PullPolicy,
    /// Platform to select from an index (default: this host's).
    pub platform: Option<Platform>,
    /// Progress callback.
    pub progress: Option<ProgressFn>,
    /// Filesystem build options.
    pub build: BuildOptions,
    /// Limits against bombs.
    pub limits: Limits,
    /// Docker config file for credentials (default: `$DOCKER_CONFIG` or `~/.docker/config.json`).
    pub docker_config: Option<PathBuf>,
    /// Explicit credentials (take precedence over the Docker config file).
    pub credentials: Option<Credentials>,
    /// Registries to reach over plain HTTP (loopback registries always are).
    pub plain_http: Vec<String>,
    /// Parallel layer downloads (0 = 4).
    pub max_parallel: usize,
    /// Resume attempts per blob after an interrupted transfer (0 = none).
    pub retries: u32,
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("policy", &self.policy)
            .field("platform", &self.platform)
            .field("build", &self.build)
            .field("limits", &self.limits)
            .field("plain_http", &self.plain_http)
            .field("max_parallel", &self.max_parallel)
            .finish_non_exhaustive()
    }
}
