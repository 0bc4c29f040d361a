//! A snapshot's directory: its files, how they are checked, listed, published and deleted.
//!
//! `<home>/snapshots/<id>/` holds `metadata.json`, the agent token, Firecracker's VM state and
//! memory, a copy of the VM's disk and config drive, and a hard link to the image's root
//! filesystem (so removing the image never breaks the snapshot). A snapshot appears under its
//! id only when complete: it is assembled in a `.tmp-…` directory and renamed into place.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::meta::{FileInfo, SnapshotMeta};
use crate::error::{Error, ErrorCode, Result};
use crate::ids::SnapshotId;
use crate::paths::Paths;

pub use super::layout::{CONFIG, DATA_FILES, DIGESTED, DISK, MEMORY, META, ROOTFS, TOKEN, VMSTATE};

const STAGING_PREFIX: &str = ".tmp-";

/// An existing, checked snapshot.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Its metadata.
    pub meta: SnapshotMeta,
    dir: PathBuf,
}

impl Snapshot {
    /// Open snapshot `id` and check it: metadata, every file present with its recorded size,
    /// and the small files' digests.
    pub fn open(paths: &Paths, id: &SnapshotId) -> Result<Self> {
        Self::open_checking(paths, id, Digests::Check)
    }

    /// Open snapshot `id` that the command restoring it has just opened with [`Self::open`]:
    /// metadata and file sizes are checked again, the digests (milliseconds) are not.
    pub(crate) fn reopen(paths: &Paths, id: &SnapshotId) -> Result<Self> {
        Self::open_checking(paths, id, Digests::Skip)
    }

    fn open_checking(paths: &Paths, id: &SnapshotId, digests: Digests) -> Result<Self> {
        let dir = paths.snapshot_dir(id);
        let text = match fs::read(dir.join(META)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(not_found(id));
            }
            Err(e) => return Err(Error::io(format!("read {}", dir.join(META).display()), e)),
        };
        let meta: SnapshotMeta = serde_json::from_slice(&text)
            .map_err(|e| corrupt(id, format!("{META} is not valid: {e}")))?;
        super::trust::check(&meta, id)?;
        check_files(&dir, &meta, digests)?;
        Ok(Self { meta, dir })
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One of its files.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The source VM's agent token.
    pub fn agent_token(&self) -> Result<String> {
        let t = fs::read_to_string(self.file(TOKEN))
            .map_err(|e| Error::io(format!("read {}", self.file(TOKEN).display()), e))?;
        Ok(t.trim().to_owned())
    }
}

/// Whether [`check_files`] compares the small files with their digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Digests {
    Check,
    Skip,
}

/// Every file of `meta` is in `dir`, a regular file of the recorded size, and (unless told to
/// skip that) the small ones match their digests.
pub(crate) fn check_files(dir: &Path, meta: &SnapshotMeta, digests: Digests) -> Result<()> {
    let id = &meta.id;
    for (name, info) in &meta.files {
        let path = dir.join(name);
        let md = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(corrupt(id, format!("{name} is missing")));
            }
            Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
        };
        if !md.is_file() {
            return Err(corrupt(id, format!("{name} is not a regular file")));
        }
        if md.len() != info.size {
            return Err(corrupt(
                id,
                format!(
                    "{name} has {} bytes, {} were recorded (truncated or replaced)",
                    md.len(),
                    info.size
                ),
            ));
        }
        if let Some(want) = &info.sha256
            && digests == Digests::Check
            && &sha256_file(&path)? != want
        {
            return Err(corrupt(id, format!("{name} does not match its digest")));
        }
    }
    Ok(())
}

pub(crate) fn not_found(id: &SnapshotId) -> Error {
    Error::new(
        ErrorCode::VmSnapshotNotFound,
        format!("Snapshot not found: {id}"),
    )
    .detail("snapshotId", id.as_str())
}

pub(crate) fn corrupt(id: &SnapshotId, why: String) -> Error {
    Error::new(
        ErrorCode::VmSnapshotCorrupt,
        format!("Snapshot {id} is damaged: {why}"),
    )
    .fix(format!(
        "Delete it with `vmsan snapshot delete {id}` and take a new one (or import it again)."
    ))
    .detail("snapshotId", id.as_str())
}

/// sha256 of a file, hex.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// A snapshot as `snapshot list` shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its metadata.
    pub meta: SnapshotMeta,
    /// Disk space its own files take (allocated blocks; the image's root filesystem, which it
    /// shares with the image store, is not counted).
    pub size_bytes: u64,
}

/// What `list` found.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Complete snapshots, newest first.
    pub snapshots: Vec<Listed>,
    /// Directories that could not be read: name and why.
    pub unreadable: Vec<(String, String)>,
}

