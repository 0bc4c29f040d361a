//! Writing what a guest sends onto the host without trusting it.
//!
//! A download's content, names, modes and sizes come from the guest, which may be hostile. So:
//!
//! - the destination directory is opened with `O_DIRECTORY|O_NOFOLLOW`, and every component
//!   below it is opened with `openat(…, O_NOFOLLOW)`: a symlink planted by an earlier download
//!   (or earlier in the same archive) is never followed;
//! - a file is written under a fresh temporary name (`O_CREAT|O_EXCL|O_NOFOLLOW`), its mode set
//!   on the descriptor, then `renameat` onto its final name, which replaces a symlink there
//!   instead of writing through it, and never leaves a partial file under the final name;
//! - modes lose setuid, setgid and sticky and go through the caller's umask, as `tar` and `cp`
//!   do for a non-root extraction policy;
//! - runs of zero blocks are skipped (holes), and the logical size is checked against a limit
//!   before anything is written.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{Mode, fchmod, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::ClientError;

mod unpack;
pub(crate) use unpack::unpack;

/// Blocks this size that hold only zeros are left as holes.
const HOLE_BLOCK: u64 = 4096;
/// Read buffer for file data.
const BUF: usize = 1024 * 1024;

/// The permission bits a downloaded entry gets: the guest's `rwx` bits only (no setuid,
/// setgid or sticky), through the caller's umask.
pub(crate) fn host_mode(guest_mode: u32, umask: u32) -> u32 {
    guest_mode & 0o777 & !umask
}

/// This process's umask, read from `/proc/self/status` (reading it with `umask(2)` would
/// change it for a moment under other threads). `0o022` when the kernel does not say.
pub(crate) fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// What the guest may make us write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Largest logical size of the download (a file's size, or a directory's file sizes
    /// summed).
    pub(crate) max_bytes: u64,
    /// The caller's umask.
    pub(crate) umask: u32,
}

fn refused(what: impl Into<String>) -> ClientError {
    ClientError::Refused(what.into())
}

fn nix_io(what: impl Into<String>, e: Errno) -> ClientError {
    ClientError::io(what, io::Error::from(e))
}

/// Open `path` as a directory without following a symlink at its last component, creating it
/// (mode 0700, fixed up by the caller) when `create` is set and it is missing. Components
/// above the last are the caller's own path and resolve normally.
///
/// Returns the descriptor and whether this call created the directory.
pub(crate) fn open_dest_dir(path: &Path, create: bool) -> Result<(OwnedFd, bool), ClientError> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let shown = path.display();
    match nix::fcntl::open(path, flags, Mode::empty()) {
        Ok(fd) => Ok((fd, false)),
        Err(Errno::ENOENT) if create => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| ClientError::io(format!("create {}", parent.display()), e))?;
            }
            let created = match nix::unistd::mkdir(path, Mode::from_bits_truncate(0o700)) {
                Ok(()) => true,
                Err(Errno::EEXIST) => false,
                Err(e) => return Err(nix_io(format!("create {shown}"), e)),
            };
            let fd = nix::fcntl::open(path, flags, Mode::empty()).map_err(|e| match e {
                Errno::ELOOP | Errno::ENOTDIR => {
                    refused(format!("{shown} is a symlink or not a directory"))
                }
                e => nix_io(format!("open {shown}"), e),
            })?;
            Ok((fd, created))
        }
        Err(Errno::ELOOP | Errno::ENOTDIR) => Err(refused(format!(
            "{shown} is a symlink or not a directory: give the real directory"
        ))),
        Err(e) => Err(nix_io(format!("open {shown}"), e)),
    }
}

/// Open the directory `name` inside `parent` without following a symlink; with `create`,
/// make it (mode 0700) when missing. Returns the descriptor and whether it was created.
fn open_sub_dir(
    parent: &OwnedFd,
    name: &OsStr,
    create: bool,
    shown: &Path,
) -> Result<(OwnedFd, bool), ClientError> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let mut created = false;
    if create {
        match mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => created = true,
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(nix_io(format!("create {}", shown.display()), e)),
        }
    }
    match openat(parent.as_fd(), name, flags, Mode::empty()) {
        Ok(fd) => Ok((fd, created)),
        Err(Errno::ELOOP | Errno::ENOTDIR) => Err(refused(format!(
            "{} is a symlink or not a directory on the host: not writing through it",
            shown.display()
        ))),
        Err(e) => Err(nix_io(format!("open {}", shown.display()), e)),
    }
}

