//! Wire types shared by the host (`vmsan-agent-client`) and the guest agent (`vmsan-agent`).
//!
//! serde only, no I/O. The transport is HTTP/1.1 (see `docs/guest-abi.md`); this crate fixes the
//! routes, the JSON bodies, the binary frame format of exec output, the PTY WebSocket control
//! messages, the config-drive document and the vsock port numbers.
//!
//! # Exec stream framing
//!
//! `POST /v1/exec` answers `200` with content type [`FRAME_CONTENT_TYPE`] and a body made of
//! frames: one byte kind ([`FrameKind`]), a big-endian `u32` payload length, then the payload.
//! Output payloads are raw bytes (binary safe); `Started`, `Exit` and `Error` carry JSON. The
//! request body, when [`ExecRequest::stdin`] is set, is the raw stdin stream of the process.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Protocol version: bumped on any incompatible change of routes or bodies.
pub const PROTOCOL_VERSION: u32 = 1;

/// vsock port of the agent's API (host → guest).
pub const AGENT_API_PORT: u32 = 1024;
/// vsock port the agent connects to on boot to announce readiness (guest → host).
pub const READY_PORT: u32 = 1025;
/// The host's vsock CID: the only peer the agent accepts on AF_VSOCK.
pub const HOST_CID: u32 = 2;

/// Content type of a framed exec stream.
pub const FRAME_CONTENT_TYPE: &str = "application/vnd.vmsan.frames";
/// Content type of a tar stream (upload body, directory download).
pub const TAR_CONTENT_TYPE: &str = "application/x-tar";
/// Response header of `POST /v1/files/download`: `file` or `dir`.
pub const HEADER_KIND: &str = "x-vmsan-kind";
/// Response header of a file download: the file's permission bits, octal.
pub const HEADER_MODE: &str = "x-vmsan-mode";
/// Request header of `PUT /v1/files/upload`: absolute destination directory in the guest.
pub const HEADER_DEST: &str = "x-vmsan-dest";

/// Header of `POST /v1/files/download`. In the request, [`LAYOUT_EXTENTS`] says the client
/// reads the extents layout; an agent that uses it answers with the same header (and
/// [`HEADER_SIZE`]). Without it in the answer the body is the file's bytes, dense: an agent
/// older than this header ignores it, so old agents keep working.
pub const HEADER_LAYOUT: &str = "x-vmsan-layout";
/// The extents layout of a file download: records of an [`EXTENT_HEADER_LEN`]-byte header
/// (big-endian `u64` offset, big-endian `u64` length) followed by that many bytes of data, in
/// increasing, non-overlapping order. What no record covers is a hole (zeros).
pub const LAYOUT_EXTENTS: &str = "extents";
/// Response header of an extents download: the file's size in bytes, decimal.
pub const HEADER_SIZE: &str = "x-vmsan-size";
/// Length of an extent record's header.
pub const EXTENT_HEADER_LEN: usize = 16;

/// The header of an extent record: `offset` then `len`, big-endian.
pub fn extent_header(offset: u64, len: u64) -> [u8; EXTENT_HEADER_LEN] {
    let mut h = [0u8; EXTENT_HEADER_LEN];
    h[..8].copy_from_slice(&offset.to_be_bytes());
    h[8..].copy_from_slice(&len.to_be_bytes());
    h
}

/// `(offset, len)` of an extent record's header.
pub fn parse_extent_header(h: [u8; EXTENT_HEADER_LEN]) -> (u64, u64) {
    let mut o = [0u8; 8];
    let mut l = [0u8; 8];
    o.copy_from_slice(&h[..8]);
    l.copy_from_slice(&h[8..]);
    (u64::from_be_bytes(o), u64::from_be_bytes(l))
}

/// Request header of `POST /v1/exec` when the body is stdin: the [`ExecRequest`] as JSON.
pub const HEADER_EXEC: &str = "x-vmsan-exec";

/// Largest payload of one exec frame the agent sends, and the largest a decoder accepts.
pub const MAX_FRAME_PAYLOAD: usize = 1 << 20;
/// Minimum size of a PTY session's scrollback ring buffer.
pub const MIN_SCROLLBACK: usize = 64 * 1024;