/// Every complete snapshot, newest first, and the directories that could not be read.
pub fn list(paths: &Paths) -> Result<Listing> {
    let dir = paths.snapshots_dir();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Listing::default()),
        Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
    };
    let mut found = Vec::new();
    let mut broken = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let Ok(id) = SnapshotId::parse(&name) else {
            continue;
        };
        let path = entry.path();
        let meta = fs::read(path.join(META))
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_slice::<SnapshotMeta>(&t).map_err(|e| e.to_string()));
        match meta {
            Ok(meta) if meta.id == id => {
                let size_bytes = DATA_FILES
                    .iter()
                    .filter(|n| **n != ROOTFS)
                    .filter_map(|n| fs::symlink_metadata(path.join(n)).ok())
                    .map(|m| m.blocks() * 512)
                    .sum();
                found.push(Listed { meta, size_bytes });
            }
            Ok(_) => broken.push((name, "metadata names another snapshot".into())),
            Err(e) => broken.push((name, e)),
        }
    }
    found.sort_by(|a, b| {
        b.meta
            .created_at
            .cmp(&a.meta.created_at)
            .then_with(|| b.meta.id.cmp(&a.meta.id))
    });
    Ok(Listing {
        snapshots: found,
        unreadable: broken,
    })
}

/// Delete a snapshot. Clones restored from it keep running: they hold their own links to
/// its memory and state.
pub fn delete(paths: &Paths, id: &SnapshotId) -> Result<()> {
    let dir = paths.snapshot_dir(id);
    if fs::symlink_metadata(&dir).is_err() {
        return Err(not_found(id));
    }
    // Out of sight first (one rename), then removed: no half-deleted snapshot is ever listed.
    let trash = paths.snapshots_dir().join(format!(
        "{STAGING_PREFIX}{id}-{}-deleted",
        std::process::id()
    ));
    fs::rename(&dir, &trash).map_err(|e| Error::io(format!("delete {}", dir.display()), e))?;
    fs::remove_dir_all(&trash).map_err(|e| Error::io(format!("remove {}", trash.display()), e))
}

/// A snapshot being assembled; removed on drop unless published.
#[derive(Debug)]
pub(crate) struct Staging {
    dir: PathBuf,
    published: bool,
}

