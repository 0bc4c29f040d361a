//! vmsan host library: state store, lifecycle, networking and images orchestration,
//! guest agent access, snapshots and doctor.

pub mod artifacts;
pub mod doctor;
pub mod error;
pub mod ids;
pub mod paths;
pub mod process;
pub mod report;
pub mod snapshot;
pub mod state;
mod sys;
pub mod time;
pub mod validate;
pub mod vm;

pub use error::{Error, ErrorCode, Result};
pub use ids::{SnapshotId, VmId};
pub use paths::Paths;