static PART_SEQ: AtomicU64 = AtomicU64::new(0);

/// A file being written under a temporary name in its directory. Dropped before
/// [`PartFile::commit`], it removes itself: the final name never holds a partial file.
pub(crate) struct PartFile<'a> {
    dir: &'a OwnedFd,
    temp: OsString,
    file: File,
    done: bool,
}

impl std::fmt::Debug for PartFile<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartFile")
            .field("temp", &self.temp)
            .finish()
    }
}

/// A fresh name for a temporary entry in a directory.
fn temp_name() -> OsString {
    let n = PART_SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    OsString::from(format!(
        ".vmsan-part-{}-{n}-{nanos:08x}",
        std::process::id()
    ))
}

impl<'a> PartFile<'a> {
    /// Create a new temporary file (mode 0600) in `dir`.
    pub(crate) fn create(dir: &'a OwnedFd, shown: &Path) -> Result<Self, ClientError> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        loop {
            let temp = temp_name();
            match openat(
                dir.as_fd(),
                temp.as_os_str(),
                flags,
                Mode::from_bits_truncate(0o600),
            ) {
                Ok(fd) => {
                    return Ok(Self {
                        dir,
                        temp,
                        file: File::from(fd),
                        done: false,
                    });
                }
                Err(Errno::EEXIST) => continue,
                Err(e) => {
                    return Err(nix_io(
                        format!("create a temporary file in {}", shown.display()),
                        e,
                    ));
                }
            }
        }
    }

    /// Write `data` at `offset`, leaving zeros unwritten so that whole zero blocks stay holes.
    /// Correct because the file is new and each byte of it is written at most once: what is
    /// not written reads as zero. Runs of data blocks go out in one write each.
    pub(crate) fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut pos = 0usize;
        // Start of the pending run of data (not yet written), as an index into `data`.
        let mut run: Option<usize> = None;
        while pos < data.len() {
            // Block by block, aligned to the file's offsets.
            let at = offset + pos as u64;
            let to_boundary = usize::try_from(HOLE_BLOCK - at % HOLE_BLOCK).unwrap_or(usize::MAX);
            let end = pos.saturating_add(to_boundary).min(data.len());
            let zero = is_zero(&data[pos..end]);
            match (zero, run) {
                (true, Some(start)) => {
                    self.file
                        .write_all_at(&data[start..pos], offset + start as u64)?;
                    run = None;
                }
                (false, None) => run = Some(pos),
                _ => {}
            }
            pos = end;
        }
        if let Some(start) = run {
            self.file
                .write_all_at(&data[start..], offset + start as u64)?;
        }
        Ok(())
    }

    /// Set the final size and mode, then rename onto `name` (replacing whatever non-directory
    /// is there, a symlink included, without following it).
    pub(crate) fn commit(
        mut self,
        size: u64,
        mode: u32,
        name: &OsStr,
        shown: &Path,
    ) -> Result<(), ClientError> {
        let what = |w: &str| format!("{w} {}", shown.display());
        self.file
            .set_len(size)
            .map_err(|e| ClientError::io(what("write"), e))?;
        fchmod(self.file.as_fd(), Mode::from_bits_truncate(mode))
            .map_err(|e| nix_io(what("chmod"), e))?;
        renameat(
            self.dir.as_fd(),
            self.temp.as_os_str(),
            self.dir.as_fd(),
            name,
        )
        .map_err(|e| nix_io(what("rename onto"), e))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for PartFile<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = unlinkat(
                self.dir.as_fd(),
                self.temp.as_os_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

/// True when `b` holds only zeros (stops at the first other byte: data blocks cost little).
fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|x| *x == 0)
}

/// Copy a dense stream of exactly `size` bytes into `part` (holes kept for zero blocks).
/// Returns the bytes read.
pub(crate) fn copy_dense<R: Read>(
    mut r: R,
    part: &PartFile<'_>,
    size: Option<u64>,
    policy: &Policy,
) -> Result<u64, ClientError> {
    let mut buf = vec![0u8; BUF];
    let mut off = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_error(e)),
        };
        off += n as u64;
        if off > policy.max_bytes {
            return Err(ClientError::TooLarge {
                size: off,
                limit: policy.max_bytes,
            });
        }
        if size.is_some_and(|s| off > s) {
            return Err(ClientError::Protocol(format!(
                "the agent sent more than the {} bytes it announced",
                size.unwrap_or(0)
            )));
        }
        part.write_at(off - n as u64, &buf[..n])
            .map_err(|e| ClientError::io("write download", e))?;
    }
    Ok(off)
}

