//! Unpacking an upload: a tar stream under a destination directory that no name, symlink or
//! earlier entry can lead out of, all or nothing.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fchmod, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use vmsan_proto::UploadResult;

use super::{CHUNK, FileError};

/// Open (creating when missing) a directory below `parent`, never following a symlink.
fn open_dir_at(
    parent: &OwnedFd,
    name: &Path,
    create: bool,
    shown: &Path,
) -> Result<OwnedFd, FileError> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    match openat(parent.as_fd(), name, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::ENOENT) if create => {
            match mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => {
                    return Err(FileError::io(
                        &format!("create directory {}", shown.display()),
                        &e.into(),
                    ));
                }
            }
            openat(parent.as_fd(), name, flags, Mode::empty()).map_err(|e| {
                FileError::io(&format!("open directory {}", shown.display()), &e.into())
            })
        }
        Err(Errno::ELOOP | Errno::ENOTDIR) => Err(FileError::escape(format!(
            "{} in the destination is a symlink or not a directory: refusing to write through it",
            shown.display()
        ))),
        Err(e) => Err(FileError::io(
            &format!("open directory {}", shown.display()),
            &e.into(),
        )),
    }
}

/// The normal components of an archive path, or an error for `..`, absolute paths and the like.
fn clean_components(p: &Path) -> Result<Vec<&std::ffi::OsStr>, FileError> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(FileError::escape(format!(
                    "archive path {} contains `..`",
                    p.display()
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(FileError::escape(format!(
                    "archive path {} is absolute",
                    p.display()
                )));
            }
        }
    }
    Ok(out)
}

/// True when a symlink at depth `depth` (number of directories between the destination root
/// and the link) with `target` resolves, lexically, inside the destination.
fn symlink_stays_inside(depth: usize, target: &Path) -> bool {
    let mut level = i64::try_from(depth).unwrap_or(i64::MAX);
    for c in target.components() {
        match c {
            Component::Normal(_) => level += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                level -= 1;
                if level < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// What an upload has done so far, to be made final ([`Staged::commit`]) or undone
/// ([`Staged::undo`]): files and symlinks wait under temporary names until the whole archive
/// has been read, directories it made are removed again on failure.
#[derive(Default)]
struct Staged {
    /// `(parent components, temporary name, final name)`, in archive order.
    renames: Vec<(Vec<OsString>, OsString, OsString)>,
    /// Directories this upload created (components from the destination), in creation order.
    created_dirs: Vec<Vec<OsString>>,
    /// Directory modes to apply at the end (components, mode).
    dir_modes: Vec<(Vec<OsString>, u32)>,
}

static STAGE_SEQ: AtomicU64 = AtomicU64::new(0);

fn stage_name() -> OsString {
    let n = STAGE_SEQ.fetch_add(1, Ordering::Relaxed);
    OsString::from(format!(".vmsan-upload-{}-{n}", std::process::id()))
}

/// Walk `comps` below `root` without following symlinks (and without creating anything).
fn walk_dir(root: &OwnedFd, comps: &[OsString], dest: &Path) -> Result<OwnedFd, FileError> {
    let mut dir = root
        .try_clone()
        .map_err(|e| FileError::io("dup directory", &e))?;
    let mut shown = dest.to_path_buf();
    for c in comps {
        shown.push(c);
        dir = open_dir_at(&dir, Path::new(c), false, &shown)?;
    }
    Ok(dir)
}

impl Staged {
    fn commit(&self, root: &OwnedFd, dest: &Path) -> Result<(), FileError> {
        for (parents, temp, name) in &self.renames {
            let dir = walk_dir(root, parents, dest)?;
            renameat(dir.as_fd(), temp.as_os_str(), dir.as_fd(), name.as_os_str()).map_err(
                |e| {
                    FileError::io(
                        &format!("rename onto {}", dest.join(name).display()),
                        &e.into(),
                    )
                },
            )?;
        }
        for (comps, mode) in self.dir_modes.iter().rev() {
            let dir = walk_dir(root, comps, dest)?;
            fchmod(dir.as_fd(), Mode::from_bits_truncate(*mode))
                .map_err(|e| FileError::io(&format!("chmod {}", dest.display()), &e.into()))?;
        }
        Ok(())
    }

    /// Remove every temporary entry and every directory this upload created (best effort:
    /// a directory someone else filled meanwhile stays).
    fn undo(&self, root: &OwnedFd, dest: &Path) {
        for (parents, temp, _) in self.renames.iter().rev() {
            if let Ok(dir) = walk_dir(root, parents, dest) {
                let _ = unlinkat(dir.as_fd(), temp.as_os_str(), UnlinkatFlags::NoRemoveDir);
            }
        }
        for comps in self.created_dirs.iter().rev() {
            let Some((last, parents)) = comps.split_last() else {
                continue;
            };
            if let Ok(dir) = walk_dir(root, parents, dest) {
                let _ = unlinkat(dir.as_fd(), last.as_os_str(), UnlinkatFlags::RemoveDir);
            }
        }
    }
}

/// Open (creating when missing) a directory below `parent`, noting in `staged` when this
/// upload created it.
fn stage_dir(
    parent: &OwnedFd,
    comps: &[OsString],
    shown: &Path,
    staged: &mut Staged,
) -> Result<OwnedFd, FileError> {
    let name = comps.last().map(OsString::as_os_str).unwrap_or_default();
    match mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o755)) {
        Ok(()) => staged.created_dirs.push(comps.to_vec()),
        Err(Errno::EEXIST) => {}
        Err(e) => {
            return Err(FileError::io(
                &format!("create directory {}", shown.display()),
                &e.into(),
            ));
        }
    }
    open_dir_at(parent, Path::new(name), false, shown)
}

/// True when `name` in `dir` exists as a symlink.
fn is_symlink_at(dir: &OwnedFd, name: &OsStr) -> bool {
    fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| {
        SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFLNK
    })
}

