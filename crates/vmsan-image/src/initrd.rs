//! The initrd: a newc cpio archive written here, holding the agent as `/init` and the empty
//! directories `/dev`, `/proc`, `/sys`, `/run`, `/tmp`, `/newroot` (see docs/guest-abi.md).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::store::{ImageStore, write_atomic};

/// The empty directories of the initrd, with their modes.
pub const INITRD_DIRS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("newroot", 0o755),
];

fn header(
    w: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    name: &str,
) -> io::Result<()> {
    let namesize = name.len() + 1;
    write!(
        w,
        "070701{ino:08X}{mode:08X}{uid:08X}{gid:08X}{nlink:08X}{mtime:08X}{size:08X}{z:08X}{z:08X}{z:08X}{z:08X}{namesize:08X}{z:08X}",
        uid = 0,
        gid = 0,
        mtime = 0,
        z = 0,
    )?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    // Header (110 bytes) plus name, padded to 4.
    let pad = (4 - (110 + namesize) % 4) % 4;
    w.write_all(&[0u8; 3][..pad])
}

/// Write the initrd for `agent` (the static agent binary's bytes).
///
/// # Errors
/// I/O, or an agent larger than 4 GiB.
pub fn write_initrd(agent: &[u8], w: &mut impl Write) -> io::Result<()> {
    let size =
        u32::try_from(agent.len()).map_err(|_| io::Error::other("agent larger than 4 GiB"))?;
    let mut ino = 1;
    for (name, mode) in INITRD_DIRS {
        header(w, ino, 0o040_000 | mode, 2, 0, name)?;
        ino += 1;
    }
    header(w, ino, 0o100_755, 1, size, "init")?;
    w.write_all(agent)?;
    let pad = (4 - agent.len() % 4) % 4;
    w.write_all(&[0u8; 3][..pad])?;
    header(w, 0, 0, 1, 0, "TRAILER!!!")?;
    Ok(())
}

impl ImageStore {
    /// The initrd for the agent at `agent`: `<home>/images/initrd/<agent sha256>.cpio`, built
    /// when the agent's bytes are new (older initrds are removed).
    ///
    /// # Errors
    /// I/O.
    pub fn ensure_initrd(&self, agent: &Path) -> Result<PathBuf> {
        let dir = self.dir().join("initrd");
        // Hashing the agent on every create costs milliseconds; the stamp names the initrd
        // built from the agent file with this exact identity (inode, size, times), which any
        // change to the file alters.
        let stamp = dir.join(STAMP);
        let identity = fs::metadata(agent)
            .ctx(|| format!("stat agent binary {}", agent.display()))
            .map(|md| file_identity(&md))?;
        if let Some(path) = fs::read_to_string(&stamp)
            .ok()
            .and_then(|text| cached_initrd(&text, &identity, &dir))
        {
            return Ok(path);
        }
        let bytes = fs::read(agent).ctx(|| format!("read agent binary {}", agent.display()))?;
        if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
            return Err(Error::InvalidPath(
                agent.to_owned(),
                "the agent is not an ELF binary".into(),
            ));
        }
        let d = Digest::of(&bytes);
        crate::modes::private_dir(&dir)?;
        let path = dir.join(format!("{}.cpio", d.hex()));
        let _l = self.lock()?;
        if !path.is_file() {
            let mut out = Vec::with_capacity(bytes.len() + 4096);
            write_initrd(&bytes, &mut out).ctx(|| "write initrd".to_owned())?;
            write_atomic(&path, &out)?;
            if let Ok(rd) = fs::read_dir(&dir) {
                for e in rd.flatten() {
                    if e.path() != path && e.path().extension().is_some_and(|x| x == "cpio") {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        // Only if the file did not change while it was read.
        if fs::metadata(agent).is_ok_and(|md| file_identity(&md) == identity) {
            write_atomic(&stamp, format!("{identity} {}\n", d.hex()).as_bytes())?;
        }
        Ok(path)
    }
}

/// The file recording which agent file the current initrd was built from.
const STAMP: &str = "agent.stamp";

/// A file's identity: device, inode, size, modification and change times (ns).
fn file_identity(md: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{}:{} {} {}.{} {}.{}",
        md.dev(),
        md.ino(),
        md.size(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec()
    )
}

/// The initrd a stamp (`<identity> <sha256 hex>`) names, if it is for this identity and
/// still there.
fn cached_initrd(stamp: &str, identity: &str, dir: &Path) -> Option<PathBuf> {
    let (recorded, hex) = stamp.trim_end().rsplit_once(' ')?;
    if recorded != identity || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let path = dir.join(format!("{hex}.cpio"));
    path.is_file().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_newc() {
        let mut v = Vec::new();
        write_initrd(b"\x7fELFabc", &mut v).unwrap();
        assert!(v.starts_with(b"070701"));
        assert_eq!(v.len() % 4, 0);
        let s = String::from_utf8_lossy(&v);
        for (d, _) in INITRD_DIRS {
            assert!(s.contains(&format!("{d}\0")));
        }
        assert!(s.contains("init\0"));
        assert!(s.ends_with("TRAILER!!!\0\0\0\0") || s.contains("TRAILER!!!"));
    }
}
