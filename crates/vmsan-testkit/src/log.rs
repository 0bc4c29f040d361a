//! Firecracker's log line format: `<RFC3339 UTC with ns> [<instance id>:<thread>] <message>`,
//! optionally with `:<LEVEL>` after the thread name when `show_level` is set.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

use crate::api::Level;

/// The stand-in's logger.
#[derive(Debug)]
pub struct Logger {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: String,
    file: Option<File>,
    level: Level,
    show_level: bool,
}

impl Logger {
    /// A logger that writes nothing until configured.
    pub fn new(id: &str) -> Self {
        Self {
            inner: Mutex::new(Inner {
                id: id.to_owned(),
                file: None,
                level: Level::Info,
                show_level: false,
            }),
        }
    }

    /// Whether a file is configured.
    pub fn is_configured(&self) -> bool {
        self.inner.lock().map(|i| i.file.is_some()).unwrap_or(false)
    }

    /// Points the logger at `path` (created when missing, appended to).
    pub fn configure(
        &self,
        path: Option<&str>,
        level: Option<Level>,
        show_level: Option<bool>,
    ) -> std::io::Result<()> {
        let file = match path {
            Some(p) => Some(OpenOptions::new().create(true).append(true).open(p)?),
            None => None,
        };
        if let Ok(mut inner) = self.inner.lock() {
            if let Some(f) = file {
                inner.file = Some(f);
            }
            if let Some(l) = level {
                inner.level = l;
            }
            if let Some(s) = show_level {
                inner.show_level = s;
            }
        }
        Ok(())
    }

    /// Writes one line at `level` from thread `thread` (e.g. `fc_api`, `fc_vmm`).
    pub fn log(&self, level: Level, thread: &str, msg: &str) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if level > inner.level || inner.level == Level::Off {
            return;
        }
        let lvl = if inner.show_level {
            format!(":{}", level_name(level))
        } else {
            String::new()
        };
        let line = format!("{} [{}:{thread}{lvl}] {msg}\n", timestamp(), inner.id);
        if let Some(f) = inner.file.as_mut() {
            // A log write failure must not take the VMM down (Firecracker counts it in metrics).
            let _ = f.write_all(line.as_bytes());
        }
    }

    /// `log(Level::Info, …)`.
    pub fn info(&self, thread: &str, msg: &str) {
        self.log(Level::Info, thread, msg);
    }

    /// `log(Level::Warning, …)`.
    pub fn warn(&self, thread: &str, msg: &str) {
        self.log(Level::Warning, thread, msg);
    }

    /// `log(Level::Error, …)`.
    pub fn error(&self, thread: &str, msg: &str) {
        self.log(Level::Error, thread, msg);
    }
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Off => "OFF",
        Level::Error => "ERROR",
        Level::Warning => "WARN",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnn` in UTC.
pub fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        now.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_shape() {
        let t = super::timestamp();
        assert_eq!(t.len(), 29, "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], "T");
        assert!(t.starts_with("20"), "{t}");
    }
}
