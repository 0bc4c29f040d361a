//! What `image import` was given, told apart by its top-level names.

use std::fs;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::manifest::LayerCompression;

/// What `image import` was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ImportFormat {
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
    pub(super) fn detect(path: &Path) -> Result<Self> {
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
