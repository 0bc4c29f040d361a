//! `create` and `restore` of one VM (a request's, see [`super::request`]), `start`, `stop` and
//! `remove`.
//!
//! `create` and `start` record the VM, prepare its disk and config drive, and hand the run to
//! a detached supervisor, then wait for its one-line report. Any failure undoes what was done:
//! a VM that failed to create leaves nothing behind.

use std::time::Duration;

use tokio::runtime::Handle;
use vmsan_proto::{GuestConfig, GuestNetwork};

use super::spawn::{Spawned, run_supervisor};
use crate::error::{Error, ErrorCode, Result};
use crate::ids::VmId;
use crate::paths::Paths;
use crate::state::{StateStore, VmState, VmStatus, ip_text};
use crate::vm::files::{VmFiles, jail_ids};
use crate::vm::protocol::{self, SupervisorCommand, boot_timeout};
use crate::vm::spec::{BootMedia, VmSpec};
use crate::vm::stopwatch::{Step, StepName, Stopwatch};
use crate::{process, time};

/// How long `stop` gives the supervisor to stop the guest gracefully.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// The boot settings a new VM records: its own kernel arguments when it gave any (even none),
/// else those stored with its kernel.
fn effective_boot(
    spec: &crate::state::BootSettings,
    media: &BootMedia,
) -> crate::state::BootSettings {
    let mut boot = spec.clone();
    boot.kernel_args = spec
        .kernel_args
        .clone()
        .or_else(|| media.kernel_args.clone())
        .filter(|a| !a.is_empty());
    boot
}

/// Prepares the VM's writable disk: an empty ext4 filesystem of the given size.
pub(crate) type DiskMaker<'a> = &'a dyn Fn(&std::path::Path, u64) -> Result<()>;

/// A created VM and where the time to create it went.
#[derive(Debug, Clone)]
pub struct Created {
    /// Its state (running).
    pub state: VmState,
    /// The steps, in order: this process's, then the supervisor's.
    pub steps: Vec<Step>,
}

