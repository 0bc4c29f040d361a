//! Real Firecracker in the test suite: where the real binaries are, whether a test may run
//! against them (or must fail, in CI), and the halting guest they can boot on these machines.
//!
//! An ordinary Linux guest cannot boot on this project's build machines (their `/dev/kvm` is a
//! nested hypervisor that dies on instructions it cannot emulate), but a guest that does
//! nothing runs indefinitely: a 64-bit ELF "kernel" with one `PT_LOAD` segment at physical
//! 0x1000000 whose entry is `hlt; jmp -3`. With it everything on the host side of a VM (API,
//! jail, cgroups, TAP, vsock device, pause, snapshots, restore) runs against the real VMM.

use std::path::{Path, PathBuf};

/// Where CI lays the shared test equipment, relative to the workspace root.
pub const SHARED_TOOLS_DIR: &str = "../shared/tools/firecracker-v1.16.1";
/// Environment variables naming the real binaries (the same ones the e2e fixture reads).
pub const FIRECRACKER_ENV: &str = "VMSAN_E2E_FIRECRACKER_BIN";
/// See [`FIRECRACKER_ENV`].
pub const JAILER_ENV: &str = "VMSAN_E2E_JAILER_BIN";

/// The real Firecracker and jailer pair.
#[derive(Debug, Clone)]
pub struct RealBinaries {
    /// The static `firecracker` (v1.16.1).
    pub firecracker: PathBuf,
    /// The static `jailer` of the same release.
    pub jailer: PathBuf,
}

/// The workspace root (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| manifest.to_path_buf(), Path::to_path_buf)
}

/// Finds the real pair: both environment variables when set, else the shared tools directory
/// beside the workspace. The error says what was looked for.
pub fn find() -> Result<RealBinaries, String> {
    let from_env = (
        std::env::var_os(FIRECRACKER_ENV),
        std::env::var_os(JAILER_ENV),
    );
    let found = match from_env {
        (Some(fc), Some(jailer)) => RealBinaries {
            firecracker: PathBuf::from(fc),
            jailer: PathBuf::from(jailer),
        },
        (Some(_), None) | (None, Some(_)) => {
            return Err(format!(
                "set both {FIRECRACKER_ENV} and {JAILER_ENV}, or neither"
            ));
        }
        (None, None) => {
            let dir = workspace_root().join(SHARED_TOOLS_DIR);
            RealBinaries {
                firecracker: dir.join("firecracker"),
                jailer: dir.join("jailer"),
            }
        }
    };
    // Canonical paths: the jailer (and vmsan's argv checks) refuse `..` in `--exec-file`.
    let canonical =
        |bin: &Path| {
            std::fs::canonicalize(bin).ok().filter(|p| p.is_file()).ok_or_else(|| {
            format!(
                "{} is missing (real Firecracker v1.16.1: lay the shared tools at {} or set \
                 {FIRECRACKER_ENV} and {JAILER_ENV})",
                bin.display(),
                SHARED_TOOLS_DIR
            )
        })
        };
    Ok(RealBinaries {
        firecracker: canonical(&found.firecracker)?,
        jailer: canonical(&found.jailer)?,
    })
}

/// Why the real-VMM tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if let Err(why) = find() {
        return Some(why);
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (jailer, namespaces, cgroups, TAP)".into());
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Some("needs /dev/kvm".into());
    }
    None
}

/// The real pair, or `None` after saying why the calling test is skipped ([`crate::skip!`]:
/// under `CI=true` a test that cannot run fails instead).
///
/// # Panics
/// In CI, when the real binaries, root or `/dev/kvm` are missing.
pub fn require() -> Option<RealBinaries> {
    match unavailable() {
        None => find().ok(),
        Some(why) => {
            crate::skip!("cannot run against real Firecracker: {why}");
            None
        }
    }
}

/// Guest-physical address of the halting guest's only segment (16 MiB, where Linux loads).
pub const HALT_LOAD_ADDR: u64 = 0x100_0000;
/// `hlt; jmp -3`: halt, and when an interrupt wakes the vCPU, halt again.
pub const HALT_CODE: [u8; 3] = [0xf4, 0xeb, 0xfd];

const EHDR_SIZE: u16 = 64;
const PHDR_SIZE: u16 = 56;

/// `int3; hlt; jmp -3`: a breakpoint with no interrupt table, which this project's nested
/// hypervisor cannot emulate: Firecracker logs `Received KVM_EXIT_INTERNAL_ERROR signal` and
/// exits with status 1, as with an ordinary Linux guest here.
pub const CRASH_CODE: [u8; 4] = [0xcc, 0xf4, 0xeb, 0xfd];

