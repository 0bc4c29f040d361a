//! Preparing, inspecting and removing a jail on the real filesystem.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use vmsan_firecracker::layout;
use vmsan_firecracker::layout::{
    JailError, Placed, give_to_jail, is_root_owned_file, remove_jail, remove_jail_entry,
    wait_for_pid_file,
};
use vmsan_firecracker::*;

struct Fixture {
    dir: tempfile::TempDir,
    layout: JailLayout,
    kernel: PathBuf,
    overlay: PathBuf,
    config: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("vm");
    fs::create_dir(&src).unwrap();
    let kernel = src.join("vmlinux");
    fs::write(&kernel, b"kernel bytes").unwrap();
    fs::set_permissions(&kernel, fs::Permissions::from_mode(0o644)).unwrap();
    let overlay = src.join("overlay.ext4");
    fs::write(&overlay, b"overlay bytes").unwrap();
    let config = src.join("config.json");
    fs::write(&config, b"{\"id\":\"vm-1\"}").unwrap();
    let layout = JailLayout::new(
        &dir.path().join("jail"),
        Path::new("/opt/bin/firecracker"),
        "vm-test-1",
    )
    .unwrap();
    Fixture {
        dir,
        layout,
        kernel,
        overlay,
        config,
    }
}

fn me() -> (u32, u32) {
    (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    )
}

fn standard_files(f: &Fixture) -> Vec<JailFile> {
    vec![
        JailFile::shared_read_only(&f.kernel, "vmlinux"),
        JailFile::per_vm(&f.overlay, "overlay.ext4", true),
        JailFile::copy(&f.config, "config.json", 0o400),
    ]
}