/// Where a new VM's first run comes from.
#[derive(Clone, Copy)]
pub(super) enum Origin<'a> {
    /// A cold boot on a fresh disk.
    Boot(DiskMaker<'a>),
    /// A snapshot: its disk, its config drive, and a load instead of a boot.
    Snapshot(&'a crate::snapshot::Snapshot),
}

/// Create a VM and give it its first run: a cold boot, or a restore of a snapshot (planned with
/// [`super::restore::plan`]). Returns its state once the agent has announced itself (a restored
/// one: once it answers to the VM's own token).
pub(super) fn create(
    command: &SupervisorCommand,
    rt: &Handle,
    paths: &Paths,
    spec: &VmSpec,
    media: &BootMedia,
    origin: Origin<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<Created> {
    check_spec(spec)?;
    crate::vm::socket_room::check_home(paths)?;
    let mut clock = Stopwatch::start();
    let store = StateStore::open(paths)?;
    let me = process::identify(std::process::id());
    let token = random_token();
    progress("Recording the VM");
    let st = store.create(|id, slot| {
        let now = time::now_rfc3339();
        let mut st = VmState::new(id.clone(), &now);
        st.status = VmStatus::Creating;
        st.supervisor = me;
        st.project = spec.project.clone();
        st.runtime = spec.runtime;
        st.image = media.image.clone();
        st.vcpu_count = spec.vcpus;
        st.mem_size_mib = spec.memory_mib;
        st.disk_size_gb = u32::try_from(spec.disk_bytes.div_ceil(1 << 30)).unwrap_or(u32::MAX);
        st.kernel = media.kernel.clone();
        st.initrd = media.initrd.clone();
        st.rootfs = media.rootfs.clone();
        st.rootfs_fs = media.rootfs_fs;
        st.init = spec.init;
        st.network = spec.network.clone();
        fill_addresses(&mut st.network, id, slot);
        st.isolation = spec.isolation;
        st.boot = effective_boot(&spec.boot, media);
        st.timeout_ms = spec
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        st.agent_token = Some(token.clone());
        if let Origin::Snapshot(snap) = origin {
            st.snapshot = Some(snap.meta.id.clone());
            st.snapshot_base = Some(snap.meta.id.clone());
            st.restore_pending = true;
        }
        st
    })?;
    let id = st.id.clone();
    clock.lap(StepName::Record);
    // The supervisor starts now and sets up the network (and leaves our cgroups) while we
    // prepare the disk and config drive; it lays out the jail once we say they are ready.
    let spawned_at = time::epoch_ms_precise();
    let mut sup = match Spawned::start(command, paths, &id, boot_timeout(&st.boot)) {
        Ok(sup) => sup,
        Err(e) => {
            let _ = discard(rt, paths, &id);
            return Err(e.detail("vmId", id.as_str()));
        }
    };
    clock.lap(StepName::SupervisorSpawn);
    // The disk and the config drive, each on its own thread: the supervisor waits for both.
    let prepared = (|| -> Result<()> {
        let files = VmFiles::new(paths, &id);
        let slot = st.network.slot.unwrap_or(0);
        let (uid, gid) = jail_ids(slot);
        let snap = match origin {
            Origin::Boot(_) => None,
            Origin::Snapshot(snap) => Some(snap),
        };
        let write_config = || -> Result<f64> {
            let t = std::time::Instant::now();
            let config = match snap {
                None => guest_config(&st, media),
                // The source's identity, which the snapshot's memory also holds; the
                // supervisor replaces it with this VM's once the restored agent has taken it.
                Some(snap) => GuestConfig::from_drive_bytes(
                    &std::fs::read(snap.file(crate::snapshot::files::CONFIG))
                        .map_err(|e| Error::io("read the snapshot's config drive", e))?,
                )
                .map_err(|e| {
                    crate::snapshot::files::corrupt(&snap.meta.id, format!("config drive: {e}"))
                })?,
            };
            crate::vm::config_drive::write(&files.config_drive(), &config, uid, gid)?;
            Ok(t.elapsed().as_secs_f64() * 1000.0)
        };
        progress("Preparing the disk");
        let (disk, config) = std::thread::scope(|s| {
            let config = s.spawn(write_config);
            let t = std::time::Instant::now();
            let disk = match origin {
                Origin::Boot(make_disk) => make_disk(&files.disk(), spec.disk_bytes),
                Origin::Snapshot(snap) => crate::snapshot::files::clone_file(
                    &snap.file(crate::snapshot::files::DISK),
                    &files.disk(),
                ),
            }
            .and_then(|()| {
                std::os::unix::fs::chown(files.disk(), Some(uid), Some(gid))
                    .map_err(|e| Error::io("chown the VM's disk", e))
            })
            .map(|()| t.elapsed().as_secs_f64() * 1000.0);
            let config = config.join().unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorCode::Internal,
                    "the config drive's thread panicked",
                ))
            });
            (disk, config)
        });
        clock.add_parallel(StepName::Disk, disk?);
        clock.add_parallel(StepName::ConfigDrive, config?);
        Ok(())
    })();
    let result = match prepared {
        Ok(()) => {
            progress("Booting");
            sup.go();
            sup.wait_report().map(|booted| {
                // From our spawn call returning to the supervisor's `main`: loading it.
                let spawn_ms = clock.took(StepName::SupervisorSpawn).unwrap_or(0.0);
                clock.add(
                    StepName::SupervisorProcessStart,
                    (booted.started_at - spawned_at - spawn_ms).max(0.0),
                );
                clock.steps.extend(booted.steps);
            })
        }
        Err(e) => {
            // The supervisor sees its input close without the go-ahead: it undoes its network
            // and exits. Wait for that before cleaning up the rest.
            let _ = sup.wait_report();
            Err(e)
        }
    };
    match result {
        Ok(()) => Ok(Created {
            state: store.get(&id)?,
            steps: clock.steps,
        }),
        Err(e) => {
            // Nothing of a failed create stays: the supervisor tore down what it set up.
            // (`VMSAN_KEEP_FAILED=1` keeps the VM's directory and logs for a post-mortem.)
            if std::env::var_os("VMSAN_KEEP_FAILED").is_none_or(|v| v != "1") {
                let _ = discard(rt, paths, &id);
            }
            Err(e.detail("vmId", id.as_str()))
        }
    }
}

/// Reject settings no VM can run with, before anything is prepared. (The CLI cannot ask for
/// them; another front end's request could.)
fn check_spec(spec: &VmSpec) -> Result<()> {
    if !spec.isolation.netns {
        return Err(Error::new(
            ErrorCode::ValidationFlags,
            "A VM without a network namespace of its own is not supported",
        )
        .why(
            "Each VM's own network namespace is what makes its egress policy hold; without it \
             the rules would have to live in the host's namespace, where they would affect \
             everything else.",
        )
        .fix("Leave the VM's network namespace on (isolation.netns: true)."));
    }
    Ok(())
}

