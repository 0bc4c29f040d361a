//! `vmsan snapshot export ID FILE` and `vmsan snapshot import FILE`: a portable archive.
//!
//! The archive is a plain tar (inspectable with `tar tvf`): first `vmsan-snapshot.json` (the
//! metadata, the agent token, and for each file its logical size, its data extents and the
//! sha256 of their bytes), then `files/<name>` holding just those extents. Holes and zero
//! blocks are left out, so a mostly empty 10 GiB disk or guest memory costs what it holds.
//! Import checks the manifest, the Firecracker version and the CPU before extracting anything,
//! checks every byte against its digest, and publishes the snapshot only when complete.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::files::{DATA_FILES, Snapshot, Staging};
use super::meta::{HostFingerprint, SnapshotMeta};
use crate::error::{Error, ErrorCode, Result};
use crate::paths::Paths;

const MANIFEST: &str = "vmsan-snapshot.json";
const FORMAT: &str = "vmsan-snapshot";
const FORMAT_VERSION: u32 = 1;
/// Zero blocks of this size are left out of the archive.
const BLOCK: usize = 64 << 10;
/// A manifest larger than this is refused.
const MAX_MANIFEST: u64 = 16 << 20;
/// At most this many extents per file (a pathological file is refused, not exported).
const MAX_EXTENTS: usize = 1 << 20;
/// No file of a snapshot is larger: a disk is at most 1 TiB (`--disk`), and so is any memory
/// size vmsan accepts. A larger size is a crafted archive, not an I/O problem.
const MAX_FILE_SIZE: u64 = 1 << 40;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Manifest {
    format: String,
    format_version: u32,
    metadata: SnapshotMeta,
    agent_token: String,
    files: Vec<ArchivedFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ArchivedFile {
    name: String,
    size: u64,
    /// `[offset, length]` of each run of data, sorted.
    extents: Vec<[u64; 2]>,
    /// sha256 of the extents' bytes, in order.
    sha256: String,
}

impl ArchivedFile {
    fn data_len(&self) -> u64 {
        self.extents.iter().map(|e| e[1]).sum()
    }

    /// Of a possible size; extents sorted, non-overlapping, inside the file.
    fn check(&self) -> std::result::Result<(), String> {
        if self.size > MAX_FILE_SIZE {
            return Err(format!(
                "{} claims {} bytes, more than any snapshot file can hold",
                self.name, self.size
            ));
        }
        if self.extents.len() > MAX_EXTENTS {
            return Err(format!("{} has too many extents", self.name));
        }
        let mut end = 0u64;
        for [off, len] in &self.extents {
            let stop = off
                .checked_add(*len)
                .ok_or_else(|| format!("{}: extent overflows", self.name))?;
            if *len == 0 || *off < end || stop > self.size {
                return Err(format!(
                    "{}: extents out of order or outside the file",
                    self.name
                ));
            }
            end = stop;
        }
        Ok(())
    }
}

fn bad_archive(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::VmSnapshotCorrupt,
        format!(
            "{} is not a valid vmsan snapshot archive: {why}",
            path.display()
        ),
    )
    .fix("Export the snapshot again with `vmsan snapshot export`.")
}

/// Write snapshot `id` to `dest` (a new file, mode 0600: it holds guest memory and the agent
/// token). Returns the archive's size.
pub fn export(paths: &Paths, id: &crate::ids::SnapshotId, dest: &Path) -> Result<u64> {
    let snap = Snapshot::open(paths, id)?;
    let mut entries = Vec::new();
    for name in DATA_FILES {
        entries.push(scan(&snap.file(name), name)?);
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        metadata: snap.meta.clone(),
        agent_token: snap.agent_token()?,
        files: entries.clone(),
    };
    let doc = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("encode manifest: {e}")))?;

    // Written next to the destination, renamed into place when complete.
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile_in(dir)?;
    let result = (|| -> Result<()> {
        let mut tar = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, tmp.as_file()));
        append(&mut tar, MANIFEST, doc.len() as u64, &mut doc.as_slice())?;
        for f in &entries {
            let mut src = File::open(snap.file(&f.name))
                .map_err(|e| Error::io(format!("open {}", f.name), e))?;
            let mut reader = ExtentReader::new(&mut src, &f.extents);
            append(
                &mut tar,
                &format!("files/{}", f.name),
                f.data_len(),
                &mut reader,
            )?;
        }
        let w = tar
            .into_inner()
            .map_err(|e| Error::io("finish the archive", e))?;
        w.into_inner()
            .map_err(|e| Error::io("flush the archive", e.into_error()))?
            .sync_all()
            .map_err(|e| Error::io("fsync the archive", e))
    })();
    result?;
    let size = tmp
        .as_file()
        .metadata()
        .map_err(|e| Error::io("stat the archive", e))?
        .len();
    tmp.persist_noclobber(dest).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            Error::new(
                ErrorCode::ValidationPath,
                format!("{} already exists", dest.display()),
            )
            .fix("Choose a new file name, or remove the old archive first.")
        } else {
            Error::io(format!("write {}", dest.display()), e.error)
        }
    })?;
    Ok(size)
}

