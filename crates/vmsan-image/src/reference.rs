//! Image references, parsed with the grammar of the OCI distribution spec
//! (`github.com/distribution/reference`), and image sources (transports).
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [domain "/"] path-component ("/" path-component)*
//! domain     := host [":" port]
//! path-comp  := [a-z0-9]+ (separator [a-z0-9]+)*      separator := "." | "_" | "__" | "-"+
//! tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex                      (only sha256 is accepted for pulls)
//! ```
//!
//! Docker's normalisation applies: a first component is a registry host only when it contains
//! `.` or `:` or is `localhost`; otherwise the registry is `docker.io`, and single-component
//! names there get `library/`. Without tag and digest the tag is `latest`.

use std::fmt;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The default registry.
pub const DOCKER_HUB: &str = "docker.io";
/// Registry host used for images imported locally.
pub const LOCAL_DOMAIN: &str = "localhost";
const NAME_MAX: usize = 255;

/// A parsed, normalised registry reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

fn bad(input: &str, reason: impl Into<String>) -> Error {
    Error::InvalidReference {
        input: input.to_owned(),
        reason: reason.into(),
    }
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]+ (sep [a-z0-9]+)*` with sep = `.`, `_`, `__`, or one or more `-`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        // A separator run.
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        // [IPv6]:port
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after.strip_prefix(':') {
            Some(p) => ("", Some(p)),
            None if after.is_empty() => ("", None),
            None => return false,
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err())
    {
        return false;
    }
    if d.starts_with('[') {
        return true;
    }
    !host.is_empty() && host.split('.').all(valid_domain_component)
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

impl Reference {
    /// Parse and normalise a reference such as `alpine`, `alpine:3.20`,
    /// `ghcr.io/org/img@sha256:…` or `127.0.0.1:5000/test/img:v1`.
    ///
    /// # Errors
    /// [`Error::InvalidReference`] naming the rule that failed.
    pub fn parse(input: &str) -> Result<Self> {
        if input.is_empty() {
            return Err(bad(input, "image reference cannot be empty"));
        }
        if input.len() > 4096
            || input
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(bad(input, "contains whitespace or control characters"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                let (alg, hex) = d
                    .split_once(':')
                    .ok_or_else(|| bad(input, "digest needs algorithm:hex"))?;
                let alg_ok = !alg.is_empty()
                    && alg.split(['+', '.', '-', '_']).all(|c| {
                        let b = c.as_bytes();
                        !b.is_empty()
                            && b[0].is_ascii_alphabetic()
                            && b.iter().all(u8::is_ascii_alphanumeric)
                    });
                if !alg_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(input, "malformed digest"));
                }
                let digest = Digest::parse(d).map_err(|_| {
                    bad(
                        input,
                        "only sha256 digests with 64 lowercase hex digits are supported",
                    )
                })?;
                (r, Some(digest))
            }
            None => (input, None),
        };
        // The tag is after the last ':' when no '/' follows it.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            if t.is_empty() {
                return Err(bad(input, "tag cannot be empty"));
            }
            if !valid_tag(t) {
                return Err(bad(
                    input,
                    "tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
                ));
            }
        }
        if name.is_empty() {
            return Err(bad(input, "repository name cannot be empty"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.')
                    || first.contains(':')
                    || first == LOCAL_DOMAIN
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                if !valid_domain(first) {
                    return Err(bad(input, format!("invalid registry host {first:?}")));
                }
                (first.to_owned(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let domain = if domain == "index.docker.io" {
            DOCKER_HUB.to_owned()
        } else {
            domain
        };
        for c in path.split('/') {
            if !valid_path_component(c) {
                if c.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(bad(input, "repository name must be lowercase"));
                }
                return Err(bad(
                    input,
                    format!(
                        "invalid path component {c:?} (lowercase letters, digits and . _ __ - separators)"
                    ),
                ));
            }
        }
        let path = if domain == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if domain.len() + 1 + path.len() > NAME_MAX {
            return Err(bad(input, "repository name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// Registry host (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Repository path (`library/alpine`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `domain/path`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag or digest to ask the registry for.
    pub fn reference_part(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// Whether this reference names content immutably (by digest).
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some()
    }

    /// The same name under [`LOCAL_DOMAIN`], for "local names resolve first".
    pub(crate) fn as_local(&self) -> Option<Self> {
        if self.domain != DOCKER_HUB {
            return None;
        }
        let path = self
            .path
            .strip_prefix("library/")
            .unwrap_or(&self.path)
            .to_owned();
        Some(Self {
            domain: LOCAL_DOMAIN.to_owned(),
            path,
            tag: self.tag.clone(),
            digest: self.digest.clone(),
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// An OCI distribution registry (the default; also `docker://REF`).
    Registry(Reference),
    /// A `docker save` archive.
    DockerArchive(PathBuf),
    /// An OCI image layout directory, optionally with a tag (`org.opencontainers.image.ref.name`).
    OciDir(PathBuf, Option<String>),
    /// A tar archive of an OCI image layout, optionally with a tag.
    OciArchive(PathBuf, Option<String>),
}

