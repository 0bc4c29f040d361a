//! The host files vmsan executes or boots, where they live and how they are trusted.
//!
//! Anything vmsan runs as root must be owned by root and writable by nobody else, and so must
//! every directory above it: otherwise any local user could swap it and gain root on the next
//! `sudo vmsan` (as with the Node.js vmsan, which kept Firecracker, the jailer and the kernel
//! in the invoking user's `~/.vmsan` and ran them through sudo).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::paths::Paths;

// One range for `setup` and `doctor`: the image crate's, which `setup` enforces.
const MIN: (u32, u32, u32) = vmsan_image::setup::MIN_FIRECRACKER;
const NEXT: (u32, u32, u32) = vmsan_image::setup::MAX_FIRECRACKER;
/// Oldest Firecracker release vmsan drives.
pub const FIRECRACKER_MIN: Version = Version(MIN.0, MIN.1, MIN.2);
/// First Firecracker release vmsan does not know yet.
pub const FIRECRACKER_NEXT_UNSUPPORTED: Version = Version(NEXT.0, NEXT.1, NEXT.2);

/// A three-part version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Parse `Firecracker v1.16.1` (the first line of `firecracker --version`).
    pub fn parse_firecracker(text: &str) -> Option<Self> {
        let first = text.lines().next()?.trim();
        let v = first.strip_prefix("Firecracker v")?;
        let v = v.split(['-', ' ']).next()?;
        let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
        Some(Self(it.next()??, it.next()??, it.next()??))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The version of the installed Firecracker (`firecracker --version`), after the same trust
/// check as before every run.
pub fn installed_firecracker_version(paths: &Paths) -> crate::Result<Version> {
    use crate::error::{Error, ErrorCode};
    let path = firecracker_path(paths);
    if !path.exists() {
        return Err(Error::new(
            ErrorCode::SetupMissingBinary,
            format!("Firecracker not found at {}", path.display()),
        ));
    }
    check_trusted_file(&path).map_err(|why| {
        Error::new(
            ErrorCode::SetupUnsafeBinary,
            format!("refusing to run Firecracker: {why}"),
        )
    })?;
    let out = std::process::Command::new(&path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("run {} --version", path.display()), e))?;
    Version::parse_firecracker(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        Error::new(
            ErrorCode::SetupUnsupportedVersion,
            format!(
                "could not read the version from `{} --version`",
                path.display()
            ),
        )
    })
}

/// Is this Firecracker version one vmsan supports?
pub fn firecracker_supported(v: Version) -> bool {
    (FIRECRACKER_MIN..FIRECRACKER_NEXT_UNSUPPORTED).contains(&v)
}

/// Where `vmsan setup` installs Firecracker.
pub fn firecracker_path(paths: &Paths) -> PathBuf {
    paths.bin_dir().join("firecracker")
}

/// Where `vmsan setup` installs the jailer.
pub fn jailer_path(paths: &Paths) -> PathBuf {
    paths.bin_dir().join("jailer")
}

/// The guest agent: installed in the vmsan home, or shipped beside the `vmsan` binary
/// (`<prefix>/lib/vmsan/vmsan-agent` for installs, the same directory for development builds).
pub fn find_agent(paths: &Paths) -> Option<PathBuf> {
    let mut candidates = vec![paths.bin_dir().join("vmsan-agent")];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        candidates.push(dir.join("../lib/vmsan/vmsan-agent"));
        candidates.push(dir.join("vmsan-agent"));
    }
    // A dynamically linked agent (a plain debug build) cannot be a guest's init: skip it.
    candidates
        .into_iter()
        .find(|p| p.is_file() && is_static_elf(p).unwrap_or(false))
}

