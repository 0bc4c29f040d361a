//! What the host kernel can mount: tests that loop-mount an image (or run a stand-in guest
//! whose agent mounts it) first ask here, and skip with the reason when it cannot.

use std::io::Read;
use std::process::Command;

/// The running kernel's build configuration, from `/proc/config.gz` or
/// `/boot/config-<release>`.
pub fn config() -> Result<String, String> {
    if let Ok(f) = std::fs::File::open("/proc/config.gz") {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(f)
            .read_to_string(&mut text)
            .is_ok()
        {
            return Ok(text);
        }
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let boot = format!("/boot/config-{}", release.trim());
    std::fs::read_to_string(&boot).map_err(|e| {
        format!("the host kernel's config is not readable (/proc/config.gz, {boot}: {e})")
    })
}

/// `Ok` when the host kernel mounts squashfs images compressed with `compression` (`LZ4`,
/// `ZSTD`, as the config symbols spell them), after loading the module if need be; else why
/// not.
pub fn reads_squashfs(compression: &str) -> Result<(), String> {
    // Built as a module on some hosts: loading it is the only way to find out.
    let _ = Command::new("modprobe").arg("squashfs").output();
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("squashfs"))
    {
        return Err("the host kernel has no squashfs (`modprobe squashfs` did not add it)".into());
    }
    let want = format!("CONFIG_SQUASHFS_{compression}=y");
    if config()?.lines().any(|l| l.trim() == want) {
        Ok(())
    } else {
        Err(format!("the host kernel is built without {want}"))
    }
}
