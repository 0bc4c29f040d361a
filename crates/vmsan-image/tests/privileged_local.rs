//! Local sources (oci:, oci-archive:, docker-archive:, import), the initrd, the overlay disk.
//! Root is needed: the merge reproduces ownership.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use vmsan_image::{Error, ImageConfig, ImageStore, PullOptions, create_overlay_disk};

fn skip() -> bool {
    if !is_root() {
        vmsan_testkit::skip!("needs root (the merge reproduces file ownership)");
        return true;
    }
    if !have("mksquashfs") || !have("unsquashfs") {
        vmsan_testkit::skip!("squashfs-tools is not installed");
        return true;
    }
    false
}

fn write_blob(dir: &Path, b: &[u8]) -> String {
    let d = sha(b);
    let p = dir.join("blobs/sha256");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join(d.trim_start_matches("sha256:")), b).unwrap();
    d
}

/// An OCI layout with one image tagged `tag`; `manifest_override` replaces the manifest bytes.
fn oci_layout(
    dir: &Path,
    tag: &str,
    layers: &[Vec<u8>],
    manifest_override: Option<Vec<u8>>,
) -> String {
    let cfg = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"], "Env": ["K=v"]}})).unwrap();
    let cd = write_blob(dir, &cfg);
    let descs: Vec<_> = layers
        .iter()
        .map(
            |l| serde_json::json!({"mediaType": GZ, "digest": write_blob(dir, l), "size": l.len()}),
        )
        .collect();
    let m = manifest_override.unwrap_or_else(|| {
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()}, "layers": descs}))
        .unwrap()
    });
    let md = write_blob(dir, &m);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": m.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
        .unwrap(),
    )
    .unwrap();
    md
}

fn tar_dir(src: &Path, out: &Path) {
    let f = std::fs::File::create(out).unwrap();
    let mut b = tar::Builder::new(f);
    b.append_dir_all(".", src).unwrap();
    b.finish().unwrap();
}