/// Routes of the agent's API.
pub mod routes {
    /// `GET`: [`super::Health`].
    pub const HEALTH: &str = "/v1/health";
    /// `POST` [`super::ExecRequest`] → framed stream, or [`super::ExecStarted`] when detached.
    pub const EXEC: &str = "/v1/exec";
    /// Prefix of `/v1/exec/{id}` (`GET` → [`super::ExecInfo`]), `/v1/exec/{id}/kill` (`POST`
    /// [`super::KillRequest`]) and `/v1/exec/{id}/output` (`GET` → framed stream of what a
    /// detached command has written so far, ending with its exit frame when it has ended).
    pub const EXEC_PREFIX: &str = "/v1/exec/";
    /// `POST` [`super::PtyOpenRequest`] → [`super::PtyOpened`]; `GET` → list of [`super::PtyInfo`].
    pub const PTY: &str = "/v1/pty";
    /// Prefix of `/v1/pty/{id}/attach` (WebSocket upgrade) and `/v1/pty/{id}/kill` (`POST`).
    pub const PTY_PREFIX: &str = "/v1/pty/";
    /// `PUT`, body a tar stream, header [`super::HEADER_DEST`] → [`super::UploadResult`].
    pub const UPLOAD: &str = "/v1/files/upload";
    /// `POST` [`super::PathRequest`] → the file's bytes, or a tar stream of the directory.
    pub const DOWNLOAD: &str = "/v1/files/download";
    /// `POST` [`super::PathRequest`] → [`super::FileStat`].
    pub const STAT: &str = "/v1/files/stat";
    /// `POST` [`super::PathRequest`] → list of [`super::FileStat`] (entries of a directory).
    pub const LIST: &str = "/v1/files/list";
    /// `POST` [`super::MkdirRequest`] → `204`.
    pub const MKDIR: &str = "/v1/files/mkdir";
    /// `POST` [`super::RemoveRequest`] → `204`.
    pub const REMOVE: &str = "/v1/files/remove";
    /// `POST` [`super::RenameRequest`] → `204`.
    pub const RENAME: &str = "/v1/files/rename";
    /// Common prefix of the `/v1/fs/*` routes.
    pub const FS_PREFIX: &str = "/v1/fs/";
    /// `POST` [`super::PathRequest`] → [`super::FsEntry`] of the path itself (a symlink is
    /// described, not followed). Errors carry the codes of [`super::fs_codes`].
    pub const FS_STAT: &str = "/v1/fs/stat";
    /// `POST` [`super::FsListRequest`] → [`super::FsListResponse`]: entries below a directory
    /// to a depth, symlinks never followed while walking.
    pub const FS_LIST: &str = "/v1/fs/list";
    /// `POST` [`super::FsMakeDirRequest`] → [`super::FsMakeDirResponse`] (parents included).
    pub const FS_MAKE_DIR: &str = "/v1/fs/mkdir";
    /// `POST` [`super::PathRequest`] → `204`: remove a file, symlink, or directory with
    /// everything under it (symlinks inside are removed, not followed).
    pub const FS_REMOVE: &str = "/v1/fs/remove";
    /// `POST` [`super::FsMoveRequest`] → [`super::FsEntry`] of the destination.
    pub const FS_MOVE: &str = "/v1/fs/move";
    /// `POST`: sync, unmount and power off (init mode), or stop serving (plain mode) → `202`.
    pub const SHUTDOWN: &str = "/v1/shutdown";
    /// `POST`: flush the guest's dirty pages to its disks (before a snapshot) → `204`.
    pub const SYNC: &str = "/v1/sync";
    /// `POST` [`super::Reidentify`]: take on a new identity after a snapshot restore → `204`.
    /// Later requests must use the new token.
    pub const IDENTITY: &str = "/v1/identity";
    /// `POST` [`super::ClockSet`]: step the guest's clock to the host's → `200`
    /// [`super::ClockSet`] with the guest's clock as it was.
    pub const CLOCK: &str = "/v1/clock";
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Always `"ok"`.
    pub status: String,
    /// Agent version (crate version).
    pub version: String,
    /// [`PROTOCOL_VERSION`] of the agent.
    pub protocol: u32,
    /// `"plain"`, `"init"` or `"image"`.
    pub mode: String,
}

