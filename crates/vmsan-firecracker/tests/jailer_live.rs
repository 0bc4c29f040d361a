//! The driver end to end with a jailer and a Firecracker binary: prepare the jail, run the
//! jailer with our argv, trust its pid file, identify Firecracker, talk to its API through the
//! jail, kill it, and tear down until nothing is left.
//!
//! It runs as root with the binaries `VMSAN_TEST_JAILER` and `VMSAN_TEST_FIRECRACKER` name
//! (the real, statically linked v1.16.1 pair), or else with `vmsan-testkit`'s stand-ins when
//! a workspace build has put them next to this test (this crate does not depend on that
//! crate); otherwise it says why it is skipped.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::time::Instant;
use vmsan_firecracker::layout::{KERNEL_IN_JAIL, remove_jail};
use vmsan_firecracker::models::{BootSource, Drive, InstanceState};
use vmsan_firecracker::*;
use vmsan_proto::FsType;

const JAIL_UID: u32 = 61_234;

/// Kills Firecracker and removes the jail and the cgroups, whatever happened.
struct Teardown {
    layout: JailLayout,
    mounts: CgroupMounts,
    parent: String,
    firecracker: Option<ProcessIdentity>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        // Firecracker may be running even when the test failed before it learnt the pid.
        let firecracker = self.firecracker.take().or_else(|| {
            let pid = read_pid_file(&self.layout).ok()?;
            let fc = ProcessIdentity::of(pid).ok()?;
            fc.exe_is(&self.layout.exec_copy()).ok()?.then_some(fc)
        });
        if let Some(fc) = firecracker
            && fc.liveness().ok() == Some(Liveness::Alive)
        {
            let _ = kill(Pid::from_raw(fc.pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(fc.pid), None);
        }
        // The cgroups empty once the killed processes have fully exited.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while remove_jailer_cgroups(&self.mounts, &self.parent, self.layout.id()).is_err()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Ok(dirs) = self
            .mounts
            .jailer_cgroup_dirs(&self.parent, self.layout.id())
        {
            for dir in dirs {
                if let Some(parent) = dir.parent() {
                    let _ = std::fs::remove_dir(parent);
                }
            }
        }
        let _ = remove_jail(&self.layout);
    }
}

/// The pair named by the environment, else the stand-ins when the workspace build left them
/// next to this test (`target/<profile>/`).
fn binaries() -> Option<(PathBuf, PathBuf)> {
    if let (Some(jailer), Some(firecracker)) = (
        std::env::var_os("VMSAN_TEST_JAILER"),
        std::env::var_os("VMSAN_TEST_FIRECRACKER"),
    ) {
        return Some((PathBuf::from(jailer), PathBuf::from(firecracker)));
    }
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let jailer = profile_dir.join("jailer-standin");
    let firecracker = profile_dir.join("firecracker-standin");
    (jailer.is_file() && firecracker.is_file()).then(|| {
        eprintln!(
            "using the stand-ins of this build: {} and {}",
            jailer.display(),
            firecracker.display()
        );
        (jailer, firecracker)
    })
}

