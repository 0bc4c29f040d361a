//! The `/v1/fs/*` routes through the client against a real agent in plain mode: stat, list to
//! a depth, mkdir, remove and move, their stable error codes, and symlinks that are listed and
//! removed but never followed.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use common::{AgentProc, path_str};
use vmsan_agent_client::ClientError;
use vmsan_proto::{FileKind, MAX_LIST_DEPTH, MAX_LIST_ENTRIES};

/// The agent's answer code and HTTP status of a refused call.
fn refusal<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (String, u16) {
    match r.unwrap_err() {
        ClientError::Agent { status, code, .. } => (code, status),
        other => panic!("not an agent refusal: {other}"),
    }
}

/// The name `/etc/passwd` gives `uid` on this host, or the number (what the agent reports).
fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 7 && f[2].parse() == Ok(uid)).then(|| f[0].to_owned())
        })
        .next()
        .unwrap_or_else(|| uid.to_string())
}

#[tokio::test]
async fn stat_describes_files_dirs_and_symlinks() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let g = agent.dir.path().join("g");
    std::fs::create_dir(&g).unwrap();
    std::fs::write(g.join("f.txt"), b"hello").unwrap();
    std::fs::set_permissions(g.join("f.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    symlink("/definitely/elsewhere", g.join("link")).unwrap();

    // A path with `.`, `..` and doubled slashes is normalised before use.
    let f = c
        .fs_stat(&format!("{}//./sub/../f.txt", path_str(&g)))
        .await
        .unwrap();
    assert_eq!(f.name, "f.txt");
    assert_eq!(f.path, path_str(&g.join("f.txt")));
    assert_eq!(f.kind, FileKind::File);
    assert_eq!((f.size, f.mode), (5, 0o640));
    assert_eq!(f.permissions, "-rw-r-----");
    let meta = std::fs::metadata(g.join("f.txt")).unwrap();
    assert_eq!(f.owner, user_name(meta.uid()));
    assert!(!f.group.is_empty());
    assert_eq!(f.symlink_target, None);
    // RFC 3339, UTC: `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
    let t = f.modified_time.as_bytes();
    assert!(
        t.len() >= 20 && t[4] == b'-' && t[10] == b'T' && t.ends_with(b"Z"),
        "{}",
        f.modified_time
    );

    let d = c.fs_stat(&path_str(&g)).await.unwrap();
    assert_eq!(d.kind, FileKind::Dir);
    assert!(d.permissions.starts_with('d'), "{}", d.permissions);

    // A symlink is described, not followed (its target does not even exist).
    let l = c.fs_stat(&path_str(&g.join("link"))).await.unwrap();
    assert_eq!(l.kind, FileKind::Symlink);
    assert_eq!(l.symlink_target.as_deref(), Some("/definitely/elsewhere"));
    assert!(l.permissions.starts_with('l'), "{}", l.permissions);

    assert_eq!(
        refusal(c.fs_stat(&path_str(&g.join("missing"))).await),
        ("not_found".into(), 404)
    );
    assert_eq!(
        refusal(c.fs_stat("relative/path").await),
        ("bad_path".into(), 400)
    );
    assert_eq!(refusal(c.fs_stat("/a\0b").await), ("bad_path".into(), 400));
}

#[tokio::test]
async fn list_walks_to_a_depth_without_entering_symlinks() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let g = agent.dir.path().join("g");
    let outside = agent.dir.path().join("outside");
    std::fs::create_dir_all(g.join("a/b/c")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"s").unwrap();
    std::fs::write(g.join("top.txt"), b"t").unwrap();
    std::fs::write(g.join("a/b/c/deep.txt"), b"d").unwrap();
    symlink(&outside, g.join("a/out")).unwrap();

    let rel = |entries: &[vmsan_proto::FsEntry]| -> Vec<String> {
        entries
            .iter()
            .map(|e| e.path.strip_prefix(&path_str(&g)).unwrap().to_owned())
            .collect()
    };
    let one = c.fs_list(&path_str(&g), 1).await.unwrap();
    assert_eq!(rel(&one), ["/a", "/top.txt"]);
    assert_eq!(one[0].kind, FileKind::Dir);
    // Depth 0 is taken as 1 (E2B's default).
    assert_eq!(
        rel(&c.fs_list(&path_str(&g), 0).await.unwrap()),
        ["/a", "/top.txt"]
    );

    let two = c.fs_list(&path_str(&g), 2).await.unwrap();
    assert_eq!(rel(&two), ["/a", "/a/b", "/a/out", "/top.txt"]);
    let out = two.iter().find(|e| e.name == "out").unwrap();
    assert_eq!(out.kind, FileKind::Symlink);
    assert_eq!(
        out.symlink_target.as_deref(),
        Some(path_str(&outside).as_str())
    );

    // All the way down: the symlinked directory's contents never show up.
    let all = c.fs_list(&path_str(&g), MAX_LIST_DEPTH).await.unwrap();
    assert_eq!(
        rel(&all),
        [
            "/a",
            "/a/b",
            "/a/b/c",
            "/a/b/c/deep.txt",
            "/a/out",
            "/top.txt"
        ]
    );
    assert!(all.iter().all(|e| !e.path.contains("secret")));

    assert_eq!(
        refusal(c.fs_list(&path_str(&g), MAX_LIST_DEPTH + 1).await),
        ("depth_too_large".into(), 400)
    );
    assert_eq!(
        refusal(c.fs_list(&path_str(&g.join("top.txt")), 1).await),
        ("not_a_directory".into(), 409)
    );
    assert_eq!(
        refusal(c.fs_list(&path_str(&g.join("nope")), 1).await),
        ("not_found".into(), 404)
    );
}

