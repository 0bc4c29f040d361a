//! Content digests (`sha256:<64 hex>`), and a writer that hashes what passes through it.

use std::fmt;
use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A validated sha256 content digest. The hex part is lowercase and exactly 64 characters, so
/// it is always safe to use as a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parse `sha256:<hex>`.
    ///
    /// # Errors
    /// Any other algorithm or a malformed hex part.
    pub fn parse(s: &str) -> Result<Self> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(Error::malformed(
                "digest",
                format!("{s:?} has no algorithm prefix"),
            ));
        };
        if alg != "sha256" {
            return Err(Error::malformed(
                "digest",
                format!("{s:?}: only sha256 digests are supported"),
            ));
        }
        Self::from_hex(hex)
            .map_err(|_| Error::malformed("digest", format!("{s:?}: need 64 lowercase hex digits")))
    }

    /// From the 64 lowercase hex digits alone.
    ///
    /// # Errors
    /// Malformed hex.
    pub fn from_hex(hex: &str) -> Result<Self> {
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self {
                hex: hex.to_owned(),
            })
        } else {
            Err(Error::malformed(
                "digest",
                format!("{hex:?}: need 64 lowercase hex digits"),
            ))
        }
    }

    /// Digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Check `bytes` against this digest.
    ///
    /// # Errors
    /// [`Error::DigestMismatch`].
    pub fn verify(&self, what: &str, bytes: &[u8]) -> Result<()> {
        let actual = Self::of(bytes);
        if &actual == self {
            Ok(())
        } else {
            Err(Error::DigestMismatch {
                what: what.to_owned(),
                expected: self.to_string(),
                actual: actual.to_string(),
            })
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Hashes (and counts) everything written through it.
#[derive(Debug)]
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    pub(crate) fn finish(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest {
                hex: hex::encode(self.hasher.finalize()),
            },
            self.written,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Incremental sha256.
#[derive(Debug, Default, Clone)]
pub(crate) struct Hasher(Sha256);

impl Hasher {
    pub(crate) fn update(&mut self, b: &[u8]) {
        self.0.update(b);
    }

    pub(crate) fn finish(self) -> Digest {
        Digest {
            hex: hex::encode(self.0.finalize()),
        }
    }
}

/// sha256 of a file, streaming.
pub(crate) fn digest_file(path: &std::path::Path) -> Result<(Digest, u64)> {
    use crate::error::IoContext;
    let mut f = std::fs::File::open(path).ctx(|| format!("open {}", path.display()))?;
    let mut w = HashingWriter::new(io::sink());
    io::copy(&mut f, &mut w).ctx(|| format!("read {}", path.display()))?;
    let (_, d, n) = w.finish();
    Ok((d, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert!(Digest::parse("sha512:abc").is_err());
        assert!(Digest::parse("sha256:../../etc/passwd").is_err());
        assert!(
            Digest::parse(
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
            )
            .is_err()
        );
        assert!(d.verify("x", b"a").is_err());
        d.verify("x", b"").unwrap();
    }
}
