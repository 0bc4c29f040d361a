//! File transfers against a hostile peer (issue 17): a guest that plants symlinks, sends
//! setuid modes, sparse or endless files, or never answers; an upload the agent refuses part
//! way; an upload whose tar ends before its body does.
#![allow(clippy::unwrap_used)]

mod common;

use std::future::Future;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use common::{AgentProc, path_str};
use vmsan_agent_client::{AgentClient, ClientError, Endpoint};

fn raw_tar_entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_entry_type(kind);
    h.set_mtime(0);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// A tar stream that holds back its end: after the archive (and `padding` zero bytes) it
/// waits `hold` before it reports end of stream, and notes when it did.
struct SlowEnd {
    data: std::io::Cursor<Vec<u8>>,
    hold: Option<Pin<Box<tokio::time::Sleep>>>,
    ended: Arc<AtomicBool>,
}

impl tokio::io::AsyncRead for SlowEnd {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let pos = usize::try_from(this.data.position()).unwrap();
        let rest = &this.data.get_ref()[pos..];
        if !rest.is_empty() {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.data.set_position((pos + n) as u64);
            return Poll::Ready(Ok(()));
        }
        if let Some(h) = &mut this.hold {
            std::task::ready!(h.as_mut().poll(cx));
            this.hold = None;
        }
        this.ended.store(true, Ordering::SeqCst);
        assert_eq!(buf.filled().len(), before);
        Poll::Ready(Ok(()))
    }
}

/// Item 19: the agent must read the whole request body before it answers. It used to answer
/// as soon as tar saw the first block of the end marker; the client was then still sending
/// (the second block, record padding, the end of the chunked body) and, depending on timing,
/// got `BrokenPipe` instead of the answer. Here the writer is slow on purpose: it holds its
/// end of stream back, so an answer before it is certain to be seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_answer_waits_for_the_end_of_the_body() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    for padding in [0usize, 8 << 20] {
        let mut v = Vec::new();
        raw_tar_entry(&mut v, "f.txt", tar::EntryType::Regular, b"hello");
        // End of archive, then record padding (what `tar -b` writes).
        v.resize(v.len() + 1024 + padding, 0);
        let ended = Arc::new(AtomicBool::new(false));
        let body = SlowEnd {
            data: std::io::Cursor::new(v),
            hold: Some(Box::pin(tokio::time::sleep(Duration::from_millis(500)))),
            ended: Arc::clone(&ended),
        };
        let dest = agent.dir.path().join(format!("up{padding}"));
        let r = c.upload_tar(body, &path_str(&dest)).await.unwrap();
        assert!(
            ended.load(Ordering::SeqCst),
            "the agent answered before the request body ended"
        );
        assert_eq!(r.entries, 1);
        assert_eq!(std::fs::read(dest.join("f.txt")).unwrap(), b"hello");
    }
    // The connection is still usable.
    assert_eq!(c.health().await.unwrap().status, "ok");
}

