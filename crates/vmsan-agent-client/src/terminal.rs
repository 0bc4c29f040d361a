//! Interactive terminal helper for the CLI (`vmsan exec -i`, `vmsan connect`).
//!
//! Puts the local terminal in raw mode (restored on every exit path by a guard, including
//! errors and panics), forwards input bytes verbatim, writes output verbatim, follows SIGWINCH,
//! and detaches on the detach key (default Ctrl-], byte 0x1d).

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{SignalKind, signal};
use tokio_tungstenite::tungstenite::Message;
use vmsan_proto::{ExitStatus, PtyControl};

use crate::{ClientError, PtySession, Result};

/// Ctrl-].
pub const DEFAULT_DETACH_KEY: u8 = 0x1d;

/// Options of [`run_interactive`].
#[derive(Debug, Clone)]
pub struct InteractiveOptions {
    /// Byte that detaches (None: no detach key).
    pub detach_key: Option<u8>,
    /// Put the local terminal (stdin's) in raw mode and send its size now and on SIGWINCH.
    /// False for pipes and tests.
    pub raw_mode: bool,
}

impl Default for InteractiveOptions {
    fn default() -> Self {
        Self {
            detach_key: Some(DEFAULT_DETACH_KEY),
            raw_mode: true,
        }
    }
}

/// How an interactive session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InteractiveOutcome {
    /// The remote program ended with this status (use its `code` as the CLI's exit code).
    Exited(ExitStatus),
    /// The user pressed the detach key; the session keeps running (re-attach by its id).
    Detached {
        /// Session id.
        session: String,
    },
    /// The connection closed without an exit status.
    Disconnected,
}

/// Restores cooked mode when dropped.
#[derive(Debug)]
pub struct RawModeGuard {
    active: bool,
}

impl RawModeGuard {
    /// Enter raw mode.
    ///
    /// # Errors
    /// stdin is not a terminal.
    pub fn enable() -> Result<Self> {
        crossterm::terminal::enable_raw_mode()
            .map_err(|e| ClientError::io("enter raw terminal mode", e))?;
        Ok(Self { active: true })
    }
}

impl Drop for RawModeGuard {
    fn drop(&mut self) {
        if self.active {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

/// Run an attached session interactively between `input` and `output` until the program
/// exits, the user detaches, or the connection drops.
///
/// # Errors
/// Local I/O or WebSocket failures (the terminal is restored first).
pub async fn run_interactive<I, O>(
    session: PtySession,
    mut input: I,
    mut output: O,
    opts: InteractiveOptions,
) -> Result<InteractiveOutcome>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let _guard = if opts.raw_mode {
        Some(RawModeGuard::enable()?)
    } else {
        None
    };
    let (id, ws) = session.into_parts();
    let (mut tx, mut rx) = ws.split();
    let wserr = |e| ClientError::WebSocket(Box::new(e));
    let send_size = |tx_ctl: &mut Vec<Message>| {
        if let Ok((cols, rows)) = crossterm::terminal::size()
            && let Ok(txt) = serde_json::to_string(&PtyControl::Resize { cols, rows })
        {
            tx_ctl.push(Message::Text(txt.into()));
        }
    };
    let mut pending = Vec::new();
    if opts.raw_mode {
        send_size(&mut pending);
    }
    for m in pending.drain(..) {
        tx.send(m).await.map_err(wserr)?;
    }
    let mut winch =
        signal(SignalKind::window_change()).map_err(|e| ClientError::io("watch SIGWINCH", e))?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut input_open = true;
    loop {
        tokio::select! {
            n = input.read(&mut buf), if input_open => {
                let n = n.map_err(|e| ClientError::io("read terminal input", e))?;
                if n == 0 {
                    input_open = false;
                    continue;
                }
                let data = &buf[..n];
                if let Some(k) = opts.detach_key
                    && let Some(pos) = data.iter().position(|&b| b == k)
                {
                    if pos > 0 {
                        tx.send(Message::Binary(bytes::Bytes::copy_from_slice(&data[..pos]))).await.map_err(wserr)?;
                    }
                    let _ = tx.close().await;
                    return Ok(InteractiveOutcome::Detached { session: id });
                }
                tx.send(Message::Binary(bytes::Bytes::copy_from_slice(data))).await.map_err(wserr)?;
            }
            _ = winch.recv() => {
                if opts.raw_mode {
                    send_size(&mut pending);
                    for m in pending.drain(..) {
                        tx.send(m).await.map_err(wserr)?;
                    }
                }
            }
            msg = rx.next() => match msg {
                None | Some(Ok(Message::Close(_))) => return Ok(InteractiveOutcome::Disconnected),
                Some(Err(e)) => return Err(wserr(e)),
                Some(Ok(Message::Binary(b))) => {
                    output.write_all(&b).await.map_err(|e| ClientError::io("write terminal output", e))?;
                    output.flush().await.map_err(|e| ClientError::io("write terminal output", e))?;
                }
                Some(Ok(Message::Text(t))) => {
                    if let Ok(PtyControl::Exit { status }) = serde_json::from_str::<PtyControl>(t.as_str()) {
                        return Ok(InteractiveOutcome::Exited(status));
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }
}
