//! Applying image layers onto a staging directory, safely (the rules themselves are in the
//! crate-private `layer` module; this carries them out on disk).
//!
//! Every path operation is relative to a directory file descriptor of the staging root:
//! parents are opened with `openat2(RESOLVE_BENEATH)`, so neither `..` nor a symlink (absolute
//! or relative) can lead outside the root, and the final component is always created or
//! removed with the `*at` calls that do not follow symlinks. Entries with absolute paths or
//! `..` components are rejected outright, as are paths that resolve outside the root through a
//! symlink. Whiteouts (`.wh.NAME`) and opaque markers (`.wh..wh..opq`) remove lower-layer
//! content only; hard links, symlinks, device nodes, FIFOs, modes, ownership and
//! modification times are reproduced. A size limit (uncompressed bytes, counted as they come
//! out of the decompressor) and an entry-count limit stop decompression bombs.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fstatat, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};

use crate::error::{Error, IoContext, Result};
use crate::layer::{
    Action, BombError, Scope, check_symlink_target, components, entry_too_big, is_extension_header,
    link_missing, link_target, link_to_dir, read_error, too_many_entries, unsafe_entry,
    unsupported_type,
};
use crate::manifest::LayerCompression;

pub use crate::layer::Limits;

/// Statistics of a merge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Entries read.
    pub entries: u64,
    /// Uncompressed bytes read.
    pub bytes: u64,
}

/// A staging directory that layers are applied onto, base layer first.
#[derive(Debug)]
pub struct Staging {
    root: OwnedFd,
    limits: Limits,
    stats: MergeStats,
    chown: bool,
    dir_times: Vec<(Vec<OsString>, i64)>,
    parent_cache: Option<(Vec<OsString>, OwnedFd)>,
}

fn join(c: &[OsString]) -> PathBuf {
    let mut p = PathBuf::new();
    for x in c {
        p.push(x);
    }
    p
}

fn dir_how() -> OpenHow {
    OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Counts bytes coming out of the decompressor and fails past the limit.
struct Counting<'a, R> {
    inner: R,
    count: &'a mut u64,
    max: u64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.count += n as u64;
        if *self.count > self.max {
            return Err(io::Error::other(BombError(self.max)));
        }
        Ok(n)
    }
}

/// Decompress `path` on a helper thread, handing chunks over a bounded channel, so that
/// inflating and applying entries overlap. Errors of the helper surface as read errors.
pub(crate) fn threaded_decompress(
    path: std::path::PathBuf,
    c: LayerCompression,
    what: String,
) -> impl Read {
    threaded_read(
        move || Ok(io::BufReader::with_capacity(1 << 20, File::open(&path)?)),
        c,
        what,
    )
}

/// Decompress what `open` gives on a helper thread (see [`threaded_decompress`]).
pub(crate) fn threaded_read<R, F>(open: F, c: LayerCompression, what: String) -> impl Read
where
    R: Read,
    F: FnOnce() -> io::Result<R> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(16);
    std::thread::spawn(move || {
        let run = || -> io::Result<()> {
            let src = open()?;
            let mut r = decompress(src, c, &what).map_err(io::Error::other)?;
            loop {
                let mut buf = vec![0u8; 256 * 1024];
                let n = match r.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                buf.truncate(n);
                if tx.send(Ok(buf)).is_err() {
                    // The reader gave up (error or limit): stop inflating.
                    return Ok(());
                }
            }
        };
        if let Err(e) = run() {
            let _ = tx.send(Err(e));
        }
    });
    ChannelReader {
        rx,
        cur: Vec::new(),
        pos: 0,
    }
}

struct ChannelReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(v)) => {
                    self.cur = v;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Open a decompressing reader for a layer.
pub(crate) fn decompress<'a, R: Read + 'a>(
    r: R,
    c: LayerCompression,
    what: &str,
) -> Result<Box<dyn Read + 'a>> {
    Ok(match c {
        LayerCompression::None => Box::new(r),
        LayerCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        LayerCompression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(r)
                .map_err(|e| Error::malformed(what.to_owned(), format!("zstd: {e}")))?,
        ),
    })
}

