//! The supervisor's log, `<vm dir>/supervisor.log`: where the per-VM supervisor's `tracing`
//! events go (the network layer's warnings, its own), and how the command that started it
//! shows what it logged while booting.
//!
//! The spawning command opens the file (appending) as the supervisor's standard error, so
//! that even what is written before the subscriber exists (a panic) lands there;
//! [`install`] makes the supervisor's events go to that standard error. The supervisor
//! outlives its caller, so its events cannot go to the caller's terminal directly: instead
//! the caller, once the supervisor has reported, reads the lines logged since it was spawned
//! and emits each again as an event of its own at the same level ([`relay_since`]), so a
//! warning of the boot reaches the user's stderr (and `--verbose` shows the rest).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tracing::Level;
use tracing::level_filters::LevelFilter;

use crate::ids::VmId;

/// The most a supervisor writes to its log: a guest can provoke some warnings (the DNS
/// filter's, per query), and the log is on the host's disk.
const LOG_BUDGET: u64 = 16 << 20;

static BUDGET_LEFT: AtomicU64 = AtomicU64::new(LOG_BUDGET);
static BUDGET_SPENT: AtomicBool = AtomicBool::new(false);

/// The supervisor's standard error, within [`LOG_BUDGET`]: an event that would exceed it is
/// dropped, and the first one dropped leaves a line saying so.
#[derive(Debug)]
struct BudgetedStderr;

impl Write for BudgetedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let len = buf.len() as u64;
        let fits = BUDGET_LEFT
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(len)
            })
            .is_ok();
        if fits {
            std::io::stderr().write_all(buf)?;
        } else if !BUDGET_SPENT.swap(true, Ordering::Relaxed) {
            std::io::stderr().write_all(
                format!(
                    "supervisor.log: this supervisor has written {} MiB; later events are \
                     dropped\n",
                    LOG_BUDGET >> 20
                )
                .as_bytes(),
            )?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Make this process's `tracing` events (INFO and above) go to its standard error, which
/// the spawning command made the VM's `supervisor.log`. Lines are
/// `<RFC 3339 time> <LEVEL> <target>: <message> <fields>`, as [`relay_since`] reads them.
/// Call it once, first thing in the supervisor's `main`.
pub(crate) fn install() {
    let subscriber = tracing_subscriber::fmt()
        .with_writer(|| BudgetedStderr)
        .with_ansi(false)
        .with_max_level(LevelFilter::INFO)
        .finish();
    // Only fails when one is installed already, which then stays.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// The length of the log now: what [`relay_since`] starts from.
pub(crate) fn position(log: &std::fs::File) -> u64 {
    log.metadata().map_or(0, |m| m.len())
}

/// Emit, as events of this process (target `vmsan::supervisor`), the lines the supervisor
/// of `vm` logged at `log` from byte `from` on, each at its own level (errors at DEBUG: the
/// report carries them). A line that is not
/// the start of an event (the rest of a multi-line message, a panic) goes at the level of
/// the event before it, or WARN when there is none.
pub(crate) fn relay_since(log: &Path, from: u64, vm: &VmId) {
    /// The most read: a boot's log is a few lines.
    const MOST: u64 = 1 << 20;
    let mut text = Vec::new();
    let read = std::fs::File::open(log).and_then(|mut f| {
        f.seek(SeekFrom::Start(from))?;
        f.take(MOST).read_to_end(&mut text)
    });
    if let Err(e) = read {
        tracing::debug!(log = %log.display(), error = %e, "cannot read the supervisor's log");
        return;
    }
    // Only whole lines: the supervisor may be writing one now.
    let whole = text
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(&[][..], |end| &text[..end]);
    let mut level = Level::WARN;
    for line in String::from_utf8_lossy(whole).lines() {
        let rest = match parse_line(line) {
            Some((l, rest)) => {
                level = l;
                rest
            }
            None => line,
        };
        emit(level, vm, rest);
    }
}

/// The level of an event's first line and what follows it, or `None` for another line.
fn parse_line(line: &str) -> Option<(Level, &str)> {
    let (time, rest) = line.split_once(' ')?;
    if !(time.contains('T') && time.ends_with('Z')) {
        return None;
    }
    let rest = rest.trim_start();
    let (level, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    Some((level.parse().ok()?, rest))
}

fn emit(level: Level, vm: &VmId, line: &str) {
    const T: &str = "vmsan::supervisor";
    match level {
        // The supervisor's errors reach the caller in its report, which the front end shows
        // as the command's error: relayed at ERROR they would be shown twice.
        Level::ERROR => tracing::debug!(target: T, "supervisor of {vm}: {line}"),
        Level::WARN => tracing::warn!(target: T, "supervisor of {vm}: {line}"),
        Level::INFO => tracing::info!(target: T, "supervisor of {vm}: {line}"),
        Level::DEBUG => tracing::debug!(target: T, "supervisor of {vm}: {line}"),
        Level::TRACE => tracing::trace!(target: T, "supervisor of {vm}: {line}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn reads_the_level_of_the_lines_the_subscriber_writes() {
        // What `install`'s format writes (checked against the real subscriber below).
        assert_eq!(
            parse_line(
                "2026-08-06T10:11:12.123456Z  WARN vmsan_net::setup: rollback after failed \
                 setup was incomplete vm=vm-1"
            ),
            Some((
                Level::WARN,
                "vmsan_net::setup: rollback after failed setup was incomplete vm=vm-1"
            ))
        );
        assert_eq!(
            parse_line("2026-08-06T10:11:12.123456Z ERROR a: b").map(|p| p.0),
            Some(Level::ERROR)
        );
        for other in [
            "",
            "thread 'main' panicked at src/x.rs:1:1:",
            "  Why: the second line of a message",
            "2026-08-06T10:11:12Z NOTALEVEL x",
        ] {
            assert_eq!(parse_line(other), None, "{other:?}");
        }
    }

    /// The format `install` sets up, through a real subscriber into a buffer.
    #[test]
    fn parses_what_the_real_subscriber_writes() {
        use std::sync::{Arc, Mutex};
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Sink(sink.clone()))
            .with_ansi(false)
            .with_max_level(LevelFilter::INFO)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(vm = "vm-1", "rollback after failed setup was incomplete");
            tracing::info!("started");
            tracing::debug!("not written");
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let parsed: Vec<_> = text.lines().map(|l| parse_line(l).unwrap()).collect();
        assert_eq!(parsed.len(), 2, "{text}");
        assert_eq!(parsed[0].0, Level::WARN);
        assert!(
            parsed[0]
                .1
                .ends_with("rollback after failed setup was incomplete vm=\"vm-1\""),
            "{text}"
        );
        assert_eq!(parsed[1].0, Level::INFO);
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
