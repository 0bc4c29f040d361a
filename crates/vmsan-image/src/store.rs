//! The image store under the vmsan home.
//!
//! ```text
//! <home>/images/
//!   blobs/sha256/<hex>                 content-addressed blobs (manifests, configs, layers)
//!   tmp/                               partial downloads (<hex>.partial), staging trees
//!   built/<manifest hex>/rootfs.sqfs   the read-only filesystem (or rootfs.ext4)
//!   built/<manifest hex>/config.json   the image config (Env, WorkingDir, User, Entrypoint, Cmd)
//!   built/<manifest hex>/image.json    the record: source, layers, filesystem type, size
//!   built/<manifest hex>/last-used     its mtime is the last use
//!   built/<manifest hex>-lz4/…         the same manifest built as squashfs with LZ4 blocks
//!   refs.json                          name -> manifest digest, written atomically
//!   lock                               held (flock) while refs or built images change
//! ```
//!
//! A built image's identity is its manifest digest and its [`Compression`]: the zstd build
//! keeps the plain directory name (as before compressions could be chosen), every other one
//! a suffix, so switching `vmsan setup --image-compression` never reuses an image built with
//! the other compression, and switching back finds the first build again. Names point at a
//! manifest digest; each build of it goes when the last name does.
//!
//! Everything is created root-only (directories 0700 or 0755, files 0644) and every name that
//! becomes a path is a validated digest or a fixed word.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::compression::Compression;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::manifest::ImageConfig;

/// Default vmsan home.
pub const DEFAULT_HOME: &str = "/var/lib/vmsan";

/// The vmsan home: `VMSAN_HOME` or [`DEFAULT_HOME`].
pub fn home_from_env() -> PathBuf {
    std::env::var_os("VMSAN_HOME")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_HOME), PathBuf::from)
}

/// Filesystem type of a built image: the one type of this concept, from `vmsan-proto` (the
/// guest mounts the root with it).
pub use vmsan_proto::FsType;

/// File name of the filesystem of type `fs` inside a built image directory.
pub fn rootfs_file_name(fs: FsType) -> &'static str {
    match fs {
        FsType::Squashfs => "rootfs.sqfs",
        FsType::Ext4 => "rootfs.ext4",
    }
}

/// What `image.json` records about a built image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// Manifest digest (for imports: the digest of the import's synthetic manifest).
    pub digest: Digest,
    /// Where it came from (`docker.io/library/alpine:3.20`, `oci:/dir`, `import:/path`).
    pub source: String,
    /// Filesystem type.
    pub fs_type: FsType,
    /// Compression of a squashfs image (absent in records of older vmsan, whose squashfs
    /// images are all zstd; absent for ext4). See [`ImageRecord::squashfs_compression`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// Layer digests, base first.
    #[serde(default)]
    pub layers: Vec<Digest>,
    /// Config blob digest, if any.
    #[serde(default)]
    pub config_digest: Option<Digest>,
    /// Size of the filesystem file in bytes.
    pub size: u64,
    /// Entries in the merged tree.
    #[serde(default)]
    pub entries: u64,
    /// Build time, seconds since the epoch.
    pub built_at: u64,
    /// Time spent merging the layers, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_ms: Option<u64>,
    /// Time spent building the filesystem, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_ms: Option<u64>,
}

impl ImageRecord {
    /// The squashfs image's compression, `None` for ext4.
    pub fn squashfs_compression(&self) -> Option<Compression> {
        (self.fs_type == FsType::Squashfs).then(|| self.compression.unwrap_or_default())
    }
}

/// A usable image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// The name it was asked for (normalised), or the digest.
    pub name: String,
    /// The record.
    pub record: ImageRecord,
    /// Absolute path of the read-only filesystem.
    pub rootfs: PathBuf,
    /// The image config.
    pub config: ImageConfig,
}

