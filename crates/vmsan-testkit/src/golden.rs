//! Golden files of the CLI's `--json` documents: a document is compared, whole, with a file
//! that holds what it must be, so that a change to any key, nesting, type or stable value fails
//! a test (the contract scripts rely on, and the guard rail of a refactor that must not change
//! it).
//!
//! What truly differs between runs (ids, times, durations, pids, temporary paths) is
//! normalised before the comparison, never dropped: a value is replaced by a placeholder that
//! names it and keeps its JSON type visible (`"<ms:number>"`, `"<pid:number>"`), and a
//! run-specific string inside any string (a VM id, the home's path) by a token (`<vm-1>`,
//! `<home>`), so the placeholders still show which values are the same. Everything else is
//! compared exactly. The document must also be in canonical form (one line, keys sorted,
//! `serde_json`'s number format), so that equal values mean equal bytes.
//!
//! `VMSAN_BLESS=1` rewrites the files from the run instead of comparing; review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // test equipment

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Environment variable that makes [`Golden::check`] write the files instead of comparing.
pub const BLESS_ENV: &str = "VMSAN_BLESS";

/// A directory of golden files and what to normalise in the documents compared with them.
#[derive(Debug, Clone)]
pub struct Golden {
    dir: PathBuf,
    /// Run-specific strings and their tokens, longest first (so a snapshot id, which
    /// contains its VM's id, is replaced before the id).
    tokens: Vec<(String, String)>,
}

impl Golden {
    /// Golden files in `dir` (`<dir>/<name>.json`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            tokens: Vec::new(),
        }
    }

    /// Replace `real` by `token` wherever it occurs inside a string value.
    pub fn token(&mut self, real: impl Into<String>, token: impl Into<String>) -> &mut Self {
        let real = real.into();
        assert!(!real.is_empty(), "an empty string cannot be a token");
        self.tokens.push((real, token.into()));
        self.tokens.sort_by_key(|(r, _)| std::cmp::Reverse(r.len()));
        self
    }

    /// `doc` (a command's whole standard output) with its varying values replaced: each
    /// `(pattern, label)` of `varying` replaces the value at the paths `pattern` matches by
    /// `"<label:type>"`. A pattern is a `/`-separated path whose `*` matches any key or array
    /// index (`/timingsMs/*/ms`); a null value is kept (it is as stable as any other).
    ///
    /// # Panics
    /// When the output is not exactly one canonical JSON document and a newline.
    pub fn normalise(&self, stdout: &[u8], varying: &[(&str, &str)]) -> Value {
        let text = std::str::from_utf8(stdout).expect("stdout is UTF-8");
        let doc: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {text:?}"));
        // (Numbers are masked: serde_json parses floats to a neighbour of the printed value,
        // so the reprint may differ in the last digit; their values are compared below.)
        let canonical = format!("{}\n", serde_json::to_string(&doc).unwrap());
        assert_eq!(
            mask_numbers(text),
            mask_numbers(&canonical),
            "stdout is not in canonical form (one line, sorted keys, a final newline)"
        );
        let mut doc = doc;
        for (pattern, label) in varying {
            let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
            replace_at(&mut doc, &parts, label);
        }
        self.replace_tokens(&mut doc);
        doc
    }

    fn replace_tokens(&self, v: &mut Value) {
        match v {
            Value::String(s) => {
                for (real, token) in &self.tokens {
                    if s.contains(real.as_str()) {
                        *s = s.replace(real.as_str(), token);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|v| self.replace_tokens(v)),
            Value::Object(m) => m.values_mut().for_each(|v| self.replace_tokens(v)),
            _ => {}
        }
    }

    /// Compare the normalised document (see [`Golden::normalise`]) with `<dir>/<name>.json`,
    /// or write that file under `VMSAN_BLESS=1`.
    ///
    /// # Panics
    /// On a difference, with the differing paths and the whole normalised document.
    #[track_caller]
    pub fn check(&self, name: &str, stdout: &[u8], varying: &[(&str, &str)]) {
        let got = self.normalise(stdout, varying);
        let path = self.dir.join(format!("{name}.json"));
        let pretty = format!("{}\n", serde_json::to_string_pretty(&got).unwrap());
        if std::env::var(BLESS_ENV).is_ok_and(|v| v == "1") {
            std::fs::create_dir_all(&self.dir).unwrap();
            std::fs::write(&path, pretty).unwrap();
            return;
        }
        let want: Value = match std::fs::read_to_string(&path) {
            Ok(s) => serde_json::from_str(&s)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display())),
            Err(e) => panic!(
                "no golden file {} ({e}); run with {BLESS_ENV}=1 to write it\n{pretty}",
                path.display()
            ),
        };
        if want != got {
            let mut diffs = Vec::new();
            diff(&want, &got, &mut String::new(), &mut diffs);
            panic!(
                "`--json` output differs from {} ({} difference(s)):\n{}\n\nthe whole \
                 normalised output:\n{pretty}\nIf the change is intended, rerun with \
                 {BLESS_ENV}=1 and review the files' diff.",
                path.display(),
                diffs.len(),
                diffs.join("\n")
            );
        }
    }
}

