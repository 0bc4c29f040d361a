//! What a snapshot records besides Firecracker's files, and whether this host can restore it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};
use crate::ids::{SnapshotId, VmId};
use crate::state::{BootSettings, ImageState, Isolation, NetworkState, RuntimeName};

/// The metadata format this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Full memory, or a diff merged onto its parent's memory when it was taken (so every stored
/// snapshot restores on its own, and deleting a parent never breaks a child).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Firecracker's full snapshot.
    Full,
    /// Firecracker's diff snapshot (dirty pages since the previous snapshot), merged.
    Diff,
}

impl SnapshotKind {
    /// `full` or `diff`.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Full => "full",
            SnapshotKind::Diff => "diff",
        }
    }
}

/// The CPU a snapshot was taken on: a restored guest keeps using the CPU features it saw at
/// boot, so the restoring host must have all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HostFingerprint {
    /// `x86_64` or `aarch64`.
    pub arch: String,
    /// `GenuineIntel`, `AuthenticAMD`, … (empty on aarch64).
    pub cpu_vendor: String,
    /// Informational.
    pub cpu_model: String,
    /// The CPU's feature flags, sorted.
    pub cpu_flags: Vec<String>,
}

impl HostFingerprint {
    /// This host's.
    pub fn current() -> Self {
        let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self::from_cpuinfo(std::env::consts::ARCH, &text)
    }

    /// Parse the first processor of `/proc/cpuinfo`.
    pub fn from_cpuinfo(arch: &str, cpuinfo: &str) -> Self {
        let mut fp = Self {
            arch: arch.to_owned(),
            ..Self::default()
        };
        let first = cpuinfo.split("\n\n").next().unwrap_or("");
        for line in first.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k.trim() {
                "vendor_id" | "CPU implementer" if fp.cpu_vendor.is_empty() => {
                    fp.cpu_vendor = v.to_owned();
                }
                "model name" | "CPU part" if fp.cpu_model.is_empty() => {
                    fp.cpu_model = v.to_owned();
                }
                "flags" | "Features" => {
                    let mut flags: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
                    flags.sort();
                    flags.dedup();
                    fp.cpu_flags = flags;
                }
                _ => {}
            }
        }
        fp
    }

    /// Why a snapshot taken on `self` cannot run on `host`, if it cannot.
    pub fn incompatibility(&self, host: &HostFingerprint) -> Option<String> {
        if self.arch != host.arch {
            return Some(format!(
                "it was taken on {}, this host is {}",
                self.arch, host.arch
            ));
        }
        if self.cpu_vendor != host.cpu_vendor {
            return Some(format!(
                "it was taken on a {} CPU, this host's is {}",
                self.cpu_vendor, host.cpu_vendor
            ));
        }
        let have: std::collections::BTreeSet<&str> =
            host.cpu_flags.iter().map(String::as_str).collect();
        let missing: Vec<&str> = self
            .cpu_flags
            .iter()
            .map(String::as_str)
            .filter(|f| !have.contains(f))
            .collect();
        if missing.is_empty() {
            None
        } else {
            Some(format!(
                "this host's CPU lacks features the guest was using: {}",
                missing.join(" ")
            ))
        }
    }
}

/// One stored file: its size, and a digest for the small ones (checked on every restore).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    /// Bytes (logical size; the file may be sparse).
    pub size: u64,
    /// sha256, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

fn is_default_boot(b: &BootSettings) -> bool {
    *b == BootSettings::default()
}

/// `metadata.json` of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotMeta {
    /// [`SCHEMA_VERSION`] when written.
    pub schema_version: u32,
    /// Its id.
    pub id: SnapshotId,
    /// The VM it was taken from.
    pub vm_id: VmId,
    /// RFC 3339.
    pub created_at: String,
    /// Full or diff.
    pub kind: SnapshotKind,
    /// For a diff: the snapshot its memory was merged onto.
    #[serde(default)]
    pub parent: Option<SnapshotId>,
    /// vmsan that wrote it.
    pub vmsan_version: String,
    /// Firecracker that wrote the VM state (`1.16.1`).
    pub firecracker_version: String,
    /// The CPU it was taken on.
    pub host: HostFingerprint,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory, MiB.
    pub mem_mib: u32,
    /// `squashfs` or `ext4`.
    pub rootfs_fs: vmsan_proto::FsType,
    /// The image.
    #[serde(default)]
    pub image: Option<ImageState>,
    /// `agent` or `image`.
    pub init: vmsan_proto::InitMode,
    /// Runtime name, or `image`/`rootfs`.
    #[serde(default)]
    pub runtime: RuntimeName,
    /// Project label.
    #[serde(default)]
    pub project: String,
    /// The network identity and egress policy the VM had.
    pub network: NetworkState,
    /// The isolation it ran with.
    #[serde(default)]
    pub isolation: Isolation,
    /// Kernel arguments, CPU template and boot timeout: clones boot (cold, on `start`) the way
    /// the source did.
    #[serde(default, skip_serializing_if = "is_default_boot")]
    pub boot: BootSettings,
    /// The stored files by name.
    pub files: BTreeMap<String, FileInfo>,
}

