//! Progress events, for the CLI to render (one bar per layer with indicatif) or ignore.

use std::sync::Arc;

use serde::Serialize;

use crate::digest::Digest;
use crate::store::FsType;

/// One step of a pull, import or setup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Progress {
    /// Resolving a reference to a manifest.
    Resolving {
        /// What is being resolved.
        reference: String,
    },
    /// The manifest is known.
    Resolved {
        /// Manifest digest.
        digest: Digest,
        /// Number of layers.
        layers: usize,
        /// Sum of the layer sizes (compressed).
        total_bytes: u64,
    },
    /// A layer download starts (or resumes at `offset`).
    LayerStart {
        /// Layer digest.
        digest: Digest,
        /// Its size.
        size: u64,
        /// Bytes already present from an earlier, interrupted download.
        offset: u64,
    },
    /// Bytes of a layer arrived.
    LayerProgress {
        /// Layer digest.
        digest: Digest,
        /// Bytes so far.
        done: u64,
        /// Total.
        size: u64,
    },
    /// A layer is complete (downloaded and verified, or already cached).
    LayerDone {
        /// Layer digest.
        digest: Digest,
        /// Whether it was already in the cache.
        cached: bool,
    },
    /// Unpacking layer `index` (0-based) of `count`.
    Unpacking {
        /// Index.
        index: usize,
        /// Count.
        count: usize,
    },
    /// Building the filesystem.
    Building {
        /// Type.
        fs_type: FsType,
    },
    /// A file download of `setup`.
    Download {
        /// What.
        name: String,
        /// Bytes so far.
        done: u64,
        /// Total, when known.
        total: Option<u64>,
    },
    /// Finished.
    Done {
        /// Manifest digest.
        digest: Digest,
        /// Whether nothing had to be built.
        cached: bool,
    },
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

pub(crate) fn emit(p: Option<&ProgressFn>, ev: Progress) {
    if let Some(f) = p {
        f(&ev);
    }
}
