//! The resolved, trusted binaries and jail of one VM run.

use std::path::{Path, PathBuf};

use vmsan_firecracker::JailLayout;
use vmsan_proto::FsType;

use crate::artifacts;
use crate::error::{Error, ErrorCode, Result};
use crate::paths::Paths;
use crate::state::{Isolation, VmState};

/// Firecracker's own memory on top of the guest's: in the cgroup limit, and in the host memory
/// a restore needs per clone.
pub(crate) const VMM_OVERHEAD_MIB: u64 = 64;

/// The resolved, trusted pieces of one VM run.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) firecracker: PathBuf,
    pub(crate) jailer: Option<PathBuf>,
    pub(crate) layout: JailLayout,
    pub(crate) rootfs_fs: FsType,
    pub(crate) isolation: Isolation,
}

impl Launch {
    /// Check the binaries this VM needs and compute its jail.
    pub(crate) fn resolve(paths: &Paths, st: &VmState) -> Result<Self> {
        let firecracker = trusted_binary(&artifacts::firecracker_path(paths), "Firecracker")?;
        let jailer = if st.isolation.jailer {
            Some(trusted_binary(&artifacts::jailer_path(paths), "jailer")?)
        } else {
            None
        };
        let layout = JailLayout::new(&paths.jail_dir(), &firecracker, st.id.as_str())
            .map_err(|e| Error::new(ErrorCode::Internal, format!("jail layout: {e}")))?;
        Ok(Self {
            firecracker,
            jailer,
            layout,
            rootfs_fs: st.rootfs_fs,
            isolation: st.isolation,
        })
    }

    /// With the jailer and a PID namespace, the jailer forks Firecracker and exits: we adopt it.
    pub(crate) fn adopts_vmm(&self) -> bool {
        self.jailer.is_some() && self.isolation.pid_ns
    }
}

fn trusted_binary(path: &Path, what: &str) -> Result<PathBuf> {
    if !path.exists() {
        return Err(Error::new(
            ErrorCode::SetupMissingBinary,
            format!("{what} not found at {}", path.display()),
        ));
    }
    artifacts::check_trusted_file(path).map_err(|why| {
        Error::new(
            ErrorCode::SetupUnsafeBinary,
            format!("refusing to run {what}: {why}"),
        )
    })?;
    Ok(path.to_owned())
}