/// The halting guest: a 64-bit little-endian x86-64 ELF executable with one `PT_LOAD`
/// segment, the code right after the headers, loaded at [`HALT_LOAD_ADDR`] and entered there.
pub fn halting_guest_elf() -> Vec<u8> {
    guest_elf(&HALT_CODE)
}

/// A guest that crashes its VM at once (see [`CRASH_CODE`]).
pub fn crashing_guest_elf() -> Vec<u8> {
    guest_elf(&CRASH_CODE)
}

/// A guest "kernel" running `code` from [`HALT_LOAD_ADDR`] in 64-bit mode.
pub fn guest_elf(code: &[u8]) -> Vec<u8> {
    let code_offset = u64::from(EHDR_SIZE + PHDR_SIZE);
    let mut elf = Vec::with_capacity(usize::from(EHDR_SIZE + PHDR_SIZE) + code.len());
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, System V ABI, padding.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // e_machine: EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&HALT_LOAD_ADDR.to_le_bytes()); // e_entry
    elf.extend_from_slice(&u64::from(EHDR_SIZE).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&EHDR_SIZE.to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&PHDR_SIZE.to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shentsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    // The program header.
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R + X
    elf.extend_from_slice(&code_offset.to_le_bytes()); // p_offset
    elf.extend_from_slice(&HALT_LOAD_ADDR.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&HALT_LOAD_ADDR.to_le_bytes()); // p_paddr
    let len = code.len() as u64;
    elf.extend_from_slice(&len.to_le_bytes()); // p_filesz
    elf.extend_from_slice(&len.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&1u64.to_le_bytes()); // p_align: none needed
    elf.extend_from_slice(code);
    elf
}

/// Writes the halting guest to `path` (readable by everyone: a jail's uid must read it).
pub fn write_halting_guest(path: &Path) -> std::io::Result<()> {
    write_guest(path, &halting_guest_elf())
}

/// Writes a guest ELF to `path`, mode 0644.
pub fn write_guest(path: &Path, elf: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, elf)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        let mut a = [0; 4];
        a.copy_from_slice(&b[at..at + 4]);
        u32::from_le_bytes(a)
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        let mut a = [0; 8];
        a.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(a)
    }

    #[test]
    fn halting_guest_is_one_load_segment_whose_entry_halts() {
        let elf = halting_guest_elf();
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(
            (elf[4], elf[5], elf[6]),
            (2, 1, 1),
            "64-bit, little-endian, v1"
        );
        assert_eq!(u16_at(&elf, 16), 2, "ET_EXEC");
        assert_eq!(u16_at(&elf, 18), 62, "EM_X86_64");
        let entry = u64_at(&elf, 24);
        let phoff = usize::try_from(u64_at(&elf, 32)).unwrap_or(usize::MAX);
        assert_eq!(u16_at(&elf, 52), 64, "e_ehsize");
        assert_eq!(u16_at(&elf, 54), 56, "e_phentsize");
        assert_eq!(u16_at(&elf, 56), 1, "one program header");
        assert!(phoff >= 64 && phoff + 56 <= elf.len());

        let ph = &elf[phoff..phoff + 56];
        assert_eq!(u32_at(ph, 0), 1, "PT_LOAD");
        let offset = usize::try_from(u64_at(ph, 8)).unwrap_or(usize::MAX);
        let paddr = u64_at(ph, 24);
        let filesz = usize::try_from(u64_at(ph, 32)).unwrap_or(usize::MAX);
        assert_eq!(paddr, 0x100_0000, "loaded at 16 MiB");
        assert_eq!(u64_at(ph, 40), filesz as u64, "memsz = filesz");
        assert!(offset + filesz <= elf.len(), "segment inside the file");

        // The entry lies in the segment and the bytes there are `hlt; jmp -3`, i.e. the jump
        // lands back on the `hlt`.
        assert!(entry >= paddr && entry < paddr + filesz as u64);
        let at = offset + usize::try_from(entry - paddr).unwrap_or(usize::MAX);
        assert_eq!(&elf[at..at + 3], &[0xf4, 0xeb, 0xfd]);
        let jump_target = (at + 3) as i64 + i64::from(elf[at + 2] as i8);
        assert_eq!(jump_target, at as i64, "the jump returns to hlt");
        assert!(elf.len() < 200, "a few dozen bytes: {}", elf.len());
    }

    #[test]
    fn the_shared_tools_are_looked_for_beside_the_workspace() {
        let root = workspace_root();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
        assert!(manifest.contains("[workspace]"), "{}", root.display());
    }
}
