//! The config drive: one JSON [`GuestConfig`] padded with NUL bytes to whole 4 KiB blocks.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use vmsan_proto::GuestConfig;

use crate::error::{Error, ErrorCode, Result};

/// The bytes of a config drive for `cfg` (the wire form is the protocol crate's).
pub(super) fn render(cfg: &GuestConfig) -> Result<Vec<u8>> {
    cfg.to_drive_bytes()
        .map_err(|e| Error::new(ErrorCode::Internal, e))
}

/// Write the config drive at `path` (replacing it atomically), readable by the jail's
/// uid/gid only: it holds the agent's token.
pub(super) fn write(path: &Path, cfg: &GuestConfig, uid: u32, gid: u32) -> Result<()> {
    let bytes = render(cfg)?;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(
            format!("write config drive {}", path.display()),
            e,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_to_blocks_and_parses_back() {
        let cfg = GuestConfig {
            version: vmsan_proto::GUEST_CONFIG_VERSION,
            vm_id: "vm-00000001".into(),
            hostname: "vm-00000001".into(),
            token: "t".repeat(64),
            network: None,
            default_user: None,
            env: Default::default(),
            init: Default::default(),
            image: Default::default(),
        };
        let b = render(&cfg).unwrap();
        assert_eq!(b.len() % 4096, 0);
        let end = b.iter().position(|&c| c == 0).unwrap();
        let back: GuestConfig = serde_json::from_slice(&b[..end]).unwrap();
        assert_eq!(back.vm_id, "vm-00000001");
    }
}
