//! OCI / Docker v2 manifests, indexes and image configs (only the fields we use).

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// OCI image manifest.
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest.
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer.
pub const MT_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI plain tar layer.
pub const MT_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI zstd layer.
pub const MT_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker gzip layer.
pub const MT_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Largest manifest / index / config we accept.
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    #[serde(default)]
    pub media_type: String,
    /// Digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// An OS/architecture pair (plus variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `linux`.
    pub os: String,
    /// `v8`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this host, in OCI (GOARCH) names.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Self {
            architecture: architecture.to_owned(),
            os: "linux".to_owned(),
            variant: None,
        }
    }

    /// Parse `os/arch[/variant]`.
    ///
    /// # Errors
    /// Wrong shape.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Self {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Self {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: Some((*v).to_owned()),
            }),
            _ => Err(Error::malformed(
                "platform",
                format!("{s:?}: expected os/arch[/variant]"),
            )),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && match (&self.variant, &other.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Image manifest (OCI or Docker v2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Must be 2.
    pub schema_version: u32,
    /// Media type, when present.
    #[serde(default)]
    pub media_type: Option<String>,
    /// Config blob.
    pub config: Descriptor,
    /// Layers, base first.
    pub layers: Vec<Descriptor>,
}

/// Image index / manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Must be 2.
    pub schema_version: u32,
    /// Media type, when present.
    #[serde(default)]
    pub media_type: Option<String>,
    /// Entries.
    pub manifests: Vec<Descriptor>,
}

/// A fetched manifest document, classified.
#[derive(Debug, Clone)]
pub enum ManifestDoc {
    /// A single-platform manifest.
    Manifest(Manifest),
    /// An index.
    Index(Index),
}

/// Classify and parse a manifest document.
///
/// # Errors
/// [`Error::Malformed`] for anything we cannot use.
pub fn parse_manifest(bytes: &[u8], content_type: Option<&str>, what: &str) -> Result<ManifestDoc> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::malformed(what, "larger than 4 MiB"));
    }
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::malformed(what, format!("not JSON: {e}")))?;
    let mt = v
        .get("mediaType")
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .or_else(|| content_type.map(str::to_owned));
    let schema = v.get("schemaVersion").and_then(serde_json::Value::as_u64);
    if schema != Some(2) {
        return Err(Error::malformed(
            what,
            format!("schemaVersion {schema:?} is not supported (need 2)"),
        ));
    }
    let is_index = match mt.as_deref() {
        Some(MT_OCI_INDEX | MT_DOCKER_LIST) => true,
        Some(MT_OCI_MANIFEST | MT_DOCKER_MANIFEST) => false,
        _ => v.get("manifests").is_some(),
    };
    if is_index {
        let idx: Index = serde_json::from_value(v)
            .map_err(|e| Error::malformed(what, format!("bad index: {e}")))?;
        Ok(ManifestDoc::Index(idx))
    } else {
        let m: Manifest = serde_json::from_value(v)
            .map_err(|e| Error::malformed(what, format!("bad manifest: {e}")))?;
        for l in &m.layers {
            LayerCompression::from_media_type(&l.media_type)
                .map_err(|e| Error::malformed(what, e.to_string()))?;
        }
        Ok(ManifestDoc::Manifest(m))
    }
}