fn tempfile_in(dir: &Path) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".vmsan-export-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("create a file in {}", dir.display()), e))
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    data: &mut dyn Read,
) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(0);
    tar.append_data(&mut h, name, data)
        .map_err(|e| Error::io(format!("write {name} into the archive"), e))
}

/// A file's non-zero data extents and the digest of their bytes.
fn scan(path: &Path, name: &str) -> Result<ArchivedFile> {
    use nix::unistd::{Whence, lseek};
    use std::os::fd::AsFd;
    let mut f = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let size = f
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
        .len();
    let mut extents: Vec<[u64; 2]> = Vec::new();
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; BLOCK];
    let mut pos = 0u64;
    while pos < size {
        let at =
            i64::try_from(pos).map_err(|_| Error::new(ErrorCode::Internal, "file too large"))?;
        let data = match lseek(f.as_fd(), at, Whence::SeekData) {
            Ok(d) => u64::try_from(d).unwrap_or(size),
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(Error::io(format!("scan {}", path.display()), e.into())),
        };
        let hole = lseek(
            f.as_fd(),
            i64::try_from(data).unwrap_or(i64::MAX),
            Whence::SeekHole,
        )
        .map(|h| u64::try_from(h).unwrap_or(size))
        .map_err(|e| Error::io(format!("scan {}", path.display()), e.into()))?;
        f.seek(SeekFrom::Start(data))
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let mut off = data;
        while off < hole {
            let n = usize::try_from(hole - off).unwrap_or(BLOCK).min(BLOCK);
            f.read_exact(&mut buf[..n])
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            if buf[..n].iter().any(|b| *b != 0) {
                hash.update(&buf[..n]);
                match extents.last_mut() {
                    Some(last) if last[0] + last[1] == off => last[1] += n as u64,
                    _ => extents.push([off, n as u64]),
                }
            }
            off += n as u64;
        }
        pos = hole;
    }
    Ok(ArchivedFile {
        name: name.to_owned(),
        size,
        extents,
        sha256: hex::encode(hash.finalize()),
    })
}

/// Reads the bytes of a file's extents, in order.
struct ExtentReader<'a> {
    file: &'a mut File,
    extents: &'a [[u64; 2]],
    index: usize,
    left: u64,
}

impl<'a> ExtentReader<'a> {
    fn new(file: &'a mut File, extents: &'a [[u64; 2]]) -> Self {
        Self {
            file,
            extents,
            index: 0,
            left: 0,
        }
    }
}

