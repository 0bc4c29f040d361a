//! The shape of the engine, checked on its sources (run by `scripts/test` with every test):
//!
//! 1. No module cycles: at every level of `vmsan-core` (the crate root, `vm`, `vm::supervisor`,
//!    …) the graph of which child module refers to which sibling (`crate::…` and `super::…`
//!    paths, test modules left out) has no cycle.
//! 2. The CLI uses only the engine's public API: every `vmsan_core::…` path in `vmsan-cli/src`
//!    starts with one of [`ENGINE_API`], and `vm` declares no public submodule (its API is what
//!    `vm/mod.rs` re-exports; the compiler refuses any path past it).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a front end may name at the root of `vmsan_core`: the engine's public API.
const ENGINE_API: &[&str] = &[
    // Modules.
    "artifacts",
    "doctor",
    "error",
    "ids",
    "paths",
    "report",
    "snapshot",
    "state",
    "time",
    "validate",
    "vm",
    // Items re-exported at the root.
    "Error",
    "ErrorCode",
    "Result",
    "SnapshotId",
    "VmId",
    "Paths",
];

type ModPath = Vec<String>;

fn core_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn cli_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../vmsan-cli/src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file defines: `vm/supervisor/mod.rs` and `vm/supervisor.rs` are both
/// `vm::supervisor`, `lib.rs` is the root.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: ModPath = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// A file's code without its test module (always last here) and without comments, so that
/// doc links and tests do not count as dependencies.
fn code_of(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    body.lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Parse the rest of a path after `prefix::` at `s`: `a::b::c`, or a `{…}` group of such
/// paths (nested groups too). Returns every full path it names.
fn parse_tail(s: &str, prefix: &[String], out: &mut Vec<ModPath>) {
    let s = s.trim_start();
    if let Some(group) = s.strip_prefix('{') {
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    parse_tail(&group[start..i], prefix, out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parse_tail(&group[start..i], prefix, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let end = s.find(|c: char| !is_ident(c)).unwrap_or(s.len());
    let ident = &s[..end];
    if ident.is_empty() || ident == "self" {
        out.push(prefix.to_vec());
        return;
    }
    let mut path = prefix.to_vec();
    path.push(ident.to_owned());
    match s[end..].strip_prefix("::") {
        Some(rest) => parse_tail(rest, &path, out),
        None => out.push(path),
    }
}

/// The absolute module paths a piece of code in module `at` refers to through `root::…`
/// (`crate` inside the crate, `vmsan_core` outside it) and `super::…`.
fn references(code: &str, at: &[String], root: &str) -> Vec<ModPath> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for (i, _) in code.match_indices("::") {
        // The word before `::` must be a path's first segment.
        let before = &code[..i];
        let word_start = before.rfind(|c: char| !is_ident(c)).map_or(0, |p| p + 1);
        let word = &before[word_start..];
        if word_start > 0 && bytes[word_start - 1] == b':' {
            continue; // Not the first segment (`a::super` does not occur; `x::crate` neither).
        }
        let base: ModPath = if word == root {
            Vec::new()
        } else if word == "super" && root == "crate" {
            let mut base = at.to_vec();
            base.pop();
            // `super::super::…`
            let mut rest = &code[i + 2..];
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            parse_tail(rest, &base, &mut out);
            continue;
        } else {
            continue;
        };
        parse_tail(&code[i + 2..], &base, &mut out);
    }
    out
}

/// For each module, the edges among its child modules: (from, to) → an example file.
fn sibling_edges() -> BTreeMap<ModPath, BTreeMap<(String, String), String>> {
    let src = core_src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<ModPath> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<ModPath, BTreeMap<(String, String), String>> = BTreeMap::new();
    for file in &files {
        let at = module_of(&src, file);
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for target in references(&code, &at, "crate") {
            let k = at.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if k >= at.len() || k >= target.len() {
                continue; // A reference to an ancestor or a descendant: not between siblings.
            }
            let parent = at[..k].to_vec();
            let mut child = parent.clone();
            child.push(target[k].clone());
            if !modules.contains(&child) {
                continue; // An item re-exported by the common ancestor.
            }
            edges
                .entry(parent)
                .or_default()
                .entry((at[k].clone(), target[k].clone()))
                .or_insert_with(|| file.strip_prefix(&src).unwrap().display().to_string());
        }
    }
    edges
}

/// The strongly connected components with more than one member (Tarjan's algorithm).
fn cycles(edges: &BTreeMap<(String, String), String>) -> Vec<Vec<String>> {
    struct State<'a> {
        adj: BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.adj.get(v).cloned().unwrap_or_default() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                s.out.push(scc);
            }
        }
    }
    let mut st = State {
        adj: BTreeMap::new(),
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for (a, b) in edges.keys() {
        st.adj.entry(a.as_str()).or_default().push(b.as_str());
        st.adj.entry(b.as_str()).or_default();
    }
    let nodes: Vec<&str> = st.adj.keys().copied().collect();
    for v in nodes {
        if !st.index.contains_key(v) {
            visit(&mut st, v);
        }
    }
    st.out
}

#[test]
fn no_module_cycles_in_the_engine() {
    let mut problems = Vec::new();
    for (parent, edges) in sibling_edges() {
        for scc in cycles(&edges) {
            let where_ = if parent.is_empty() {
                "the crate root".to_owned()
            } else {
                parent.join("::")
            };
            let mut why: Vec<String> = edges
                .iter()
                .filter(|((a, b), _)| scc.contains(a) && scc.contains(b))
                .map(|((a, b), file)| format!("    {a} -> {b} (e.g. in {file})"))
                .collect();
            why.sort();
            problems.push(format!(
                "cycle among {{{}}} in {where_}:\n{}",
                scc.join(", "),
                why.join("\n")
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_cli_uses_only_the_engine_api() {
    let src = cli_src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(!files.is_empty(), "no CLI sources under {}", src.display());
    let mut problems = Vec::new();
    for file in &files {
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for path in references(&code, &[], "vmsan_core") {
            let Some(first) = path.first() else {
                continue; // `use vmsan_core::{self, …}` or `vmsan_core::{…}` expanded below.
            };
            if !ENGINE_API.contains(&first.as_str()) {
                problems.push(format!(
                    "{}: vmsan_core::{} is not the engine's API",
                    file.strip_prefix(&src).unwrap().display(),
                    path.join("::")
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_vm_api_is_what_vm_re_exports() {
    let text = std::fs::read_to_string(core_src().join("vm/mod.rs")).unwrap();
    let public: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("pub mod "))
        .collect();
    assert!(
        public.is_empty(),
        "vm's submodules are internal; re-export the API items instead: {public:?}"
    );
    let root = std::fs::read_to_string(core_src().join("lib.rs")).unwrap();
    for line in root.lines() {
        if let Some(name) = line
            .strip_prefix("pub mod ")
            .and_then(|n| n.strip_suffix(';'))
        {
            // `process` is public for tests and benchmarks, not for front ends.
            assert!(
                ENGINE_API.contains(&name) || name == "process",
                "new public module {name}: add it to ENGINE_API if front ends may use it"
            );
        }
    }
}

#[test]
fn the_reference_parser_sees_groups_and_super() {
    let at: ModPath = vec!["vm".into(), "caller".into(), "lifecycle".into()];
    let code = "use super::spawn::{Spawned, x::{y, z}};\nlet a = crate::vm::host::teardown();";
    let refs = references(code, &at, "crate");
    let show: Vec<String> = refs.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        show,
        [
            "vm::caller::spawn::Spawned",
            "vm::caller::spawn::x::y",
            "vm::caller::spawn::x::z",
            "vm::host::teardown",
        ]
    );
}