impl Staging {
    /// Use `dir` (an existing, empty directory) as the staging root.
    ///
    /// # Errors
    /// I/O.
    pub fn new(dir: &Path, limits: Limits) -> Result<Self> {
        let root = nix::fcntl::open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| format!("open staging directory {}", dir.display()))?;
        fchmod(&root, Mode::from_bits_truncate(0o755)).ctx(|| "chmod staging root".to_owned())?;
        Ok(Self {
            root,
            limits,
            stats: MergeStats::default(),
            chown: Uid::effective().is_root(),
            dir_times: Vec::new(),
            parent_cache: None,
        })
    }

    /// What has been read so far.
    pub fn stats(&self) -> MergeStats {
        self.stats
    }

    /// Apply one layer read from `blob` (compressed as `compression`).
    ///
    /// # Errors
    /// Unsafe entries, limits, malformed archives, I/O. The staging directory is then in an
    /// undefined state and must be discarded.
    pub fn apply_layer<R: Read>(
        &mut self,
        blob: R,
        compression: LayerCompression,
        layer: &str,
    ) -> Result<()> {
        let reader = decompress(blob, compression, layer)?;
        self.apply_tar(reader, layer)
    }

    /// Apply one layer from an already decompressed tar stream.
    ///
    /// # Errors
    /// As [`Staging::apply_layer`].
    pub fn apply_tar<R: Read>(&mut self, reader: R, layer: &str) -> Result<()> {
        let remaining = self.limits.max_bytes.saturating_sub(self.stats.bytes);
        let mut count = 0u64;
        let res = {
            let counting = Counting {
                inner: reader,
                count: &mut count,
                max: remaining,
            };
            let mut archive = tar::Archive::new(counting);
            self.apply_archive(&mut archive, layer)
        };
        self.stats.bytes += count;
        res
    }

    fn apply_archive<R: Read>(&mut self, archive: &mut tar::Archive<R>, layer: &str) -> Result<()> {
        let mut scope = Scope::default();
        let entries = archive.entries().map_err(|e| read_error(layer, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| read_error(layer, e))?;
            self.stats.entries += 1;
            if self.stats.entries > self.limits.max_entries {
                return Err(too_many_entries(layer, &self.limits));
            }
            let raw = entry.path().map_err(|e| read_error(layer, e))?.into_owned();
            let comps = components(layer, &raw, &self.limits)?;
            let size = entry
                .header()
                .entry_size()
                .map_err(|e| read_error(layer, e))?;
            entry_too_big(layer, &raw, self.stats.bytes, size, &self.limits)?;
            let etype = entry.header().entry_type();
            if is_extension_header(etype) {
                continue;
            }
            let (parent_comps, name) = match scope.classify(layer, &raw, &comps, etype.is_dir())? {
                Action::Root => {
                    let fd = self
                        .root
                        .try_clone()
                        .ctx(|| "dup staging root".to_owned())?;
                    self.set_meta(&fd, &entry, layer, &raw)?;
                    set_xattrs(&fd, &mut entry, layer, &raw)?;
                    self.dir_times
                        .push((Vec::new(), entry.header().mtime().unwrap_or(0) as i64));
                    continue;
                }
                Action::Opaque { dir: parent_comps } => {
                    if let Some(dir) = self.open_existing_dir(parent_comps, layer, &raw)? {
                        self.make_opaque(&dir, parent_comps, &scope)?;
                    }
                    continue;
                }
                Action::Whiteout {
                    dir: parent_comps,
                    name,
                } => {
                    if let Some(dir) = self.open_existing_dir(parent_comps, layer, &raw)? {
                        self.remove_at(&dir, name)?;
                    }
                    continue;
                }
                Action::Skip => continue,
                Action::Put { dir, name } => (dir, name.to_os_string()),
            };
            let parent = self.ensure_dir(parent_comps, layer, &raw)?;
            match etype {
                tar::EntryType::Directory => {
                    let existing = stat_at(&parent, &name)?;
                    if let Some(st) = existing {
                        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
                            self.remove_at(&parent, &name)?;
                            mkdirat(&parent, name.as_os_str(), Mode::from_bits_truncate(0o700))
                                .ctx(|| format!("mkdir {}", raw.display()))?;
                        }
                    } else {
                        mkdirat(&parent, name.as_os_str(), Mode::from_bits_truncate(0o700))
                            .ctx(|| format!("mkdir {}", raw.display()))?;
                    }
                    let fd = openat(
                        &parent,
                        name.as_os_str(),
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .ctx(|| format!("open {}", raw.display()))?;
                    self.set_meta(&fd, &entry, layer, &raw)?;
                    set_xattrs(&fd, &mut entry, layer, &raw)?;
                    self.dir_times
                        .push((comps.clone(), entry.header().mtime().unwrap_or(0) as i64));
                }
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    self.remove_at(&parent, &name)?;
                    let fd = openat(
                        &parent,
                        name.as_os_str(),
                        OFlag::O_WRONLY
                            | OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o600),
                    )
                    .ctx(|| format!("create {}", raw.display()))?;
                    let mut file = File::from(fd);
                    copy_data(&mut entry, &mut file).map_err(|e| {
                        match e.get_ref().and_then(|i| i.downcast_ref::<BombError>()) {
                            Some(b) => Error::LimitExceeded {
                                what: format!("layer {layer}"),
                                reason: b.to_string(),
                            },
                            None => {
                                Error::io(format!("write {} from layer {layer}", raw.display()), e)
                            }
                        }
                    })?;
                    let fd = OwnedFd::from(file);
                    self.set_meta(&fd, &entry, layer, &raw)?;
                    set_xattrs(&fd, &mut entry, layer, &raw)?;
                    let mtime = entry.header().mtime().unwrap_or(0) as i64;
                    nix::sys::stat::futimens(
                        &fd,
                        &TimeSpec::new(mtime, 0),
                        &TimeSpec::new(mtime, 0),
                    )
                    .ctx(|| format!("set times of {}", raw.display()))?;
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(|e| read_error(layer, e))?
                        .ok_or_else(|| unsafe_entry(layer, &raw, "symlink without target"))?
                        .into_owned();
                    check_symlink_target(layer, &raw, target.as_os_str().len(), &self.limits)?;
                    self.remove_at(&parent, &name)?;
                    symlinkat(target.as_os_str(), &parent, name.as_os_str())
                        .ctx(|| format!("symlink {}", raw.display()))?;
                    if self.chown {
                        let (uid, gid) = ids(&entry, layer, &raw)?;
                        fchownat(
                            &parent,
                            name.as_os_str(),
                            Some(uid),
                            Some(gid),
                            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                        )
                        .ctx(|| format!("chown {}", raw.display()))?;
                    }
                    let mtime = TimeSpec::new(entry.header().mtime().unwrap_or(0) as i64, 0);
                    utimensat(
                        &parent,
                        name.as_os_str(),
                        &mtime,
                        &mtime,
                        UtimensatFlags::NoFollowSymlink,
                    )
                    .ctx(|| format!("set times of {}", raw.display()))?;
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(|e| read_error(layer, e))?
                        .ok_or_else(|| unsafe_entry(layer, &raw, "hard link without target"))?
                        .into_owned();
                    let Some(tcomps) = link_target(layer, &raw, &target, &comps, &self.limits)?
                    else {
                        continue;
                    };
                    let Some((tname, tdir)) = tcomps.split_last() else {
                        return Err(link_missing(layer, &raw, &target));
                    };
                    let tparent = self
                        .open_existing_dir(tdir, layer, &raw)?
                        .ok_or_else(|| link_missing(layer, &raw, &target))?;
                    match stat_at(&tparent, tname)? {
                        Some(st)
                            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
                                != SFlag::S_IFDIR => {}
                        Some(_) => return Err(link_to_dir(layer, &raw)),
                        None => return Err(link_missing(layer, &raw, &target)),
                    }
                    self.remove_at(&parent, &name)?;
                    linkat(
                        &tparent,
                        tname.as_os_str(),
                        &parent,
                        name.as_os_str(),
                        nix::fcntl::AtFlags::empty(),
                    )
                    .ctx(|| format!("link {} to {}", raw.display(), target.display()))?;
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    let kind = match etype {
                        tar::EntryType::Char => SFlag::S_IFCHR,
                        tar::EntryType::Block => SFlag::S_IFBLK,
                        _ => SFlag::S_IFIFO,
                    };
                    let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                    let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                    self.remove_at(&parent, &name)?;
                    mknodat(
                        &parent,
                        name.as_os_str(),
                        kind,
                        Mode::from_bits_truncate(0o600),
                        nix::sys::stat::makedev(major.into(), minor.into()),
                    )
                    .ctx(|| format!("mknod {} (device nodes need root)", raw.display()))?;
                    let fd = openat(
                        &parent,
                        name.as_os_str(),
                        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .ctx(|| format!("open {}", raw.display()))?;
                    // fchown/fchmod do not work on O_PATH descriptors: use the *at forms on the
                    // name, which do not follow (it was just created as a node, not a symlink).
                    drop(fd);
                    let (uid, gid) = ids(&entry, layer, &raw)?;
                    if self.chown {
                        fchownat(
                            &parent,
                            name.as_os_str(),
                            Some(uid),
                            Some(gid),
                            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                        )
                        .ctx(|| format!("chown {}", raw.display()))?;
                    }
                    let mode = entry.header().mode().map_err(|e| read_error(layer, e))?;
                    nix::sys::stat::fchmodat(
                        &parent,
                        name.as_os_str(),
                        Mode::from_bits_truncate(mode & 0o7777),
                        FchmodatFlags::FollowSymlink,
                    )
                    .ctx(|| format!("chmod {}", raw.display()))?;
                }
                other => return Err(unsupported_type(layer, &raw, other)),
            }
            scope.created(comps);
        }
        Ok(())
    }

    fn set_meta<T: Read>(
        &self,
        fd: &OwnedFd,
        entry: &tar::Entry<'_, T>,
        layer: &str,
        raw: &Path,
    ) -> Result<()> {
        let mode = entry.header().mode().map_err(|e| {
            Error::malformed(
                format!("layer {layer}"),
                format!("bad mode of {}: {e}", raw.display()),
            )
        })?;
        if self.chown {
            let (uid, gid) = ids(entry, layer, raw)?;
            fchown(fd, Some(uid), Some(gid)).ctx(|| format!("chown {}", raw.display()))?;
        }
        fchmod(fd, Mode::from_bits_truncate(mode & 0o7777))
            .ctx(|| format!("chmod {}", raw.display()))?;
        Ok(())
    }

    /// Open `comps` as a directory beneath the root, or `None` if it does not exist.
    fn open_existing_dir(
        &self,
        comps: &[OsString],
        layer: &str,
        raw: &Path,
    ) -> Result<Option<OwnedFd>> {
        if comps.is_empty() {
            return Ok(Some(
                self.root
                    .try_clone()
                    .ctx(|| "dup staging root".to_owned())?,
            ));
        }
        match openat2(&self.root, &join(comps), dir_how()) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(resolve_error(e, layer, raw)),
        }
    }

    /// Open (creating missing components as root-owned 0755 directories) the directory `comps`.
    fn ensure_dir(&mut self, comps: &[OsString], layer: &str, raw: &Path) -> Result<OwnedFd> {
        if let Some((c, fd)) = &self.parent_cache
            && c.as_slice() == comps
        {
            return fd.try_clone().ctx(|| "dup directory".to_owned());
        }
        let fd = if comps.is_empty() {
            self.root
                .try_clone()
                .ctx(|| "dup staging root".to_owned())?
        } else {
            match openat2(&self.root, &join(comps), dir_how()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => self.create_dirs(comps, layer, raw)?,
                Err(e) => return Err(resolve_error(e, layer, raw)),
            }
        };
        self.parent_cache = Some((
            comps.to_vec(),
            fd.try_clone().ctx(|| "dup directory".to_owned())?,
        ));
        Ok(fd)
    }

    fn create_dirs(&mut self, comps: &[OsString], layer: &str, raw: &Path) -> Result<OwnedFd> {
        let mut cur = self
            .root
            .try_clone()
            .ctx(|| "dup staging root".to_owned())?;
        for i in 0..comps.len() {
            match openat2(&self.root, &join(&comps[..=i]), dir_how()) {
                Ok(fd) => cur = fd,
                Err(Errno::ENOENT) => {
                    mkdirat(&cur, comps[i].as_os_str(), Mode::from_bits_truncate(0o755))
                        .ctx(|| format!("mkdir parent of {}", raw.display()))?;
                    let fd = openat2(&self.root, &join(&comps[..=i]), dir_how())
                        .map_err(|e| resolve_error(e, layer, raw))?;
                    fchmod(&fd, Mode::from_bits_truncate(0o755))
                        .ctx(|| format!("chmod parent of {}", raw.display()))?;
                    cur = fd;
                }
                Err(e) => return Err(resolve_error(e, layer, raw)),
            }
        }
        Ok(cur)
    }

    fn make_opaque(&mut self, dir: &OwnedFd, dir_comps: &[OsString], scope: &Scope) -> Result<()> {
        for name in list_dir(dir)? {
            if !scope.keeps(dir_comps, &name) {
                self.remove_at(dir, &name)?;
            }
        }
        Ok(())
    }

    /// Remove `name` in `dir` (recursively for directories), never following symlinks.
    fn remove_at(&mut self, dir: &OwnedFd, name: &OsStr) -> Result<()> {
        // Whatever is removed may be (or lead to) a cached parent: forget it.
        self.parent_cache = None;
        match stat_at(dir, name)? {
            None => Ok(()),
            Some(st) => {
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
                    self.parent_cache = None;
                    let sub = openat(
                        dir,
                        name,
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .ctx(|| format!("open {} for removal", name.to_string_lossy()))?;
                    for child in list_dir(&sub)? {
                        self.remove_at(&sub, &child)?;
                    }
                    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
                        .ctx(|| format!("rmdir {}", name.to_string_lossy()))
                } else {
                    unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
                        .ctx(|| format!("unlink {}", name.to_string_lossy()))
                }
            }
        }
    }

    /// Set directory modification times (after all layers: adding children changes them).
    ///
    /// # Errors
    /// I/O.
    pub fn finish(mut self) -> Result<MergeStats> {
        self.parent_cache = None;
        let times = std::mem::take(&mut self.dir_times);
        let mut seen = HashSet::new();
        for (comps, mtime) in times.into_iter().rev() {
            if !seen.insert(comps.clone()) {
                continue;
            }
            let fd = if comps.is_empty() {
                self.root
                    .try_clone()
                    .ctx(|| "dup staging root".to_owned())?
            } else {
                match openat2(
                    &self.root,
                    &join(&comps),
                    dir_how().flags(
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    ),
                ) {
                    Ok(fd) => fd,
                    Err(_) => continue,
                }
            };
            nix::sys::stat::futimens(&fd, &TimeSpec::new(mtime, 0), &TimeSpec::new(mtime, 0))
                .ctx(|| format!("set times of {}", join(&comps).display()))?;
        }
        Ok(self.stats)
    }
}