/// The guest kernel: `kernels/vmlinux` if present, else the lexicographically last `vmlinux*`.
pub fn find_kernel(paths: &Paths) -> Option<PathBuf> {
    let dir = paths.kernels_dir();
    let exact = dir.join("vmlinux");
    if exact.is_file() {
        return Some(exact);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("vmlinux"))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

/// Name of the file in the kernels directory holding the installed kernel's extra arguments
/// (`vmsan setup --kernel-args`). Not `vmlinux…`: [`find_kernel`] must never take it for a kernel.
pub const KERNEL_ARGS_FILE: &str = "kernel-args";

/// Name of the file in the kernels directory holding the compression of the image store's
/// squashfs images (`vmsan setup --image-compression`): a property of what the guest kernel can
/// read, kept beside its arguments. Absent in homes set up before it existed: zstd.
pub const IMAGE_COMPRESSION_FILE: &str = "image-compression";

/// A setup record in the kernels directory (`name`): `None` when absent. It must be a
/// root-owned regular file nobody else can write (what it says reaches the guest), and small;
/// `bad` makes the error that says it is unusable.
fn read_setup_record(
    paths: &Paths,
    name: &str,
    bad: impl Fn(String) -> crate::error::Error,
) -> crate::error::Result<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let file = paths.kernels_dir().join(name);
    let meta = match std::fs::symlink_metadata(&file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    if !meta.file_type().is_file() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(bad(
            "not a regular file owned by root and writable by root alone".into(),
        ));
    }
    if meta.len() > 4096 {
        return Err(bad(format!("{} bytes", meta.len())));
    }
    let text = std::fs::read_to_string(&file).map_err(|e| bad(e.to_string()))?;
    Ok(Some(text.trim_end_matches('\n').to_owned()))
}

/// Write (or, with `None`, remove) the setup record `name` in the kernels directory,
/// atomically, 0644, never through a symlink.
fn write_setup_record(paths: &Paths, name: &str, line: Option<&str>) -> crate::error::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = paths.kernels_dir();
    let file = dir.join(name);
    let Some(line) = line else {
        return match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(crate::error::Error::io(
                format!("remove {}", file.display()),
                e,
            )),
            _ => Ok(()),
        };
    };
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(format!("{line}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &file)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        crate::error::Error::io(format!("write {}", file.display()), e)
    })
}

/// The extra kernel arguments stored with `kernel` at `vmsan setup`: only the installed
/// `kernels/vmlinux` has them. The file must be a root-owned regular file nobody else can
/// write (it goes onto the guest's command line), and its content is checked again.
pub fn stored_kernel_args(paths: &Paths, kernel: &Path) -> crate::error::Result<Option<String>> {
    if kernel != paths.kernels_dir().join("vmlinux") {
        return Ok(None);
    }
    let file = paths.kernels_dir().join(KERNEL_ARGS_FILE);
    let bad = |why: String| {
        crate::error::Error::new(
            crate::error::ErrorCode::ValidationArgs,
            format!(
                "The stored kernel arguments in {} are unusable: {why}",
                file.display()
            ),
        )
        .fix("Run `vmsan setup --force` again, with --kernel-args if the kernel needs any.")
    };
    let Some(text) = read_setup_record(paths, KERNEL_ARGS_FILE, bad)? else {
        return Ok(None);
    };
    let args = vmsan_firecracker::KernelArgs::parse(&text).map_err(|e| bad(e.to_string()))?;
    Ok((!args.is_empty()).then(|| args.to_line()))
}

/// Store (or, with none, remove) the extra arguments of the kernel `vmsan setup` has just
/// installed: a new kernel never inherits the arguments of the one it replaced.
pub fn store_kernel_args(paths: &Paths, args: &str) -> crate::error::Result<()> {
    let args = vmsan_firecracker::KernelArgs::parse(args).map_err(|e| {
        crate::error::Error::new(crate::error::ErrorCode::ValidationArgs, e.to_string())
    })?;
    write_setup_record(
        paths,
        KERNEL_ARGS_FILE,
        (!args.is_empty()).then(|| args.to_line()).as_deref(),
    )
}