#[test]
fn prepares_a_fresh_jail() {
    let f = fixture();
    let (uid, gid) = me();
    let placed = prepare_jail(&f.layout, uid, gid, &standard_files(&f)).unwrap();
    assert_eq!(placed[0], Placed::Linked);
    assert_eq!(placed[1], Placed::Linked);
    assert!(matches!(placed[2], Placed::Copied | Placed::Reflinked));

    let root = f.layout.root();
    assert!(root.is_dir());
    let instance_mode = fs::metadata(f.layout.instance_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(instance_mode & 0o777, 0o700);
    let run = fs::symlink_metadata(root.join("run")).unwrap();
    assert!(run.is_dir());
    assert_eq!((run.uid(), run.gid()), (uid, gid));

    // Links share the inode; the copy does not.
    let kernel_in = fs::metadata(root.join("vmlinux")).unwrap();
    assert_eq!(kernel_in.ino(), fs::metadata(&f.kernel).unwrap().ino());
    let overlay_in = fs::metadata(root.join("overlay.ext4")).unwrap();
    assert_eq!(overlay_in.ino(), fs::metadata(&f.overlay).unwrap().ino());
    assert_eq!(overlay_in.permissions().mode() & 0o777, 0o600);
    let config_in = fs::metadata(root.join("config.json")).unwrap();
    assert_ne!(config_in.ino(), fs::metadata(&f.config).unwrap().ino());
    assert_eq!(config_in.permissions().mode() & 0o777, 0o400);
    assert_eq!(
        fs::read(root.join("config.json")).unwrap(),
        b"{\"id\":\"vm-1\"}"
    );
    // The shared file kept its mode.
    assert_eq!(kernel_in.permissions().mode() & 0o777, 0o644);

    remove_jail(&f.layout).unwrap();
    assert!(!f.layout.instance_dir().exists());
    // Idempotent.
    remove_jail(&f.layout).unwrap();
    // The sources survive.
    assert!(f.kernel.is_file() && f.overlay.is_file() && f.config.is_file());
}

#[test]
fn planted_symlinks_are_never_followed() {
    let f = fixture();
    let (uid, gid) = me();
    prepare_jail(&f.layout, uid, gid, &standard_files(&f)).unwrap();
    // A jailed process replaces entries with symlinks to a file it wants us to overwrite.
    let victim = f.dir.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    let root = f.layout.root();
    fs::remove_file(root.join("config.json")).unwrap();
    symlink(&victim, root.join("config.json")).unwrap();
    fs::remove_dir(root.join("run")).unwrap();
    symlink(f.dir.path(), root.join("run")).unwrap();
    symlink(&victim, root.join("firecracker.pid")).unwrap();

    // The pid file is refused as a symlink.
    assert!(matches!(
        read_pid_file(&f.layout),
        Err(JailError::Unsafe { .. })
    ));
    // A restart rebuilds the jail without touching the victim.
    prepare_jail(&f.layout, uid, gid, &standard_files(&f)).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert!(
        fs::symlink_metadata(root.join("config.json"))
            .unwrap()
            .is_file()
    );
    assert!(fs::symlink_metadata(root.join("run")).unwrap().is_dir());
    assert!(!root.join("firecracker.pid").exists());
    // Removing an entry removes the link, not its target.
    symlink(&victim, root.join("v.sock_1025")).unwrap();
    remove_jail_entry(&f.layout, "v.sock_1025").unwrap();
    assert!(fs::symlink_metadata(root.join("v.sock_1025")).is_err());
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    remove_jail_entry(&f.layout, "v.sock_1025").unwrap();
    assert!(remove_jail_entry(&f.layout, "../x").is_err());
    remove_jail(&f.layout).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn symlinked_or_special_sources_are_refused() {
    let f = fixture();
    let (uid, gid) = me();
    let link = f.dir.path().join("kernel-link");
    symlink(&f.kernel, &link).unwrap();
    let err = prepare_jail(
        &f.layout,
        uid,
        gid,
        &[JailFile::shared_read_only(&link, "vmlinux")],
    )
    .unwrap_err();
    assert!(matches!(err, JailError::Unsafe { .. }), "{err}");
    let err = prepare_jail(
        &f.layout,
        uid,
        gid,
        &[JailFile::copy(f.dir.path(), "dir", 0o400)],
    )
    .unwrap_err();
    assert!(matches!(err, JailError::Unsafe { .. }), "{err}");
    let missing = f.dir.path().join("missing");
    let err =
        prepare_jail(&f.layout, uid, gid, &[JailFile::copy(&missing, "m", 0o400)]).unwrap_err();
    assert!(matches!(err, JailError::Io { .. }), "{err}");
    remove_jail(&f.layout).unwrap();
}

#[test]
fn reserved_and_odd_names_are_refused() {
    let f = fixture();
    let (uid, gid) = me();
    for name in [
        "firecracker",
        "firecracker.pid",
        "run",
        "dev",
        "..",
        "a/b",
        "",
    ] {
        let err = prepare_jail(
            &f.layout,
            uid,
            gid,
            &[JailFile::copy(&f.kernel, name, 0o400)],
        )
        .unwrap_err();
        assert!(matches!(err, JailError::Arg(_)), "{name:?}: {err}");
    }
    // Nothing was created for a refused request.
    assert!(!f.layout.instance_dir().exists());
}

#[test]
fn duplicate_names_fail_instead_of_overwriting() {
    let f = fixture();
    let (uid, gid) = me();
    let err = prepare_jail(
        &f.layout,
        uid,
        gid,
        &[
            JailFile::copy(&f.kernel, "same", 0o400),
            JailFile::copy(&f.config, "same", 0o400),
        ],
    )
    .unwrap_err();
    assert!(matches!(err, JailError::Io { .. }), "{err}");
    assert_eq!(
        fs::read(f.layout.root().join("same")).unwrap(),
        b"kernel bytes"
    );
    remove_jail(&f.layout).unwrap();
}

#[test]
fn hard_link_only_placement_links() {
    let f = fixture();
    let (uid, gid) = me();
    let file = JailFile {
        placement: Placement::HardLink,
        ..JailFile::shared_read_only(&f.kernel, "vmlinux")
    };
    assert_eq!(
        prepare_jail(&f.layout, uid, gid, &[file]).unwrap(),
        [Placed::Linked]
    );
    remove_jail(&f.layout).unwrap();
}

#[test]
fn pid_file_is_read_only_when_trustworthy() {
    let f = fixture();
    let (uid, gid) = me();
    prepare_jail(&f.layout, uid, gid, &[]).unwrap();
    let pid_file = f.layout.pid_file();
    assert!(matches!(
        read_pid_file(&f.layout),
        Err(JailError::Io { .. })
    ));

    fs::write(&pid_file, b"4242\n").unwrap();
    if uid == 0 {
        assert_eq!(read_pid_file(&f.layout).unwrap(), 4242);
    } else {
        // Written by someone other than root (the jailer runs as root): not trusted.
        assert!(matches!(
            read_pid_file(&f.layout),
            Err(JailError::Unsafe { .. })
        ));
        eprintln!("not root: only the untrusted-owner case of the pid file was checked");
    }
    for garbage in ["", "abc", "-1", "0", "12 34", "99999999999"] {
        fs::write(&pid_file, garbage).unwrap();
        assert!(read_pid_file(&f.layout).is_err(), "{garbage:?}");
    }
    remove_jail(&f.layout).unwrap();
}

#[test]
fn privileged_jail_files_belong_to_the_jail_uid() {
    if !nix::unistd::geteuid().is_root() {
        vmsan_testkit::skip!("needs root to chown to another uid");
        return;
    }
    let f = fixture();
    let (jail_uid, jail_gid) = (61_234, 61_235);
    prepare_jail(&f.layout, jail_uid, jail_gid, &standard_files(&f)).unwrap();
    let root = f.layout.root();
    let owner = |p: PathBuf| {
        let m = fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(owner(root.join("run")), (jail_uid, jail_gid));
    assert_eq!(owner(root.join("overlay.ext4")), (jail_uid, jail_gid));
    assert_eq!(owner(root.join("config.json")), (jail_uid, jail_gid));
    // The shared kernel keeps its owner (root), in the jail and at its source.
    assert_eq!(owner(root.join("vmlinux")), (0, 0));
    assert_eq!(owner(f.kernel.clone()), (0, 0));
    assert!(is_root_owned_file(&root.join("vmlinux")).unwrap());
    assert!(!is_root_owned_file(&root.join("config.json")).unwrap());

    // A pid file the jail uid wrote is refused even when its content is plausible.
    let pid_file = f.layout.pid_file();
    fs::write(&pid_file, b"77\n").unwrap();
    assert_eq!(read_pid_file(&f.layout).unwrap(), 77);
    nix::unistd::chown(
        &pid_file,
        Some(nix::unistd::Uid::from_raw(jail_uid)),
        Some(nix::unistd::Gid::from_raw(jail_gid)),
    )
    .unwrap();
    assert!(matches!(
        read_pid_file(&f.layout),
        Err(JailError::Unsafe { .. })
    ));
    remove_jail(&f.layout).unwrap();
}

#[test]
fn privileged_copies_across_filesystems() {
    if !nix::unistd::geteuid().is_root() {
        vmsan_testkit::skip!("needs root");
        return;
    }
    // /dev/shm is a tmpfs; the jail goes on the temp dir's filesystem.
    let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
        vmsan_testkit::skip!("no /dev/shm");
        return;
    };
    let f = fixture();
    if fs::metadata(shm.path()).unwrap().dev() == fs::metadata(f.dir.path()).unwrap().dev() {
        vmsan_testkit::skip!("/dev/shm and the temp dir are on the same filesystem");
        return;
    }
    let kernel = shm.path().join("vmlinux");
    fs::write(&kernel, vec![7u8; 1 << 20]).unwrap();
    let placed = prepare_jail(
        &f.layout,
        61_234,
        61_234,
        &[JailFile::shared_read_only(&kernel, "vmlinux")],
    )
    .unwrap();
    assert!(matches!(placed[0], Placed::Copied | Placed::Reflinked));
    assert_eq!(
        fs::read(f.layout.root().join("vmlinux")).unwrap(),
        vec![7u8; 1 << 20]
    );
    // A hard link alone cannot cross filesystems.
    let err = prepare_jail(
        &f.layout,
        61_234,
        61_234,
        &[JailFile {
            placement: Placement::HardLink,
            ..JailFile::shared_read_only(&kernel, "vmlinux")
        }],
    )
    .unwrap_err();
    assert!(matches!(err, JailError::Io { .. }), "{err}");
    remove_jail(&f.layout).unwrap();
}

#[tokio::test]
async fn privileged_waits_for_the_jailers_pid_file() {
    if !nix::unistd::geteuid().is_root() {
        vmsan_testkit::skip!("the pid file is only trusted when root owns it");
        return;
    }
    let f = fixture();
    prepare_jail(&f.layout, 61_234, 61_234, &[]).unwrap();
    let pid_file = f.layout.pid_file();
    // The "jailer" writes the file once the waiter has seen it missing.
    let mut writer = Some(pid_file.clone());
    let mut polls = 0;
    let pid = wait_for_pid_file(
        &f.layout,
        tokio::time::Instant::now() + std::time::Duration::from_secs(10),
        || {
            polls += 1;
            if let Some(path) = writer.take() {
                fs::write(path, b"31337\n").unwrap();
            }
            true
        },
    )
    .await
    .unwrap();
    assert_eq!(pid, 31_337);
    assert_eq!(polls, 1);

    // A jailer that died without writing it ends the wait at once.
    fs::remove_file(&pid_file).unwrap();
    let err = wait_for_pid_file(
        &f.layout,
        tokio::time::Instant::now() + std::time::Duration::from_secs(30),
        || false,
    )
    .await
    .unwrap_err();
    match err {
        JailError::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::BrokenPipe);
        }
        other => panic!("unexpected {other}"),
    }
    // A file the jail uid planted is refused at once, not waited on.
    fs::write(&pid_file, b"1\n").unwrap();
    nix::unistd::chown(&pid_file, Some(nix::unistd::Uid::from_raw(61_234)), None).unwrap();
    let err = wait_for_pid_file(
        &f.layout,
        tokio::time::Instant::now() + std::time::Duration::from_secs(30),
        || true,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, JailError::Unsafe { .. }), "{err}");
    remove_jail(&f.layout).unwrap();
}

