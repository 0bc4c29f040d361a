//! Guest-controlled text on the terminal: control characters escaped.
//!
//! A guest writes its serial log, names its files, words the agent's error messages, and an
//! imported snapshot carries an image reference someone else wrote. Printed raw, an escape
//! sequence in any of them can rewrite the screen, retitle the window, hide a line or, on some
//! terminals, answer back as if typed. So text from outside goes through [`escape_text`] (or
//! [`escape_bytes`]) on its way to a human: `ESC` shows as `\x1b`, a lone carriage return as
//! `\r`, bytes that are not UTF-8 as `\xNN`. Newlines and tabs stay.
//!
//! `--json` documents are not escaped here: JSON escapes control characters itself, and their
//! readers want the exact text.

use std::fmt::Write;

/// True for a character shown as an escape: C0 controls other than tab and newline, DEL, and
/// C1 controls (which some terminals take as `ESC [` and friends).
fn needs_escape(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

fn push_escaped(out: &mut String, c: char) {
    let _ = match c {
        '\r' => write!(out, "\\r"),
        c if u32::from(c) <= 0xff => write!(out, "\\x{:02x}", u32::from(c)),
        c => write!(out, "\\u{{{:x}}}", u32::from(c)),
    };
}

/// `s` with control characters escaped; a carriage return just before a newline (serial
/// consoles end lines with `\r\n`) is kept.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' && chars.peek() == Some(&'\n') {
            out.push(c);
        } else if needs_escape(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// Bytes for a terminal: valid UTF-8 as [`escape_text`] does it, other bytes as `\xNN`.
pub fn escape_bytes(b: &[u8]) -> Vec<u8> {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        out.push_str(&escape_text(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_keeps_lines() {
        assert_eq!(escape_text("a\tb\nc"), "a\tb\nc");
        assert_eq!(escape_text("line\r\nnext"), "line\r\nnext");
        assert_eq!(escape_text("\x1b]0;owned\x07"), "\\x1b]0;owned\\x07");
        assert_eq!(escape_text("hide\rshow"), "hide\\rshow");
        assert_eq!(escape_text("csi\u{9b}31m"), "csi\\x9b31m");
        assert_eq!(escape_text("del\x7f"), "del\\x7f");
        assert_eq!(escape_text("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_as_hex() {
        assert_eq!(escape_bytes(b"ok\xff\x1b[2J"), b"ok\\xff\\x1b[2J".to_vec());
    }
}