/// The compression every image build of this home uses (`vmsan setup --image-compression`);
/// zstd when setup never stored one.
pub fn stored_image_compression(paths: &Paths) -> crate::error::Result<vmsan_image::Compression> {
    let file = paths.kernels_dir().join(IMAGE_COMPRESSION_FILE);
    let bad = |why: String| {
        crate::error::Error::new(
            crate::error::ErrorCode::ValidationArgs,
            format!(
                "The stored image compression in {} is unusable: {why}",
                file.display()
            ),
        )
        .fix("Run `vmsan setup --force` again, with --image-compression zstd or lz4.")
    };
    match read_setup_record(paths, IMAGE_COMPRESSION_FILE, bad)? {
        None => Ok(vmsan_image::Compression::default()),
        Some(text) => text
            .parse()
            .map_err(|_| bad(format!("{text:?} is not zstd or lz4"))),
    }
}

/// Store the compression of the images `vmsan setup` prepares this home for. Like the kernel
/// arguments, it goes with the kernel setup installs: a setup without it sets the default.
pub fn store_image_compression(
    paths: &Paths,
    compression: vmsan_image::Compression,
) -> crate::error::Result<()> {
    write_setup_record(paths, IMAGE_COMPRESSION_FILE, Some(compression.as_str()))
}

/// Check that a binary vmsan runs as root is a regular, executable file owned by root and
/// writable by nobody else, and so is every directory above it (sticky directories such as
/// /tmp excepted). `Err` says why not. (One check, shared with `vmsan setup`.)
pub fn check_trusted_file(path: &Path) -> Result<(), String> {
    vmsan_image::check_trusted_binary(path).map_err(|e| e.to_string())
}

