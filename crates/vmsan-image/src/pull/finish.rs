//! From a resolved manifest with its blobs in the store to a named image: the build on a
//! blocking thread, then the name pointed at it.

use super::feed::{DoneSignal, LayerInput};
use super::{PullOptions, Resolved};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::progress::{Progress, ProgressFn, emit};
use crate::store::{Image, ImageStore};

impl ImageStore {
    /// Point `name` at the built image `digest` and report the pull done.
    pub(super) fn name_built(
        &self,
        name: &str,
        digest: &Digest,
        progress: Option<&ProgressFn>,
        cached: bool,
    ) -> Result<()> {
        self.set_ref(name, digest)?;
        emit(
            progress,
            Progress::Done {
                digest: digest.clone(),
                cached,
            },
        );
        Ok(())
    }

    /// Merge, build, record, name.
    pub(super) async fn finish(&self, r: Resolved, opts: &PullOptions) -> Result<Image> {
        let p = opts.progress.clone();
        if let Some(img) = self.load_built(&r.name, &r.digest, opts.build.squashfs_compression())? {
            self.name_built(&r.name, &r.digest, p.as_ref(), true)?;
            return Ok(img);
        }
        let store = self.clone();
        let build = opts.build;
        let limits = opts.limits;
        let name = r.name.clone();
        let digest = r.digest.clone();
        tokio::task::spawn_blocking(move || {
            let inputs = r
                .manifest
                .layers
                .iter()
                .map(|_| LayerInput::Stored)
                .collect();
            store.build_blocking(&r, build, limits, p.as_ref(), inputs, &DoneSignal::done())
        })
        .await
        .map_err(|e| Error::io("build task", std::io::Error::other(e.to_string())))??;
        self.name_built(&name, &digest, opts.progress.as_ref(), false)?;
        self.load_built(&name, &digest, opts.build.squashfs_compression())?
            .ok_or_else(|| Error::NotFound(name, " after building it"))
    }
}