/// Start a stopped VM again: same disk, same identity.
pub fn start(command: &SupervisorCommand, paths: &Paths, id: &VmId) -> Result<VmState> {
    let store = StateStore::open(paths)?;
    let me = process::identify(std::process::id());
    let mut boot = crate::state::BootSettings::default();
    store.update(id, |st| {
        let mut seen = st.clone();
        crate::state::reconcile(&mut seen);
        boot = st.boot.clone();
        match seen.status {
            VmStatus::Stopped | VmStatus::Error
                if seen.supervisor.is_none_or(|p| !process::is_alive(&p)) => {}
            other => {
                return Err(Error::new(
                    ErrorCode::VmNotStopped,
                    format!(
                        "VM {id} is {}; only a stopped VM can be started",
                        other.as_str()
                    ),
                )
                .detail("vmId", id.as_str()));
            }
        }
        if !VmFiles::new(paths, id).disk().exists() {
            return Err(Error::new(
                ErrorCode::VmChrootNotFound,
                format!("VM {id} has no disk any more"),
            )
            .detail("vmId", id.as_str()));
        }
        st.status = VmStatus::Creating;
        st.supervisor = me;
        st.error = None;
        Ok(())
    })?;
    match run_supervisor(command, paths, id, &boot) {
        Ok(_) => store.get(id),
        Err(e) => {
            let _ = store.update(id, |st| {
                st.status = VmStatus::Error;
                st.supervisor = None;
                st.error = Some(e.message().to_owned());
                Ok(())
            });
            Err(e)
        }
    }
}

/// What `stop` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It was running and is stopped now.
    Stopped,
    /// It was already stopped.
    AlreadyStopped,
}

/// Stop a VM gracefully (its supervisor asks the agent to power off, then Ctrl-Alt-Del, then
/// kills), or clean up after a VM whose supervisor is gone.
/// `rt` is the caller's runtime: the host's network is torn down on it if the supervisor is gone.
pub fn stop(rt: &Handle, paths: &Paths, id: &VmId) -> Result<StopOutcome> {
    let store = StateStore::open(paths)?;
    let st = store.get_recorded(id)?;
    if st.status == VmStatus::Stopped {
        return Ok(StopOutcome::AlreadyStopped);
    }
    if let Some(sup) = st.supervisor {
        if protocol::request_stop(&sup, STOP_TIMEOUT) {
            let after = store.get_recorded(id)?;
            if after.status == VmStatus::Stopped {
                return Ok(StopOutcome::Stopped);
            }
        } else {
            protocol::kill_and_wait(&sup, Duration::from_secs(5));
        }
    }
    // The supervisor is gone (killed, crashed, or stuck): do its cleanup here.
    cleanup_unsupervised(
        rt,
        paths,
        &store,
        id,
        "stopped by `vmsan stop` (its supervisor was gone)",
    )?;
    Ok(StopOutcome::Stopped)
}

/// Remove a VM and everything it has on the host. A VM that is not stopped is refused unless
/// `force`, which stops it first.
/// `rt` is the caller's runtime (see [`stop`]).
pub fn remove(rt: &Handle, paths: &Paths, id: &VmId, force: bool) -> Result<()> {
    let store = StateStore::open(paths)?;
    let st = store.get(id)?;
    if is_active(&st) {
        if !force {
            return Err(Error::new(
                ErrorCode::VmNotStopped,
                format!("Cannot remove {} VM {id}", st.status.as_str()),
            )
            .detail("vmId", id.as_str()));
        }
        stop(rt, paths, id)?;
    }
    discard(rt, paths, id)
}

/// Whether anything of the VM still runs: it is running or being created, or a process of it
/// (Firecracker, or its supervisor) is alive even though the VM failed. A VM in `error` with
/// nothing left running can be removed without `--force`, like a stopped one.
pub fn is_active(st: &VmState) -> bool {
    match st.status {
        VmStatus::Running | VmStatus::Paused | VmStatus::Creating => true,
        VmStatus::Stopped => false,
        VmStatus::Error => [st.vmm, st.supervisor]
            .iter()
            .flatten()
            .any(process::is_alive),
    }
}

/// Tear down whatever a VM may still hold on the host and delete its record and files.
fn discard(rt: &Handle, paths: &Paths, id: &VmId) -> Result<()> {
    let store = StateStore::open(paths)?;
    if let Ok(st) = store.get_recorded(id) {
        release_host(rt, paths, &st)?;
    }
    store.remove(id)?;
    // The parent cgroups go with the last VM (of every home: they are host-wide).
    let last = store.host_claims().is_ok_and(|c| c.is_empty());
    crate::vm::host::remove_unused_cgroup_parents(last);
    Ok(())
}