fn listing(img: &Path) -> std::collections::BTreeMap<String, LsEntry> {
    unsquashfs_list(img)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_local_transports_and_import() {
    if skip() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let store = ImageStore::open(home.path()).unwrap();
    let o = PullOptions::default();
    let l1 = Layer::new()
        .dir("etc", 0o755, 0, 0)
        .file("etc/os", b"test", 0o644, 0, 0)
        .file("old", b"x", 0o644, 0, 0)
        .gz();
    let l2 = Layer::new()
        .whiteout("", "old")
        .file("new", b"y", 0o600, 1000, 1000)
        .gz();

    // oci:DIR:TAG
    let lay = tempfile::tempdir().unwrap();
    let md = oci_layout(lay.path(), "v1", &[l1.clone(), l2.clone()], None);
    let img = store
        .pull(&format!("oci:{}:v1", lay.path().display()), &o)
        .await
        .unwrap();
    assert_eq!(img.record.digest.to_string(), md);
    assert_eq!(img.config.cmd, vec!["/bin/sh"]);
    let m = listing(&img.rootfs);
    assert!(m.contains_key("/etc/os") && !m.contains_key("/old"));
    assert_eq!(m["/new"].owner, "1000/1000");

    // oci-archive:PATH
    let arch = tempfile::tempdir().unwrap();
    let tarp = arch.path().join("img.tar");
    tar_dir(lay.path(), &tarp);
    let img2 = store
        .pull(&format!("oci-archive:{}:v1", tarp.display()), &o)
        .await
        .unwrap();
    assert_eq!(img2.record.digest.to_string(), md);

    // docker-archive:PATH (docker save layout: uncompressed layer.tar files, one shared by a symlink).
    let ds = tempfile::tempdir().unwrap();
    let raw1 = Layer::new().file("from-docker", b"d", 0o644, 0, 0).tar();
    std::fs::create_dir_all(ds.path().join("aaa")).unwrap();
    std::fs::write(ds.path().join("aaa/layer.tar"), &raw1).unwrap();
    std::fs::create_dir_all(ds.path().join("bbb")).unwrap();
    std::os::unix::fs::symlink("../aaa/layer.tar", ds.path().join("bbb/layer.tar")).unwrap();
    std::fs::write(
        ds.path().join("cfg.json"),
        br#"{"architecture":"amd64","os":"linux","config":{"WorkingDir":"/w"}}"#,
    )
    .unwrap();
    std::fs::write(
        ds.path().join("manifest.json"),
        br#"[{"Config":"cfg.json","RepoTags":["x:1"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}]"#,
    )
    .unwrap();
    let dtar = arch.path().join("save.tar");
    tar_dir(ds.path(), &dtar);
    let img3 = store
        .pull(&format!("docker-archive:{}", dtar.display()), &o)
        .await
        .unwrap();
    assert_eq!(img3.config.working_dir.as_deref(), Some("/w"));
    assert!(listing(&img3.rootfs).contains_key("/from-docker"));

    // import DIR and import TARBALL; local names resolve before registries.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("bin")).unwrap();
    std::fs::write(root.path().join("bin/hello"), b"hi").unwrap();
    let cfg = ImageConfig {
        cmd: vec!["/bin/hello".into()],
        ..Default::default()
    };
    let imp = store
        .import(root.path(), "myimg", cfg.clone(), &o)
        .await
        .unwrap();
    assert_eq!(imp.name, "localhost/myimg:latest");
    assert_eq!(imp.config, cfg);
    let again = store.pull("myimg", &o).await.unwrap();
    assert_eq!(
        again.rootfs, imp.rootfs,
        "a local name resolves without any registry"
    );
    let tb = arch.path().join("root.tar.gz");
    std::fs::write(&tb, Layer::new().file("x", b"1", 0o644, 0, 0).gz()).unwrap();
    let imp2 = store
        .import(&tb, "tarimg:v2", ImageConfig::default(), &o)
        .await
        .unwrap();
    assert_eq!(imp2.name, "localhost/tarimg:v2");
    assert!(listing(&imp2.rootfs).contains_key("/x"));
    assert!(
        store
            .import(root.path(), "ghcr.io/x/y", ImageConfig::default(), &o)
            .await
            .is_err()
    );

    let ls = store.list().unwrap();
    assert_eq!(
        ls.len(),
        4,
        "oci: and oci-archive: share one build: {ls:#?}"
    );
    assert_eq!(ls.iter().map(|s| s.names.len()).sum::<usize>(), 5);
    assert!(ls.iter().all(|s| s.size > 0 && s.last_used > 0));

    // Malformed manifests in a layout are rejected and leave nothing behind.
    for (i, bad) in [
        b"{not json".to_vec(),
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:zz","size":1},"layers":[]}"#.to_vec(),
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[{"mediaType":"application/x-weird","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0}]}"#.to_vec(),
        br#"{"schemaVersion":1,"name":"x"}"#.to_vec(),
    ]
    .into_iter()
    .enumerate()
    {
        let d = tempfile::tempdir().unwrap();
        oci_layout(d.path(), "v1", &[], Some(bad));
        let e = store.pull(&format!("oci:{}:v1", d.path().display()), &o).await.unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "case {i}: {e}");
    }
    assert_eq!(
        std::fs::read_dir(store.dir().join("tmp")).unwrap().count(),
        0
    );
    assert_eq!(store.list().unwrap().len(), 4);
}

/// `image import` takes what `docker save` and OCI tools write, with the same layer rules as a
/// pull, and follows a symlink naming the input (it used to build the archive's own files, a
/// manifest and layer tarballs, as a junk root filesystem; and an empty image for a symlink).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_import_takes_docker_save_and_oci_layouts() {
    if skip() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let store = ImageStore::open(home.path()).unwrap();
    let o = PullOptions::default();
    let work = tempfile::tempdir().unwrap();

    // docker save: manifest.json, a config, layer tarballs (a whiteout in the second).
    let ds = work.path().join("save");
    std::fs::create_dir_all(ds.join("aaa")).unwrap();
    std::fs::create_dir_all(ds.join("bbb")).unwrap();
    let l1 = Layer::new()
        .file("from-docker", b"d", 0o644, 0, 0)
        .file("gone", b"x", 0o644, 0, 0)
        .tar();
    std::fs::write(ds.join("aaa/layer.tar"), &l1).unwrap();
    std::fs::write(
        ds.join("bbb/layer.tar"),
        Layer::new().whiteout("", "gone").tar(),
    )
    .unwrap();
    std::fs::write(
        ds.join("cfg.json"),
        br#"{"architecture":"amd64","os":"linux","config":{"WorkingDir":"/w","Cmd":["/bin/sh"]}}"#,
    )
    .unwrap();
    std::fs::write(
        ds.join("manifest.json"),
        br#"[{"Config":"cfg.json","RepoTags":["x:1"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}]"#,
    )
    .unwrap();
    let save = work.path().join("save.tar");
    tar_dir(&ds, &save);
    let img = store
        .import(&save, "saved", ImageConfig::default(), &o)
        .await
        .unwrap();
    assert_eq!(img.name, "localhost/saved:latest");
    assert_eq!(img.config.working_dir.as_deref(), Some("/w"));
    let ls = listing(&img.rootfs);
    assert!(ls.contains_key("/from-docker"), "{ls:#?}");
    assert!(
        !ls.contains_key("/gone") && !ls.contains_key("/manifest.json"),
        "{ls:#?}"
    );

    // An OCI layout directory, and the same as a tar.
    let lay = work.path().join("layout");
    std::fs::create_dir(&lay).unwrap();
    let md = oci_layout(
        &lay,
        "v1",
        &[Layer::new().file("from-oci", b"o", 0o644, 0, 0).gz()],
        None,
    );
    let img = store
        .import(&lay, "laid", ImageConfig::default(), &o)
        .await
        .unwrap();
    assert_eq!(img.record.digest.to_string(), md);
    assert_eq!(img.config.cmd, vec!["/bin/sh"]);
    assert!(listing(&img.rootfs).contains_key("/from-oci"));
    let lay_tar = work.path().join("layout.tar");
    tar_dir(&lay, &lay_tar);
    let img = store
        .import(&lay_tar, "laid-tar", ImageConfig::default(), &o)
        .await
        .unwrap();
    assert_eq!(img.record.digest.to_string(), md);

    // A compressed image archive is refused with what to do, not built as a root filesystem.
    let gz = work.path().join("save.tar.gz");
    std::fs::write(&gz, gzip(&std::fs::read(&save).unwrap())).unwrap();
    let e = store
        .import(&gz, "gz", ImageConfig::default(), &o)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("decompress it first"), "{e}");

    // A symlink naming a root filesystem directory imports the directory.
    let root = work.path().join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/hello"), b"hi").unwrap();
    let link = work.path().join("root-link");
    std::os::unix::fs::symlink(&root, &link).unwrap();
    let img = store
        .import(&link, "linked", ImageConfig::default(), &o)
        .await
        .unwrap();
    assert!(listing(&img.rootfs).contains_key("/bin/hello"));
}