impl Read for ExtentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.left == 0 {
            let Some([off, len]) = self.extents.get(self.index).copied() else {
                return Ok(0);
            };
            self.file.seek(SeekFrom::Start(off))?;
            self.left = len;
            self.index += 1;
        }
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank while it was exported",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Import the archive at `src` as a snapshot. Nothing is written unless the archive is
/// complete, intact and restorable on this host.
pub fn import(paths: &Paths, src: &Path) -> Result<SnapshotMeta> {
    let file = File::open(src).map_err(|e| Error::io(format!("open {}", src.display()), e))?;
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, file));
    let mut entries = archive
        .entries()
        .map_err(|e| bad_archive(src, format!("unreadable tar: {e}")))?;

    let manifest: Manifest = {
        let mut first = entries
            .next()
            .ok_or_else(|| bad_archive(src, "it is empty"))?
            .map_err(|e| bad_archive(src, e))?;
        let name = first.path().map_err(|e| bad_archive(src, e))?.into_owned();
        if name != Path::new(MANIFEST) || first.size() > MAX_MANIFEST {
            return Err(bad_archive(
                src,
                format!("it does not start with {MANIFEST}"),
            ));
        }
        let mut doc = Vec::new();
        first
            .read_to_end(&mut doc)
            .map_err(|e| bad_archive(src, e))?;
        let unread = |e: serde_json::Error| bad_archive(src, format!("{MANIFEST}: {e}"));
        let doc: serde_json::Value = serde_json::from_slice(&doc).map_err(unread)?;
        // What `create` would refuse is refused with its flag's code, before the typed read
        // would call it unreadable.
        if let Some(meta) = doc.get("metadata") {
            super::trust::check_raw_values(meta)?;
        }
        serde_json::from_value(doc).map_err(unread)?
    };
    if manifest.format != FORMAT || manifest.format_version > FORMAT_VERSION {
        return Err(Error::new(
            ErrorCode::VmSnapshotIncompatible,
            format!(
                "{} is format {} version {}; this vmsan reads {FORMAT} version {FORMAT_VERSION}",
                src.display(),
                manifest.format,
                manifest.format_version
            ),
        ));
    }
    let mut meta = manifest.metadata;
    let id = meta.id.clone();
    super::trust::check(&meta, &id)?;
    // What this host exposes (published ports, resolvers) is not the archive's to decide.
    super::trust::strip_host_side(&mut meta);
    let installed = crate::artifacts::installed_firecracker_version(paths)?;
    meta.check_compatible(&installed.to_string(), &HostFingerprint::current())?;
    if paths.snapshot_dir(&id).exists() {
        return Err(Error::new(
            ErrorCode::VmSnapshotExists,
            format!("Snapshot {id} already exists"),
        )
        .detail("snapshotId", id.as_str()));
    }
    if manifest.agent_token.len() < 32
        || !manifest
            .agent_token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
    {
        return Err(bad_archive(src, "the agent token is malformed"));
    }
    let mut expected = std::collections::BTreeMap::new();
    for f in manifest.files {
        if !DATA_FILES.contains(&f.name.as_str()) {
            return Err(bad_archive(src, format!("unknown file {:?}", f.name)));
        }
        f.check().map_err(|e| bad_archive(src, e))?;
        if meta.files.get(&f.name).map(|i| i.size) != Some(f.size) {
            return Err(bad_archive(
                src,
                format!("{} has a size the metadata does not record", f.name),
            ));
        }
        if expected.insert(f.name.clone(), f).is_some() {
            return Err(bad_archive(src, "a file is listed twice"));
        }
    }
    let needed: u64 = expected.values().map(ArchivedFile::data_len).sum();
    check_space(paths.home(), needed)?;

    let staging = Staging::new(paths, &id)?;
    let mut seen = std::collections::BTreeSet::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| bad_archive(src, e))?;
        let path = entry.path().map_err(|e| bad_archive(src, e))?.into_owned();
        let name = path
            .strip_prefix("files")
            .ok()
            .and_then(|p| p.to_str())
            .filter(|n| !n.contains('/'))
            .map(str::to_owned)
            .ok_or_else(|| bad_archive(src, format!("unexpected entry {}", path.display())))?;
        let Some(f) = expected.get(&name) else {
            return Err(bad_archive(
                src,
                format!("unexpected entry {}", path.display()),
            ));
        };
        if entry.header().entry_type() != tar::EntryType::Regular
            || entry.size() != f.data_len()
            || !seen.insert(name.clone())
        {
            return Err(bad_archive(
                src,
                format!("entry {} does not match the manifest", path.display()),
            ));
        }
        extract(&mut entry, f, &staging.path(&name)).map_err(|e| match e {
            Extract::Io(e) => e,
            Extract::Bad(why) => bad_archive(src, why),
        })?;
    }
    if let Some(missing) = DATA_FILES.iter().find(|n| !seen.contains(**n)) {
        return Err(bad_archive(
            src,
            format!("it is truncated: {missing} is missing"),
        ));
    }
    // Checked like any snapshot is on restore, before it is published.
    staging.check(&meta)?;
    staging.publish(paths, &meta, &manifest.agent_token)?;
    Ok(meta)
}

