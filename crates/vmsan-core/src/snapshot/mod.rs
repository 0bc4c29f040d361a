//! Snapshots (DESIGN §7): a paused VM's memory and device state as Firecracker writes them, a
//! copy of its disk, and what it takes to restore it as new, independent VMs: machine
//! configuration, image, network identity and policy.
//!
//! This module is the snapshot as stored (its files, metadata, trust rules, archives); taking
//! one from a running VM and restoring one are VM operations (`vm`).

mod archive;
pub mod files;
mod layout;
mod meta;
mod trust;

pub use archive::{export, import};
pub use files::{Listed, Listing, Snapshot, delete, list};
pub use meta::{FileInfo, HostFingerprint, SCHEMA_VERSION, SnapshotKind, SnapshotMeta};
