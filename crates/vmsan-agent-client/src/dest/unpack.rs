//! A directory download: a tar stream unpacked below the destination without following any
//! symlink on the host, files written through [`PartFile`].

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::renameat;
use nix::sys::stat::{Mode, fchmod};
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};

use super::{
    BUF, PartFile, Policy, host_mode, nix_io, open_sub_dir, refused, stream_error, temp_name,
};
use crate::ClientError;

/// The normal components of an archive path; `..`, absolute paths and the like are refused.
fn clean_components(p: &Path) -> Result<Vec<&OsStr>, ClientError> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(refused(format!(
                    "archive path {} leaves the destination",
                    p.display()
                )));
            }
        }
    }
    Ok(out)
}

/// Unpack a directory download (a tar stream) into `root` (the directory `root_path`, which
/// this download created when `root_created`). Returns the file bytes written.
pub(crate) fn unpack<R: Read>(
    reader: R,
    root: &OwnedFd,
    root_path: &Path,
    root_created: bool,
    policy: &Policy,
) -> Result<u64, ClientError> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(stream_error)?;
    let mut total = 0u64;
    // Directories this download created, with their final mode: applied at the end, deepest
    // first, so that a read-only directory does not stop its own content from being written.
    let mut dir_modes: Vec<(Vec<OsString>, u32)> = Vec::new();
    let mut buf = vec![0u8; BUF];
    for entry in entries {
        let mut entry = entry.map_err(stream_error)?;
        let path = PathBuf::from(OsStr::from_bytes(&entry.path_bytes()));
        let comps = clean_components(&path)?;
        let kind = entry.header().entry_type();
        let mode = host_mode(
            entry
                .header()
                .mode()
                .map_err(|e| ClientError::io("tar entry mode", e))?,
            policy.umask,
        );
        let Some((last, parents)) = comps.split_last() else {
            if kind.is_dir() && root_created {
                dir_modes.push((Vec::new(), mode));
            }
            continue;
        };
        let mut shown = root_path.to_path_buf();
        let mut dir = root
            .try_clone()
            .map_err(|e| ClientError::io("dup directory", e))?;
        for p in parents {
            shown.push(p);
            dir = open_sub_dir(&dir, p, true, &shown)?.0;
        }
        shown.push(last);
        if kind.is_dir() {
            let (_, created) = open_sub_dir(&dir, last, true, &shown)?;
            if created {
                dir_modes.push((comps.iter().map(|c| c.to_os_string()).collect(), mode));
            }
        } else if kind.is_file() || kind.is_gnu_sparse() {
            let size = entry.size();
            total = total.saturating_add(size);
            if total > policy.max_bytes {
                return Err(ClientError::TooLarge {
                    size: total,
                    limit: policy.max_bytes,
                });
            }
            let part = PartFile::create(&dir, &shown)?;
            let mut off = 0u64;
            loop {
                let n = entry.read(&mut buf).map_err(stream_error)?;
                if n == 0 {
                    break;
                }
                part.write_at(off, &buf[..n])
                    .map_err(|e| ClientError::io(format!("write {}", shown.display()), e))?;
                off += n as u64;
            }
            part.commit(off, mode, last, &shown)?;
        } else if kind.is_symlink() {
            // Made as it is: a symlink on the host is only ever replaced, never followed.
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| refused(format!("symlink {} has no target", shown.display())))?
                .into_owned();
            let temp = temp_name();
            symlinkat(OsStr::from_bytes(&target), dir.as_fd(), temp.as_os_str())
                .map_err(|e| nix_io(format!("symlink {}", shown.display()), e))?;
            if let Err(e) = renameat(dir.as_fd(), temp.as_os_str(), dir.as_fd(), *last) {
                let _ = unlinkat(dir.as_fd(), temp.as_os_str(), UnlinkatFlags::NoRemoveDir);
                return Err(nix_io(format!("rename onto {}", shown.display()), e));
            }
        } else {
            return Err(refused(format!(
                "{}: a {kind:?} entry; only files, directories and symlinks are downloaded",
                shown.display()
            )));
        }
    }
    for (comps, mode) in dir_modes.iter().rev() {
        let mut dir = root
            .try_clone()
            .map_err(|e| ClientError::io("dup directory", e))?;
        let mut shown = root_path.to_path_buf();
        for c in comps {
            shown.push(c);
            dir = open_sub_dir(&dir, c, false, &shown)?.0;
        }
        fchmod(dir.as_fd(), Mode::from_bits_truncate(*mode))
            .map_err(|e| nix_io(format!("chmod {}", shown.display()), e))?;
    }
    Ok(total)
}
