//! VM state: the persisted model and the store that reads and writes it safely.

mod claims;
mod group;
pub mod lock;
mod model;
mod store;

pub use claims::Claim;
pub(crate) use claims::ensure_private_dir;
pub use group::{GROUP_NAME, vmsan_gid};
pub use model::{
    BootSettings, CpuTemplateSetting, ImageState, Isolation, NetworkPolicy, NetworkState,
    ProcessId, PublishedPort, Runtime, RuntimeName, STATE_VERSION, SnapshotRun, VmState, VmStatus,
    ip_text,
};
pub use store::{ListEntry, MAX_SLOTS, StateStore, VmLock, reconcile};
