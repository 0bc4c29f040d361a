//! What the store already has: builds found by name or digest, and builds made again from
//! the stored blobs (no network) when the image compression changed.

use std::fs;
use std::path::Path;

use super::{PullOptions, Resolved};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::manifest::{ImageConfig, ManifestDoc, parse_manifest};
use crate::progress::{Progress, emit};
use crate::reference::{LOCAL_DOMAIN, Reference};
use crate::store::{Image, ImageRecord, ImageStore};

impl ImageStore {
    /// The local (imported) name `r` stands for, and the manifest it points at.
    pub(super) fn local_ref(&self, r: &Reference) -> Result<Option<(String, Digest)>> {
        let local = if r.domain() == LOCAL_DOMAIN {
            Some(r.clone())
        } else {
            r.as_local()
        };
        let Some(local) = local else { return Ok(None) };
        let key = local.to_string();
        Ok(self.get_ref(&key)?.map(|d| (key, d)))
    }

    /// The image built from manifest `d` with this pull's compression; else, when `d` was
    /// built with another compression (the setting changed since), a new build from the
    /// blobs in the store, without the network. `None` when `d` was never built.
    ///
    /// # Errors
    /// A build of `d` with another compression exists but its layers are gone from the store
    /// (a directory import has none): it is never handed out for this compression.
    pub(super) async fn built_or_rebuilt(
        &self,
        name: &str,
        d: &Digest,
        opts: &PullOptions,
    ) -> Result<Option<Image>> {
        if let Some(img) = self.load_built(name, d, opts.build.squashfs_compression())? {
            emit(
                opts.progress.as_ref(),
                Progress::Done {
                    digest: img.record.digest.clone(),
                    cached: true,
                },
            );
            return Ok(Some(img));
        }
        let Some(other) = self.builds_of(d).into_iter().next() else {
            return Ok(None);
        };
        let Some(resolved) = self.stored_build_inputs(name, d, &other)? else {
            return Err(Error::NotFound(
                name.to_owned(),
                " with this host's image compression: it was built with another one and its \
                 layers are not in the store to build it again; pull or import it again, or \
                 go back with `vmsan setup --image-compression`",
            ));
        };
        self.finish(resolved, opts).await.map(Some)
    }

    /// What it takes to build manifest `d` again, from the store alone: its manifest and
    /// layers among the blobs, its source and config from its other build in `other`.
    /// `None` when any of it is missing.
    fn stored_build_inputs(
        &self,
        name: &str,
        d: &Digest,
        other: &Path,
    ) -> Result<Option<Resolved>> {
        let bytes = match fs::read(self.blob_path(d)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("read manifest {d}"), e)),
        };
        d.verify("manifest", &bytes)?;
        let ManifestDoc::Manifest(manifest) = parse_manifest(&bytes, None, "manifest")? else {
            return Ok(None);
        };
        if manifest.layers.is_empty()
            || manifest
                .layers
                .iter()
                .any(|l| !self.blob_path(&l.digest).is_file())
        {
            return Ok(None);
        }
        let read = |file: &str| -> Result<Vec<u8>> {
            let p = other.join(file);
            fs::read(&p).ctx(|| format!("read {}", p.display()))
        };
        let record: ImageRecord = serde_json::from_slice(&read("image.json")?)
            .map_err(|e| Error::malformed("image.json", e.to_string()))?;
        let config: ImageConfig = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| Error::malformed("config.json", e.to_string()))?;
        Ok(Some(Resolved {
            name: name.to_owned(),
            source: record.source,
            digest: d.clone(),
            manifest,
            config,
        }))
    }
}