#[tokio::test]
async fn waiting_for_the_pid_file_ends_at_the_deadline() {
    let f = fixture();
    let (uid, gid) = me();
    prepare_jail(&f.layout, uid, gid, &[]).unwrap();
    let started = std::time::Instant::now();
    let err = wait_for_pid_file(
        &f.layout,
        tokio::time::Instant::now() + std::time::Duration::from_millis(100),
        || true,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, JailError::Io { .. }), "{err}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(100));
    remove_jail(&f.layout).unwrap();
}

#[test]
fn privileged_listener_socket_goes_to_the_jail_uid() {
    if !nix::unistd::geteuid().is_root() {
        vmsan_testkit::skip!("needs root to chown to another uid");
        return;
    }
    let f = fixture();
    prepare_jail(&f.layout, 61_234, 61_235, &[]).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(f.layout.vsock_listener(1025)).unwrap();
    give_to_jail(&f.layout, "v.sock_1025", 61_234, 61_235).unwrap();
    let meta = fs::symlink_metadata(f.layout.vsock_listener(1025)).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (61_234, 61_235));
    drop(listener);
    // A symlink planted in its place: the link changes owner, its target does not.
    let victim = f.dir.path().join("victim");
    fs::write(&victim, b"x").unwrap();
    remove_jail_entry(&f.layout, "v.sock_1025").unwrap();
    symlink(&victim, f.layout.vsock_listener(1025)).unwrap();
    give_to_jail(&f.layout, "v.sock_1025", 61_234, 61_235).unwrap();
    assert_eq!(fs::metadata(&victim).unwrap().uid(), 0);
    assert!(give_to_jail(&f.layout, "../escape", 61_234, 61_235).is_err());
    remove_jail(&f.layout).unwrap();
}

