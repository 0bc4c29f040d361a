//! HTTP/1.1 server: routing, authentication, response helpers.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::{Body as HttpBody, Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use vmsan_proto::{ErrorBody, Health, PROTOCOL_VERSION, routes};

use crate::{exec, files, pty};

/// Body of every response.
pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Per-agent state shared by every connection.
#[derive(Debug)]
pub(crate) struct Agent {
    /// Replaced once when a restored clone takes on its own identity.
    token: std::sync::RwLock<Vec<u8>>,
    /// The guest's network as configured (init mode), for a later renumbering.
    network: Mutex<Option<vmsan_proto::GuestNetwork>>,
    pub(crate) mode: &'static str,
    /// Root of the guest's user database (`/`).
    pub(crate) etc_root: PathBuf,
    pub(crate) default_user: Option<String>,
    /// Defaults from the image config and the config drive, applied before the request's env.
    pub(crate) default_env: BTreeMap<String, String>,
    pub(crate) default_cwd: Option<String>,
    pub(crate) execs: Mutex<HashMap<String, Arc<exec::ExecEntry>>>,
    pub(crate) ptys: Mutex<HashMap<String, Arc<pty::Session>>>,
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    next_id: std::sync::atomic::AtomicU64,
    id_salt: u64,
}

/// Options of [`Agent::new`].
#[derive(Debug, Default)]
pub(crate) struct AgentOptions {
    pub(crate) token: String,
    pub(crate) mode: &'static str,
    pub(crate) default_user: Option<String>,
    pub(crate) default_env: BTreeMap<String, String>,
    pub(crate) default_cwd: Option<String>,
    pub(crate) network: Option<vmsan_proto::GuestNetwork>,
}

impl Agent {
    pub(crate) fn new(opts: AgentOptions) -> Arc<Self> {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let (shutdown, _) = tokio::sync::watch::channel(false);
        Arc::new(Self {
            token: std::sync::RwLock::new(opts.token.into_bytes()),
            network: Mutex::new(opts.network),
            mode: opts.mode,
            etc_root: PathBuf::from("/"),
            default_user: opts.default_user,
            default_env: opts.default_env,
            default_cwd: opts.default_cwd,
            execs: Mutex::new(HashMap::new()),
            ptys: Mutex::new(HashMap::new()),
            shutdown,
            next_id: std::sync::atomic::AtomicU64::new(1),
            id_salt: h.finish(),
        })
    }

    /// The bearer token, for scrubbing children's environments.
    pub(crate) fn token(&self) -> Vec<u8> {
        self.token.read().map(|t| t.clone()).unwrap_or_default()
    }

    /// The guest's network as last configured.
    pub(crate) fn network(&self) -> Option<vmsan_proto::GuestNetwork> {
        self.network.lock().ok().and_then(|n| n.clone())
    }

    /// Switch to a new token and network (after a restore).
    pub(crate) fn set_identity(&self, token: Vec<u8>, network: Option<vmsan_proto::GuestNetwork>) {
        if let Ok(mut t) = self.token.write() {
            *t = token;
        }
        if let Ok(mut n) = self.network.lock() {
            *n = network;
        }
    }

    /// A fresh id (16 hex digits), unique within this agent.
    pub(crate) fn new_id(&self) -> String {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!(
            "{:016x}",
            n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ self.id_salt
        )
    }

    /// Check `Authorization: Bearer <token>` in constant time.
    fn authorize(&self, req: &Request<Incoming>) -> Result<(), Response<Body>> {
        let Some(value) = req.headers().get(http::header::AUTHORIZATION) else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing bearer token",
            ));
        };
        let Some(presented) = value.as_bytes().strip_prefix(b"Bearer ") else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "authorization is not a bearer token",
            ));
        };
        let token = self.token();
        if token.is_empty() || !constant_time_eq(presented, &token) {
            return Err(error(StatusCode::FORBIDDEN, "forbidden", "invalid token"));
        }
        Ok(())
    }
}

