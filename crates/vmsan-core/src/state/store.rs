//! The state store: one directory per VM holding a versioned `state.json`.
//!
//! - Writes are atomic: a temp file in the same directory, fsync, rename, fsync of the
//!   directory. A reader (which takes no lock) sees the old or the new document, never a mix,
//!   even if the writer is killed half-way.
//! - Every read-modify-write holds the VM's lock (`<vm dir>/lock`), so no update is lost.
//! - Creating a VM (id and slot allocation) holds the host-wide `/run/vmsan/slots.lock`;
//!   slots are claimed host-wide by files in `/run/vmsan/slots/` (see [`super::claims`]); the
//!   VM's directory is filled under a temporary name and renamed into place, so a VM directory
//!   always has a state file.
//! - Removing renames the directory out of the way first, so a VM disappears at once.
//! - Every read reconciles the recorded status with the processes that really exist.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, ErrorCode, Result};
use crate::ids::VmId;
use crate::paths::Paths;
use crate::process;
use crate::state::claims::{Claim, HostSlots};
use crate::state::lock::{self, IfMissing, LockGuard};
use crate::state::model::{STATE_VERSION, VmState, VmStatus};
use crate::time::now_rfc3339;

/// Upper bound on network slots; the network layer's address plan supports this many VMs.
pub const MAX_SLOTS: u32 = 4096;

/// The largest state file we will parse (a guard against a corrupted or hostile file).
const MAX_STATE_BYTES: u64 = 1 << 20;

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";

/// One entry of [`StateStore::list`].
#[derive(Debug, Clone)]
pub enum ListEntry {
    /// A readable VM, reconciled with reality.
    Vm(Box<VmState>),
    /// A VM directory whose state could not be read; `list` reports it and goes on.
    Corrupt {
        /// The directory name (a valid VM id).
        id: String,
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        error: String,
    },
}

/// A held per-VM lock. Mutations through [`StateStore::update`] take it themselves; take it
/// explicitly to keep other commands off a VM for a longer operation (stop, snapshot).
#[derive(Debug)]
pub struct VmLock {
    id: VmId,
    _guard: LockGuard,
}

impl VmLock {
    /// The locked VM.
    pub fn id(&self) -> &VmId {
        &self.id
    }
}

/// The VM state store under a vmsan home directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    paths: Paths,
    lock_timeout: Duration,
}

impl StateStore {
    /// Open the store for reading and writing. Creates nothing: a missing store simply has no
    /// VMs (so `vmsan list` works on a fresh host and for non-root users).
    pub fn open(paths: &Paths) -> Result<Self> {
        Ok(Self {
            paths: paths.clone(),
            lock_timeout: lock::DEFAULT_LOCK_TIMEOUT,
        })
    }

    /// Use another lock timeout (tests, impatient callers).
    #[must_use]
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The paths this store uses.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Create the home, `vms/` and `locks/` directories if missing: mode 0750, and owned by
    /// the `vmsan` group when it exists so its members can read state without sudo.
    pub fn init(&self) -> Result<()> {
        let gid = super::group::vmsan_gid();
        for dir in [
            self.paths.home().to_owned(),
            self.paths.vms_dir(),
            self.paths.locks_dir(),
        ] {
            ensure_dir(&dir, gid)?;
        }
        Ok(())
    }