#[test]
fn shared_files_must_be_readable_by_the_jail() {
    let f = fixture();
    let (uid, gid) = me();
    fs::set_permissions(&f.kernel, fs::Permissions::from_mode(0o600)).unwrap();
    let err = prepare_jail(
        &f.layout,
        uid,
        gid,
        &[JailFile::shared_read_only(&f.kernel, "vmlinux")],
    )
    .unwrap_err();
    assert!(matches!(err, JailError::Unsafe { .. }), "{err}");
    assert!(err.to_string().contains("not readable by others"), "{err}");
    // A private copy given to the jail uid is fine whatever the source's mode.
    prepare_jail(
        &f.layout,
        uid,
        gid,
        &[JailFile::copy(&f.kernel, "vmlinux", 0o400)],
    )
    .unwrap();
    remove_jail(&f.layout).unwrap();
}

#[test]
fn device_nodes_are_allowed_on_the_temp_dir() {
    let f = fixture();
    fs::create_dir_all(f.layout.chroot_base()).unwrap();
    // The temp dir of this machine is not nodev (the jail could not work there otherwise).
    let expected = !mount_is_nodev(f.layout.chroot_base());
    assert_eq!(
        layout::allows_device_nodes(f.layout.chroot_base()).unwrap(),
        expected
    );
    assert_eq!(f.layout.check_device_nodes_allowed().is_ok(), expected);
    assert!(layout::allows_device_nodes(Path::new("/nonexistent/x")).is_err());
}

