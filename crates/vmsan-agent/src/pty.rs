//! PTY sessions: a program on a pseudo-terminal, any number of WebSocket clients, a scrollback
//! ring buffer for re-attach, back-pressure instead of dropped output, and the exit status.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use vmsan_proto::{ExitStatus, KillRequest, PtyControl, PtyInfo, PtyOpenRequest, PtyOpened};

use crate::exec::{exit_status, prepare};
use crate::server::{self, Agent, Body};

/// Scrollback kept per session (at least [`vmsan_proto::MIN_SCROLLBACK`]).
const SCROLLBACK: usize = 256 * 1024;
const READ_CHUNK: usize = 16 * 1024;
const SEND_CHUNK: usize = 32 * 1024;

/// One PTY session.
#[derive(Debug)]
pub(crate) struct Session {
    id: String,
    pid: u32,
    argv: Vec<String>,
    master: AsyncFd<OwnedFd>,
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
    space: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    ring: VecDeque<u8>,
    /// Total bytes ever produced; `ring` holds the last `ring.len()` of them.
    end: u64,
    /// Client id → position of the next byte it will be sent.
    clients: HashMap<u64, u64>,
    next_client: u64,
    exit: Option<ExitStatus>,
}

impl Session {
    fn kill(&self, sig: Signal) -> io::Result<()> {
        let pid = i32::try_from(self.pid).map_err(io::Error::other)?;
        match killpg(Pid::from_raw(pid), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    async fn write_input(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self
                .master
                .async_io(Interest::WRITABLE, |fd| {
                    nix::unistd::write(fd, data).map_err(io::Error::from)
                })
                .await?;
            data = &data[n..];
        }
        Ok(())
    }

    fn info(&self) -> PtyInfo {
        let (clients, exit) = self
            .inner
            .lock()
            .map(|i| (i.clients.len(), i.exit))
            .unwrap_or((0, None));
        PtyInfo {
            id: self.id.clone(),
            pid: self.pid,
            argv: self.argv.clone(),
            clients,
            exit,
        }
    }
}

fn set_flags(fd: &OwnedFd, nonblock: bool) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    if nonblock {
        let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
        fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
    }
    Ok(())
}

pub(crate) async fn handle_open(agent: Arc<Agent>, req: Request<Incoming>) -> Response<Body> {
    let open: PtyOpenRequest = match server::read_json(req.into_body()).await {
        Ok(o) => o,
        Err(resp) => return resp,
    };
    match open_session(&agent, open) {
        Ok(opened) => server::json(StatusCode::OK, &opened),
        Err((status, msg)) => server::error(status, "spawn_failed", &msg),
    }
}

fn open_session(
    agent: &Arc<Agent>,
    open: PtyOpenRequest,
) -> Result<PtyOpened, (StatusCode, String)> {
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        (StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}"))
    };
    if open.argv.iter().any(|a| a.contains('\0')) {
        return Err((StatusCode::BAD_REQUEST, "argv contains a NUL byte".into()));
    }
    let mut env = open.env.clone();
    env.entry("TERM".into())
        .or_insert_with(|| "xterm-256color".into());
    let prepared = prepare(agent, open.user.as_deref(), open.cwd.as_deref(), &env)?;
    let argv = if open.argv.is_empty() {
        vec![prepared.shell.clone()]
    } else {
        open.argv.clone()
    };
    let ws = nix::pty::Winsize {
        ws_row: open.rows,
        ws_col: open.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).map_err(|e| internal("openpty", &e))?;
    set_flags(&pty.master, true).map_err(|e| internal("set up PTY master", &e))?;
    set_flags(&pty.slave, false).map_err(|e| internal("set up PTY slave", &e))?;
    let stdio = || {
        pty.slave
            .try_clone()
            .map(Stdio::from)
            .map_err(|e| internal("dup PTY slave", &e))
    };
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(&prepared.env)
        .current_dir(&prepared.cwd)
        .stdin(stdio()?)
        .stdout(stdio()?)
        .stderr(stdio()?);
    crate::sys::prepare_child(&mut cmd, prepared.identity, true);
    let child = cmd.spawn().map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!(
                "start {:?} on a PTY in {}: {e}",
                argv[0],
                prepared.cwd.display()
            ),
        )
    })?;
    // Only the child may keep the slave open, so the master reads EIO once it has gone.
    drop(cmd);
    drop(pty.slave);
    let master =
        crate::sys::async_fd(pty.master).map_err(|e| internal("register PTY master", &e))?;
    let (changed, _) = watch::channel(0);
    let session = Arc::new(Session {
        id: agent.new_id(),
        pid: child.id().unwrap_or(0),
        argv,
        master,
        inner: Mutex::new(Inner::default()),
        changed,
        space: Notify::new(),
    });
    if let Ok(mut m) = agent.ptys.lock() {
        m.insert(session.id.clone(), Arc::clone(&session));
    }
    tokio::spawn(pump_output(Arc::clone(&session), child));
    Ok(PtyOpened {
        id: session.id.clone(),
        pid: session.pid,
    })
}

