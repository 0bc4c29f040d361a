//! `import`: a root filesystem (directory or tarball) or an image archive/layout on disk,
//! stored under a local name.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::archive::extract_archive;
use super::import_format::ImportFormat;
use super::{PullOptions, Resolved};
use crate::build::build_filesystem;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::manifest::{
    Descriptor, ImageConfig, LayerCompression, MT_OCI_CONFIG, MT_OCI_LAYER_TAR, MT_OCI_MANIFEST,
    Manifest, Platform,
};
use crate::progress::{Progress, emit};
use crate::reference::{LOCAL_DOMAIN, Reference};
use crate::store::{Image, ImageStore, dir_size, rootfs_file_name};

impl ImageStore {
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
            let fs_path = out.path().join(rootfs_file_name(build.fs_type));
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
