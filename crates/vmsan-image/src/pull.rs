//! `pull` and `import`: from a source to a built, cached, read-only filesystem image.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::build::{BuildOptions, build_filesystem};
use crate::compression::{Codec, Compression};
use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::layer::Limits;
use crate::manifest::{
    Descriptor, ImageConfig, LayerCompression, MT_OCI_CONFIG, MT_OCI_LAYER_TAR, MT_OCI_MANIFEST,
    Manifest, ManifestDoc, Platform, parse_config, parse_manifest, select_platform,
};
use crate::merge::Staging;
use crate::progress::{Progress, ProgressFn, emit};
use crate::reference::{ImageSource, LOCAL_DOMAIN, Reference};
use crate::registry::Feed;
use crate::registry::{Credentials, RegistryClient, default_docker_config, docker_credentials};
use crate::store::FsType;
use crate::store::{Image, ImageRecord, ImageStore, dir_size, now_secs};
use crate::tree::{Budget, LayerIndex, Shared, Tree, index_layer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

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

/// Options of [`ImageStore::pull`] and [`ImageStore::import`].
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

/// What is left to fetch of a resolved registry image: its client, and the manifest
/// documents and config to store once the layers are in.
type Fetch = (RegistryClient, Vec<(Digest, Vec<u8>)>);

/// What the unpacking threads of one build share.
struct Unpack<'a> {
    limits: &'a Limits,
    shared: &'a Shared,
    budget: &'a Budget,
    done: &'a DoneSignal,
    codec: Codec,
}

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

    /// The local (imported) name `r` stands for, and the manifest it points at.
    fn local_ref(&self, r: &Reference) -> Result<Option<(String, Digest)>> {
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
    async fn built_or_rebuilt(
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

    async fn resolve_registry(
        &self,
        r: &Reference,
        opts: &PullOptions,
    ) -> Result<(Resolved, Option<Fetch>)> {
        let p = opts.progress.as_ref();
        let name = r.to_string();
        emit(
            p,
            Progress::Resolving {
                reference: name.clone(),
            },
        );
        let creds = match (
            opts.credentials.clone(),
            opts.docker_config.clone().or_else(default_docker_config),
        ) {
            (Some(c), _) => Some(c),
            (None, Some(cfg)) => {
                // A credential helper is a process: keep it off the async workers.
                let domain = r.domain().to_owned();
                tokio::task::spawn_blocking(move || docker_credentials(&cfg, &domain))
                    .await
                    .map_err(|e| {
                        Error::io("credential lookup", std::io::Error::other(e.to_string()))
                    })??
            }
            (None, None) => None,
        };
        let client = RegistryClient::new(r, &opts.plain_http, creds)?;
        let (bytes, ct, mut digest) = client.manifest(&r.reference_part(), &name).await?;
        let mut doc = parse_manifest(&bytes, ct.as_deref(), &format!("manifest of {name}"))?;
        let mut docs = vec![(digest.clone(), bytes)];
        if let ManifestDoc::Index(idx) = &doc {
            let want = opts.platform.clone().unwrap_or_else(Platform::host);
            let d = select_platform(idx, &want, &name)?.digest.clone();
            let (b2, ct2, d2) = client.manifest(&d.to_string(), &name).await?;
            doc = parse_manifest(
                &b2,
                ct2.as_deref(),
                &format!("manifest of {name} for {want}"),
            )?;
            if matches!(doc, ManifestDoc::Index(_)) {
                return Err(Error::malformed(
                    format!("manifest of {name}"),
                    "an index entry points at another index",
                ));
            }
            digest = d2;
            docs.push((digest.clone(), b2));
        }
        let ManifestDoc::Manifest(manifest) = doc else {
            return Err(Error::malformed(
                format!("manifest of {name}"),
                "not an image manifest",
            ));
        };
        let total = manifest.layers.iter().map(|l| l.size).sum();
        emit(
            p,
            Progress::Resolved {
                digest: digest.clone(),
                layers: manifest.layers.len(),
                total_bytes: total,
            },
        );
        // Already built under this digest (another tag, or `--pull always` on an unchanged tag).
        if let Some(img) = self.load_built(&name, &digest, opts.build.squashfs_compression())? {
            let config = img.config.clone();
            return Ok((
                Resolved {
                    name,
                    source: r.to_string(),
                    digest,
                    manifest,
                    config,
                },
                None,
            ));
        }
        let cfg_bytes = client
            .small_blob(
                &manifest.config.digest,
                manifest.config.size,
                &format!("config of {name}"),
            )
            .await?;
        let parsed = parse_config(&cfg_bytes)?;
        docs.push((manifest.config.digest.clone(), cfg_bytes));
        Ok((
            Resolved {
                name,
                source: r.to_string(),
                digest,
                manifest,
                config: parsed.config,
            },
            Some((client, docs)),
        ))
    }

    /// Download the layers of a resolved registry image and build it. For squashfs the
    /// layers are unpacked while they download; the manifest documents and the config are
    /// stored once every layer is in.
    async fn fetch_and_finish(
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

    pub(crate) fn put_blob(&self, d: &Digest, bytes: &[u8]) -> Result<()> {
        d.verify("blob", bytes)?;
        let p = self.blob_path(d);
        if p.is_file() {
            return Ok(());
        }
        crate::store::write_atomic(&p, bytes)
    }

    /// Copy a file into the blob store, hashing it; returns its digest and size.
    fn ingest_file(&self, path: &Path, expect: Option<&Digest>) -> Result<(Digest, u64)> {
        let mut src = fs::File::open(path).ctx(|| format!("open {}", path.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix("ingest-")
            .tempfile_in(self.tmp_dir())
            .ctx(|| "create temp file".to_owned())?;
        let mut w = HashingWriter::new(std::io::BufWriter::new(tmp));
        std::io::copy(&mut src, &mut w).ctx(|| format!("copy {}", path.display()))?;
        let (bw, d, n) = w.finish();
        let tmp = bw
            .into_inner()
            .map_err(|e| Error::io("flush temp file", e.into_error()))?;
        if let Some(e) = expect
            && e != &d
        {
            return Err(Error::DigestMismatch {
                what: path.display().to_string(),
                expected: e.to_string(),
                actual: d.to_string(),
            });
        }
        let dest = self.blob_path(&d);
        if !dest.is_file() {
            tmp.persist(&dest)
                .map_err(|e| Error::io(format!("store blob {d}"), e.error))?;
        }
        Ok((d, n))
    }

    fn resolve_oci_dir(
        &self,
        dir: &Path,
        tag: Option<&str>,
        name: &str,
        opts: &PullOptions,
    ) -> Result<Resolved> {
        let blob = |d: &Digest| dir.join("blobs").join("sha256").join(d.hex());
        let read_doc = |d: &Digest, what: &str| -> Result<Vec<u8>> {
            let b = fs::read(blob(d)).ctx(|| format!("read {what} {} in {}", d, dir.display()))?;
            d.verify(what, &b)?;
            Ok(b)
        };
        let index_path = dir.join("index.json");
        let ib = fs::read(&index_path)
            .ctx(|| format!("read {} (is this an OCI layout?)", index_path.display()))?;
        let ManifestDoc::Index(index) =
            parse_manifest(&ib, Some(crate::manifest::MT_OCI_INDEX), "index.json")?
        else {
            return Err(Error::malformed("index.json", "not an index"));
        };
        let candidates: Vec<&Descriptor> = match tag {
            Some(t) => index
                .manifests
                .iter()
                .filter(|m| {
                    m.annotations
                        .get("org.opencontainers.image.ref.name")
                        .map(String::as_str)
                        == Some(t)
                })
                .collect(),
            None => index.manifests.iter().collect(),
        };
        let desc = match candidates.as_slice() {
            [one] => (*one).clone(),
            [] => return Err(Error::NotFound(name.to_owned(), " in the OCI layout")),
            _ => {
                return Err(Error::malformed(
                    "index.json",
                    "several images: name one with oci:DIR:TAG",
                ));
            }
        };
        let mut bytes = read_doc(&desc.digest, "manifest")?;
        let mut digest = desc.digest.clone();
        let mut doc = parse_manifest(
            &bytes,
            Some(desc.media_type.as_str()).filter(|m| !m.is_empty()),
            "manifest",
        )?;
        if let ManifestDoc::Index(idx) = &doc {
            let want = opts.platform.clone().unwrap_or_else(Platform::host);
            digest = select_platform(idx, &want, name)?.digest.clone();
            bytes = read_doc(&digest, "manifest")?;
            doc = parse_manifest(&bytes, None, "manifest")?;
        }
        let ManifestDoc::Manifest(manifest) = doc else {
            return Err(Error::malformed("manifest", "nested index"));
        };
        let cfg = read_doc(&manifest.config.digest, "config")?;
        let parsed = parse_config(&cfg)?;
        for l in &manifest.layers {
            let (_, n) = self.ingest_file(&blob(&l.digest), Some(&l.digest))?;
            if n != l.size {
                return Err(Error::SizeMismatch {
                    what: format!("layer {}", l.digest),
                    expected: l.size,
                    actual: n,
                });
            }
        }
        self.put_blob(&digest, &bytes)?;
        self.put_blob(&manifest.config.digest, &cfg)?;
        Ok(Resolved {
            name: name.to_owned(),
            source: name.to_owned(),
            digest,
            manifest,
            config: parsed.config,
        })
    }

    fn resolve_docker_archive(
        &self,
        dir: &Path,
        links: &std::collections::HashMap<PathBuf, PathBuf>,
        name: &str,
    ) -> Result<Resolved> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            layers: Vec<String>,
        }
        let mp = dir.join("manifest.json");
        let b = fs::read(&mp)
            .ctx(|| format!("read manifest.json of {name} (is this a `docker save` archive?)"))?;
        let entries: Vec<Entry> = serde_json::from_slice(&b)
            .map_err(|e| Error::malformed("docker-archive manifest.json", e.to_string()))?;
        let [entry] = entries.as_slice() else {
            return Err(Error::malformed(
                "docker-archive manifest.json",
                "expected exactly one image",
            ));
        };
        let inside = |rel: &str| -> Result<PathBuf> {
            let escape = || {
                Error::malformed(
                    "docker-archive manifest.json",
                    format!("path {rel:?} escapes the archive"),
                )
            };
            let normal = |p: &Path| -> Result<PathBuf> {
                let mut out = PathBuf::new();
                for c in p.components() {
                    match c {
                        std::path::Component::Normal(n) => out.push(n),
                        std::path::Component::CurDir => {}
                        std::path::Component::ParentDir => {
                            if !out.pop() {
                                return Err(escape());
                            }
                        }
                        _ => return Err(escape()),
                    }
                }
                Ok(out)
            };
            let mut p = normal(Path::new(rel))?;
            // Follow at most a few archive symlinks, inside the archive only.
            for _ in 0..4 {
                match links.get(&p) {
                    Some(t) => p = normal(&p.parent().unwrap_or(Path::new("")).join(t))?,
                    None => break,
                }
            }
            Ok(dir.join(p))
        };
        let cfg = fs::read(inside(&entry.config)?).ctx(|| format!("read {}", entry.config))?;
        let parsed = parse_config(&cfg)?;
        let cfg_d = Digest::of(&cfg);
        self.put_blob(&cfg_d, &cfg)?;
        let mut layers = Vec::new();
        for l in &entry.layers {
            let path = inside(l)?;
            let mut head = [0u8; 4];
            let n = fs::File::open(&path)
                .and_then(|mut f| f.read(&mut head))
                .ctx(|| format!("read {l}"))?;
            let media_type = match LayerCompression::sniff(&head[..n]) {
                LayerCompression::None => MT_OCI_LAYER_TAR,
                LayerCompression::Gzip => crate::manifest::MT_OCI_LAYER_GZIP,
                LayerCompression::Zstd => crate::manifest::MT_OCI_LAYER_ZSTD,
            };
            let (d, size) = self.ingest_file(&path, None)?;
            layers.push(Descriptor {
                media_type: media_type.to_owned(),
                digest: d,
                size,
                platform: None,
                annotations: Default::default(),
            });
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MT_OCI_MANIFEST.to_owned()),
            config: Descriptor {
                media_type: MT_OCI_CONFIG.to_owned(),
                digest: cfg_d,
                size: cfg.len() as u64,
                platform: None,
                annotations: Default::default(),
            },
            layers,
        };
        let mb = serde_json::to_vec(&manifest)
            .map_err(|e| Error::malformed("manifest", e.to_string()))?;
        let digest = Digest::of(&mb);
        self.put_blob(&digest, &mb)?;
        Ok(Resolved {
            name: name.to_owned(),
            source: name.to_owned(),
            digest,
            manifest,
            config: parsed.config,
        })
    }

    /// Point `name` at the built image `digest` and report the pull done.
    fn name_built(
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
    async fn finish(&self, r: Resolved, opts: &PullOptions) -> Result<Image> {
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

    fn build_blocking(
        &self,
        r: &Resolved,
        build: BuildOptions,
        limits: Limits,
        p: Option<&ProgressFn>,
        inputs: Vec<LayerInput>,
        done: &DoneSignal,
    ) -> Result<()> {
        if build.fs_type == FsType::Squashfs {
            return self.build_squashfs(r, build, limits, p, inputs, done);
        }
        drop(inputs);
        if !done.wait() {
            return Err(download_failed("the image"));
        }
        // Uncompressed size is unknown before the merge: assume a generous 8:1 over the blobs.
        let compressed: u64 = r.manifest.layers.iter().map(|l| l.size).sum();
        let area = match build.staging {
            crate::build::StagingArea::Auto => {
                crate::build::tmpfs_staging(compressed.saturating_mul(8).saturating_add(64 << 20))
            }
            crate::build::StagingArea::Store => None,
        }
        .unwrap_or_else(|| self.tmp_dir());
        let stage = tempfile::Builder::new()
            .prefix("vmsan-stage-")
            .tempdir_in(&area)
            .ctx(|| format!("create staging directory in {}", area.display()))?;
        let t_merge = std::time::Instant::now();
        let out = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(self.tmp_dir())
            .ctx(|| "create build directory".to_owned())?;
        let root = stage.path().join("rootfs");
        fs::create_dir(&root).ctx(|| format!("create {}", root.display()))?;
        let mut staging = Staging::new(&root, limits)?;
        let count = r.manifest.layers.len();
        for (i, l) in r.manifest.layers.iter().enumerate() {
            emit(p, Progress::Unpacking { index: i, count });
            let compression = LayerCompression::from_media_type(&l.media_type)?;
            let path = self.blob_path(&l.digest);
            if !path.is_file() {
                return Err(Error::NotFound(
                    format!("layer {}", l.digest),
                    " in the blob cache",
                ));
            }
            let what = l.digest.to_string();
            let reader = crate::merge::threaded_decompress(path, compression, what.clone());
            staging.apply_tar(reader, &what)?;
        }
        let stats = staging.finish()?;
        let merge_ms = t_merge.elapsed().as_millis() as u64;
        emit(
            p,
            Progress::Building {
                fs_type: build.fs_type,
            },
        );
        let fs_path = out.path().join(build.fs_type.file_name());
        let t_build = std::time::Instant::now();
        build_filesystem(&root, &fs_path, build, stats.entries, stats.bytes)?;
        let build_ms = t_build.elapsed().as_millis() as u64;
        drop(stage);
        tracing::debug!(
            merge_ms,
            build_ms,
            entries = stats.entries,
            bytes = stats.bytes,
            "image built"
        );
        self.write_record(out.path(), r, build, stats.entries)?;
        self.set_timings(out.path(), merge_ms, build_ms)?;
        let out = out.keep();
        self.commit_built(&out, &r.digest, build.squashfs_compression())
    }

    /// Unpack every layer on its own thread (from its download as it arrives, or from the
    /// blob store), merge them in memory, and write the squashfs image from the tree.
    fn build_squashfs(
        &self,
        r: &Resolved,
        build: BuildOptions,
        limits: Limits,
        p: Option<&ProgressFn>,
        inputs: Vec<LayerInput>,
        done: &DoneSignal,
    ) -> Result<()> {
        let t_merge = std::time::Instant::now();
        let out = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(self.tmp_dir())
            .ctx(|| "create build directory".to_owned())?;
        let shared = Shared::default();
        let budget = Budget::new(&self.tmp_dir());
        let count = r.manifest.layers.len();
        let codec = build.codec();
        let results: Vec<Result<LayerIndex>> = std::thread::scope(|s| {
            let handles: Vec<_> = r
                .manifest
                .layers
                .iter()
                .zip(inputs)
                .enumerate()
                .map(|(index, (l, input))| {
                    let ctx = Unpack {
                        limits: &limits,
                        shared: &shared,
                        budget: &budget,
                        done,
                        codec,
                    };
                    s.spawn(move || {
                        emit(p, Progress::Unpacking { index, count });
                        self.index_one(l, input, &ctx)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::io(
                            "unpack a layer",
                            std::io::Error::other("the unpacking thread panicked"),
                        ))
                    })
                })
                .collect()
        });
        let mut tree = Tree::new(limits);
        for res in results {
            tree.apply(res?)?;
        }
        let entries = shared.entries();
        let merge_ms = t_merge.elapsed().as_millis() as u64;
        emit(
            p,
            Progress::Building {
                fs_type: build.fs_type,
            },
        );
        let fs_path = out.path().join(build.fs_type.file_name());
        let t_build = std::time::Instant::now();
        crate::squashfs::write(&tree, &fs_path, codec)?;
        drop(tree);
        let build_ms = t_build.elapsed().as_millis() as u64;
        tracing::debug!(merge_ms, build_ms, entries, "image built");
        // Nothing is kept unless every download was verified (a layer reader may finish
        // before it sees the end of its stream, e.g. at the end of a zstd frame).
        if !done.wait() {
            return Err(download_failed("the image"));
        }
        self.write_record(out.path(), r, build, entries)?;
        self.set_timings(out.path(), merge_ms, build_ms)?;
        let out = out.keep();
        self.commit_built(&out, &r.digest, build.squashfs_compression())
    }

    /// Index one layer: from its download stream when there is one and it runs to its
    /// verified end, else from the stored blob (once the downloads are done).
    fn index_one(&self, l: &Descriptor, input: LayerInput, ctx: &Unpack<'_>) -> Result<LayerIndex> {
        let Unpack {
            limits,
            shared,
            budget,
            done,
            codec,
        } = *ctx;
        let compression = LayerCompression::from_media_type(&l.media_type)?;
        let what = l.digest.to_string();
        // Inflating runs on a helper thread, indexing and compressing on this one.
        if let LayerInput::Stream(rx) = input {
            let cut = Arc::new(AtomicBool::new(false));
            let reader = FeedReader {
                rx,
                cur: bytes::Bytes::new(),
                ended: false,
                cut: cut.clone(),
            };
            let d = crate::merge::threaded_read(move || Ok(reader), compression, what.clone());
            let res = index_layer(d, &what, limits, shared, budget, codec);
            if !cut.load(Ordering::SeqCst) {
                return res;
            }
            if !done.wait() {
                return Err(download_failed(&what));
            }
        }
        let d =
            crate::merge::threaded_decompress(self.blob_path(&l.digest), compression, what.clone());
        index_layer(d, &what, limits, shared, budget, codec)
    }

    fn set_timings(&self, dir: &Path, merge_ms: u64, build_ms: u64) -> Result<()> {
        let p = dir.join("image.json");
        let b = fs::read(&p).ctx(|| "read image.json".to_owned())?;
        let mut rec: ImageRecord = serde_json::from_slice(&b)
            .map_err(|e| Error::malformed("image.json", e.to_string()))?;
        rec.merge_ms = Some(merge_ms);
        rec.build_ms = Some(build_ms);
        let b = serde_json::to_vec_pretty(&rec)
            .map_err(|e| Error::malformed("image.json", e.to_string()))?;
        fs::write(&p, b).ctx(|| "write image.json".to_owned())
    }

    fn write_record(
        &self,
        dir: &Path,
        r: &Resolved,
        build: BuildOptions,
        entries: u64,
    ) -> Result<()> {
        let fs_path = dir.join(build.fs_type.file_name());
        let size = fs::metadata(&fs_path)
            .ctx(|| format!("stat {}", fs_path.display()))?
            .len();
        let record = ImageRecord {
            digest: r.digest.clone(),
            source: r.source.clone(),
            fs_type: build.fs_type,
            compression: build.squashfs_compression(),
            layers: r.manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            config_digest: Some(r.manifest.config.digest.clone())
                .filter(|_| !r.manifest.layers.is_empty() || r.manifest.config.size > 0),
            size,
            entries,
            built_at: now_secs(),
            merge_ms: None,
            build_ms: None,
        };
        let cfg = serde_json::to_vec_pretty(&r.config)
            .map_err(|e| Error::malformed("config", e.to_string()))?;
        let rec = serde_json::to_vec_pretty(&record)
            .map_err(|e| Error::malformed("record", e.to_string()))?;
        fs::write(dir.join("config.json"), cfg).ctx(|| "write config.json".to_owned())?;
        fs::write(dir.join("image.json"), rec).ctx(|| "write image.json".to_owned())?;
        fs::File::open(dir).and_then(|d| d.sync_all()).ok();
        Ok(())
    }

    /// Turn a root filesystem directory, or a tarball of one (plain, gzip or zstd), into an
    /// image named `name` (stored as `localhost/NAME[:TAG]`). `config` gives its defaults.
    ///
    /// # Errors
    /// Invalid name or path, unsafe tar entries, build failures.
    pub async fn import(
        &self,
        path: &Path,
        name: &str,
        config: ImageConfig,
        opts: &PullOptions,
    ) -> Result<Image> {
        let r = Reference::parse(name)?;
        let local = if r.domain() == LOCAL_DOMAIN {
            r
        } else {
            r.as_local().ok_or_else(|| Error::InvalidReference {
                input: name.to_owned(),
                reason: "an imported image's name cannot name a registry".into(),
            })?
        };
        if local.is_pinned() {
            return Err(Error::InvalidReference {
                input: name.to_owned(),
                reason: "an imported image's name cannot carry a digest".into(),
            });
        }
        let key = local.to_string();
        // The user's own argument: a symlink naming it is followed (as `cp -r` and `tar -C`
        // do); nothing inside the tree is.
        let path = &fs::canonicalize(path).ctx(|| format!("resolve {}", path.display()))?;
        let source = format!("import:{}", path.display());
        match ImportFormat::detect(path)? {
            ImportFormat::RootfsDir | ImportFormat::RootfsTar => {}
            ImportFormat::OciLayout => {
                let resolved = self.resolve_oci_dir(path, None, &key, opts)?;
                return self.finish(resolved, opts).await;
            }
            ImportFormat::OciArchive | ImportFormat::DockerArchive => {
                let tmp = tempfile::Builder::new()
                    .prefix("import-")
                    .tempdir_in(self.tmp_dir())
                    .ctx(|| "create temp dir".to_owned())?;
                let links = extract_archive(path, tmp.path())?;
                let resolved = if tmp.path().join("manifest.json").is_file() {
                    self.resolve_docker_archive(tmp.path(), &links, &key)?
                } else {
                    self.resolve_oci_dir(tmp.path(), None, &key, opts)?
                };
                return self.finish(resolved, opts).await;
            }
            ImportFormat::CompressedImageArchive => {
                return Err(Error::InvalidPath(
                    path.clone(),
                    "a compressed `docker save` or OCI archive: decompress it first (gunzip or \
                     zstd -d), then import the .tar"
                        .into(),
                ));
            }
        }
        let meta = fs::metadata(path).ctx(|| format!("stat {}", path.display()))?;
        if meta.is_file() {
            let (d, size) = self.ingest_file(path, None)?;
            let mut head = [0u8; 4];
            let n = fs::File::open(path)
                .and_then(|mut f| f.read(&mut head))
                .ctx(|| format!("read {}", path.display()))?;
            let media_type = match LayerCompression::sniff(&head[..n]) {
                LayerCompression::None => MT_OCI_LAYER_TAR,
                LayerCompression::Gzip => crate::manifest::MT_OCI_LAYER_GZIP,
                LayerCompression::Zstd => crate::manifest::MT_OCI_LAYER_ZSTD,
            };
            let cfg = serde_json::to_vec(&serde_json::json!({"architecture": Platform::host().architecture, "os": "linux", "config": {
                "Env": config.env, "WorkingDir": config.working_dir, "User": config.user, "Entrypoint": config.entrypoint, "Cmd": config.cmd }}))
                .map_err(|e| Error::malformed("config", e.to_string()))?;
            let cfg_d = Digest::of(&cfg);
            self.put_blob(&cfg_d, &cfg)?;
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(MT_OCI_MANIFEST.to_owned()),
                config: Descriptor {
                    media_type: MT_OCI_CONFIG.to_owned(),
                    digest: cfg_d,
                    size: cfg.len() as u64,
                    platform: None,
                    annotations: Default::default(),
                },
                layers: vec![Descriptor {
                    media_type: media_type.to_owned(),
                    digest: d,
                    size,
                    platform: None,
                    annotations: Default::default(),
                }],
            };
            let mb = serde_json::to_vec(&manifest)
                .map_err(|e| Error::malformed("manifest", e.to_string()))?;
            let digest = Digest::of(&mb);
            self.put_blob(&digest, &mb)?;
            return self
                .finish(
                    Resolved {
                        name: key,
                        source,
                        digest,
                        manifest,
                        config,
                    },
                    opts,
                )
                .await;
        }
        if !meta.is_dir() {
            return Err(Error::InvalidPath(
                path.to_owned(),
                "not a directory or a tarball".into(),
            ));
        }
        // A directory: build straight from it (ownership and modes as on disk).
        let store = self.clone();
        let build = opts.build;
        let dir = path.to_owned();
        let p = opts.progress.clone();
        let (digest, out) = tokio::task::spawn_blocking(move || -> Result<(Digest, PathBuf)> {
            let out = tempfile::Builder::new()
                .prefix("build-")
                .tempdir_in(store.tmp_dir())
                .ctx(|| "create build directory".to_owned())?;
            emit(
                p.as_ref(),
                Progress::Building {
                    fs_type: build.fs_type,
                },
            );
            let fs_path = out.path().join(build.fs_type.file_name());
            let bytes = dir_size(&dir);
            build_filesystem(&dir, &fs_path, build, count_entries(&dir), bytes)?;
            let (d, _) = crate::digest::digest_file(&fs_path)?;
            Ok((d, out.keep()))
        })
        .await
        .map_err(|e| Error::io("build task", std::io::Error::other(e.to_string())))??;
        let manifest = Manifest {
            schema_version: 2,
            media_type: None,
            config: Descriptor {
                media_type: String::new(),
                digest: digest.clone(),
                size: 0,
                platform: None,
                annotations: Default::default(),
            },
            layers: Vec::new(),
        };
        let r = Resolved {
            name: key.clone(),
            source,
            digest: digest.clone(),
            manifest,
            config,
        };
        self.write_record(&out, &r, opts.build, count_entries(path))?;
        let compression = opts.build.squashfs_compression();
        self.commit_built(&out, &digest, compression)?;
        self.set_ref(&key, &digest)?;
        emit(
            opts.progress.as_ref(),
            Progress::Done {
                digest: digest.clone(),
                cached: false,
            },
        );
        self.load_built(&key, &digest, compression)?
            .ok_or_else(|| Error::NotFound(key, " after importing it"))
    }
}

fn download_failed(what: &str) -> Error {
    Error::io(
        format!("unpack {what}"),
        std::io::Error::other("its download failed"),
    )
}

/// Where the build reads a layer from.
pub(crate) enum LayerInput {
    /// The verified blob in the store.
    Stored,
    /// The bytes as they are downloaded (see [`Feed`]).
    Stream(tokio::sync::mpsc::Receiver<Feed>),
}

/// Reads a download as it arrives. Ends at [`Feed::End`] (all bytes, verified); a restart or
/// a download that stops without it marks the stream `cut`: the stored blob is read instead.
struct FeedReader {
    rx: tokio::sync::mpsc::Receiver<Feed>,
    cur: bytes::Bytes,
    ended: bool,
    cut: Arc<AtomicBool>,
}

impl Read for FeedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Feed::Data(b)) => self.cur = b,
                Some(Feed::End) => self.ended = true,
                Some(Feed::Restart) | None => {
                    self.cut.store(true, Ordering::SeqCst);
                    return Err(std::io::Error::other("the download started over"));
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// Whether every download of a pull succeeded, for builds that wait on them.
#[derive(Debug, Default)]
pub(crate) struct DoneSignal {
    state: Mutex<Option<bool>>,
    cv: Condvar,
}

impl DoneSignal {
    fn done() -> Self {
        Self {
            state: Mutex::new(Some(true)),
            cv: Condvar::new(),
        }
    }

    fn set(&self, ok: bool) {
        let mut g = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if g.is_none() {
            *g = Some(ok);
        }
        self.cv.notify_all();
    }

    /// Block until the downloads are over; whether they all succeeded.
    fn wait(&self) -> bool {
        let mut g = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(ok) = *g {
                return ok;
            }
            g = self.cv.wait(g).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Reports failure if the pull ends (error, cancellation) before saying otherwise.
struct DoneGuard(Arc<DoneSignal>);

impl DoneGuard {
    fn set(&self, ok: bool) {
        self.0.set(ok);
    }
}

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

fn count_entries(p: &Path) -> u64 {
    fs::read_dir(p).map_or(0, |rd| {
        rd.flatten()
            .map(|e| {
                1 + if e.file_type().is_ok_and(|t| t.is_dir()) {
                    count_entries(&e.path())
                } else {
                    0
                }
            })
            .sum()
    })
}

/// What `image import` was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImportFormat {
    /// A directory holding a root filesystem.
    RootfsDir,
    /// A tarball (plain, gzip or zstd) of a root filesystem.
    RootfsTar,
    /// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/`).
    OciLayout,
    /// A plain tar of an OCI image layout.
    OciArchive,
    /// A plain `docker save` archive (`manifest.json` at the top; newer Docker adds an OCI
    /// layout beside it).
    DockerArchive,
    /// One of the two archives above, compressed.
    CompressedImageArchive,
}

impl ImportFormat {
    /// Decide by the top-level names, the way `docker load` does: `manifest.json` makes a
    /// `docker save` archive, `oci-layout` an OCI layout; anything else is a root filesystem.
    fn detect(path: &Path) -> Result<Self> {
        let meta = fs::metadata(path).ctx(|| format!("stat {}", path.display()))?;
        if meta.is_dir() {
            return Ok(if path.join("oci-layout").is_file() {
                Self::OciLayout
            } else {
                Self::RootfsDir
            });
        }
        if !meta.is_file() {
            return Err(Error::InvalidPath(
                path.to_owned(),
                "not a directory or a tarball".into(),
            ));
        }
        let mut f = fs::File::open(path).ctx(|| format!("open {}", path.display()))?;
        let mut head = [0u8; 4];
        let n = f
            .read(&mut head)
            .ctx(|| format!("read {}", path.display()))?;
        let compression = LayerCompression::sniff(&head[..n]);
        let f = fs::File::open(path).ctx(|| format!("open {}", path.display()))?;
        let what = path.display().to_string();
        let reader = crate::merge::decompress(std::io::BufReader::new(f), compression, &what)?;
        let mut archive = tar::Archive::new(reader);
        let (mut docker, mut oci) = (false, false);
        let entries = archive
            .entries()
            .map_err(|e| Error::malformed(what.clone(), e.to_string()))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::malformed(what.clone(), e.to_string()))?;
            let name = entry.path_bytes();
            let name = name.strip_prefix(b"./").unwrap_or(&name);
            docker |= name == b"manifest.json";
            oci |= name == b"oci-layout";
        }
        Ok(match (docker || oci, compression) {
            (false, _) => Self::RootfsTar,
            (true, LayerCompression::None) if docker => Self::DockerArchive,
            (true, LayerCompression::None) => Self::OciArchive,
            (true, _) => Self::CompressedImageArchive,
        })
    }
}

