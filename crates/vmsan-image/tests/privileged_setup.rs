//! `setup` against a loopback HTTP server serving release-shaped archives and checksum files.
//! Root is needed: installed binaries must be root-owned.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;
use vmsan_image::{Error, SetupOptions, check_trusted_binary, setup};

const TAG: &str = "v1.16.1";

/// A tiny static x86_64 ELF that prints `msg` and exits 0; `machine` sets e_machine.
fn fake_elf(msg: &str, machine: u16) -> Vec<u8> {
    let code_len = 33usize;
    let total = 64 + 56 + code_len + msg.len();
    let mut v = Vec::new();
    v.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&machine.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&0x400078u64.to_le_bytes());
    v.extend_from_slice(&64u64.to_le_bytes());
    v.extend_from_slice(&0u64.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    for x in [64u16, 56, 1, 0, 0, 0] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&5u32.to_le_bytes());
    v.extend_from_slice(&0u64.to_le_bytes());
    v.extend_from_slice(&0x400000u64.to_le_bytes());
    v.extend_from_slice(&0x400000u64.to_le_bytes());
    v.extend_from_slice(&(total as u64).to_le_bytes());
    v.extend_from_slice(&(total as u64).to_le_bytes());
    v.extend_from_slice(&0x1000u64.to_le_bytes());
    v.extend_from_slice(&[
        0xb8, 1, 0, 0, 0, 0xbf, 1, 0, 0, 0, 0x48, 0x8d, 0x35, 16, 0, 0, 0, 0xba,
    ]);
    v.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    v.extend_from_slice(&[0x0f, 0x05, 0xb8, 60, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05]);
    v.extend_from_slice(msg.as_bytes());
    v
}

fn release_tgz(tag: &str, arch: &str, fc: &[u8], jailer: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = format!("release-{tag}-{arch}");
    for (name, data) in [
        (format!("firecracker-{tag}-{arch}"), fc),
        (format!("jailer-{tag}-{arch}"), jailer),
        ("SHA256SUMS".to_owned(), b"".as_slice()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        b.append_data(&mut h, format!("{dir}/{name}"), data)
            .unwrap();
    }
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&b.into_inner().unwrap()).unwrap();
    e.finish().unwrap()
}

struct Fixture {
    server: TinyHttp,
    home: tempfile::TempDir,
}

fn fixture(tgz: Vec<u8>, tgz_sum: Option<String>, arch: &str) -> Fixture {
    let kernel = {
        let mut k = fake_elf("", 62);
        k.extend_from_slice(&noise(4096, 1));
        k
    };
    let archive = format!("firecracker-{TAG}-{arch}.tgz");
    let sum = tgz_sum.unwrap_or_else(|| sha(&tgz).trim_start_matches("sha256:").to_owned());
    let mut routes = HashMap::new();
    routes.insert(
        format!("/releases/{TAG}/{archive}.sha256.txt"),
        format!("{sum}  {archive}\n").into_bytes(),
    );
    routes.insert(format!("/releases/{TAG}/{archive}"), tgz);
    routes.insert("/kernels/x86_64/vmlinux-6.1".to_owned(), kernel.clone());
    routes.insert(
        "/kernels/x86_64/vmlinux-6.1.sha256".to_owned(),
        format!(
            "{}  vmlinux-6.1\n",
            sha(&kernel).trim_start_matches("sha256:")
        )
        .into_bytes(),
    );
    Fixture {
        server: TinyHttp::start(routes),
        home: tempfile::tempdir().unwrap(),
    }
}

fn options(f: &Fixture) -> SetupOptions {
    let mut o = SetupOptions::new(&f.home.path().join("vmsan"));
    o.release_base_url = format!("http://{}/releases", f.server.addr);
    o.kernel_url = format!("http://{}/kernels/{{arch}}/vmlinux-6.1", f.server.addr);
    o
}

fn skip() -> bool {
    if std::env::consts::ARCH != "x86_64" {
        vmsan_testkit::skip!("the fake release binaries are x86_64 code");
        return true;
    }
    if !is_root() {
        vmsan_testkit::skip!("needs root (installed binaries must be root-owned)");
        return true;
    }
    false
}

fn good_tgz() -> Vec<u8> {
    release_tgz(
        TAG,
        "x86_64",
        &fake_elf("Firecracker v1.16.1\n", 62),
        &fake_elf("Jailer v1.16.1\n", 62),
    )
}

