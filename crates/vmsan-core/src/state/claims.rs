//! Host-wide network slot claims.
//!
//! A slot names host-wide things: the host link `vmsan-h<N>`, the guest and transit subnets
//! and the VM's elements in the shared host table. Two vmsan homes on one host must therefore
//! never hand out the same slot, so claims are not kept in a home but in one root-owned
//! directory, `/run/vmsan/slots` ([`Paths::slots_dir`]): one file per taken slot naming the
//! VM and the home (path, device and inode) that hold it, taken and released under
//! `/run/vmsan/slots.lock`. `/run` is a tmpfs: after a reboot no VM runs and no claim is left.
//!
//! A claim is live while its VM's directory exists in the home it names. A claim that is not
//! live is debris (an interrupted create or remove, or a home deleted under running VMs) and
//! is reclaimed: every create holds the lock from writing its claim to the moment its VM
//! directory appears, so no create is half-way while another one looks.

use std::fs::{self, File};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, ErrorCode, Result};
use crate::ids::VmId;
use crate::paths::Paths;
use crate::state::lock::{self, IfMissing, LockGuard};

/// Claims never hold more than this (a guard against a corrupt or hostile file).
const MAX_CLAIM_BYTES: u64 = 8 << 10;

/// One slot claim: who holds slot `slot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The slot.
    pub slot: u32,
    /// The VM holding it.
    pub vm: VmId,
    /// Its home (canonical path when claimed).
    pub home: PathBuf,
    /// Device and inode of the home directory when claimed: a home deleted and made again
    /// at the same path is another home.
    pub home_dev_ino: (u64, u64),
}

impl Claim {
    fn render(&self) -> String {
        format!(
            "vm {}\nhome-dev-ino {} {}\nhome {}\n",
            self.vm,
            self.home_dev_ino.0,
            self.home_dev_ino.1,
            self.home.display()
        )
    }

    fn parse(slot: u32, text: &str) -> Option<Self> {
        let mut vm = None;
        let mut dev_ino = None;
        let mut home = None;
        for line in text.lines() {
            let (key, value) = line.split_once(' ')?;
            match key {
                "vm" => vm = Some(VmId::parse(value).ok()?),
                "home-dev-ino" => {
                    let (d, i) = value.split_once(' ')?;
                    dev_ino = Some((d.parse().ok()?, i.parse().ok()?));
                }
                "home" => home = Some(PathBuf::from(value)).filter(|p| p.is_absolute()),
                _ => return None,
            }
        }
        Some(Self {
            slot,
            vm: vm?,
            home: home?,
            home_dev_ino: dev_ino?,
        })
    }

    /// Whether the VM still exists: its home is the same directory as when it claimed the
    /// slot, and holds the VM's directory.
    pub fn is_live(&self) -> bool {
        let same_home = fs::metadata(&self.home)
            .is_ok_and(|m| m.is_dir() && (m.dev(), m.ino()) == self.home_dev_ino);
        same_home
            && fs::symlink_metadata(self.home.join("vms").join(self.vm.as_str()))
                .is_ok_and(|m| m.is_dir())
    }

    /// Whether this claim is `vm`'s in the home `paths`.
    pub fn is_of(&self, paths: &Paths, vm: &VmId) -> bool {
        self.vm == *vm
            && home_identity(paths.home()).is_ok_and(|(_, dev_ino)| dev_ino == self.home_dev_ino)
    }
}

/// The canonical path and the (device, inode) of a home directory.
fn home_identity(home: &Path) -> Result<(PathBuf, (u64, u64))> {
    let canonical =
        fs::canonicalize(home).map_err(|e| Error::io(format!("resolve {}", home.display()), e))?;
    let md = fs::metadata(&canonical)
        .map_err(|e| Error::io(format!("stat {}", canonical.display()), e))?;
    Ok((canonical, (md.dev(), md.ino())))
}

/// The host-wide claims of one host (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) struct HostSlots {
    paths: Paths,
}

impl HostSlots {
    pub(crate) fn new(paths: &Paths) -> Self {
        Self {
            paths: paths.clone(),
        }
    }

    /// Creates the claim directories as needed (root-only, never through a symlink) and takes
    /// the host-wide slot lock.
    pub(crate) fn lock(&self, timeout: Duration) -> Result<LockGuard> {
        ensure_private_dir(self.paths.run_dir())?;
        ensure_private_dir(&self.paths.slots_dir())?;
        lock::lock_exclusive(
            &self.paths.run_dir().join("slots.lock"),
            IfMissing::Create,
            timeout,
        )?
        .ok_or_else(|| Error::new(ErrorCode::Internal, "slot lock vanished"))
    }

    /// The lock, or `None` when no claim was ever made on this host (nothing to release).
    pub(crate) fn lock_if_present(&self, timeout: Duration) -> Result<Option<LockGuard>> {
        if fs::symlink_metadata(self.paths.slots_dir()).is_err() {
            return Ok(None);
        }
        self.lock(timeout).map(Some)
    }

