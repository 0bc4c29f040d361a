//! Files: tar upload that cannot write outside its destination ([`extract`]), streamed
//! download of a file (dense, or as data extents) or a directory (as tar), and
//! list/stat/mkdir/remove/rename; the `/v1/fs/*` routes ([`fs_ops`], entries and the list walk in
//! [`entry`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use nix::errno::Errno;
use nix::unistd::{Whence, lseek};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use vmsan_proto::{
    FileKind, FileStat, HEADER_DEST, HEADER_KIND, HEADER_LAYOUT, HEADER_MODE, HEADER_SIZE,
    LAYOUT_EXTENTS, MkdirRequest, PathRequest, RemoveRequest, RenameRequest, TAR_CONTENT_TYPE,
    fs_codes, routes,
};

use crate::server::{self, Body, ChannelBody};

mod entry;
mod extract;
mod fs_ops;
pub(crate) use extract::extract;

const CHUNK: usize = 256 * 1024;

/// A failed file operation: status, stable code, message with context.
#[derive(Debug)]
pub(crate) struct FileError {
    status: StatusCode,
    code: &'static str,
    msg: String,
}

impl FileError {
    fn new(status: StatusCode, code: &'static str, msg: impl Into<String>) -> Self {
        Self {
            status,
            code,
            msg: msg.into(),
        }
    }
    fn escape(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "path_escape", msg)
    }
    fn io(what: &str, e: &io::Error) -> Self {
        let status = match e.kind() {
            io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
            io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, "io", format!("{what}: {e}"))
    }
    /// A failed filesystem call of the `/v1/fs/*` routes as a stable code of
    /// [`vmsan_proto::fs_codes`]: the errno decides, not the message.
    fn fs(what: &str, e: &io::Error) -> Self {
        let (status, code) = match e.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ENOENT) => (StatusCode::NOT_FOUND, fs_codes::NOT_FOUND),
            Some(Errno::EEXIST) => (StatusCode::CONFLICT, fs_codes::ALREADY_EXISTS),
            Some(Errno::ENOTDIR) => (StatusCode::CONFLICT, fs_codes::NOT_A_DIRECTORY),
            Some(Errno::EISDIR) => (StatusCode::CONFLICT, fs_codes::IS_A_DIRECTORY),
            Some(Errno::ENOTEMPTY) => (StatusCode::CONFLICT, fs_codes::NOT_EMPTY),
            Some(Errno::EACCES | Errno::EPERM | Errno::EROFS) => {
                (StatusCode::FORBIDDEN, fs_codes::FORBIDDEN)
            }
            Some(Errno::EXDEV) => (StatusCode::BAD_REQUEST, fs_codes::CROSS_DEVICE),
            Some(Errno::EINVAL) => (StatusCode::BAD_REQUEST, fs_codes::INVALID),
            Some(Errno::ENOSPC | Errno::EDQUOT) => {
                (StatusCode::INSUFFICIENT_STORAGE, fs_codes::NO_SPACE)
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, fs_codes::IO),
        };
        Self::new(status, code, format!("{what}: {e}"))
    }
    fn into_response(self) -> Response<Body> {
        server::error(self.status, self.code, &self.msg)
    }
}

fn absolute(p: &str) -> Result<PathBuf, FileError> {
    if !p.starts_with('/') || p.contains('\0') {
        return Err(FileError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("path {p:?} must be absolute"),
        ));
    }
    Ok(PathBuf::from(p))
}

/// A blocking reader over chunks sent from the async side.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// A blocking writer that sends chunks of [`CHUNK`] bytes to the async side.
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

fn body_reader(mut body: Incoming) -> (ChannelReader, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let pump = tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(d) = f.into_data()
                        && tx.send(Ok(d)).await.is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx
                        .send(Err(io::Error::other(format!("read request body: {e}"))))
                        .await;
                    return;
                }
            }
        }
    });
    (
        ChannelReader {
            rx,
            cur: Bytes::new(),
        },
        pump,
    )
}

pub(crate) async fn handle_upload(req: Request<Incoming>) -> Response<Body> {
    let dest = match req
        .headers()
        .get(HEADER_DEST)
        .map(|v| String::from_utf8(v.as_bytes().to_vec()))
    {
        Some(Ok(d)) => d,
        _ => {
            return server::error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "missing or invalid x-vmsan-dest header",
            );
        }
    };
    let dest = match absolute(&dest) {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let (mut reader, pump) = body_reader(req.into_body());
    let res = tokio::task::spawn_blocking(move || {
        let r = extract(&dest, &mut reader);
        // Read the body to its end before answering, whether the archive was accepted or
        // refused: tar stops at the first zero block of its end marker, and whatever follows
        // (the second block, record padding, or the rest of a refused archive) is still on its
        // way. Answering and closing first makes the client's next write fail with a broken
        // pipe, and it would never see this answer.
        let _ = io::copy(&mut reader, &mut io::sink());
        r
    })
    .await;
    pump.abort();
    match res {
        Ok(Ok(r)) => server::json(StatusCode::OK, &r),
        Ok(Err(e)) => e.into_response(),
        Err(e) => server::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("upload task: {e}"),
        ),
    }
}

