//! Exec: processes with streamed, framed, back-pressured output; timeouts and kills that reach
//! the whole process group; detached commands whose output can be read later.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdout};
use tokio::sync::{mpsc, watch};
use vmsan_proto::{
    ExecInfo, ExecRequest, ExecStarted, ExitStatus, FRAME_CONTENT_TYPE, FrameKind, KillRequest,
    encode_frame,
};

use crate::server::{self, Agent, Body, ChannelBody};
use crate::sys::ChildIdentity;
use crate::users;

/// Bytes of output a detached command keeps (the oldest are dropped beyond this).
const DETACHED_KEEP: usize = 1 << 20;
/// Read size from a child's pipes.
const READ_CHUNK: usize = 256 * 1024;

/// Finished detached commands kept for `GET …/output` (the oldest are forgotten).
const KEEP_FINISHED: usize = 64;
static NEXT_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn prune_finished(m: &mut std::collections::HashMap<String, Arc<ExecEntry>>) {
    let mut finished: Vec<(u64, String)> = m
        .values()
        .filter(|e| e.exit.borrow().is_some())
        .map(|e| (e.seq, e.id.clone()))
        .collect();
    if finished.len() > KEEP_FINISHED {
        finished.sort_unstable();
        let excess = finished.len() - KEEP_FINISHED;
        for (_, id) in finished.into_iter().take(excess) {
            m.remove(&id);
        }
    }
}

/// How a child is to be started: identity, environment, working directory.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) identity: Option<ChildIdentity>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) cwd: PathBuf,
    pub(crate) shell: String,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Resolve user, environment and working directory for a child. The agent's token never
/// reaches a child: variables that name the agent (`VMSAN_*`, `vmsan_*`) or contain the token
/// are dropped.
pub(crate) fn prepare(
    agent: &Agent,
    user: Option<&str>,
    cwd: Option<&str>,
    req_env: &BTreeMap<String, String>,
) -> Result<Prepared, (StatusCode, String)> {
    let euid = nix::unistd::geteuid().as_raw();
    let spec = user.or(agent.default_user.as_deref());
    let resolved = match spec {
        Some(s) => {
            Some(users::resolve(&agent.etc_root, s).map_err(|e| (StatusCode::BAD_REQUEST, e))?)
        }
        None => users::resolve(&agent.etc_root, &euid.to_string()).ok(),
    };
    let identity = match (&resolved, spec) {
        (Some(u), Some(_)) if euid == 0 => Some(ChildIdentity {
            uid: u.uid,
            gid: u.gid,
            groups: u.groups.clone(),
        }),
        (Some(u), Some(s)) if u.uid != euid => {
            return Err((
                StatusCode::FORBIDDEN,
                format!("the agent is not root: cannot run as {s:?}"),
            ));
        }
        _ => None,
    };
    let token = agent.token();
    let scrub = |k: &str, v: &str| {
        k.starts_with("VMSAN_")
            || k.starts_with("vmsan_")
            || (!token.is_empty() && v.as_bytes().windows(token.len()).any(|w| w == token))
    };
    let mut env: BTreeMap<String, String> =
        std::env::vars().filter(|(k, v)| !scrub(k, v)).collect();
    for (k, v) in &agent.default_env {
        env.insert(k.clone(), v.clone());
    }
    if let Some(u) = &resolved {
        env.insert("HOME".into(), u.home.clone());
        env.insert("USER".into(), u.name.clone());
        env.insert("LOGNAME".into(), u.name.clone());
    }
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    for (k, v) in req_env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("invalid environment variable {k:?}"),
            ));
        }
        env.insert(k.clone(), v.clone());
    }
    env.retain(|k, v| !scrub(k, v) || req_env.contains_key(k));
    let cwd = match cwd.or(agent.default_cwd.as_deref()) {
        Some(c) if c.starts_with('/') => PathBuf::from(c),
        Some(c) => {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("working directory {c:?} is not absolute"),
            ));
        }
        None => resolved
            .as_ref()
            .map(|u| PathBuf::from(&u.home))
            .filter(|h| h.is_dir())
            .unwrap_or_else(|| PathBuf::from("/")),
    };
    let shell = resolved
        .map(|u| u.shell)
        .unwrap_or_else(|| "/bin/sh".into());
    Ok(Prepared {
        identity,
        env,
        cwd,
        shell,
    })
}

