//! `vmsan setup`: install Firecracker, the jailer and the guest kernel into root-owned
//! directories of the vmsan home, from official release archives over HTTP(S) with checksum
//! verification, or from local files for offline hosts.
//!
//! Release layout (as published on GitHub):
//! `<base>/v1.16.1/firecracker-v1.16.1-x86_64.tgz` holding
//! `release-v1.16.1-x86_64/firecracker-v1.16.1-x86_64` and `…/jailer-v1.16.1-x86_64`, with the
//! checksum file `<archive>.sha256.txt` (`<hex>  <archive name>`).

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result, with_causes};
use crate::progress::{Progress, ProgressFn, emit};

/// Firecracker version installed by default.
pub const DEFAULT_FIRECRACKER_VERSION: &str = "v1.16.1";
/// Oldest supported Firecracker (inclusive).
pub const MIN_FIRECRACKER: (u32, u32, u32) = (1, 10, 0);
/// First unsupported Firecracker (exclusive).
pub const MAX_FIRECRACKER: (u32, u32, u32) = (2, 0, 0);
/// Default release download base.
pub const DEFAULT_RELEASE_BASE: &str =
    "https://github.com/firecracker-microvm/firecracker/releases/download";
/// Default guest kernel (Firecracker's CI kernel); `{arch}` is replaced.
pub const DEFAULT_KERNEL_URL: &str =
    "https://s3.amazonaws.com/spec.ccfc.min/firecracker-ci/v1.14/{arch}/vmlinux-6.1.155";
/// sha256 of the default kernel per architecture. Firecracker's CI bucket publishes no checksum
/// beside its kernels, so the digests are pinned here (the same values independent projects pin
/// for these exact files): a kernel served with any other content is refused.
const DEFAULT_KERNEL_SHA256: [(&str, &str); 2] = [
    (
        "x86_64",
        "e41c7048bd2475e7e788153823fcb9166a7e0b78c4c443bd6446d015fa735f53",
    ),
    (
        "aarch64",
        "61baeae1ac6197be4fc5c71fa78df266acdc33c54570290d2f611c2b42c105be",
    ),
];

/// Options of [`setup`].
#[derive(Clone)]
pub struct SetupOptions {
    /// vmsan home; binaries go to `<home>/bin`, kernels to `<home>/kernels`.
    pub home: PathBuf,
    /// Firecracker release tag, e.g. `v1.16.1`.
    pub version: String,
    /// Release download base URL.
    pub release_base_url: String,
    /// Kernel URL (`{arch}` is replaced).
    pub kernel_url: String,
    /// Expected kernel sha256; when absent, `<kernel_url>.sha256` is fetched.
    pub kernel_sha256: Option<String>,
    /// Architecture (`x86_64` or `aarch64`); default this host's.
    pub arch: String,
    /// Local Firecracker binary instead of a download.
    pub firecracker: Option<PathBuf>,
    /// Local jailer binary instead of a download.
    pub jailer: Option<PathBuf>,
    /// Local kernel instead of a download.
    pub kernel: Option<PathBuf>,
    /// Progress callback.
    pub progress: Option<ProgressFn>,
    /// HTTP timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for SetupOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupOptions")
            .field("home", &self.home)
            .field("version", &self.version)
            .field("release_base_url", &self.release_base_url)
            .field("kernel_url", &self.kernel_url)
            .field("arch", &self.arch)
            .finish_non_exhaustive()
    }
}

impl SetupOptions {
    /// Defaults for `home`.
    pub fn new(home: &Path) -> Self {
        Self {
            home: home.to_owned(),
            version: DEFAULT_FIRECRACKER_VERSION.to_owned(),
            release_base_url: DEFAULT_RELEASE_BASE.to_owned(),
            kernel_url: DEFAULT_KERNEL_URL.to_owned(),
            kernel_sha256: None,
            arch: std::env::consts::ARCH.to_owned(),
            firecracker: None,
            jailer: None,
            kernel: None,
            progress: None,
            timeout: Duration::from_secs(120),
        }
    }
}

/// What [`setup`] installed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetupReport {
    /// Installed Firecracker.
    pub firecracker: PathBuf,
    /// Installed jailer.
    pub jailer: PathBuf,
    /// Installed kernel.
    pub kernel: PathBuf,
    /// Firecracker version (`v1.16.1`).
    pub version: String,
}

/// How the kernel's download is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KernelCheck {
    /// A digest given by the caller, or pinned for the default kernel.
    Known(Digest),
    /// The checksum file published beside the kernel (`<url>.sha256`).
    Published,
}

