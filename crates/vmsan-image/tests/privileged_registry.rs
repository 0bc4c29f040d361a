//! Pulls from a real `docker-registry` on loopback, serving images built by the tests.
//! Root is needed: the merge reproduces ownership.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;
use vmsan_image::{
    Compression, Error, FsType, ImageStore, Limits, Platform, PullOptions, PullPolicy,
};

fn opts() -> PullOptions {
    PullOptions {
        docker_config: Some("/nonexistent/config.json".into()),
        ..Default::default()
    }
}

fn skip() -> bool {
    if !is_root() {
        vmsan_testkit::skip!("needs root (the merge reproduces file ownership)");
        return true;
    }
    if !have("unsquashfs") || !have("mksquashfs") {
        vmsan_testkit::skip!("squashfs-tools is not installed");
        return true;
    }
    false
}

/// Base, whiteouts + opaque dir + links, a large file, an uncompressed layer.
fn layers() -> Vec<(Vec<u8>, &'static str)> {
    let l1 = Layer::new()
        .dir("etc", 0o755, 0, 0)
        .file(
            "etc/passwd",
            b"root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
            0o644,
            0,
            0,
        )
        .dir("usr", 0o755, 0, 0)
        .dir("usr/bin", 0o755, 0, 0)
        .file("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755, 0, 0)
        .file("usr/bin/su", b"setuid", 0o4755, 0, 0)
        .dir("data", 0o755, 0, 0)
        .file("data/a", b"a", 0o644, 0, 0)
        .file("data/b", b"b", 0o600, 2, 3)
        .dir("opaque", 0o755, 0, 0)
        .file("opaque/old1", b"old", 0o644, 0, 0)
        .dir("opaque/sub", 0o755, 0, 0)
        .file("opaque/sub/old2", b"old", 0o644, 0, 0)
        .file("gone.txt", b"bye", 0o644, 0, 0)
        .dir("home", 0o755, 0, 0)
        .dir("home/user", 0o700, 1000, 1000)
        .file("home/user/.profile", b"export X=1\n", 0o640, 1000, 1000)
        .gz();
    let l2 = Layer::new()
        .whiteout("", "gone.txt")
        .whiteout("data", "a")
        .dir("opaque", 0o755, 0, 0)
        .opaque("opaque")
        .file("opaque/new", b"new", 0o644, 0, 0)
        .hardlink("usr/bin/tool-link", "usr/bin/tool")
        .symlink("bin", "usr/bin")
        .symlink("etc/mtab", "/proc/self/mounts")
        .gz();
    let l3 = Layer::new()
        .dir("big", 0o755, 0, 0)
        .file("big/blob", &noise(24 << 20, 7), 0o644, 0, 0)
        .dir("data", 0o750, 0, 0)
        .gz();
    let l4 = Layer::new()
        .file("etc/hostname", b"vm\n", 0o644, 0, 0)
        .file("nobody-file", b"n", 0o600, 65534, 65534)
        .tar();
    vec![(l1, GZ), (l2, GZ), (l3, GZ), (l4, TAR)]
}

fn config() -> serde_json::Value {
    serde_json::json!({"config": {"Env": ["PATH=/usr/bin", "A=1"], "WorkingDir": "/home/user", "User": "1000:1000", "Entrypoint": ["/usr/bin/tool"], "Cmd": ["--x"]}})
}

fn check_tree(img: &std::path::Path) {
    let m = unsquashfs_list(img);
    let get = |p: &str| {
        m.get(p)
            .unwrap_or_else(|| panic!("{p} missing from {m:#?}"))
            .clone()
    };
    assert!(!m.contains_key("/gone.txt"), "whiteout removed gone.txt");
    assert!(!m.contains_key("/data/a"), "whiteout removed data/a");
    assert_eq!(get("/data/b").owner, "2/3");
    assert_eq!(get("/data/b").mode, "-rw-------");
    assert_eq!(
        get("/data").mode,
        "drwxr-x---",
        "later layer changed the mode"
    );
    assert!(
        !m.contains_key("/opaque/old1") && !m.contains_key("/opaque/sub"),
        "opaque dir hid lower content"
    );
    assert_eq!(get("/opaque/new").size, 3);
    assert_eq!(get("/usr/bin/su").mode, "-rwsr-xr-x");
    assert_eq!(get("/home/user").mode, "drwx------");
    assert_eq!(get("/home/user").owner, "1000/1000");
    assert_eq!(get("/home/user/.profile").owner, "1000/1000");
    assert_eq!(get("/home/user/.profile").mode, "-rw-r-----");
    assert_eq!(get("/bin").target.as_deref(), Some("usr/bin"));
    assert_eq!(
        get("/etc/mtab").target.as_deref(),
        Some("/proc/self/mounts")
    );
    assert_eq!(get("/big/blob").size, 24 << 20);
    assert_eq!(get("/nobody-file").owner, "65534/65534");
    assert_eq!(get("/usr/bin/tool-link").size, get("/usr/bin/tool").size);
    // Hard link: same inode after extraction.
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("x");
    let st = Command::new("unsquashfs")
        .arg("-q")
        .arg("-d")
        .arg(&out)
        .arg(img)
        .output()
        .unwrap();
    assert!(st.status.success());
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(out.join("usr/bin/tool")).unwrap();
    let b = std::fs::metadata(out.join("usr/bin/tool-link")).unwrap();
    assert_eq!(a.ino(), b.ino(), "tool-link is a hard link");
    assert_eq!(a.nlink(), 2);
    assert_eq!(
        std::fs::read(out.join("big/blob")).unwrap(),
        noise(24 << 20, 7)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_pull_merges_layers_exactly() {
    if skip() {
        return;
    }
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let (digest, _) = reg
        .push_image("test/merge", "v1", "amd64", config(), &layers())
        .await;
    let home = tempfile::tempdir().unwrap();
    let store = ImageStore::open(home.path()).unwrap();
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let ev2 = events.clone();
    let mut o = opts();
    o.progress = Some(std::sync::Arc::new(move |e: &vmsan_image::Progress| {
        ev2.lock().unwrap().push(e.clone());
    }));
    let name = format!("{}/test/merge:v1", reg.addr);
    let t0 = std::time::Instant::now();
    let img = store.pull(&name, &o).await.unwrap();
    eprintln!("cold pull+build: {:?}", t0.elapsed());
    assert_eq!(img.record.digest.to_string(), digest);
    assert_eq!(img.record.fs_type, FsType::Squashfs);
    assert_eq!(img.config.working_dir.as_deref(), Some("/home/user"));
    assert_eq!(img.config.user.as_deref(), Some("1000:1000"));
    assert_eq!(img.config.env, vec!["PATH=/usr/bin", "A=1"]);
    assert_eq!(img.config.entrypoint, vec!["/usr/bin/tool"]);
    assert_eq!(img.config.cmd, vec!["--x"]);
    assert!(img.rootfs.starts_with(home.path().join("images/built")));
    check_tree(&img.rootfs);
    let evs = events.lock().unwrap().clone();
    assert!(
        evs.iter()
            .any(|e| matches!(e, vmsan_image::Progress::LayerDone { cached: false, .. }))
    );
    assert!(matches!(
        evs.last(),
        Some(vmsan_image::Progress::Done { cached: false, .. })
    ));
    // Blobs are content-addressed and verified.
    for l in &img.record.layers {
        let b = std::fs::read(store.blob_path(l)).unwrap();
        assert_eq!(sha(&b), l.to_string());
    }
    // Warm: no network, no build.
    drop(reg);
    let t0 = std::time::Instant::now();
    let again = store.pull(&name, &o).await.unwrap();
    let warm = t0.elapsed();
    eprintln!("warm: {warm:?}");
    assert_eq!(again.rootfs, img.rootfs);
    assert!(
        warm < std::time::Duration::from_millis(500),
        "warm pull took {warm:?}"
    );
    let never = PullOptions {
        policy: PullPolicy::Never,
        ..opts()
    };
    assert!(store.pull(&name, &never).await.is_ok());
    assert!(matches!(
        store.pull(&format!("{name}-other"), &never).await,
        Err(Error::NotFound(..))
    ));
    // List / remove / prune.
    let ls = store.list().unwrap();
    assert_eq!(ls.len(), 1);
    assert_eq!(ls[0].names, vec![name.clone()]);
    assert!(ls[0].size > 0);
    store.remove(&name).unwrap();
    assert!(store.list().unwrap().is_empty());
    let pr = store.prune().unwrap();
    assert!(pr.blobs >= 4, "{pr:?}");
    assert_eq!(
        std::fs::read_dir(store.dir().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

/// An LZ4 pull is built while the layers stream in (the same merge, LZ4 blocks; the 24 MiB
/// noise file goes in stored blocks); with the registry gone, the zstd build of the same
/// manifest is made from the cached layers, and each compression keeps its own build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_pull_lz4_streams_and_the_zstd_build_comes_from_the_cache() {
    if skip() {
        return;
    }
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let (digest, _) = reg
        .push_image("test/lz4", "v1", "amd64", config(), &layers())
        .await;
    let home = tempfile::tempdir().unwrap();
    let store = ImageStore::open(home.path()).unwrap();
    let with = |c: Compression, policy: PullPolicy| {
        let mut o = opts();
        o.build.compression = c;
        o.policy = policy;
        o
    };
    let sb = |p: &std::path::Path| {
        let b = std::fs::read(p).unwrap();
        u16::from_le_bytes([b[20], b[21]])
    };
    let name = format!("{}/test/lz4:v1", reg.addr);
    let lz4 = store
        .pull(&name, &with(Compression::Lz4, PullPolicy::Missing))
        .await
        .unwrap();
    assert_eq!(lz4.record.digest.to_string(), digest);
    assert_eq!(lz4.record.compression, Some(Compression::Lz4));
    assert_eq!(sb(&lz4.rootfs), 5);
    check_tree(&lz4.rootfs);
    drop(reg);
    let zstd = store
        .pull(&name, &with(Compression::Zstd, PullPolicy::Never))
        .await
        .unwrap();
    assert_eq!(zstd.record.digest, lz4.record.digest);
    assert_ne!(zstd.rootfs, lz4.rootfs);
    assert_eq!(sb(&zstd.rootfs), 6);
    check_tree(&zstd.rootfs);
    eprintln!(
        "registry test image: zstd {} bytes, lz4 {} bytes",
        zstd.record.size, lz4.record.size
    );
    let again = store
        .pull(&name, &with(Compression::Lz4, PullPolicy::Never))
        .await
        .unwrap();
    assert_eq!(again.rootfs, lz4.rootfs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_pull_ext4_checked_with_e2fsck_and_debugfs() {
    if skip() || !have("debugfs") {
        return;
    }
    let Some(reg) = Registry::start(false) else {
        return;
    };
    reg.push_image("test/ext4", "v1", "amd64", config(), &layers())
        .await;
    let home = tempfile::tempdir().unwrap();
    let store = ImageStore::open(home.path()).unwrap();
    let mut o = opts();
    o.build.fs_type = FsType::Ext4;
    let img = store
        .pull(&format!("{}/test/ext4:v1", reg.addr), &o)
        .await
        .unwrap();
    assert!(img.rootfs.ends_with("rootfs.ext4"));
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&img.rootfs)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let stat = |p: &str| {
        let o = Command::new("debugfs")
            .arg("-R")
            .arg(format!("stat {p}"))
            .arg(&img.rootfs)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let su = stat("/usr/bin/su");
    assert!(su.contains("Mode:  04755"), "{su}");
    let home_user = stat("/home/user");
    assert!(
        home_user.contains("User:  1000")
            && home_user.contains("Group:  1000")
            && home_user.contains("Mode:  0700"),
        "{home_user}"
    );
    assert!(stat("/gone.txt").is_empty() || !stat("/gone.txt").contains("Inode:"));
    let tool = stat("/usr/bin/tool");
    assert!(tool.contains("Links: 2"), "{tool}");
    let ls = Command::new("debugfs")
        .arg("-R")
        .arg("ls -l /opaque")
        .arg(&img.rootfs)
        .output()
        .unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.contains("new") && !ls.contains("old1") && !ls.contains("sub"),
        "{ls}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_multi_platform_index_and_basic_auth() {
    if skip() || !have("htpasswd") {
        return;
    }
    let Some(reg) = Registry::start(true) else {
        return;
    };
    let amd = Layer::new().file("arch", b"amd64", 0o644, 0, 0).gz();
    let arm = Layer::new().file("arch", b"arm64", 0o644, 0, 0).gz();
    let (da, ma) = reg
        .push_image(
            "test/multi",
            "amd64-only",
            "amd64",
            serde_json::json!({}),
            &[(amd, GZ)],
        )
        .await;
    let (dr, mr) = reg
        .push_image(
            "test/multi",
            "arm64-only",
            "arm64",
            serde_json::json!({}),
            &[(arm, GZ)],
        )
        .await;
    let idx = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": dr, "size": mr.len(), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": da, "size": ma.len(), "platform": {"os": "linux", "architecture": "amd64"}}
        ]
    });
    reg.push_manifest(
        "test/multi",
        "latest",
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&idx).unwrap(),
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let store = ImageStore::open(home.path()).unwrap();
    let name = format!("{}/test/multi", reg.addr);
    // No credentials: a clear authentication error, nothing stored.
    let e = store.pull(&name, &opts()).await.unwrap_err();
    assert!(matches!(e, Error::Auth { .. }), "{e}");
    assert!(e.to_string().contains("docker login"), "{e}");
    assert!(store.list().unwrap().is_empty());
    // Credentials from a Docker config file.
    let cfg = home.path().join("docker-config.json");
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("tester:s3cret");
    std::fs::write(
        &cfg,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let mut o = opts();
    o.docker_config = Some(cfg.clone());
    o.platform = Some(Platform::parse("linux/amd64").unwrap());
    let img = store.pull(&name, &o).await.unwrap();
    assert_eq!(img.record.digest.to_string(), da, "amd64 manifest selected");
    o.platform = Some(Platform::parse("linux/arm64").unwrap());
    o.policy = PullPolicy::Always;
    let img2 = store.pull(&name, &o).await.unwrap();
    assert_eq!(
        img2.record.digest.to_string(),
        dr,
        "arm64 manifest selected"
    );
    let t = tempfile::tempdir().unwrap();
    let st = Command::new("unsquashfs")
        .arg("-q")
        .arg("-d")
        .arg(t.path().join("x"))
        .arg(&img2.rootfs)
        .output()
        .unwrap();
    assert!(st.status.success());
    assert_eq!(std::fs::read(t.path().join("x/arch")).unwrap(), b"arm64");
    o.platform = Some(Platform::parse("linux/s390x").unwrap());
    let e = store.pull(&name, &o).await.unwrap_err();
    assert!(
        e.to_string().contains("linux/arm64/v8") && e.to_string().contains("linux/amd64"),
        "{e}"
    );
    // Wrong password.
    std::fs::write(
        &cfg,
        format!(
            r#"{{"auths":{{"{}":{{"username":"tester","password":"nope"}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    let e = store.pull(&name, &o).await.unwrap_err();
    assert!(matches!(e, Error::Auth { .. }), "{e}");
}

/// Nothing half-written: no build dirs, no partial blobs, no names for a failed pull.
fn assert_clean(store: &ImageStore) {
    let tmp: Vec<_> = std::fs::read_dir(store.dir().join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(tmp.is_empty(), "left in tmp: {tmp:?}");
    assert_eq!(
        std::fs::read_dir(store.dir().join("built"))
            .unwrap()
            .count(),
        0
    );
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_rejects_unsafe_layers_and_corrupt_blobs() {
    if skip() {
        return;
    }
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let store = ImageStore::open(home.path()).unwrap();
    let marker = format!("vmsan-image-escape-{}", std::process::id());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            Layer::new().raw_file("../escaped", b"x").tar(),
            "`..`",
        ),
        (
            "absolute",
            Layer::new().raw_file("/etc/vmsan-escaped", b"x").tar(),
            "absolute",
        ),
        (
            "symlink",
            Layer::new()
                .symlink("esc", "/tmp")
                .file(&format!("esc/{marker}"), b"x", 0o644, 0, 0)
                .tar(),
            "symlink escape",
        ),
        (
            "symlink-rel",
            Layer::new()
                .dir("a", 0o755, 0, 0)
                .symlink("a/up", "../../../../tmp")
                .file(&format!("a/up/{marker}"), b"x", 0o644, 0, 0)
                .tar(),
            "symlink escape",
        ),
        (
            "hardlink-out",
            Layer::new().hardlink("h", "../../etc/passwd").tar(),
            "hard link target",
        ),
    ];
    for (name, layer, want) in cases {
        reg.push_image(
            &format!("bad/{name}"),
            "v1",
            "amd64",
            serde_json::json!({}),
            &[(layer, TAR)],
        )
        .await;
        let e = store
            .pull(&format!("{}/bad/{name}:v1", reg.addr), &opts())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::UnsafeEntry { .. }), "{name}: {e}");
        assert!(e.to_string().contains(want), "{name}: {e}");
        assert_clean(&store);
    }
    assert!(
        !std::path::Path::new("/tmp").join(&marker).exists(),
        "nothing escaped"
    );
    assert!(!std::path::Path::new("/etc/vmsan-escaped").exists());

    // Decompression bomb: 128 MiB of zeros in a small gzip, against a 32 MiB limit.
    let mut bomb = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(128 << 20);
    h.set_mode(0o644);
    bomb.append_data(
        &mut h,
        "zeros",
        std::io::Read::take(std::io::repeat(0), 128 << 20),
    )
    .unwrap();
    let bomb = {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&bomb.into_inner().unwrap()).unwrap();
        e.finish().unwrap()
    };
    assert!(bomb.len() < 2 << 20);
    reg.push_image(
        "bad/bomb",
        "v1",
        "amd64",
        serde_json::json!({}),
        &[(bomb, GZ)],
    )
    .await;
    let mut o = opts();
    o.limits = Limits {
        max_bytes: 32 << 20,
        ..Limits::default()
    };
    let e = store
        .pull(&format!("{}/bad/bomb:v1", reg.addr), &o)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
    assert_clean(&store);
    // Entry-count bomb.
    let mut many = Layer::new();
    for i in 0..300 {
        many = many.file(&format!("f{i}"), b"", 0o644, 0, 0);
    }
    reg.push_image(
        "bad/many",
        "v1",
        "amd64",
        serde_json::json!({}),
        &[(many.gz(), GZ)],
    )
    .await;
    o.limits = Limits {
        max_entries: 100,
        ..Limits::default()
    };
    let e = store
        .pull(&format!("{}/bad/many:v1", reg.addr), &o)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("more than 100 entries"), "{e}");
    assert_clean(&store);

    // Digest mismatch: corrupt the blob in the registry's storage (same length).
    let good = Layer::new().file("f", &noise(1 << 20, 3), 0o644, 0, 0).gz();
    let (_, mb) = reg
        .push_image(
            "bad/corrupt",
            "v1",
            "amd64",
            serde_json::json!({}),
            &[(good.clone(), GZ)],
        )
        .await;
    let m: serde_json::Value = serde_json::from_slice(&mb).unwrap();
    let ld = m["layers"][0]["digest"].as_str().unwrap().to_owned();
    let f = reg.blob_file(&ld);
    let mut bytes = std::fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&f, &bytes).unwrap();
    let e = store
        .pull(&format!("{}/bad/corrupt:v1", reg.addr), &opts())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert_clean(&store);
    assert!(
        !store
            .blob_path(&vmsan_image::Digest::parse(&ld).unwrap())
            .exists()
    );

    // Truncated blob: the registry serves fewer bytes than the manifest says.
    let (_, mb) = reg
        .push_image(
            "bad/trunc",
            "v1",
            "amd64",
            serde_json::json!({}),
            &[(
                Layer::new().file("g", &noise(1 << 20, 5), 0o644, 0, 0).gz(),
                GZ,
            )],
        )
        .await;
    let m: serde_json::Value = serde_json::from_slice(&mb).unwrap();
    let ld = m["layers"][0]["digest"].as_str().unwrap().to_owned();
    let f = reg.blob_file(&ld);
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let mut o = opts();
    o.retries = 1;
    let e = store
        .pull(&format!("{}/bad/trunc:v1", reg.addr), &o)
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::SizeMismatch { .. } | Error::Http { .. }),
        "{e}"
    );
    assert_clean(&store);

    // A corrupt byte after the end of a zstd frame: the layer reader finishes before it, but
    // nothing is built from a blob whose digest does not match.
    let mut zst = zstd::bulk::compress(
        &Layer::new()
            .file("z", &noise(1 << 20, 9), 0o644, 0, 0)
            .tar(),
        1,
    )
    .unwrap();
    zst.extend_from_slice(&[0u8; 64]);
    let (_, mb) = reg
        .push_image(
            "bad/zstd-tail",
            "v1",
            "amd64",
            serde_json::json!({}),
            &[(zst, "application/vnd.oci.image.layer.v1.tar+zstd")],
        )
        .await;
    let m: serde_json::Value = serde_json::from_slice(&mb).unwrap();
    let f = reg.blob_file(m["layers"][0]["digest"].as_str().unwrap());
    let mut bytes = std::fs::read(&f).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&f, &bytes).unwrap();
    let e = store
        .pull(&format!("{}/bad/zstd-tail:v1", reg.addr), &opts())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert_clean(&store);

    // Unknown transport, bad grammar, unknown tag.
    for (src, kind) in [
        ("weird:/x", "transport"),
        ("ftp://h/x", "transport"),
        ("lower/UPPER", "reference"),
        ("a//b", "reference"),
        ("img:", "reference"),
    ] {
        let e = store.pull(src, &opts()).await.unwrap_err();
        assert!(e.to_string().contains(kind), "{src}: {e}");
    }
    let e = store
        .pull(&format!("{}/bad/none:v9", reg.addr), &opts())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(..)), "{e}");
    assert_clean(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_bearer_token_flow() {
    if skip() {
        return;
    }
    let Some(reg) = Registry::start_with_token_auth("test/bearer") else {
        return;
    };
    let (digest, _) = reg
        .push_image(
            "test/bearer",
            "v1",
            "amd64",
            serde_json::json!({}),
            &[(Layer::new().file("tok", b"ok", 0o644, 0, 0).gz(), GZ)],
        )
        .await;
    let home = tempfile::tempdir().unwrap();
    let store = ImageStore::open(home.path()).unwrap();
    // Anonymous: the registry challenges with Bearer, the client fetches a token from the
    // realm and retries.
    let img = store
        .pull(&format!("{}/test/bearer:v1", reg.addr), &opts())
        .await
        .unwrap();
    assert_eq!(img.record.digest.to_string(), digest);
    assert!(unsquashfs_list(&img.rootfs).contains_key("/tok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_concurrent_pulls_share_one_download() {
    if skip() {
        return;
    }
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let l = Layer::new()
        .file("c", &noise(4 << 20, 11), 0o644, 0, 0)
        .gz();
    let (digest, _) = reg
        .push_image(
            "test/conc",
            "v1",
            "amd64",
            serde_json::json!({}),
            &[(l, GZ)],
        )
        .await;
    let home = tempfile::tempdir().unwrap();
    let a = ImageStore::open(home.path()).unwrap();
    let b = ImageStore::open(home.path()).unwrap();
    let name = format!("{}/test/conc:v1", reg.addr);
    let (o1, o2) = (opts(), opts());
    let (x, y) = tokio::join!(a.pull(&name, &o1), b.pull(&name, &o2));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.record.digest.to_string(), digest);
    assert_eq!(x.rootfs, y.rootfs);
    assert_eq!(a.list().unwrap().len(), 1);
    assert_eq!(std::fs::read_dir(a.dir().join("tmp")).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_interrupted_download_resumes_with_range() {
    if skip() {
        return;
    }
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let layer = Layer::new()
        .file("r", &noise(3 << 20, 13), 0o644, 0, 0)
        .gz();
    let (_, mb) = reg
        .push_image(
            "test/resume",
            "v1",
            "amd64",
            serde_json::json!({}),
            &[(layer.clone(), GZ)],
        )
        .await;
    let m: serde_json::Value = serde_json::from_slice(&mb).unwrap();
    let ld = vmsan_image::Digest::parse(m["layers"][0]["digest"].as_str().unwrap()).unwrap();
    let home = tempfile::tempdir().unwrap();
    let store = ImageStore::open(home.path()).unwrap();
    let partial = store
        .dir()
        .join("tmp")
        .join(format!("{}.partial", ld.hex()));
    let name = format!("{}/test/resume:v1", reg.addr);
    // A partial whose bytes are wrong: if the client resumes (Range) instead of starting over,
    // the digest cannot match. It must fail, and drop the bad partial.
    std::fs::write(&partial, vec![0u8; layer.len() / 2]).unwrap();
    let e = store.pull(&name, &opts()).await.unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert!(!partial.exists());
    // A correct first half: the download resumes and completes.
    std::fs::write(&partial, &layer[..layer.len() / 2]).unwrap();
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let ev2 = events.clone();
    let mut o = opts();
    o.progress = Some(std::sync::Arc::new(move |e: &vmsan_image::Progress| {
        ev2.lock().unwrap().push(e.clone());
    }));
    let img = store.pull(&name, &o).await.unwrap();
    assert!(unsquashfs_list(&img.rootfs).contains_key("/r"));
    let resumed_at = events.lock().unwrap().iter().find_map(|e| match e {
        vmsan_image::Progress::LayerStart { offset, .. } => Some(*offset),
        _ => None,
    });
    assert_eq!(resumed_at, Some((layer.len() / 2) as u64));
    assert_eq!(std::fs::read(store.blob_path(&ld)).unwrap(), layer);
}

/// `security.capability` (v2: effective, CAP_NET_BIND_SERVICE permitted).
const CAP_NET_BIND: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_xattrs_are_kept_in_the_built_image() {
    if skip() {
        return;
    }
    if !have("getfattr") {
        vmsan_testkit::skip!("getfattr is not installed (apt-get install attr)");
        return;
    }
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let l1 = Layer::new()
        .dir("usr", 0o755, 0, 0)
        .dir("usr/bin", 0o755, 0, 0)
        .file_with_xattrs(
            "usr/bin/ping",
            b"#!/bin/sh\n",
            0o755,
            &[
                ("security.capability", &CAP_NET_BIND),
                ("user.origin", b"layer1"),
            ],
        )
        .file_with_xattrs("usr/bin/old", b"old", 0o755, &[("user.origin", b"layer1")])
        .gz();
    // A later layer replaces `old`: its xattrs go with it.
    let l2 = Layer::new()
        .file_with_xattrs("usr/bin/old", b"new", 0o755, &[("user.origin", b"layer2")])
        .file("usr/bin/plain", b"p", 0o755, 0, 0)
        .gz();
    reg.push_image(
        "test/xattr",
        "v1",
        "amd64",
        serde_json::json!({}),
        &[(l1, GZ), (l2, GZ)],
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let store = ImageStore::open(home.path()).unwrap();
    let name = format!("{}/test/xattr:v1", reg.addr);
    let img = store.pull(&name, &opts()).await.unwrap();
    let t = tempfile::tempdir().unwrap();
    let x = t.path().join("x");
    let out = Command::new("unsquashfs")
        .arg("-q")
        .arg("-d")
        .arg(&x)
        .arg(&img.rootfs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let attrs = |p: &str| {
        let o = Command::new("getfattr")
            .args(["--absolute-names", "-d", "-m", "-", "-e", "hex"])
            .arg(x.join(p))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let ping = attrs("usr/bin/ping");
    assert!(
        ping.contains(&format!(
            "security.capability=0x{}",
            hex::encode(CAP_NET_BIND)
        )),
        "{ping}"
    );
    assert!(
        ping.contains(&format!("user.origin=0x{}", hex::encode(b"layer1"))),
        "{ping}"
    );
    let old = attrs("usr/bin/old");
    assert!(
        old.contains(&format!("user.origin=0x{}", hex::encode(b"layer2"))),
        "{old}"
    );
    assert!(
        !attrs("usr/bin/plain").contains("user."),
        "no xattrs on plain"
    );
    // ext4: the on-disk merge sets them on the staging tree, and `mkfs.ext4 -d` copies them.
    if have("debugfs") {
        let mut o = opts();
        o.build.fs_type = FsType::Ext4;
        let home = tempfile::tempdir().unwrap();
        let store = ImageStore::open(home.path()).unwrap();
        let img = store.pull(&name, &o).await.unwrap();
        let ea = |p: &str| {
            let out = Command::new("debugfs")
                .arg("-R")
                .arg(format!("ea_list {p}"))
                .arg(&img.rootfs)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let ping = ea("/usr/bin/ping");
        eprintln!("ext4 xattrs of /usr/bin/ping: {ping}");
        assert!(
            ping.contains("security.capability") && ping.contains("user.origin"),
            "{ping}"
        );
        let old = ea("/usr/bin/old");
        assert!(old.contains("layer2"), "{old}");
    }
}

/// Run from the test below in a child process (this test binary again, with the helper on
/// its PATH): pull with the given Docker config, expecting success or an auth error.
async fn helper_child(name: &str) {
    let cfg = std::env::var_os("VMSAN_TEST_DOCKER_CONFIG").unwrap();
    let expect = std::env::var("VMSAN_TEST_EXPECT").unwrap();
    let home = tempfile::tempdir().unwrap();
    let store = ImageStore::open(home.path()).unwrap();
    let o = PullOptions {
        docker_config: Some(cfg.into()),
        ..Default::default()
    };
    let res = store.pull(name, &o).await;
    match expect.as_str() {
        "ok" => {
            let img = res.unwrap();
            assert!(unsquashfs_list(&img.rootfs).contains_key("/helped"));
        }
        _ => {
            let e = res.unwrap_err();
            assert!(matches!(e, Error::Auth { .. }), "{e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_credential_helpers_from_the_docker_config() {
    const TEST: &str = "privileged_credential_helpers_from_the_docker_config";
    if let Ok(name) = std::env::var("VMSAN_TEST_HELPER_CHILD") {
        helper_child(&name).await;
        return;
    }
    if skip() || !have("htpasswd") {
        return;
    }
    let Some(reg) = Registry::start(true) else {
        return;
    };
    reg.push_image(
        "test/helper",
        "v1",
        "amd64",
        serde_json::json!({}),
        &[(Layer::new().file("helped", b"ok", 0o644, 0, 0).gz(), GZ)],
    )
    .await;
    let name = format!("{}/test/helper:v1", reg.addr);
    let t = tempfile::tempdir().unwrap();
    let bin = t.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = t.path().join("calls.log");
    let secret = t.path().join("secret");
    // The helper protocol: `get` as the argument, the server on stdin, JSON on stdout.
    let script = format!(
        "#!/bin/sh\nread -r server\necho \"$1 $server\" >> {log}\nif [ \"$1\" = get ] && [ \"$server\" = {addr} ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"tester\",\"Secret\":\"%s\"}}\\n' \"$server\" \"$(cat {secret})\"\n  exit 0\nfi\necho 'credentials not found in native keychain'\nexit 1\n",
        log = log.display(),
        addr = reg.addr,
        secret = secret.display()
    );
    let helper = bin.join("docker-credential-vmsantest");
    std::fs::write(&helper, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cfg = t.path().join("config.json");
    let run = |config: String, secret_value: &str, expect: &str| {
        std::fs::write(&cfg, config).unwrap();
        std::fs::write(&secret, secret_value).unwrap();
        let out = Command::new(std::env::current_exe().unwrap())
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env("PATH", &path)
            .env("VMSAN_TEST_HELPER_CHILD", &name)
            .env("VMSAN_TEST_DOCKER_CONFIG", &cfg)
            .env("VMSAN_TEST_EXPECT", expect)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "child pull ({expect}) failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // credHelpers names the helper for this registry.
    run(
        format!(r#"{{"credHelpers":{{"{}":"vmsantest"}}}}"#, reg.addr),
        "s3cret",
        "ok",
    );
    // credsStore is the helper for every registry.
    run(r#"{"credsStore":"vmsantest"}"#.to_owned(), "s3cret", "ok");
    // The helper's credentials are refused: an authentication error.
    run(r#"{"credsStore":"vmsantest"}"#.to_owned(), "wrong", "auth");
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        calls
            .lines()
            .filter(|l| *l == format!("get {}", reg.addr))
            .count(),
        3,
        "{calls}"
    );
}

/// Unmounts (which also frees the loop device `mount -o loop` set up) when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_built_squashfs_mounts_in_the_kernel() {
    if skip() {
        return;
    }
    if !std::path::Path::new("/dev/loop-control").exists()
        || !std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("squashfs"))
    {
        vmsan_testkit::skip!("no loop devices or no squashfs in this kernel");
        return;
    }
    let Some(reg) = Registry::start(false) else {
        return;
    };
    reg.push_image("test/mount", "v1", "amd64", config(), &layers())
        .await;
    let home = tempfile::tempdir().unwrap();
    let store = ImageStore::open(home.path()).unwrap();
    let img = store
        .pull(&format!("{}/test/mount:v1", reg.addr), &opts())
        .await
        .unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let st = Command::new("mount")
        .args(["-t", "squashfs", "-o", "loop,ro"])
        .arg(&img.rootfs)
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(st.success(), "the kernel refused the image");
    let m = Mounted(mnt.path().to_owned());
    let root = &m.0;
    assert_eq!(
        std::fs::read(root.join("big/blob")).unwrap(),
        noise(24 << 20, 7)
    );
    assert_eq!(std::fs::read(root.join("etc/hostname")).unwrap(), b"vm\n");
    assert_eq!(std::fs::read(root.join("opaque/new")).unwrap(), b"new");
    assert!(!root.join("opaque/old1").exists() && !root.join("gone.txt").exists());
    assert_eq!(
        std::fs::read_link(root.join("bin")).unwrap(),
        std::path::Path::new("usr/bin")
    );
    use std::os::unix::fs::MetadataExt;
    let tool = std::fs::metadata(root.join("usr/bin/tool")).unwrap();
    let link = std::fs::metadata(root.join("usr/bin/tool-link")).unwrap();
    assert_eq!((tool.ino(), tool.nlink()), (link.ino(), 2));
    let home_user = std::fs::metadata(root.join("home/user")).unwrap();
    assert_eq!(
        (home_user.uid(), home_user.gid(), home_user.mode() & 0o7777),
        (1000, 1000, 0o700)
    );
    let names: Vec<_> = std::fs::read_dir(root.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("b")]);
    drop(m);
}
