//! Host-side client of `vmsan-agent`.
//!
//! Connects over a plain Unix socket (tests, the stand-in VMM) or over Firecracker's hybrid
//! vsock socket (`CONNECT <port>\n` / `OK <n>\n`), then speaks the agent's HTTP/1.1 API
//! ([`vmsan_proto`]). Everything streams: exec output goes to [`AsyncWrite`] sinks with
//! back-pressure, uploads and downloads never hold a whole file in memory.
//!
//! What the CLI and the host library call:
//!
//! | need | call |
//! | --- | --- |
//! | reach a VM | [`AgentClient::new`] with [`Endpoint::hybrid_vsock`] (Firecracker's `uds_path`) or [`Endpoint::Unix`] |
//! | wait for boot | [`ReadyListener::bind`] before InstanceStart, then [`ReadyListener::wait`] |
//! | `vmsan exec` | [`AgentClient::exec`] (stdin, stdout, stderr streamed; Ctrl-C = drop the future: the agent kills the process group), [`AgentClient::exec_collect`] for `--json` |
//! | detached commands | [`AgentClient::exec_detached`], [`AgentClient::exec_info`], [`AgentClient::exec_output`], [`AgentClient::kill`] |
//! | `vmsan exec -i`, `vmsan connect` | [`AgentClient::pty_open`] / [`AgentClient::pty_attach`], then [`terminal::run_interactive`] (raw mode, SIGWINCH, detach key Ctrl-]) |
//! | `vmsan upload` / `download` | [`AgentClient::upload`] / [`AgentClient::download`] with a [`Progress`] callback |
//! | SDK file ops | [`AgentClient::stat`], [`AgentClient::list`], [`AgentClient::mkdir`], [`AgentClient::remove`], [`AgentClient::rename`] |
//! | graceful stop | [`AgentClient::shutdown`] |
//!
//! The guest is not trusted: a download never follows a symlink on the host, drops setuid,
//! setgid and sticky, keeps holes and has a size limit ([`AgentClient::download_limited`]); every
//! call fails with [`ClientError::Timeout`] when the agent stays silent for the idle timeout
//! ([`AgentClient::with_idle_timeout`], [`DEFAULT_IDLE_TIMEOUT`]).
//!
//! Errors are [`ClientError`]; [`ClientError::agent_code`] gives the agent's stable code
//! (`unauthorized`, `forbidden`, `not_found`, `spawn_failed`, `path_escape`, `io`, …).
//!
//! ```no_run
//! # async fn f() -> Result<(), vmsan_agent_client::ClientError> {
//! use vmsan_agent_client::{AgentClient, Endpoint};
//! let client = AgentClient::new(Endpoint::hybrid_vsock("/srv/vmsan/vm-1/v.sock"), "token");
//! let out = client.exec_collect(vmsan_proto::ExecRequest {
//!     argv: vec!["uname".into(), "-a".into()],
//!     ..Default::default()
//! }).await?;
//! println!("{}", String::from_utf8_lossy(&out.stdout));
//! # Ok(()) }
//! ```

mod dest;
mod files;
mod idle;
mod pty;
mod ready;
pub mod terminal;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use vmsan_proto::{
    ErrorBody, ExecInfo, ExecRequest, ExecStarted, ExitStatus, FrameDecoder, FrameKind,
    HEADER_EXEC, Health, KillRequest, routes,
};

pub use files::{DEFAULT_MAX_DOWNLOAD, DownloadResult, Progress};
pub use idle::DEFAULT_IDLE_TIMEOUT;
use idle::{Activity, idle_bounded};
pub use pty::{PtyEvent, PtySession};
pub use ready::{ReadyListener, ready_socket_path};

/// Request body type used on the wire.
type ReqBody = UnsyncBoxBody<Bytes, io::Error>;