#[tokio::test]
async fn list_refuses_more_entries_than_the_cap() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let g = agent.dir.path().join("many");
    std::fs::create_dir(&g).unwrap();
    for i in 0..=MAX_LIST_ENTRIES {
        std::fs::File::create(g.join(format!("f{i}"))).unwrap();
    }
    assert_eq!(
        refusal(c.fs_list(&path_str(&g), 1).await),
        ("too_many_entries".into(), 413)
    );
    std::fs::remove_file(g.join("f0")).unwrap();
    assert_eq!(
        c.fs_list(&path_str(&g), 1).await.unwrap().len(),
        MAX_LIST_ENTRIES
    );
}

#[tokio::test]
async fn make_dir_creates_parents_and_reports_an_existing_directory() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let g = agent.dir.path().join("g");
    std::fs::create_dir(&g).unwrap();
    let deep = g.join("x/y/z");

    let made = c.fs_make_dir(&path_str(&deep), Some(0o750)).await.unwrap();
    assert!(made.created);
    assert_eq!(made.entry.kind, FileKind::Dir);
    assert_eq!(made.entry.path, path_str(&deep));
    assert!(deep.is_dir());
    assert_eq!(std::fs::metadata(&deep).unwrap().mode() & 0o7777, 0o750);

    let again = c.fs_make_dir(&path_str(&deep), None).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.entry.path, path_str(&deep));

    std::fs::write(g.join("file"), b"f").unwrap();
    assert_eq!(
        refusal(c.fs_make_dir(&path_str(&g.join("file")), None).await),
        ("not_a_directory".into(), 409)
    );
    assert_eq!(
        refusal(c.fs_make_dir(&path_str(&g.join("file/below")), None).await),
        ("not_a_directory".into(), 409)
    );
    assert_eq!(
        refusal(c.fs_make_dir("no/slash", None).await),
        ("bad_path".into(), 400)
    );
}

