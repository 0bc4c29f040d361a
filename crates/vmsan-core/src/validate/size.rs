//! Disk sizes: `--disk`.

use serde::Serialize;

use super::invalid;
use crate::error::{Error, ErrorCode};

/// Default disk size, GiB.
pub const DISK_DEFAULT_GIB: u32 = 10;
/// Largest disk, GiB.
pub const DISK_MAX_GIB: u32 = 1024;

/// The size of a VM's writable disk, in whole GiB (the state stores `diskSizeGb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskSize {
    /// Size in GiB (2^30 bytes).
    pub gib: u32,
}

impl DiskSize {
    /// Size in bytes.
    pub fn bytes(self) -> u64 {
        u64::from(self.gib) << 30
    }
}

impl Default for DiskSize {
    fn default() -> Self {
        Self {
            gib: DISK_DEFAULT_GIB,
        }
    }
}

/// Parse `--disk`: whole GiB, 1..=1024, written as a bare number or with a `g`, `gb` or `gib`
/// suffix (case-insensitive; `gb` means GiB here, as the Node.js vmsan read it).
///
/// MiB units (`512m`) are rejected on purpose: the disk is an ext4 upper layer whose size is
/// recorded in whole GiB, and a sub-GiB disk leaves no room for an image's writes.
pub fn parse_disk_size(raw: &str) -> Result<DiskSize, Error> {
    let rule = format!(
        "Use a whole number of GiB between 1 and {DISK_MAX_GIB}, optionally followed by g, gb or \
         gib (e.g. 10, 20g, 50GiB)."
    );
    let err = || invalid(ErrorCode::ValidationDiskSize, "--disk", raw, &rule);
    let lower = raw.to_ascii_lowercase();
    let digits_end = lower.bytes().take_while(u8::is_ascii_digit).count();
    let (num, suffix) = lower.split_at(digits_end);
    if num.is_empty() || num.len() > 10 || !matches!(suffix, "" | "g" | "gb" | "gib") {
        return Err(err());
    }
    match num.parse::<u32>() {
        Ok(n) if (1..=DISK_MAX_GIB).contains(&n) => Ok(DiskSize { gib: n }),
        _ => Err(err()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        for (s, g) in [
            ("10", 10),
            ("10gb", 10),
            ("10G", 10),
            ("20gib", 20),
            ("1", 1),
            ("1024GiB", 1024),
        ] {
            assert_eq!(parse_disk_size(s).unwrap().gib, g, "{s}");
        }
        assert_eq!(DiskSize { gib: 2 }.bytes(), 2 << 30);
    }

    #[test]
    fn rejected() {
        for bad in [
            "", "0", "1025", "10tb", "512m", "512mb", "1.5g", "-1", "g", "10 g", "abc",
        ] {
            let e = parse_disk_size(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationDiskSize, "{bad}");
        }
    }
}