/// Set the entry's extended attributes (PAX `SCHILY.xattr.NAME` records) on `fd`, after its
/// owner (a chown clears `security.capability`). Names the staging filesystem does not
/// support are skipped.
fn set_xattrs<T: Read>(
    fd: &OwnedFd,
    entry: &mut tar::Entry<'_, T>,
    layer: &str,
    raw: &Path,
) -> Result<()> {
    let Some(exts) = entry.pax_extensions().map_err(|e| {
        Error::malformed(
            format!("layer {layer}"),
            format!("bad PAX records of {}: {e}", raw.display()),
        )
    })?
    else {
        return Ok(());
    };
    for ext in exts {
        let ext = ext.map_err(|e| {
            Error::malformed(
                format!("layer {layer}"),
                format!("bad PAX record of {}: {e}", raw.display()),
            )
        })?;
        let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
            continue;
        };
        let Ok(cname) = std::ffi::CString::new(name) else {
            continue;
        };
        use std::os::fd::AsFd;
        match crate::sys::fsetxattr(fd.as_fd(), &cname, ext.value_bytes()) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EPERM)) => {
                tracing::debug!(path = %raw.display(), name = %cname.to_string_lossy(), "xattr not supported by the staging filesystem; skipped");
            }
            Err(e) => {
                return Err(Error::io(
                    format!("set xattr {} of {}", cname.to_string_lossy(), raw.display()),
                    e,
                ));
            }
        }
    }
    Ok(())
}