/// A running or finished command.
#[derive(Debug)]
pub(crate) struct ExecEntry {
    id: String,
    /// Creation order, to forget the oldest finished commands first.
    seq: u64,
    pid: u32,
    argv: Vec<String>,
    detached: bool,
    exit: watch::Sender<Option<ExitStatus>>,
    output: Mutex<DetachedOutput>,
}

#[derive(Debug, Default)]
struct DetachedOutput {
    frames: VecDeque<(FrameKind, Bytes)>,
    bytes: usize,
}

impl ExecEntry {
    fn info(&self) -> ExecInfo {
        ExecInfo {
            id: self.id.clone(),
            pid: self.pid,
            argv: self.argv.clone(),
            exit: *self.exit.borrow(),
            detached: self.detached,
        }
    }

    fn kill(&self, signal: Signal) -> io::Result<()> {
        if self.exit.borrow().is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.pid).map_err(io::Error::other)?;
        match killpg(Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }
}

fn frame(kind: FrameKind, payload: &[u8]) -> Bytes {
    // Payloads here are at most READ_CHUNK bytes or small JSON: always within the frame limit.
    Bytes::from(encode_frame(kind, payload).unwrap_or_default())
}

fn json_frame<T: serde::Serialize>(kind: FrameKind, v: &T) -> Bytes {
    frame(kind, &serde_json::to_vec(v).unwrap_or_default())
}

pub(crate) fn exit_status(st: std::process::ExitStatus, timed_out: bool) -> ExitStatus {
    match (st.code(), st.signal()) {
        (Some(code), _) => ExitStatus {
            code,
            signal: None,
            timed_out,
        },
        (None, Some(sig)) => ExitStatus {
            code: 128 + sig,
            signal: Some(sig),
            timed_out,
        },
        (None, None) => ExitStatus {
            code: -1,
            signal: None,
            timed_out,
        },
    }
}

/// `POST /v1/exec`. The request JSON is in the body; when `stdin` is set, the JSON is instead in
/// the `x-vmsan-exec` header and the body is stdin.
pub(crate) async fn handle_exec(agent: Arc<Agent>, req: Request<Incoming>) -> Response<Body> {
    let header = req
        .headers()
        .get(vmsan_proto::HEADER_EXEC)
        .map(|v| v.as_bytes().to_vec());
    let (exec_req, stdin_body): (ExecRequest, Option<Incoming>) = match header {
        Some(h) => match serde_json::from_slice::<ExecRequest>(&h) {
            Ok(r) => (r, Some(req.into_body())),
            Err(e) => {
                return server::error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("invalid exec header: {e}"),
                );
            }
        },
        None => match server::read_json::<ExecRequest>(req.into_body()).await {
            Ok(r) => (r, None),
            Err(resp) => return resp,
        },
    };
    start(agent, exec_req, stdin_body).await
}