fn kernel_check(opts: &SetupOptions, arch: &str) -> Result<KernelCheck> {
    if let Some(h) = &opts.kernel_sha256 {
        return Digest::from_hex(&h.to_ascii_lowercase())
            .map(KernelCheck::Known)
            .map_err(|_| setup_err(format!("{h:?} is not a sha256"), "pass 64 hex digits"));
    }
    if opts.kernel_url != DEFAULT_KERNEL_URL {
        return Ok(KernelCheck::Published);
    }
    let pinned = DEFAULT_KERNEL_SHA256
        .iter()
        .find(|(a, _)| *a == arch)
        .ok_or_else(|| {
            setup_err(
                format!("no default guest kernel for {arch}"),
                "pass a kernel with --kernel",
            )
        })?;
    Digest::from_hex(pinned.1)
        .map(KernelCheck::Known)
        .map_err(|_| setup_err("the pinned kernel digest is malformed", "report a bug"))
}

fn setup_err(message: impl Into<String>, hint: impl Into<String>) -> Error {
    Error::Setup {
        message: message.into(),
        hint: hint.into(),
    }
}

/// Parse `v1.16.1` / `1.16.1` / `Firecracker v1.16.1`.
pub fn parse_version(s: &str) -> Option<(u32, u32, u32)> {
    let v = s.trim().rsplit(' ').next()?.trim_start_matches('v');
    let mut it = v.split(['.', '-']);
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    let c = it.next()?.parse().ok()?;
    Some((a, b, c))
}

/// Whether a version is in the supported range.
pub fn version_supported(v: (u32, u32, u32)) -> bool {
    v >= MIN_FIRECRACKER && v < MAX_FIRECRACKER
}

fn elf_machine(arch: &str) -> Option<u16> {
    match arch {
        "x86_64" => Some(62),
        "aarch64" => Some(183),
        _ => None,
    }
}

fn check_elf_arch(bytes: &[u8], arch: &str, what: &str) -> Result<()> {
    let want = elf_machine(arch).ok_or_else(|| {
        setup_err(
            format!("architecture {arch} is not supported"),
            "use an x86_64 or aarch64 host",
        )
    })?;
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return Err(setup_err(
            format!("{what} is not an ELF executable"),
            "check the download location or the file you passed",
        ));
    }
    let m = u16::from_le_bytes([bytes[18], bytes[19]]);
    if m != want {
        let found = match m {
            62 => "x86_64",
            183 => "aarch64",
            _ => "another architecture",
        };
        return Err(setup_err(
            format!("{what} is built for {found}, this host needs {arch}"),
            format!("download the {arch} release, or pass a binary built for {arch}"),
        ));
    }
    Ok(())
}

