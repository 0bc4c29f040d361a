//! Running VMs, as two processes: the caller ([`caller`]: `create`, `start`, `stop`, `remove`,
//! policy changes) and, for each VM, a detached supervisor ([`supervisor`]) that owns the VM's
//! Firecracker from boot to teardown. What crosses between them is in [`protocol`]; the
//! modules at this level (VM files, host resources, config drive, logs…) serve both.
//!
//! The public items re-exported here are the engine's VM API; the submodules are private so a
//! front end cannot reach past it (see `tests/architecture.rs`).

mod caller;
mod config_drive;
mod convert;
pub(crate) mod disk_room;
pub(crate) mod files;
mod host;
mod last_words;
mod protocol;
mod snapshot_run;
pub(crate) mod socket_room;
mod spec;
pub(crate) mod stopwatch;
mod supervisor;
mod supervisor_log;
pub(crate) mod timeout;

pub use caller::guest::{agent, agent_error};
pub use caller::lifecycle::{Created, StopOutcome, is_active, remove, start, stop};
pub use caller::media::build_options;
pub use caller::network::{PolicyChange, set_policy};
pub use caller::request::{Creation, Progress, ProgressSink, create_vms};
pub use caller::snapshot::{TakeOptions, Taken, take as take_snapshot};
pub(crate) use host::cgroup_parent_leftovers;
pub use host::{HOST_NETNS_ENV, host_config};
pub use protocol::SupervisorCommand;
pub use socket_room::{check_home, longest_socket_path};
pub use stopwatch::{Step, StepName};
pub use supervisor::main as supervise;
pub use timeout::TimeoutHold;
