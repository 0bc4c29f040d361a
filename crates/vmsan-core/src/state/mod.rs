//! VM state: the persisted model and the store that reads and writes it safely.

mod group;
pub mod lock;
mod model;
mod store;

pub use group::{GROUP_NAME, vmsan_gid};
pub use model::{
    ImageState, Isolation, NetworkState, ProcessId, PublishedPort, STATE_VERSION, SnapshotRun,
    VmState, VmStatus,
};
pub use store::{ListEntry, MAX_SLOTS, StateStore, VmLock, reconcile};
