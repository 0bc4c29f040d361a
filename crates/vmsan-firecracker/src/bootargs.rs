//! The guest kernel command line (docs/guest-abi.md, "Boot").
//!
//! The fast-boot options come first, then the four `vmsan_*` keys the agent reads from its
//! environment. Drives are configured in the order rootfs, overlay, config and none is the
//! root device, so the guest names them `vda`, `vdb`, `vdc`.

use std::fmt;

use vmsan_proto::FsType;

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

/// The guest device name of the drive configured at position `index` (0 → `/dev/vda`).
#[must_use]
pub fn virtio_block_device(index: u8) -> Option<String> {
    (index < 26).then(|| format!("/dev/vd{}", char::from(b'a' + index)))
}

/// Builder of the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    rootfs_fs: FsType,
    rootfs_dev: String,
    overlay_dev: String,
    config_dev: String,
    extra: Vec<String>,
}

impl BootArgs {
    /// The standard command line for a root filesystem of type `rootfs_fs`, with the drives
    /// in [`DRIVE_ORDER`].
    #[must_use]
    pub fn new(rootfs_fs: FsType) -> Self {
        Self {
            rootfs_fs,
            rootfs_dev: "/dev/vda".to_owned(),
            overlay_dev: "/dev/vdb".to_owned(),
            config_dev: "/dev/vdc".to_owned(),
            extra: Vec::new(),
        }
    }

    /// Appends a user's extra parameters (already checked by [`KernelArgs::parse`]) after
    /// vmsan's own fast-boot options and before the `vmsan_*` keys, which they cannot change.
    #[must_use]
    pub fn with_user_args(mut self, args: &KernelArgs) -> Self {
        self.extra.extend(args.0.iter().cloned());
        self
    }

    /// Adds one more kernel parameter (e.g. `loglevel=7` for debugging) after the fast-boot
    /// options. `vmsan_*` keys are refused: they belong to the ABI.
    ///
    /// # Errors
    /// [`ArgError`] for an empty parameter, whitespace, quotes, control characters, a `--`
    /// (which would end the kernel's own parameters) or a `vmsan_` key.
    pub fn with_extra(mut self, param: &str) -> Result<Self, ArgError> {
        check_param(param)?;
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

/// One parameter: 1 to 256 bytes, no whitespace, quotes or control characters, not reserved.
fn check_param(param: &str) -> Result<(), ArgError> {
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
    check_not_reserved(param)
}

/// Refuse what would take the guest out of vmsan's hands: `--` (everything after it goes to
/// `/init` as arguments, the `vmsan_*` keys with it), the ABI's `vmsan_*` keys and any other
/// `vmsan_`/`VMSAN_` variable (the agent's environment: `VMSAN_STANDIN_VSOCK_DIR` would make a
/// real guest keep the initramfs's `/dev`), and `init`/`rdinit` (another first process instead of
/// the agent).
fn check_not_reserved(param: &str) -> Result<(), ArgError> {
    let key = param.split_once('=').map_or(param, |(k, _)| k);
    let lower = key.to_ascii_lowercase();
    if param == "--" || lower.starts_with("vmsan_") || matches!(lower.as_str(), "init" | "rdinit") {
        return Err(ArgError::new(
            "kernel parameter",
            param,
            "is reserved by vmsan (--, init, rdinit and vmsan_* keys cannot be set)",
        ));
    }
    Ok(())
}

/// A user's extra kernel parameters (`vmsan setup --kernel-args`, `vmsan create
/// --kernel-args`): space-separated, each checked like [`BootArgs::with_extra`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelArgs(Vec<String>);

impl KernelArgs {
    /// Longest accepted string: with vmsan's own (about 250 bytes) the command line stays well
    /// inside x86's 2048-byte limit.
    pub const MAX_LEN: usize = 1024;

    /// Parse a space-separated list. An empty string is no parameters.
    ///
    /// # Errors
    /// [`ArgError`] for a string over [`Self::MAX_LEN`], a NUL, newline or other control
    /// character, quotes, or a reserved parameter.
    pub fn parse(s: &str) -> Result<Self, ArgError> {
        if s.len() > Self::MAX_LEN {
            return Err(ArgError::new(
                "kernel arguments",
                s.chars().take(64).collect::<String>() + "…",
                "are longer than 1024 bytes",
            ));
        }
        if s.chars().any(|c| c.is_control() && c != ' ') {
            return Err(ArgError::new(
                "kernel arguments",
                s,
                "must not contain NUL, newlines, tabs or other control characters",
            ));
        }
        let mut out = Vec::new();
        for param in s.split(' ').filter(|p| !p.is_empty()) {
            check_param(param)?;
            out.push(param.to_owned());
        }
        Ok(Self(out))
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The parameters, space-separated (what [`Self::parse`] reads back).
    #[must_use]
    pub fn to_line(&self) -> String {
        self.0.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PVM: &str = "clearcpuid=cx16,popcnt,rdrand,rdseed,fsgsbase,smap noxsave mitigations=off \
        initcall_blacklist=jent_mod_init,ptp_kvm_init cryptomgr.notests selinux=0 audit=0 \
        tsc=reliable no_timer_check";

    #[test]
    fn user_args_come_after_vmsans_own_and_before_its_keys() {
        let args = KernelArgs::parse(PVM).unwrap();
        assert_eq!(args.to_line(), PVM);
        let line = BootArgs::new(FsType::Squashfs)
            .with_user_args(&args)
            .render();
        assert!(line.starts_with(FAST_BOOT_ARGS), "{line}");
        let user = line.find("clearcpuid=").unwrap();
        let keys = line.find("vmsan_rootfs=").unwrap();
        assert!(FAST_BOOT_ARGS.len() < user && user < keys, "{line}");
        assert!(line.ends_with("vmsan_config=/dev/vdc"), "{line}");
        // Spaces around and between are not parameters.
        assert_eq!(KernelArgs::parse("  a=1   b  ").unwrap().to_line(), "a=1 b");
        assert!(KernelArgs::parse("").unwrap().is_empty());
    }

    #[test]
    fn reserved_keys_control_characters_and_long_strings_are_refused() {
        for bad in [
            "vmsan_config=/dev/vda",
            "VMSAN_STANDIN_VSOCK_DIR=/x",
            "Vmsan_rootfs=/dev/vdb",
            "vmsan_anything",
            "quiet -- vmsan_config=/x",
            "rdinit=/bin/sh",
            "init=/bin/sh",
            "a=1\nb=2",
            "a=1\0",
            "a=1\tb=2",
            "msg=\"a b\"",
            "x='y'",
        ] {
            assert!(KernelArgs::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = "a".repeat(KernelArgs::MAX_LEN + 1);
        assert!(KernelArgs::parse(&long).is_err());
        let ok = "a".repeat(256);
        assert!(KernelArgs::parse(&ok).is_ok());
        // A key merely containing the word is fine.
        assert!(KernelArgs::parse("novmsan_here=1 initcall_debug").is_ok());
    }
}
