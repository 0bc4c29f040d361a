//! Image compression: LZ4 images read back byte for byte by squashfs-tools and by the host
//! kernel (a read-only loop mount), and the store's builds of one manifest per compression,
//! never one handed out for the other. Root is needed: the merge reproduces ownership, and
//! the mount needs a loop device.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use vmsan_image::{
    BuildOptions, Compression, Error, Image, ImageConfig, ImageStore, Progress, PullOptions,
    PullPolicy,
};

fn skip() -> bool {
    if !is_root() {
        vmsan_testkit::skip!("needs root (the merge reproduces ownership; loop devices)");
        return true;
    }
    if !have("unsquashfs") || !have("mksquashfs") {
        vmsan_testkit::skip!("squashfs-tools is not installed");
        return true;
    }
    false
}

fn opts(compression: Compression) -> PullOptions {
    PullOptions {
        build: BuildOptions {
            compression,
            ..BuildOptions::default()
        },
        ..PullOptions::default()
    }
}

/// A deterministic incompressible stream (xorshift).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A root filesystem with what compression has to get right: multi-block files with tails, a
/// file of exactly one block, incompressible data (stored blocks), empty files, many small
/// files sharing fragments, a real binary, symlinks, special modes and owners.
fn source_tree(dir: &Path) {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let w = |p: &str, b: &[u8], mode: u32| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let text: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("line {i} of a text file\n").into_bytes())
        .take(300_001)
        .collect();
    w("etc/text", &text, 0o644);
    w("data/noise", &noise(400_000, 11), 0o600);
    w("data/block", &vec![7u8; 128 * 1024], 0o644);
    let mut zeros = vec![0u8; 1 << 20];
    zeros.extend_from_slice(b"and a tail");
    w("data/zeros", &zeros, 0o644);
    w("empty", b"", 0o644);
    w("usr/bin/su", b"setuid", 0o4755);
    for i in 0..300 {
        w(
            &format!("many/f{i:03}"),
            format!("small file {i}\n").as_bytes(),
            0o644,
        );
    }
    if Path::new("/bin/busybox").is_file() {
        let b = std::fs::read("/bin/busybox").unwrap();
        w("bin/busybox", &b, 0o755);
    }
    symlink("usr/bin", dir.join("bin-link")).unwrap();
    symlink("/proc/self/mounts", dir.join("etc/mtab")).unwrap();
    std::fs::create_dir_all(dir.join("home/user")).unwrap();
    w("home/user/.profile", b"export X=1\n", 0o640);
    for p in ["home/user", "home/user/.profile"] {
        std::os::unix::fs::chown(dir.join(p), Some(1000), Some(1000)).unwrap();
    }
    std::fs::set_permissions(
        dir.join("home/user"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
}

fn tar_of(src: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    b.follow_symlinks(false);
    b.append_dir_all(".", src).unwrap();
    b.finish().unwrap();
}

/// Every entry of `want` is in `got` with the same type, mode, owner and content (or
/// target), and `got` has nothing else.
fn same_tree(want: &Path, got: &Path) {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            out.push(r.clone());
            if e.file_type().unwrap().is_dir() {
                walk(root, &r, out);
            }
        }
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    walk(want, Path::new(""), &mut a);
    walk(got, Path::new(""), &mut b);
    a.sort();
    b.sort();
    assert_eq!(a, b, "the entries differ");
    for rel in &a {
        let (p, q) = (want.join(rel), got.join(rel));
        let (m, n) = (
            std::fs::symlink_metadata(&p).unwrap(),
            std::fs::symlink_metadata(&q).unwrap(),
        );
        assert_eq!(m.file_type(), n.file_type(), "{}", rel.display());
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid()),
            (n.mode() & 0o7777, n.uid(), n.gid()),
            "{}",
            rel.display()
        );
        if m.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&p).unwrap(),
                std::fs::read_link(&q).unwrap()
            );
        } else if m.is_file() {
            assert!(
                std::fs::read(&p).unwrap() == std::fs::read(&q).unwrap(),
                "{} differs",
                rel.display()
            );
        }
    }
}

