//! Running VMs: the lifecycle commands and the per-VM supervisor that owns each Firecracker.

mod boot;
mod config_drive;
mod convert;
pub mod disk_room;
pub mod files;
mod host;
mod last_words;
pub mod lifecycle;
pub mod media;
pub mod network;
pub mod restore;
pub mod socket_room;
pub mod supervisor;
mod supervisor_log;
pub mod timeout;

pub(crate) use host::cgroup_parent_leftovers;
pub use host::{HOST_NETNS_ENV, host_config};
pub use lifecycle::{
    BootMedia, Created, StopOutcome, VmSpec, create, is_active, remove, restore, start, stop,
};
pub use supervisor::Step;
