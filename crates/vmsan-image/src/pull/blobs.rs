//! Writing into the content-addressed blob store: verified bytes, and files copied in while
//! they are hashed.

use std::fs;
use std::path::Path;

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::store::ImageStore;

impl ImageStore {
    pub(crate) fn put_blob(&self, d: &Digest, bytes: &[u8]) -> Result<()> {
        d.verify("blob", bytes)?;
        let p = self.blob_path(d);
        if p.is_file() {
            return Ok(());
        }
        crate::store::write_atomic(&p, bytes)
    }

    /// Copy a file into the blob store, hashing it; returns its digest and size.
    pub(super) fn ingest_file(
        &self,
        path: &Path,
        expect: Option<&Digest>,
    ) -> Result<(Digest, u64)> {
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
}
