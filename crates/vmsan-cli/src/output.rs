//! The output layer: human mode (tables, colours only on a TTY without `NO_COLOR`) and `--json`
//! mode (exactly one JSON document on stdout per invocation, nothing else on stdout).

use std::io::{self, IsTerminal, Write};

use serde_json::Value;
use vmsan_core::error::Error;

/// Version of the `--json` documents' schema. Every success document carries it as
/// `schemaVersion`; it changes only when a field is removed or changes meaning.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// Exit codes.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Any error (validation, not found, runtime) and failed doctor checks.
    pub const ERROR: i32 = 1;
    /// A guest command (`exec`) ran into its `--timeout`.
    pub const TIMEOUT: i32 = 124;
    /// Interrupted by SIGINT or SIGTERM.
    pub const INTERRUPTED: i32 = 130;
}

/// How this invocation prints.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// `--json`.
    pub json: bool,
    /// `--verbose` (ignored in `--json` mode, which is for machines).
    pub verbose: bool,
    /// Colours on stdout.
    pub color: bool,
    /// Colours on stderr.
    pub err_color: bool,
}

/// Whether `NO_COLOR` asks for no colours (set and not empty, per no-color.org).
fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

impl Output {
    /// Decide from the flags and the environment.
    pub fn new(json: bool, verbose: bool) -> Self {
        let no_color = no_color_env();
        Self {
            json,
            verbose: verbose && !json,
            color: !json && !no_color && io::stdout().is_terminal(),
            err_color: !no_color && io::stderr().is_terminal(),
        }
    }

    /// Print the one JSON document of this invocation.
    pub fn json_document(&self, doc: &Value) {
        let mut line = serde_json::to_string(doc).unwrap_or_else(|_| "{}".to_owned());
        line.push('\n');
        write_stdout(line.as_bytes());
    }

    /// Print an error: `{"error":{…}}` on stdout in `--json` mode, `ERROR …` / `Why: …` /
    /// `Fix: …` on stderr otherwise.
    pub fn error(&self, err: &Error) {
        if self.json {
            self.json_document(&serde_json::json!({ "error": err.to_json() }));
            return;
        }
        let s = self.human_error(err);
        let _ = io::stderr().lock().write_all(s.as_bytes());
    }

    /// The human form of an error, as [`Output::error`] prints it.
    fn human_error(&self, err: &Error) -> String {
        let mut s = String::new();
        let label = if self.err_color {
            "\x1b[1;31mERROR\x1b[0m"
        } else {
            "ERROR"
        };
        // Messages may quote the guest (agent error bodies, file names): escaped.
        let safe = crate::escape::escape_text;
        s.push_str(&format!("{label} {}\n", safe(err.message())));
        if let Some(why) = err.why_text() {
            s.push_str(&format!("  Why: {}\n", indent_rest(&safe(why))));
        }
        if let Some(fix) = err.fix_text() {
            s.push_str(&format!("  Fix: {}\n", indent_rest(&safe(fix))));
        }
        if self.verbose {
            let mut src = std::error::Error::source(err);
            while let Some(e) = src {
                s.push_str(&format!("  Caused by: {}\n", safe(&e.to_string())));
                src = e.source();
            }
        }
        s
    }

    /// A warning or progress note for humans: stderr, never in `--json` mode.
    pub fn note(&self, msg: &str) {
        if !self.json {
            let _ = writeln!(io::stderr().lock(), "{msg}");
        }
    }

    /// A debug line (`--verbose`): stderr.
    pub fn debug(&self, msg: &str) {
        if self.verbose {
            let _ = writeln!(io::stderr().lock(), "[debug] {msg}");
        }
    }

    /// Wrap text in an ANSI style when colours are on.
    pub fn paint(&self, style: Style, text: &str) -> String {
        if self.color {
            format!("{}{text}\x1b[0m", style.code())
        } else {
            text.to_owned()
        }
    }
}

/// Indent continuation lines of a multi-line why/fix under the label.
fn indent_rest(s: &str) -> String {
    s.replace('\n', "\n       ")
}

/// Write to stdout, ignoring a closed pipe (`vmsan list | head`).
pub fn write_stdout(bytes: &[u8]) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(bytes).and_then(|()| out.flush());
}

