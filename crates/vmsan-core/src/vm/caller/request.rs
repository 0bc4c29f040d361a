//! A create request as any front end makes it (the CLI's `vmsan create`, later a server's
//! `POST`): resolve the media once, then boot `count` VMs, or restore `count` clones of a
//! snapshot in parallel, all or none; report progress as typed events and return the VMs with
//! where their time went and what the caller should be warned about.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use tokio::runtime::Handle;

use super::lifecycle::{self, Created, Origin};
use crate::error::{Error, ErrorCode, Result};
use crate::ids::SnapshotId;
use crate::paths::Paths;
use crate::snapshot::Snapshot;
use crate::validate::options::CreateOptions;
use crate::vm::protocol::SupervisorCommand;
use crate::vm::stopwatch::{Step, StepName};

/// What a create request reports while it works.
#[derive(Debug)]
pub enum Progress<'a> {
    /// A step begins ("Resolving kernel, agent and image", "Recording the VM"…).
    Step(&'a str),
    /// An image pull or build moved on.
    Image(&'a vmsan_image::Progress),
}

/// Where progress events go (shared with the image crate's worker threads).
pub type ProgressSink = Arc<dyn Fn(Progress<'_>) + Send + Sync>;

/// The VMs a create request made.
#[derive(Debug, Clone)]
pub struct Creation {
    /// In the order they came up; the first one's steps begin with the shared resolution.
    pub vms: Vec<Created>,
    /// What the caller should know though nothing failed (thin disks that promise more than
    /// the host has).
    pub warnings: Vec<String>,
}

/// How many clones are restored at once.
const PARALLEL_RESTORES: usize = 8;

/// Create `opts.count` VMs (at least one) as `opts` says: all of them or none.
pub fn create_vms(
    command: &SupervisorCommand,
    rt: &Handle,
    paths: &Paths,
    opts: &CreateOptions,
    progress: &ProgressSink,
) -> Result<Creation> {
    // Before anything is resolved or pulled for a VM that could not run.
    crate::vm::socket_room::check_home(paths)?;
    let resolving = Instant::now();
    let (mut vms, resolved) = match &opts.snapshot {
        Some(id) => restore_clones(command, rt, paths, opts, id, progress, resolving)?,
        None => boot_vms(command, rt, paths, opts, progress, resolving)?,
    };
    // Once for all the VMs: the first one's breakdown shows it.
    if let Some(first) = vms.first_mut() {
        first.steps.insert(0, resolved);
    }
    // Thin disks may promise more than the host has: say so (a guest filling its disk would
    // fill the host's filesystem), without refusing what overcommit is for.
    let warnings = crate::vm::disk_room::measure(paths)
        .ok()
        .and_then(|room| room.create_warning(0))
        .into_iter()
        .collect();
    Ok(Creation { vms, warnings })
}

fn resolved_step(name: StepName, since: Instant) -> Step {
    Step {
        name: name.as_str().into(),
        ms: since.elapsed().as_secs_f64() * 1000.0,
        parallel: false,
    }
}

/// Cold boots, one after the other, from media resolved (pulled, built) once.
fn boot_vms(
    command: &SupervisorCommand,
    rt: &Handle,
    paths: &Paths,
    opts: &CreateOptions,
    progress: &ProgressSink,
    resolving: Instant,
) -> Result<(Vec<Created>, Step)> {
    let spec = super::media::spec_of(opts);
    progress(Progress::Step("Resolving kernel, agent and image"));
    let sink = Arc::clone(progress);
    let image_progress: vmsan_image::ProgressFn =
        Arc::new(move |p: &vmsan_image::Progress| sink(Progress::Image(p)));
    let media = rt.block_on(super::media::resolve_media(
        paths,
        opts,
        Some(image_progress),
    ))?;
    let resolved = resolved_step(StepName::ResolveImage, resolving);
    let make_disk = super::media::make_disk(paths);
    let mut vms = Vec::new();
    for _ in 0..opts.count.max(1) {
        let made = lifecycle::create(
            command,
            rt,
            paths,
            &spec,
            &media,
            Origin::Boot(&make_disk),
            &mut |m| progress(Progress::Step(m)),
        );
        match made {
            Ok(c) => vms.push(c),
            Err(e) => {
                remove_all(rt, paths, &vms);
                return Err(e);
            }
        }
    }
    Ok((vms, resolved))
}

/// Clones of a snapshot, restored [`PARALLEL_RESTORES`] at a time.
fn restore_clones(
    command: &SupervisorCommand,
    rt: &Handle,
    paths: &Paths,
    opts: &CreateOptions,
    id: &SnapshotId,
    progress: &ProgressSink,
    resolving: Instant,
) -> Result<(Vec<Created>, Step)> {
    progress(Progress::Step(&format!("Restoring snapshot {id}")));
    let snap = Snapshot::open(paths, id)?;
    let count = opts.count.max(1);
    super::restore::check_host_memory(snap.meta.mem_mib, count)?;
    let (spec, media) = super::restore::plan(paths, &snap, opts, opts.network_given)?;
    let resolved = resolved_step(StepName::ResolveSnapshot, resolving);
    if count > 1 && !spec.network.published_ports.is_empty() {
        return Err(Error::new(
            ErrorCode::ValidationFlags,
            format!("Snapshot {id} publishes ports; {count} clones cannot all hold them"),
        )
        .fix("Restore one clone at a time, or give the clones other ports with --publish-port (one clone)."));
    }
    let results = std::sync::Mutex::new(Vec::new());
    let next = AtomicU32::new(0);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_RESTORES.min(count as usize) {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    // Clones come up side by side: their steps would interleave, so none.
                    let r = lifecycle::create(
                        command,
                        rt,
                        paths,
                        &spec,
                        &media,
                        Origin::Snapshot(&snap),
                        &mut |_| {},
                    );
                    if let Ok(mut v) = results.lock() {
                        v.push(r);
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let vms: Vec<Created> = ok.into_iter().filter_map(Result::ok).collect();
    if let Some(Err(first)) = failed.into_iter().next() {
        remove_all(rt, paths, &vms);
        return Err(first);
    }
    Ok((vms, resolved))
}

/// Undo the VMs of a request that failed (best effort: each one's own teardown reports).
fn remove_all(rt: &Handle, paths: &Paths, vms: &[Created]) {
    for c in vms {
        let _ = lifecycle::remove(rt, paths, &c.state.id, true);
    }
}
