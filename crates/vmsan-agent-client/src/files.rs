//! File transfer and file operations.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;
use vmsan_proto::{
    FileStat, FsEntry, FsListRequest, FsListResponse, FsMakeDirRequest, FsMakeDirResponse,
    FsMoveRequest, HEADER_DEST, HEADER_KIND, HEADER_LAYOUT, HEADER_MODE, HEADER_SIZE,
    LAYOUT_EXTENTS, MkdirRequest, PathRequest, RemoveRequest, RenameRequest, UploadResult, routes,
};

use crate::idle::Activity;
use crate::{AgentClient, ClientError, ReqBody, Result, dest};

/// The largest download (logical size: a file's size, a directory's file sizes summed)
/// accepted unless the caller raises it: 16 GiB.
pub const DEFAULT_MAX_DOWNLOAD: u64 = 16 << 30;

/// Progress callback: `(bytes done, total bytes if known)`. Called from any thread, often.
pub type Progress = Arc<dyn Fn(u64, Option<u64>) + Send + Sync>;

/// Outcome of [`AgentClient::download`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadResult {
    /// True when the remote path was a directory (unpacked under the local path).
    pub is_dir: bool,
    /// Size of the file, or bytes of the tar stream of a directory.
    pub bytes: u64,
    /// Bytes that travelled from the guest (holes of a sparse file do not).
    pub transferred: u64,
    /// Local file or directory written.
    pub local: PathBuf,
}

const CHUNK: usize = 1024 * 1024;

struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    sent: u64,
    total: Option<u64>,
    progress: Option<Progress>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.is_empty() && data.len() >= CHUNK {
            // A whole buffer from the BufWriter in front: send it as one chunk.
            self.send(Bytes::copy_from_slice(data))?;
            return Ok(data.len());
        }
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
        self.send(chunk)
    }
}

impl ChannelWriter {
    fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        self.sent += chunk.len() as u64;
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the agent stopped reading the upload",
            )
        })?;
        if let Some(p) = &self.progress {
            p(self.sent, self.total);
        }
        Ok(())
    }
}

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

fn channel_body(rx: mpsc::Receiver<io::Result<Bytes>>, activity: Activity) -> ReqBody {
    let stream = futures_util::stream::unfold(rx, move |mut rx| {
        let activity = activity.clone();
        async move {
            let item = rx.recv().await?;
            activity.touch();
            Some((item.map(Frame::data), rx))
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

fn tree_size(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| tree_size(&e.path()))
                    .sum()
            })
            .unwrap_or(0),
        Ok(m) if m.is_file() => m.len(),
        _ => 0,
    }
}

fn build_tar(sources: &[(PathBuf, String)], w: ChannelWriter) -> io::Result<()> {
    // std's io::copy reads straight into a BufWriter's buffer: file data then moves in
    // CHUNK-sized reads instead of 8 KiB ones.
    let mut b = tar::Builder::new(io::BufWriter::with_capacity(CHUNK, w));
    b.follow_symlinks(false);
    for (src, name) in sources {
        let meta = std::fs::symlink_metadata(src)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", src.display())))?;
        if meta.is_dir() {
            b.append_dir_all(name, src)
        } else {
            b.append_path_with_name(src, name)
        }
        .map_err(|e| io::Error::new(e.kind(), format!("archive {}: {e}", src.display())))?;
    }
    let mut w = b.into_inner()?;
    w.flush()?;
    w.into_inner().map_err(|e| e.into_error())?.flush()
}

impl AgentClient {
    /// Upload local files and directories (modes kept, symlinks kept as symlinks) into the
    /// guest directory `dest` (absolute; created when missing), each under its own file name,
    /// as one streamed tar. `progress` gets the bytes of tar sent and the total size of the
    /// sources' file contents.
    ///
    /// # Errors
    /// A local read failure, or the agent's refusal (`path_escape` for names or symlinks that
    /// would leave `dest`, or a symlink already in `dest` on the way).
    pub async fn upload(
        &self,
        sources: &[PathBuf],
        dest: &str,
        progress: Option<Progress>,
    ) -> Result<UploadResult> {
        let mut named = Vec::with_capacity(sources.len());
        for src in sources {
            let name = src.file_name().ok_or_else(|| {
                ClientError::Protocol(format!("{} has no file name", src.display()))
            })?;
            named.push((src.clone(), name.to_string_lossy().into_owned()));
        }
        self.upload_as(&named, dest, progress).await
    }