/// Error body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable machine code, e.g. `unauthorized`, `forbidden`, `not_found`, `bad_request`,
    /// `path_escape`, `internal`.
    pub code: String,
    /// Human message with context.
    pub error: String,
}

/// `POST /v1/exec`: as the JSON body, or, when [`ExecRequest::stdin`] is set, in the
/// [`HEADER_EXEC`] header while the body carries stdin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecRequest {
    /// argv; `argv[0]` is looked up in `PATH` when it has no `/`. Never a shell string.
    pub argv: Vec<String>,
    /// Extra environment, applied over the defaults (image env, user's HOME/USER/…).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (absolute); defaults to the image's WorkingDir or the user's home.
    #[serde(default)]
    pub cwd: Option<String>,
    /// User name or numeric uid (`"root"` for sudo); defaults to the configured default user.
    #[serde(default)]
    pub user: Option<String>,
    /// Kill the whole process group after this many milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Return at once with [`ExecStarted`]; output is kept (bounded) for `GET …/output`.
    #[serde(default)]
    pub detached: bool,
    /// When true the request body is the process's stdin; otherwise stdin is `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
}

/// Answer to a detached exec, and payload of the [`FrameKind::Started`] frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecStarted {
    /// Command id (hex), for kill and output.
    pub id: String,
    /// Guest pid (also the process group id).
    pub pid: u32,
}

/// How a process ended: payload of the [`FrameKind::Exit`] frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitStatus {
    /// Exit code; `128 + signal` when killed by a signal (shell convention).
    pub code: i32,
    /// The signal that ended it, if any.
    #[serde(default)]
    pub signal: Option<i32>,
    /// True when the agent killed it because of `timeoutMs`.
    #[serde(default)]
    pub timed_out: bool,
}

/// `GET /v1/exec/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecInfo {
    /// Command id.
    pub id: String,
    /// Guest pid.
    pub pid: u32,
    /// argv.
    pub argv: Vec<String>,
    /// Set once it has ended.
    pub exit: Option<ExitStatus>,
    /// Whether it was started detached.
    pub detached: bool,
}

/// `POST /v1/exec/{id}/kill` and `POST /v1/pty/{id}/kill`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KillRequest {
    /// Signal number sent to the whole process group (default `SIGKILL`).
    #[serde(default = "default_signal")]
    pub signal: i32,
}

impl Default for KillRequest {
    fn default() -> Self {
        Self {
            signal: default_signal(),
        }
    }
}

fn default_signal() -> i32 {
    9
}

/// Kind byte of an exec stream frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// JSON [`ExecStarted`].
    Started = 1,
    /// Raw stdout bytes.
    Stdout = 2,
    /// Raw stderr bytes.
    Stderr = 3,
    /// JSON [`ExitStatus`]; the last frame of a stream.
    Exit = 4,
    /// JSON [`ErrorBody`]; the last frame of a stream.
    Error = 5,
}

impl FrameKind {
    /// Parse a kind byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Started),
            2 => Some(Self::Stdout),
            3 => Some(Self::Stderr),
            4 => Some(Self::Exit),
            5 => Some(Self::Error),
            _ => None,
        }
    }
}

/// Length of a frame header: kind byte + big-endian `u32` length.
pub const FRAME_HEADER_LEN: usize = 5;

/// Encode a frame header for a payload of `len` bytes.
///
/// # Errors
/// When `len` exceeds [`MAX_FRAME_PAYLOAD`].
pub fn frame_header(kind: FrameKind, len: usize) -> Result<[u8; FRAME_HEADER_LEN], FrameError> {
    if len > MAX_FRAME_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    let l = u32::try_from(len)
        .map_err(|_| FrameError::TooLarge(len))?
        .to_be_bytes();
    Ok([kind as u8, l[0], l[1], l[2], l[3]])
}

/// Encode a whole frame (header + payload) into a new vector.
///
/// # Errors
/// When the payload exceeds [`MAX_FRAME_PAYLOAD`].
pub fn encode_frame(kind: FrameKind, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let header = frame_header(kind, payload.len())?;
    let mut v = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    v.extend_from_slice(&header);
    v.extend_from_slice(payload);
    Ok(v)
}

