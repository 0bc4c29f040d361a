//! PTY sessions over WebSocket.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Method;
use tokio::net::UnixStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use vmsan_proto::{
    ExitStatus, KillRequest, PtyControl, PtyInfo, PtyOpenRequest, PtyOpened, routes,
};

use crate::{AgentClient, ClientError, Result, connect};

/// Something that happened on an attached PTY session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtyEvent {
    /// Terminal output (on attach, first the scrollback).
    Output(Bytes),
    /// Output was skipped because this client lagged more than the scrollback.
    Gap(u64),
    /// The session's process ended; no more events follow.
    Exit(ExitStatus),
    /// The connection closed without an exit status (e.g. the agent stopped).
    Closed,
}

/// One attached client of a PTY session. Detaching is dropping it (or [`PtySession::detach`]);
/// the session keeps running in the guest and can be attached again.
#[derive(Debug)]
pub struct PtySession {
    id: String,
    ws: WebSocketStream<UnixStream>,
}

fn ws_err(e: tokio_tungstenite::tungstenite::Error) -> ClientError {
    ClientError::WebSocket(Box::new(e))
}

impl PtySession {
    /// Session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Send keyboard input (raw bytes) to the terminal.
    ///
    /// # Errors
    /// The WebSocket is closed.
    pub async fn send_input(&mut self, data: &[u8]) -> Result<()> {
        self.ws
            .send(Message::Binary(Bytes::copy_from_slice(data)))
            .await
            .map_err(ws_err)
    }

    async fn control(&mut self, c: &PtyControl) -> Result<()> {
        let txt = serde_json::to_string(c)
            .map_err(|e| ClientError::Protocol(format!("encode control: {e}")))?;
        self.ws
            .send(Message::Text(txt.into()))
            .await
            .map_err(ws_err)
    }

    /// Set the terminal size (the guest program gets SIGWINCH).
    ///
    /// # Errors
    /// The WebSocket is closed.
    pub async fn resize(&mut self, cols: u16, rows: u16) -> Result<()> {
        self.control(&PtyControl::Resize { cols, rows }).await
    }

    /// Send a signal to the session's process group.
    ///
    /// # Errors
    /// The WebSocket is closed.
    pub async fn signal(&mut self, signal: i32) -> Result<()> {
        self.control(&PtyControl::Signal { signal }).await
    }

    /// The next event; [`PtyEvent::Exit`] or [`PtyEvent::Closed`] end the stream.
    ///
    /// # Errors
    /// A WebSocket or protocol failure.
    pub async fn next_event(&mut self) -> Result<PtyEvent> {
        loop {
            match self.ws.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(PtyEvent::Closed),
                Some(Err(e)) => return Err(ws_err(e)),
                Some(Ok(Message::Binary(b))) => return Ok(PtyEvent::Output(b)),
                Some(Ok(Message::Text(t))) => {
                    match serde_json::from_str::<PtyControl>(t.as_str()) {
                        Ok(PtyControl::Exit { status }) => return Ok(PtyEvent::Exit(status)),
                        Ok(PtyControl::Gap { bytes }) => return Ok(PtyEvent::Gap(bytes)),
                        Ok(_) => {}
                        Err(e) => {
                            return Err(ClientError::Protocol(format!("PTY control message: {e}")));
                        }
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Detach: close this client's connection; the session keeps running.
    ///
    /// # Errors
    /// Closing failed (the session is detached either way).
    pub async fn detach(mut self) -> Result<()> {
        self.ws.close(None).await.map_err(ws_err)
    }

    pub(crate) fn into_parts(self) -> (String, WebSocketStream<UnixStream>) {
        (self.id, self.ws)
    }
}

impl AgentClient {
    /// Start a program (default: the user's shell) on a new PTY in the guest.
    ///
    /// # Errors
    /// The agent's refusal (`spawn_failed`, bad user, …).
    pub async fn pty_open(&self, req: &PtyOpenRequest) -> Result<PtyOpened> {
        let r = self.json_request(Method::POST, routes::PTY, req)?;
        self.call_json("open PTY", r).await
    }

    /// Attach to a session: the agent first replays its scrollback (at least 64 KiB), then
    /// live output. Several clients may be attached at once; all may type.
    ///
    /// # Errors
    /// `not_found` for an unknown session, or a connection failure.
    pub async fn pty_attach(&self, id: &str) -> Result<PtySession> {
        let stream = connect(&self.endpoint).await?;
        let mut req = format!("ws://agent{}{id}/attach", routes::PTY_PREFIX)
            .into_client_request()
            .map_err(ws_err)?;
        let auth = http::HeaderValue::from_str(&self.auth)
            .map_err(|e| ClientError::Protocol(format!("token as header: {e}")))?;
        req.headers_mut().insert(http::header::AUTHORIZATION, auth);
        // The upgrade must be answered within the idle timeout; once attached, a quiet
        // session is normal.
        let what = format!("attach PTY {id}");
        let handshake = tokio_tungstenite::client_async(req, stream);
        match crate::idle_bounded(handshake, None, self.idle, &what).await? {
            Ok((ws, _)) => Ok(PtySession {
                id: id.to_owned(),
                ws,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let body = resp.body().clone().unwrap_or_default();
                let (code, message) = match serde_json::from_slice::<vmsan_proto::ErrorBody>(&body)
                {
                    Ok(e) => (e.code, e.error),
                    Err(_) => ("http".into(), String::from_utf8_lossy(&body).into_owned()),
                };
                Err(ClientError::Agent {
                    what: format!("attach PTY {id}"),
                    status,
                    code,
                    message,
                })
            }
            Err(e) => Err(ws_err(e)),
        }
    }

    /// Open a session and attach to it.
    ///
    /// # Errors
    /// As [`AgentClient::pty_open`] and [`AgentClient::pty_attach`].
    pub async fn pty_open_attach(&self, req: &PtyOpenRequest) -> Result<PtySession> {
        let opened = self.pty_open(req).await?;
        self.pty_attach(&opened.id).await
    }

    /// Sessions of the agent.
    ///
    /// # Errors
    /// Connection or authentication failure.
    pub async fn pty_list(&self) -> Result<Vec<PtyInfo>> {
        let r = self.empty_request(Method::GET, routes::PTY)?;
        self.call_json("list PTY sessions", r).await
    }

    /// Send `signal` to a session's process group.
    ///
    /// # Errors
    /// `not_found` for an unknown session.
    pub async fn pty_kill(&self, id: &str, signal: i32) -> Result<()> {
        let r = self.json_request(
            Method::POST,
            &format!("{}{id}/kill", routes::PTY_PREFIX),
            &KillRequest { signal },
        )?;
        self.call_empty("kill PTY session", r).await
    }
}