/// Whether the mount holding `path` has `nodev`, from /proc/self/mountinfo (longest prefix).
fn mount_is_nodev(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = fs::canonicalize(path).unwrap();
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = Path::new(fields[4]);
            path.starts_with(mount_point).then(|| {
                (
                    mount_point.as_os_str().len(),
                    fields[5].split(',').any(|o| o == "nodev"),
                )
            })
        })
        .max_by_key(|(len, _)| *len)
        .is_some_and(|(_, nodev)| nodev)
}

/// A tmpfs mounted `nodev` on a temp dir, unmounted on drop.
struct NodevMount(PathBuf);

impl Drop for NodevMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn privileged_a_nodev_chroot_base_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        vmsan_testkit::skip!("needs root to mount");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    fs::create_dir(&base).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &base,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOSUID,
        Some("size=1m,mode=0755"),
    )
    .unwrap();
    let mount = NodevMount(base.clone());
    assert!(!layout::allows_device_nodes(&base).unwrap());
    let layout = JailLayout::new(&base, Path::new("/x/firecracker"), "vm-nodev").unwrap();
    let err = layout.check_device_nodes_allowed().unwrap_err();
    assert!(err.to_string().contains("nodev"), "{err}");
    drop(mount);
    assert!(layout::allows_device_nodes(&base).unwrap() || mount_is_nodev(&base));
}

#[test]
fn a_fifo_source_is_refused_without_hanging() {
    let f = fixture();
    let (uid, gid) = me();
    let fifo = f.dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let err = prepare_jail(
        &f.layout,
        uid,
        gid,
        &[JailFile::shared_read_only(&fifo, "vmlinux")],
    )
    .unwrap_err();
    assert!(matches!(err, JailError::Unsafe { .. }), "{err}");
    remove_jail(&f.layout).unwrap();
}

#[test]
fn output_files_outlive_the_jail() {
    let f = fixture();
    let (uid, gid) = me();
    let serial = f.dir.path().join("vm").join("serial.log");
    fs::write(&serial, b"").unwrap();
    let placed = prepare_jail(
        &f.layout,
        uid,
        gid,
        &[JailFile::output(&serial, layout::SERIAL_IN_JAIL)],
    )
    .unwrap();
    assert_eq!(placed, [Placed::Linked]);
    // What Firecracker writes inside the jail …
    let mut inside = fs::OpenOptions::new()
        .append(true)
        .open(f.layout.root().join(layout::SERIAL_IN_JAIL))
        .unwrap();
    std::io::Write::write_all(&mut inside, b"Linux version 6.1\n").unwrap();
    drop(inside);
    remove_jail(&f.layout).unwrap();
    // … is still in the VM's directory once the jail is gone.
    assert_eq!(fs::read(&serial).unwrap(), b"Linux version 6.1\n");
    let meta = fs::metadata(&serial).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.nlink(), 1);
}

