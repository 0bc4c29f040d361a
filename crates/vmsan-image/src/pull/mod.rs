//! `pull` and `import`: from a source to a built, cached, read-only filesystem image.
//!
//! [`ImageStore::pull`] and [`ImageStore::resolve`] are here; the rest, one job a file:
//!
//! * `options`: [`PullPolicy`] and [`PullOptions`].
//! * `cached`: builds already in the store, and builds made again from its blobs.
//! * Sources, each resolved to a manifest with its blobs in the store: `registry_source`
//!   (its layers fetched by `download`), `oci_layout`, `docker_archive`, with `archive`
//!   extracting the archives; `import` ([`ImageStore::import`], with `import_format`).
//! * `blobs`: writing into the blob store.
//! * The build: `finish` (the build on a blocking thread, then the name), `merge_build`
//!   (ext4: an on-disk merge), `tree_build` (squashfs: a thread per layer, a merge in
//!   memory), and `feed` between the downloads and the build threads.
//! * `record`: the `image.json` and `config.json` of a build.

mod archive;
mod blobs;
mod cached;
mod docker_archive;
mod download;
mod feed;
mod finish;
mod import;
mod import_format;
mod merge_build;
mod oci_layout;
mod options;
mod record;
mod registry_source;
mod tree_build;

use std::path::{Path, PathBuf};

use crate::compression::Compression;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::manifest::{ImageConfig, Manifest};
use crate::reference::{ImageSource, Reference};
use crate::store::{Image, ImageStore};
use archive::extract_archive;

pub use options::{PullOptions, PullPolicy};

/// A manifest ready to build, with all its blobs in the store.
struct Resolved {
    name: String,
    source: String,
    digest: Digest,
    manifest: Manifest,
    config: ImageConfig,
}

impl ImageStore {
    /// Resolve `source` (a registry reference or `docker-archive:`, `oci:`, `oci-archive:`) to a
    /// built image, pulling and building what is missing. Local names (imports) resolve first.
    ///
    /// # Errors
    /// See [`Error`]; on failure nothing half-written is left in the store.
    pub async fn pull(&self, source: &str, opts: &PullOptions) -> Result<Image> {
        let src = ImageSource::parse(source)?;
        match src {
            ImageSource::Registry(r) => {
                if let Some((key, d)) = self.local_ref(&r)?
                    && let Some(img) = self.built_or_rebuilt(&key, &d, opts).await?
                {
                    return Ok(img);
                }
                let name = r.to_string();
                if opts.policy != PullPolicy::Always || r.is_pinned() {
                    // A digest reference may name an index: the ref map knows what it
                    // resolved to.
                    for d in r.digest().cloned().into_iter().chain(self.get_ref(&name)?) {
                        if let Some(img) = self.built_or_rebuilt(&name, &d, opts).await? {
                            return Ok(img);
                        }
                    }
                }
                if opts.policy == PullPolicy::Never {
                    return Err(Error::NotFound(
                        name,
                        " locally and the pull policy is never",
                    ));
                }
                let (resolved, fetch) = self.resolve_registry(&r, opts).await?;
                self.fetch_and_finish(resolved, fetch, opts).await
            }
            ImageSource::OciDir(dir, tag) => {
                let name = format!(
                    "oci:{}{}",
                    abs(&dir)?.display(),
                    tag.as_ref().map(|t| format!(":{t}")).unwrap_or_default()
                );
                let resolved = self.resolve_oci_dir(&dir, tag.as_deref(), &name, opts)?;
                self.finish(resolved, opts).await
            }
            ImageSource::OciArchive(path, tag) => {
                let name = format!(
                    "oci-archive:{}{}",
                    abs(&path)?.display(),
                    tag.as_ref().map(|t| format!(":{t}")).unwrap_or_default()
                );
                let tmp = tempfile::Builder::new()
                    .prefix("oci-archive-")
                    .tempdir_in(self.tmp_dir())
                    .ctx(|| "create temp dir".to_owned())?;
                extract_archive(&path, tmp.path())?;
                let resolved = self.resolve_oci_dir(tmp.path(), tag.as_deref(), &name, opts)?;
                self.finish(resolved, opts).await
            }
            ImageSource::DockerArchive(path) => {
                let name = format!("docker-archive:{}", abs(&path)?.display());
                let tmp = tempfile::Builder::new()
                    .prefix("docker-archive-")
                    .tempdir_in(self.tmp_dir())
                    .ctx(|| "create temp dir".to_owned())?;
                let links = extract_archive(&path, tmp.path())?;
                let resolved = self.resolve_docker_archive(tmp.path(), &links, &name)?;
                self.finish(resolved, opts).await
            }
        }
    }

    /// Resolve a name to the image built with `compression` (`None`: ext4) without any
    /// network access and without building.
    ///
    /// # Errors
    /// [`Error::NotFound`], or a bad reference.
    pub fn resolve(&self, name: &str, compression: Option<Compression>) -> Result<Image> {
        let r = Reference::parse(name)?;
        let name = r.to_string();
        let known = self
            .local_ref(&r)?
            .into_iter()
            .chain(r.digest().map(|d| (name.clone(), d.clone())))
            .chain(self.get_ref(&name)?.map(|d| (name.clone(), d)));
        for (key, d) in known {
            if let Some(img) = self.load_built(&key, &d, compression)? {
                return Ok(img);
            }
        }
        Err(Error::NotFound(name, " locally (pull it first)"))
    }
}

fn abs(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).ctx(|| format!("resolve {}", p.display()))
}