/// Errors of the client, each with enough context to be shown to a user.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("connect to agent socket {path}: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The hybrid-vsock `CONNECT` handshake failed (nothing listening in the guest, or a bad reply).
    #[error("vsock handshake with {path} (port {port}): {reason}")]
    Handshake {
        /// Socket path.
        path: PathBuf,
        /// Port asked for.
        port: u32,
        /// What went wrong.
        reason: String,
    },
    /// HTTP-level failure.
    #[error("HTTP exchange with the agent: {0}")]
    Http(#[from] hyper::Error),
    /// The agent answered with an error.
    #[error("agent refused {what} ({status}, {code}): {message}")]
    Agent {
        /// What was asked.
        what: String,
        /// HTTP status.
        status: u16,
        /// Stable error code (`unauthorized`, `forbidden`, `not_found`, `path_escape`, …).
        code: String,
        /// The agent's message.
        message: String,
    },
    /// The agent sent something that does not follow the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Local I/O (sinks, files).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The agent sent nothing (and read nothing) for the client's idle timeout.
    #[error("the agent sent nothing for {secs} s during {what}")]
    Timeout {
        /// The operation that stalled.
        what: String,
        /// The idle timeout, in seconds.
        secs: u64,
    },
    /// A download is larger than the caller allows.
    #[error("the download is at least {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Size seen so far (or announced).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A download asked for something that would be unsafe to write on the host (a path that
    /// leaves the destination, a symlink on the way, a device node).
    #[error("refused to write the download: {0}")]
    Refused(String),
    /// WebSocket failure on a PTY session.
    #[error("PTY WebSocket: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
}

impl ClientError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// The agent's error code, when the agent refused the request.
    pub fn agent_code(&self) -> Option<&str> {
        match self {
            Self::Agent { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ClientError>;

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket the agent itself listens on (plain mode, the stand-in VMM's relay).
    Unix(PathBuf),
    /// Firecracker's vsock Unix socket (`uds_path`): each connection starts with `CONNECT port`.
    HybridVsock {
        /// The VM's `uds_path`.
        uds_path: PathBuf,
        /// Guest port (normally [`vmsan_proto::AGENT_API_PORT`]).
        port: u32,
    },
}

impl Endpoint {
    /// The agent's API port behind Firecracker's vsock socket.
    pub fn hybrid_vsock(uds_path: impl Into<PathBuf>) -> Self {
        Self::HybridVsock {
            uds_path: uds_path.into(),
            port: vmsan_proto::AGENT_API_PORT,
        }
    }

    fn path(&self) -> &Path {
        match self {
            Self::Unix(p) | Self::HybridVsock { uds_path: p, .. } => p,
        }
    }
}

/// Connect a stream to the agent, doing the hybrid-vsock handshake when needed.
///
/// # Errors
/// [`ClientError::Connect`] or [`ClientError::Handshake`].
pub async fn connect(endpoint: &Endpoint) -> Result<UnixStream> {
    let path = endpoint.path();
    let mut s = UnixStream::connect(path)
        .await
        .map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    if let Endpoint::HybridVsock { port, .. } = endpoint {
        let hs = |reason: String| ClientError::Handshake {
            path: path.to_path_buf(),
            port: *port,
            reason,
        };
        tokio::time::timeout(Duration::from_secs(5), vsock_handshake(&mut s, *port))
            .await
            .map_err(|_| hs("no answer within 5 s".into()))?
            .map_err(hs)?;
    }
    Ok(s)
}

/// Write `CONNECT port\n` and read exactly one `OK <n>\n` line (byte by byte, so nothing that
/// follows it is consumed).
async fn vsock_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    port: u32,
) -> std::result::Result<u32, String> {
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|e| format!("write CONNECT: {e}"))?;
    let mut line = Vec::with_capacity(16);
    loop {
        let mut b = [0u8; 1];
        let n = s
            .read(&mut b)
            .await
            .map_err(|e| format!("read reply: {e}"))?;
        if n == 0 {
            return Err("connection closed (is the agent listening on that port?)".into());
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > 32 {
            return Err("reply line too long".into());
        }
    }
    parse_ok_line(&line)
}

fn parse_ok_line(line: &[u8]) -> std::result::Result<u32, String> {
    let text = std::str::from_utf8(line).map_err(|_| "reply is not UTF-8".to_owned())?;
    text.strip_prefix("OK ")
        .and_then(|n| n.trim_end_matches('\r').parse().ok())
        .ok_or_else(|| format!("unexpected reply {text:?}"))
}

/// Outcome of [`AgentClient::exec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Command id (for [`AgentClient::kill`] from elsewhere).
    pub id: String,
    /// Guest pid.
    pub pid: u32,
    /// How it ended.
    pub status: ExitStatus,
}

/// Outcome of [`AgentClient::exec_collect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// How it ended.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
}