impl SnapshotMeta {
    /// Check its format: the fields a restore relies on (`trust::check` adds every value a
    /// `create` flag could have set).
    pub(super) fn check_format(&self, expected: &SnapshotId) -> Result<()> {
        let corrupt = |why: String| {
            Error::new(
                ErrorCode::VmSnapshotCorrupt,
                format!("Snapshot {expected} has invalid metadata: {why}"),
            )
            .detail("snapshotId", expected.as_str())
        };
        if self.schema_version > SCHEMA_VERSION {
            return Err(Error::new(
                ErrorCode::VmSnapshotIncompatible,
                format!(
                    "Snapshot {expected} was written by a newer vmsan (format {}, this one reads {SCHEMA_VERSION})",
                    self.schema_version
                ),
            )
            .fix("Restore it with the vmsan version that took it, or a newer one.")
            .detail("snapshotId", expected.as_str()));
        }
        if &self.id != expected {
            return Err(corrupt(format!("it names itself {}", self.id)));
        }
        if self.vcpus == 0 || self.vcpus > 32 {
            return Err(corrupt(format!("{} vCPUs", self.vcpus)));
        }
        if self.mem_mib < 128 || self.mem_mib > 1 << 20 {
            return Err(corrupt(format!("{} MiB of memory", self.mem_mib)));
        }
        for name in super::layout::DATA_FILES {
            if !self.files.contains_key(*name) {
                return Err(corrupt(format!("no entry for {name}")));
            }
        }
        if let Some(other) = self
            .files
            .keys()
            .find(|k| !super::layout::DATA_FILES.contains(&k.as_str()))
        {
            return Err(corrupt(format!("unknown file {other:?}")));
        }
        if self.files.get(super::layout::MEMORY).map(|f| f.size)
            != Some(u64::from(self.mem_mib) << 20)
        {
            return Err(corrupt(
                "the memory file's size is not the guest's memory".into(),
            ));
        }
        Ok(())
    }