fn ids<T: Read>(entry: &tar::Entry<'_, T>, layer: &str, raw: &Path) -> Result<(Uid, Gid)> {
    let h = entry.header();
    let bad = |e: io::Error| {
        Error::malformed(
            format!("layer {layer}"),
            format!("bad owner of {}: {e}", raw.display()),
        )
    };
    let uid = h.uid().map_err(bad)?;
    let gid = h.gid().map_err(bad)?;
    let uid = u32::try_from(uid).map_err(|_| unsafe_entry(layer, raw, "uid out of range"))?;
    let gid = u32::try_from(gid).map_err(|_| unsafe_entry(layer, raw, "gid out of range"))?;
    Ok((Uid::from_raw(uid), Gid::from_raw(gid)))
}

fn resolve_error(e: Errno, layer: &str, raw: &Path) -> Error {
    match e {
        Errno::EXDEV => unsafe_entry(
            layer,
            raw,
            "path resolves outside the image root (symlink escape)",
        ),
        Errno::ELOOP => unsafe_entry(layer, raw, "too many levels of symbolic links"),
        Errno::ENOTDIR => unsafe_entry(layer, raw, "a parent component is not a directory"),
        other => Error::io(
            format!("resolve parent of {}", raw.display()),
            io::Error::from(other),
        ),
    }
}

