//! The layers of a registry image: parallel downloads into the blob store, fed to a squashfs
//! build that runs beside them, and the done signal the build waits for.

use std::sync::Arc;

use futures_util::StreamExt as _;

use super::feed::{DoneGuard, DoneSignal, LayerInput};
use super::registry_source::Fetch;
use super::{PullOptions, Resolved};
use crate::error::{Error, Result};
use crate::store::{FsType, Image, ImageStore};

impl ImageStore {
    /// Download the layers of a resolved registry image and build it. For squashfs the
    /// layers are unpacked while they download; the manifest documents and the config are
    /// stored once every layer is in.
    pub(super) async fn fetch_and_finish(
        &self,
        r: Resolved,
        fetch: Option<Fetch>,
        opts: &PullOptions,
    ) -> Result<Image> {
        let Some((client, docs)) = fetch else {
            return self.finish(r, opts).await;
        };
        if let Some(img) = self.load_built(&r.name, &r.digest, opts.build.squashfs_compression())? {
            self.name_built(&r.name, &r.digest, opts.progress.as_ref(), true)?;
            return Ok(img);
        }
        let p = opts.progress.as_ref();
        let parallel = if opts.max_parallel == 0 {
            4
        } else {
            opts.max_parallel
        };
        let layers = r.manifest.layers.clone();
        let stream = opts.build.fs_type == FsType::Squashfs;
        let mut inputs = Vec::new();
        let mut feeds = Vec::new();
        for l in &layers {
            if stream && !self.blob_path(&l.digest).is_file() {
                let (tx, rx) = tokio::sync::mpsc::channel(64);
                inputs.push(LayerInput::Stream(rx));
                feeds.push(Some(tx));
            } else {
                inputs.push(LayerInput::Stored);
                feeds.push(None);
            }
        }
        let done = Arc::new(DoneSignal::default());
        let guard = DoneGuard(done.clone());
        let name = r.name.clone();
        let digest = r.digest.clone();
        let (build_task, r) = if stream {
            let store = self.clone();
            let build = opts.build;
            let limits = opts.limits;
            let progress = opts.progress.clone();
            let done = done.clone();
            let task = tokio::task::spawn_blocking(move || {
                store.build_blocking(&r, build, limits, progress.as_ref(), inputs, &done)
            });
            (Some(task), None)
        } else {
            (None, Some(r))
        };
        let mut failed = None;
        {
            let mut results = futures_util::stream::iter(layers.iter().zip(feeds))
                .map(|(l, feed)| {
                    client.blob_to_store(self, &l.digest, l.size, p, opts.retries, feed)
                })
                .buffer_unordered(parallel);
            while let Some(res) = results.next().await {
                if let Err(e) = res {
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none() {
            for (d, b) in &docs {
                if let Err(e) = self.put_blob(d, b) {
                    failed = Some(e);
                    break;
                }
            }
        }
        guard.set(failed.is_none());
        drop(guard);
        let Some(task) = build_task else {
            if let Some(e) = failed {
                return Err(e);
            }
            let r = r.ok_or_else(|| Error::malformed("build", "nothing to build"))?;
            return self.finish(r, opts).await;
        };
        // Wait for the build even after a failed download: it removes its staging.
        let built = task
            .await
            .map_err(|e| Error::io("build task", std::io::Error::other(e.to_string())));
        if let Some(e) = failed {
            return Err(e);
        }
        built??;
        self.name_built(&name, &digest, opts.progress.as_ref(), false)?;
        self.load_built(&name, &digest, opts.build.squashfs_compression())?
            .ok_or_else(|| Error::NotFound(name, " after building it"))
    }
}