pub(crate) async fn handle_download(req: Request<Incoming>) -> Response<Body> {
    let wants_extents = req
        .headers()
        .get(HEADER_LAYOUT)
        .is_some_and(|v| v.as_bytes() == LAYOUT_EXTENTS.as_bytes());
    let pr: PathRequest = match server::read_json(req.into_body()).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let path = match absolute(&pr.path) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let meta = match tokio::fs::metadata(&path).await {
        Ok(m) => m,
        Err(e) => return FileError::io(&format!("stat {}", path.display()), &e).into_response(),
    };
    let (tx, body) = ChannelBody::new(4);
    let (kind, ctype) = if meta.is_dir() {
        let dir = path.clone();
        tokio::task::spawn_blocking(move || {
            let w = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            let mut b = tar::Builder::new(w);
            b.follow_symlinks(false);
            let res = b
                .append_dir_all(".", &dir)
                .and_then(|()| b.into_inner())
                .and_then(|mut w| w.flush());
            if let Err(e) = res {
                let _ = tx.blocking_send(Err(io::Error::other(format!(
                    "archive {}: {e}",
                    dir.display()
                ))));
            }
        });
        ("dir", TAR_CONTENT_TYPE)
    } else if meta.is_file() && wants_extents {
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                return FileError::io(&format!("open {}", path.display()), &e).into_response();
            }
        };
        let size = meta.len();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = send_extents(&f, size, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        ("file", "application/octet-stream")
    } else if meta.is_file() {
        let mut f = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) => {
                return FileError::io(&format!("open {}", path.display()), &e).into_response();
            }
        };
        tokio::spawn(async move {
            loop {
                let mut buf = bytes::BytesMut::with_capacity(CHUNK);
                match f.read_buf(&mut buf).await {
                    Ok(0) => break,
                    Ok(_) => {
                        if tx.send(Ok(buf.freeze())).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                }
            }
        });
        ("file", "application/octet-stream")
    } else {
        return server::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("{} is neither a file nor a directory", path.display()),
        );
    };
    let mut r = server::streaming(ctype, body);
    r.headers_mut()
        .insert(HEADER_KIND, HeaderValue::from_static(kind));
    if let Ok(v) = HeaderValue::from_str(&format!("{:o}", meta.mode() & 0o7777)) {
        r.headers_mut().insert(HEADER_MODE, v);
    }
    if kind == "file"
        && let Ok(v) = HeaderValue::from_str(&meta.len().to_string())
    {
        if wants_extents {
            r.headers_mut().insert(HEADER_SIZE, v);
            r.headers_mut()
                .insert(HEADER_LAYOUT, HeaderValue::from_static(LAYOUT_EXTENTS));
        } else {
            r.headers_mut().insert(http::header::CONTENT_LENGTH, v);
        }
    }
    r
}

/// Send the data of the first `size` bytes of `f` as extent records (see
/// [`vmsan_proto::LAYOUT_EXTENTS`]): holes, found with `SEEK_DATA`/`SEEK_HOLE`, are not sent.
/// A filesystem without hole support reports the whole file as data.
fn send_extents(f: &File, size: u64, tx: &mpsc::Sender<io::Result<Bytes>>) -> io::Result<()> {
    let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "client went away");
    let mut pos = 0u64;
    while pos < size {
        let start = match lseek(f.as_fd(), off(pos)?, Whence::SeekData) {
            Ok(s) => u64::try_from(s).map_err(io::Error::other)?,
            // No data after `pos`: the rest is a hole.
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = match lseek(f.as_fd(), off(start)?, Whence::SeekHole) {
            Ok(e) => u64::try_from(e).map_err(io::Error::other)?.min(size),
            Err(Errno::ENXIO) => size,
            Err(e) => return Err(e.into()),
        };
        if end <= start {
            break;
        }
        tx.blocking_send(Ok(Bytes::copy_from_slice(&vmsan_proto::extent_header(
            start,
            end - start,
        ))))
        .map_err(|_| gone())?;
        let mut at = start;
        while at < end {
            let want = usize::try_from(end - at).unwrap_or(CHUNK).min(CHUNK);
            let mut buf = vec![0u8; want];
            std::os::unix::fs::FileExt::read_exact_at(f, &mut buf, at)?;
            tx.blocking_send(Ok(Bytes::from(buf))).map_err(|_| gone())?;
            at += want as u64;
        }
        pos = end;
    }
    Ok(())
}

