//! `vmsan snapshot create`: pause, let Firecracker write memory and VM state, copy the disk,
//! resume, and publish it all as one snapshot. Any failure resumes the VM and leaves nothing;
//! so does this process's death, through the VM's supervisor (see `vm::snapshot_run`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use vmsan_agent_client::{AgentClient, Endpoint};
use vmsan_firecracker::FirecrackerClient;
use vmsan_firecracker::models::{SnapshotCreateParams, SnapshotType};

use crate::error::{Error, ErrorCode, Result};
use crate::ids::{SnapshotId, VmId};
use crate::paths::Paths;
use crate::snapshot::files::{self, Snapshot, Staging};
use crate::snapshot::{HostFingerprint, SCHEMA_VERSION, SnapshotKind, SnapshotMeta};
use crate::state::{StateStore, VmStatus};
use crate::vm::files::{VmFiles, jail_ids};
use crate::vm::snapshot_run::{JAIL_OUT_DIR, RunRecord};
use crate::vm::stopwatch::{Step, StepName};
use crate::{state, time};

/// How long the guest gets to flush its disks before the pause.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// `snapshot create`'s options.
#[derive(Debug, Clone, Copy)]
pub struct TakeOptions {
    /// Resume the VM afterwards.
    pub resume: bool,
    /// A diff snapshot (pages dirtied since the previous snapshot, merged onto it).
    pub diff: bool,
}

/// A snapshot just taken.
#[derive(Debug, Clone)]
pub struct Taken {
    /// Its metadata.
    pub meta: SnapshotMeta,
    /// Where it is.
    pub dir: PathBuf,
    /// How long the VM was paused, ms.
    pub paused_ms: f64,
    /// Where the time went.
    pub steps: Vec<Step>,
    /// What went wrong without failing it (e.g. the guest could not flush its disks).
    pub warnings: Vec<String>,
}

fn failed(vm: &VmId, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::VmSnapshotCreateFailed,
        format!("Failed to create snapshot for VM {vm}: {why}"),
    )
    .detail("vmId", vm.as_str())
}

