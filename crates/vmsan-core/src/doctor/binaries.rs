//! Checks of what vmsan executes or boots: Firecracker, the jailer, the guest agent, the kernel.

use std::path::Path;
use std::process::Command;

use super::Check;
use crate::artifacts::{self, Version};
use crate::paths::Paths;

const BINARIES: &str = "Binaries";
const IMAGES: &str = "Images";
const SETUP_FIX: &str = "Run `sudo vmsan setup` (or `sudo vmsan setup --firecracker FILE --jailer FILE \
                         --kernel FILE` on an offline host).";

pub(super) fn checks(paths: &Paths) -> Vec<Check> {
    vec![
        vmm_binary("Firecracker", &artifacts::firecracker_path(paths), true),
        vmm_binary("Jailer", &artifacts::jailer_path(paths), false),
        agent(paths),
        kernel(paths),
    ]
}

fn vmm_binary(name: &'static str, path: &Path, check_version: bool) -> Check {
    if !path.exists() {
        return Check::fail(
            BINARIES,
            name,
            format!("{} not found", path.display()),
            SETUP_FIX,
        );
    }
    if let Err(why) = artifacts::check_trusted_file(path) {
        return Check::fail(
            BINARIES,
            name,
            why,
            format!(
                "vmsan runs it as root: `chown root:root {0} && chmod 755 {0}`, and keep its \
                 directories root-owned and not group- or world-writable.",
                path.display()
            ),
        );
    }
    match artifacts::is_static_elf(path) {
        Ok(true) => {}
        Ok(false) => {
            return Check::fail(
                BINARIES,
                name,
                format!("{} is dynamically linked", path.display()),
                "The jailer runs Firecracker in an empty chroot: install the static release binaries.",
            );
        }
        Err(e) => {
            return Check::fail(
                BINARIES,
                name,
                format!("{}: {e}", path.display()),
                SETUP_FIX,
            );
        }
    }
    if !check_version {
        return Check::pass(
            BINARIES,
            name,
            format!("{} (static, root-owned)", path.display()),
        );
    }
    let out = Command::new(path).arg("--version").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    match Version::parse_firecracker(&text) {
        Some(v) if artifacts::firecracker_supported(v) => {
            Check::pass(BINARIES, name, format!("v{v} (static, root-owned)"))
        }
        Some(v) => Check::fail(
            BINARIES,
            name,
            format!(
                "v{v} is outside the supported range >= {}, < {}",
                artifacts::FIRECRACKER_MIN,
                artifacts::FIRECRACKER_NEXT_UNSUPPORTED
            ),
            SETUP_FIX,
        ),
        None => Check::fail(
            BINARIES,
            name,
            format!(
                "could not read the version from `{} --version`",
                path.display()
            ),
            SETUP_FIX,
        ),
    }
}

fn agent(paths: &Paths) -> Check {
    const NAME: &str = "Guest agent";
    let Some(path) = artifacts::find_agent(paths) else {
        return Check::fail(
            BINARIES,
            NAME,
            "vmsan-agent not found (looked in the vmsan home and beside the vmsan binary)",
            "Reinstall vmsan with `scripts/install`, which builds and installs the static agent.",
        );
    };
    match artifacts::is_static_elf(&path) {
        Ok(true) => Check::pass(BINARIES, NAME, format!("{} (static)", path.display())),
        Ok(false) => Check::fail(
            BINARIES,
            NAME,
            format!(
                "{} is dynamically linked and cannot run as the guest's init",
                path.display()
            ),
            "Build it with `scripts/build-agent` (static musl or +crt-static).",
        ),
        Err(e) => Check::fail(
            BINARIES,
            NAME,
            format!("{}: {e}", path.display()),
            SETUP_FIX,
        ),
    }
}

fn kernel(paths: &Paths) -> Check {
    match artifacts::find_kernel(paths) {
        Some(k) => Check::pass(IMAGES, "Kernel", k.display().to_string()),
        None => Check::fail(
            IMAGES,
            "Kernel",
            format!("no vmlinux* in {}", paths.kernels_dir().display()),
            SETUP_FIX,
        ),
    }
}