fn off(v: u64) -> io::Result<i64> {
    i64::try_from(v).map_err(io::Error::other)
}

fn stat_of(path: &Path) -> Result<FileStat, FileError> {
    let m = std::fs::symlink_metadata(path)
        .map_err(|e| FileError::io(&format!("stat {}", path.display()), &e))?;
    let ft = m.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    let link_target = if ft.is_symlink() {
        std::fs::read_link(path)
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    } else {
        None
    };
    Ok(FileStat {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into()),
        kind,
        size: m.len(),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
        link_target,
    })
}

fn op(route: &str, body: &[u8]) -> Result<Response<Body>, FileError> {
    let bad = |e: serde_json::Error| {
        FileError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid JSON body: {e}"),
        )
    };
    match route {
        routes::STAT => {
            let r: PathRequest = serde_json::from_slice(body).map_err(bad)?;
            Ok(server::json(StatusCode::OK, &stat_of(&absolute(&r.path)?)?))
        }
        routes::LIST => {
            let r: PathRequest = serde_json::from_slice(body).map_err(bad)?;
            let p = absolute(&r.path)?;
            let rd = std::fs::read_dir(&p)
                .map_err(|e| FileError::io(&format!("list {}", p.display()), &e))?;
            let mut out = Vec::new();
            for e in rd {
                let e = e.map_err(|e| FileError::io(&format!("list {}", p.display()), &e))?;
                out.push(stat_of(&e.path())?);
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(server::json(StatusCode::OK, &out))
        }
        routes::MKDIR => {
            let r: MkdirRequest = serde_json::from_slice(body).map_err(bad)?;
            let p = absolute(&r.path)?;
            let mut b = std::fs::DirBuilder::new();
            std::os::unix::fs::DirBuilderExt::mode(&mut b, r.mode.unwrap_or(0o755) & 0o7777);
            b.recursive(r.parents)
                .create(&p)
                .map_err(|e| FileError::io(&format!("mkdir {}", p.display()), &e))?;
            Ok(server::empty(StatusCode::NO_CONTENT))
        }
        routes::REMOVE => {
            let r: RemoveRequest = serde_json::from_slice(body).map_err(bad)?;
            let p = absolute(&r.path)?;
            if p == Path::new("/") {
                return Err(FileError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "refusing to remove /",
                ));
            }
            let m = std::fs::symlink_metadata(&p)
                .map_err(|e| FileError::io(&format!("stat {}", p.display()), &e))?;
            let res = if m.is_dir() {
                if r.recursive {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_dir(&p)
                }
            } else {
                std::fs::remove_file(&p)
            };
            res.map_err(|e| FileError::io(&format!("remove {}", p.display()), &e))?;
            Ok(server::empty(StatusCode::NO_CONTENT))
        }
        routes::RENAME => {
            let r: RenameRequest = serde_json::from_slice(body).map_err(bad)?;
            let (from, to) = (absolute(&r.from)?, absolute(&r.to)?);
            std::fs::rename(&from, &to).map_err(|e| {
                FileError::io(
                    &format!("rename {} to {}", from.display(), to.display()),
                    &e,
                )
            })?;
            Ok(server::empty(StatusCode::NO_CONTENT))
        }
        _ => Err(FileError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route {route}"),
        )),
    }
}

/// Answer a small JSON file request: `/v1/files/{stat,list,mkdir,remove,rename}` and the
/// `/v1/fs/*` routes (whose owner and group names come from the user database under
/// `etc_root`).
pub(crate) async fn handle_op(
    route: &str,
    etc_root: &Path,
    req: Request<Incoming>,
) -> Response<Body> {
    let limited = http_body_util::Limited::new(req.into_body(), 1 << 20);
    let body = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return server::error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("read request body: {e}"),
            );
        }
    };
    let route = route.to_owned();
    let etc_root = etc_root.to_path_buf();
    let task = move || {
        if route.starts_with(routes::FS_PREFIX) {
            fs_ops::op(&route, &body, &etc_root)
        } else {
            op(&route, &body)
        }
    };
    match tokio::task::spawn_blocking(task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => e.into_response(),
        Err(e) => server::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("file task: {e}"),
        ),
    }
}
