//! Guest fixtures: initrds for the stand-in, built in memory.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio;

/// Where Debian's `busybox-static` puts busybox.
pub const BUSYBOX: &str = "/bin/busybox";

/// Applets linked into `/bin` of a busybox guest.
pub const APPLETS: &[&str] = &[
    "sh", "ash", "cat", "echo", "ls", "mount", "umount", "mkdir", "ip", "blockdev", "ping", "nc",
    "sleep", "poweroff", "reboot", "dd", "grep", "head", "tail", "test", "[", "true", "false",
    "hostname", "ps", "kill", "sync", "stat", "readlink", "wc", "printf", "env", "uname", "touch",
    "rm", "ln", "cp", "mv", "chmod", "tr", "cut", "sed", "awk", "timeout", "seq", "id",
];

/// Builds an initrd around busybox with `/init` and optional extra files.
#[derive(Debug, Clone)]
pub struct BusyboxGuest {
    init: String,
    files: Vec<(String, u32, Vec<u8>)>,
    host_binaries: Vec<(PathBuf, String)>,
    gzip: bool,
}

impl BusyboxGuest {
    /// A guest whose `/init` is `init_script` (run by busybox sh).
    pub fn new(init_script: &str) -> Self {
        Self {
            init: init_script.to_owned(),
            files: Vec::new(),
            host_binaries: Vec::new(),
            gzip: false,
        }
    }

    /// Whether busybox is installed here (tests skip otherwise).
    pub fn available() -> bool {
        Path::new(BUSYBOX).is_file()
    }

    /// Adds a file.
    pub fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Self {
        self.files.push((path.to_owned(), mode, data.to_vec()));
        self
    }

    /// Adds a dynamically linked host binary at `dest`, with the shared libraries `ldd` lists.
    pub fn host_binary(mut self, src: &Path, dest: &str) -> Self {
        self.host_binaries
            .push((src.to_path_buf(), dest.to_owned()));
        self
    }

    /// Compresses the archive with gzip (as kernels accept).
    pub fn gzip(mut self, on: bool) -> Self {
        self.gzip = on;
        self
    }

    /// The initrd bytes.
    pub fn build(&self) -> io::Result<Vec<u8>> {
        let busybox = std::fs::read(BUSYBOX).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{BUSYBOX} (apt-get install busybox-static): {e}"),
            )
        })?;
        let mut w = cpio::Writer::new();
        for d in [
            "bin", "dev", "proc", "sys", "run", "tmp", "newroot", "etc", "lib", "lib64", "usr",
            "usr/lib",
        ] {
            w.dir(d, 0o755);
        }
        w.file("bin/busybox", 0o755, &busybox);
        for a in APPLETS {
            w.symlink(&format!("bin/{a}"), "busybox");
        }
        w.file(
            "init",
            0o755,
            format!("#!/bin/sh\n{}", self.init).as_bytes(),
        );
        let mut dirs_done = std::collections::BTreeSet::new();
        let mut add_dirs = |w: &mut cpio::Writer, path: &str| {
            let mut acc = String::new();
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            for p in &parts[..parts.len().saturating_sub(1)] {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(p);
                if dirs_done.insert(acc.clone()) {
                    w.dir(&acc, 0o755);
                }
            }
        };
        for (src, dest) in &self.host_binaries {
            let data = std::fs::read(src)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", src.display())))?;
            add_dirs(&mut w, dest);
            w.file(dest.trim_start_matches('/'), 0o755, &data);
            for lib in shared_libraries(src)? {
                let name = lib.to_string_lossy().trim_start_matches('/').to_owned();
                let real = std::fs::canonicalize(&lib)?;
                let data = std::fs::read(&real)?;
                add_dirs(&mut w, &name);
                w.file(&name, 0o755, &data);
            }
        }
        for (p, mode, data) in &self.files {
            add_dirs(&mut w, p);
            w.file(p.trim_start_matches('/'), *mode, data);
        }
        let raw = w.finish();
        if !self.gzip {
            return Ok(raw);
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw)?;
        gz.finish()
    }
}

/// Shared libraries (and the ELF interpreter) of a dynamic executable, from `ldd`.
pub fn shared_libraries(exe: &Path) -> io::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(exe).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        let path = if let Some((_, rest)) = l.split_once("=>") {
            rest.split_whitespace().next()
        } else {
            l.split_whitespace().next()
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}