fn cleanup_unsupervised(
    rt: &Handle,
    paths: &Paths,
    store: &StateStore,
    id: &VmId,
    reason: &str,
) -> Result<()> {
    release_host(rt, paths, &store.get_recorded(id)?)?;
    store.update(id, |st| {
        st.status = VmStatus::Stopped;
        st.pid = None;
        st.vmm = None;
        st.supervisor = None;
        st.timeout_at = None;
        st.error = Some(reason.to_owned());
        Ok(())
    })?;
    Ok(())
}

/// End whatever still runs for a VM (its supervisor, then Firecracker), then tear down what it
/// holds on the host, so teardown finds nothing in use.
fn release_host(rt: &Handle, paths: &Paths, st: &VmState) -> Result<()> {
    for p in [st.supervisor, st.vmm].into_iter().flatten() {
        if p.pid != std::process::id() {
            protocol::kill_and_wait(&p, Duration::from_secs(10));
        }
    }
    for problem in rt.block_on(crate::vm::host::teardown(paths, st)) {
        tracing::warn!(vm = %st.id, "cleanup incomplete: {problem}");
    }
    Ok(())
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Addresses of the slot, recorded so `inspect` shows them and `start` reuses them.
fn fill_addresses(net: &mut crate::state::NetworkState, id: &VmId, slot: u32) {
    if let Ok(s) = vmsan_net::Slot::new(slot) {
        let a = s.addrs();
        net.tap_device = "tap0".into();
        net.host_ip = Some(a.tap_ip);
        net.guest_ip = Some(a.guest_ip);
        net.subnet_mask = Some(std::net::Ipv4Addr::new(255, 255, 255, 252));
        net.mac_address = a.guest_mac_string();
        net.netns_name = Some(format!("vmsan-{id}"));
    }
}

fn guest_config(st: &VmState, media: &BootMedia) -> GuestConfig {
    let net = &st.network;
    GuestConfig {
        version: vmsan_proto::GUEST_CONFIG_VERSION,
        vm_id: st.id.to_string(),
        hostname: st.id.to_string(),
        token: st.agent_token.clone().unwrap_or_default(),
        network: Some(GuestNetwork {
            address: format!("{}/30", ip_text(net.guest_ip)),
            gateway: ip_text(net.host_ip),
            mac: Some(net.mac_address.clone()),
            // The VM's DNS filter listens on the gateway address.
            dns: vec![ip_text(net.host_ip)],
            mtu: None,
        }),
        default_user: None,
        env: Default::default(),
        init: st.init,
        image: media.image_config.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The CLI has no flag for it, but the engine's `create` is the guard: a request for a VM
    /// without its own network namespace is refused before anything is recorded.
    #[test]
    fn a_vm_without_its_own_network_namespace_is_refused_before_anything_is_made() {
        let home = tempfile::tempdir().unwrap();
        let paths = Paths::new(home.path());
        let spec = VmSpec {
            vcpus: 1,
            memory_mib: 128,
            disk_bytes: 1 << 30,
            project: String::new(),
            runtime: crate::state::RuntimeName::Image,
            timeout: None,
            network: crate::state::NetworkState::default(),
            isolation: crate::state::Isolation {
                netns: false,
                ..Default::default()
            },
            init: vmsan_proto::InitMode::Agent,
            boot: crate::state::BootSettings::default(),
        };
        let media = BootMedia {
            kernel: "/nonexistent/vmlinux".into(),
            initrd: "/nonexistent/initrd".into(),
            rootfs: "/nonexistent/rootfs".into(),
            rootfs_fs: vmsan_proto::FsType::Squashfs,
            image: None,
            image_config: vmsan_proto::ImageConfig::default(),
            kernel_args: None,
        };
        // Refused before any supervisor could start: the command is never run.
        let never = crate::vm::SupervisorCommand {
            program: "/nonexistent/vmsan".into(),
            args: Vec::new(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = create(
            &never,
            rt.handle(),
            &paths,
            &spec,
            &media,
            Origin::Boot(&|_, _| Ok(())),
            &mut |_| {},
        )
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::ValidationFlags, "{e}");
        assert!(e.message().contains("network namespace"), "{e}");
        assert!(
            !paths.vms_dir().exists(),
            "a refused create recorded something"
        );
    }
}
