//! vmsan-firecracker: everything vmsan needs to drive Firecracker and its jailer.
//!
//! - [`models`]: serde models of the Firecracker v1.16.1 API bodies vmsan uses;
//! - [`client`]: an async client over the API's Unix socket ([`FirecrackerClient`]) and
//!   [`wait_for_socket`];
//! - [`config`]: a whole pre-boot configuration applied in Firecracker's order ([`VmConfig`]);
//! - [`jailer`]: the jailer's and Firecracker's command lines ([`JailerSpec`]);
//! - [`layout`]: the jail's layout ([`JailLayout`]), its preparation and the pid file;
//! - [`process`]: pid + start-time identity of a process;
//! - [`cgroup`]: cgroup mode detection and removal of the jailer's leftover directories;
//! - [`bootargs`]: the guest kernel command line of docs/guest-abi.md.

pub mod bootargs;
pub mod cgroup;
pub mod client;
pub mod config;
pub mod jailer;
pub mod layout;
pub mod models;
pub mod process;
mod sys;

pub use bootargs::{BootArgs, RootfsFsType};
pub use cgroup::{CgroupMode, CgroupMounts, detect_mode, remove_jailer_cgroups};
pub use client::{
    ApiError, ClientError, FirecrackerClient, WaitError, is_tun_permission_denied, wait_for_socket,
    wait_for_socket_while,
};
pub use config::{StepTiming, VmConfig};
pub use jailer::{
    ArgError, CgroupLimits, CgroupVersion, CpuLimit, FirecrackerArgs, JailerSpec, ResourceLimits,
    Seccomp,
};
pub use layout::{
    JailError, JailFile, JailLayout, Placement, give_to_jail, prepare_jail, read_pid_file,
    remove_jail, wait_for_pid_file,
};
pub use process::{Liveness, ProcessIdentity};