/// The few styles human output uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Table headers.
    Bold,
    /// Secondary text.
    Dim,
    /// Failures, `error` status.
    Red,
    /// Passed checks.
    Green,
    /// Warnings, fixes.
    Yellow,
    /// `running`.
    Cyan,
    /// `creating`.
    Magenta,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Style::Bold => "\x1b[1m",
            Style::Dim => "\x1b[2m",
            Style::Red => "\x1b[31m",
            Style::Green => "\x1b[32m",
            Style::Yellow => "\x1b[33m",
            Style::Cyan => "\x1b[36m",
            Style::Magenta => "\x1b[35m",
        }
    }
}

/// What a command produced: a JSON document for `--json` mode and text for human mode.
#[derive(Debug)]
pub struct Outcome {
    /// The `--json` document (without `schemaVersion`, which is added on printing).
    pub json: Value,
    /// Human output for stdout.
    pub text: Vec<u8>,
    /// The exit code.
    pub exit_code: i32,
}

impl Outcome {
    /// A successful outcome.
    pub fn ok(json: Value, text: impl Into<Vec<u8>>) -> Self {
        Self {
            json,
            text: text.into(),
            exit_code: exit::OK,
        }
    }

    /// Print it in the right mode.
    pub fn emit(mut self, out: &Output) -> i32 {
        if out.json {
            if let Value::Object(map) = &mut self.json {
                map.entry("schemaVersion")
                    .or_insert(Value::from(JSON_SCHEMA_VERSION));
            }
            out.json_document(&self.json);
        } else if !self.text.is_empty() {
            write_stdout(&self.text);
        }
        self.exit_code
    }
}

/// Relative time between two instants in ms since the epoch: "just now", "5 minutes ago",
/// "in 2 hours".
pub fn relative_time(now_ms: u64, then_ms: u64) -> String {
    let (secs, future) = if then_ms > now_ms {
        ((then_ms - now_ms) / 1000, true)
    } else {
        ((now_ms - then_ms) / 1000, false)
    };
    if secs < 30 {
        return if future {
            "in a few seconds".to_owned()
        } else {
            "just now".to_owned()
        };
    }
    let (n, unit) = match secs {
        0..60 => (secs, "second"),
        60..3_600 => (secs / 60, "minute"),
        3_600..86_400 => (secs / 3_600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    let plural = if n == 1 { "" } else { "s" };
    if future {
        format!("in {n} {unit}{plural}")
    } else {
        format!("{n} {unit}{plural} ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        let now = 1_000_000_000;
        assert_eq!(relative_time(now, now), "just now");
        assert_eq!(relative_time(now, now - 29_000), "just now");
        assert_eq!(relative_time(now, now - 45_000), "45 seconds ago");
        assert_eq!(relative_time(now, now - 60_000), "1 minute ago");
        assert_eq!(relative_time(now, now - 5 * 60_000), "5 minutes ago");
        assert_eq!(relative_time(now, now - 2 * 3_600_000), "2 hours ago");
        assert_eq!(relative_time(now, now - 86_400_000), "1 day ago");
        assert_eq!(relative_time(now, now - 3 * 86_400_000), "3 days ago");
        assert_eq!(relative_time(now, now + 5 * 60_000), "in 5 minutes");
        assert_eq!(relative_time(now, now + 10_000), "in a few seconds");
    }

    #[test]
    fn error_text_from_the_guest_is_escaped() {
        let o = Output {
            json: false,
            verbose: false,
            color: false,
            err_color: false,
        };
        let e = Error::new(
            vmsan_core::error::ErrorCode::AgentRequest,
            "vm-1: agent refused stat /x (400, io): \x1b]0;owned\x07\x1b[2J",
        )
        .why("line one\nline two");
        let text = o.human_error(&e);
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
        assert!(text.contains("\\x1b]0;owned\\x07\\x1b[2J"), "{text:?}");
        assert!(text.contains("line one\n       line two"), "{text:?}");
    }

    #[test]
    fn paint_only_with_colour() {
        let mut o = Output {
            json: false,
            verbose: false,
            color: false,
            err_color: false,
        };
        assert_eq!(o.paint(Style::Red, "x"), "x");
        o.color = true;
        assert_eq!(o.paint(Style::Red, "x"), "\x1b[31mx\x1b[0m");
    }
}