    /// Like [`AgentClient::upload`], with each source's name inside `dest` given explicitly
    /// (`vmsan upload ./a.txt /srv/b.txt` is `upload_as(&[("./a.txt", "b.txt")], "/srv", …)`).
    /// Names are relative; the agent refuses any that would leave `dest`.
    ///
    /// # Errors
    /// As [`AgentClient::upload`].
    pub async fn upload_as(
        &self,
        sources: &[(PathBuf, String)],
        dest: &str,
        progress: Option<Progress>,
    ) -> Result<UploadResult> {
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let sources = sources.to_vec();
        let builder = tokio::task::spawn_blocking(move || {
            let total = progress
                .as_ref()
                .map(|_| sources.iter().map(|(s, _)| tree_size(s)).sum());
            let w = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
                sent: 0,
                total,
                progress,
            };
            let r = build_tar(&sources, w);
            if let Err(e) = &r {
                let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
            }
            r
        });
        let activity = Activity::default();
        let sent = self
            .upload_body(channel_body(rx, activity.clone()), activity, dest)
            .await;
        let built = builder
            .await
            .map_err(|e| ClientError::Protocol(format!("upload task: {e}")))?;
        match (sent, built) {
            (Ok(r), Ok(())) => Ok(r),
            // The agent's answer, or its silence, explains why the archive could not be sent.
            (Err(e @ (ClientError::Agent { .. } | ClientError::Timeout { .. })), _) => Err(e),
            (Err(e), Err(b)) if b.kind() == io::ErrorKind::BrokenPipe => Err(e),
            (_, Err(e)) => Err(ClientError::io("build upload archive", e)),
            (Err(e), Ok(())) => Err(e),
        }
    }

    /// Upload an already-built tar stream into `dest`.
    ///
    /// # Errors
    /// As [`AgentClient::upload`].
    pub async fn upload_tar<R>(&self, tar: R, dest: &str) -> Result<UploadResult>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
    {
        let activity = Activity::default();
        self.upload_body(crate::reader_body(tar, activity.clone()), activity, dest)
            .await
    }

    async fn upload_body(
        &self,
        body: ReqBody,
        activity: Activity,
        dest: &str,
    ) -> Result<UploadResult> {
        let mut r = self.request(Method::PUT, routes::UPLOAD, body)?;
        r.extensions_mut().insert(activity);
        let v = http::HeaderValue::from_bytes(dest.as_bytes())
            .map_err(|e| ClientError::Protocol(format!("destination {dest:?} as header: {e}")))?;
        r.headers_mut().insert(HEADER_DEST, v);
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(vmsan_proto::TAR_CONTENT_TYPE),
        );
        self.call_json(&format!("upload to {dest}"), r).await
    }

    /// Download a guest file or directory. A file goes to `local` (or into it, when `local` is
    /// an existing directory); a directory is unpacked into `local` (created when missing).
    /// Streams: memory stays constant whatever the size.
    ///
    /// What the guest sends is not trusted (see the `dest` module): no symlink on the host is
    /// followed below `local`'s directory, files appear under their name only once complete,
    /// modes lose setuid/setgid/sticky and go through the process's umask, holes are kept,
    /// and more than `max_bytes` (logical size) is refused.
    ///
    /// # Errors
    /// `not_found` and the like from the agent, [`ClientError::TooLarge`],
    /// [`ClientError::Refused`], [`ClientError::Timeout`], or a local write failure.
    pub async fn download(
        &self,
        remote: &str,
        local: &Path,
        progress: Option<Progress>,
    ) -> Result<DownloadResult> {
        self.download_limited(remote, local, DEFAULT_MAX_DOWNLOAD, progress)
            .await
    }

    /// [`AgentClient::download`] with a size limit other than [`DEFAULT_MAX_DOWNLOAD`].
    ///
    /// # Errors
    /// As [`AgentClient::download`].
    pub async fn download_limited(
        &self,
        remote: &str,
        local: &Path,
        max_bytes: u64,
        progress: Option<Progress>,
    ) -> Result<DownloadResult> {
        let what = format!("download {remote}");
        let mut r = self.json_request(
            Method::POST,
            routes::DOWNLOAD,
            &PathRequest {
                path: remote.into(),
            },
        )?;
        r.headers_mut().insert(
            HEADER_LAYOUT,
            http::HeaderValue::from_static(LAYOUT_EXTENTS),
        );
        let resp = self.send(&what, r).await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let is_dir = header(HEADER_KIND).as_deref() == Some("dir");
        let extents = header(HEADER_LAYOUT).as_deref() == Some(LAYOUT_EXTENTS);
        let mode = header(HEADER_MODE)
            .and_then(|v| u32::from_str_radix(&v, 8).ok())
            .unwrap_or(0o644);
        let size: Option<u64> = if extents {
            Some(
                header(HEADER_SIZE)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| {
                        ClientError::Protocol(format!("{what}: extents without a size"))
                    })?,
            )
        } else {
            header(http::header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok())
        };
        if let Some(s) = size
            && s > max_bytes
        {
            return Err(ClientError::TooLarge {
                size: s,
                limit: max_bytes,
            });
        }
        let policy = dest::Policy {
            max_bytes,
            umask: dest::process_umask(),
        };
        // Where it goes: (directory, name inside it). An existing real directory (not a
        // symlink to one) at `local` receives the file under the remote name.
        let (dir_path, name) = if is_dir {
            (local.to_path_buf(), None)
        } else {
            match std::fs::symlink_metadata(local) {
                Ok(m) if m.is_dir() => {
                    let name = Path::new(remote).file_name().ok_or_else(|| {
                        ClientError::Protocol(format!("{remote} has no file name"))
                    })?;
                    (local.to_path_buf(), Some(name.to_os_string()))
                }
                _ => {
                    let name = local.file_name().ok_or_else(|| {
                        ClientError::Refused(format!("{} names no file", local.display()))
                    })?;
                    let parent = match local.parent() {
                        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                        _ => PathBuf::from("."),
                    };
                    (parent, Some(name.to_os_string()))
                }
            }
        };
        let target = match &name {
            Some(n) => dir_path.join(n),
            None => dir_path.clone(),
        };

        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let writer_dir = dir_path.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<u64> {
            let reader = ChannelReader {
                rx,
                cur: Bytes::new(),
            };
            let Some(name) = name else {
                let (root, created) = dest::open_dest_dir(&writer_dir, true)?;
                dest::unpack(reader, &root, &writer_dir, created, &policy)?;
                return Ok(0);
            };
            let (dir, _) = dest::open_dest_dir(&writer_dir, false)?;
            let shown = writer_dir.join(&name);
            let part = dest::PartFile::create(&dir, &shown)?;
            let len = if extents {
                let size = size.unwrap_or(0);
                dest::copy_extents(reader, &part, size)?;
                size
            } else {
                let got = dest::copy_dense(reader, &part, size, &policy)?;
                if let Some(t) = size
                    && t != got
                {
                    return Err(ClientError::Protocol(format!(
                        "download cut short: got {got} of {t} bytes"
                    )));
                }
                got
            };
            part.commit(len, dest::host_mode(mode, policy.umask), &name, &shown)?;
            Ok(len)
        });
        let mut body = resp.into_body();
        let mut received = 0u64;
        let pumped: Result<()> = async {
            while let Some(frame) = self.next_frame(&mut body, &what).await? {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                received += data.len() as u64;
                if let Some(p) = &progress {
                    p(received, if is_dir { None } else { size });
                }
                if tx.send(Ok(data)).await.is_err() {
                    // The writer stopped (an error of its own, reported below).
                    break;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = pumped {
            // The writer sees the network side's error instead of a clean end of stream, and
            // drops its partial file.
            let _ = tx.send(Err(io::Error::other(e))).await;
        }
        drop(tx);
        let len = writer
            .await
            .map_err(|e| ClientError::Protocol(format!("download writer task: {e}")))??;
        Ok(DownloadResult {
            is_dir,
            bytes: if is_dir { received } else { len },
            transferred: received,
            local: target,
        })
    }

    /// `stat` a guest path (symlinks not followed).
    ///
    /// # Errors
    /// `not_found` and other refusals.
    pub async fn stat(&self, path: &str) -> Result<FileStat> {
        let r = self.json_request(
            Method::POST,
            routes::STAT,
            &PathRequest { path: path.into() },
        )?;
        self.call_json(&format!("stat {path}"), r).await
    }

    /// Entries of a guest directory, sorted by name.
    ///
    /// # Errors
    /// `not_found` and other refusals.
    pub async fn list(&self, path: &str) -> Result<Vec<FileStat>> {
        let r = self.json_request(
            Method::POST,
            routes::LIST,
            &PathRequest { path: path.into() },
        )?;
        self.call_json(&format!("list {path}"), r).await
    }

    /// Create a guest directory (`parents`: like `mkdir -p`).
    ///
    /// # Errors
    /// The agent's refusal.
    pub async fn mkdir(&self, path: &str, mode: Option<u32>, parents: bool) -> Result<()> {
        let r = self.json_request(
            Method::POST,
            routes::MKDIR,
            &MkdirRequest {
                path: path.into(),
                mode,
                parents,
            },
        )?;
        self.call_empty(&format!("mkdir {path}"), r).await
    }

    /// Remove a guest file, symlink or (empty, or with `recursive`) directory.
    ///
    /// # Errors
    /// The agent's refusal.
    pub async fn remove(&self, path: &str, recursive: bool) -> Result<()> {
        let r = self.json_request(
            Method::POST,
            routes::REMOVE,
            &RemoveRequest {
                path: path.into(),
                recursive,
            },
        )?;
        self.call_empty(&format!("remove {path}"), r).await
    }

    /// Rename a guest path.
    ///
    /// # Errors
    /// The agent's refusal.
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let r = self.json_request(
            Method::POST,
            routes::RENAME,
            &RenameRequest {
                from: from.into(),
                to: to.into(),
            },
        )?;
        self.call_empty(&format!("rename {from}"), r).await
    }

    /// `/v1/fs/stat`: the entry of a guest path (a symlink described, not followed), with
    /// permissions string, owner and group names and an RFC 3339 time.
    ///
    /// # Errors
    /// `not_found`, `bad_path` and the other codes of [`vmsan_proto::fs_codes`].
    pub async fn fs_stat(&self, path: &str) -> Result<FsEntry> {
        let r = self.json_request(
            Method::POST,
            routes::FS_STAT,
            &PathRequest { path: path.into() },
        )?;
        self.call_json(&format!("stat {path}"), r).await
    }

    /// `/v1/fs/list`: entries below a guest directory, `depth` levels deep (1: its own
    /// entries; at most [`vmsan_proto::MAX_LIST_DEPTH`]), sorted by path; symlinks are listed,
    /// never entered.
    ///
    /// # Errors
    /// `not_found`, `not_a_directory`, `depth_too_large`, `too_many_entries`, ….
    pub async fn fs_list(&self, path: &str, depth: u32) -> Result<Vec<FsEntry>> {
        let r = self.json_request(
            Method::POST,
            routes::FS_LIST,
            &FsListRequest {
                path: path.into(),
                depth,
            },
        )?;
        let answer: FsListResponse = self.call_json(&format!("list {path}"), r).await?;
        Ok(answer.entries)
    }

    /// `/v1/fs/mkdir`: create a guest directory and its missing parents; `created` is false
    /// when it already existed.
    ///
    /// # Errors
    /// `not_a_directory` (the path or a parent is not a directory), `forbidden`, ….
    pub async fn fs_make_dir(&self, path: &str, mode: Option<u32>) -> Result<FsMakeDirResponse> {
        let r = self.json_request(
            Method::POST,
            routes::FS_MAKE_DIR,
            &FsMakeDirRequest {
                path: path.into(),
                mode,
            },
        )?;
        self.call_json(&format!("mkdir {path}"), r).await
    }

    /// `/v1/fs/remove`: remove a guest file, symlink, or directory with everything under it.
    ///
    /// # Errors
    /// `not_found`, `invalid` (for `/`), `forbidden`, ….
    pub async fn fs_remove(&self, path: &str) -> Result<()> {
        let r = self.json_request(
            Method::POST,
            routes::FS_REMOVE,
            &PathRequest { path: path.into() },
        )?;
        self.call_empty(&format!("remove {path}"), r).await
    }

    /// `/v1/fs/move`: rename a guest path; with `overwrite` an existing destination is
    /// replaced as `rename(2)` allows. Answers the destination's entry.
    ///
    /// # Errors
    /// `not_found`, `already_exists`, `is_a_directory`, `not_a_directory`, `not_empty`,
    /// `invalid`, `cross_device`, ….
    pub async fn fs_move(
        &self,
        source: &str,
        destination: &str,
        overwrite: bool,
    ) -> Result<FsEntry> {
        let r = self.json_request(
            Method::POST,
            routes::FS_MOVE,
            &FsMoveRequest {
                source: source.into(),
                destination: destination.into(),
                overwrite,
            },
        )?;
        self.call_json(&format!("move {source}"), r).await
    }
}