/// A malformed frame stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Unknown kind byte.
    UnknownKind(u8),
    /// Payload longer than [`MAX_FRAME_PAYLOAD`].
    TooLarge(usize),
    /// The stream ended inside a frame.
    Truncated,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            Self::TooLarge(n) => {
                write!(f, "frame payload of {n} bytes exceeds {MAX_FRAME_PAYLOAD}")
            }
            Self::Truncated => write!(f, "stream ended inside a frame"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Kind.
    pub kind: FrameKind,
    /// Payload length.
    pub len: usize,
}

/// Parse a 5-byte frame header.
///
/// # Errors
/// Unknown kind or a length over [`MAX_FRAME_PAYLOAD`].
pub fn parse_frame_header(h: [u8; FRAME_HEADER_LEN]) -> Result<FrameHeader, FrameError> {
    let kind = FrameKind::from_u8(h[0]).ok_or(FrameError::UnknownKind(h[0]))?;
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > MAX_FRAME_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    Ok(FrameHeader { kind, len })
}

/// Incremental frame decoder: feed it bytes as they come, take whole frames out.
///
/// Holds at most one partial frame, so its memory is bounded by [`MAX_FRAME_PAYLOAD`].
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    pos: usize,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append received bytes.
    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, if one has arrived.
    ///
    /// # Errors
    /// A malformed header.
    pub fn next_frame(&mut self) -> Result<Option<(FrameKind, Vec<u8>)>, FrameError> {
        let avail = &self.buf[self.pos..];
        if avail.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let mut h = [0u8; FRAME_HEADER_LEN];
        h.copy_from_slice(&avail[..FRAME_HEADER_LEN]);
        let header = parse_frame_header(h)?;
        if avail.len() < FRAME_HEADER_LEN + header.len {
            return Ok(None);
        }
        let start = self.pos + FRAME_HEADER_LEN;
        let payload = self.buf[start..start + header.len].to_vec();
        self.pos = start + header.len;
        Ok(Some((header.kind, payload)))
    }

    /// Call at end of stream.
    ///
    /// # Errors
    /// [`FrameError::Truncated`] when bytes of an unfinished frame remain.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

/// `POST /v1/pty`: start a program on a new PTY.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PtyOpenRequest {
    /// argv; empty means the user's login shell (from the guest's /etc/passwd, else `/bin/sh`).
    #[serde(default)]
    pub argv: Vec<String>,
    /// Extra environment (TERM defaults to `xterm-256color`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// User name or uid.
    #[serde(default)]
    pub user: Option<String>,
    /// Initial columns.
    #[serde(default = "default_cols")]
    pub cols: u16,
    /// Initial rows.
    #[serde(default = "default_rows")]
    pub rows: u16,
}

fn default_cols() -> u16 {
    80
}
fn default_rows() -> u16 {
    24
}

/// Answer of `POST /v1/pty`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PtyOpened {
    /// Session id (hex).
    pub id: String,
    /// pid of the session's process.
    pub pid: u32,
}

/// One entry of `GET /v1/pty`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PtyInfo {
    /// Session id.
    pub id: String,
    /// pid.
    pub pid: u32,
    /// argv.
    pub argv: Vec<String>,
    /// Attached WebSocket clients.
    pub clients: usize,
    /// Exit status once the process has ended.
    pub exit: Option<ExitStatus>,
}

/// Control messages of a PTY WebSocket, sent as JSON text frames. Terminal bytes travel as
/// binary frames, unchanged, in both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum PtyControl {
    /// Client → agent: set the terminal size.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// Client → agent: send a signal to the session's process group.
    Signal {
        /// Signal number.
        signal: i32,
    },
    /// Agent → client: the process ended; the agent closes the socket after this.
    Exit {
        /// How it ended.
        status: ExitStatus,
    },
    /// Agent → client: output was lost between the scrollback and this client (it lagged by
    /// more than the ring buffer); `bytes` were skipped.
    Gap {
        /// Skipped bytes.
        bytes: u64,
    },
}