/// Transports of skopeo/containers-image that we recognise but do not support.
const KNOWN_UNSUPPORTED: &[&str] = &[
    "containers-storage",
    "dir",
    "docker-daemon",
    "ostree",
    "sif",
    "tarball",
    "atomic",
    "ftp",
    "http",
    "https",
    "file",
];

fn split_path_tag(s: &str) -> (PathBuf, Option<String>) {
    // `oci:DIR:TAG`: a trailing `:tag` with no '/' in it.
    match s.rsplit_once(':') {
        Some((p, t)) if !p.is_empty() && !t.is_empty() && !t.contains('/') && valid_tag(t) => {
            (PathBuf::from(p), Some(t.to_owned()))
        }
        _ => (PathBuf::from(s), None),
    }
}

impl ImageSource {
    /// Parse a source string: `docker-archive:PATH`, `oci:DIR[:TAG]`, `oci-archive:PATH[:TAG]`,
    /// `docker://REF` or a plain registry reference.
    ///
    /// # Errors
    /// [`Error::UnknownTransport`] or [`Error::InvalidReference`].
    pub fn parse(input: &str) -> Result<Self> {
        if let Some(rest) = input.strip_prefix("docker://") {
            return Ok(Self::Registry(Reference::parse(rest)?));
        }
        if let Some((scheme, _)) = input.split_once("://") {
            return Err(Error::UnknownTransport(scheme.to_owned()));
        }
        if let Some((prefix, rest)) = input.split_once(':') {
            let path_ok = |r: &str| -> Result<()> {
                if r.is_empty() {
                    Err(Error::InvalidPath(
                        PathBuf::new(),
                        format!("{prefix}: needs a path"),
                    ))
                } else {
                    Ok(())
                }
            };
            match prefix {
                "docker-archive" => {
                    path_ok(rest)?;
                    let (p, _) = split_path_tag(rest);
                    return Ok(Self::DockerArchive(p));
                }
                "oci" => {
                    path_ok(rest)?;
                    let (p, t) = split_path_tag(rest);
                    return Ok(Self::OciDir(p, t));
                }
                "oci-archive" => {
                    path_ok(rest)?;
                    let (p, t) = split_path_tag(rest);
                    return Ok(Self::OciArchive(p, t));
                }
                "docker" => {
                    return Ok(Self::Registry(Reference::parse(
                        rest.trim_start_matches('/'),
                    )?));
                }
                p if KNOWN_UNSUPPORTED.contains(&p) => {
                    return Err(Error::UnknownTransport(p.to_owned()));
                }
                p if !p.contains('/')
                    && !p.contains('.')
                    && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
                    && (rest.starts_with('/')
                        || rest.starts_with('.')
                        || rest.starts_with('~')) =>
                {
                    return Err(Error::UnknownTransport(p.to_owned()));
                }
                _ => {}
            }
        }
        Ok(Self::Registry(Reference::parse(input)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(ok("alpine").to_string(), "docker.io/library/alpine:latest");
        assert_eq!(
            ok("alpine:3.20").to_string(),
            "docker.io/library/alpine:3.20"
        );
        assert_eq!(ok("user/img").to_string(), "docker.io/user/img:latest");
        assert_eq!(
            ok("index.docker.io/library/x:1").to_string(),
            "docker.io/library/x:1"
        );
        let r = ok("localhost:5000/a/b:v1");
        assert_eq!(
            (r.domain(), r.path(), r.tag()),
            ("localhost:5000", "a/b", Some("v1"))
        );
        let r = ok("127.0.0.1:5000/img");
        assert_eq!((r.domain(), r.tag()), ("127.0.0.1:5000", Some("latest")));
        let r = ok("localhost/img");
        assert_eq!(r.domain(), "localhost");
        let r = ok("[::1]:5000/img:t");
        assert_eq!(r.domain(), "[::1]:5000");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = ok(&format!("ghcr.io/org/x@{d}"));
        assert_eq!((r.tag(), r.reference_part().as_str()), (None, d));
        let r = ok(&format!("ghcr.io/org/x:v2@{d}"));
        assert_eq!(r.tag(), Some("v2"));
        assert!(r.is_pinned());
        ok("a/b.c/d__e/f-g/h---i/j_k");
        ok("registry.example.com:443/x/y:A_b.c-D");
    }

    #[test]
    fn rejects_bad_grammar() {
        for s in [
            "",
            "UPPER",
            "alpine:",
            ":tag",
            "a//b",
            "/abs",
            "a/",
            "-lead",
            "trail-",
            "a..b",
            "a___b",
            "a b",
            "alpine:tag with space",
            "alpine:-bad",
            "alpine:.bad",
            "alpine@sha256:short",
            "alpine@md5:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "host:99999/img",
            "ho_st.com/img",
            "../../etc/passwd",
            "a/../b",
            "x;rm -rf /",
            "$(id)",
        ] {
            assert!(Reference::parse(s).is_err(), "{s:?} should be rejected");
        }
        let long = "a".repeat(300);
        assert!(Reference::parse(&long).is_err());
        let tag = format!("a:{}", "t".repeat(129));
        assert!(Reference::parse(&tag).is_err());
        assert!(Reference::parse(&format!("a:{}", "t".repeat(128))).is_ok());
    }

    #[test]
    fn transports() {
        assert_eq!(
            ImageSource::parse("docker-archive:/tmp/x.tar").unwrap(),
            ImageSource::DockerArchive("/tmp/x.tar".into())
        );
        assert_eq!(
            ImageSource::parse("oci:/tmp/lay:v1").unwrap(),
            ImageSource::OciDir("/tmp/lay".into(), Some("v1".into()))
        );
        assert_eq!(
            ImageSource::parse("oci:/tmp/lay").unwrap(),
            ImageSource::OciDir("/tmp/lay".into(), None)
        );
        assert_eq!(
            ImageSource::parse("oci-archive:./a.tar").unwrap(),
            ImageSource::OciArchive("./a.tar".into(), None)
        );
        assert!(matches!(
            ImageSource::parse("docker://alpine").unwrap(),
            ImageSource::Registry(_)
        ));
        assert!(matches!(
            ImageSource::parse("alpine:3").unwrap(),
            ImageSource::Registry(_)
        ));
        assert!(matches!(
            ImageSource::parse("localhost:5000/a").unwrap(),
            ImageSource::Registry(_)
        ));
        for s in [
            "containers-storage:foo",
            "dir:/tmp/x",
            "ftp://host/x",
            "s3://bucket/x",
            "weird:/path",
            "tarball:./x",
        ] {
            assert!(
                matches!(ImageSource::parse(s), Err(Error::UnknownTransport(_))),
                "{s}"
            );
        }
        assert!(ImageSource::parse("oci:").is_err());
    }
}