/// Refuse binaries that are not regular files owned by root, or that group or others can write.
///
/// # Errors
/// [`Error::Setup`] saying which rule failed and how to fix it.
pub fn check_trusted_binary(path: &Path) -> Result<()> {
    let m = fs::symlink_metadata(path).map_err(|e| {
        setup_err(
            format!("{} cannot be read: {e}", path.display()),
            "run `vmsan setup`",
        )
    })?;
    if m.file_type().is_symlink() {
        return Err(setup_err(
            format!("{} is a symlink", path.display()),
            "run `vmsan setup` to install a real binary",
        ));
    }
    if !m.file_type().is_file() {
        return Err(setup_err(
            format!("{} is not a regular file", path.display()),
            "run `vmsan setup` to install a real binary",
        ));
    }
    if m.uid() != 0 {
        return Err(setup_err(
            format!("{} is owned by uid {}, not root", path.display(), m.uid()),
            format!("run `chown root:root {}`", path.display()),
        ));
    }
    if m.mode() & 0o022 != 0 {
        return Err(setup_err(
            format!(
                "{} is writable by group or others (mode {:o})",
                path.display(),
                m.mode() & 0o7777
            ),
            format!("run `chmod go-w {}`", path.display()),
        ));
    }
    if m.mode() & 0o111 == 0 {
        return Err(setup_err(
            format!("{} is not executable", path.display()),
            format!("run `chmod 0755 {}`", path.display()),
        ));
    }
    // Every directory above it must be root-owned and writable by nobody else (a sticky
    // directory such as /tmp excepted): otherwise another user could swap the binary.
    let mut dir = path.parent();
    while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
        let dm = fs::metadata(d).map_err(|e| {
            setup_err(
                format!("{} cannot be read: {e}", d.display()),
                "check the directory",
            )
        })?;
        let why = if dm.uid() != 0 {
            Some(format!("is owned by uid {}, not root", dm.uid()))
        } else if dm.mode() & 0o022 != 0 && dm.mode() & 0o1000 == 0 {
            Some(format!(
                "is writable by group or others (mode {:o})",
                dm.mode() & 0o7777
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(setup_err(
                format!("{} lies in {}, which {why}", path.display(), d.display()),
                "install it under the vmsan home with `vmsan setup`",
            ));
        }
        dir = d.parent();
    }
    Ok(())
}

/// Run `firecracker --version` and parse it.
///
/// # Errors
/// The binary cannot run or prints no version.
pub fn firecracker_version(path: &Path) -> Result<(u32, u32, u32)> {
    let out = std::process::Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| {
            setup_err(
                format!("cannot run {} --version: {e}", path.display()),
                "check that it is a Firecracker binary for this host",
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Firecracker ")
                .and_then(parse_version)
        })
        .ok_or_else(|| {
            setup_err(
                format!(
                    "{} --version printed no Firecracker version",
                    path.display()
                ),
                "pass a Firecracker release binary",
            )
        })
}

fn install_bytes(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<PathBuf> {
    let dest = dir.join(name);
    let mut tmp = tempfile::Builder::new()
        .prefix(".install-")
        .tempfile_in(dir)
        .ctx(|| format!("create temp file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes).ctx(|| format!("write {}", dest.display()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .ctx(|| format!("chmod {}", dest.display()))?;
    tmp.as_file()
        .sync_all()
        .ctx(|| format!("fsync {}", dest.display()))?;
    tmp.persist(&dest)
        .map_err(|e| Error::io(format!("rename into {}", dest.display()), e.error))?;
    Ok(dest)
}

/// A root-owned directory of the home: private to root and the home's group (see `modes`).
fn root_dir(p: &Path) -> Result<()> {
    crate::modes::private_dir(p)
}

async fn download(
    client: &reqwest::Client,
    url: &str,
    what: &str,
    p: Option<&ProgressFn>,
) -> Result<Vec<u8>> {
    let offline_hint = "fix what the cause names (DNS, proxy, firewall, TLS inspection), or use a \
         mirror of the release archives with --release-url URL, or on an offline host give local \
         files: --firecracker PATH --jailer PATH --kernel PATH";
    let mut resp = client.get(url).send().await.map_err(|e| {
        setup_err(
            format!("cannot download {what} from {url}: {}", with_causes(&e)),
            offline_hint,
        )
    })?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(setup_err(
            format!("{what} not found at {url} (HTTP 404)"),
            "check the version and architecture, or the download location",
        ));
    }
    if !resp.status().is_success() {
        return Err(setup_err(
            format!(
                "downloading {what} from {url} failed: HTTP {}",
                resp.status()
            ),
            offline_hint,
        ));
    }
    let total = resp.content_length();
    let mut out = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(|e| {
        setup_err(
            format!(
                "download of {what} from {url} was interrupted: {}",
                with_causes(&e)
            ),
            offline_hint,
        )
    })? {
        out.extend_from_slice(&c);
        if out.len() > (1 << 30) {
            return Err(setup_err(
                format!("{what} is larger than 1 GiB"),
                "check the download location",
            ));
        }
        emit(
            p,
            Progress::Download {
                name: what.to_owned(),
                done: out.len() as u64,
                total,
            },
        );
    }
    Ok(out)
}

fn checksum_from_file(text: &str, name: &str) -> Option<Digest> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let hex = it.next()?;
        let file = it.next().map(|f| f.trim_start_matches('*'));
        if file.is_none_or(|f| f == name || f.ends_with(&format!("/{name}"))) {
            Digest::from_hex(&hex.to_ascii_lowercase()).ok()
        } else {
            None
        }
    })
}

fn verify(bytes: &[u8], want: &Digest, what: &str) -> Result<()> {
    let mut h = Hasher::default();
    h.update(bytes);
    let got = h.finish();
    if &got != want {
        return Err(setup_err(
            format!("checksum mismatch for {what}: expected {want}, got {got}"),
            "the download is corrupt or tampered with; retry, or check the download location",
        ));
    }
    Ok(())
}

