//! What a guest kernel and CPU template need on this host's hypervisor.
//!
//! Some hosts' `/dev/kvm` is a nested PVM hypervisor (the `kvm_pvm` module). In its "native"
//! mode it runs an unmodified guest kernel by emulating the kernel's privileged code: about 100
//! times slower than native, and the VM dies (`KVM_EXIT_INTERNAL_ERROR`) on any instruction the
//! emulator lacks. A guest boots there only with a kernel that avoids those instructions, the
//! boot arguments below, and a boot timeout of minutes. A zstd squashfs image does not boot:
//! the kernel's zstd takes its BMI2 path (`shlx`, which the emulator cannot run), and a custom
//! CPU template clearing BMI2 (CPUID 0x7.0 EBX bit 8) did not stop it on these hosts (the
//! failing RIP stayed in `FSE_readNCount_body_bmi2`). Images built with LZ4 (`vmsan setup
//! --image-compression lz4`; the kernel's LZ4 decoder is plain C) or an ext4 root filesystem
//! avoid it.

use std::path::Path;

use vmsan_image::Compression;

use super::Check;
use crate::paths::Paths;

const SYSTEM: &str = "System";
const NAME: &str = "Guest CPU";

/// Kernel arguments a guest needs under PVM's native mode (the instructions its emulator
/// lacks: `cmpxchg16b`, `popcnt`, `rdrand`/`rdseed`, `wrfsbase`…, `stac`/`clac`, `xsave`; the
/// jitter entropy and PTP-KVM initcalls and crypto self-tests that take minutes there).
pub const PVM_NATIVE_KERNEL_ARGS: &[&str] = &[
    "clearcpuid=cx16,popcnt,rdrand,rdseed,fsgsbase,smap",
    "noxsave",
    "mitigations=off",
    "initcall_blacklist=jent_mod_init,ptp_kvm_init",
    "cryptomgr.notests",
    "selinux=0",
    "audit=0",
    "tsc=reliable",
    "no_timer_check",
];

/// The hypervisor behind `/dev/kvm`, as far as it matters to a guest kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hypervisor {
    /// Ordinary KVM (or anything that is not PVM).
    Kvm,
    /// PVM in native mode: unmodified kernels, emulated privileged code.
    PvmNative,
    /// PVM in its paravirtual mode: only kernels built as PVM guests boot.
    PvmParavirtual,
}

/// Read the hypervisor from sysfs (`<sys>/module/kvm_pvm/parameters/pvm_native`).
pub fn detect(sys: &Path) -> Hypervisor {
    let module = sys.join("module/kvm_pvm");
    if !module.is_dir() {
        return Hypervisor::Kvm;
    }
    match std::fs::read_to_string(module.join("parameters/pvm_native")) {
        Ok(v) if matches!(v.trim(), "Y" | "y" | "1") => Hypervisor::PvmNative,
        _ => Hypervisor::PvmParavirtual,
    }
}

/// The required arguments missing from `stored` (the installed kernel's).
fn missing_args(stored: Option<&str>) -> Vec<&'static str> {
    let have: Vec<&str> = stored.unwrap_or("").split(' ').collect();
    PVM_NATIVE_KERNEL_ARGS
        .iter()
        .copied()
        .filter(|a| !have.contains(a))
        .collect()
}

/// The check for `hv`, given the installed kernel's stored arguments and the home's image
/// compression.
pub fn check(hv: Hypervisor, stored_args: Option<&str>, images: Compression) -> Check {
    match hv {
        Hypervisor::Kvm => Check::pass(
            SYSTEM,
            NAME,
            "KVM runs guest kernels natively: no kernel arguments or CPU template needed",
        ),
        Hypervisor::PvmParavirtual => Check::warn(
            SYSTEM,
            NAME,
            "/dev/kvm is a PVM hypervisor (kvm_pvm) in paravirtual mode: only guest kernels built \
             as PVM guests boot",
            "Install a guest kernel built with CONFIG_PVM_GUEST (`vmsan setup --kernel PATH`), \
             or load kvm_pvm with pvm_native=1.",
        ),
        Hypervisor::PvmNative => {
            let missing = missing_args(stored_args);
            let decoder = match images {
                Compression::Zstd => {
                    ", whose kernel decoder needs BMI2, which the emulator lacks (a CPU \
                     template hiding BMI2 did not hide it here)"
                }
                Compression::Lz4 => ", which the kernel decodes in plain C",
            };
            let detail = format!(
                "/dev/kvm is a nested PVM hypervisor (kvm_pvm, pvm_native=Y): it emulates the \
                 guest kernel's privileged code, about 100 times slower than native (boots take \
                 minutes), and stops the VM at instructions its emulator lacks; {}; images are \
                 built with {images}{}",
                if missing.is_empty() {
                    "the installed kernel's stored arguments avoid them".to_owned()
                } else {
                    format!(
                        "the installed kernel's stored arguments lack {}",
                        missing.join(" ")
                    )
                },
                decoder
            );
            let root = match images {
                Compression::Zstd => {
                    "squashfs images built with LZ4 (add `--image-compression lz4` to that \
                     setup) or an ext4 root filesystem (`create --rootfs`)"
                }
                Compression::Lz4 => "the LZ4 squashfs images this home builds",
            };
            Check::warn(
                SYSTEM,
                NAME,
                detail,
                format!(
                    "Use a guest kernel that runs under PVM's native mode (no INT3 self-test or \
                     INT3 text patching, no fwait, its syscall-entry workaround) installed with \
                     `vmsan setup --kernel PATH --kernel-args \"{}\"`, {root}, and \
                     `--boot-timeout 15m`.",
                    PVM_NATIVE_KERNEL_ARGS.join(" ")
                ),
            )
        }
    }
}