#[test]
fn privileged_initrd_overlay_and_config_drive() {
    if !have("cpio") || !have("mkfs.ext4") || !have("e2fsck") || !have("debugfs") {
        vmsan_testkit::skip!("needs cpio and e2fsprogs");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let store = ImageStore::open(home.path()).unwrap();
    let agent = home.path().join("vmsan-agent");
    let mut bytes = b"\x7fELF".to_vec();
    bytes.extend(noise(100_001, 9));
    std::fs::write(&agent, &bytes).unwrap();
    let i1 = store.ensure_initrd(&agent).unwrap();
    assert_eq!(
        store.ensure_initrd(&agent).unwrap(),
        i1,
        "unchanged agent, same initrd"
    );
    let list = Command::new("sh")
        .arg("-c")
        .arg(format!("cpio -it --quiet < {}", i1.display()))
        .output()
        .unwrap();
    let names: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        names,
        ["dev", "proc", "sys", "run", "tmp", "newroot", "init"]
    );
    let x = tempfile::tempdir().unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && cpio -id --quiet < {}",
            x.path().display(),
            i1.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read(x.path().join("init")).unwrap(), bytes);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(x.path().join("init"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    assert_eq!(
        std::fs::metadata(x.path().join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    bytes.push(1);
    std::fs::write(&agent, &bytes).unwrap();
    let i2 = store.ensure_initrd(&agent).unwrap();
    assert_ne!(i1, i2, "new agent bytes, new initrd");
    assert!(!i1.exists(), "the stale initrd is removed");
    // The agent's file identity stands for its bytes until the file changes; an initrd that
    // went missing is built again.
    std::fs::remove_file(&i2).unwrap();
    assert_eq!(store.ensure_initrd(&agent).unwrap(), i2);
    assert!(i2.is_file(), "a missing initrd is rebuilt");
    std::fs::write(i2.with_file_name("agent.stamp"), "garbage").unwrap();
    assert_eq!(
        store.ensure_initrd(&agent).unwrap(),
        i2,
        "a bad stamp is ignored"
    );
    std::fs::write(&agent, b"#!/bin/sh").unwrap();
    assert!(store.ensure_initrd(&agent).is_err(), "not an ELF");

    // Overlay disk: a prepared template, copied per VM.
    let t = store.overlay_template(256 << 20).unwrap();
    assert_eq!(store.overlay_template(256 << 20).unwrap(), t);
    let vm = tempfile::tempdir().unwrap();
    let disk = vm.path().join("overlay.ext4");
    create_overlay_disk(&t, &disk).unwrap();
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 256 << 20);
    use std::os::unix::fs::MetadataExt;
    assert!(
        std::fs::metadata(&disk).unwrap().blocks() * 512 < 64 << 20,
        "sparse"
    );
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let ls = Command::new("debugfs")
        .arg("-R")
        .arg("ls -l /")
        .arg(&disk)
        .output()
        .unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.contains("upper") && ls.contains("work"), "{ls}");
    assert!(
        create_overlay_disk(&t, &disk).is_err(),
        "an existing disk is never overwritten"
    );
    assert!(store.overlay_template(1000).is_err());
}
