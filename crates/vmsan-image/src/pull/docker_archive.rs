//! Source: an extracted `docker save` archive (`docker-archive:`), turned into an OCI manifest.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Resolved;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::manifest::{
    Descriptor, LayerCompression, MT_OCI_CONFIG, MT_OCI_LAYER_TAR, MT_OCI_MANIFEST, Manifest,
    parse_config,
};
use crate::store::ImageStore;

impl ImageStore {
    pub(super) fn resolve_docker_archive(
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
}
