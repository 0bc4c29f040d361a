//! The agent in plain mode, driven through the host client (issue 3, "Must show" 1 and 3).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::{AgentProc, TOKEN, argv, path_str, self_peak_rss_kib};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vmsan_agent_client::{AgentClient, ClientError, Endpoint, PtyEvent, PtySession, is_auth_error};
use vmsan_proto::{ExecRequest, PtyOpenRequest};

fn req(a: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv(a),
        ..Default::default()
    }
}

/// An AsyncWrite that counts bytes and keeps nothing.
#[derive(Default)]
struct CountingSink {
    bytes: u64,
    nonzero: u64,
}

impl tokio::io::AsyncWrite for CountingSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.bytes += buf.len() as u64;
        self.nonzero += buf.iter().filter(|&&b| b != 0).count() as u64;
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_version_and_protocol() {
    let agent = AgentProc::start().await;
    let h = agent.client().health().await.unwrap();
    assert_eq!(h.status, "ok");
    assert_eq!(h.protocol, vmsan_proto::PROTOCOL_VERSION);
    assert_eq!(h.mode, "plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_signals_and_missing_programs() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    assert_eq!(c.exec_collect(req(&["true"])).await.unwrap().status.code, 0);
    assert_eq!(
        c.exec_collect(req(&["false"])).await.unwrap().status.code,
        1
    );
    assert_eq!(
        c.exec_collect(req(&["sh", "-c", "exit 7"]))
            .await
            .unwrap()
            .status
            .code,
        7
    );
    let killed = c
        .exec_collect(req(&["sh", "-c", "kill -9 $$"]))
        .await
        .unwrap();
    assert_eq!((killed.status.code, killed.status.signal), (137, Some(9)));
    let missing = c
        .exec_collect(req(&["/definitely/not/here"]))
        .await
        .unwrap_err();
    assert_eq!(missing.agent_code(), Some("spawn_failed"), "{missing}");
    let empty = c.exec_collect(req(&[])).await.unwrap_err();
    assert_eq!(empty.agent_code(), Some("bad_request"), "{empty}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_cwd_and_stderr_are_separate() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let dir = agent.dir.path().join("wd");
    std::fs::create_dir(&dir).unwrap();
    let out = c
        .exec_collect(ExecRequest {
            argv: argv(&["sh", "-c", "echo \"$GREETING\"; pwd; echo oops >&2; exit 3"]),
            env: BTreeMap::from([("GREETING".into(), "hello world".into())]),
            cwd: Some(path_str(&dir)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(out.status.code, 3);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("hello world\n{}\n", dir.display())
    );
    assert_eq!(out.stderr, b"oops\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_never_reaches_children() {
    let agent = AgentProc::start_with_env(&[
        ("VMSAN_AGENT_TOKEN", TOKEN),
        ("INNOCENT", &format!("x{TOKEN}y")),
    ])
    .await;
    let out = agent.client().exec_collect(req(&["env"])).await.unwrap();
    let env = String::from_utf8(out.stdout).unwrap();
    assert!(env.contains("PATH="), "{env}");
    assert!(
        !env.contains(TOKEN),
        "token leaked into a child's environment:\n{env}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_output_is_byte_exact() {
    let agent = AgentProc::start().await;
    let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let f = agent.dir.path().join("bytes");
    std::fs::write(&f, &all).unwrap();
    let out = agent
        .client()
        .exec_collect(req(&[
            "sh",
            "-c",
            "cat \"$0\"; cat \"$0\" >&2",
            &path_str(&f),
        ]))
        .await
        .unwrap();
    assert_eq!(out.stdout, all);
    assert_eq!(out.stderr, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_streamed_and_closed() {
    let agent = AgentProc::start().await;
    let input: Vec<u8> = (0..(3 << 20))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (mut w, r) = tokio::io::duplex(64 * 1024);
    let feed = input.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&feed).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let out = agent
        .client()
        .exec(req(&["cat"]), Some(r), &mut stdout, &mut stderr)
        .await
        .unwrap();
    writer.await.unwrap();
    assert_eq!(out.status.code, 0);
    assert!(
        stdout == input,
        "cat returned {} bytes, not the {} sent",
        stdout.len(),
        input.len()
    );
    // stdin that is not read to the end still ends cleanly.
    let out = agent
        .client()
        .exec(
            req(&["head", "-c", "5"]),
            Some(&b"abcdefgh"[..]),
            &mut Vec::new(),
            &mut Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(out.status.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_of_output_in_constant_memory() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let before_agent = agent.peak_rss_kib();
    let mut sink = CountingSink::default();
    let mut err = CountingSink::default();
    let t = Instant::now();
    let out = c
        .exec(
            req(&[
                "sh",
                "-c",
                "yes abcdefghijklmnopqrstuvwxyz | head -c 104857600",
            ]),
            None::<&[u8]>,
            &mut sink,
            &mut err,
        )
        .await
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(out.status.code, 0);
    assert_eq!(sink.bytes, 100 << 20);
    assert_eq!(sink.nonzero, 100 << 20);
    let agent_peak = agent.peak_rss_kib();
    let me_peak = self_peak_rss_kib();
    println!(
        "100 MiB in {secs:.2} s ({:.0} MiB/s); agent peak RSS {before_agent} -> {agent_peak} KiB; test process peak {me_peak} KiB",
        100.0 / secs
    );
    assert!(
        agent_peak < 24 * 1024,
        "agent peak RSS {agent_peak} KiB: output is being buffered"
    );
    assert!(
        me_peak < 64 * 1024,
        "client peak RSS {me_peak} KiB: output is being buffered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_process_group() {
    let agent = AgentProc::start().await;
    let t = Instant::now();
    let out = agent
        .client()
        .exec_collect(ExecRequest {
            argv: argv(&["sh", "-c", "sh -c 'sleep 300' & echo $!; wait"]),
            timeout_ms: Some(300),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "timeout did not end the command"
    );
    assert!(out.status.timed_out);
    assert_eq!(out.status.signal, Some(9));
    let grandchild: i32 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The grandchild was re-parented; its new parent reaps it at its own pace. Alive means
    // in any state but zombie.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
            .ok()
            .and_then(|s| s.rsplit(") ").next().and_then(|r| r.chars().next()));
        match state {
            None | Some('Z') => break,
            Some(s) => assert!(
                Instant::now() < deadline,
                "grandchild {grandchild} still alive in state {s}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_execs() {
    let agent = AgentProc::start().await;
    let c = std::sync::Arc::new(agent.client());
    let t = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let c = std::sync::Arc::clone(&c);
            tokio::spawn(async move {
                let out = c
                    .exec_collect(req(&[
                        "sh",
                        "-c",
                        "sleep 0.2; echo \"n=$0\"; exit $(($0 % 5))",
                        &i.to_string(),
                    ]))
                    .await
                    .unwrap();
                (i, out)
            })
        })
        .collect();
    for t in tasks {
        let (i, out) = t.await.unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("n={i}\n"));
        assert_eq!(out.status.code, i % 5);
    }
    // 50 sleeps of 0.2 s in sequence would take 10 s.
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "execs did not run concurrently: {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_commands_kill_and_output() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let started = c
        .exec_detached(req(&["sh", "-c", "echo out; echo err >&2; exit 4"]))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    // No event exists for a detached command's end: poll its state with a deadline.
    while c.exec_info(&started.id).await.unwrap().exit.is_none() {
        assert!(Instant::now() < deadline, "detached command did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = c.exec_output(&started.id).await.unwrap();
    assert_eq!(
        (
            out.stdout.as_slice(),
            out.stderr.as_slice(),
            out.status.code
        ),
        (&b"out\n"[..], &b"err\n"[..], 4)
    );

    let sleeper = c.exec_detached(req(&["sleep", "300"])).await.unwrap();
    c.kill(&sleeper.id, 15).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(e) = c.exec_info(&sleeper.id).await.unwrap().exit {
            break e;
        }
        assert!(Instant::now() < deadline, "killed command did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.signal, Some(15));
    assert_eq!(
        c.kill("nope", 9).await.unwrap_err().agent_code(),
        Some("not_found")
    );
}

async fn read_until(s: &mut PtySession, needle: &str) -> String {
    let mut seen = Vec::new();
    let fut = async {
        loop {
            match s.next_event().await.unwrap() {
                PtyEvent::Output(b) => {
                    seen.extend_from_slice(&b);
                    if String::from_utf8_lossy(&seen).contains(needle) {
                        return;
                    }
                }
                other => panic!(
                    "unexpected {other:?} before {needle:?}; saw {:?}",
                    String::from_utf8_lossy(&seen)
                ),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .is_err()
    {
        panic!(
            "no {needle:?} on the terminal; saw {:?}",
            String::from_utf8_lossy(&seen)
        );
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_stty_size_follows_resize_and_exit_status_arrives() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let mut s = c
        .pty_open_attach(&PtyOpenRequest {
            argv: argv(&["sh"]),
            cols: 80,
            rows: 24,
            ..Default::default()
        })
        .await
        .unwrap();
    // The needles are computed by the shell so that the echo of the typed line cannot match.
    s.send_input(b"stty size; echo SIZE-$((40+2))\n")
        .await
        .unwrap();
    let seen = read_until(&mut s, "SIZE-42").await;
    assert!(
        seen.contains(" 24 80\r\n") || seen.contains("\n24 80\r\n"),
        "{seen:?}"
    );
    s.resize(132, 43).await.unwrap();
    s.send_input(b"stty size; echo SIZE-$((40+3))\n")
        .await
        .unwrap();
    let seen = read_until(&mut s, "SIZE-43").await;
    assert!(
        seen.contains(" 43 132\r\n") || seen.contains("\n43 132\r\n"),
        "{seen:?}"
    );
    s.send_input(b"exit 5\n").await.unwrap();
    let status = loop {
        match s.next_event().await.unwrap() {
            PtyEvent::Exit(st) => break st,
            PtyEvent::Output(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(status.code, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_reattach_replays_scrollback_and_clients_share_the_session() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let opened = c
        .pty_open(&PtyOpenRequest {
            argv: argv(&["sh"]),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut first = c.pty_attach(&opened.id).await.unwrap();
    first.send_input(b"echo MARK-$((6*7))\n").await.unwrap();
    read_until(&mut first, "MARK-42").await;
    first.detach().await.unwrap();
    // The session lives on without clients.
    let list = c.pty_list().await.unwrap();
    assert!(
        list.iter().any(|p| p.id == opened.id && p.exit.is_none()),
        "{list:?}"
    );
    let mut again = c.pty_attach(&opened.id).await.unwrap();
    let replay = read_until(&mut again, "MARK-42").await;
    assert!(
        replay.contains("echo MARK-$((6*7))"),
        "scrollback lacks the earlier input echo: {replay:?}"
    );
    // A second client sees what the first one types.
    let mut other = c.pty_attach(&opened.id).await.unwrap();
    read_until(&mut other, "MARK-42").await;
    again.send_input(b"echo SHARED-$((2+3))\n").await.unwrap();
    read_until(&mut other, "SHARED-5").await;
    read_until(&mut again, "SHARED-5").await;
    c.pty_kill(&opened.id, 9).await.unwrap();
    let st = loop {
        match other.next_event().await.unwrap() {
            PtyEvent::Exit(st) => break st,
            PtyEvent::Output(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    };
    assert_eq!(st.signal, Some(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_scrollback_holds_at_least_64_kib() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    // 100 KiB of numbered lines, then a marker; nobody attached while it is written.
    let opened = c
        .pty_open(&PtyOpenRequest {
            argv: argv(&["sh", "-c", "i=0; while [ $i -lt 10000 ]; do echo L$i; i=$((i+1)); done; echo END; exec sleep 300"]),
            ..Default::default()
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut s = c.pty_attach(&opened.id).await.unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("END") {
        assert!(Instant::now() < deadline);
        match tokio::time::timeout(Duration::from_secs(20), s.next_event())
            .await
            .unwrap()
            .unwrap()
        {
            PtyEvent::Output(b) => seen.extend_from_slice(&b),
            PtyEvent::Gap(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    let text = String::from_utf8_lossy(&seen);
    // Whatever was skipped, at least the last 64 KiB must be there, contiguous.
    assert!(
        seen.len() >= 64 * 1024,
        "only {} bytes replayed",
        seen.len()
    );
    assert!(
        text.contains("L9999\r\nEND"),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
    c.pty_kill(&opened.id, 9).await.unwrap();
}

fn raw_tar_entry(
    out: &mut Vec<u8>,
    name: &[u8],
    kind: tar::EntryType,
    link: Option<&[u8]>,
    data: &[u8],
) {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            old.linkname[..l.len()].copy_from_slice(l);
        }
    }
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_entry_type(kind);
    h.set_mtime(0);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finish_tar(mut v: Vec<u8>) -> Vec<u8> {
    v.extend_from_slice(&[0u8; 1024]);
    v
}

fn tree(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_escape_attempts_are_rejected_and_nothing_lands_outside() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let base = agent.dir.path().join("fs");
    let dest = base.join("dest");
    let outside = base.join("outside");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("linkdir")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), dest.join("linkfile")).unwrap();
    let d = path_str(&dest);
    use tar::EntryType as T;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dot-dot", {
            let mut v = Vec::new();
            raw_tar_entry(&mut v, b"../outside/evil", T::Regular, None, b"x");
            v
        }),
        ("nested dot-dot", {
            let mut v = Vec::new();
            raw_tar_entry(&mut v, b"a/../../outside/evil", T::Regular, None, b"x");
            v
        }),
        ("absolute", {
            let mut v = Vec::new();
            let abs = format!("{}/evil", outside.display());
            raw_tar_entry(&mut v, abs.as_bytes(), T::Regular, None, b"x");
            v
        }),
        ("symlink pointing out", {
            let mut v = Vec::new();
            raw_tar_entry(&mut v, b"up", T::Symlink, Some(b"../outside"), b"");
            v
        }),
        ("absolute symlink", {
            let mut v = Vec::new();
            raw_tar_entry(
                &mut v,
                b"abs",
                T::Symlink,
                Some(outside.to_str().unwrap().as_bytes()),
                b"",
            );
            v
        }),
        ("through existing dir symlink", {
            let mut v = Vec::new();
            raw_tar_entry(&mut v, b"linkdir/evil", T::Regular, None, b"x");
            v
        }),
        ("onto existing file symlink", {
            let mut v = Vec::new();
            raw_tar_entry(&mut v, b"linkfile", T::Regular, None, b"x");
            v
        }),
        ("through a symlink from the same archive", {
            let mut v = Vec::new();
            raw_tar_entry(&mut v, b"inner", T::Symlink, Some(b"."), b"");
            raw_tar_entry(&mut v, b"sub/deep", T::Symlink, Some(b"../../outside"), b"");
            v
        }),
    ];
    for (what, tar) in cases {
        let err = c
            .upload_tar(std::io::Cursor::new(finish_tar(tar)), &d)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::Agent { code, .. } if code == "path_escape"),
            "{what}: expected path_escape, got {err}"
        );
        assert!(
            tree(&outside).is_empty(),
            "{what}: something was written outside: {:?}",
            tree(&outside)
        );
    }
    assert!(!base.join("evil").exists());
    // A symlink that stays inside is fine.
    let mut v = Vec::new();
    raw_tar_entry(&mut v, b"d/f", T::Regular, None, b"data");
    raw_tar_entry(&mut v, b"d/ok", T::Symlink, Some(b"f"), b"");
    raw_tar_entry(&mut v, b"d/up-ok", T::Symlink, Some(b"../d/f"), b"");
    let r = c
        .upload_tar(std::io::Cursor::new(finish_tar(v)), &d)
        .await
        .unwrap();
    assert_eq!(r.entries, 3);
    assert_eq!(std::fs::read(dest.join("d/ok")).unwrap(), b"data");
    assert!(tree(&outside).is_empty());
    // Relative destinations are refused.
    let err = c
        .upload_tar(std::io::Cursor::new(finish_tar(Vec::new())), "relative/dir")
        .await
        .unwrap_err();
    assert_eq!(err.agent_code(), Some("bad_request"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_and_download_keep_modes_dirs_and_symlinks() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let src = agent.dir.path().join("src");
    std::fs::create_dir_all(src.join("tree/sub")).unwrap();
    std::fs::write(src.join("tree/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        src.join("tree/run.sh"),
        std::fs::Permissions::from_mode(0o751),
    )
    .unwrap();
    std::fs::write(src.join("tree/sub/data"), b"\xff\x00bin").unwrap();
    std::fs::set_permissions(src.join("tree/sub"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("sub/data", src.join("tree/link")).unwrap();
    std::fs::write(src.join("single.txt"), b"one").unwrap();
    let guest = agent.dir.path().join("guest");
    let progress_calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pc = std::sync::Arc::clone(&progress_calls);
    let r = c
        .upload(
            &[src.join("tree"), src.join("single.txt")],
            &path_str(&guest),
            Some(std::sync::Arc::new(move |_, _| {
                pc.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })),
        )
        .await
        .unwrap();
    assert!(r.entries >= 5, "{r:?}");
    assert!(progress_calls.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert_eq!(
        std::fs::metadata(guest.join("tree/run.sh")).unwrap().mode() & 0o7777,
        0o751
    );
    assert_eq!(
        std::fs::metadata(guest.join("tree/sub")).unwrap().mode() & 0o7777,
        0o700
    );
    assert_eq!(
        std::fs::read_link(guest.join("tree/link")).unwrap(),
        Path::new("sub/data")
    );
    assert_eq!(std::fs::read(guest.join("single.txt")).unwrap(), b"one");

    // Explicit names: a single file renamed on the way in; a name that climbs out is refused.
    c.upload_as(
        &[(src.join("single.txt"), "renamed.txt".into())],
        &path_str(&guest),
        None,
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(guest.join("renamed.txt")).unwrap(), b"one");
    assert!(
        c.upload_as(
            &[(src.join("single.txt"), "../escaped.txt".into())],
            &path_str(&guest),
            None
        )
        .await
        .is_err()
    );
    assert!(!agent.dir.path().join("escaped.txt").exists());

    let st = c.stat(&path_str(&guest.join("tree/link"))).await.unwrap();
    assert_eq!(st.kind, vmsan_proto::FileKind::Symlink);
    assert_eq!(st.link_target.as_deref(), Some("sub/data"));
    let names: Vec<String> = c
        .list(&path_str(&guest.join("tree")))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["link", "run.sh", "sub"]);

    let back = agent.dir.path().join("back");
    let d = c
        .download(&path_str(&guest.join("tree")), &back, None)
        .await
        .unwrap();
    assert!(d.is_dir);
    assert_eq!(
        std::fs::read(back.join("sub/data")).unwrap(),
        b"\xff\x00bin"
    );
    assert_eq!(
        std::fs::metadata(back.join("run.sh")).unwrap().mode() & 0o7777,
        0o751
    );
    assert_eq!(
        std::fs::read_link(back.join("link")).unwrap(),
        Path::new("sub/data")
    );
    let one = c
        .download(
            &path_str(&guest.join("tree/run.sh")),
            &back.join("copy.sh"),
            None,
        )
        .await
        .unwrap();
    assert!(!one.is_dir);
    assert_eq!(
        std::fs::metadata(back.join("copy.sh")).unwrap().mode() & 0o7777,
        0o751
    );
    let missing = c
        .download("/definitely/not/here", &back.join("x"), None)
        .await
        .unwrap_err();
    assert_eq!(missing.agent_code(), Some("io"));
    assert!(
        matches!(&missing, ClientError::Agent { status: 404, .. }),
        "{missing}"
    );

    // mkdir / rename / remove.
    let m = guest.join("made/deep");
    c.mkdir(&path_str(&m), Some(0o750), true).await.unwrap();
    assert_eq!(std::fs::metadata(&m).unwrap().mode() & 0o7777, 0o750);
    c.rename(
        &path_str(&guest.join("single.txt")),
        &path_str(&m.join("moved")),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(m.join("moved")).unwrap(), b"one");
    let not_empty = c
        .remove(&path_str(&guest.join("made")), false)
        .await
        .unwrap_err();
    assert_eq!(not_empty.agent_code(), Some("io"));
    c.remove(&path_str(&guest.join("made")), true)
        .await
        .unwrap();
    assert!(!guest.join("made").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_and_download_in_constant_memory() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let src = agent.dir.path().join("big.bin");
    let f = std::fs::File::create(&src).unwrap();
    // Real (not sparse) generated data, so that every byte travels; marks at a few places show
    // a misplaced chunk.
    {
        use std::io::Write;
        let chunk: Vec<u8> = (0..(1u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let mut w = std::io::BufWriter::new(&f);
        for _ in 0..1024 {
            w.write_all(&chunk).unwrap();
        }
        w.flush().unwrap();
    }
    use std::os::unix::fs::FileExt;
    for (i, off) in [0u64, 123_456_789, (1 << 30) - 8].into_iter().enumerate() {
        f.write_all_at(format!("MARK{i:04}").as_bytes(), off)
            .unwrap();
    }
    drop(f);
    let guest = agent.dir.path().join("guest");
    let t = Instant::now();
    c.upload(std::slice::from_ref(&src), &path_str(&guest), None)
        .await
        .unwrap();
    let up = t.elapsed().as_secs_f64();
    let uploaded = guest.join("big.bin");
    assert_eq!(std::fs::metadata(&uploaded).unwrap().len(), 1 << 30);
    std::fs::remove_file(&src).unwrap();
    let back = agent.dir.path().join("back.bin");
    let t = Instant::now();
    let d = c.download(&path_str(&uploaded), &back, None).await.unwrap();
    let down = t.elapsed().as_secs_f64();
    assert_eq!(d.bytes, 1 << 30);
    let g = std::fs::File::open(&back).unwrap();
    for (i, off) in [0u64, 123_456_789, (1 << 30) - 8].into_iter().enumerate() {
        let mut b = [0u8; 8];
        g.read_exact_at(&mut b, off).unwrap();
        assert_eq!(&b, format!("MARK{i:04}").as_bytes());
    }
    let agent_peak = agent.peak_rss_kib();
    let me_peak = self_peak_rss_kib();
    println!(
        "1 GiB upload {up:.2} s ({:.0} MiB/s), download {down:.2} s ({:.0} MiB/s); agent peak RSS {agent_peak} KiB, test process peak {me_peak} KiB",
        1024.0 / up,
        1024.0 / down
    );
    assert!(agent_peak < 32 * 1024, "agent peak RSS {agent_peak} KiB");
    assert!(me_peak < 64 * 1024, "client peak RSS {me_peak} KiB");
}

/// `POST /v1/clock` answers with the agent's clock; an agent on the host (plain mode, like the
/// stand-in's) never steps the host's clock, however far off the request is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_request_answers_and_never_steps_the_hosts_clock() {
    let agent = AgentProc::start().await;
    let now = || {
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap()
    };
    let an_hour_ago = now() - 3_600_000;
    let before = now();
    let guest = agent.client().set_clock(an_hour_ago).await.unwrap();
    let after = now();
    assert!(
        (before..=after).contains(&guest),
        "{guest} not in {before}..={after}"
    );
    assert!(now() > an_hour_ago + 3_500_000, "the host's clock moved");
    let e = agent
        .client_with_token("not-the-token")
        .set_clock(now())
        .await
        .unwrap_err();
    assert!(is_auth_error(&e), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_token_is_refused() {
    let agent = AgentProc::start().await;
    let wrong = agent.client_with_token("not-the-token");
    let e = wrong.health().await.unwrap_err();
    assert!(is_auth_error(&e), "{e}");
    assert_eq!(e.agent_code(), Some("forbidden"));
    let e = wrong.exec_collect(req(&["true"])).await.unwrap_err();
    assert_eq!(e.agent_code(), Some("forbidden"));
    let e = wrong.pty_attach("anything").await.unwrap_err();
    assert_eq!(e.agent_code(), Some("forbidden"), "{e}");
    let e = agent.client_with_token("").health().await.unwrap_err();
    assert!(is_auth_error(&e), "{e}");
    // No Authorization header at all.
    let mut s = tokio::net::UnixStream::connect(&agent.sock).await.unwrap();
    s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    // The right token still works on the same agent.
    agent.client().health().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_vsock_handshake_through_a_relay() {
    let agent = AgentProc::start().await;
    // A relay that behaves like Firecracker's host side of hybrid vsock.
    let uds = agent.dir.path().join("v.sock");
    let listener = tokio::net::UnixListener::bind(&uds).unwrap();
    let target = agent.sock.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let target = target.clone();
            tokio::spawn(async move {
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while s.read(&mut b).await.unwrap() == 1 && b[0] != b'\n' {
                    line.push(b[0]);
                }
                if line != b"CONNECT 1024" {
                    return; // closes, as Firecracker does for a port nobody listens on
                }
                s.write_all(b"OK 1073741824\n").await.unwrap();
                let mut g = tokio::net::UnixStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut s, &mut g).await;
            });
        }
    });
    let c = AgentClient::new(Endpoint::hybrid_vsock(&uds), TOKEN);
    assert_eq!(c.health().await.unwrap().status, "ok");
    let out = c.exec_collect(req(&["echo", "via vsock"])).await.unwrap();
    assert_eq!(out.stdout, b"via vsock\n");
    let mut s = c
        .pty_open_attach(&PtyOpenRequest {
            argv: argv(&["sh"]),
            ..Default::default()
        })
        .await
        .unwrap();
    s.send_input(b"echo PTY-$((1+1))\n").await.unwrap();
    read_until(&mut s, "PTY-2").await;
    let wrong_port = AgentClient::new(
        Endpoint::HybridVsock {
            uds_path: uds.clone(),
            port: 9999,
        },
        TOKEN,
    );
    let e = wrong_port.health().await.unwrap_err();
    assert!(
        matches!(e, ClientError::Handshake { port: 9999, .. }),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_as_another_user_when_root() {
    if !common::is_root() {
        vmsan_testkit::skip!("needs root to switch users");
        return;
    }
    let agent = AgentProc::start().await;
    let out = agent
        .client()
        .exec_collect(ExecRequest {
            argv: argv(&["id", "-u"]),
            user: Some("65534".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(out.stdout, b"65534\n");
    let out = agent
        .client()
        .exec_collect(req(&["id", "-u"]))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"0\n");
    let e = agent
        .client()
        .exec_collect(ExecRequest {
            argv: argv(&["true"]),
            user: Some("no-such-user".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.agent_code(), Some("bad_request"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_agent_is_small() {
    let agent = AgentProc::start().await;
    agent.client().health().await.unwrap();
    let rss = agent.rss_kib();
    println!("idle agent RSS (debug build): {rss} KiB");
    // The release (agent profile) build is measured by scripts/bench-agent; a debug build is
    // larger, so this only guards against gross regressions.
    assert!(rss < 16 * 1024, "idle RSS {rss} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_helper_passes_bytes_detaches_and_reports_exit() {
    use vmsan_agent_client::terminal::{InteractiveOptions, InteractiveOutcome, run_interactive};
    let agent = AgentProc::start().await;
    let c = agent.client();
    let opts = InteractiveOptions {
        raw_mode: false,
        ..Default::default()
    };
    // Exit status of the remote program.
    let s = c
        .pty_open_attach(&PtyOpenRequest {
            argv: argv(&["sh"]),
            ..Default::default()
        })
        .await
        .unwrap();
    let (mut input, input_r) = tokio::io::duplex(1024);
    let (output_w, mut output) = tokio::io::duplex(1 << 20);
    input
        .write_all(b"echo OUT-$((3*3)); exit 3\n")
        .await
        .unwrap();
    let outcome = run_interactive(s, input_r, output_w, opts.clone())
        .await
        .unwrap();
    assert_eq!(
        outcome,
        InteractiveOutcome::Exited(vmsan_proto::ExitStatus {
            code: 3,
            signal: None,
            timed_out: false
        })
    );
    let mut seen = Vec::new();
    output.read_to_end(&mut seen).await.unwrap();
    assert!(
        String::from_utf8_lossy(&seen).contains("OUT-9"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    // The detach key (Ctrl-]) leaves the session running.
    let opened = c
        .pty_open(&PtyOpenRequest {
            argv: argv(&["sh"]),
            ..Default::default()
        })
        .await
        .unwrap();
    let s = c.pty_attach(&opened.id).await.unwrap();
    let (mut input, input_r) = tokio::io::duplex(1024);
    input
        .write_all(b"echo BEFORE-$((1+1))\n\x1d")
        .await
        .unwrap();
    let outcome = run_interactive(s, input_r, tokio::io::sink(), opts)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        InteractiveOutcome::Detached {
            session: opened.id.clone()
        }
    );
    let mut again = c.pty_attach(&opened.id).await.unwrap();
    read_until(&mut again, "BEFORE-2").await;
    c.pty_kill(&opened.id, 9).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_input_sent_just_before_detaching_is_not_lost() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let opened = c
        .pty_open(&PtyOpenRequest {
            argv: argv(&["sh"]),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut s = c.pty_attach(&opened.id).await.unwrap();
    s.send_input(b"echo BEFORE-$((1+1))\n").await.unwrap();
    s.detach().await.unwrap();
    let mut again = c.pty_attach(&opened.id).await.unwrap();
    read_until(&mut again, "BEFORE-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_exec_kills_its_process_group() {
    let agent = AgentProc::start().await;
    let c = std::sync::Arc::new(agent.client());
    let (w, r) = tokio::io::duplex(4096);
    let c2 = std::sync::Arc::clone(&c);
    // What the CLI does on Ctrl-C: drop the exec future, which closes the connection.
    let task = tokio::spawn(async move {
        let mut w = w;
        let _ = c2
            .exec(
                req(&["sh", "-c", "sleep 300 & echo $!; wait"]),
                None::<&[u8]>,
                &mut w,
                &mut tokio::io::sink(),
            )
            .await;
    });
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(r));
    let pid: i32 = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    task.abort();
    let _ = task.await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(") ").next().and_then(|r| r.chars().next()));
        match state {
            None | Some('Z') => break,
            Some(s) => assert!(
                Instant::now() < deadline,
                "grandchild {pid} survived the cancel (state {s})"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_recovers_when_the_agent_restarts() {
    let mut agent = AgentProc::start().await;
    let c = agent.client();
    // Leaves idle connections in the client's pool.
    c.health().await.unwrap();
    c.exec_collect(req(&["true"])).await.unwrap();
    agent.restart().await;
    assert_eq!(c.health().await.unwrap().status, "ok");
    assert_eq!(
        c.exec_collect(req(&["echo", "again"]))
            .await
            .unwrap()
            .stdout,
        b"again\n"
    );
}