/// A loop device over a sparse file, with an XFS (reflink-capable) filesystem mounted on a
/// temp dir; unmounted and detached on drop.
struct XfsLoop {
    mount_point: PathBuf,
    device: Option<String>,
    mounted: bool,
    _dir: tempfile::TempDir,
}

impl Drop for XfsLoop {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.mount_point, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(device) = &self.device {
            let _ = std::process::Command::new("losetup")
                .args(["-d", device])
                .status();
        }
    }
}

fn xfs_loop() -> Result<XfsLoop, String> {
    use std::process::Command;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let image = dir.path().join("xfs.img");
    let file = fs::File::create(&image).map_err(|e| e.to_string())?;
    file.set_len(320 << 20).map_err(|e| e.to_string())?;
    drop(file);
    let mount_point = dir.path().join("mnt");
    fs::create_dir(&mount_point).map_err(|e| e.to_string())?;
    let mut fixture = XfsLoop {
        mount_point,
        device: None,
        mounted: false,
        _dir: dir,
    };
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&image)
        .output()
        .map_err(|e| format!("losetup: {e}"))?;
    if !out.status.success() {
        return Err(format!("losetup: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let device = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(device.starts_with("/dev/loop"), "{device}");
    fixture.device = Some(device.clone());
    let status = Command::new("mkfs.xfs")
        .args(["-q", "-m", "reflink=1"])
        .arg(&device)
        .status()
        .map_err(|e| format!("mkfs.xfs: {e}"))?;
    if !status.success() {
        return Err(format!("mkfs.xfs failed: {status}"));
    }
    nix::mount::mount(
        Some(device.as_str()),
        &fixture.mount_point,
        Some("xfs"),
        nix::mount::MsFlags::MS_NOSUID,
        None::<&str>,
    )
    .map_err(|e| format!("mount: {e}"))?;
    fixture.mounted = true;
    Ok(fixture)
}

#[test]
fn privileged_copies_are_reflinks_where_the_filesystem_can() {
    if !nix::unistd::geteuid().is_root() {
        vmsan_testkit::skip!("needs root for a loop device");
        return;
    }
    if std::process::Command::new("mkfs.xfs")
        .arg("-V")
        .output()
        .is_err()
    {
        vmsan_testkit::skip!("mkfs.xfs is not installed (Debian package xfsprogs)");
        return;
    }
    let xfs = xfs_loop().unwrap();
    let src = xfs.mount_point.join("src");
    fs::create_dir(&src).unwrap();
    let kernel = src.join("vmlinux");
    let bytes: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 251) as u8).collect();
    fs::write(&kernel, &bytes).unwrap();
    let layout = JailLayout::new(
        &xfs.mount_point.join("jail"),
        Path::new("/x/firecracker"),
        "vm-reflink",
    )
    .unwrap();
    let placed = prepare_jail(
        &layout,
        61_234,
        61_234,
        &[JailFile::copy(&kernel, "vmlinux", 0o400)],
    )
    .unwrap();
    assert_eq!(placed, [Placed::Reflinked]);
    let copy = layout.root().join("vmlinux");
    assert_eq!(fs::read(&copy).unwrap(), bytes);
    let meta = fs::metadata(&copy).unwrap();
    assert_ne!(meta.ino(), fs::metadata(&kernel).unwrap().ino());
    assert_eq!(
        (meta.uid(), meta.permissions().mode() & 0o777),
        (61_234, 0o400)
    );
    // The clone is independent: changing the source leaves it intact.
    fs::write(&kernel, b"changed").unwrap();
    assert_eq!(fs::read(&copy).unwrap(), bytes);
    remove_jail(&layout).unwrap();
    drop(xfs);
}