/// Items 19 and 7: an upload refused part way (`path_escape` on its third entry, with 8 MiB
/// still to come) gets the agent's refusal, not a broken pipe; and what the upload wrote
/// before the refused entry is removed, while what was there before stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upload_reports_the_refusal_and_removes_what_it_wrote() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let dest = agent.dir.path().join("up");
    std::fs::create_dir_all(dest.join("old")).unwrap();
    std::fs::write(dest.join("old/keep.txt"), b"keep").unwrap();
    let mut v = Vec::new();
    raw_tar_entry(&mut v, "newdir/", tar::EntryType::Directory, b"");
    raw_tar_entry(&mut v, "newdir/a.txt", tar::EntryType::Regular, b"a");
    raw_tar_entry(&mut v, "old/b.txt", tar::EntryType::Regular, b"b");
    {
        let mut h = tar::Header::new_gnu();
        h.set_path("link").unwrap();
        h.set_link_name("newdir/a.txt").unwrap();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_mtime(0);
        h.set_cksum();
        v.extend_from_slice(h.as_bytes());
    }
    let mut bad = Vec::new();
    raw_tar_entry(&mut bad, "x", tar::EntryType::Regular, b"x");
    // An escaping name written into the header's raw bytes (set_path refuses `..`).
    bad[..8].copy_from_slice(b"../evil\0");
    let mut h = tar::Header::from_byte_slice(&bad[..512]).clone();
    h.set_cksum();
    bad[..512].copy_from_slice(h.as_bytes());
    v.extend_from_slice(&bad);
    raw_tar_entry(&mut v, "big", tar::EntryType::Regular, &vec![7u8; 8 << 20]);
    v.extend_from_slice(&[0u8; 1024]);
    let err = c
        .upload_tar(std::io::Cursor::new(v), &path_str(&dest))
        .await
        .unwrap_err();
    assert_eq!(err.agent_code(), Some("path_escape"), "{err:?}");
    let mut left: Vec<String> = walk(&dest);
    left.sort();
    assert_eq!(
        left,
        ["old", "old/keep.txt"],
        "the failed upload left files"
    );
    assert!(!agent.dir.path().join("evil").exists());
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// Items 1 and 2 at the client: a symlink an earlier download created is replaced, never
/// written through; setuid/setgid/sticky are dropped and the umask applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_replaces_planted_symlinks_and_drops_special_bits() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let guest = agent.dir.path().join("guest/e");
    std::fs::create_dir_all(&guest).unwrap();
    let victim = agent.dir.path().join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&victim, guest.join("out.txt")).unwrap();
    std::os::unix::fs::symlink(agent.dir.path(), guest.join("up")).unwrap();
    let host = agent.dir.path().join("host");
    let d = c.download(&path_str(&guest), &host, None).await.unwrap();
    assert!(d.is_dir);
    assert_eq!(std::fs::read_link(host.join("out.txt")).unwrap(), victim);

    // The guest swaps the symlink for a setuid file and a directory through the other link.
    std::fs::remove_file(guest.join("out.txt")).unwrap();
    std::fs::write(guest.join("out.txt"), b"pwned").unwrap();
    std::fs::set_permissions(
        guest.join("out.txt"),
        std::fs::Permissions::from_mode(0o6777),
    )
    .unwrap();
    c.download(&path_str(&guest.join("out.txt")), &host, None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o7777, 0o644);
    let got = std::fs::symlink_metadata(host.join("out.txt")).unwrap();
    assert!(got.is_file());
    let umask = umask();
    assert_eq!(got.mode() & 0o7777, 0o777 & !umask);
    assert_eq!(std::fs::read(host.join("out.txt")).unwrap(), b"pwned");

    // The same through a directory download: `up` is a symlink on the host now; a guest
    // directory of that name must not be extracted through it.
    std::fs::remove_file(guest.join("up")).unwrap();
    std::fs::create_dir(guest.join("up")).unwrap();
    std::fs::write(guest.join("up/victim.txt"), b"pwned").unwrap();
    let err = c
        .download(&path_str(&guest), &host, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused(_)), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

    // Special bits from a directory download are dropped too; no temporary file stays.
    let g2 = agent.dir.path().join("guest/s");
    std::fs::create_dir_all(g2.join("sub")).unwrap();
    std::fs::write(g2.join("sub/suid"), b"x").unwrap();
    std::fs::set_permissions(g2.join("sub/suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(g2.join("sub"), std::fs::Permissions::from_mode(0o3777)).unwrap();
    let h2 = agent.dir.path().join("host2");
    c.download(&path_str(&g2), &h2, None).await.unwrap();
    assert_eq!(
        std::fs::metadata(h2.join("sub/suid")).unwrap().mode() & 0o7777,
        0o755 & !umask
    );
    assert_eq!(
        std::fs::metadata(h2.join("sub")).unwrap().mode() & 0o7777,
        0o777 & !umask
    );
    assert_eq!(walk(&h2).len(), 2, "{:?}", walk(&h2));
}

fn umask() -> u32 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let v = s.lines().find_map(|l| l.strip_prefix("Umask:")).unwrap();
    u32::from_str_radix(v.trim(), 8).unwrap()
}

/// Item 4: a 1 GiB file that is one hole with a few bytes of data downloads with about no
/// blocks, and quickly (the holes do not travel); over the limit it is refused and nothing
/// is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_download_keeps_holes_and_limits_apply() {
    let agent = AgentProc::start().await;
    let c = agent.client();
    let src = agent.dir.path().join("holey.bin");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(1 << 30).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(b"middle", 300 << 20).unwrap();
    f.write_all_at(b"end", (1 << 30) - 3).unwrap();
    drop(f);
    let back = agent.dir.path().join("back.bin");
    let t = std::time::Instant::now();
    let d = c.download(&path_str(&src), &back, None).await.unwrap();
    let took = t.elapsed();
    let m = std::fs::metadata(&back).unwrap();
    assert_eq!(m.len(), 1 << 30);
    assert!(
        m.blocks() * 512 <= 1 << 20,
        "{} blocks of 512 bytes",
        m.blocks()
    );
    assert_eq!(d.bytes, 1 << 30);
    assert!(d.transferred < 1 << 20, "{} bytes travelled", d.transferred);
    let g = std::fs::File::open(&back).unwrap();
    for (want, off) in [
        (&b"start"[..], 0u64),
        (b"middle", 300 << 20),
        (b"end", (1 << 30) - 3),
    ] {
        let mut b = vec![0u8; want.len()];
        g.read_exact_at(&mut b, off).unwrap();
        assert_eq!(b, want);
    }
    println!(
        "1 GiB sparse file downloaded in {took:?}, {} bytes on the wire",
        d.transferred
    );

    let limited = agent.dir.path().join("limited.bin");
    let err = c
        .download_limited(&path_str(&src), &limited, 1 << 29, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::TooLarge { limit, .. } if limit == 1 << 29),
        "{err}"
    );
    assert!(!limited.exists());
    // A directory holding it: the sum of its files counts.
    let dir = agent.dir.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::rename(&src, dir.join("holey.bin")).unwrap();
    let err = c
        .download_limited(&path_str(&dir), &agent.dir.path().join("dd"), 1 << 29, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::TooLarge { .. }), "{err}");
    assert!(!agent.dir.path().join("dd/holey.bin").exists());
    // Within the limit, the directory download (a dense tar stream) keeps the holes too.
    let dd = agent.dir.path().join("dd");
    c.download(&path_str(&dir), &dd, None).await.unwrap();
    let m = std::fs::metadata(dd.join("holey.bin")).unwrap();
    assert_eq!(m.len(), 1 << 30);
    assert!(
        m.blocks() * 512 <= 1 << 20,
        "{} blocks of 512 bytes",
        m.blocks()
    );
}