/// Body naming one path in the guest (absolute).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathRequest {
    /// Absolute path.
    pub path: String,
}

/// `POST /v1/files/mkdir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MkdirRequest {
    /// Absolute path.
    pub path: String,
    /// Permission bits (default 0o755).
    #[serde(default)]
    pub mode: Option<u32>,
    /// Create missing parents.
    #[serde(default)]
    pub parents: bool,
}

/// `POST /v1/files/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoveRequest {
    /// Absolute path.
    pub path: String,
    /// Remove a directory and everything under it.
    #[serde(default)]
    pub recursive: bool,
}

/// `POST /v1/files/rename`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenameRequest {
    /// Absolute source path.
    pub from: String,
    /// Absolute destination path.
    pub to: String,
}

/// Type of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (not followed).
    Symlink,
    /// Anything else (device, fifo, socket).
    Other,
}

/// `stat` of one path (symlinks not followed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileStat {
    /// File name (last component).
    pub name: String,
    /// Type.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Target, for symlinks.
    #[serde(default)]
    pub link_target: Option<String>,
}

/// Deepest [`FsListRequest::depth`] the agent walks; deeper requests are refused with
/// [`fs_codes::DEPTH_TOO_LARGE`].
pub const MAX_LIST_DEPTH: u32 = 16;
/// Most entries one [`routes::FS_LIST`] answer holds; a larger walk is refused with
/// [`fs_codes::TOO_MANY_ENTRIES`] rather than cut short silently.
pub const MAX_LIST_ENTRIES: usize = 10_000;

/// Stable error codes of the `/v1/fs/*` routes (the `code` of [`ErrorBody`]).
pub mod fs_codes {
    /// The path (or the source of a move) does not exist. HTTP 404.
    pub const NOT_FOUND: &str = "not_found";
    /// The destination of a move exists (and overwriting was not asked). HTTP 409.
    pub const ALREADY_EXISTS: &str = "already_exists";
    /// A directory was expected (list target, a path's parent, mkdir over a file, a directory
    /// moved onto a file). HTTP 409.
    pub const NOT_A_DIRECTORY: &str = "not_a_directory";
    /// A file or symlink was to replace a directory. HTTP 409.
    pub const IS_A_DIRECTORY: &str = "is_a_directory";
    /// A directory was to replace a non-empty directory. HTTP 409.
    pub const NOT_EMPTY: &str = "not_empty";
    /// The guest refused the operation (permissions, immutable file). HTTP 403.
    pub const FORBIDDEN: &str = "forbidden";
    /// Source and destination of a move are on different filesystems. HTTP 400.
    pub const CROSS_DEVICE: &str = "cross_device";
    /// The operation makes no sense on these paths: `/` removed or moved, a directory moved
    /// into itself. HTTP 400.
    pub const INVALID: &str = "invalid";
    /// The path is not absolute or holds a NUL byte. HTTP 400.
    pub const BAD_PATH: &str = "bad_path";
    /// [`super::FsListRequest::depth`] above [`super::MAX_LIST_DEPTH`]. HTTP 400.
    pub const DEPTH_TOO_LARGE: &str = "depth_too_large";
    /// The walk found more than [`super::MAX_LIST_ENTRIES`] entries. HTTP 413.
    pub const TOO_MANY_ENTRIES: &str = "too_many_entries";
    /// The guest's filesystem is full. HTTP 507.
    pub const NO_SPACE: &str = "no_space";
    /// Any other failure of the guest's filesystem. HTTP 500.
    pub const IO: &str = "io";
}

/// One path in the guest as `/v1/fs/*` describes it (the fields of E2B's `EntryInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsEntry {
    /// Last component (`/` for the root).
    pub name: String,
    /// Type of the entry itself (a symlink is [`FileKind::Symlink`]).
    pub kind: FileKind,
    /// Target of a symlink, as stored in the link.
    #[serde(default)]
    pub symlink_target: Option<String>,
    /// Absolute, normalised path.
    pub path: String,
    /// Size in bytes (of the link itself for a symlink).
    pub size: u64,
    /// Permission bits, with setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// `ls -l` style type and permissions, e.g. `-rw-r--r--` or `drwxrwxrwt`.
    pub permissions: String,
    /// Owner's name from the guest's `/etc/passwd`, or the uid in decimal.
    pub owner: String,
    /// Group's name from the guest's `/etc/group`, or the gid in decimal.
    pub group: String,
    /// Modification time, RFC 3339 in UTC (`2026-12-06T08:00:00Z`, nanoseconds when non-zero).
    pub modified_time: String,
}