impl Staging {
    /// A fresh staging directory for `id` (and remove what crashed runs left behind).
    pub(crate) fn new(paths: &Paths, id: &SnapshotId) -> Result<Self> {
        let root = paths.snapshots_dir();
        ensure_snapshots_dir(&root)?;
        sweep_stale(&root);
        let dir = root.join(format!("{STAGING_PREFIX}{id}-{}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        Ok(Self {
            dir,
            published: false,
        })
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The directory's name (under the snapshots directory).
    pub(crate) fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Record sizes (and digests of the small files) of everything staged.
    pub(crate) fn file_infos(&self) -> Result<std::collections::BTreeMap<String, FileInfo>> {
        let mut files = std::collections::BTreeMap::new();
        for name in DATA_FILES {
            let path = self.path(name);
            let md = fs::metadata(&path)
                .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
            let sha256 = if DIGESTED.contains(name) {
                Some(sha256_file(&path)?)
            } else {
                None
            };
            files.insert(
                (*name).to_owned(),
                FileInfo {
                    size: md.len(),
                    sha256,
                },
            );
        }
        Ok(files)
    }

    /// Check what was staged against `meta` (sizes, and the small files' digests): for files
    /// that came from elsewhere (an archive), not ones `file_infos` just described.
    pub(crate) fn check(&self, meta: &SnapshotMeta) -> Result<()> {
        check_files(&self.dir, meta, Digests::Check)
    }

    /// Write the metadata and the token, fix modes, fsync, and rename into place. Fails with
    /// `ERR_VM_SNAPSHOT_EXISTS` if a snapshot with this id exists.
    pub(crate) fn publish(
        mut self,
        paths: &Paths,
        meta: &SnapshotMeta,
        token: &str,
    ) -> Result<PathBuf> {
        super::trust::check(meta, &meta.id)?;
        write_file(&self.path(TOKEN), token.as_bytes(), 0o600)?;
        let doc = serde_json::to_vec_pretty(meta)
            .map_err(|e| Error::new(ErrorCode::Internal, format!("encode metadata: {e}")))?;
        write_file(&self.path(META), &doc, 0o640)?;
        for name in [VMSTATE, MEMORY] {
            // Hard-linked into every clone's jail, read by its unprivileged Firecracker; the
            // directories above are root's, so only those jails can reach them.
            set_mode(&self.path(name), 0o444)?;
        }
        for name in [DISK, CONFIG] {
            set_mode(&self.path(name), 0o400)?;
        }
        // Usually a link to the image store's file (readable already, left alone); a copy
        // (imported, or across filesystems) is made readable like it.
        let rootfs = self.path(ROOTFS);
        let mode = fs::metadata(&rootfs)
            .map_err(|e| Error::io(format!("stat {}", rootfs.display()), e))?
            .permissions()
            .mode();
        if mode & 0o004 == 0 {
            set_mode(&rootfs, 0o444)?;
        }
        for name in DATA_FILES {
            File::open(self.path(name))
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(format!("fsync {name}"), e))?;
        }
        let group = crate::state::vmsan_gid();
        if let Some(gid) = group {
            std::os::unix::fs::chown(&self.dir, None, Some(gid))
                .map_err(|e| Error::io(format!("chown {}", self.dir.display()), e))?;
            std::os::unix::fs::chown(self.path(META), None, Some(gid))
                .map_err(|e| Error::io(format!("chown {META}"), e))?;
        }
        set_mode(&self.dir, if group.is_some() { 0o2750 } else { 0o700 })?;
        let dest = paths.snapshot_dir(&meta.id);
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &self.dir,
            nix::fcntl::AT_FDCWD,
            &dest,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|e| {
            if e == nix::errno::Errno::EEXIST {
                Error::new(
                    ErrorCode::VmSnapshotExists,
                    format!("Snapshot {} already exists", meta.id),
                )
                .detail("snapshotId", meta.id.as_str())
            } else {
                Error::io(format!("publish {}", dest.display()), e.into())
            }
        })?;
        File::open(paths.snapshots_dir())
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync the snapshots directory", e))?;
        self.published = true;
        Ok(dest)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// chmod without following a symlink (a file a jailed Firecracker wrote could have been one).
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

fn ensure_snapshots_dir(root: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => {
            if let Some(gid) = crate::state::vmsan_gid() {
                std::os::unix::fs::chown(root, None, Some(gid))
                    .map_err(|e| Error::io(format!("chown {}", root.display()), e))?;
                set_mode(root, 0o2750)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(format!("create {}", root.display()), e)),
    }
}

/// Remove the staging directory `name` of a `snapshot create` that died (its name as
/// recorded in the VM's state; anything that is not a staging directory's name is left
/// alone). A symlink in its place is removed, never followed.
pub(crate) fn remove_staging(paths: &Paths, name: &str) {
    if !name.starts_with(STAGING_PREFIX) || name.contains('/') {
        return;
    }
    let _ = fs::remove_dir_all(paths.snapshots_dir().join(name));
}

/// Remove staging directories whose process is gone (a killed `snapshot create`/`import`).
fn sweep_stale(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(STAGING_PREFIX) else {
            continue;
        };
        let pid = rest
            .trim_end_matches("-deleted")
            .rsplit('-')
            .next()
            .and_then(|p| p.parse::<i32>().ok());
        let alive = pid.is_some_and(|p| {
            p > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok()
        });
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Copy `src` to the new file `dest`: a reflink where the filesystem can, else a sparse copy.
pub(crate) fn clone_file(src: &Path, dest: &Path) -> Result<()> {
    vmsan_image::create_overlay_disk(src, dest)
        .map(|_| ())
        .map_err(Error::from)
}

/// Write every data extent of `diff` (a sparse diff memory file: only the pages dirtied since
/// the previous snapshot hold data) at the same offset in `base`.
pub(crate) fn apply_diff(diff: &Path, base: &Path) -> Result<()> {
    let src = File::open(diff).map_err(|e| Error::io(format!("open {}", diff.display()), e))?;
    let out = fs::OpenOptions::new()
        .write(true)
        .open(base)
        .map_err(|e| Error::io(format!("open {}", base.display()), e))?;
    let len = src
        .metadata()
        .map_err(|e| Error::io("stat the diff", e))?
        .len();
    vmsan_image::copy_data_extents(&src, &out, len).map_err(Error::from)?;
    out.sync_all()
        .map_err(|e| Error::io("fsync the merged memory", e))
}

/// Hard-link `src` as `dest`, or copy it when they are on different filesystems.
pub(crate) fn link_or_copy(src: &Path, dest: &Path) -> Result<()> {
    match fs::hard_link(src, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => clone_file(src, dest),
        Err(e) => Err(Error::io(
            format!("link {} to {}", src.display(), dest.display()),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn a_diff_overwrites_only_its_dirty_pages() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        let diff = dir.path().join("diff");
        fs::write(&base, vec![b'a'; 64 << 10]).unwrap();
        let mut d = File::create(&diff).unwrap();
        d.set_len(64 << 10).unwrap();
        d.seek(SeekFrom::Start(16 << 10)).unwrap();
        d.write_all(&[b'b'; 4096]).unwrap();
        d.seek(SeekFrom::Start(60 << 10)).unwrap();
        d.write_all(&[b'c'; 4096]).unwrap();
        drop(d);
        apply_diff(&diff, &base).unwrap();
        let merged = fs::read(&base).unwrap();
        assert_eq!(merged.len(), 64 << 10);
        assert!(merged[..16 << 10].iter().all(|b| *b == b'a'));
        assert!(merged[16 << 10..20 << 10].iter().all(|b| *b == b'b'));
        assert!(merged[20 << 10..60 << 10].iter().all(|b| *b == b'a'));
        assert!(merged[60 << 10..].iter().all(|b| *b == b'c'));
    }
}