/// Unpack a tar stream under `dest` (created when missing). Every path is resolved component by
/// component with `O_NOFOLLOW` from a descriptor of `dest`, so neither `..`, absolute names,
/// symlinks in the archive nor symlinks already in the destination can lead outside it.
///
/// All or nothing: files and symlinks are written under temporary names and renamed onto
/// their names only once the whole archive has been read and accepted; on any refusal or
/// error the temporary entries and the directories this upload created are removed, so a
/// failed upload changes nothing that was there and leaves nothing behind.
pub(crate) fn extract<R: Read>(dest: &Path, reader: R) -> Result<UploadResult, FileError> {
    std::fs::create_dir_all(dest)
        .map_err(|e| FileError::io(&format!("create {}", dest.display()), &e))?;
    let root: OwnedFd = File::open(dest)
        .map_err(|e| FileError::io(&format!("open {}", dest.display()), &e))?
        .into();
    let mut staged = Staged::default();
    let res = extract_staged(dest, &root, reader, &mut staged)
        .and_then(|r| staged.commit(&root, dest).map(|()| r));
    if res.is_err() {
        staged.undo(&root, dest);
    }
    res
}

fn extract_staged<R: Read>(
    dest: &Path,
    root: &OwnedFd,
    reader: R,
    staged: &mut Staged,
) -> Result<UploadResult, FileError> {
    let mut archive = tar::Archive::new(reader);
    let mut result = UploadResult {
        entries: 0,
        bytes: 0,
    };
    let entries = archive
        .entries()
        .map_err(|e| FileError::io("read tar stream", &e))?;
    let mut buf = vec![0u8; CHUNK];
    for entry in entries {
        let mut entry = entry.map_err(|e| FileError::io("read tar entry", &e))?;
        let path = entry
            .path()
            .map_err(|e| FileError::io("tar entry path", &e))?
            .into_owned();
        let comps: Vec<OsString> = clean_components(&path)?
            .into_iter()
            .map(OsStr::to_os_string)
            .collect();
        let kind = entry.header().entry_type();
        let mode = entry
            .header()
            .mode()
            .map_err(|e| FileError::io("tar entry mode", &e))?
            & 0o7777;
        let Some((last, parents)) = comps.split_last() else {
            // The archive's root (`./`): its mode goes to the destination.
            if kind.is_dir() {
                staged.dir_modes.push((Vec::new(), mode));
            }
            continue;
        };
        let mut dir = root
            .try_clone()
            .map_err(|e| FileError::io("dup directory", &e))?;
        let mut shown = dest.to_path_buf();
        for (i, p) in parents.iter().enumerate() {
            shown.push(p);
            dir = stage_dir(&dir, &comps[..=i], &shown, staged)?;
        }
        shown.push(last);
        if kind.is_dir() {
            stage_dir(&dir, &comps, &shown, staged)?;
            staged.dir_modes.push((comps.clone(), mode));
        } else if kind.is_file() || kind.is_gnu_sparse() {
            if is_symlink_at(&dir, last) {
                return Err(FileError::escape(format!(
                    "{} exists as a symlink in the destination: refusing to write through it",
                    shown.display()
                )));
            }
            let temp = stage_name();
            let flags = OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC;
            let fd = openat(
                dir.as_fd(),
                temp.as_os_str(),
                flags,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| FileError::io(&format!("create {}", shown.display()), &e.into()))?;
            staged.renames.push((parents.to_vec(), temp, last.clone()));
            let mut f = File::from(fd);
            loop {
                let n = entry
                    .read(&mut buf)
                    .map_err(|e| FileError::io("read tar entry data", &e))?;
                if n == 0 {
                    break;
                }
                f.write_all(&buf[..n])
                    .map_err(|e| FileError::io(&format!("write {}", shown.display()), &e))?;
                result.bytes += n as u64;
            }
            fchmod(f.as_fd(), Mode::from_bits_truncate(mode))
                .map_err(|e| FileError::io(&format!("chmod {}", shown.display()), &e.into()))?;
        } else if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(|e| FileError::io("tar link name", &e))?
                .ok_or_else(|| {
                    FileError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "symlink without a target",
                    )
                })?
                .into_owned();
            if !symlink_stays_inside(parents.len(), &target) {
                return Err(FileError::escape(format!(
                    "symlink {} -> {} points outside the destination",
                    shown.display(),
                    target.display()
                )));
            }
            let temp = stage_name();
            nix::unistd::symlinkat(&target, dir.as_fd(), temp.as_os_str())
                .map_err(|e| FileError::io(&format!("symlink {}", shown.display()), &e.into()))?;
            staged.renames.push((parents.to_vec(), temp, last.clone()));
        } else {
            return Err(FileError::new(
                StatusCode::BAD_REQUEST,
                "unsupported",
                format!(
                    "{}: only files, directories and symlinks can be uploaded",
                    shown.display()
                ),
            ));
        }
        result.entries += 1;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_are_checked_lexically() {
        assert!(symlink_stays_inside(0, Path::new("a/b")));
        assert!(symlink_stays_inside(1, Path::new("../x")));
        assert!(!symlink_stays_inside(0, Path::new("../x")));
        assert!(!symlink_stays_inside(1, Path::new("a/../../../x")));
        assert!(!symlink_stays_inside(3, Path::new("/etc/passwd")));
    }

    #[test]
    fn clean_components_rejects_escapes() {
        assert!(clean_components(Path::new("a/../b")).is_err());
        assert!(clean_components(Path::new("/etc/x")).is_err());
        assert_eq!(clean_components(Path::new("./a/b")).unwrap().len(), 2);
    }
}