/// Read the PTY into the ring, waiting while an attached client lags a whole ring behind.
async fn pump_output(s: Arc<Session>, mut child: tokio::process::Child) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        loop {
            let notified = s.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let has_room = s
                .inner
                .lock()
                .map(|i| {
                    i.clients
                        .values()
                        .all(|&p| i.end - p + READ_CHUNK as u64 <= SCROLLBACK as u64)
                })
                .unwrap_or(true);
            if has_room {
                break;
            }
            notified.await;
        }
        let r = s
            .master
            .async_io(Interest::READABLE, |fd| {
                nix::unistd::read(fd, &mut buf).map_err(io::Error::from)
            })
            .await;
        let n = match r {
            Ok(n) if n > 0 => n,
            // EIO: every slave descriptor is closed (the session's processes are gone).
            _ => break,
        };
        if let Ok(mut i) = s.inner.lock() {
            i.ring.extend(&buf[..n]);
            let excess = i.ring.len().saturating_sub(SCROLLBACK);
            i.ring.drain(..excess);
            i.end += n as u64;
        }
        s.bump();
    }
    let st = match child.wait().await {
        Ok(st) => exit_status(st, false),
        Err(_) => ExitStatus {
            code: -1,
            signal: None,
            timed_out: false,
        },
    };
    if let Ok(mut i) = s.inner.lock() {
        i.exit = Some(st);
    }
    s.bump();
}

pub(crate) fn handle_list(agent: &Agent) -> Response<Body> {
    let list: Vec<PtyInfo> = agent
        .ptys
        .lock()
        .map(|m| m.values().map(|s| s.info()).collect())
        .unwrap_or_default();
    server::json(StatusCode::OK, &list)
}

pub(crate) async fn handle_by_id(
    agent: Arc<Agent>,
    method: &Method,
    rest: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
    let session = agent.ptys.lock().ok().and_then(|m| m.get(id).cloned());
    let Some(session) = session else {
        return server::error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no PTY session with id {id:?}"),
        );
    };
    match (method, action) {
        (&Method::GET, "") => server::json(StatusCode::OK, &session.info()),
        (&Method::POST, "kill") => {
            let kr: KillRequest = match server::read_json(req.into_body()).await {
                Ok(k) => k,
                Err(resp) => return resp,
            };
            let Ok(sig) = Signal::try_from(kr.signal) else {
                return server::error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("invalid signal {}", kr.signal),
                );
            };
            match session.kill(sig) {
                Ok(()) => server::empty(StatusCode::NO_CONTENT),
                Err(e) => server::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    &format!("kill session {id}: {e}"),
                ),
            }
        }
        (&Method::GET, "attach") => upgrade(agent, session, req),
        _ => server::error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no route for {method} {rest}"),
        ),
    }
}

