//! Where the stand-in binaries are, for tests of other crates.
//!
//! `cargo build --workspace` (and `cargo nextest run --workspace`) build
//! `firecracker-standin`, `jailer-standin` and `standin-guest-util` into the target directory
//! next to the test executables' `deps/` folder; `VMSAN_STANDIN_DIR` overrides the lookup.

use std::io;
use std::path::{Path, PathBuf};

/// Paths of the built stand-in binaries.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `firecracker-standin`.
    pub firecracker: PathBuf,
    /// `jailer-standin`.
    pub jailer: PathBuf,
    /// `standin-guest-util` (Unix-socket helper for busybox guests).
    pub guest_util: PathBuf,
}

/// Finds the built binaries (`VMSAN_STANDIN_DIR`, else the directory above the running test
/// executable's `deps/`, else next to it).
pub fn paths() -> io::Result<Paths> {
    let dir = match std::env::var_os("VMSAN_STANDIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe()?;
            let parent = exe.parent().map(Path::to_path_buf).unwrap_or_default();
            if parent.file_name().is_some_and(|n| n == "deps") {
                parent.parent().map(Path::to_path_buf).unwrap_or(parent)
            } else {
                parent
            }
        }
    };
    let p = Paths {
        firecracker: dir.join("firecracker-standin"),
        jailer: dir.join("jailer-standin"),
        guest_util: dir.join("standin-guest-util"),
    };
    for b in [&p.firecracker, &p.jailer, &p.guest_util] {
        if !b.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} not built (run `cargo build -p vmsan-testkit --bins`, or set VMSAN_STANDIN_DIR)",
                    b.display()
                ),
            ));
        }
    }
    Ok(p)
}

/// Puts copies of the stand-ins named `firecracker` and `jailer` into `dir`, so a caller that
/// derives the jail path from the exec file's name (`<base>/firecracker/<id>/root`) sees exactly
/// the layout real Firecracker gives. Returns `(firecracker, jailer)`.
pub fn install_as_real_names(dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
    let p = paths()?;
    std::fs::create_dir_all(dir)?;
    let fc = dir.join("firecracker");
    let jl = dir.join("jailer");
    for (src, dst) in [(&p.firecracker, &fc), (&p.jailer, &jl)] {
        let _ = std::fs::remove_file(dst);
        if std::fs::hard_link(src, dst).is_err() {
            std::fs::copy(src, dst)?;
        }
    }
    Ok((fc, jl))
}

/// Whether the caller is root (stand-in boots need it; tests skip with a reason otherwise).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