/// `POST /v1/fs/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsListRequest {
    /// Absolute path of a directory (a symlink naming a directory is followed, only here).
    pub path: String,
    /// 1: the directory's entries; n: down to n levels below it. 0 counts as 1; above
    /// [`MAX_LIST_DEPTH`] is refused.
    #[serde(default = "one")]
    pub depth: u32,
}

fn one() -> u32 {
    1
}

/// Answer of `POST /v1/fs/list`: every entry found, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsListResponse {
    /// Entries below the directory (never the directory itself).
    pub entries: Vec<FsEntry>,
}

/// `POST /v1/fs/mkdir`: create a directory and its missing parents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsMakeDirRequest {
    /// Absolute path.
    pub path: String,
    /// Permission bits of the directories created (default 0o755, less the agent's umask).
    #[serde(default)]
    pub mode: Option<u32>,
}

/// Answer of `POST /v1/fs/mkdir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsMakeDirResponse {
    /// False when the directory already existed (nothing was changed); E2B's `make_dir`
    /// answers `False` then.
    pub created: bool,
    /// The directory.
    pub entry: FsEntry,
}

/// `POST /v1/fs/move`: `renameat` of one path onto another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsMoveRequest {
    /// Absolute source path (a symlink is moved itself).
    pub source: String,
    /// Absolute destination path.
    pub destination: String,
    /// Replace an existing destination as `rename(2)` does (a file over a file, a directory
    /// over an empty directory). Without it an existing destination is
    /// [`fs_codes::ALREADY_EXISTS`].
    #[serde(default)]
    pub overwrite: bool,
}

/// Answer of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadResult {
    /// Entries written (files, directories, symlinks).
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// The one-line JSON the agent sends to host port [`READY_PORT`] when it is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyAnnouncement {
    /// The VM id from the config drive.
    pub vm_id: String,
    /// Agent version.
    pub version: String,
}

/// How the guest is initialised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InitMode {
    /// The agent stays PID 1 (fastest boot).
    #[default]
    Agent,
    /// The agent prepares the root, then hands PID 1 to the image's init and keeps serving.
    Image,
}

/// Network of the guest's `eth0`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestNetwork {
    /// Address with prefix, e.g. `198.18.0.2/30`.
    pub address: String,
    /// Default gateway.
    pub gateway: String,
    /// MAC of `eth0` (informational; the VMM sets it).
    #[serde(default)]
    pub mac: Option<String>,
    /// DNS servers for resolv.conf.
    #[serde(default)]
    pub dns: Vec<String>,
    /// MTU (default 1500).
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// A restored clone's new identity (`POST /v1/identity`). A snapshot's memory holds the source
/// VM's hostname, address, token and entropy pool; every clone gets its own of each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reidentify {
    /// The clone's VM id.
    pub vm_id: String,
    /// Its hostname.
    pub hostname: String,
    /// The bearer token from now on (the old one stops working once this succeeds).
    pub token: String,
    /// Its network (address, gateway, MAC, resolvers).
    #[serde(default)]
    pub network: Option<GuestNetwork>,
    /// The host's wall clock (ms since the epoch): the guest steps its clock when it is off
    /// by more than a second.
    pub clock_unix_ms: u64,
    /// Fresh random bytes (hex) mixed into the guest's entropy pool, so clones diverge even
    /// before VMGENID's reseed reaches user space.
    pub entropy_hex: String,
}

/// A wall clock reading, ms since the epoch (`POST /v1/clock`). The host sends its own after a
/// cold boot (a guest's clock comes from the VMM at early boot, and a slow boot leaves it
/// behind); the agent answers with the guest's reading from just before it stepped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClockSet {
    /// Milliseconds since the epoch.
    pub clock_unix_ms: u64,
}