    /// Whether Firecracker `installed` on this host (CPU `host`) can load it.
    pub fn check_compatible(&self, installed: &str, host: &HostFingerprint) -> Result<()> {
        let incompatible = |why: String| {
            Error::new(
                ErrorCode::VmSnapshotIncompatible,
                format!("Snapshot {} cannot be restored here: {why}", self.id),
            )
            .detail("snapshotId", self.id.as_str())
        };
        let major_minor = |v: &str| {
            let mut it = v.trim_start_matches('v').split('.');
            Some((
                it.next()?.parse::<u32>().ok()?,
                it.next()?.parse::<u32>().ok()?,
            ))
        };
        match (
            major_minor(&self.firecracker_version),
            major_minor(installed),
        ) {
            (Some(a), Some(b)) if a == b => {}
            (Some(_), Some(_)) => {
                return Err(incompatible(format!(
                    "it was taken with Firecracker {} and this host runs {installed}; \
                     Firecracker loads snapshots of its own major.minor version only",
                    self.firecracker_version
                )));
            }
            _ => {
                return Err(incompatible(format!(
                    "unreadable Firecracker version {:?}",
                    self.firecracker_version
                )));
            }
        }
        if let Some(why) = self.host.incompatibility(host) {
            return Err(incompatible(why));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTEL: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\nflags\t\t: sse avx2 fpu avx2\n\nprocessor\t: 1\nvendor_id\t: Other\n";

    #[test]
    fn fingerprint_reads_the_first_processor() {
        let fp = HostFingerprint::from_cpuinfo("x86_64", INTEL);
        assert_eq!(fp.cpu_vendor, "GenuineIntel");
        assert_eq!(fp.cpu_model, "Xeon");
        assert_eq!(fp.cpu_flags, ["avx2", "fpu", "sse"]);
    }

    fn meta() -> SnapshotMeta {
        let id = SnapshotId::parse("vm-0123abcd-1767225600000").unwrap();
        let mut files = BTreeMap::new();
        for name in super::super::layout::DATA_FILES {
            files.insert(
                (*name).to_owned(),
                FileInfo {
                    size: 4096,
                    sha256: None,
                },
            );
        }
        files.insert(
            "memory".into(),
            FileInfo {
                size: 128 << 20,
                sha256: None,
            },
        );
        files.insert(
            "disk.ext4".into(),
            FileInfo {
                size: 10 << 30,
                sha256: None,
            },
        );
        SnapshotMeta {
            schema_version: SCHEMA_VERSION,
            vm_id: VmId::parse("vm-0123abcd").unwrap(),
            id,
            created_at: "2026-01-01T00:00:00Z".into(),
            kind: SnapshotKind::Full,
            parent: None,
            vmsan_version: "0.1.0".into(),
            firecracker_version: "1.16.1".into(),
            host: HostFingerprint::from_cpuinfo("x86_64", INTEL),
            vcpus: 1,
            mem_mib: 128,
            rootfs_fs: vmsan_proto::FsType::Squashfs,
            image: None,
            init: vmsan_proto::InitMode::Agent,
            runtime: RuntimeName::default(),
            project: String::new(),
            network: NetworkState {
                network_policy: crate::state::NetworkPolicy::AllowAll,
                ..NetworkState::default()
            },
            isolation: Isolation::default(),
            boot: BootSettings::default(),
            files,
        }
    }

    /// Issue 17 item 10: what a `create` flag could set passes that flag's validator.
    #[test]
    fn metadata_values_pass_create_validators() {
        let id = meta().id.clone();
        let code = |f: &dyn Fn(&mut SnapshotMeta)| {
            let mut m = meta();
            f(&mut m);
            super::super::trust::check(&m, &id).err().map(|e| e.code())
        };
        let disk = |m: &mut SnapshotMeta, size: u64| {
            if let Some(f) = m.files.get_mut("disk.ext4") {
                f.size = size;
            }
        };
        assert_eq!(code(&|m| disk(m, 1 << 40)), None, "1 TiB, --disk's cap");
        assert_eq!(
            code(&|m| disk(m, 4 << 40)),
            Some(ErrorCode::ValidationDiskSize)
        );
        assert_eq!(
            code(&|m| disk(m, (1 << 30) + 1)),
            Some(ErrorCode::ValidationDiskSize)
        );
        assert_eq!(
            code(&|m| {
                m.mem_mib = 65536;
                if let Some(f) = m.files.get_mut("memory") {
                    f.size = 65536 << 20;
                }
            }),
            Some(ErrorCode::ValidationInteger)
        );
        // Values the metadata types are checked as text, in the document an archive holds.
        let raw_code = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut doc = serde_json::to_value(meta()).unwrap();
            f(&mut doc);
            super::super::trust::check_raw_values(&doc)
                .err()
                .map(|e| e.code())
        };
        assert_eq!(raw_code(&|_| {}), None);
        assert_eq!(
            raw_code(&|m| m["network"]["networkPolicy"] = "open".into()),
            Some(ErrorCode::ValidationNetworkPolicy)
        );
        assert_eq!(
            raw_code(&|m| m["network"]["allowedCidrs"] = serde_json::json!(["10.0.0.0/33"])),
            Some(ErrorCode::ValidationCidr)
        );
        assert_eq!(
            raw_code(&|m| m["network"]["dnsServers"] = serde_json::json!(["resolver.example"])),
            Some(ErrorCode::ValidationCidr)
        );
        assert_eq!(
            code(
                &|m| m.network.published_ports = vec![crate::state::PublishedPort {
                    host_port: 0,
                    guest_port: 22,
                    protocol: vmsan_net::Protocol::Tcp,
                }]
            ),
            Some(ErrorCode::ValidationPort)
        );
        assert_eq!(
            code(&|m| m.network.bandwidth_mbit = Some(5000)),
            Some(ErrorCode::ValidationInteger)
        );
        assert_eq!(
            raw_code(&|m| m["runtime"] = "node99".into()),
            Some(ErrorCode::ValidationRuntime)
        );
        assert_eq!(
            code(&|m| m.project = "a\u{1b}[2Jb".into()),
            Some(ErrorCode::ValidationArgs)
        );
    }

    #[test]
    fn an_import_drops_host_side_network_settings() {
        let mut m = meta();
        m.network.published_ports = vec![crate::state::PublishedPort {
            host_port: 2222,
            guest_port: 22,
            protocol: vmsan_net::Protocol::Tcp,
        }];
        m.network.dns_servers = vec![std::net::Ipv4Addr::new(203, 0, 113, 53)];
        m.network.tap_device = "evil0".into();
        m.network.netns_name = Some("evil".into());
        m.network.allowed_domains = vec!["example.com".parse().unwrap()];
        m.network.allow_lan = true;
        super::super::trust::strip_host_side(&mut m);
        assert!(
            !m.network.allow_lan,
            "an archive cannot open this host's LAN"
        );
        assert!(m.network.published_ports.is_empty());
        assert!(m.network.dns_servers.is_empty());
        assert!(m.network.tap_device.is_empty() && m.network.netns_name.is_none());
        // The guest's own egress policy is the snapshot's.
        assert_eq!(
            m.network.allowed_domains,
            ["example.com".parse::<vmsan_net::DomainPattern>().unwrap()]
        );
    }

    #[test]
    fn metadata_is_checked_before_a_restore() {
        let m = meta();
        let id = m.id.clone();
        assert!(super::super::trust::check(&m, &id).is_ok());
        let code = |f: &dyn Fn(&mut SnapshotMeta)| {
            let mut m = meta();
            f(&mut m);
            super::super::trust::check(&m, &id).unwrap_err().code()
        };
        assert_eq!(
            code(&|m| m.schema_version = 2),
            ErrorCode::VmSnapshotIncompatible
        );
        assert_eq!(
            code(&|m| m.id = SnapshotId::parse("vm-0123abcd-1").unwrap()),
            ErrorCode::VmSnapshotCorrupt
        );
        assert_eq!(code(&|m| m.vcpus = 0), ErrorCode::VmSnapshotCorrupt);
        assert_eq!(
            code(&|m| m.mem_mib = 256),
            ErrorCode::VmSnapshotCorrupt,
            "memory file size"
        );
        // An unknown root filesystem type does not even read (`Snapshot::open` calls that a
        // corrupt snapshot).
        let mut doc = serde_json::to_value(meta()).unwrap();
        doc["rootfsFs"] = "xfs".into();
        let e = serde_json::from_value::<SnapshotMeta>(doc).unwrap_err();
        assert!(e.to_string().contains("xfs"), "{e}");
        assert_eq!(
            code(&|m| {
                m.files.remove("vmstate");
            }),
            ErrorCode::VmSnapshotCorrupt
        );
        assert_eq!(
            code(&|m| {
                m.files.insert(
                    "../../etc/passwd".into(),
                    FileInfo {
                        size: 1,
                        sha256: None,
                    },
                );
            }),
            ErrorCode::VmSnapshotCorrupt
        );
    }

    #[test]
    fn firecracker_versions_must_share_major_and_minor() {
        let m = meta();
        let host = m.host.clone();
        assert!(m.check_compatible("1.16.0", &host).is_ok());
        assert!(m.check_compatible("v1.16.3", &host).is_ok());
        for other in ["1.15.1", "2.16.1", "garbage"] {
            assert_eq!(
                m.check_compatible(other, &host).unwrap_err().code(),
                ErrorCode::VmSnapshotIncompatible,
                "{other}"
            );
        }
    }

    #[test]
    fn missing_cpu_features_are_named() {
        let snap = HostFingerprint::from_cpuinfo("x86_64", INTEL);
        let mut host = snap.clone();
        assert_eq!(snap.incompatibility(&host), None);
        host.cpu_flags.retain(|f| f != "avx2");
        assert!(snap.incompatibility(&host).unwrap().contains("avx2"));
        // A host with more features is fine.
        assert_eq!(host.incompatibility(&snap), None);
        let mut amd = snap.clone();
        amd.cpu_vendor = "AuthenticAMD".into();
        assert!(snap.incompatibility(&amd).is_some());
        let mut arm = snap.clone();
        arm.arch = "aarch64".into();
        assert!(snap.incompatibility(&arm).unwrap().contains("aarch64"));
    }
}
