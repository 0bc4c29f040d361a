//! The `/v1/fs/*` routes (what an E2B-style `filesystem.Filesystem` needs): stat, list to a
//! depth, mkdir with parents, recursive remove, move. Paths are normalised absolute guest
//! paths; errors carry the stable codes of [`vmsan_proto::fs_codes`]. Like upload and
//! download, they run as the agent's user (root in the guest).

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use http::{Response, StatusCode};
use vmsan_proto::{
    FsListRequest, FsListResponse, FsMakeDirRequest, FsMakeDirResponse, FsMoveRequest,
    MAX_LIST_DEPTH, PathRequest, fs_codes, routes,
};

use super::FileError;
use super::entry::{list, stat_entry};
use crate::server::{self, Body};
use crate::users::Names;

fn invalid(msg: impl Into<String>) -> FileError {
    FileError::new(StatusCode::BAD_REQUEST, fs_codes::INVALID, msg)
}

/// An absolute guest path without NUL, normalised lexically: repeated `/` and `.` dropped,
/// `..` taken back one component (never above `/`), as E2B's envd cleans its paths.
fn guest_path(p: &str) -> Result<PathBuf, FileError> {
    if !p.starts_with('/') || p.contains('\0') {
        return Err(FileError::new(
            StatusCode::BAD_REQUEST,
            fs_codes::BAD_PATH,
            format!("path {p:?} must be absolute and free of NUL bytes"),
        ));
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

fn make_dir(r: &FsMakeDirRequest, names: &Names) -> Result<FsMakeDirResponse, FileError> {
    let p = guest_path(&r.path)?;
    let mut b = std::fs::DirBuilder::new();
    b.mode(r.mode.unwrap_or(0o755) & 0o7777);
    let what = || format!("mkdir {}", p.display());
    // The last component first: its answer tells "made now" from "was there" without a
    // separate check; parents are made only when one is missing.
    let created = match b.create(&p) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            b.recursive(true)
                .create(&p)
                .map_err(|e| FileError::fs(&what(), &e))?;
            true
        }
        Err(e) => return Err(FileError::fs(&what(), &e)),
    };
    if !created {
        // Followed like `mkdir -p` does: a symlink to a directory is a directory that exists.
        let m = std::fs::metadata(&p).map_err(|e| FileError::fs(&what(), &e))?;
        if !m.is_dir() {
            return Err(FileError::new(
                StatusCode::CONFLICT,
                fs_codes::NOT_A_DIRECTORY,
                format!("{}: exists and is not a directory", what()),
            ));
        }
    }
    Ok(FsMakeDirResponse {
        created,
        entry: stat_entry(&p, names)?,
    })
}

fn remove(r: &PathRequest) -> Result<(), FileError> {
    let p = guest_path(&r.path)?;
    if p == Path::new("/") {
        return Err(invalid("refusing to remove /"));
    }
    let what = || format!("remove {}", p.display());
    let m = std::fs::symlink_metadata(&p).map_err(|e| FileError::fs(&what(), &e))?;
    // A symlink (to a directory or not) is removed itself. `remove_dir_all` does not follow
    // symlinks inside the tree either: on Linux it walks with `openat(O_NOFOLLOW)` and
    // `unlinkat` from directory descriptors, so a link swapped in mid-walk is unlinked, not
    // entered.
    let res = if m.file_type().is_dir() {
        std::fs::remove_dir_all(&p)
    } else {
        std::fs::remove_file(&p)
    };
    res.map_err(|e| FileError::fs(&what(), &e))
}

fn move_path(r: &FsMoveRequest, names: &Names) -> Result<vmsan_proto::FsEntry, FileError> {
    let (from, to) = (guest_path(&r.source)?, guest_path(&r.destination)?);
    if from == Path::new("/") || to == Path::new("/") {
        return Err(invalid("refusing to move / or onto /"));
    }
    // One `renameat2`: the kernel refuses a file over a directory (`is_a_directory`), a
    // directory over a file (`not_a_directory`) or over a non-empty directory (`not_empty`),
    // a directory into itself (`invalid`); without `overwrite`, any existing destination
    // (`already_exists`), atomically.
    crate::sys::rename_paths(&from, &to, !r.overwrite)
        .map_err(|e| FileError::fs(&format!("move {} to {}", from.display(), to.display()), &e))?;
    stat_entry(&to, names)
}

fn bad_json(e: &serde_json::Error) -> FileError {
    FileError::new(
        StatusCode::BAD_REQUEST,
        "bad_request",
        format!("invalid JSON body: {e}"),
    )
}

/// Answer one `/v1/fs/*` request (blocking: run it off the async threads).
pub(super) fn op(route: &str, body: &[u8], etc_root: &Path) -> Result<Response<Body>, FileError> {
    match route {
        routes::FS_STAT => {
            let r: PathRequest = serde_json::from_slice(body).map_err(|e| bad_json(&e))?;
            let entry = stat_entry(&guest_path(&r.path)?, &Names::load(etc_root))?;
            Ok(server::json(StatusCode::OK, &entry))
        }
        routes::FS_LIST => {
            let r: FsListRequest = serde_json::from_slice(body).map_err(|e| bad_json(&e))?;
            if r.depth > MAX_LIST_DEPTH {
                return Err(FileError::new(
                    StatusCode::BAD_REQUEST,
                    fs_codes::DEPTH_TOO_LARGE,
                    format!("depth {} is above the limit of {MAX_LIST_DEPTH}", r.depth),
                ));
            }
            let entries = list(&guest_path(&r.path)?, r.depth, &Names::load(etc_root))?;
            Ok(server::json(StatusCode::OK, &FsListResponse { entries }))
        }
        routes::FS_MAKE_DIR => {
            let r: FsMakeDirRequest = serde_json::from_slice(body).map_err(|e| bad_json(&e))?;
            let answer = make_dir(&r, &Names::load(etc_root))?;
            Ok(server::json(StatusCode::OK, &answer))
        }
        routes::FS_REMOVE => {
            let r: PathRequest = serde_json::from_slice(body).map_err(|e| bad_json(&e))?;
            remove(&r)?;
            Ok(server::empty(StatusCode::NO_CONTENT))
        }
        routes::FS_MOVE => {
            let r: FsMoveRequest = serde_json::from_slice(body).map_err(|e| bad_json(&e))?;
            let entry = move_path(&r, &Names::load(etc_root))?;
            Ok(server::json(StatusCode::OK, &entry))
        }
        _ => Err(FileError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route {route}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use nix::errno::Errno;

    use super::*;

    #[test]
    fn guest_paths_are_absolute_and_normalised() {
        let ok = |p: &str| guest_path(p).map(|p| p.to_string_lossy().into_owned()).ok();
        assert_eq!(ok("/a//b/./c/").as_deref(), Some("/a/b/c"));
        assert_eq!(ok("/a/../../b").as_deref(), Some("/b"));
        assert_eq!(ok("/..").as_deref(), Some("/"));
        assert!(ok("a/b").is_none());
        assert!(ok("").is_none());
        assert!(ok("/a\0b").is_none());
    }

    #[test]
    fn errnos_map_to_stable_codes() {
        let code = |e: Errno| FileError::fs("x", &io::Error::from(e)).code;
        assert_eq!(code(Errno::ENOENT), "not_found");
        assert_eq!(code(Errno::EEXIST), "already_exists");
        assert_eq!(code(Errno::EISDIR), "is_a_directory");
        assert_eq!(code(Errno::ENOSPC), "no_space");
        assert_eq!(code(Errno::EIO), "io");
    }
}