#[tokio::test]
async fn privileged_jailer_round_trip_leaves_nothing_behind() {
    let Some((jailer, firecracker)) = binaries() else {
        vmsan_testkit::skip!(
            "set VMSAN_TEST_JAILER and VMSAN_TEST_FIRECRACKER to a jailer and a \
             Firecracker binary (real ones, or target/debug/jailer-standin and \
             target/debug/firecracker-standin) to run it"
        );
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        vmsan_testkit::skip!("the jailer needs root");
        return;
    }
    // Firecracker outlives the jailer that cloned it: as subreaper we inherit it and can
    // wait for its exit instead of polling.
    nix::sys::prctl::set_child_subreaper(true).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, b"not a real kernel").unwrap();
    let disk = dir.path().join("overlay.ext4");
    std::fs::write(&disk, vec![0u8; 1 << 16]).unwrap();

    let mounts = CgroupMounts::detect().unwrap();
    let id = format!("vm-fclive-{}", std::process::id());
    let mut spec = JailerSpec::new(
        &id,
        &firecracker,
        dir.path().join("jail"),
        JAIL_UID,
        JAIL_UID,
        mounts.jailer_version().unwrap(),
    );
    spec.parent_cgroup = Some(format!("vmsan-fclive-{}", std::process::id()));
    spec.cgroups = CgroupLimits {
        cpu: Some(CpuLimit::cpus(1)),
        memory_bytes: Some(256 << 20),
    };
    let layout = spec.layout().unwrap();
    let parent = spec.cgroup_parent().unwrap();
    let mut teardown = Teardown {
        layout: layout.clone(),
        mounts: mounts.clone(),
        parent: parent.clone(),
        firecracker: None,
    };
    layout.check_socket_paths().unwrap();
    prepare_jail(
        &layout,
        JAIL_UID,
        JAIL_UID,
        &[
            JailFile::shared_read_only(&kernel, KERNEL_IN_JAIL),
            JailFile::per_vm(&disk, "overlay.ext4", true),
        ],
    )
    .unwrap();

    let status = tokio::process::Command::new(&jailer)
        .args(spec.args().unwrap())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "jailer: {status:?}");

    // The real jailer writes the pid file before it exits; a jailer that daemonizes by
    // forking (the stand-in) writes it a moment later, so wait for it.
    let pid = wait_for_pid_file(&layout, Instant::now() + Duration::from_secs(10), || true)
        .await
        .unwrap();
    let fc = ProcessIdentity::of(pid).unwrap();
    teardown.firecracker = Some(fc);
    wait_for_socket_while(
        &layout.api_socket(),
        Instant::now() + Duration::from_secs(10),
        || fc.liveness().ok() == Some(Liveness::Alive),
    )
    .await
    .unwrap();
    assert!(fc.exe_is(&layout.exec_copy()).unwrap());
    let creds = fc.credentials().unwrap().unwrap();
    assert_eq!(
        (creds.uid, creds.euid, creds.gid),
        (JAIL_UID, JAIL_UID, JAIL_UID)
    );

    // The API, with paths relative to the jail root.
    let client = FirecrackerClient::new(layout.api_socket());
    let info = client.describe_instance().await.unwrap();
    assert_eq!(info.id, id);
    assert_eq!(info.state, InstanceState::NotStarted);
    client
        .put_boot_source(&BootSource {
            kernel_image_path: KERNEL_IN_JAIL.into(),
            initrd_path: None,
            boot_args: Some(BootArgs::new(FsType::Ext4).render()),
        })
        .await
        .unwrap();
    client
        .put_drive(&Drive::virtio_block("overlay", "overlay.ext4", false))
        .await
        .unwrap();
    // Outside the jail nothing is visible.
    let err = client
        .put_boot_source(&BootSource {
            kernel_image_path: kernel.to_str().unwrap().into(),
            initrd_path: None,
            boot_args: None,
        })
        .await
        .unwrap_err();
    let api = err.api().unwrap();
    assert_eq!((api.status, api.path.as_str()), (400, "/boot-source"));
    assert!(api.fault_message.contains("kernel"), "{api}");
    let config = client.vm_config().await.unwrap();
    assert_eq!(
        config.boot_source.unwrap().kernel_image_path,
        KERNEL_IN_JAIL
    );

    // Its cgroups exist with our limits.
    let dirs: Vec<PathBuf> = mounts
        .jailer_cgroup_dirs(&parent, &id)
        .unwrap()
        .into_iter()
        .filter(|d| d.exists())
        .collect();
    assert!(!dirs.is_empty(), "no cgroup for {id}");
    assert_eq!(oom_kill_count(&mounts, &parent, &id).unwrap(), Some(0));

    // Kill it (PID 1 of its namespace ignores SIGTERM) and reap it as its subreaper.
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let waited = waitpid(Pid::from_raw(pid), None).unwrap();
    assert_eq!(
        waited,
        WaitStatus::Signaled(Pid::from_raw(pid), Signal::SIGKILL, false)
    );
    assert_eq!(fc.liveness().unwrap(), Liveness::Exited);
    teardown.firecracker = None;

    // Teardown leaves nothing: the cgroups (retrying while the kernel finishes the exit of
    // helper processes the jailer may have forked) and the jail.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match remove_jailer_cgroups(&mounts, &parent, &id) {
            Ok(_) => break,
            Err(e)
                if e.source.raw_os_error() == Some(libc::EBUSY)
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    for dir in &dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    for hierarchy in mounts.jailer_cgroup_dirs(&parent, &id).unwrap() {
        // The per-test parent goes too (nobody else uses it).
        let _ = std::fs::remove_dir(hierarchy.parent().unwrap());
    }
    remove_jail(&layout).unwrap();
    assert!(!layout.instance_dir().exists());
}
