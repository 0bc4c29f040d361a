//! newc cpio (optionally gzip-compressed) writing and strict unpacking.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Unpacks a newc archive (gzip-compressed or not, possibly several concatenated) under
/// `root`. Entry names may not escape `root` (no `..`, no path through a symlink); device
/// nodes are skipped (a guest must never reach a host device through its initrd). Returns the
/// number of entries written.
pub fn unpack(mut input: impl Read, root: &Path) -> io::Result<usize> {
    let mut data = Vec::new();
    input.read_to_end(&mut data)?;
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&data[..]).read_to_end(&mut out)?;
        data = out;
    }
    let mut pos = 0usize;
    let mut count = 0usize;
    loop {
        // Skip NUL padding between concatenated archives.
        while pos < data.len() && data[pos] == 0 {
            pos += 1;
        }
        if pos >= data.len() {
            break;
        }
        let header = data
            .get(pos..pos + 110)
            .ok_or_else(|| bad("truncated header"))?;
        let magic = &header[..6];
        if magic != b"070701" && magic != b"070702" {
            return Err(bad(&format!("bad magic at offset {pos}")));
        }
        let field = |i: usize| -> io::Result<u32> {
            let s = std::str::from_utf8(&header[6 + i * 8..6 + (i + 1) * 8])
                .map_err(|_| bad("non-ASCII header"))?;
            u32::from_str_radix(s, 16).map_err(|_| bad("bad hex in header"))
        };
        let mode = field(1)?;
        let filesize = field(6)? as usize;
        let namesize = field(11)? as usize;
        let name_start = pos + 110;
        let name_bytes = data
            .get(name_start..name_start + namesize)
            .ok_or_else(|| bad("truncated name"))?;
        let name = std::str::from_utf8(name_bytes.strip_suffix(&[0]).unwrap_or(name_bytes))
            .map_err(|_| bad("non-UTF-8 name"))?
            .to_owned();
        let data_start = align4(name_start + namesize);
        let body = data
            .get(data_start..data_start + filesize)
            .ok_or_else(|| bad("truncated file data"))?;
        pos = align4(data_start + filesize);
        if name == "TRAILER!!!" {
            continue;
        }
        let rel = safe_relative(&name)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = root.join(&rel);
        check_parents(root, &rel)?;
        let kind = mode & 0o170_000;
        let perm = mode & 0o7777;
        remove_if_symlink(&target)?;
        match kind {
            0o040_000 => {
                if !target.is_dir() {
                    fs::create_dir(&target)?;
                }
                fs::set_permissions(&target, fs::Permissions::from_mode(perm))?;
            }
            0o100_000 => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(perm)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)?;
                f.write_all(body)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(perm))?;
            }
            0o120_000 => {
                let link = std::str::from_utf8(body).map_err(|_| bad("non-UTF-8 link"))?;
                if target.symlink_metadata().is_ok() {
                    fs::remove_file(&target)?;
                }
                std::os::unix::fs::symlink(link, &target)?;
            }
            // Character and block devices, FIFOs and sockets are not created.
            _ => continue,
        }
        count += 1;
    }
    Ok(count)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("initrd: {msg}"))
}

fn safe_relative(name: &str) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(bad(&format!("entry {name:?} escapes the root")));
            }
        }
    }
    Ok(out)
}

fn check_parents(root: &Path, rel: &Path) -> io::Result<()> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        cur.push(c);
        let meta = cur.symlink_metadata().map_err(|e| {
            io::Error::new(e.kind(), format!("initrd: parent {}: {e}", cur.display()))
        })?;
        if !meta.is_dir() {
            return Err(bad(&format!(
                "parent {} is not a directory (symlinks are not followed)",
                cur.display()
            )));
        }
    }
    Ok(())
}

fn remove_if_symlink(p: &Path) -> io::Result<()> {
    if let Ok(m) = p.symlink_metadata()
        && m.file_type().is_symlink()
    {
        fs::remove_file(p)?;
    }
    Ok(())
}

/// Builds newc archives in memory (for fixtures).
#[derive(Debug, Default)]
pub struct Writer {
    out: Vec<u8>,
    ino: u32,
}

impl Writer {
    /// Empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, name: &str, mode: u32, body: &[u8]) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            body.len(),
            0,
            0,
            0,
            0,
            namesize,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
        self.out.extend_from_slice(body);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// Adds a directory.
    pub fn dir(&mut self, name: &str, perm: u32) -> &mut Self {
        self.entry(name, 0o040_000 | perm, &[]);
        self
    }

    /// Adds a regular file.
    pub fn file(&mut self, name: &str, perm: u32, body: &[u8]) -> &mut Self {
        self.entry(name, 0o100_000 | perm, body);
        self
    }

    /// Adds a symlink.
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, 0o120_777, target.as_bytes());
        self
    }

    /// Adds an arbitrary entry (tests use it for device nodes and hostile names).
    pub fn raw(&mut self, name: &str, mode: u32, body: &[u8]) -> &mut Self {
        self.entry(name, mode, body);
        self
    }

    /// Finishes the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        while !self.out.len().is_multiple_of(512) {
            self.out.push(0);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_gzip_and_hostile_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new();
        w.dir("bin", 0o755)
            .file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n")
            .symlink("sh", "bin/hello")
            .raw("dev-vda", 0o060_600, &[]);
        let plain = w.finish();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let packed = gz.finish().unwrap();
        let n = unpack(&packed[..], dir.path()).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            fs::read(dir.path().join("bin/hello")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert!(
            !dir.path().join("dev-vda").exists(),
            "device nodes are skipped"
        );

        let mut evil = Writer::new();
        evil.file("../escape", 0o644, b"x");
        assert!(unpack(&evil.finish()[..], dir.path()).is_err());

        let mut through_link = Writer::new();
        through_link
            .symlink("up", "/tmp")
            .file("up/evil", 0o644, b"x");
        let err = unpack(&through_link.finish()[..], dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