fn upgrade(agent: Arc<Agent>, session: Arc<Session>, req: Request<Incoming>) -> Response<Body> {
    let is_ws = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get(http::header::SEC_WEBSOCKET_KEY) else {
        return server::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "attach needs a WebSocket upgrade",
        );
    };
    if !is_ws {
        return server::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "attach needs a WebSocket upgrade",
        );
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        attach(agent, session, ws).await;
    });
    let mut r = server::empty(StatusCode::SWITCHING_PROTOCOLS);
    let h = r.headers_mut();
    h.remove(http::header::CONTENT_TYPE);
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(http::header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

enum Next {
    Data(Vec<u8>, u64),
    Exit(ExitStatus),
    Wait,
}

async fn attach<S>(agent: Arc<Agent>, s: Arc<Session>, ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, mut rx) = ws.split();
    let mut changed = s.changed.subscribe();
    let client = match s.inner.lock() {
        Ok(mut i) => {
            let id = i.next_client;
            i.next_client += 1;
            let start = i.end - i.ring.len() as u64;
            i.clients.insert(id, start);
            id
        }
        Err(_) => return,
    };
    // Input: terminal bytes and control messages from this client.
    let input_session = Arc::clone(&s);
    let mut input = tokio::spawn(async move {
        while let Some(Ok(msg)) = rx.next().await {
            match msg {
                Message::Binary(b) => {
                    // A failed write means the terminal is closing; output continues to the exit.
                    let _ = input_session.write_input(&b).await;
                }
                Message::Text(t) => match serde_json::from_str::<PtyControl>(t.as_str()) {
                    Ok(PtyControl::Resize { cols, rows }) => {
                        let _ = crate::sys::set_winsize(
                            input_session.master.get_ref().as_fd(),
                            cols,
                            rows,
                        );
                    }
                    Ok(PtyControl::Signal { signal }) => {
                        if let Ok(sig) = Signal::try_from(signal) {
                            let _ = input_session.kill(sig);
                        }
                    }
                    _ => {}
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
    });
    let mut delivered_exit = false;
    loop {
        changed.borrow_and_update();
        let next = match s.inner.lock() {
            Ok(mut i) => {
                let start = i.end - i.ring.len() as u64;
                let pos = i.clients.get(&client).copied().unwrap_or(start);
                let gap = start.saturating_sub(pos);
                let pos = pos.max(start);
                if pos < i.end {
                    let off = usize::try_from(pos - start).unwrap_or(0);
                    let n = usize::try_from(i.end - pos).unwrap_or(0).min(SEND_CHUNK);
                    let data: Vec<u8> = i.ring.range(off..off + n).copied().collect();
                    i.clients.insert(client, pos + n as u64);
                    Next::Data(data, gap)
                } else if let Some(st) = i.exit {
                    Next::Exit(st)
                } else {
                    Next::Wait
                }
            }
            Err(_) => break,
        };
        match next {
            Next::Data(data, gap) => {
                s.space.notify_waiters();
                if gap > 0 {
                    let txt =
                        serde_json::to_string(&PtyControl::Gap { bytes: gap }).unwrap_or_default();
                    if tx.send(Message::Text(txt.into())).await.is_err() {
                        break;
                    }
                }
                if tx.send(Message::Binary(Bytes::from(data))).await.is_err() {
                    break;
                }
                if input.is_finished() {
                    break;
                }
                continue;
            }
            Next::Exit(st) => {
                let txt =
                    serde_json::to_string(&PtyControl::Exit { status: st }).unwrap_or_default();
                let _ = tx.send(Message::Text(txt.into())).await;
                let _ = tx.close().await;
                delivered_exit = true;
                break;
            }
            Next::Wait => {}
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { break },
            _ = &mut input => break,
        }
    }
    // Let input that already arrived reach the terminal (a client may type and detach at once);
    // a client that neither sends nor closes is cut off after a while.
    if !input.is_finished()
        && tokio::time::timeout(std::time::Duration::from_secs(5), &mut input)
            .await
            .is_err()
    {
        input.abort();
    }
    let remove = match s.inner.lock() {
        Ok(mut i) => {
            i.clients.remove(&client);
            delivered_exit && i.clients.is_empty()
        }
        Err(_) => false,
    };
    s.space.notify_waiters();
    if remove && let Ok(mut m) = agent.ptys.lock() {
        m.remove(&s.id);
    }
}