enum Extract {
    Io(Error),
    Bad(String),
}

/// Recreate one file from its extents, checking their digest.
fn extract(data: &mut dyn Read, f: &ArchivedFile, dest: &Path) -> std::result::Result<(), Extract> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dest)
        .map_err(|e| Extract::Io(Error::io(format!("create {}", dest.display()), e)))?;
    out.set_len(f.size)
        .map_err(|e| Extract::Io(Error::io(format!("size {}", dest.display()), e)))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for [off, len] in &f.extents {
        out.seek(SeekFrom::Start(*off))
            .map_err(|e| Extract::Io(Error::io(format!("seek {}", dest.display()), e)))?;
        let mut left = *len;
        while left > 0 {
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            data.read_exact(&mut buf[..n])
                .map_err(|e| Extract::Bad(format!("{} is truncated: {e}", f.name)))?;
            hash.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| Extract::Io(Error::io(format!("write {}", dest.display()), e)))?;
            left -= n as u64;
        }
    }
    if hex::encode(hash.finalize()) != f.sha256 {
        return Err(Extract::Bad(format!(
            "{} does not match its digest",
            f.name
        )));
    }
    out.sync_all()
        .map_err(|e| Extract::Io(Error::io(format!("fsync {}", dest.display()), e)))
}

/// Refuse an import that would fill the disk.
fn check_space(dir: &Path, needed: u64) -> Result<()> {
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| Error::io(format!("statvfs {}", dir.display()), e.into()))?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    if needed > free {
        return Err(Error::new(
            ErrorCode::Io,
            format!(
                "Not enough disk space to import: {} MiB needed, {} MiB free in {}",
                needed >> 20,
                free >> 20,
                dir.display()
            ),
        )
        .fix("Free some space (e.g. `vmsan snapshot delete`, `vmsan image prune`) and retry."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_skips_holes_and_zero_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut f = File::create(&p).unwrap();
        f.set_len(1 << 20).unwrap();
        // Data, then explicit zeros (not a hole), then data again.
        f.write_all(&[7u8; BLOCK]).unwrap();
        f.write_all(&vec![0u8; BLOCK]).unwrap();
        f.write_all(&[9u8; 10]).unwrap();
        drop(f);
        let a = scan(&p, "memory").unwrap();
        assert_eq!(a.size, 1 << 20);
        assert_eq!(a.extents[0], [0, BLOCK as u64]);
        assert_eq!(a.extents.len(), 2);
        assert_eq!(a.extents[1][0], 2 * BLOCK as u64);
        a.check().unwrap();

        // What extract writes back reads the same.
        let mut data = Vec::new();
        let mut src = File::open(&p).unwrap();
        ExtentReader::new(&mut src, &a.extents)
            .read_to_end(&mut data)
            .unwrap();
        assert_eq!(data.len() as u64, a.data_len());
        let out = dir.path().join("g");
        assert!(extract(&mut data.as_slice(), &a, &out).is_ok());
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&p).unwrap());

        // A flipped byte is caught.
        data[3] ^= 1;
        let out2 = dir.path().join("h");
        assert!(matches!(
            extract(&mut data.as_slice(), &a, &out2),
            Err(Extract::Bad(_))
        ));
    }

    #[test]
    fn extents_must_be_ordered_and_inside() {
        let f = |extents: Vec<[u64; 2]>| ArchivedFile {
            name: "memory".into(),
            size: 100,
            extents,
            sha256: String::new(),
        };
        assert!(f(vec![[0, 10], [20, 80]]).check().is_ok());
        assert!(f(vec![[20, 10], [0, 10]]).check().is_err());
        assert!(f(vec![[0, 10], [5, 10]]).check().is_err());
        assert!(f(vec![[90, 11]]).check().is_err());
        assert!(f(vec![[0, 0]]).check().is_err());
        assert!(f(vec![[u64::MAX, 2]]).check().is_err());
    }
}