async fn start(
    agent: Arc<Agent>,
    req: ExecRequest,
    stdin_body: Option<Incoming>,
) -> Response<Body> {
    if req.argv.is_empty() || req.argv[0].is_empty() {
        return server::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "argv must not be empty",
        );
    }
    if req.argv.iter().any(|a| a.contains('\0')) {
        return server::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "argv contains a NUL byte",
        );
    }
    let prepared = match prepare(&agent, req.user.as_deref(), req.cwd.as_deref(), &req.env) {
        Ok(p) => p,
        Err((status, msg)) => return server::error(status, "bad_request", &msg),
    };
    let use_stdin = req.stdin && !req.detached && stdin_body.is_some();
    let mut cmd = tokio::process::Command::new(&req.argv[0]);
    cmd.args(&req.argv[1..])
        .env_clear()
        .envs(&prepared.env)
        .current_dir(&prepared.cwd)
        .stdin(if use_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::sys::prepare_child(&mut cmd, prepared.identity, false);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let status = if e.kind() == io::ErrorKind::NotFound {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            return server::error(
                status,
                "spawn_failed",
                &format!("start {:?} in {}: {e}", req.argv[0], prepared.cwd.display()),
            );
        }
    };
    drop(cmd);
    // Larger pipes: fewer wake-ups and bigger frames for heavy output (best effort).
    let pipes = [
        child.stdout.as_ref().map(AsFd::as_fd),
        child.stderr.as_ref().map(AsFd::as_fd),
    ];
    for fd in pipes.into_iter().flatten() {
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
    }
    let pid = child.id().unwrap_or(0);
    let id = agent.new_id();
    let (exit, _) = watch::channel(None);
    let entry = Arc::new(ExecEntry {
        id: id.clone(),
        seq: NEXT_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        pid,
        argv: req.argv.clone(),
        detached: req.detached,
        exit,
        output: Mutex::new(DetachedOutput::default()),
    });
    if let Ok(mut m) = agent.execs.lock() {
        m.insert(id.clone(), Arc::clone(&entry));
        prune_finished(&mut m);
    }
    if let (Some(stdin), Some(body)) = (child.stdin.take(), stdin_body.filter(|_| use_stdin)) {
        tokio::spawn(pump_stdin(body, stdin));
    }
    let timeout = req.timeout_ms.map(Duration::from_millis);
    let started = ExecStarted {
        id: id.clone(),
        pid,
    };
    if req.detached {
        let agent2 = Arc::clone(&agent);
        tokio::spawn(async move {
            run(child, Arc::clone(&entry), None, timeout).await;
            // Keep the entry for `GET …/output`; nothing else to do.
            drop(agent2);
        });
        return server::json(StatusCode::OK, &started);
    }
    let (tx, body) = ChannelBody::new(4);
    tokio::spawn(async move {
        if tx
            .send(Ok(json_frame(FrameKind::Started, &started)))
            .await
            .is_err()
        {
            let _ = entry.kill(Signal::SIGKILL);
        }
        run(child, Arc::clone(&entry), Some(tx), timeout).await;
        if let Ok(mut m) = agent.execs.lock() {
            m.remove(&entry.id);
        }
    });
    server::streaming(FRAME_CONTENT_TYPE, body)
}

async fn pump_stdin(mut body: Incoming, mut stdin: tokio::process::ChildStdin) {
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data()
            && stdin.write_all(&data).await.is_err()
        {
            return;
        }
    }
    let _ = stdin.shutdown().await;
}

async fn read_opt<R: AsyncRead + Unpin>(r: &mut Option<R>, buf: &mut [u8]) -> io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

struct Sink {
    tx: Option<mpsc::Sender<io::Result<Bytes>>>,
    entry: Arc<ExecEntry>,
}

impl Sink {
    async fn emit(&mut self, kind: FrameKind, data: &[u8]) {
        if let Some(tx) = &self.tx {
            if tx.send(Ok(frame(kind, data))).await.is_err() {
                // The client went away: the command is cancelled.
                let _ = self.entry.kill(Signal::SIGKILL);
                self.tx = None;
            }
        } else if self.entry.detached
            && let Ok(mut out) = self.entry.output.lock()
        {
            out.bytes += data.len();
            out.frames.push_back((kind, Bytes::copy_from_slice(data)));
            while out.bytes > DETACHED_KEEP {
                match out.frames.pop_front() {
                    Some((_, b)) => out.bytes -= b.len(),
                    None => break,
                }
            }
        }
    }
}