/// The image's OCI config, applied as exec defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    /// `KEY=value` strings.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`.
    #[serde(default)]
    pub user: Option<String>,
    /// Entrypoint.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// Cmd.
    #[serde(default)]
    pub cmd: Vec<String>,
}

/// Current version of [`GuestConfig`].
pub const GUEST_CONFIG_VERSION: u32 = 1;

/// The config drive: one JSON document, NUL-padded to a multiple of 4096.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestConfig {
    /// [`GUEST_CONFIG_VERSION`].
    pub version: u32,
    /// VM id.
    pub vm_id: String,
    /// Hostname.
    pub hostname: String,
    /// Bearer token of the agent's API.
    pub token: String,
    /// Network; none means only `lo`.
    #[serde(default)]
    pub network: Option<GuestNetwork>,
    /// Default user of exec and PTY sessions (default `root`).
    #[serde(default)]
    pub default_user: Option<String>,
    /// Extra environment for every command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Who is PID 1.
    #[serde(default)]
    pub init: InitMode,
    /// The image's config.
    #[serde(default)]
    pub image: ImageConfig,
}

impl GuestConfig {
    /// Parse a config drive's bytes (JSON followed by NUL padding).
    ///
    /// # Errors
    /// Invalid JSON, or an unsupported version.
    pub fn from_drive_bytes(bytes: &[u8]) -> Result<Self, String> {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let cfg: Self = serde_json::from_slice(&bytes[..end])
            .map_err(|e| format!("config drive is not a valid GuestConfig: {e}"))?;
        if cfg.version != GUEST_CONFIG_VERSION {
            return Err(format!(
                "config drive version {} is not supported (expected {GUEST_CONFIG_VERSION})",
                cfg.version
            ));
        }
        Ok(cfg)
    }

    /// Serialise for a config drive: JSON padded with NUL bytes to a multiple of 4096.
    ///
    /// # Errors
    /// Serialisation failure (not expected for this type).
    pub fn to_drive_bytes(&self) -> Result<Vec<u8>, String> {
        let mut v = serde_json::to_vec(self).map_err(|e| format!("serialise GuestConfig: {e}"))?;
        let padded = v.len().div_ceil(4096).max(1) * 4096;
        v.resize(padded, 0);
        Ok(v)
    }
}

/// Filesystem of an image's root drive: how images are built, what a VM's state and a
/// snapshot record, and the value of [`boot_env::ROOTFS_FS`] the agent mounts it with. The one
/// type of this concept for every crate (the host's and the agent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    /// squashfs (zstd or LZ4), written by vmsan from the merged layers: the default (fast to
    /// build, small).
    #[default]
    Squashfs,
    /// ext4, built by `mkfs.ext4 -d`.
    Ext4,
}

impl FsType {
    /// `squashfs` or `ext4`: the kernel's name of the filesystem, as recorded and as the value
    /// of [`boot_env::ROOTFS_FS`].
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Squashfs => "squashfs",
            Self::Ext4 => "ext4",
        }
    }
}

impl std::fmt::Display for FsType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FsType {
    type Err = String;

    /// The exact name (`squashfs`, `ext4`); anything else is refused, never guessed.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "squashfs" => Ok(Self::Squashfs),
            "ext4" => Ok(Self::Ext4),
            _ => Err(format!("{s:?}: expected squashfs or ext4")),
        }
    }
}

/// Environment variables the kernel passes to `/init` (see `docs/guest-abi.md`).
pub mod boot_env {
    /// Path of the rootfs block device.
    pub const ROOTFS: &str = "vmsan_rootfs";
    /// Filesystem type of the rootfs: `squashfs` or `ext4` ([`super::FsType`]).
    pub const ROOTFS_FS: &str = "vmsan_rootfs_fs";
    /// Path of the overlay block device.
    pub const OVERLAY: &str = "vmsan_overlay";
    /// Path of the config block device.
    pub const CONFIG: &str = "vmsan_config";
    /// Set by the stand-in VMM: directory of its vsock emulation.
    pub const STANDIN_VSOCK_DIR: &str = "VMSAN_STANDIN_VSOCK_DIR";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_types_are_named_exactly() {
        for fs in [FsType::Squashfs, FsType::Ext4] {
            assert_eq!(fs.as_str().parse::<FsType>(), Ok(fs));
            assert_eq!(
                serde_json::to_string(&fs).unwrap(),
                format!("\"{}\"", fs.as_str())
            );
        }
        for bad in ["", "xfs", "Ext4", "squashfs "] {
            assert!(bad.parse::<FsType>().is_err(), "{bad:?}");
            assert!(serde_json::from_str::<FsType>(&format!("{bad:?}")).is_err());
        }
    }