/// Item 3: a "guest" that accepts connections and never answers. Every kind of call fails
/// within the idle timeout with a timeout error naming the operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_times_out_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (s, _) = listener.accept().await.unwrap();
            // Read nothing, answer nothing, keep the connection open.
            held.push(s);
        }
    });
    let c = AgentClient::new(Endpoint::Unix(sock), "t").with_idle_timeout(Duration::from_secs(1));
    let local = dir.path().join("out.bin");
    let t = std::time::Instant::now();
    let e = c.download("/etc/hostname", &local, None).await.unwrap_err();
    assert!(
        matches!(&e, ClientError::Timeout { what, .. } if what.contains("download /etc/hostname")),
        "{e}"
    );
    let e = c.stat("/x").await.unwrap_err();
    assert!(matches!(&e, ClientError::Timeout { .. }), "{e}");
    let e = c
        .exec_collect(vmsan_proto::ExecRequest {
            argv: vec!["true".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(&e, ClientError::Timeout { .. }), "{e}");
    let e = c.pty_attach("0123456789abcdef").await.err().unwrap();
    assert!(matches!(&e, ClientError::Timeout { .. }), "{e}");
    // An upload larger than the socket buffers: the agent never reads it.
    let big = dir.path().join("big");
    std::fs::write(&big, vec![1u8; 16 << 20]).unwrap();
    let e = c.upload(&[big], "/tmp", None).await.unwrap_err();
    assert!(matches!(&e, ClientError::Timeout { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(!local.exists());
    server.abort();
}

/// A one-shot "agent" on a Unix socket that reads a request head and answers with `answer`,
/// then closes: a guest that lies or stops half way.
async fn lying_agent(sock: &Path, answer: Vec<u8>) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::UnixListener::bind(sock).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut b).await.unwrap();
            if n == 0 {
                return;
            }
            head.extend_from_slice(&b[..n]);
        }
        let _ = s.write_all(&answer).await;
        let _ = s.shutdown().await;
    })
}

/// Item 7: a download cut short (the guest announces 100000 bytes, sends 10 and closes) fails
/// and leaves nothing under the final name, nor a temporary file; an extents answer whose
/// records overlap or pass the announced size is refused the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_short_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("cut short", {
            let mut a = b"HTTP/1.1 200 OK\r\nx-vmsan-kind: file\r\nx-vmsan-mode: 644\r\n\
                          content-length: 100000\r\n\r\n"
                .to_vec();
            a.extend_from_slice(b"0123456789");
            a
        }),
        ("extents past the size", {
            let mut body = vmsan_proto::extent_header(90, 20).to_vec();
            body.extend_from_slice(&[1u8; 20]);
            let mut a = format!(
                "HTTP/1.1 200 OK\r\nx-vmsan-kind: file\r\nx-vmsan-mode: 644\r\n\
                 x-vmsan-layout: extents\r\nx-vmsan-size: 100\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            a.extend_from_slice(&body);
            a
        }),
    ];
    for (i, (what, answer)) in cases.into_iter().enumerate() {
        let sock = dir.path().join(format!("agent{i}.sock"));
        let server = lying_agent(&sock, answer).await;
        let c = AgentClient::new(Endpoint::Unix(sock), "t");
        let target = out.join("file.bin");
        let e = c.download("/data/file.bin", &target, None).await;
        assert!(e.is_err(), "{what}: the download succeeded");
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
        assert!(left.is_empty(), "{what}: left {left:?}");
        server.await.unwrap();
    }
}
