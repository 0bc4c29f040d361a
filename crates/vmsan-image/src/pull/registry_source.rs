//! Source: a registry. Resolve a reference to one image manifest (platform selection from an
//! index) and its config; the layers are left to [`super::download`].

use super::{PullOptions, Resolved};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{ManifestDoc, Platform, parse_config, parse_manifest, select_platform};
use crate::progress::{Progress, emit};
use crate::reference::Reference;
use crate::registry::{RegistryClient, default_docker_config, docker_credentials};
use crate::store::ImageStore;

/// What is left to fetch of a resolved registry image: its client, and the manifest
/// documents and config to store once the layers are in.
pub(super) type Fetch = (RegistryClient, Vec<(Digest, Vec<u8>)>);

impl ImageStore {
    pub(super) async fn resolve_registry(
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
}