async fn run(
    mut child: Child,
    entry: Arc<ExecEntry>,
    tx: Option<mpsc::Sender<io::Result<Bytes>>>,
    timeout: Option<Duration>,
) {
    let mut stdout: Option<ChildStdout> = child.stdout.take();
    let mut stderr: Option<ChildStderr> = child.stderr.take();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut timed_out = false;
    let mut status = None;
    let mut out_buf = vec![0u8; READ_CHUNK];
    let mut err_buf = vec![0u8; READ_CHUNK];
    let mut sink = Sink {
        tx,
        entry: Arc::clone(&entry),
    };
    let closed = |sink: &Sink| {
        let tx = sink.tx.clone();
        async move {
            match tx {
                Some(tx) => tx.closed().await,
                None => std::future::pending().await,
            }
        }
    };
    while stdout.is_some() || stderr.is_some() || status.is_none() {
        tokio::select! {
            r = read_opt(&mut stdout, &mut out_buf) => match r {
                Ok(n) if n > 0 => sink.emit(FrameKind::Stdout, &out_buf[..n]).await,
                _ => stdout = None,
            },
            r = read_opt(&mut stderr, &mut err_buf) => match r {
                Ok(n) if n > 0 => sink.emit(FrameKind::Stderr, &err_buf[..n]).await,
                _ => stderr = None,
            },
            st = child.wait(), if status.is_none() => {
                status = Some(st);
            }
            () = async { if let Some(d) = deadline { tokio::time::sleep_until(d).await } else { std::future::pending().await } }, if !timed_out && deadline.is_some() => {
                timed_out = true;
                let _ = entry.kill(Signal::SIGKILL);
            }
            () = closed(&sink) => {
                let _ = entry.kill(Signal::SIGKILL);
                sink.tx = None;
            }
        }
    }
    let st = match status {
        Some(Ok(st)) => exit_status(st, timed_out),
        Some(Err(e)) => {
            sink.emit(
                FrameKind::Error,
                &error_json("wait_failed", &format!("wait for process: {e}")),
            )
            .await;
            ExitStatus {
                code: -1,
                signal: None,
                timed_out,
            }
        }
        None => ExitStatus {
            code: -1,
            signal: None,
            timed_out,
        },
    };
    // The leader is gone; make sure nothing of its group outlives a timeout or a cancel.
    if timed_out {
        let _ = entry.kill(Signal::SIGKILL);
    }
    entry.exit.send_replace(Some(st));
    if let Some(tx) = &sink.tx {
        let _ = tx.send(Ok(json_frame(FrameKind::Exit, &st))).await;
    }
}

fn error_json(code: &str, msg: &str) -> Vec<u8> {
    serde_json::to_vec(&vmsan_proto::ErrorBody {
        code: code.into(),
        error: msg.into(),
    })
    .unwrap_or_default()
}

pub(crate) async fn handle_by_id(
    agent: Arc<Agent>,
    method: &Method,
    rest: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let (id, action) = match rest.split_once('/') {
        Some((id, a)) => (id, a),
        None => (rest, ""),
    };
    let entry = agent.execs.lock().ok().and_then(|m| m.get(id).cloned());
    let Some(entry) = entry else {
        return server::error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no command with id {id:?}"),
        );
    };
    match (method, action) {
        (&Method::GET, "") => server::json(StatusCode::OK, &entry.info()),
        (&Method::POST, "kill") => {
            let kr: KillRequest = match server::read_json(req.into_body()).await {
                Ok(k) => k,
                Err(resp) => return resp,
            };
            let sig = match Signal::try_from(kr.signal) {
                Ok(s) => s,
                Err(_) => {
                    return server::error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        &format!("invalid signal {}", kr.signal),
                    );
                }
            };
            match entry.kill(sig) {
                Ok(()) => server::empty(StatusCode::NO_CONTENT),
                Err(e) => server::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    &format!("kill {id}: {e}"),
                ),
            }
        }
        (&Method::GET, "output") => {
            let mut v = Vec::new();
            if let Ok(out) = entry.output.lock() {
                for (kind, data) in &out.frames {
                    v.extend_from_slice(&frame(*kind, data));
                }
            }
            if let Some(st) = *entry.exit.borrow() {
                v.extend_from_slice(&json_frame(FrameKind::Exit, &st));
            }
            server::full(StatusCode::OK, FRAME_CONTENT_TYPE, v)
        }
        _ => server::error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no route for {method} {rest}"),
        ),
    }
}