fn abs(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).ctx(|| format!("resolve {}", p.display()))
}

/// Unpack a (trusted-format, untrusted-content) archive of an image layout into `dest`.
/// Only regular files and directories are extracted; `..` and absolute paths are rejected.
fn extract_archive(
    path: &Path,
    dest: &Path,
) -> Result<std::collections::HashMap<PathBuf, PathBuf>> {
    let mut links = std::collections::HashMap::new();
    let f = fs::File::open(path).ctx(|| format!("open {}", path.display()))?;
    let mut a = tar::Archive::new(std::io::BufReader::new(f));
    for e in a
        .entries()
        .map_err(|e| Error::malformed(path.display().to_string(), e.to_string()))?
    {
        let mut e = e.map_err(|e| Error::malformed(path.display().to_string(), e.to_string()))?;
        let rel = e
            .path()
            .map_err(|e| Error::malformed(path.display().to_string(), e.to_string()))?
            .into_owned();
        let mut out = dest.to_path_buf();
        for c in rel.components() {
            match c {
                std::path::Component::Normal(n) => out.push(n),
                std::path::Component::CurDir => {}
                _ => {
                    return Err(Error::UnsafeEntry {
                        layer: path.display().to_string(),
                        path: rel.display().to_string(),
                        reason: "absolute or `..` path".into(),
                    });
                }
            }
        }
        match e.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&out).ctx(|| format!("create {}", out.display()))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = out.parent() {
                    fs::create_dir_all(parent).ctx(|| format!("create {}", parent.display()))?;
                }
                let mut w = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&out)
                    .ctx(|| format!("create {}", out.display()))?;
                std::io::copy(&mut e, &mut w).ctx(|| format!("extract {}", out.display()))?;
                w.flush().ctx(|| format!("write {}", out.display()))?;
            }
            // Older `docker save` archives link duplicate layers with symlinks: never created
            // on disk (nothing may be written through them), only remembered.
            tar::EntryType::Symlink => {
                if let Some(t) = e.link_name().ok().flatten() {
                    links.insert(
                        out.strip_prefix(dest)
                            .map(Path::to_path_buf)
                            .unwrap_or_default(),
                        t.into_owned(),
                    );
                }
            }
            _ => {}
        }
    }
    Ok(links)
}
