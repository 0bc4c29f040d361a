//! Extracting an image archive (`oci-archive:`, `docker-archive:`, imported archives) safely.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Unpack a (trusted-format, untrusted-content) archive of an image layout into `dest`.
/// Only regular files and directories are extracted; `..` and absolute paths are rejected.
pub(super) fn extract_archive(
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