/// Choose the entry of an index for `want`.
///
/// # Errors
/// [`Error::NoMatchingPlatform`].
pub fn select_platform<'a>(
    idx: &'a Index,
    want: &Platform,
    reference: &str,
) -> Result<&'a Descriptor> {
    idx.manifests
        .iter()
        .filter(|d| {
            matches!(
                d.media_type.as_str(),
                MT_OCI_MANIFEST | MT_DOCKER_MANIFEST | ""
            )
        })
        .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
        .ok_or_else(|| Error::NoMatchingPlatform {
            reference: reference.to_owned(),
            wanted: want.to_string(),
            available: idx
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl LayerCompression {
    /// From a layer media type.
    ///
    /// # Errors
    /// Unknown media types.
    pub fn from_media_type(mt: &str) -> Result<Self> {
        match mt {
            MT_OCI_LAYER_GZIP
            | MT_DOCKER_LAYER_GZIP
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Self::Gzip),
            MT_OCI_LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Self::None),
            MT_OCI_LAYER_ZSTD => Ok(Self::Zstd),
            other => Err(Error::malformed(
                "layer",
                format!("unsupported layer media type {other:?}"),
            )),
        }
    }

    /// Sniff from the first bytes.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

/// The parts of an OCI image config the VM needs (Env, WorkingDir, User, Entrypoint, Cmd):
/// the guest protocol's type, which the image record stores and the guest receives as is.
pub use vmsan_proto::ImageConfig;

#[derive(Deserialize)]
struct RawConfigFile {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    config: Option<RawConfig>,
    #[serde(default)]
    rootfs: Option<RawRootfs>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// A parsed image config blob.
#[derive(Debug, Clone)]
pub struct ParsedConfig {
    /// The runtime defaults.
    pub config: ImageConfig,
    /// Platform the config claims.
    pub platform: Option<Platform>,
    /// Uncompressed layer digests.
    pub diff_ids: Vec<String>,
}

/// Parse an image config blob.
///
/// # Errors
/// [`Error::Malformed`].
pub fn parse_config(bytes: &[u8]) -> Result<ParsedConfig> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::malformed("image config", "larger than 4 MiB"));
    }
    let raw: RawConfigFile = serde_json::from_slice(bytes)
        .map_err(|e| Error::malformed("image config", e.to_string()))?;
    let c = raw.config.unwrap_or(RawConfig {
        env: None,
        working_dir: None,
        user: None,
        entrypoint: None,
        cmd: None,
    });
    let platform = match (raw.os, raw.architecture) {
        (Some(os), Some(architecture)) => Some(Platform {
            os,
            architecture,
            variant: None,
        }),
        _ => None,
    };
    Ok(ParsedConfig {
        config: ImageConfig {
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.filter(|w| !w.is_empty()),
            user: c.user.filter(|u| !u.is_empty()),
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
        },
        platform,
        diff_ids: raw.rootfs.map(|r| r.diff_ids).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_and_selects() {
        let d = Digest::of(b"x");
        let idx = serde_json::json!({
            "schemaVersion": 2, "mediaType": MT_OCI_INDEX,
            "manifests": [
                {"mediaType": MT_OCI_MANIFEST, "digest": d.to_string(), "size": 1, "platform": {"os":"linux","architecture":"arm64","variant":"v8"}},
                {"mediaType": MT_OCI_MANIFEST, "digest": d.to_string(), "size": 2, "platform": {"os":"linux","architecture":"amd64"}}
            ]
        });
        let ManifestDoc::Index(i) = parse_manifest(idx.to_string().as_bytes(), None, "t").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            select_platform(&i, &Platform::parse("linux/amd64").unwrap(), "r")
                .unwrap()
                .size,
            2
        );
        assert_eq!(
            select_platform(&i, &Platform::parse("linux/arm64").unwrap(), "r")
                .unwrap()
                .size,
            1
        );
        let e = select_platform(&i, &Platform::parse("linux/s390x").unwrap(), "r").unwrap_err();
        assert!(e.to_string().contains("linux/arm64/v8"), "{e}");
        assert!(parse_manifest(b"{", None, "t").is_err());
        assert!(parse_manifest(br#"{"schemaVersion":1}"#, None, "t").is_err());
        assert!(
            parse_manifest(
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
                None,
                "t"
            )
            .is_err()
        );
    }

    #[test]
    fn config_fields() {
        let c = parse_config(br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"WorkingDir":"/w","User":"1000:1000","Entrypoint":["/e"],"Cmd":["c"]}}"#).unwrap();
        assert_eq!(c.config.env, vec!["A=1"]);
        assert_eq!(c.config.working_dir.as_deref(), Some("/w"));
        assert_eq!(c.config.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.config.entrypoint, vec!["/e"]);
        assert_eq!(c.config.cmd, vec!["c"]);
        assert_eq!(c.platform.unwrap().to_string(), "linux/amd64");
    }
}