/// The directory of a crate's golden files: `<manifest dir>/tests/golden`.
pub fn dir_of(manifest_dir: &str) -> PathBuf {
    Path::new(manifest_dir).join("tests/golden")
}

/// JSON text with every number outside strings replaced by `#`.
fn mask_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped, mut in_number) = (false, false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if c == '-' || c.is_ascii_digit() || (in_number && matches!(c, '.' | 'e' | 'E' | '+')) {
            if !in_number {
                out.push('#');
                in_number = true;
            }
            continue;
        }
        in_number = false;
        in_string = c == '"';
        out.push(c);
    }
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn replace_at(v: &mut Value, path: &[&str], label: &str) {
    let Some((first, rest)) = path.split_first() else {
        if !v.is_null() {
            *v = Value::String(format!("<{label}:{}>", type_name(v)));
        }
        return;
    };
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if *first == "*" || k == first {
                    replace_at(child, rest, label);
                }
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter_mut().enumerate() {
                if *first == "*" || first.parse() == Ok(i) {
                    replace_at(child, rest, label);
                }
            }
        }
        _ => {}
    }
}

/// The paths where `got` differs from `want`, one line each.
fn diff(want: &Value, got: &Value, at: &mut String, out: &mut Vec<String>) {
    let here = |at: &str| {
        if at.is_empty() {
            "/".to_owned()
        } else {
            at.to_owned()
        }
    };
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let len = at.len();
                let _ = write!(at, "/{k}");
                match g.get(k) {
                    Some(gv) => diff(wv, gv, at, out),
                    None => out.push(format!("{}: missing (want {wv})", here(at))),
                }
                at.truncate(len);
            }
            for (k, gv) in g {
                if !w.contains_key(k) {
                    out.push(format!("{at}/{k}: unexpected key (got {gv})"));
                }
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                let len = at.len();
                let _ = write!(at, "/{i}");
                diff(wv, gv, at, out);
                at.truncate(len);
            }
            if w.len() != g.len() {
                out.push(format!(
                    "{}: {} element(s), want {}",
                    here(at),
                    g.len(),
                    w.len()
                ));
            }
        }
        _ if want != got => out.push(format!("{}: want {want}, got {got}", here(at))),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn varying_values_become_typed_placeholders_and_tokens_are_replaced() {
        let mut g = Golden::new("/nonexistent");
        g.token("vm-1234abcd", "<vm-1>")
            .token("vm-1234abcd-17", "<snap-1>");
        let out = b"{\"a\":[{\"ms\":1.5},{\"ms\":null}],\"id\":\"vm-1234abcd-17 of vm-1234abcd\",\"pid\":\"7\"}\n";
        let doc = g.normalise(out, &[("/a/*/ms", "ms"), ("/pid", "pid")]);
        assert_eq!(
            doc,
            json!({"a": [{"ms": "<ms:number>"}, {"ms": null}], "id": "<snap-1> of <vm-1>", "pid": "<pid:string>"})
        );
    }

    #[test]
    #[should_panic(expected = "canonical form")]
    fn output_that_is_not_canonical_is_refused() {
        Golden::new("/nonexistent").normalise(b"{\"b\":1, \"a\":2}\n", &[]);
    }

    #[test]
    fn numbers_are_masked_outside_strings_only() {
        assert_eq!(
            mask_numbers(r#"{"a":-1.5e+3,"b":"x-1 \"2\"","c":[0,10]}"#),
            r#"{"a":#,"b":"x-1 \"2\"","c":[#,#]}"#
        );
    }

    #[test]
    fn diff_names_every_differing_path() {
        let mut out = Vec::new();
        diff(
            &json!({"a": 1, "b": [1, 2], "c": {"d": "x"}}),
            &json!({"a": "1", "b": [1], "c": {"e": "x"}, "f": null}),
            &mut String::new(),
            &mut out,
        );
        assert_eq!(
            out,
            [
                "/a: want 1, got \"1\"",
                "/b: 1 element(s), want 2",
                "/c/d: missing (want \"x\")",
                "/c/e: unexpected key (got \"x\")",
                "/f: unexpected key (got null)",
            ]
        );
    }
}