    /// Every VM, newest first, reconciled. Unreadable entries are reported, never fatal.
    pub fn list(&self) -> Result<Vec<ListEntry>> {
        let dir = self.paths.vms_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(permission_hint(Error::io(
                    format!("read {}", dir.display()),
                    e,
                )));
            }
        };
        let mut ids = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
            // Temporary and trash directories start with '.', and are not VMs.
            if let Some(id) = entry.file_name().to_str().and_then(|n| VmId::parse(n).ok()) {
                ids.push(id);
            }
        }
        // A host with many VMs lists them on every core: reading a state file is mostly
        // system calls, which run in parallel.
        let workers = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(4);
        let mut out = if ids.len() >= 64 && workers > 1 {
            let chunk = ids.len().div_ceil(workers);
            std::thread::scope(|s| {
                let handles: Vec<_> = ids
                    .chunks(chunk)
                    .map(|part| {
                        s.spawn(move || {
                            part.iter()
                                .filter_map(|id| self.entry(id))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_default())
                    .collect::<Vec<_>>()
            })
        } else {
            ids.iter().filter_map(|id| self.entry(id)).collect()
        };
        // Newest first; RFC 3339 UTC timestamps sort as text.
        out.sort_unstable_by(newest_first);
        Ok(out)
    }

    /// One entry of `list`: the reconciled state, or what is wrong with it; `None` when the
    /// VM vanished meanwhile.
    fn entry(&self, id: &VmId) -> Option<ListEntry> {
        let path = self.paths.state_file(id);
        match read_state(&path, id) {
            Ok(mut st) => {
                reconcile(&mut st);
                Some(ListEntry::Vm(Box::new(st)))
            }
            Err(e) if e.code() == ErrorCode::VmNotFound => None,
            Err(e) => Some(ListEntry::Corrupt {
                id: id.to_string(),
                path,
                error: e.message().to_owned(),
            }),
        }
    }

    /// One VM, reconciled with reality.
    pub fn get(&self, id: &VmId) -> Result<VmState> {
        let mut st = self.get_recorded(id)?;
        reconcile(&mut st);
        Ok(st)
    }

    /// One VM exactly as recorded (no reconciliation).
    pub fn get_recorded(&self, id: &VmId) -> Result<VmState> {
        read_state(&self.paths.state_file(id), id)
    }

    /// Lock one VM for a longer operation.
    pub fn lock_vm(&self, id: &VmId) -> Result<VmLock> {
        let path = self.paths.vm_dir(id).join(LOCK_FILE);
        match lock::lock_exclusive(&path, IfMissing::Absent, self.lock_timeout)? {
            Some(guard) => Ok(VmLock {
                id: id.clone(),
                _guard: guard,
            }),
            None => Err(not_found(id)),
        }
    }

    /// Create a VM record: pick a fresh id and the lowest free slot, let `build` fill the
    /// state, and write it, all under the host-wide slot lock (slots and VM ids are unique
    /// across every home on the host, see [`super::claims`]).
    pub fn create(&self, build: impl FnOnce(&VmId, u32) -> VmState) -> Result<VmState> {
        self.init()?;
        let host = HostSlots::new(&self.paths);
        let _slots = host.lock(self.lock_timeout)?;

        let live = host.live_pruning()?;
        let slot = lowest_free_slot(&live)?;
        // The VM's network namespace is named after its id host-wide: no two homes may
        // hand out the same id while both VMs exist.
        let id = loop {
            let id = VmId::generate();
            if !self.paths.vm_dir(&id).exists() && !live.iter().any(|c| c.vm == id) {
                break id;
            }
        };
        let slot_file = host.write(slot, &id)?;

        let mut st = build(&id, slot);
        st.id = id.clone();
        st.network.slot = Some(slot);
        st.state_version = STATE_VERSION;
        st.generation = 1;
        st.updated_at = now_rfc3339();

        // Fill a hidden directory, then rename it into place: a VM directory always has a
        // complete state file.
        let gid = super::group::vmsan_gid();
        let staging = self
            .paths
            .vms_dir()
            .join(format!(".new-{id}-{}", std::process::id()));
        ensure_dir(&staging, gid)?;
        let result = (|| {
            File::options()
                .create_new(true)
                .write(true)
                .mode(0o640)
                .open(staging.join(LOCK_FILE))
                .map_err(|e| Error::io("create VM lock file", e))?;
            write_atomic(&staging, &st)?;
            fs::rename(&staging, self.paths.vm_dir(&id)).map_err(|e| {
                Error::io(format!("create {}", self.paths.vm_dir(&id).display()), e)
            })?;
            fsync_dir(&self.paths.vms_dir())
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
            let _ = fs::remove_file(&slot_file);
        }
        result?;
        Ok(st)
    }

    /// The live host-wide slot claims (every home's VMs), read without changing anything.
    pub fn host_claims(&self) -> Result<Vec<Claim>> {
        HostSlots::new(&self.paths).live()
    }

    /// Read-modify-write one VM under its lock. `f` sees the recorded (not reconciled) state;
    /// returning an error leaves the file untouched.
    pub fn update(&self, id: &VmId, f: impl FnOnce(&mut VmState) -> Result<()>) -> Result<VmState> {
        let lock = self.lock_vm(id)?;
        self.update_locked(&lock, f)
    }

    /// Like [`update`](Self::update), for a caller that already holds the VM's lock.
    pub fn update_locked(
        &self,
        lock: &VmLock,
        f: impl FnOnce(&mut VmState) -> Result<()>,
    ) -> Result<VmState> {
        let id = lock.id();
        let mut st = self.get_recorded(id)?;
        f(&mut st)?;
        st.id = id.clone();
        st.state_version = STATE_VERSION;
        st.generation = st.generation.wrapping_add(1);
        st.updated_at = now_rfc3339();
        write_atomic(&self.paths.vm_dir(id), &st)?;
        Ok(st)
    }

    /// Remove a VM's record and directory. Idempotent: removing a missing VM is `Ok(false)`.
    pub fn remove(&self, id: &VmId) -> Result<bool> {
        let lock = match self.lock_vm(id) {
            Ok(l) => l,
            Err(e) if e.code() == ErrorCode::VmNotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        self.remove_locked(lock)
    }

    /// Remove a VM whose lock the caller holds.
    pub fn remove_locked(&self, lock: VmLock) -> Result<bool> {
        let lock_id = lock.id().clone();
        let dir = self.paths.vm_dir(lock.id());
        let trash =
            self.paths
                .vms_dir()
                .join(format!(".trash-{}-{}", lock.id(), std::process::id()));
        match fs::rename(&dir, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(format!("remove {}", dir.display()), e)),
        }
        drop(lock);
        fsync_dir(&self.paths.vms_dir())?;
        let slot = fs::read(trash.join(STATE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<VmState>(&b).ok())
            .and_then(|st| st.network.slot);
        fs::remove_dir_all(&trash)
            .map_err(|e| Error::io(format!("remove {}", trash.display()), e))?;
        // Free the slot if the claim is still this VM's. The check and the delete happen under
        // the slot lock: a create may meanwhile have reclaimed the slot (this VM's directory is
        // already gone) and given it to a new VM, whose claim must survive. (An unreadable state
        // leaves its claim for the next create to reclaim.)
        if let Some(slot) = slot {
            let host = HostSlots::new(&self.paths);
            if let Some(_slots) = host.lock_if_present(self.lock_timeout)? {
                host.release(slot, &lock_id);
            }
        }
        Ok(true)
    }
}

/// The lowest slot no live claim holds.
fn lowest_free_slot(live: &[Claim]) -> Result<u32> {
    let used: HashSet<u32> = live.iter().map(|c| c.slot).collect();
    (0..MAX_SLOTS).find(|s| !used.contains(s)).ok_or_else(|| {
        Error::new(
            ErrorCode::VmNetworkSlotsExhausted,
            format!("No free network slot (max {MAX_SLOTS} VMs on this host, all homes together)"),
        )
    })
}

/// Bring a recorded state in line with the processes that really exist: a VM recorded as
/// running whose Firecracker is gone, or one stuck in `creating` whose creator died, is in
/// `error`, with the reason.
pub fn reconcile(st: &mut VmState) {
    match st.status {
        VmStatus::Running | VmStatus::Paused => {
            if let Some(p) = st.vmm.as_ref().filter(|p| !process::is_alive(p)) {
                st.status = VmStatus::Error;
                st.error = Some(format!(
                    "the VM's Firecracker process (pid {}) is gone: it crashed or was killed",
                    p.pid
                ));
            } else if let Some(p) = st.supervisor.as_ref().filter(|p| !process::is_alive(p)) {
                st.status = VmStatus::Error;
                st.error = Some(format!(
                    "the VM's supervisor (pid {}) is gone: the VM runs unsupervised (no timeout, \
                     no DNS filter); stop or remove it",
                    p.pid
                ));
            }
        }
        VmStatus::Creating => {
            if st
                .supervisor
                .as_ref()
                .is_some_and(|p| !process::is_alive(p))
            {
                st.status = VmStatus::Error;
                st.error = Some("create was interrupted: the creating process is gone".into());
            }
        }
        VmStatus::Stopped | VmStatus::Error => {}
    }
}

fn newest_first(a: &ListEntry, b: &ListEntry) -> std::cmp::Ordering {
    fn key(e: &ListEntry) -> (&str, &str) {
        match e {
            ListEntry::Vm(st) => (&st.created_at, st.id.as_str()),
            ListEntry::Corrupt { id, .. } => ("", id),
        }
    }
    key(b).cmp(&key(a))
}

fn not_found(id: &VmId) -> Error {
    Error::new(ErrorCode::VmNotFound, format!("VM not found: {id}")).detail("vmId", id.as_str())
}

fn permission_hint(e: Error) -> Error {
    if e.code() == ErrorCode::PermissionDenied {
        e.why("The vmsan state directory is readable by root and the `vmsan` group only.")
            .fix("Run with sudo, or ask an admin to add you to the `vmsan` group.")
    } else {
        e
    }
}

fn read_state(path: &Path, id: &VmId) -> Result<VmState> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found(id)),
        Err(e) => {
            return Err(permission_hint(Error::io(
                format!("read {}", path.display()),
                e,
            )));
        }
    };
    let corrupt = |msg: String| {
        Error::new(
            ErrorCode::VmStateCorrupt,
            format!("Corrupt state for {id}: {msg}"),
        )
        .detail("vmId", id.as_str())
        .detail("path", path.display().to_string())
    };
    // Usually one read system call: `list` reads a thousand of these. State files are a few
    // KiB; a larger one is read on until its end (or the size limit).
    let mut bytes = vec![0u8; 16 * 1024];
    let mut len = 0;
    loop {
        if len == bytes.len() {
            if bytes.len() as u64 > MAX_STATE_BYTES {
                return Err(corrupt("larger than 1 MiB".into()));
            }
            bytes.resize(bytes.len() * 2, 0);
        }
        match std::io::Read::read(&mut file, &mut bytes[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                // A short read of a regular file means its end.
                if len < bytes.len() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        }
    }
    bytes.truncate(len);
    if len as u64 > MAX_STATE_BYTES {
        return Err(corrupt("larger than 1 MiB".into()));
    }
    let st: VmState = match serde_json::from_slice(&bytes) {
        Ok(st) => st,
        // Say why when the version is the reason, rather than which field did not fit.
        Err(e) => {
            return Err(corrupt(
                version_problem(&bytes).unwrap_or_else(|| e.to_string()),
            ));
        }
    };
    if st.state_version != STATE_VERSION {
        return Err(corrupt(version_text(u64::from(st.state_version))));
    }
    if st.id != *id {
        return Err(corrupt(format!("it names another VM ({})", st.id)));
    }
    Ok(st)
}

/// The version problem of a state document that did not parse, if that is the problem.
fn version_problem(bytes: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    match value
        .get("stateVersion")
        .and_then(serde_json::Value::as_u64)
    {
        Some(v) if v == u64::from(STATE_VERSION) => None,
        Some(v) => Some(version_text(v)),
        None => Some("no stateVersion".into()),
    }
}

fn version_text(v: u64) -> String {
    if v > u64::from(STATE_VERSION) {
        format!("state version {v} was written by a newer vmsan (this one reads {STATE_VERSION})")
    } else {
        format!("unsupported state version {v}")
    }
}

/// Write `state.json` atomically in `dir`. The caller holds the VM's lock (or owns `dir`
/// exclusively), so any other temp file there is debris of a killed writer and is removed.
fn write_atomic(dir: &Path, st: &VmState) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(st)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("serialise state: {e}")))?;
    bytes.push(b'\n');
    sweep_temp_files(dir);
    let tmp = dir.join(format!(
        ".{STATE_FILE}.{}.{:08x}.tmp",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
        f.write_all(&bytes)
            .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
        f.sync_all()
            .map_err(|e| Error::io(format!("fsync {}", tmp.display()), e))?;
        fs::rename(&tmp, dir.join(STATE_FILE))
            .map_err(|e| Error::io(format!("replace {}", dir.join(STATE_FILE).display()), e))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn sweep_temp_files(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&format!(".{STATE_FILE}.")) && name.ends_with(".tmp") {
            let _ = fs::remove_file(e.path());
        }
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync {}", dir.display()), e))
}

/// Create `dir` (mode 0750, setgid so files inherit the `vmsan` group) if missing.
fn ensure_dir(dir: &Path, gid: Option<u32>) -> Result<()> {
    match fs::DirBuilder::new().mode(0o750).create(dir) {
        Ok(()) => {
            if let Some(gid) = gid {
                std::os::unix::fs::chown(dir, None, Some(gid))
                    .map_err(|e| Error::io(format!("chown {}", dir.display()), e))?;
                fs::set_permissions(dir, fs::Permissions::from_mode(0o2750))
                    .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let md = fs::symlink_metadata(dir)
                .map_err(|e| Error::io(format!("stat {}", dir.display()), e))?;
            if md.is_dir() {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorCode::ValidationPath,
                    format!("{} exists and is not a directory", dir.display()),
                ))
            }
        }
        Err(e) => Err(permission_hint(Error::io(
            format!("create {}", dir.display()),
            e,
        ))),
    }
}
