//! Per-VM disks: the overlay disk (a reflink or sparse copy of a prepared empty ext4
//! template, never a fresh mkfs per VM).

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{Whence, lseek};

use crate::error::{Error, IoContext, Result};
use crate::store::ImageStore;

/// How a disk was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneMethod {
    /// FICLONE: shares extents with the template (btrfs, XFS with reflink).
    Reflink,
    /// Only the template's data extents copied; holes stay holes.
    SparseCopy,
}

/// Smallest overlay disk.
pub const MIN_OVERLAY_BYTES: u64 = 64 << 20;

impl ImageStore {
    /// The empty ext4 template of `size` bytes (`upper/` and `work/` already made, root-owned),
    /// built once with `mkfs.ext4` and kept in `<home>/images/templates/`.
    ///
    /// # Errors
    /// Size out of range, mkfs failure.
    pub fn overlay_template(&self, size: u64) -> Result<PathBuf> {
        if !(MIN_OVERLAY_BYTES..=(16 << 40)).contains(&size) || !size.is_multiple_of(1 << 20) {
            return Err(Error::InvalidPath(
                PathBuf::from(size.to_string()),
                "disk size must be a whole number of MiB between 64 MiB and 16 TiB".into(),
            ));
        }
        let dir = self.dir().join("templates");
        fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        let path = dir.join(format!("overlay-{}m.ext4", size >> 20));
        if path.is_file() {
            return Ok(path);
        }
        let _l = self.lock()?;
        if path.is_file() {
            return Ok(path);
        }
        let tree = tempfile::Builder::new()
            .prefix("overlay-tree-")
            .tempdir_in(self.tmp_dir())
            .ctx(|| "create temp dir".to_owned())?;
        for d in ["upper", "work"] {
            fs::create_dir(tree.path().join(d)).ctx(|| format!("create {d}"))?;
        }
        let tmp = tempfile::Builder::new()
            .prefix(".overlay-")
            .tempfile_in(&dir)
            .ctx(|| "create temp file".to_owned())?;
        tmp.as_file()
            .set_len(size)
            .ctx(|| "size overlay template".to_owned())?;
        let out = Command::new("mkfs.ext4")
            .args([
                "-F",
                "-q",
                "-L",
                "overlay",
                "-m",
                "0",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
                "-d",
            ])
            .arg(tree.path())
            .arg(tmp.path())
            .output()
            .map_err(|e| Error::Command {
                program: "mkfs.ext4".into(),
                detail: format!("{e} (install the e2fsprogs package)"),
            })?;
        if !out.status.success() {
            return Err(Error::Command {
                program: "mkfs.ext4".into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        tmp.persist(&path)
            .map_err(|e| Error::io(format!("rename into {}", path.display()), e.error))?;
        Ok(path)
    }
}

/// Create `dest` (which must not exist) as a copy of `template`: reflink when possible, else a
/// sparse copy of the data extents only.
///
/// # Errors
/// `dest` exists, I/O.
pub fn create_overlay_disk(template: &Path, dest: &Path) -> Result<CloneMethod> {
    let src = File::open(template).ctx(|| format!("open {}", template.display()))?;
    let len = src
        .metadata()
        .ctx(|| format!("stat {}", template.display()))?
        .len();
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .ctx(|| format!("create {}", dest.display()))?;
    let res = (|| -> Result<CloneMethod> {
        if crate::sys::ficlone(out.as_fd(), src.as_fd()).is_ok() {
            return Ok(CloneMethod::Reflink);
        }
        copy_data_extents(&src, &out, len)?;
        out.set_len(len)
            .ctx(|| format!("size {}", dest.display()))?;
        Ok(CloneMethod::SparseCopy)
    })();
    if res.is_err() {
        let _ = fs::remove_file(dest);
    }
    res
}

/// Copy every data extent of `src` (its first `len` bytes) to the same offset in `out`, skipping
/// holes: a sparse copy into a new file, or a diff laid over an existing one.
///
/// # Errors
/// I/O.
pub fn copy_data_extents(src: &File, out: &File, len: u64) -> Result<()> {
    let len = i64::try_from(len)
        .map_err(|_| Error::io("template size", std::io::Error::other("too large")))?;
    let mut pos: i64 = 0;
    while pos < len {
        let data = match lseek(src.as_fd(), pos, Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(Error::io("seek data", e.into())),
        };
        let hole = lseek(src.as_fd(), data, Whence::SeekHole)
            .map_err(|e| Error::io("seek hole", e.into()))?;
        let mut off_in = data;
        let mut off_out = data;
        while off_in < hole {
            let n = usize::try_from(hole - off_in)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            let copied = nix::fcntl::copy_file_range(
                src.as_fd(),
                Some(&mut off_in),
                out.as_fd(),
                Some(&mut off_out),
                n,
            )
            .map_err(|e| Error::io("copy an extent", e.into()))?;
            if copied == 0 {
                break;
            }
        }
        pos = hole;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn sparse_copy_keeps_holes_and_data() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("s");
        {
            let mut f = File::create(&src).unwrap();
            f.set_len(64 << 20).unwrap();
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::Start(1 << 20)).unwrap();
            f.write_all(&[7u8; 8192]).unwrap();
            f.seek(SeekFrom::Start(40 << 20)).unwrap();
            f.write_all(b"tail").unwrap();
        }
        let dst = t.path().join("d");
        create_overlay_disk(&src, &dst).unwrap();
        assert_eq!(fs::read(&src).unwrap(), fs::read(&dst).unwrap());
        use std::os::unix::fs::MetadataExt;
        assert!(
            fs::metadata(&dst).unwrap().blocks() * 512 < 1 << 20,
            "copy is sparse"
        );
        assert!(create_overlay_disk(&src, &dst).is_err(), "never overwrites");
    }
}