    /// Every claim file: `(slot, parsed claim)`; `None` for an unreadable or malformed one.
    pub(crate) fn read_all(&self) -> Result<Vec<(u32, Option<Claim>)>> {
        let dir = self.paths.slots_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let Some(slot) = entry
                .file_name()
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            out.push((slot, read_claim(&entry.path(), slot)));
        }
        Ok(out)
    }

    /// The live claims, removing the rest. Call with the lock held.
    pub(crate) fn live_pruning(&self) -> Result<Vec<Claim>> {
        let mut live = Vec::new();
        for (slot, claim) in self.read_all()? {
            match claim.filter(Claim::is_live) {
                Some(c) => live.push(c),
                None => {
                    let _ = fs::remove_file(self.paths.slots_dir().join(slot.to_string()));
                }
            }
        }
        Ok(live)
    }

    /// The live claims, touching nothing (for `doctor`).
    pub(crate) fn live(&self) -> Result<Vec<Claim>> {
        Ok(self
            .read_all()?
            .into_iter()
            .filter_map(|(_, c)| c.filter(Claim::is_live))
            .collect())
    }

    /// Writes the claim of `slot` for `vm` of this home. Call with the lock held, after
    /// [`live_pruning`](Self::live_pruning) showed the slot free.
    pub(crate) fn write(&self, slot: u32, vm: &VmId) -> Result<PathBuf> {
        let (home, home_dev_ino) = home_identity(self.paths.home())?;
        let claim = Claim {
            slot,
            vm: vm.clone(),
            home,
            home_dev_ino,
        };
        let path = self.paths.slots_dir().join(slot.to_string());
        let written = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .and_then(|mut f| f.write_all(claim.render().as_bytes()));
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(Error::io(format!("write {}", path.display()), e));
        }
        Ok(path)
    }

    /// Removes the claim of `slot` if it is `vm`'s of this home. Call with the lock held.
    pub(crate) fn release(&self, slot: u32, vm: &VmId) {
        let path = self.paths.slots_dir().join(slot.to_string());
        if read_claim(&path, slot).is_some_and(|c| c.is_of(&self.paths, vm)) {
            let _ = fs::remove_file(&path);
        }
    }
}

fn read_claim(path: &Path, slot: u32) -> Option<Claim> {
    use std::io::Read as _;
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let mut text = String::new();
    f.take(MAX_CLAIM_BYTES).read_to_string(&mut text).ok()?;
    Claim::parse(slot, &text)
}

/// Creates `dir` (mode 0700) or checks that it is a directory, not a symlink, owned by this
/// user and writable by nobody else: claims decide which host links a VM may delete, so no
/// other user may plant or remove them.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::io(format!("create {}", dir.display()), e)
                .fix("Run vmsan as root: VM networking is host-wide."));
        }
    }
    let md =
        fs::symlink_metadata(dir).map_err(|e| Error::io(format!("stat {}", dir.display()), e))?;
    let me = nix::unistd::geteuid().as_raw();
    if !md.is_dir() || md.uid() != me || md.mode() & 0o022 != 0 {
        return Err(Error::new(
            ErrorCode::ValidationPath,
            format!(
                "{} is not a private directory of uid {me}: refusing to keep slot claims there",
                dir.display()
            ),
        )
        .why(
            "vmsan's host-wide slot claims decide which host network links a VM owns; \
             another user must not be able to plant or remove them.",
        )
        .fix(format!(
            "Remove {} (no VM can be running if vmsan did not make it) and try again.",
            dir.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_round_trip_and_malformed_ones_are_refused() {
        let c = Claim {
            slot: 7,
            vm: VmId::parse("vm-0000abcd").unwrap(),
            home: PathBuf::from("/var/lib/vmsan"),
            home_dev_ino: (2049, 131_073),
        };
        assert_eq!(Claim::parse(7, &c.render()), Some(c.clone()));
        for bad in [
            "",
            "vm-0000abcd",
            "vm vm-0000abcd\nhome /h\n",
            "vm ../../x\nhome-dev-ino 1 2\nhome /h\n",
            "vm vm-0000abcd\nhome-dev-ino 1 2\nhome relative\n",
            "vm vm-0000abcd\nhome-dev-ino 1 2\nhome /h\nextra 1\n",
        ] {
            assert_eq!(Claim::parse(7, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_claim_dies_with_its_home_or_its_vm() {
        let home = tempfile::tempdir().unwrap();
        let paths = Paths::new(home.path()).with_run_dir(home.path().join("run"));
        let slots = HostSlots::new(&paths);
        let _lock = slots.lock(Duration::from_secs(5)).unwrap();
        let vm = VmId::parse("vm-0000abcd").unwrap();
        slots.write(3, &vm).unwrap();
        assert!(slots.live_pruning().unwrap().is_empty(), "no VM directory");
        assert!(!paths.slots_dir().join("3").exists(), "stale claim removed");

        fs::create_dir_all(paths.vm_dir(&vm)).unwrap();
        slots.write(3, &vm).unwrap();
        let live = slots.live_pruning().unwrap();
        assert_eq!(live.len(), 1);
        assert!(live[0].is_of(&paths, &vm));
        let other = VmId::parse("vm-0000abce").unwrap();
        slots.release(3, &other);
        assert!(paths.slots_dir().join("3").exists(), "not the other VM's");
        slots.release(3, &vm);
        assert!(!paths.slots_dir().join("3").exists());
    }

    #[test]
    fn a_claim_directory_through_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("elsewhere");
        fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&target, tmp.path().join("run")).unwrap();
        let paths = Paths::new(tmp.path()).with_run_dir(tmp.path().join("run"));
        let e = HostSlots::new(&paths)
            .lock(Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::ValidationPath, "{e}");
        assert!(fs::read_dir(&target).unwrap().next().is_none());
    }
}
