//! Between the downloads and the build threads: where a layer is read from, the reader of a
//! download as it arrives, and the signal that every download succeeded.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crate::error::Error;
use crate::registry::Feed;

pub(super) fn download_failed(what: &str) -> Error {
    Error::io(
        format!("unpack {what}"),
        std::io::Error::other("its download failed"),
    )
}

/// Where the build reads a layer from.
pub(crate) enum LayerInput {
    /// The verified blob in the store.
    Stored,
    /// The bytes as they are downloaded (see [`Feed`]).
    Stream(tokio::sync::mpsc::Receiver<Feed>),
}

/// Reads a download as it arrives. Ends at [`Feed::End`] (all bytes, verified); a restart or
/// a download that stops without it marks the stream `cut`: the stored blob is read instead.
pub(super) struct FeedReader {
    pub(super) rx: tokio::sync::mpsc::Receiver<Feed>,
    pub(super) cur: bytes::Bytes,
    pub(super) ended: bool,
    pub(super) cut: Arc<AtomicBool>,
}

impl Read for FeedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Feed::Data(b)) => self.cur = b,
                Some(Feed::End) => self.ended = true,
                Some(Feed::Restart) | None => {
                    self.cut.store(true, Ordering::SeqCst);
                    return Err(std::io::Error::other("the download started over"));
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// Whether every download of a pull succeeded, for builds that wait on them.
#[derive(Debug, Default)]
pub(crate) struct DoneSignal {
    state: Mutex<Option<bool>>,
    cv: Condvar,
}

impl DoneSignal {
    pub(super) fn done() -> Self {
        Self {
            state: Mutex::new(Some(true)),
            cv: Condvar::new(),
        }
    }

    pub(super) fn set(&self, ok: bool) {
        let mut g = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if g.is_none() {
            *g = Some(ok);
        }
        self.cv.notify_all();
    }

    /// Block until the downloads are over; whether they all succeeded.
    pub(super) fn wait(&self) -> bool {
        let mut g = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(ok) = *g {
                return ok;
            }
            g = self.cv.wait(g).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Reports failure if the pull ends (error, cancellation) before saying otherwise.
pub(super) struct DoneGuard(pub(super) Arc<DoneSignal>);

impl DoneGuard {
    pub(super) fn set(&self, ok: bool) {
        self.0.set(ok);
    }
}

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.0.set(false);
    }
}