/// The compressor id in a squashfs superblock.
fn superblock_compression(img: &Path) -> u16 {
    let b = std::fs::read(img).unwrap();
    u16::from_le_bytes([b[20], b[21]])
}

/// A read-only loop device over an image and its mount; unmounted and detached on drop, also
/// when the test fails half way.
struct Mounted {
    dir: tempfile::TempDir,
    dev: Option<String>,
    mounted: bool,
}

impl Mounted {
    fn new(img: &Path) -> Self {
        let mut m = Self {
            dir: tempfile::tempdir().unwrap(),
            dev: None,
            mounted: false,
        };
        let out = Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        m.dev = Some(dev.clone());
        let out = Command::new("mount")
            .args(["-t", "squashfs", "-o", "ro", &dev])
            .arg(m.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        m.mounted = true;
        m
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        }
        if let Some(dev) = &self.dev {
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_lz4_image_reads_back_byte_for_byte_and_mounts() {
    if skip() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    source_tree(&src);
    let tarball = work.path().join("rootfs.tar");
    tar_of(&src, &tarball);
    let home = tempfile::tempdir().unwrap();
    let store = ImageStore::open(home.path()).unwrap();
    let cfg = ImageConfig::default;
    let lz4 = store
        .import(&tarball, "tree", cfg(), &opts(Compression::Lz4))
        .await
        .unwrap();
    let zstd = store
        .import(&tarball, "tree", cfg(), &opts(Compression::Zstd))
        .await
        .unwrap();
    eprintln!(
        "test image: zstd {} bytes, lz4 {} bytes",
        zstd.record.size, lz4.record.size
    );
    assert_eq!(lz4.record.digest, zstd.record.digest, "one manifest");
    assert_ne!(lz4.rootfs, zstd.rootfs, "two builds of it");
    assert_eq!(lz4.record.compression, Some(Compression::Lz4));
    assert_eq!(zstd.record.compression, Some(Compression::Zstd));
    assert_eq!(superblock_compression(&lz4.rootfs), 5);
    assert_eq!(superblock_compression(&zstd.rootfs), 6);

    let out = Command::new("unsquashfs")
        .arg("-s")
        .arg(&lz4.rootfs)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && s.contains("Compression lz4\n"),
        "{s}"
    );
    for img in [&lz4, &zstd] {
        let x = work.path().join(format!("x-{}", img.record.size));
        let out = Command::new("unsquashfs")
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
        same_tree(&src, &x);
    }

    // The host kernel's own LZ4 decoder, where it has one.
    if let Err(why) = vmsan_testkit::kernel::reads_squashfs("LZ4") {
        vmsan_testkit::skip!("{why}: the LZ4 image is not mounted");
        return;
    }
    let m = Mounted::new(&lz4.rootfs);
    same_tree(&src, m.dir.path());
    drop(m);
}

fn done_events(p: &PullOptions) -> (PullOptions, std::sync::Arc<std::sync::Mutex<Vec<bool>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let mut p = p.clone();
    p.progress = Some(std::sync::Arc::new(move |e: &Progress| {
        if let Progress::Done { cached, .. } = e {
            s2.lock().unwrap().push(*cached);
        }
    }));
    (p, seen)
}

async fn pull_as(store: &ImageStore, name: &str, c: Compression) -> (Image, Vec<bool>) {
    let (o, seen) = done_events(&PullOptions {
        policy: PullPolicy::Never,
        ..opts(c)
    });
    let img = store.pull(name, &o).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    (img, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_the_compression_setting_picks_the_build_and_never_reuses_the_other() {
    if skip() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/os"), b"test\n".repeat(10_000)).unwrap();
    let tarball = work.path().join("rootfs.tar");
    tar_of(&src, &tarball);
    let home = tempfile::tempdir().unwrap();
    let store = ImageStore::open(home.path()).unwrap();

    // Built with zstd first.
    let z = store
        .import(
            &tarball,
            "t",
            ImageConfig::default(),
            &opts(Compression::Zstd),
        )
        .await
        .unwrap();
    let z_inode = std::fs::metadata(&z.rootfs).unwrap().ino();

    // The setting changes: the same name gives an LZ4 build, made from the stored layers
    // without any network (the pull policy is never), not the zstd image.
    let (l, seen) = pull_as(&store, "t", Compression::Lz4).await;
    assert_eq!(seen, vec![false], "built, not taken from the cache");
    assert_eq!(l.record.digest, z.record.digest);
    assert_ne!(l.rootfs, z.rootfs);
    assert!(
        l.rootfs
            .parent()
            .unwrap()
            .ends_with(format!("{}-lz4", z.record.digest.hex()))
    );
    assert_eq!(superblock_compression(&l.rootfs), 5);
    assert_eq!(l.record.source, z.record.source);
    assert_eq!(l.name, "localhost/t:latest");

    // Back and forth: each build is found again, untouched.
    let (z2, seen) = pull_as(&store, "t", Compression::Zstd).await;
    assert_eq!(seen, vec![true]);
    assert_eq!(z2.rootfs, z.rootfs);
    assert_eq!(std::fs::metadata(&z2.rootfs).unwrap().ino(), z_inode);
    assert_eq!(superblock_compression(&z2.rootfs), 6);
    let (l2, seen) = pull_as(&store, "t", Compression::Lz4).await;
    assert_eq!((seen, l2.rootfs.clone()), (vec![true], l.rootfs.clone()));
    assert_eq!(
        store.resolve("t", Some(Compression::Lz4)).unwrap().rootfs,
        l.rootfs
    );

    // Listed as two builds of one image.
    let mut ls: Vec<_> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| (i.names, i.digest, i.compression))
        .collect();
    ls.sort_by_key(|i| i.2.map(|c| c.as_str()));
    let names = vec!["localhost/t:latest".to_owned()];
    assert_eq!(
        ls,
        vec![
            (
                names.clone(),
                z.record.digest.clone(),
                Some(Compression::Lz4)
            ),
            (names, z.record.digest.clone(), Some(Compression::Zstd)),
        ]
    );

    // A directory import has no layers to build again from: refused with the reason, never
    // the zstd image for an LZ4 setting.
    let d = store
        .import(&src, "d", ImageConfig::default(), &opts(Compression::Zstd))
        .await
        .unwrap();
    assert_eq!(superblock_compression(&d.rootfs), 6);
    let e = store
        .pull(
            "d",
            &PullOptions {
                policy: PullPolicy::Never,
                ..opts(Compression::Lz4)
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(..)), "{e}");
    assert!(e.to_string().contains("built with another one"), "{e}");
    assert!(store.resolve("d", Some(Compression::Lz4)).is_err());
    // Imported again with LZ4, it is.
    let d2 = store
        .import(&src, "d", ImageConfig::default(), &opts(Compression::Lz4))
        .await
        .unwrap();
    assert_eq!(superblock_compression(&d2.rootfs), 5);
    same_tree_listing(&d.rootfs, &d2.rootfs);

    // Removing the name removes every build of it; prune leaves no blob behind.
    store.remove("t").unwrap();
    assert!(!z.rootfs.exists() && !l.rootfs.exists());
    assert!(store.resolve("t", Some(Compression::Zstd)).is_err());
    store.remove("d").unwrap();
    store.prune().unwrap();
    assert!(store.list().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(store.dir().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

fn same_tree_listing(a: &Path, b: &Path) {
    assert_eq!(unsquashfs_list(a), unsquashfs_list(b));
}
