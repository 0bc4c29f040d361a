//! The build of one image (on a blocking thread): squashfs goes to [`super::tree_build`];
//! ext4 merges the layers on disk in a staging directory, then runs the filesystem build.

use std::fs;

use super::Resolved;
use super::feed::{DoneSignal, LayerInput, download_failed};
use crate::build::{BuildOptions, build_filesystem};
use crate::error::{Error, IoContext, Result};
use crate::layer::Limits;
use crate::manifest::LayerCompression;
use crate::merge::Staging;
use crate::progress::{Progress, ProgressFn, emit};
use crate::store::{FsType, ImageStore, rootfs_file_name};

impl ImageStore {
    pub(super) fn build_blocking(
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
        let fs_path = out.path().join(rootfs_file_name(build.fs_type));
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
}
