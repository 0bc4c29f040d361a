//! Building the read-only filesystem from a directory tree, without mounting anything: ext4
//! images with `mkfs.ext4 -d` from a staging directory, and squashfs images of imported
//! directories with `mksquashfs` (extended attributes kept, the [`Compression`] asked for).
//! Squashfs images of layered images are written by the crate's own squashfs writer from the
//! in-memory merge instead.

use std::path::Path;
use std::process::Command;

use crate::compression::{Codec, Compression};
use crate::error::{Error, IoContext, Result};
use crate::store::FsType;

/// Where the merged tree is staged before an ext4 filesystem is built from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StagingArea {
    /// `/dev/shm` when it is a tmpfs with room to spare, else the store's `tmp/` (default):
    /// creating tens of thousands of files in memory is far faster than on disk.
    #[default]
    Auto,
    /// Always the store's `tmp/` directory.
    Store,
}

/// Options of the filesystem build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    /// Filesystem type.
    pub fs_type: FsType,
    /// Compression of squashfs images (a setting of the whole image store: `vmsan setup
    /// --image-compression`). Images of one manifest built with different compressions are
    /// different built images.
    pub compression: Compression,
    /// zstd level for squashfs (1..=22). The default, 1, keeps compression off the critical
    /// path of a pull (level 3 costs about half as much time again for 3% smaller images).
    pub zstd_level: u8,
    /// Staging area of the merged tree (ext4 builds; squashfs builds merge in memory).
    pub staging: StagingArea,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            fs_type: FsType::Squashfs,
            compression: Compression::default(),
            zstd_level: 1,
            staging: StagingArea::Auto,
        }
    }
}

impl BuildOptions {
    /// The compression the image will have: `None` for ext4, which has none.
    pub fn squashfs_compression(&self) -> Option<Compression> {
        (self.fs_type == FsType::Squashfs).then_some(self.compression)
    }

    /// The squashfs blocks' codec.
    pub(crate) fn codec(&self) -> Codec {
        Codec {
            compression: self.compression,
            level: i32::from(self.zstd_level.clamp(1, 22)),
        }
    }
}

/// A tmpfs directory to stage in, when `needed` bytes fit with a wide margin.
pub(crate) fn tmpfs_staging(needed: u64) -> Option<std::path::PathBuf> {
    let shm = Path::new("/dev/shm");
    let st = nix::sys::statfs::statfs(shm).ok()?;
    if st.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        return None;
    }
    let vst = nix::sys::statvfs::statvfs(shm).ok()?;
    let free = vst.blocks_available().saturating_mul(vst.fragment_size());
    (free / 2 > needed).then(|| shm.to_path_buf())
}

fn run(mut cmd: Command, program: &str, hint: &str) -> Result<()> {
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Command {
                program: program.to_owned(),
                detail: format!("not installed ({hint})"),
            }
        } else {
            Error::io(format!("run {program}"), e)
        }
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = stderr
        .chars()
        .rev()
        .take(600)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(Error::Command {
        program: program.to_owned(),
        detail: format!("{}: {}", out.status, tail.trim()),
    })
}

/// Build `out` from the tree at `staging`. `entries` and `bytes` size the ext4 image.
///
/// # Errors
/// [`Error::Command`] when the tool is missing or fails.
pub fn build_filesystem(
    staging: &Path,
    out: &Path,
    opts: BuildOptions,
    entries: u64,
    bytes: u64,
) -> Result<()> {
    match opts.fs_type {
        FsType::Squashfs => {
            let mut c = Command::new("mksquashfs");
            c.arg(staging)
                .arg(out)
                .args(["-noappend", "-quiet", "-no-progress", "-xattrs"])
                .args(opts.compression.mksquashfs_args(opts.zstd_level));
            run(c, "mksquashfs", "install the squashfs-tools package")
        }
        FsType::Ext4 => {
            // Room for the data, the inode tables and the journal, with a margin.
            let inodes = entries.saturating_mul(2).max(1024);
            let size = bytes
                .saturating_add(bytes / 5)
                .saturating_add(inodes.saturating_mul(512))
                .saturating_add(64 << 20);
            let size = size.div_ceil(1 << 20) << 20;
            let f = std::fs::File::create(out).ctx(|| format!("create {}", out.display()))?;
            f.set_len(size).ctx(|| format!("size {}", out.display()))?;
            drop(f);
            let mut c = Command::new("mkfs.ext4");
            c.args(["-F", "-q", "-L", "rootfs", "-m", "0", "-N"])
                .arg(inodes.to_string())
                .args([
                    "-E",
                    "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1",
                    "-d",
                ])
                .arg(staging)
                .arg(out);
            run(c, "mkfs.ext4", "install the e2fsprogs package")
        }
    }
}