/// Take a snapshot of running VM `vm`.
///
/// `rt` is the caller's runtime, on which Firecracker's API and the agent are called.
pub fn take(
    rt: &tokio::runtime::Handle,
    paths: &Paths,
    vm: &VmId,
    opts: TakeOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Taken> {
    let store = StateStore::open(paths)?;
    store.get_recorded(vm)?;
    // One snapshot of a VM at a time.
    let _lock = state::lock::lock_exclusive(
        &paths.vm_dir(vm).join("snapshot.lock"),
        state::lock::IfMissing::Create,
        state::lock::DEFAULT_LOCK_TIMEOUT,
    )?;
    let st = store.get(vm)?;
    if st.status != VmStatus::Running {
        // (`paused`: a snapshot holds it, or `--no-resume` left it so.)
        return Err(Error::new(
            ErrorCode::VmNotRunning,
            format!(
                "VM {vm} is {}; only a running VM can be snapshotted",
                st.status.as_str()
            ),
        )
        .detail("vmId", vm.as_str()));
    }
    let (Some(api), Some(root), Some(vsock), Some(token), Some(slot)) = (
        st.api_socket.clone(),
        st.chroot_dir.clone(),
        st.vsock_socket.clone(),
        st.agent_token.clone(),
        st.network.slot,
    ) else {
        return Err(failed(
            vm,
            "its state lacks the API socket, jail, vsock, token or slot",
        ));
    };
    let parent = if opts.diff {
        let Some(base) = st.snapshot_base.clone() else {
            return Err(
                failed(vm, "a diff needs a previous snapshot of this run").fix(format!(
                    "Take a full snapshot first: `vmsan snapshot create {vm}`."
                )),
            );
        };
        Some(Snapshot::open(paths, &base).map_err(|e| {
            failed(
                vm,
                format!("its previous snapshot {base} is unusable: {}", e.message()),
            )
        })?)
    } else {
        None
    };

    let mut clock = crate::vm::stopwatch::Stopwatch::start();
    let id = next_id(paths, vm);
    let staging = Staging::new(paths, &id)?;
    // From here on the supervisor watches this process: if it dies, the VM is resumed and
    // the staging directory removed.
    let run = RunRecord::begin(&store, vm, staging.name())?;
    let fc = FirecrackerClient::new(&api);
    let agent = AgentClient::new(Endpoint::hybrid_vsock(&vsock), &token);
    let mut warnings = Vec::new();

    let version = rt
        .block_on(fc.version())
        .map_err(|e| failed(vm, format!("ask Firecracker its version: {e}")))?
        .firecracker_version;
    progress("Flushing the guest's disks");
    match rt.block_on(async { tokio::time::timeout(SYNC_TIMEOUT, agent.sync()).await }) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warnings.push(format!("the guest could not flush its disks: {e}")),
        Err(_) => warnings.push("the guest did not flush its disks in time".into()),
    }
    clock.lap(StepName::GuestSync);

    let (uid, gid) = jail_ids(slot);
    let out_dir = root.join(JAIL_OUT_DIR);
    prepare_out_dir(&out_dir, uid, gid)?;
    progress("Pausing VM");
    run.pausing()?;
    if let Err(e) = rt.block_on(fc.pause()) {
        run.released_pause(true)?;
        return Err(failed(vm, format!("pause: {e}")));
    }
    let paused_at = std::time::Instant::now();
    clock.lap(StepName::Pause);
    let captured = (|| -> Result<()> {
        progress("Creating snapshot");
        let params = SnapshotCreateParams {
            snapshot_type: Some(if opts.diff {
                SnapshotType::Diff
            } else {
                SnapshotType::Full
            }),
            snapshot_path: format!("{JAIL_OUT_DIR}/{}", files::VMSTATE),
            mem_file_path: format!("{JAIL_OUT_DIR}/{}", files::MEMORY),
        };
        rt.block_on(fc.create_snapshot(&params))
            .map_err(|e| failed(vm, format!("Firecracker: {e}")))?;
        clock.lap(StepName::FirecrackerSnapshot);
        progress("Copying the disk");
        files::clone_file(&VmFiles::new(paths, vm).disk(), &staging.path(files::DISK))?;
        clock.lap(StepName::DiskCopy);
        Ok(())
    })();
    // Resume whatever happened: a failure must never leave the VM paused.
    let paused_ms = paused_at.elapsed().as_secs_f64() * 1000.0;
    if opts.resume || captured.is_err() {
        let resumed = rt.block_on(fc.resume());
        clock.lap(StepName::Resume);
        if let Err(e) = resumed {
            let _ = std::fs::remove_dir_all(&out_dir);
            return Err(failed(vm, format!("resume: {e}")));
        }
        run.released_pause(true)?;
        progress("VM resumed");
    } else {
        run.released_pause(false)?;
    }
    let assembled = captured.and_then(|()| {
        for name in [files::VMSTATE, files::MEMORY] {
            move_out_of_jail(&out_dir.join(name), &staging.path(name))?;
        }
        if let Some(parent) = &parent {
            // Firecracker wrote only the dirty pages: lay them over the parent's memory.
            let merged = staging.path("memory.merged");
            files::clone_file(&parent.file(files::MEMORY), &merged)?;
            files::apply_diff(&staging.path(files::MEMORY), &merged)?;
            std::fs::rename(&merged, staging.path(files::MEMORY))
                .map_err(|e| Error::io("replace the diff with the merged memory", e))?;
            clock.lap(StepName::DiffMerge);
        }
        let vm_files = VmFiles::new(paths, vm);
        std::fs::copy(vm_files.config_drive(), staging.path(files::CONFIG))
            .map_err(|e| Error::io("copy the config drive", e))?;
        files::link_or_copy(&st.rootfs, &staging.path(files::ROOTFS))?;
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&out_dir);
    assembled.map_err(|e| {
        if e.code() == ErrorCode::VmSnapshotCreateFailed {
            e
        } else {
            failed(vm, e.message())
        }
    })?;

    let meta = SnapshotMeta {
        schema_version: SCHEMA_VERSION,
        id: id.clone(),
        vm_id: vm.clone(),
        created_at: time::now_rfc3339(),
        kind: if opts.diff {
            SnapshotKind::Diff
        } else {
            SnapshotKind::Full
        },
        parent: parent.map(|p| p.meta.id),
        vmsan_version: env!("CARGO_PKG_VERSION").into(),
        firecracker_version: version,
        host: HostFingerprint::current(),
        vcpus: st.vcpu_count,
        mem_mib: st.mem_size_mib,
        rootfs_fs: st.rootfs_fs,
        image: st.image.clone(),
        init: st.init,
        runtime: st.runtime,
        project: st.project.clone(),
        network: st.network.clone(),
        isolation: st.isolation,
        boot: st.boot.clone(),
        files: staging.file_infos()?,
    };
    let dir = staging.publish(paths, &meta, &token)?;
    clock.lap(StepName::Publish);
    store.update(vm, |s| {
        s.snapshot_base = Some(id.clone());
        Ok(())
    })?;
    Ok(Taken {
        meta,
        dir,
        paused_ms,
        steps: clock.steps,
        warnings,
    })
}

/// `<vm>-<now in ms>`, one ms later while that id is taken.
fn next_id(paths: &Paths, vm: &VmId) -> SnapshotId {
    let mut ms = time::epoch_ms();
    loop {
        let id = SnapshotId::new(vm, ms);
        if !paths.snapshot_dir(&id).exists() {
            return id;
        }
        ms += 1;
    }
}

/// An empty directory in the jail that only the jail's uid may write.
fn prepare_out_dir(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .map_err(|e| Error::io(format!("chown {}", dir.display()), e))
}

/// Move a file Firecracker wrote into the snapshot, owned by root from then on.
fn move_out_of_jail(src: &Path, dest: &Path) -> Result<()> {
    let md = std::fs::symlink_metadata(src)
        .map_err(|e| Error::io(format!("Firecracker did not write {}", src.display()), e))?;
    if !md.is_file() {
        return Err(Error::new(
            ErrorCode::VmSnapshotCreateFailed,
            format!("{} is not a regular file", src.display()),
        ));
    }
    match std::fs::rename(src, dest) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            files::clone_file(src, dest)?;
        }
        Err(e) => return Err(Error::io(format!("move {}", src.display()), e)),
    }
    // Checked again where it is now, out of the jail's reach: it may have been swapped for a
    // symlink between the check above and the rename. From here on nothing follows links.
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dest)
        .map_err(|e| Error::io(format!("open {}", dest.display()), e))?;
    let is_file = f
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", dest.display()), e))?
        .is_file();
    if !is_file {
        return Err(Error::new(
            ErrorCode::VmSnapshotCreateFailed,
            format!("{} is not a regular file", src.display()),
        ));
    }
    std::os::unix::fs::fchown(&f, Some(0), Some(0))
        .map_err(|e| Error::io(format!("chown {}", dest.display()), e))
}