/// Install Firecracker, the jailer and the kernel. Nothing is installed unless everything
/// verified.
///
/// # Errors
/// [`Error::Setup`] saying what failed and what to do next.
pub async fn setup(opts: &SetupOptions) -> Result<SetupReport> {
    let p = opts.progress.as_ref();
    let arch = opts.arch.as_str();
    if elf_machine(arch).is_none() {
        return Err(setup_err(
            format!("architecture {arch:?} is not supported"),
            "use x86_64 or aarch64",
        ));
    }
    if arch != std::env::consts::ARCH {
        return Err(setup_err(
            format!(
                "architecture {arch} was requested but this host is {}",
                std::env::consts::ARCH
            ),
            format!(
                "run setup without an architecture override (or with {})",
                std::env::consts::ARCH
            ),
        ));
    }
    let version = parse_version(&opts.version).ok_or_else(|| {
        setup_err(
            format!("{:?} is not a Firecracker version", opts.version),
            "use a release tag like v1.16.1",
        )
    })?;
    if !version_supported(version) && opts.firecracker.is_none() {
        return Err(setup_err(
            format!(
                "Firecracker {} is not supported (supported: v{}.{}.{} up to, not including, v{}.0.0)",
                opts.version,
                MIN_FIRECRACKER.0,
                MIN_FIRECRACKER.1,
                MIN_FIRECRACKER.2,
                MAX_FIRECRACKER.0
            ),
            format!("install {DEFAULT_FIRECRACKER_VERSION}"),
        ));
    }
    let tag = format!("v{}.{}.{}", version.0, version.1, version.2);
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .timeout(opts.timeout)
        .build()
        .map_err(|e| setup_err(format!("cannot create an HTTP client: {e}"), "report a bug"))?;

    // Firecracker and jailer.
    let (fc, jailer) = match (&opts.firecracker, &opts.jailer) {
        (Some(f), Some(j)) => (
            fs::read(f).map_err(|e| {
                setup_err(
                    format!("cannot read {}: {e}", f.display()),
                    "check the --firecracker path",
                )
            })?,
            fs::read(j).map_err(|e| {
                setup_err(
                    format!("cannot read {}: {e}", j.display()),
                    "check the --jailer path",
                )
            })?,
        ),
        (None, None) => {
            let archive = format!("firecracker-{tag}-{arch}.tgz");
            let base = opts.release_base_url.trim_end_matches('/');
            let url = format!("{base}/{tag}/{archive}");
            let sums = download(
                &client,
                &format!("{url}.sha256.txt"),
                &format!("{archive}.sha256.txt"),
                p,
            )
            .await?;
            let want =
                checksum_from_file(&String::from_utf8_lossy(&sums), &archive).ok_or_else(|| {
                    setup_err(
                        format!("no checksum for {archive} in {url}.sha256.txt"),
                        "check the download location",
                    )
                })?;
            let tgz = download(&client, &url, &archive, p).await?;
            verify(&tgz, &want, &archive)?;
            extract_release(&tgz, &tag, arch)?
        }
        _ => {
            return Err(setup_err(
                "only one of --firecracker and --jailer was given",
                "pass both, or neither to download them",
            ));
        }
    };
    check_elf_arch(&fc, arch, "the Firecracker binary")?;
    check_elf_arch(&jailer, arch, "the jailer binary")?;

    // Kernel.
    let kernel = match &opts.kernel {
        Some(k) => fs::read(k).map_err(|e| {
            setup_err(
                format!("cannot read {}: {e}", k.display()),
                "check the --kernel path",
            )
        })?,
        None => {
            let url = opts.kernel_url.replace("{arch}", arch);
            let name = url.rsplit('/').next().unwrap_or("vmlinux").to_owned();
            let want = match kernel_check(opts, arch)? {
                KernelCheck::Known(d) => d,
                KernelCheck::Published => {
                    let sums = download(
                        &client,
                        &format!("{url}.sha256"),
                        &format!("{name}.sha256"),
                        p,
                    )
                    .await?;
                    checksum_from_file(&String::from_utf8_lossy(&sums), &name).ok_or_else(|| {
                        setup_err(
                            format!("no checksum for {name} in {url}.sha256"),
                            "pass the kernel's sha256 explicitly",
                        )
                    })?
                }
            };
            let k = download(&client, &url, &name, p).await?;
            verify(&k, &want, &name)?;
            k
        }
    };
    if kernel.starts_with(b"\x7fELF") {
        check_elf_arch(&kernel, arch, "the kernel")?;
    }

    // Install: root-owned private directories, binaries 0755, kernel 0644 (Firecracker reads
    // it in the jail under its own uid; the directories keep everyone else out).
    let bin = opts.home.join("bin");
    let kdir = opts.home.join("kernels");
    root_dir(&opts.home)?;
    root_dir(&bin)?;
    root_dir(&kdir)?;
    let fc_path = install_bytes(&bin, "firecracker", &fc, 0o755)?;
    let jailer_path = install_bytes(&bin, "jailer", &jailer, 0o755)?;
    let kernel_path = install_bytes(&kdir, "vmlinux", &kernel, 0o644)?;
    check_trusted_binary(&fc_path)?;
    check_trusted_binary(&jailer_path)?;
    let installed = firecracker_version(&fc_path)?;
    if !version_supported(installed) || (opts.firecracker.is_none() && installed != version) {
        let _ = fs::remove_file(&fc_path);
        let _ = fs::remove_file(&jailer_path);
        return Err(setup_err(
            format!(
                "the installed Firecracker reports v{}.{}.{}, which is not supported or not what was requested",
                installed.0, installed.1, installed.2
            ),
            format!("install {DEFAULT_FIRECRACKER_VERSION}"),
        ));
    }
    Ok(SetupReport {
        firecracker: fc_path,
        jailer: jailer_path,
        kernel: kernel_path,
        version: format!("v{}.{}.{}", installed.0, installed.1, installed.2),
    })
}