/// Is this an ELF executable without a program interpreter (i.e. statically linked)?
pub fn is_static_elf(path: &Path) -> std::io::Result<bool> {
    let mut f = std::fs::File::open(path)?;
    let mut head = vec![0u8; 64];
    f.read_exact(&mut head)?;
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a 64-bit little-endian ELF file",
        )
    };
    if &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return Err(bad());
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let phoff = u64::from_le_bytes(head[32..40].try_into().map_err(|_| bad())?);
    let phentsize = usize::from(u16_at(&head, 54));
    let phnum = usize::from(u16_at(&head, 56));
    if phentsize < 4 || phnum > 4096 {
        return Err(bad());
    }
    let mut table = vec![0u8; phentsize * phnum];
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(phoff))?;
    f.read_exact(&mut table)?;
    const PT_INTERP: u32 = 3;
    Ok(!table.chunks(phentsize).any(|ph| u32_at(ph, 0) == PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_args_are_stored_with_the_installed_kernel_only_and_replaced_with_it() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path());
        std::fs::create_dir_all(paths.kernels_dir()).unwrap();
        let installed = paths.kernels_dir().join("vmlinux");
        std::fs::write(&installed, b"kernel").unwrap();
        assert_eq!(stored_kernel_args(&paths, &installed).unwrap(), None);

        store_kernel_args(&paths, "noxsave  tsc=reliable").unwrap();
        assert_eq!(
            stored_kernel_args(&paths, &installed).unwrap().as_deref(),
            Some("noxsave tsc=reliable")
        );
        // Not `vmlinux…`: never taken for a kernel.
        assert_eq!(find_kernel(&paths), Some(installed.clone()));
        // Another kernel (`create --kernel`) has none.
        assert_eq!(
            stored_kernel_args(&paths, &d.path().join("other/vmlinux")).unwrap(),
            None
        );
        // A setup without arguments removes them: a new kernel never inherits old ones.
        store_kernel_args(&paths, "").unwrap();
        assert_eq!(stored_kernel_args(&paths, &installed).unwrap(), None);
        assert!(store_kernel_args(&paths, "vmsan_config=/x").is_err());

        // A file others may write, a symlink, or reserved content is refused.
        let file = paths.kernels_dir().join(KERNEL_ARGS_FILE);
        std::fs::write(&file, "quiet\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        if nix::unistd::geteuid().is_root() {
            let e = stored_kernel_args(&paths, &installed).unwrap_err();
            assert_eq!(e.code(), crate::error::ErrorCode::ValidationArgs);
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::write(&file, "rdinit=/bin/sh\n").unwrap();
            assert!(stored_kernel_args(&paths, &installed).is_err());
            std::fs::remove_file(&file).unwrap();
            let target = d.path().join("elsewhere");
            std::fs::write(&target, "quiet\n").unwrap();
            std::os::unix::fs::symlink(&target, &file).unwrap();
            assert!(stored_kernel_args(&paths, &installed).is_err());
        }
    }

    #[test]
    fn the_image_compression_is_stored_beside_the_kernel_arguments() {
        use std::os::unix::fs::PermissionsExt;
        use vmsan_image::Compression;
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path());
        std::fs::create_dir_all(paths.kernels_dir()).unwrap();
        // A home set up before the setting existed builds zstd images.
        assert_eq!(stored_image_compression(&paths).unwrap(), Compression::Zstd);
        store_image_compression(&paths, Compression::Lz4).unwrap();
        assert_eq!(stored_image_compression(&paths).unwrap(), Compression::Lz4);
        let file = paths.kernels_dir().join(IMAGE_COMPRESSION_FILE);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "lz4\n");
        // Not `vmlinux…`: never taken for a kernel; and the kernel arguments are untouched.
        assert_eq!(find_kernel(&paths), None);
        store_kernel_args(&paths, "quiet").unwrap();
        store_image_compression(&paths, Compression::Zstd).unwrap();
        assert_eq!(stored_image_compression(&paths).unwrap(), Compression::Zstd);
        let kernel = paths.kernels_dir().join("vmlinux");
        assert_eq!(
            stored_kernel_args(&paths, &kernel).unwrap().as_deref(),
            Some("quiet")
        );
        // Anything else in it is refused, not taken for the default.
        std::fs::write(&file, "gzip\n").unwrap();
        let e = stored_image_compression(&paths).unwrap_err();
        assert_eq!(e.code(), crate::error::ErrorCode::ValidationArgs);
        assert!(e.to_string().contains("gzip"), "{e}");
        if nix::unistd::geteuid().is_root() {
            std::fs::write(&file, "lz4\n").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
            assert!(stored_image_compression(&paths).is_err());
        }
    }

    #[test]
    fn firecracker_versions() {
        let v = Version::parse_firecracker(
            "Firecracker v1.16.1\n\nSupported snapshot data format versions: v8.0.0\n",
        );
        assert_eq!(v, Some(Version(1, 16, 1)));
        assert!(firecracker_supported(Version(1, 16, 1)));
        assert!(firecracker_supported(FIRECRACKER_MIN));
        assert!(!firecracker_supported(Version(1, 9, 9)));
        assert!(!firecracker_supported(FIRECRACKER_NEXT_UNSUPPORTED));
        assert_eq!(Version::parse_firecracker("firecracker 1.2"), None);
        assert_eq!(
            Version::parse_firecracker("Firecracker v1.17.0-dev"),
            Some(Version(1, 17, 0))
        );
    }

    #[test]
    fn static_and_dynamic_elves() {
        // /bin/sh on Debian is dynamically linked.
        assert!(!is_static_elf(Path::new("/bin/sh")).unwrap());
        // A text file is not an ELF at all.
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("t");
        std::fs::write(&t, vec![b'x'; 100]).unwrap();
        assert!(is_static_elf(&t).is_err());
        if let Some(bb) = ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
        {
            // busybox-static is static.
            assert!(is_static_elf(bb).unwrap());
        }
    }

    #[test]
    fn trusted_files() {
        if !nix::unistd::geteuid().is_root() {
            vmsan_testkit::skip!("ownership checks need files owned by root; run as root");
            return;
        }
        let d = tempfile::Builder::new().tempdir_in("/var/tmp").unwrap();
        std::fs::set_permissions(
            d.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let f = d.path().join("fc");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        assert_eq!(check_trusted_file(&f), Ok(()));
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o775)).unwrap();
        assert!(check_trusted_file(&f).unwrap_err().contains("writable"));
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&f, Some(65534), None).unwrap();
        assert!(check_trusted_file(&f).unwrap_err().contains("uid 65534"));
        std::os::unix::fs::chown(&f, Some(0), None).unwrap();
        std::fs::set_permissions(
            d.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        assert!(check_trusted_file(&f).unwrap_err().contains("writable"));
        let l = d.path().join("link");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        assert!(check_trusted_file(&l).unwrap_err().contains("symlink"));
    }
}
