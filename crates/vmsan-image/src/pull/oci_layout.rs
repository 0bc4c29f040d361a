//! Source: an OCI image layout directory (`oci:`, and `oci-archive:` once extracted).

use std::fs;
use std::path::Path;

use super::{PullOptions, Resolved};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::manifest::{
    Descriptor, ManifestDoc, Platform, parse_config, parse_manifest, select_platform,
};
use crate::store::ImageStore;

impl ImageStore {
    pub(super) fn resolve_oci_dir(
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
}