    #[test]
    fn extent_headers_round_trip() {
        let h = extent_header(1 << 40, 4096);
        assert_eq!(&h[..8], &(1u64 << 40).to_be_bytes());
        assert_eq!(parse_extent_header(h), (1 << 40, 4096));
    }

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut wire = Vec::new();
        wire.extend(encode_frame(FrameKind::Stdout, b"\xff\x00abc").unwrap());
        wire.extend(encode_frame(FrameKind::Stderr, b"").unwrap());
        wire.extend(encode_frame(FrameKind::Exit, br#"{"code":3}"#).unwrap());
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(3) {
            d.push(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        d.finish().unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (FrameKind::Stdout, b"\xff\x00abc".to_vec()));
        assert_eq!(got[1], (FrameKind::Stderr, Vec::new()));
        let st: ExitStatus = serde_json::from_slice(&got[2].1).unwrap();
        assert_eq!(st.code, 3);
        assert!(!st.timed_out);
    }

    #[test]
    fn decoder_rejects_bad_kind_and_size_and_truncation() {
        let mut d = FrameDecoder::new();
        d.push(&[9, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::UnknownKind(9)));
        let mut d = FrameDecoder::new();
        d.push(&[2, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge(_))));
        let mut d = FrameDecoder::new();
        d.push(&[2, 0, 0, 0, 4, b'a']);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated));
        assert!(frame_header(FrameKind::Stdout, MAX_FRAME_PAYLOAD + 1).is_err());
    }

    #[test]
    fn guest_config_round_trips_through_a_padded_drive() {
        let cfg = GuestConfig {
            version: GUEST_CONFIG_VERSION,
            vm_id: "vm-0123abcd".into(),
            hostname: "box".into(),
            token: "t0k".into(),
            network: Some(GuestNetwork {
                address: "198.18.0.2/30".into(),
                gateway: "198.18.0.1".into(),
                mac: Some("06:00:c6:12:00:02".into()),
                dns: vec!["1.1.1.1".into()],
                mtu: Some(1500),
            }),
            default_user: Some("root".into()),
            env: BTreeMap::from([("A".into(), "b".into())]),
            init: InitMode::Image,
            image: ImageConfig {
                working_dir: Some("/app".into()),
                ..Default::default()
            },
        };
        let bytes = cfg.to_drive_bytes().unwrap();
        assert_eq!(bytes.len() % 4096, 0);
        assert_eq!(GuestConfig::from_drive_bytes(&bytes).unwrap(), cfg);
        let json =
            String::from_utf8(bytes.iter().copied().take_while(|&b| b != 0).collect()).unwrap();
        assert!(json.contains("\"vmId\""), "{json}");
        assert!(json.contains("\"workingDir\""), "{json}");
        assert!(json.contains("\"init\":\"image\""), "{json}");
        let bad = br#"{"version":7,"vmId":"x","hostname":"h","token":"t"}"#;
        assert!(GuestConfig::from_drive_bytes(bad).is_err());
    }

    #[test]
    fn pty_control_is_tagged_json() {
        let s = serde_json::to_string(&PtyControl::Resize {
            cols: 100,
            rows: 40,
        })
        .unwrap();
        assert_eq!(s, r#"{"type":"resize","cols":100,"rows":40}"#);
        let e: PtyControl = serde_json::from_str(r#"{"type":"exit","status":{"code":0}}"#).unwrap();
        assert_eq!(
            e,
            PtyControl::Exit {
                status: ExitStatus {
                    code: 0,
                    signal: None,
                    timed_out: false
                }
            }
        );
    }
}