/// Compare without an early exit on the first difference (the length is not secret).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// A response body fed by a bounded channel: the producer waits when the client reads slowly.
#[derive(Debug)]
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl ChannelBody {
    /// A body and the sender that feeds it (`depth` chunks in flight at most).
    pub(crate) fn new(depth: usize) -> (mpsc::Sender<io::Result<Bytes>>, Self) {
        let (tx, rx) = mpsc::channel(depth);
        (tx, Self { rx })
    }
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

pub(crate) fn full(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

pub(crate) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(v) => full(status, "application/json", v),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("serialise answer: {e}"),
        ),
    }
}

pub(crate) fn error(status: StatusCode, code: &str, msg: &str) -> Response<Body> {
    let body = ErrorBody {
        code: code.into(),
        error: msg.into(),
    };
    let v = serde_json::to_vec(&body).unwrap_or_default();
    full(status, "application/json", v)
}

pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    full(status, "text/plain", Bytes::new())
}

pub(crate) fn streaming(content_type: &str, body: ChannelBody) -> Response<Body> {
    let mut r = Response::new(body.boxed_unsync());
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// Read a small JSON request body (at most 1 MiB).
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    body: Incoming,
) -> Result<T, Response<Body>> {
    let limited = http_body_util::Limited::new(body, 1 << 20);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("read request body: {e}"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("invalid JSON body: {e}"),
        )
    })
}

async fn route(agent: Arc<Agent>, req: Request<Incoming>) -> Response<Body> {
    if let Err(resp) = agent.authorize(&req) {
        return resp;
    }
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, routes::HEALTH) => json(
            StatusCode::OK,
            &Health {
                status: "ok".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                protocol: PROTOCOL_VERSION,
                mode: agent.mode.into(),
            },
        ),
        (&Method::POST, routes::EXEC) => exec::handle_exec(agent, req).await,
        (&Method::POST, routes::PTY) => pty::handle_open(agent, req).await,
        (&Method::GET, routes::PTY) => pty::handle_list(&agent),
        (&Method::PUT, routes::UPLOAD) => files::handle_upload(req).await,
        (&Method::POST, routes::DOWNLOAD) => files::handle_download(req).await,
        (
            &Method::POST,
            routes::STAT
            | routes::LIST
            | routes::MKDIR
            | routes::REMOVE
            | routes::RENAME
            | routes::FS_STAT
            | routes::FS_LIST
            | routes::FS_MAKE_DIR
            | routes::FS_REMOVE
            | routes::FS_MOVE,
        ) => files::handle_op(&path, &agent.etc_root, req).await,
        (&Method::POST, routes::IDENTITY) => crate::identity::handle(agent, req).await,
        (&Method::POST, routes::CLOCK) => crate::clock::handle(agent, req).await,
        (&Method::POST, routes::SYNC) => {
            match tokio::task::spawn_blocking(nix::unistd::sync).await {
                Ok(()) => empty(StatusCode::NO_CONTENT),
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "sync",
                    &format!("sync task: {e}"),
                ),
            }
        }
        (&Method::POST, routes::SHUTDOWN) => {
            agent.shutdown.send_replace(true);
            empty(StatusCode::ACCEPTED)
        }
        _ => {
            if let Some(rest) = path.strip_prefix(routes::EXEC_PREFIX) {
                return exec::handle_by_id(agent, &method, rest, req).await;
            }
            if let Some(rest) = path.strip_prefix(routes::PTY_PREFIX) {
                return pty::handle_by_id(agent, &method, rest, req).await;
            }
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no route for {method} {path}"),
            )
        }
    }
}

/// Serve one accepted connection until the client closes it, or, once `shutdown` turns true,
/// until its in-flight request is answered (idle connections close at once).
pub(crate) async fn serve_connection<S>(
    agent: Arc<Agent>,
    stream: S,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let agent = Arc::clone(&agent);
        async move { Ok::<_, Infallible>(route(agent, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(1 << 20)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::pin!(conn);
    // A client going away mid-request is normal; nothing to report.
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = shutdown.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secrets"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