/// One row of `vmsan image ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSummary {
    /// Names pointing at it.
    pub names: Vec<String>,
    /// Manifest digest.
    pub digest: Digest,
    /// Filesystem type.
    pub fs_type: FsType,
    /// Compression of a squashfs image.
    pub compression: Option<Compression>,
    /// Filesystem size in bytes.
    pub size: u64,
    /// Last use (seconds since the epoch).
    pub last_used: u64,
    /// Build time (seconds since the epoch).
    pub built_at: u64,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    /// Built images removed.
    pub images: Vec<Digest>,
    /// Blobs removed.
    pub blobs: usize,
    /// Bytes freed.
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Refs {
    pub(crate) version: u32,
    pub(crate) refs: BTreeMap<String, RefEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RefEntry {
    pub(crate) digest: Digest,
    pub(crate) updated_at: u64,
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Write `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync dir.
///
/// # Errors
/// I/O.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::InvalidPath(path.to_owned(), "no parent".into()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .ctx(|| format!("create temp file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .ctx(|| format!("write {}", path.display()))?;
    tmp.as_file()
        .sync_all()
        .ctx(|| format!("fsync {}", path.display()))?;
    let f = tmp.as_file();
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .ctx(|| format!("chmod {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| Error::io(format!("rename into {}", path.display()), e.error))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The image store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    home: PathBuf,
    dir: PathBuf,
}

fn mkdir(p: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(p)
        .ctx(|| format!("create directory {}", p.display()))
}

impl ImageStore {
    /// Open (creating it if needed) the store under `home`.
    ///
    /// # Errors
    /// I/O.
    pub fn open(home: &Path) -> Result<Self> {
        if !home.is_absolute() {
            return Err(Error::InvalidPath(
                home.to_owned(),
                "the vmsan home must be an absolute path".into(),
            ));
        }
        let dir = home.join("images");
        // Readable by the home's group and nobody else (see `modes`); homes made by an
        // older vmsan, with 0755 directories, are narrowed here.
        for d in [
            home.to_owned(),
            dir.clone(),
            dir.join("blobs"),
            dir.join("blobs").join("sha256"),
            dir.join("built"),
        ] {
            crate::modes::private_dir(&d)?;
        }
        mkdir(&dir.join("tmp"), 0o700)?;
        Ok(Self {
            home: home.to_owned(),
            dir,
        })
    }

    /// Open the store under [`home_from_env`].
    ///
    /// # Errors
    /// I/O.
    pub fn from_env() -> Result<Self> {
        Self::open(&home_from_env())
    }

    /// The vmsan home.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `<home>/images`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a blob.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(d.hex())
    }

    pub(crate) fn partial_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("tmp").join(format!("{}.partial", d.hex()))
    }

    /// Hold an exclusive lock for downloading blob `d` (in `<images>/locks/`, never in `tmp/`).
    pub(crate) async fn blob_lock(&self, d: &Digest) -> Result<File> {
        let dir = self.dir.join("locks");
        mkdir(&dir, 0o700)?;
        let p = dir.join(format!("{}.lock", d.hex()));
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p)
            .ctx(|| format!("open {}", p.display()))?;
        tokio::task::spawn_blocking(move || f.lock().map(|()| f))
            .await
            .map_err(|e| Error::io("lock task", std::io::Error::other(e.to_string())))?
            .ctx(|| format!("lock {}", p.display()))
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Directory of the image built from manifest `d` with `compression` (`None`: ext4, which
    /// shares the zstd build's directory as it always has).
    pub fn built_dir(&self, d: &Digest, compression: Option<Compression>) -> PathBuf {
        let suffix = match compression {
            None | Some(Compression::Zstd) => "",
            Some(Compression::Lz4) => "-lz4",
        };
        self.dir.join("built").join(format!("{}{suffix}", d.hex()))
    }

    /// The manifest digest a directory under `built/` holds a build of.
    fn built_digest(name: &str) -> Option<Digest> {
        let hex = name.strip_suffix("-lz4").unwrap_or(name);
        Digest::from_hex(hex).ok()
    }

    /// Every build of manifest `d` there is (directories under `built/`).
    pub(crate) fn builds_of(&self, d: &Digest) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Compression::ALL
            .into_iter()
            .map(|c| self.built_dir(d, Some(c)))
            .filter(|p| p.is_dir())
            .collect();
        dirs.dedup();
        dirs
    }

    fn refs_path(&self) -> PathBuf {
        self.dir.join("refs.json")
    }

    /// Take the store's exclusive lock (released when the file is dropped).
    pub(crate) fn lock(&self) -> Result<File> {
        let p = self.dir.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p)
            .ctx(|| format!("open {}", p.display()))?;
        f.lock().ctx(|| format!("lock {}", p.display()))?;
        Ok(f)
    }

    pub(crate) fn load_refs(&self) -> Result<Refs> {
        match fs::read(self.refs_path()) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::malformed(self.refs_path().display().to_string(), e.to_string())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Refs {
                version: 1,
                refs: BTreeMap::new(),
            }),
            Err(e) => Err(Error::io(format!("read {}", self.refs_path().display()), e)),
        }
    }

    pub(crate) fn save_refs(&self, refs: &Refs) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(refs).map_err(|e| Error::malformed("refs", e.to_string()))?;
        write_atomic(&self.refs_path(), &bytes)
    }

    /// Point `name` at `digest` (under the lock).
    pub(crate) fn set_ref(&self, name: &str, digest: &Digest) -> Result<()> {
        let _l = self.lock()?;
        let mut refs = self.load_refs()?;
        refs.version = 1;
        refs.refs.insert(
            name.to_owned(),
            RefEntry {
                digest: digest.clone(),
                updated_at: now_secs(),
            },
        );
        self.save_refs(&refs)
    }

    pub(crate) fn get_ref(&self, name: &str) -> Result<Option<Digest>> {
        Ok(self.load_refs()?.refs.get(name).map(|e| e.digest.clone()))
    }

    /// Load the image built from manifest `d` with `compression`, if complete, and mark it
    /// used.
    ///
    /// # Errors
    /// A corrupt record.
    pub fn load_built(
        &self,
        name: &str,
        d: &Digest,
        compression: Option<Compression>,
    ) -> Result<Option<Image>> {
        let dir = self.built_dir(d, compression);
        let rec = match fs::read(dir.join("image.json")) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::io(
                    format!("read {}", dir.join("image.json").display()),
                    e,
                ));
            }
        };
        let record: ImageRecord = serde_json::from_slice(&rec).map_err(|e| {
            Error::malformed(dir.join("image.json").display().to_string(), e.to_string())
        })?;
        // The directory's name says the compression; a record saying otherwise would hand a
        // guest an image it may not read.
        if compression.is_some()
            && record.squashfs_compression().is_some()
            && record.squashfs_compression() != compression
        {
            return Err(Error::malformed(
                dir.join("image.json").display().to_string(),
                format!(
                    "the image is {}, its directory is for {}",
                    record.squashfs_compression().unwrap_or_default(),
                    compression.unwrap_or_default()
                ),
            ));
        }
        let config: ImageConfig = match fs::read(dir.join("config.json")) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::malformed(dir.join("config.json").display().to_string(), e.to_string())
            })?,
            Err(e) => {
                return Err(Error::io(
                    format!("read {}", dir.join("config.json").display()),
                    e,
                ));
            }
        };
        let rootfs = dir.join(rootfs_file_name(record.fs_type));
        if !rootfs.is_file() {
            return Ok(None);
        }
        touch(&dir.join("last-used"));
        // (An image built by an older vmsan has a 0755 directory.)
        crate::modes::narrow(&dir)?;
        Ok(Some(Image {
            name: name.to_owned(),
            record,
            rootfs,
            config,
        }))
    }

    /// Install a finished build directory (`staged`, holding the filesystem, `config.json` and
    /// `image.json`) as the image built from `d` with `compression`, atomically.
    pub(crate) fn commit_built(
        &self,
        staged: &Path,
        d: &Digest,
        compression: Option<Compression>,
    ) -> Result<()> {
        let dest = self.built_dir(d, compression);
        match fs::rename(staged, &dest) {
            Ok(()) => {}
            // Another process finished the same image first: keep theirs.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {
                let _ = fs::remove_dir_all(staged);
            }
            Err(e) => {
                return Err(Error::io(
                    format!("rename {} to {}", staged.display(), dest.display()),
                    e,
                ));
            }
        }
        touch(&dest.join("last-used"));
        // Its files stay world-readable (VMs' jails link them); the directory keeps others out.
        crate::modes::narrow(&dest)
    }

    /// Every built image with its names, size and last use.
    ///
    /// # Errors
    /// I/O or a corrupt refs file.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let refs = self.load_refs()?;
        let mut out = Vec::new();
        let built = self.dir.join("built");
        for e in fs::read_dir(&built).ctx(|| format!("list {}", built.display()))? {
            let e = e.ctx(|| format!("list {}", built.display()))?;
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Some(d) = Self::built_digest(&name) else {
                continue;
            };
            let Ok(b) = fs::read(e.path().join("image.json")) else {
                continue;
            };
            let Ok(rec) = serde_json::from_slice::<ImageRecord>(&b) else {
                continue;
            };
            let last_used = fs::metadata(e.path().join("last-used"))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(rec.built_at, |d| d.as_secs());
            let names = refs
                .refs
                .iter()
                .filter(|(_, v)| v.digest == d)
                .map(|(k, _)| k.clone())
                .collect();
            out.push(ImageSummary {
                names,
                digest: d,
                fs_type: rec.fs_type,
                compression: rec.squashfs_compression(),
                size: rec.size,
                last_used,
                built_at: rec.built_at,
            });
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.last_used));
        Ok(out)
    }

    /// Remove a name; the built image goes too when no other name points at it.
    /// `name` is a normalised reference, a digest (`sha256:…`) or an unambiguous hex prefix.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn remove(&self, name: &str) -> Result<Vec<String>> {
        let _l = self.lock()?;
        let mut refs = self.load_refs()?;
        let mut removed = Vec::new();
        // The name as `create --from-image` takes it: a local name first, then the registry's.
        let key = std::iter::once(name.to_owned())
            .chain(
                crate::reference::Reference::parse(name)
                    .ok()
                    .into_iter()
                    .flat_map(|r| {
                        r.as_local()
                            .map(|l| l.to_string())
                            .into_iter()
                            .chain(std::iter::once(r.to_string()))
                    }),
            )
            .find(|k| refs.refs.contains_key(k));
        let digest = if let Some((key, e)) = key.and_then(|k| refs.refs.remove_entry(&k)) {
            removed.push(key);
            e.digest
        } else if let Some(d) = self.match_digest(name)? {
            let names: Vec<String> = refs
                .refs
                .iter()
                .filter(|(_, v)| v.digest == d)
                .map(|(k, _)| k.clone())
                .collect();
            for n in names {
                refs.refs.remove(&n);
                removed.push(n);
            }
            d
        } else {
            return Err(Error::NotFound(name.to_owned(), " (see `vmsan image ls`)"));
        };
        self.save_refs(&refs)?;
        if !refs.refs.values().any(|v| v.digest == digest) {
            // Every build of it, whatever its compression.
            for dir in self.builds_of(&digest) {
                fs::remove_dir_all(&dir).ctx(|| format!("remove {}", dir.display()))?;
            }
            removed.push(digest.to_string());
        }
        Ok(removed)
    }

    fn match_digest(&self, s: &str) -> Result<Option<Digest>> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if hex.len() < 6
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Ok(None);
        }
        let built = self.dir.join("built");
        let mut found: Option<Digest> = None;
        for e in fs::read_dir(&built).ctx(|| format!("list {}", built.display()))? {
            let e = e.ctx(|| format!("list {}", built.display()))?;
            let Some(d) = e.file_name().to_str().and_then(Self::built_digest) else {
                continue;
            };
            if !d.hex().starts_with(hex) {
                continue;
            }
            // Two builds of one manifest (zstd and LZ4) are one match.
            if found.as_ref().is_some_and(|f| *f != d) {
                return Err(Error::InvalidReference {
                    input: s.to_owned(),
                    reason: "ambiguous digest prefix".into(),
                });
            }
            found = Some(d);
        }
        Ok(found)
    }

    /// Remove built images no name points at, blobs no remaining image uses, and leftovers
    /// in `tmp/`.
    ///
    /// # Errors
    /// I/O.
    pub fn prune(&self) -> Result<PruneReport> {
        let _l = self.lock()?;
        let refs = self.load_refs()?;
        let mut report = PruneReport::default();
        let mut keep_blobs = std::collections::HashSet::new();
        let built = self.dir.join("built");
        for e in fs::read_dir(&built).ctx(|| format!("list {}", built.display()))? {
            let e = e.ctx(|| format!("list {}", built.display()))?;
            let Some(d) = e.file_name().to_str().and_then(Self::built_digest) else {
                continue;
            };
            if refs.refs.values().any(|v| v.digest == d) {
                if let Ok(b) = fs::read(e.path().join("image.json"))
                    && let Ok(rec) = serde_json::from_slice::<ImageRecord>(&b)
                {
                    keep_blobs.extend(rec.layers);
                    keep_blobs.extend(rec.config_digest);
                }
                keep_blobs.insert(d);
            } else {
                report.bytes += dir_size(&e.path());
                fs::remove_dir_all(e.path()).ctx(|| format!("remove {}", e.path().display()))?;
                report.images.push(d);
            }
        }
        let blobs = self.dir.join("blobs").join("sha256");
        for e in fs::read_dir(&blobs).ctx(|| format!("list {}", blobs.display()))? {
            let e = e.ctx(|| format!("list {}", blobs.display()))?;
            let keep = e
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
                .is_some_and(|d| keep_blobs.contains(&d));
            if !keep {
                report.bytes += e.metadata().map_or(0, |m| m.len());
                fs::remove_file(e.path()).ctx(|| format!("remove {}", e.path().display()))?;
                report.blobs += 1;
            }
        }
        if let Ok(rd) = fs::read_dir(self.dir.join("locks")) {
            for e in rd.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        let tmp = self.tmp_dir();
        for e in fs::read_dir(&tmp).ctx(|| format!("list {}", tmp.display()))? {
            let e = e.ctx(|| format!("list {}", tmp.display()))?;
            report.bytes += dir_size(&e.path());
            let _ = if e.path().is_dir() {
                fs::remove_dir_all(e.path())
            } else {
                fs::remove_file(e.path())
            };
        }
        Ok(report)
    }
}

fn touch(p: &Path) {
    let now = nix::sys::time::TimeSpec::from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    if nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &now,
        &now,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .is_err()
    {
        let _ = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(p);
    }
}

pub(crate) fn dir_size(p: &Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(p) else {
        return 0;
    };
    if !m.is_dir() {
        return m.len();
    }
    fs::read_dir(p).map_or(0, |rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// Issue 17 item 11: the store's directories are readable by the home's group and nobody
    /// else, also in a home an older vmsan made world-readable; a symlink is not followed.
    #[test]
    fn the_store_is_private_also_in_an_old_world_readable_home() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let fresh = t.path().join("fresh");
        ImageStore::open(&fresh).unwrap();
        for d in [
            "",
            "images",
            "images/blobs",
            "images/blobs/sha256",
            "images/built",
        ] {
            assert_eq!(mode(&fresh.join(d)) & 0o777, 0o750, "{d:?}");
        }

        // An old home: every directory 0755, and `built` a symlink to a directory elsewhere.
        let old = t.path().join("old");
        let elsewhere = t.path().join("elsewhere");
        for d in [old.join("images/blobs/sha256"), elsewhere.clone()] {
            fs::create_dir_all(&d).unwrap();
        }
        for d in [
            old.clone(),
            old.join("images"),
            old.join("images/blobs"),
            old.join("images/blobs/sha256"),
            elsewhere.clone(),
        ] {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::os::unix::fs::symlink(&elsewhere, old.join("images/built")).unwrap();
        ImageStore::open(&old).unwrap();
        for d in ["", "images", "images/blobs", "images/blobs/sha256"] {
            assert_eq!(mode(&old.join(d)), 0o750, "{d:?}");
        }
        assert_eq!(mode(&elsewhere), 0o755, "followed the symlink");
    }

    #[test]
    fn refs_roundtrip_and_remove() {
        let t = tempfile::tempdir().unwrap();
        let s = ImageStore::open(t.path()).unwrap();
        let d = Digest::of(b"m");
        s.set_ref("docker.io/library/a:1", &d).unwrap();
        assert_eq!(s.get_ref("docker.io/library/a:1").unwrap(), Some(d.clone()));
        assert!(s.remove("nope").is_err());
        let r = s.remove("docker.io/library/a:1").unwrap();
        assert!(r.contains(&d.to_string()));
        assert_eq!(s.get_ref("docker.io/library/a:1").unwrap(), None);
        // Short names, as `create --from-image` takes them: local names first.
        s.set_ref("localhost/busybox:latest", &d).unwrap();
        s.set_ref("docker.io/library/busybox:latest", &Digest::of(b"hub"))
            .unwrap();
        assert_eq!(s.remove("busybox").unwrap()[0], "localhost/busybox:latest");
        assert_eq!(
            s.remove("busybox:latest").unwrap()[0],
            "docker.io/library/busybox:latest"
        );
        assert!(s.remove("busybox").is_err());
    }
}
