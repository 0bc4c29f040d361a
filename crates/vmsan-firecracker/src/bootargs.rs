//! The guest kernel command line (docs/guest-abi.md, "Boot").
//!
//! The fast-boot options come first, then the four `vmsan_*` keys the agent reads from its
//! environment. Drives are configured in the order rootfs, overlay, config and none is the
//! root device, so the guest names them `vda`, `vdb`, `vdc`.

use std::fmt;

use crate::jailer::ArgError;

/// Kernel options tuned for a fast Firecracker boot.
pub const FAST_BOOT_ARGS: &str =
    "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.dumbkbd quiet";

/// Drive id of the image's read-only root filesystem (configured first: `/dev/vda`).
pub const DRIVE_ROOTFS: &str = "rootfs";
/// Drive id of the VM's read-write overlay disk (second: `/dev/vdb`).
pub const DRIVE_OVERLAY: &str = "overlay";
/// Drive id of the read-only config drive (third: `/dev/vdc`).
pub const DRIVE_CONFIG: &str = "config";

/// The three drives in the order they must be configured.
pub const DRIVE_ORDER: [&str; 3] = [DRIVE_ROOTFS, DRIVE_OVERLAY, DRIVE_CONFIG];

/// Filesystem of the image's root drive (`vmsan_rootfs_fs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootfsFsType {
    /// squashfs.
    Squashfs,
    /// ext4.
    Ext4,
}

impl RootfsFsType {
    /// The value of `vmsan_rootfs_fs`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Squashfs => "squashfs",
            Self::Ext4 => "ext4",
        }
    }
}

impl fmt::Display for RootfsFsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The guest device name of the drive configured at position `index` (0 → `/dev/vda`).
#[must_use]
pub fn virtio_block_device(index: u8) -> Option<String> {
    (index < 26).then(|| format!("/dev/vd{}", char::from(b'a' + index)))
}

/// Builder of the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    rootfs_fs: RootfsFsType,
    rootfs_dev: String,
    overlay_dev: String,
    config_dev: String,
    extra: Vec<String>,
}

impl BootArgs {
    /// The standard command line for a root filesystem of type `rootfs_fs`, with the drives
    /// in [`DRIVE_ORDER`].
    #[must_use]
    pub fn new(rootfs_fs: RootfsFsType) -> Self {
        Self {
            rootfs_fs,
            rootfs_dev: "/dev/vda".to_owned(),
            overlay_dev: "/dev/vdb".to_owned(),
            config_dev: "/dev/vdc".to_owned(),
            extra: Vec::new(),
        }
    }

    /// Adds one more kernel parameter (e.g. `loglevel=7` for debugging) after the fast-boot
    /// options. `vmsan_*` keys are refused: they belong to the ABI.
    ///
    /// # Errors
    /// [`ArgError`] for an empty parameter, whitespace, quotes, control characters, a `--`
    /// (which would end the kernel's own parameters) or a `vmsan_` key.
    pub fn with_extra(mut self, param: &str) -> Result<Self, ArgError> {
        if param.is_empty() || param.len() > 256 {
            return Err(ArgError::new(
                "kernel parameter",
                param,
                "must be 1 to 256 bytes",
            ));
        }
        if param
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\'')
        {
            return Err(ArgError::new(
                "kernel parameter",
                param,
                "must not contain whitespace, quotes or control characters",
            ));
        }
        if param == "--" || param.starts_with("vmsan_") {
            return Err(ArgError::new(
                "kernel parameter",
                param,
                "is reserved by vmsan",
            ));
        }
        self.extra.push(param.to_owned());
        Ok(self)
    }

    /// The command line.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::from(FAST_BOOT_ARGS);
        for param in &self.extra {
            out.push(' ');
            out.push_str(param);
        }
        out.push_str(" vmsan_rootfs=");
        out.push_str(&self.rootfs_dev);
        out.push_str(" vmsan_rootfs_fs=");
        out.push_str(self.rootfs_fs.as_str());
        out.push_str(" vmsan_overlay=");
        out.push_str(&self.overlay_dev);
        out.push_str(" vmsan_config=");
        out.push_str(&self.config_dev);
        out
    }
}

impl fmt::Display for BootArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}
