//! What the `/v1/fs/*` routes say about a path ([`FsEntry`]), and the walk of `/v1/fs/list`,
//! which never follows a symlink below the directory it starts from.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use http::StatusCode;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{Mode, fstatat};
use vmsan_proto::{FileKind, FsEntry, MAX_LIST_ENTRIES, fs_codes};

use super::FileError;
use crate::users::Names;

/// The `stat` fields an entry is made of, from either std's metadata or a raw `fstatat`.
struct Raw {
    /// Whole `st_mode` (type and permission bits).
    mode: u32,
    size: u64,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nsec: i64,
}

impl Raw {
    fn from_metadata(m: &std::fs::Metadata) -> Self {
        Self {
            mode: m.mode(),
            size: m.size(),
            uid: m.uid(),
            gid: m.gid(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }

    fn from_stat(s: &nix::sys::stat::FileStat) -> Self {
        Self {
            mode: s.st_mode,
            size: u64::try_from(s.st_size).unwrap_or(0),
            uid: s.st_uid,
            gid: s.st_gid,
            mtime: s.st_mtime,
            mtime_nsec: s.st_mtime_nsec,
        }
    }

    fn kind(&self) -> FileKind {
        match self.mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFLNK => FileKind::Symlink,
            _ => FileKind::Other,
        }
    }
}

/// `ls -l` style type letter and permission triplets, setuid/setgid/sticky included.
fn permissions(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    for (shift, special, with_x, without_x) in [
        (6, libc::S_ISUID, 's', 'S'),
        (3, libc::S_ISGID, 's', 'S'),
        (0, libc::S_ISVTX, 't', 'T'),
    ] {
        let bits = (mode >> shift) & 0o7;
        s.push(if bits & 0o4 != 0 { 'r' } else { '-' });
        s.push(if bits & 0o2 != 0 { 'w' } else { '-' });
        s.push(match (mode & special != 0, bits & 0o1 != 0) {
            (true, true) => with_x,
            (true, false) => without_x,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// Year, month, day of a count of days since 1970-01-01 (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// RFC 3339 in UTC; nanoseconds only when there are some (E2B's timestamps read both).
fn rfc3339(secs: i64, nanos: i64) -> String {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let frac = if (1..1_000_000_000).contains(&nanos) {
        format!(".{nanos:09}")
    } else {
        String::new()
    };
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn make_entry(path: &Path, raw: &Raw, symlink_target: Option<String>, names: &Names) -> FsEntry {
    FsEntry {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into()),
        kind: raw.kind(),
        symlink_target,
        path: path.to_string_lossy().into_owned(),
        size: raw.size,
        mode: raw.mode & 0o7777,
        permissions: permissions(raw.mode),
        owner: names.user(raw.uid),
        group: names.group(raw.gid),
        modified_time: rfc3339(raw.mtime, raw.mtime_nsec),
    }
}

/// The entry of `path` itself: a symlink is described, not followed.
pub(super) fn stat_entry(path: &Path, names: &Names) -> Result<FsEntry, FileError> {
    let m = std::fs::symlink_metadata(path)
        .map_err(|e| FileError::fs(&format!("stat {}", path.display()), &e))?;
    let target = if m.file_type().is_symlink() {
        std::fs::read_link(path)
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    } else {
        None
    };
    Ok(make_entry(path, &Raw::from_metadata(&m), target, names))
}

/// Entries below the directory `path`, `depth` levels deep (1: its own entries), sorted by
/// path. `path` itself may be a symlink to a directory (as `ls path/` would); below it every
/// directory is opened with `O_NOFOLLOW` from its parent's descriptor, so a symlink, even one
/// swapped in during the walk, is listed and never entered.
pub(super) fn list(path: &Path, depth: u32, names: &Names) -> Result<Vec<FsEntry>, FileError> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let root = nix::fcntl::open(path, flags, Mode::empty())
        .map_err(|e| FileError::fs(&format!("open directory {}", path.display()), &e.into()))?;
    let mut out = Vec::new();
    walk(root, path, depth.max(1), names, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(
    dir: OwnedFd,
    dir_path: &Path,
    levels: u32,
    names: &Names,
    out: &mut Vec<FsEntry>,
) -> Result<(), FileError> {
    let shown = || dir_path.display().to_string();
    let listing = dir
        .try_clone()
        .map_err(|e| FileError::fs(&format!("dup directory {}", shown()), &e))?;
    let mut d = Dir::from_fd(listing)
        .map_err(|e| FileError::fs(&format!("read directory {}", shown()), &e.into()))?;
    let mut subdirs: Vec<CString> = Vec::new();
    for ent in d.iter() {
        let ent =
            ent.map_err(|e| FileError::fs(&format!("read directory {}", shown()), &e.into()))?;
        let name: &CStr = ent.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        let child = dir_path.join(OsStr::from_bytes(name.to_bytes()));
        let st = match fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            // Removed since the directory was read: not there any more.
            Err(Errno::ENOENT) => continue,
            Err(e) => {
                return Err(FileError::fs(
                    &format!("stat {}", child.display()),
                    &e.into(),
                ));
            }
        };
        let raw = Raw::from_stat(&st);
        let target = match raw.kind() {
            FileKind::Symlink => readlinkat(&dir, name)
                .ok()
                .map(|t| t.to_string_lossy().into_owned()),
            _ => None,
        };
        if out.len() >= MAX_LIST_ENTRIES {
            return Err(FileError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                fs_codes::TOO_MANY_ENTRIES,
                format!(
                    "more than {MAX_LIST_ENTRIES} entries under the listed directory; list a \
                     smaller depth or a subdirectory"
                ),
            ));
        }
        if levels > 1 && raw.kind() == FileKind::Dir {
            subdirs.push(name.to_owned());
        }
        out.push(make_entry(&child, &raw, target, names));
    }
    drop(d);
    for name in subdirs {
        let child = dir_path.join(OsStr::from_bytes(name.to_bytes()));
        let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        match openat(&dir, name.as_c_str(), flags, Mode::empty()) {
            Ok(fd) => walk(fd, &child, levels - 1, names, out)?,
            // Replaced by a symlink or a file, or removed, since it was read, or not readable:
            // its entry stays listed, its contents are not.
            Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT | Errno::EACCES) => {}
            Err(e) => {
                return Err(FileError::fs(
                    &format!("open directory {}", child.display()),
                    &e.into(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_read_like_ls() {
        assert_eq!(permissions(libc::S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(permissions(libc::S_IFDIR | 0o1777), "drwxrwxrwt");
        assert_eq!(permissions(libc::S_IFLNK | 0o777), "lrwxrwxrwx");
        assert_eq!(permissions(libc::S_IFREG | 0o4755), "-rwsr-xr-x");
        assert_eq!(permissions(libc::S_IFREG | 0o2640), "-rw-r-S---");
        assert_eq!(permissions(libc::S_IFDIR | 0o1750), "drwxr-x--T");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_547_661, 5), "2026-12-06T09:01:01.000000005Z");
        assert_eq!(rfc3339(-1, 0), "1969-12-31T23:59:59Z");
    }
}
