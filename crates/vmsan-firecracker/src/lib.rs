//! vmsan-firecracker: everything vmsan needs to drive Firecracker and its jailer.
//!
//! - [`models`]: serde models of the Firecracker v1.16.1 API bodies vmsan uses;
//! - [`client`]: an async client over the API's Unix socket ([`FirecrackerClient`]) and
//!   [`wait_for_socket`];
//! - [`config`]: a whole pre-boot configuration applied in Firecracker's order ([`VmConfig`]);
//! - [`jailer`]: the jailer's and Firecracker's command lines ([`JailerSpec`]);
//! - [`layout`]: the jail's layout ([`JailLayout`]), its preparation and the pid file;
//! - [`process`]: pid + start-time identity of a process;
//! - [`cgroup`]: cgroup mode detection, v1 cgroups a process is born in (no migration),
//!   OOM-kill counter, removal of the jailer's leftover directories;
//! - [`bootargs`]: the guest kernel command line of docs/guest-abi.md, and a user's extra
//!   kernel parameters ([`KernelArgs`]);
//! - [`cpu_template`]: static CPU template names and checked custom templates.
//!
//! # Starting a VM under the jailer (what the supervisor does)
//!
//! ```text
//! layout = JailLayout::new(chroot_base, firecracker_bin, id)     paths, sun_path check
//! prepare_jail(&layout, uid, gid, [kernel, initrd, rootfs, overlay, config])
//! argv   = JailerSpec { id, exec_file, uid, gid, netns, new_pid_ns: true, daemonize: true,
//!                       cgroup_version: CgroupMounts::detect()?.jailer_version(), … }.args()
//! spawn the jailer with argv (no shell); with --new-pid-ns it writes <root>/firecracker.pid
//!   and exits 0 as soon as Firecracker is cloned (a jailer that daemonizes by forking, like
//!   the test stand-in, writes it a moment after its exit), so after its exit:
//! pid    = wait_for_pid_file(&layout, deadline, ..)   root-owned regular file only
//! me     = ProcessIdentity::of(pid)           start time survives the exec, so record it now
//! wait_for_socket_while(&layout.api_socket(), deadline, || me.liveness() == Alive)
//! me.exe_is(&layout.exec_copy())              only now: the clone may not have exec'd before
//! VmConfig { boot_source: BootArgs::new(fs).render(), drives in DRIVE_ORDER, … }
//!   .boot(&FirecrackerClient::new(layout.api_socket()))      relative paths inside the jail
//! …
//! teardown: SendCtrlAltDel / SIGKILL (PID 1 of its namespace ignores SIGTERM),
//!   remove_jail(&layout), remove_jailer_cgroups(&mounts, &spec.cgroup_parent()?, id)
//! ```
//!
//! Firecracker, once the jailer has exited, is re-parented to the nearest child subreaper:
//! a supervisor that sets `PR_SET_CHILD_SUBREAPER` before spawning the jailer gets to
//! `waitpid` it and learns its exit status.

pub mod bootargs;
pub mod cgroup;
pub mod cgroup_parents;
pub mod client;
pub mod config;
pub mod cpu_template;
pub mod jailer;
pub mod layout;
pub mod models;
pub mod process;
mod sys;

pub use bootargs::{BootArgs, KernelArgs};
pub use cgroup::{CgroupMode, CgroupMounts, detect_mode, oom_kill_count, remove_jailer_cgroups};
pub use client::{
    ApiError, ClientError, FirecrackerClient, WaitError, is_tun_permission_denied, wait_for_socket,
    wait_for_socket_while,
};
pub use config::{StepTiming, VmConfig};
pub use cpu_template::{CustomCpuTemplate, TemplateError};
pub use jailer::{
    ArgError, CgroupLimits, CgroupVersion, CpuLimit, FirecrackerArgs, JailerSpec, ResourceLimits,
    Seccomp,
};
pub use layout::{
    JailError, JailFile, JailLayout, Placement, give_to_jail, prepare_jail, read_pid_file,
    remove_jail, wait_for_pid_file,
};
pub use process::{Liveness, ProcessIdentity};
