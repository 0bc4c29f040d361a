//! Idle timeouts: a guest that accepts a request and then never answers must not hang the
//! caller forever.
//!
//! A call is idle when nothing moves: no byte of the answer arrives and, while a request body
//! is streamed, the agent takes none of it either. Waiting for an answer is bounded by the
//! client's idle timeout; a streamed body marks its progress on an [`Activity`], which pushes
//! the deadline back, so a long upload that keeps moving never times out.

use std::future::Future;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::ClientError;

/// The idle timeout of a new client: generous, since `sync` on a guest with lots of dirty
/// memory or the start of a download of a slow disk can take a while without a byte.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// When a streamed request body last made progress (shared between the body and the call).
#[derive(Debug, Clone)]
pub(crate) struct Activity(Arc<AtomicU64>);

impl Default for Activity {
    fn default() -> Self {
        let a = Self(Arc::new(AtomicU64::new(0)));
        a.touch();
        a
    }
}

impl Activity {
    /// Progress now.
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(base().elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        base() + Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

/// Run `fut`, failing with [`ClientError::Timeout`] once `limit` has passed since it started
/// (or since the last progress on `activity`) without it finishing.
pub(crate) async fn idle_bounded<F: Future>(
    fut: F,
    activity: Option<&Activity>,
    limit: Duration,
    what: &str,
) -> Result<F::Output, ClientError> {
    tokio::pin!(fut);
    let mut deadline = Instant::now() + limit;
    loop {
        tokio::select! {
            out = &mut fut => return Ok(out),
            () = tokio::time::sleep_until(deadline) => {
                match activity.map(|a| a.last() + limit) {
                    Some(later) if later > Instant::now() => deadline = later,
                    _ => {
                        return Err(ClientError::Timeout {
                            what: what.to_owned(),
                            secs: limit.as_secs().max(1),
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_future_times_out() {
        let r = idle_bounded(
            std::future::pending::<()>(),
            None,
            Duration::from_secs(3),
            "stat /x",
        )
        .await;
        assert!(
            matches!(&r, Err(ClientError::Timeout { what, secs: 3 }) if what == "stat /x"),
            "{r:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn progress_pushes_the_deadline_back() {
        let a = Activity::default();
        let a2 = a.clone();
        let work = async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                a2.touch();
            }
            7
        };
        let r = idle_bounded(work, Some(&a), Duration::from_secs(3), "upload").await;
        assert_eq!(r.unwrap(), 7);
    }
}
