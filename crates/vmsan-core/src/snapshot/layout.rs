//! The names of a snapshot's files (what `files` stores, `meta` lists and `trust` checks).

/// The metadata.
pub const META: &str = "metadata.json";
/// The source VM's agent token (root only): a clone's restored agent still answers to it.
pub const TOKEN: &str = "agent.token";
/// Firecracker's VM state.
pub const VMSTATE: &str = "vmstate";
/// Guest memory.
pub const MEMORY: &str = "memory";
/// The VM's writable disk.
pub const DISK: &str = "disk.ext4";
/// The VM's config drive (the source's identity, which the restored memory also holds).
pub const CONFIG: &str = "config.drive";
/// The image's root filesystem.
pub const ROOTFS: &str = "rootfs.img";
/// Every data file a snapshot must have.
pub const DATA_FILES: &[&str] = &[VMSTATE, MEMORY, DISK, CONFIG, ROOTFS];
/// Files small enough to check by digest on every restore.
pub const DIGESTED: &[&str] = &[VMSTATE, CONFIG];
