//! A guest that fails to boot says why in `create`'s error: the agent's last `vmsan-agent:`
//! line from the serial console is the error's `why` (issues 13 and 16), under the stand-in.
//! (Firecracker's own error line, e.g. a KVM exit, is checked against the real VMM in
//! `realfc.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};

use vmsan_testkit::e2e::{leftovers, parse};

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(files_under(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn privileged_e2e_agent_boot_failure_is_the_errors_why() {
    let Some(fx) = vmsan_testkit::e2e::fixture(Path::new(env!("CARGO_BIN_EXE_vmsan"))) else {
        return;
    };
    let home = &fx.home;
    // The image's root filesystem, overwritten with zeros: the agent cannot mount it.
    let images = home.dir.path().join("images");
    let rootfs: Vec<PathBuf> = files_under(&images)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("rootfs")
        })
        .collect();
    assert_eq!(rootfs.len(), 1, "{rootfs:?}");
    let len = std::fs::metadata(&rootfs[0]).unwrap().len();
    std::fs::write(&rootfs[0], vec![0u8; usize::try_from(len).unwrap()]).unwrap();

    let out = home
        .vmsan()
        .args(["--json", "create", "--from-image", "busybox"])
        .output()
        .unwrap();
    let doc = parse(&out);
    eprintln!("create: {doc}");
    assert!(!out.status.success(), "{doc}");
    let why = doc["error"]["why"].as_str().unwrap_or_default();
    assert!(
        why.contains("The guest agent said: vmsan-agent: boot failed:"),
        "{doc}"
    );
    let id = doc["error"]["vmId"].as_str().unwrap();
    let left = leftovers(home.dir.path(), &fx.net.host, id);
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
}