#[tokio::test]
async fn remove_deletes_trees_but_never_follows_symlinks_out() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let g = agent.dir.path().join("g");
    let outside = agent.dir.path().join("outside");
    std::fs::create_dir_all(g.join("tree/sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"k").unwrap();
    std::fs::write(g.join("tree/sub/f"), b"f").unwrap();
    symlink(&outside, g.join("tree/sub/out")).unwrap();
    symlink(&outside, g.join("top-link")).unwrap();
    std::fs::write(g.join("file"), b"f").unwrap();

    c.fs_remove(&path_str(&g.join("file"))).await.unwrap();
    assert!(!g.join("file").exists());

    // A directory goes with everything under it; the symlink inside is unlinked, not entered.
    c.fs_remove(&path_str(&g.join("tree"))).await.unwrap();
    assert!(!g.join("tree").exists());
    assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"k");

    // A symlink to a directory is removed itself.
    c.fs_remove(&path_str(&g.join("top-link"))).await.unwrap();
    assert!(g.join("top-link").symlink_metadata().is_err());
    assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"k");

    assert_eq!(
        refusal(c.fs_remove(&path_str(&g.join("gone"))).await),
        ("not_found".into(), 404)
    );
    assert_eq!(refusal(c.fs_remove("/").await), ("invalid".into(), 400));
    assert_eq!(
        refusal(c.fs_remove("/tmp/..").await),
        ("invalid".into(), 400)
    );
}

#[tokio::test]
async fn move_renames_and_refuses_with_stable_codes() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let g = agent.dir.path().join("g");
    std::fs::create_dir_all(g.join("dir/inner")).unwrap();
    std::fs::create_dir_all(g.join("full")).unwrap();
    std::fs::write(g.join("full/x"), b"x").unwrap();
    std::fs::write(g.join("a"), b"A").unwrap();
    std::fs::write(g.join("b"), b"B").unwrap();
    let p = |n: &str| path_str(&g.join(n));

    let moved = c.fs_move(&p("a"), &p("a2"), false).await.unwrap();
    assert_eq!((moved.name.as_str(), moved.kind), ("a2", FileKind::File));
    assert_eq!(moved.path, p("a2"));
    assert_eq!(std::fs::read(g.join("a2")).unwrap(), b"A");
    assert!(!g.join("a").exists());

    // An existing destination is kept unless overwriting is asked for.
    assert_eq!(
        refusal(c.fs_move(&p("a2"), &p("b"), false).await),
        ("already_exists".into(), 409)
    );
    assert_eq!(std::fs::read(g.join("b")).unwrap(), b"B");
    c.fs_move(&p("a2"), &p("b"), true).await.unwrap();
    assert_eq!(std::fs::read(g.join("b")).unwrap(), b"A");

    // What rename(2) refuses, even when overwriting.
    assert_eq!(
        refusal(c.fs_move(&p("b"), &p("dir"), true).await),
        ("is_a_directory".into(), 409)
    );
    assert_eq!(
        refusal(c.fs_move(&p("dir"), &p("b"), true).await),
        ("not_a_directory".into(), 409)
    );
    assert_eq!(
        refusal(c.fs_move(&p("dir"), &p("full"), true).await),
        ("not_empty".into(), 409)
    );
    assert_eq!(
        refusal(c.fs_move(&p("dir"), &p("dir/inner/dir"), false).await),
        ("invalid".into(), 400)
    );
    assert!(g.join("dir/inner").is_dir() && g.join("b").is_file());

    assert_eq!(
        refusal(c.fs_move(&p("missing"), &p("m2"), false).await),
        ("not_found".into(), 404)
    );
    assert_eq!(
        refusal(c.fs_move("/", &p("root"), false).await),
        ("invalid".into(), 400)
    );
    assert_eq!(
        refusal(c.fs_move(&p("b"), "rel", false).await),
        ("bad_path".into(), 400)
    );

    // A symlink is moved itself, its target untouched.
    symlink(Path::new("dir"), g.join("l")).unwrap();
    let l = c.fs_move(&p("l"), &p("l2"), false).await.unwrap();
    assert_eq!(l.kind, FileKind::Symlink);
    assert_eq!(l.symlink_target.as_deref(), Some("dir"));
    assert!(g.join("dir/inner").is_dir());
}