/// The body of a request that may be sent again on a fresh connection.
#[derive(Debug, Clone)]
struct Replay(Bytes);

/// The request never reached a live agent: the pooled connection was already closed.
fn is_stale(e: &hyper::Error) -> bool {
    e.is_canceled() || e.is_closed() || e.is_incomplete_message()
}

/// Client of one agent. Cheap to share (`Arc`) between tasks; idle connections are reused.
#[derive(Debug)]
pub struct AgentClient {
    endpoint: Endpoint,
    auth: String,
    pool: Mutex<Vec<Conn>>,
    /// How long a call may go without a byte from the agent (or, while a request body is
    /// being sent, without the agent taking a byte) before it fails with
    /// [`ClientError::Timeout`].
    idle: Duration,
}

const POOL_MAX: usize = 16;

/// One HTTP connection: the sender and the task driving it.
#[derive(Debug)]
struct Conn {
    sender: SendRequest<ReqBody>,
    task: tokio::task::AbortHandle,
}

/// Aborts a connection's task when dropped armed: a request abandoned mid-way (its idle
/// timeout fired) must not leave the task holding its body, and whoever feeds that body,
/// blocked forever.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

fn empty_body() -> ReqBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn full_body(b: impl Into<Bytes>) -> ReqBody {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A request body read from an [`AsyncRead`] in chunks (back-pressured by hyper); each chunk
/// hyper takes counts as progress on `activity`.
pub(crate) fn reader_body<R: AsyncRead + Send + Unpin + 'static>(
    reader: R,
    activity: Activity,
) -> ReqBody {
    let stream = futures_util::stream::unfold(Some(reader), move |state| {
        let activity = activity.clone();
        async move {
            let mut r = state?;
            let mut buf = BytesMut::with_capacity(128 * 1024);
            match r.read_buf(&mut buf).await {
                Ok(0) => None,
                Ok(_) => {
                    activity.touch();
                    Some((Ok(Frame::data(buf.freeze())), Some(r)))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

impl AgentClient {
    /// A client for `endpoint` that presents `token` as its bearer token.
    pub fn new(endpoint: Endpoint, token: impl AsRef<str>) -> Self {
        Self {
            endpoint,
            auth: format!("Bearer {}", token.as_ref()),
            pool: Mutex::new(Vec::new()),
            idle: DEFAULT_IDLE_TIMEOUT,
        }
    }

    /// The same client with another idle timeout: a call fails with [`ClientError::Timeout`]
    /// once the agent has sent nothing (nor taken any of a request body) for `idle`. A running
    /// command's silence (`exec` after it started, an attached PTY) is not idleness: those are
    /// bounded by the command's own timeout.
    #[must_use]
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// The idle timeout of this client.
    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    /// Next frame of a response body, failing after the idle timeout without one.
    async fn next_frame(&self, body: &mut Incoming, what: &str) -> Result<Option<Frame<Bytes>>> {
        match idle_bounded(body.frame(), None, self.idle, what).await? {
            Some(f) => Ok(Some(f?)),
            None => Ok(None),
        }
    }

    /// A whole (small) response body, each frame within the idle timeout.
    async fn collect_body(&self, mut body: Incoming, what: &str) -> Result<Bytes> {
        let mut out = BytesMut::new();
        while let Some(frame) = self.next_frame(&mut body, what).await? {
            if let Ok(d) = frame.into_data() {
                out.extend_from_slice(&d);
            }
        }
        Ok(out.freeze())
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn checkout(&self) -> Option<Conn> {
        let mut pool = self.pool.lock().ok()?;
        pool.retain(|c| !c.sender.is_closed());
        let idx = pool.iter().position(|c| c.sender.is_ready())?;
        Some(pool.swap_remove(idx))
    }

    fn checkin(&self, s: Conn) {
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < POOL_MAX
        {
            pool.push(s);
        }
    }

    async fn new_conn(&self) -> Result<Conn> {
        let stream = connect(&self.endpoint).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let task = tokio::spawn(async move {
            // Ends when the agent closes the connection or the sender is dropped.
            let _ = conn.await;
        })
        .abort_handle();
        Ok(Conn { sender, task })
    }

    /// Send `req` on `conn`; if this future is dropped before the answer's head arrived, the
    /// connection is torn down.
    async fn send_on(
        conn: &mut Conn,
        req: Request<ReqBody>,
    ) -> std::result::Result<http::Response<Incoming>, hyper::Error> {
        let mut guard = AbortOnDrop(Some(conn.task.clone()));
        let r = conn.sender.send_request(req).await;
        guard.0 = None;
        r
    }

    /// Send one request (reusing an idle connection when there is one) and return the response
    /// when its status is a success; otherwise the agent's error.
    async fn send(&self, what: &str, req: Request<ReqBody>) -> Result<http::Response<Incoming>> {
        // A streamed request body counts its progress here: the head of the answer may only
        // come once the agent has read the whole body.
        let activity = req.extensions().get::<Activity>().cloned();
        let resp = idle_bounded(self.send_inner(req), activity.as_ref(), self.idle, what).await??;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(idle_bounded(error_from(what, resp), None, self.idle, what).await?)
    }

    async fn send_inner(&self, req: Request<ReqBody>) -> Result<http::Response<Incoming>> {
        let resp = match self.checkout() {
            Some(mut pooled) => {
                // A reused connection may have been closed by the agent (restart, drain) just
                // before this request: a request with a small in-memory body is sent again
                // once, on a fresh connection.
                let replay = req.extensions().get::<Replay>().map(|r| {
                    (
                        req.method().clone(),
                        req.uri().clone(),
                        req.headers().clone(),
                        r.0.clone(),
                    )
                });
                match Self::send_on(&mut pooled, req).await {
                    Ok(resp) => {
                        self.checkin(pooled);
                        resp
                    }
                    Err(e) if is_stale(&e) && replay.is_some() => {
                        let Some((method, uri, headers, body)) = replay else {
                            return Err(e.into());
                        };
                        let mut again = Request::new(full_body(body.clone()));
                        *again.method_mut() = method;
                        *again.uri_mut() = uri;
                        *again.headers_mut() = headers;
                        again.extensions_mut().insert(Replay(body));
                        let mut fresh = self.new_conn().await?;
                        let resp = Self::send_on(&mut fresh, again).await?;
                        self.checkin(fresh);
                        resp
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            None => {
                let mut fresh = self.new_conn().await?;
                let resp = Self::send_on(&mut fresh, req).await?;
                self.checkin(fresh);
                resp
            }
        };
        Ok(resp)
    }

    /// A request without a body (replayable).
    fn empty_request(&self, method: Method, path: &str) -> Result<Request<ReqBody>> {
        let mut r = self.request(method, path, empty_body())?;
        r.extensions_mut().insert(Replay(Bytes::new()));
        Ok(r)
    }

    fn request(&self, method: Method, path: &str, body: ReqBody) -> Result<Request<ReqBody>> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "agent")
            .header(http::header::AUTHORIZATION, &self.auth)
            .body(body)
            .map_err(|e| ClientError::Protocol(format!("build request {path}: {e}")))
    }

    fn json_request<T: serde::Serialize>(
        &self,
        method: Method,
        path: &str,
        v: &T,
    ) -> Result<Request<ReqBody>> {
        let body = Bytes::from(
            serde_json::to_vec(v)
                .map_err(|e| ClientError::Protocol(format!("encode {path} body: {e}")))?,
        );
        let mut r = self.request(method, path, full_body(body.clone()))?;
        r.extensions_mut().insert(Replay(body));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(r)
    }

    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        req: Request<ReqBody>,
    ) -> Result<T> {
        let resp = self.send(what, req).await?;
        let bytes = self.collect_body(resp.into_body(), what).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("{what}: invalid JSON answer: {e}")))
    }

    async fn call_empty(&self, what: &str, req: Request<ReqBody>) -> Result<()> {
        let resp = self.send(what, req).await?;
        self.collect_body(resp.into_body(), what).await?;
        Ok(())
    }

    /// `GET /v1/health`: version, protocol and mode of the agent.
    ///
    /// # Errors
    /// Connection, authentication or protocol failure.
    pub async fn health(&self) -> Result<Health> {
        let req = self.empty_request(Method::GET, routes::HEALTH)?;
        self.call_json("health", req).await
    }

    /// Run a command and stream its stdout and stderr into `stdout` and `stderr` as they come
    /// (the agent waits while a sink is slow). When `stdin` is given, it is sent as the
    /// process's stdin and closed at its end (`req.stdin` is then set for you).
    ///
    /// Dropping the returned future (e.g. on Ctrl-C) closes the connection, and the agent kills
    /// the command's whole process group.
    ///
    /// # Errors
    /// Connection or protocol failure, the agent's refusal (e.g. `spawn_failed` when the program
    /// does not exist), or a failing sink. A non-zero exit is not an error: see
    /// [`ExecOutcome::status`].
    pub async fn exec<I, O, E>(
        &self,
        mut req: ExecRequest,
        stdin: Option<I>,
        stdout: &mut O,
        stderr: &mut E,
    ) -> Result<ExecOutcome>
    where
        I: AsyncRead + Send + Unpin + 'static,
        O: AsyncWrite + Unpin + ?Sized,
        E: AsyncWrite + Unpin + ?Sized,
    {
        req.detached = false;
        req.stdin = stdin.is_some();
        let http_req = match stdin {
            Some(input) => {
                let header = serde_json::to_vec(&req)
                    .map_err(|e| ClientError::Protocol(format!("encode exec request: {e}")))?;
                let value = http::HeaderValue::from_bytes(&header)
                    .map_err(|e| ClientError::Protocol(format!("exec request as header: {e}")))?;
                let activity = Activity::default();
                let mut r = self.request(
                    Method::POST,
                    routes::EXEC,
                    reader_body(input, activity.clone()),
                )?;
                r.headers_mut().insert(HEADER_EXEC, value);
                r.extensions_mut().insert(activity);
                r
            }
            None => self.json_request(Method::POST, routes::EXEC, &req)?,
        };
        let what = format!(
            "exec {:?}",
            req.argv.first().map(String::as_str).unwrap_or("")
        );
        let resp = self.send(&what, http_req).await?;
        let mut body = resp.into_body();
        let mut dec = FrameDecoder::new();
        let mut started: Option<ExecStarted> = None;
        let proto = |m: String| ClientError::Protocol(m);
        loop {
            // Until the command has started, silence means a stalled agent; afterwards it is
            // the command's own (bounded by its --timeout).
            let frame = if started.is_none() {
                self.next_frame(&mut body, &what).await?
            } else {
                body.frame().await.transpose()?
            };
            let Some(frame) = frame else { break };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            dec.push(&data);
            while let Some((kind, payload)) = dec
                .next_frame()
                .map_err(|e| proto(format!("exec stream: {e}")))?
            {
                match kind {
                    FrameKind::Started => {
                        started = Some(
                            serde_json::from_slice(&payload)
                                .map_err(|e| proto(format!("exec started frame: {e}")))?,
                        );
                    }
                    FrameKind::Stdout => stdout
                        .write_all(&payload)
                        .await
                        .map_err(|e| ClientError::io("write command stdout", e))?,
                    FrameKind::Stderr => stderr
                        .write_all(&payload)
                        .await
                        .map_err(|e| ClientError::io("write command stderr", e))?,
                    FrameKind::Exit => {
                        let status: ExitStatus = serde_json::from_slice(&payload)
                            .map_err(|e| proto(format!("exit frame: {e}")))?;
                        stdout
                            .flush()
                            .await
                            .map_err(|e| ClientError::io("flush stdout", e))?;
                        stderr
                            .flush()
                            .await
                            .map_err(|e| ClientError::io("flush stderr", e))?;
                        let started = started.unwrap_or(ExecStarted {
                            id: String::new(),
                            pid: 0,
                        });
                        return Ok(ExecOutcome {
                            id: started.id,
                            pid: started.pid,
                            status,
                        });
                    }
                    FrameKind::Error => {
                        let e: ErrorBody = serde_json::from_slice(&payload).unwrap_or(ErrorBody {
                            code: "internal".into(),
                            error: "unreadable error".into(),
                        });
                        return Err(ClientError::Agent {
                            what,
                            status: 200,
                            code: e.code,
                            message: e.error,
                        });
                    }
                }
            }
        }
        Err(proto(format!("{what}: stream ended without an exit frame")))
    }

    /// Run a command without stdin and collect its output in memory (for small outputs).
    ///
    /// # Errors
    /// As [`AgentClient::exec`].
    pub async fn exec_collect(&self, req: ExecRequest) -> Result<ExecOutput> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let out = self
            .exec(req, None::<tokio::io::Empty>, &mut stdout, &mut stderr)
            .await?;
        Ok(ExecOutput {
            status: out.status,
            stdout,
            stderr,
        })
    }

    /// Start a command detached: returns at once; read its kept output with
    /// [`AgentClient::exec_output`].
    ///
    /// # Errors
    /// Connection failure or the agent's refusal.
    pub async fn exec_detached(&self, mut req: ExecRequest) -> Result<ExecStarted> {
        req.detached = true;
        req.stdin = false;
        let r = self.json_request(Method::POST, routes::EXEC, &req)?;
        self.call_json("exec (detached)", r).await
    }

    /// State of a command started by this agent.
    ///
    /// # Errors
    /// `not_found` for an unknown id.
    pub async fn exec_info(&self, id: &str) -> Result<ExecInfo> {
        let r = self.empty_request(Method::GET, &format!("{}{id}", routes::EXEC_PREFIX))?;
        self.call_json("exec info", r).await
    }

    /// What a detached command has written so far (the agent keeps its last MiB), and its exit
    /// status once it has ended.
    ///
    /// # Errors
    /// `not_found` for an unknown id.
    pub async fn exec_output(&self, id: &str) -> Result<ExecOutput> {
        let r = self.empty_request(Method::GET, &format!("{}{id}/output", routes::EXEC_PREFIX))?;
        let resp = self.send("exec output", r).await?;
        let bytes = self.collect_body(resp.into_body(), "exec output").await?;
        let mut dec = FrameDecoder::new();
        dec.push(&bytes);
        let mut out = ExecOutput {
            status: ExitStatus {
                code: -1,
                signal: None,
                timed_out: false,
            },
            stdout: vec![],
            stderr: vec![],
        };
        while let Some((kind, p)) = dec
            .next_frame()
            .map_err(|e| ClientError::Protocol(format!("exec output: {e}")))?
        {
            match kind {
                FrameKind::Stdout => out.stdout.extend_from_slice(&p),
                FrameKind::Stderr => out.stderr.extend_from_slice(&p),
                FrameKind::Exit => {
                    out.status = serde_json::from_slice(&p)
                        .map_err(|e| ClientError::Protocol(format!("exit frame: {e}")))?;
                }
                FrameKind::Started | FrameKind::Error => {}
            }
        }
        Ok(out)
    }

    /// Send `signal` to a command's whole process group.
    ///
    /// # Errors
    /// `not_found` for an unknown id.
    pub async fn kill(&self, id: &str, signal: i32) -> Result<()> {
        let r = self.json_request(
            Method::POST,
            &format!("{}{id}/kill", routes::EXEC_PREFIX),
            &KillRequest { signal },
        )?;
        self.call_empty("kill", r).await
    }

    /// Ask the agent to shut down (init mode: kill everything, sync, unmount, power off).
    ///
    /// # Errors
    /// Connection or authentication failure.
    pub async fn shutdown(&self) -> Result<()> {
        let r = self.empty_request(Method::POST, routes::SHUTDOWN)?;
        self.call_empty("shutdown", r).await
    }

    /// Flush the guest's dirty pages to its disks (`sync(2)`), so a copy of a disk taken
    /// while the VM is paused holds everything written before.
    ///
    /// # Errors
    /// Connection or authentication failure.
    pub async fn sync(&self) -> Result<()> {
        let r = self.empty_request(Method::POST, routes::SYNC)?;
        self.call_empty("sync", r).await
    }

    /// Step the guest's clock to `host_unix_ms` (ms since the epoch) when it is more than a
    /// second off; returns the guest's reading from just before. Only a real guest steps (the
    /// stand-in and plain-mode agents share the host's clock and only answer).
    ///
    /// # Errors
    /// Connection or authentication failure, or the agent's failure to set the clock.
    pub async fn set_clock(&self, host_unix_ms: u64) -> Result<u64> {
        let r = self.json_request(
            Method::POST,
            routes::CLOCK,
            &vmsan_proto::ClockSet {
                clock_unix_ms: host_unix_ms,
            },
        )?;
        let before: vmsan_proto::ClockSet = self.call_json("clock", r).await?;
        Ok(before.clock_unix_ms)
    }

    /// Give a restored clone its own identity: hostname, address, token, clock and entropy.
    /// Afterwards only `id.token` is accepted: build a new client with it.
    ///
    /// # Errors
    /// Connection or authentication failure, or the agent's refusal (`bad_request`).
    pub async fn reidentify(&self, id: &vmsan_proto::Reidentify) -> Result<()> {
        let r = self.json_request(Method::POST, routes::IDENTITY, id)?;
        self.call_empty("reidentify", r).await
    }
}

async fn error_from(what: &str, resp: http::Response<Incoming>) -> ClientError {
    let status = resp.status();
    let bytes = match http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(e) => (e.code, e.error),
        Err(_) => (
            status.canonical_reason().unwrap_or("error").to_lowercase(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ),
    };
    ClientError::Agent {
        what: what.to_owned(),
        status: status.as_u16(),
        code,
        message,
    }
}

/// True for an error meaning the agent refused our credentials.
pub fn is_auth_error(e: &ClientError) -> bool {
    matches!(e, ClientError::Agent { status, .. } if *status == StatusCode::UNAUTHORIZED.as_u16() || *status == StatusCode::FORBIDDEN.as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_line_parsing() {
        assert_eq!(parse_ok_line(b"OK 1073741824"), Ok(1_073_741_824));
        assert_eq!(parse_ok_line(b"OK 5\r"), Ok(5));
        assert!(parse_ok_line(b"ERR").is_err());
        assert!(parse_ok_line(b"OK x").is_err());
    }

    #[test]
    fn ready_socket_is_uds_path_underscore_port() {
        assert_eq!(
            ready_socket_path(Path::new("/srv/vmsan/vm-1/v.sock")),
            PathBuf::from("/srv/vmsan/vm-1/v.sock_1025")
        );
    }

    #[tokio::test]
    async fn ready_listener_reads_the_announcement() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let l = ReadyListener::bind(&uds).unwrap();
        assert_eq!(l.path(), ready_socket_path(&uds));
        let path = l.path().to_path_buf();
        tokio::spawn(async move {
            let mut s = UnixStream::connect(path).await.unwrap();
            s.write_all(b"{\"vmId\":\"vm-1\",\"version\":\"0.1.0\"}\n")
                .await
                .unwrap();
        });
        let a = l.wait(Duration::from_secs(10)).await.unwrap();
        assert_eq!((a.vm_id.as_str(), a.version.as_str()), ("vm-1", "0.1.0"));
        let p = l.path().to_path_buf();
        drop(l);
        assert!(!p.exists(), "socket file left behind");
    }

    #[tokio::test]
    async fn handshake_reads_exactly_one_line() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let server = tokio::spawn(async move {
            let mut buf = [0u8; 13];
            b.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"CONNECT 1024\n");
            b.write_all(b"OK 42\nHTTP").await.unwrap();
            b
        });
        assert_eq!(vsock_handshake(&mut a, 1024).await, Ok(42));
        let mut rest = [0u8; 4];
        a.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"HTTP");
        drop(server.await.unwrap());
    }
}