#[tokio::test]
async fn privileged_setup_good_install() {
    if skip() {
        return;
    }
    let f = fixture(good_tgz(), None, "x86_64");
    let r = setup(&options(&f)).await.unwrap();
    assert_eq!(r.version, "v1.16.1");
    let home = f.home.path().join("vmsan");
    assert_eq!(r.firecracker, home.join("bin/firecracker"));
    assert_eq!(r.kernel, home.join("kernels/vmlinux"));
    for p in [&r.firecracker, &r.jailer] {
        let m = std::fs::metadata(p).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o755));
        check_trusted_binary(p).unwrap();
    }
    // The home and its directories are private to root and the home's group (issue 17 item
    // 11); the files Firecracker reads in a jail stay world-readable.
    for d in [home.clone(), home.join("bin"), home.join("kernels")] {
        let m = std::fs::metadata(&d).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o750), "{}", d.display());
    }
    assert_eq!(std::fs::metadata(&r.kernel).unwrap().mode() & 0o777, 0o644);
    let out = std::process::Command::new(&r.firecracker)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Firecracker v1.16.1\n"
    );

    // Refusals of tampered binaries.
    std::fs::set_permissions(&r.jailer, std::fs::Permissions::from_mode(0o757)).unwrap();
    let e = check_trusted_binary(&r.jailer).unwrap_err();
    assert!(
        e.to_string().contains("writable by group or others")
            && e.to_string().contains("chmod go-w"),
        "{e}"
    );
    std::fs::set_permissions(&r.jailer, std::fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(&r.jailer, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let e = check_trusted_binary(&r.jailer).unwrap_err();
    assert!(e.to_string().contains("not root"), "{e}");

    // Offline: local files instead of downloads.
    let local = tempfile::tempdir().unwrap();
    let (fc, j, k) = (
        local.path().join("fc"),
        local.path().join("j"),
        local.path().join("k"),
    );
    std::fs::write(&fc, fake_elf("Firecracker v1.15.0\n", 62)).unwrap();
    std::fs::write(&j, fake_elf("Jailer\n", 62)).unwrap();
    std::fs::write(&k, b"kernel image").unwrap();
    let mut o = SetupOptions::new(&f.home.path().join("offline"));
    o.release_base_url = "http://127.0.0.1:9/none".into();
    o.kernel_url = "http://127.0.0.1:9/none".into();
    o.firecracker = Some(fc);
    o.jailer = Some(j);
    o.kernel = Some(k);
    let r = setup(&o).await.unwrap();
    assert_eq!(r.version, "v1.15.0");
}

#[tokio::test]
async fn privileged_setup_bad_checksum_installs_nothing() {
    if skip() {
        return;
    }
    let f = fixture(good_tgz(), Some("0".repeat(64)), "x86_64");
    let e = setup(&options(&f)).await.unwrap_err();
    assert!(matches!(e, Error::Setup { .. }), "{e}");
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
    assert!(!f.home.path().join("vmsan/bin/firecracker").exists());
}

#[tokio::test]
async fn privileged_setup_wrong_architecture() {
    if skip() {
        return;
    }
    // Binaries inside an x86_64-named archive that are aarch64 code.
    let tgz = release_tgz(
        TAG,
        "x86_64",
        &fake_elf("Firecracker v1.16.1\n", 183),
        &fake_elf("J\n", 183),
    );
    let f = fixture(tgz, None, "x86_64");
    let e = setup(&options(&f)).await.unwrap_err();
    assert!(e.to_string().contains("built for aarch64"), "{e}");
    assert!(!f.home.path().join("vmsan/bin/firecracker").exists());
    // An archive for the other architecture altogether.
    let tgz = release_tgz(TAG, "aarch64", &fake_elf("F\n", 183), &fake_elf("J\n", 183));
    let f = fixture(tgz, None, "x86_64");
    let e = setup(&options(&f)).await.unwrap_err();
    assert!(e.to_string().contains("another architecture"), "{e}");
    // Asking for the other architecture on this host.
    let mut o = options(&f);
    o.arch = "aarch64".into();
    let e = setup(&o).await.unwrap_err();
    assert!(e.to_string().contains("this host is x86_64"), "{e}");
}

#[tokio::test]
async fn privileged_setup_unsupported_version() {
    if skip() {
        return;
    }
    let f = fixture(good_tgz(), None, "x86_64");
    for v in ["v0.25.0", "v2.0.0", "latest"] {
        let mut o = options(&f);
        o.version = v.into();
        let e = setup(&o).await.unwrap_err();
        assert!(matches!(e, Error::Setup { .. }), "{v}: {e}");
        assert!(
            e.to_string().contains("not supported")
                || e.to_string().contains("not a Firecracker version"),
            "{v}: {e}"
        );
    }
    // The archive claims v1.16.1 but the binary reports another version.
    let tgz = release_tgz(
        TAG,
        "x86_64",
        &fake_elf("Firecracker v1.9.0\n", 62),
        &fake_elf("J\n", 62),
    );
    let f = fixture(tgz, None, "x86_64");
    let e = setup(&options(&f)).await.unwrap_err();
    assert!(e.to_string().contains("v1.9.0"), "{e}");
    assert!(!f.home.path().join("vmsan/bin/firecracker").exists());
}

#[tokio::test]
async fn privileged_setup_offline_says_what_to_do() {
    if skip() {
        return;
    }
    let port = free_port();
    let home = tempfile::tempdir().unwrap();
    let mut o = SetupOptions::new(home.path());
    o.release_base_url = format!("http://127.0.0.1:{port}/releases");
    o.kernel_url = format!("http://127.0.0.1:{port}/k");
    let e = setup(&o).await.unwrap_err();
    assert!(matches!(e, Error::Setup { .. }), "{e}");
    // The cause under reqwest's "error sending request", and the ways out besides retrying.
    assert!(e.to_string().contains("Connection refused"), "{e}");
    let Error::Setup { hint, .. } = &e else {
        unreachable!()
    };
    assert!(
        hint.contains("--release-url") && hint.contains("--firecracker"),
        "{hint}"
    );
    // A missing release (404) says to check version and architecture.
    let f = fixture(good_tgz(), None, "x86_64");
    let mut o = options(&f);
    o.version = "v1.15.0".into();
    let e = setup(&o).await.unwrap_err();
    assert!(
        e.to_string().contains("404") && e.to_string().contains("version"),
        "{e}"
    );
}
