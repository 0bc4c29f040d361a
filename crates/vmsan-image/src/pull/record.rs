//! The record of a build: `image.json` and `config.json` beside the filesystem image.

use std::fs;
use std::path::Path;

use super::Resolved;
use crate::build::BuildOptions;
use crate::error::{Error, IoContext, Result};
use crate::store::{ImageRecord, ImageStore, now_secs, rootfs_file_name};

impl ImageStore {
    pub(super) fn set_timings(&self, dir: &Path, merge_ms: u64, build_ms: u64) -> Result<()> {
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

    pub(super) fn write_record(
        &self,
        dir: &Path,
        r: &Resolved,
        build: BuildOptions,
        entries: u64,
    ) -> Result<()> {
        let fs_path = dir.join(rootfs_file_name(build.fs_type));
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
}