fn stat_at(dir: &OwnedFd, name: &OsStr) -> Result<Option<nix::sys::stat::FileStat>> {
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(Error::io(
            format!("stat {}", name.to_string_lossy()),
            io::Error::from(e),
        )),
    }
}

fn list_dir(dir: &OwnedFd) -> Result<Vec<OsString>> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "open directory for listing".to_owned())?;
    let mut d = nix::dir::Dir::from_fd(fd).ctx(|| "read directory".to_owned())?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e.ctx(|| "read directory entry".to_owned())?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(out)
}

fn copy_data(r: &mut impl Read, w: &mut File) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::layer::vectors;

    /// A tar owned by the user running the test (who may not chown).
    fn tar_of(entries: &[vectors::Entry<'_>]) -> Vec<u8> {
        vectors::tar_of(
            entries,
            Uid::effective().as_raw(),
            Gid::effective().as_raw(),
        )
    }

    #[test]
    fn directory_replacing_a_symlink_is_not_written_through() {
        let t = tempfile::tempdir().unwrap();
        let mut st = Staging::new(t.path(), Limits::default()).unwrap();
        let layer = tar_of(vectors::SYMLINK_THEN_DIR);
        st.apply_layer(layer.as_slice(), LayerCompression::None, "l1")
            .unwrap();
        st.finish().unwrap();
        assert!(
            t.path().join("usr/bin/a").is_file(),
            "written through the symlink while it existed"
        );
        assert!(t.path().join("bin").is_dir() && !t.path().join("bin").is_symlink());
        assert!(t.path().join("bin/b").is_file());
        assert!(
            !t.path().join("usr/bin/b").exists(),
            "not written through the replaced symlink"
        );
    }

    #[test]
    fn whiteouts_and_opaque_only_hide_lower_layers() {
        let t = tempfile::tempdir().unwrap();
        let mut st = Staging::new(t.path(), Limits::default()).unwrap();
        let l1 = tar_of(vectors::LOWER);
        let l2 = tar_of(vectors::UPPER);
        st.apply_layer(l1.as_slice(), LayerCompression::None, "l1")
            .unwrap();
        st.apply_layer(l2.as_slice(), LayerCompression::None, "l2")
            .unwrap();
        assert!(!t.path().join("d/low").exists());
        assert!(
            t.path().join("d/mine").exists(),
            "same-layer entries survive the opaque marker"
        );
        assert_eq!(
            std::fs::read(t.path().join("x")).unwrap(),
            b"2",
            "a whiteout never hides its own layer"
        );
        assert_eq!(
            std::fs::read(t.path().join("h2")).unwrap(),
            b"hh",
            "hard link outlives the whiteout of h1"
        );
        assert!(!t.path().join("h1").exists());
    }

    #[test]
    fn escapes_are_rejected() {
        for layer in vectors::ESCAPES {
            let t = tempfile::tempdir().unwrap();
            let mut st = Staging::new(t.path(), Limits::default()).unwrap();
            let e = st
                .apply_layer(tar_of(layer).as_slice(), LayerCompression::None, "l0")
                .unwrap_err();
            assert!(matches!(e, Error::UnsafeEntry { .. }), "{e}");
        }
        let t = tempfile::tempdir().unwrap();
        let mut st = Staging::new(t.path(), Limits::default()).unwrap();
        st.apply_layer(
            tar_of(vectors::BENEATH).as_slice(),
            LayerCompression::None,
            "l0",
        )
        .unwrap();
        assert_eq!(std::fs::read(t.path().join("b/f")).unwrap(), b"ok");
    }

    #[test]
    fn zstd_and_gzip_layers_and_the_byte_limit() {
        use tar::EntryType::Regular as F;
        let data = "z".repeat(100_000);
        let raw = tar_of(&[("f", F, data.as_str())]);
        let zst = ruzstd::encoding::compress_to_vec(
            raw.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        assert_eq!(LayerCompression::sniff(&zst), LayerCompression::Zstd);
        let t = tempfile::tempdir().unwrap();
        let mut st = Staging::new(t.path(), Limits::default()).unwrap();
        st.apply_layer(zst.as_slice(), LayerCompression::Zstd, "z")
            .unwrap();
        assert_eq!(std::fs::read(t.path().join("f")).unwrap().len(), 100_000);
        // The same layer against a limit smaller than its uncompressed size.
        let t = tempfile::tempdir().unwrap();
        let mut st = Staging::new(
            t.path(),
            Limits {
                max_bytes: 50_000,
                ..Limits::default()
            },
        )
        .unwrap();
        let e = st
            .apply_layer(zst.as_slice(), LayerCompression::Zstd, "z")
            .unwrap_err();
        assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
        // Garbage that claims to be gzip.
        let t = tempfile::tempdir().unwrap();
        let mut st = Staging::new(t.path(), Limits::default()).unwrap();
        assert!(
            st.apply_layer(&b"\x1f\x8bgarbage"[..], LayerCompression::Gzip, "g")
                .is_err()
        );
    }
}