/// This host's check.
pub(super) fn host_check(paths: &Paths) -> Check {
    let stored = crate::artifacts::stored_kernel_args(paths, &paths.kernels_dir().join("vmlinux"))
        .ok()
        .flatten();
    // An unusable record is `create`'s error to report; here it reads as the default.
    let images = crate::artifacts::stored_image_compression(paths).unwrap_or_default();
    check(detect(Path::new("/sys")), stored.as_deref(), images)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysfs(native: Option<&str>) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        if let Some(v) = native {
            let p = d.path().join("module/kvm_pvm/parameters");
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("pvm_native"), format!("{v}\n")).unwrap();
        }
        d
    }

    #[test]
    fn pvm_native_mode_is_recognised_from_sysfs() {
        assert_eq!(detect(sysfs(None).path()), Hypervisor::Kvm);
        assert_eq!(detect(sysfs(Some("Y")).path()), Hypervisor::PvmNative);
        assert_eq!(detect(sysfs(Some("N")).path()), Hypervisor::PvmParavirtual);
    }

    #[test]
    fn under_pvm_native_the_check_names_the_missing_arguments_and_what_boots() {
        let c = check(
            Hypervisor::PvmNative,
            Some("quiet noxsave"),
            Compression::Zstd,
        );
        assert_eq!(c.status, super::super::Status::Warn);
        assert!(c.detail.contains("lack clearcpuid="), "{}", c.detail);
        assert!(!c.detail.contains(" noxsave"), "{}", c.detail);
        assert!(c.detail.contains("built with zstd"), "{}", c.detail);
        let fix = c.fix.unwrap();
        assert!(fix.contains("--image-compression lz4"), "{fix}");
        assert!(fix.contains("--rootfs"), "{fix}");
        assert!(fix.contains("--boot-timeout"), "{fix}");
        // The arguments it asks for are ones vmsan accepts.
        let all = PVM_NATIVE_KERNEL_ARGS.join(" ");
        assert_eq!(
            crate::validate::parse_kernel_args("--kernel-args", &all).unwrap(),
            all
        );
        // With LZ4 images it no longer asks for them.
        let done = check(Hypervisor::PvmNative, Some(&all), Compression::Lz4);
        assert!(done.detail.contains("avoid them"), "{}", done.detail);
        assert!(done.detail.contains("built with lz4"), "{}", done.detail);
        let fix = done.fix.unwrap();
        assert!(!fix.contains("--image-compression"), "{fix}");
        assert!(fix.contains("LZ4 squashfs images"), "{fix}");

        for images in Compression::ALL {
            assert_eq!(
                check(Hypervisor::Kvm, None, images).status,
                super::super::Status::Pass
            );
            assert_eq!(
                check(Hypervisor::PvmParavirtual, None, images).status,
                super::super::Status::Warn
            );
        }
    }

    #[test]
    fn this_host() {
        // Whatever the machine, the check has a detail; on a PVM-native host it says so.
        let home = tempfile::tempdir().unwrap();
        let paths = Paths::new(home.path());
        let c = host_check(&paths);
        assert!(!c.detail.is_empty());
        if detect(Path::new("/sys")) == Hypervisor::PvmNative {
            assert!(c.detail.contains("pvm_native=Y"), "{}", c.detail);
            // The home's stored setting is what the hint follows (a record not owned by root
            // is refused, so only root can store one here).
            assert!(c.fix.unwrap().contains("--image-compression lz4"));
            if !nix::unistd::geteuid().is_root() {
                return;
            }
            std::fs::create_dir_all(paths.kernels_dir()).unwrap();
            crate::artifacts::store_image_compression(&paths, Compression::Lz4).unwrap();
            let c = host_check(&paths);
            assert!(c.detail.contains("built with lz4"), "{}", c.detail);
            assert!(!c.fix.unwrap().contains("--image-compression"));
        }
    }
}