/// A read error of the stream between the network side and the writer: the network side's own
/// error when it sent one.
fn stream_error(e: io::Error) -> ClientError {
    match e.downcast::<ClientError>() {
        Ok(c) => c,
        Err(e) => ClientError::io("read download stream", e),
    }
}

/// Copy an extents stream ([`vmsan_proto::LAYOUT_EXTENTS`]) of a file of `size` bytes into
/// `part` (the caller has checked `size` against the limit). Returns the data bytes read.
pub(crate) fn copy_extents<R: Read>(
    mut r: R,
    part: &PartFile<'_>,
    size: u64,
) -> Result<u64, ClientError> {
    let mut buf = vec![0u8; BUF];
    let mut received = 0u64;
    let mut next_min = 0u64;
    loop {
        let mut head = [0u8; vmsan_proto::EXTENT_HEADER_LEN];
        match read_full(&mut r, &mut head).map_err(stream_error)? {
            0 => break,
            n if n < head.len() => {
                return Err(ClientError::Protocol("extent header cut short".into()));
            }
            _ => {}
        }
        let (offset, len) = vmsan_proto::parse_extent_header(head);
        let end = offset
            .checked_add(len)
            .filter(|e| offset >= next_min && *e <= size)
            .ok_or_else(|| {
                ClientError::Protocol(format!(
                    "extent {offset}+{len} overlaps an earlier one or lies past the file's {size} bytes"
                ))
            })?;
        next_min = end;
        let mut off = offset;
        while off < end {
            let want = usize::try_from(end - off).unwrap_or(BUF).min(BUF);
            let n = read_full(&mut r, &mut buf[..want]).map_err(stream_error)?;
            if n == 0 {
                return Err(ClientError::Protocol("extent data cut short".into()));
            }
            part.write_at(off, &buf[..n])
                .map_err(|e| ClientError::io("write download", e))?;
            off += n as u64;
            received += n as u64;
        }
    }
    Ok(received)
}

/// Read until `buf` is full or the stream ends; the count read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn modes_lose_special_bits_and_follow_the_umask() {
        assert_eq!(host_mode(0o6777, 0o022), 0o755);
        assert_eq!(host_mode(0o1777, 0o077), 0o700);
        assert_eq!(host_mode(0o177777, 0), 0o777);
        assert_eq!(host_mode(0o644, 0o022), 0o644);
    }

    #[test]
    fn zero_blocks_become_holes() {
        let dir = tempfile::tempdir().unwrap();
        let (fd, _) = open_dest_dir(dir.path(), false).unwrap();
        let part = PartFile::create(&fd, dir.path()).unwrap();
        let mut data = vec![0u8; 1 << 20];
        data[5] = 1;
        part.write_at(0, &data).unwrap();
        part.write_at(64 << 20, b"end").unwrap();
        part.commit((64 << 20) + 3, 0o600, OsStr::new("f"), dir.path())
            .unwrap();
        let m = std::fs::metadata(dir.path().join("f")).unwrap();
        assert_eq!(m.len(), (64 << 20) + 3);
        assert!(m.blocks() * 512 <= 64 * 1024, "{} blocks", m.blocks());
    }

    #[test]
    fn pieces_of_any_size_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let (fd, _) = open_dest_dir(dir.path(), false).unwrap();
        let part = PartFile::create(&fd, dir.path()).unwrap();
        // Data and zero stretches that do not line up with blocks or with the pieces.
        let mut want = vec![0u8; 200_000];
        for (i, b) in want.iter_mut().enumerate() {
            if (i / 7_000) % 3 != 1 {
                *b = u8::try_from(i % 251).unwrap() | 1;
            }
        }
        for (n, piece) in want.chunks(999).enumerate() {
            part.write_at((n * 999) as u64, piece).unwrap();
        }
        part.commit(want.len() as u64, 0o600, OsStr::new("f"), dir.path())
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), want);
    }

    #[test]
    fn an_uncommitted_part_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (fd, _) = open_dest_dir(dir.path(), false).unwrap();
        let part = PartFile::create(&fd, dir.path()).unwrap();
        part.write_at(0, b"half").unwrap();
        drop(part);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
