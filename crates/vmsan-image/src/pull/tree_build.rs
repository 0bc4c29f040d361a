//! The squashfs build: every layer unpacked and indexed on its own thread (from its download
//! as it arrives, or from the blob store), merged in memory, written as squashfs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Resolved;
use super::feed::{DoneSignal, FeedReader, LayerInput, download_failed};
use crate::build::BuildOptions;
use crate::compression::Codec;
use crate::error::{Error, IoContext, Result};
use crate::layer::Limits;
use crate::manifest::{Descriptor, LayerCompression};
use crate::progress::{Progress, ProgressFn, emit};
use crate::store::{ImageStore, rootfs_file_name};
use crate::tree::{Budget, LayerIndex, Shared, Tree, index_layer};

/// What the unpacking threads of one build share.
struct Unpack<'a> {
    limits: &'a Limits,
    shared: &'a Shared,
    budget: &'a Budget,
    done: &'a DoneSignal,
    codec: Codec,
}

impl ImageStore {
    /// Unpack every layer on its own thread (from its download as it arrives, or from the
    /// blob store), merge them in memory, and write the squashfs image from the tree.
    pub(super) fn build_squashfs(
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
        let fs_path = out.path().join(rootfs_file_name(build.fs_type));
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
}