fn extract_release(tgz: &[u8], tag: &str, arch: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let dir = format!("release-{tag}-{arch}");
    let fc_name = format!("{dir}/firecracker-{tag}-{arch}");
    let jailer_name = format!("{dir}/jailer-{tag}-{arch}");
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let (mut fc, mut jailer) = (None, None);
    let mut other_arch = false;
    let entries = a.entries().map_err(|e| {
        setup_err(
            format!("the release archive is unreadable: {e}"),
            "retry the download",
        )
    })?;
    for e in entries {
        let mut e = e.map_err(|e| {
            setup_err(
                format!("the release archive is unreadable: {e}"),
                "retry the download",
            )
        })?;
        let path = e
            .path()
            .map(|p| p.to_string_lossy().trim_start_matches("./").to_owned())
            .unwrap_or_default();
        let mut read = |dest: &mut Option<Vec<u8>>| -> Result<()> {
            let mut v = Vec::new();
            (&mut e)
                .take(512 << 20)
                .read_to_end(&mut v)
                .map_err(|err| {
                    setup_err(
                        format!("the release archive is unreadable: {err}"),
                        "retry the download",
                    )
                })?;
            *dest = Some(v);
            Ok(())
        };
        if path == fc_name {
            read(&mut fc)?;
        } else if path == jailer_name {
            read(&mut jailer)?;
        } else if path.starts_with("release-") && !path.contains(arch) {
            other_arch = true;
        }
    }
    match (fc, jailer) {
        (Some(f), Some(j)) => Ok((f, j)),
        _ if other_arch => Err(setup_err(
            format!("the release archive holds binaries for another architecture, not {arch}"),
            format!("download the {arch} release archive"),
        )),
        _ => Err(setup_err(
            format!("the release archive lacks {fc_name} or {jailer_name}"),
            "check the version and the download location",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("Firecracker v1.16.1"), Some((1, 16, 1)));
        assert_eq!(parse_version("v1.16.1"), Some((1, 16, 1)));
        assert!(version_supported((1, 16, 1)));
        assert!(!version_supported((0, 25, 0)));
        assert!(!version_supported((2, 0, 0)));
        assert_eq!(parse_version("vx"), None);
        let d = Digest::of(b"x");
        assert_eq!(
            checksum_from_file(&format!("{}  a.tgz\n", d.hex()), "a.tgz"),
            Some(d.clone())
        );
        assert_eq!(
            checksum_from_file(&format!("{}  b.tgz\n", d.hex()), "a.tgz"),
            None
        );
    }

    #[test]
    fn the_default_kernel_is_pinned_for_both_architectures() {
        let opts = SetupOptions::new(Path::new("/nonexistent"));
        for (arch, hex) in DEFAULT_KERNEL_SHA256 {
            assert_eq!(
                kernel_check(&opts, arch).unwrap(),
                KernelCheck::Known(Digest::from_hex(hex).unwrap())
            );
        }
        // A served kernel with other content is refused by that digest.
        let KernelCheck::Known(want) = kernel_check(&opts, "x86_64").unwrap() else {
            unreachable!()
        };
        let e = verify(b"not the kernel", &want, "vmlinux-6.1.155").unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        // Another location uses its published checksum; an explicit digest wins everywhere.
        let mut other = opts.clone();
        other.kernel_url = "https://mirror.example/vmlinux".into();
        assert_eq!(
            kernel_check(&other, "x86_64").unwrap(),
            KernelCheck::Published
        );
        other.kernel_sha256 = Some("AB".repeat(32));
        assert_eq!(
            kernel_check(&other, "x86_64").unwrap(),
            KernelCheck::Known(Digest::from_hex(&"ab".repeat(32)).unwrap())
        );
        assert!(kernel_check(&opts, "riscv64").is_err());
    }
}
