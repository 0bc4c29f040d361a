//! How the blocks of a squashfs image are compressed: zstd (the default, smaller images) or
//! LZ4, for guest kernels that cannot read zstd (built without `SQUASHFS_ZSTD`, or whose zstd
//! decoder takes a code path the host cannot run: the kernel's zstd picks its BMI2 path from
//! the raw CPUID, and a nested hypervisor that emulates the guest kernel may lack `shlx`).
//! The kernel's LZ4 decoder is plain C.
//!
//! Squashfs facts (the kernel's `fs/squashfs/lz4_wrapper.c`, squashfs-tools): LZ4 is
//! compressor id 5 and its filesystems always carry a compression-options block right after
//! the superblock (version 1, the "legacy" format the kernel reads, and flags, 0 or LZ4HC);
//! each data or metadata block is one raw LZ4 block, which the kernel hands to
//! `LZ4_decompress_safe` with the block size as the output bound. zstd is id 6 and needs no
//! options block.

use std::io;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The compression of a squashfs image's data and metadata blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd: the default (smaller images; the kernel needs `SQUASHFS_ZSTD`).
    #[default]
    Zstd,
    /// LZ4: larger images, read by the kernel's plain-C LZ4 decoder (`SQUASHFS_LZ4`).
    Lz4,
}

impl Compression {
    /// Every compression, the default first.
    pub const ALL: [Self; 2] = [Self::Zstd, Self::Lz4];

    /// `zstd` or `lz4`, as the CLI and the records spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Lz4 => "lz4",
        }
    }

    /// The superblock's compressor id.
    pub(crate) fn squashfs_id(self) -> u16 {
        match self {
            Self::Zstd => 6,
            Self::Lz4 => 5,
        }
    }

    /// The compression-options block written after the superblock, if this compression has
    /// one. LZ4's is mandatory: the kernel refuses an LZ4 filesystem without it.
    pub(crate) fn squashfs_options(self) -> Option<[u8; 8]> {
        match self {
            Self::Zstd => None,
            Self::Lz4 => {
                const LZ4_LEGACY: u32 = 1;
                let mut o = [0u8; 8];
                o[..4].copy_from_slice(&LZ4_LEGACY.to_le_bytes());
                // Flags (bytes 4..8): 0, plain LZ4 rather than LZ4HC; both decode alike.
                Some(o)
            }
        }
    }

    /// mksquashfs's arguments for this compression (`level` is zstd's).
    pub(crate) fn mksquashfs_args(self, level: u8) -> Vec<String> {
        match self {
            Self::Zstd => vec![
                "-comp".into(),
                "zstd".into(),
                "-Xcompression-level".into(),
                level.clamp(1, 22).to_string(),
            ],
            Self::Lz4 => vec!["-comp".into(), "lz4".into()],
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| Error::Malformed {
                what: "image compression".into(),
                reason: format!("{s:?} is not zstd or lz4"),
            })
    }
}

/// What one image's blocks are compressed with: the compression and, for zstd, its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Codec {
    pub(crate) compression: Compression,
    pub(crate) level: i32,
}

/// Compresses blocks one at a time into a buffer it keeps (no allocation per block).
pub(crate) struct BlockCompressor {
    kind: Kind,
    buf: Vec<u8>,
}

enum Kind {
    Zstd(zstd::bulk::Compressor<'static>),
    Lz4,
}

impl BlockCompressor {
    /// A compressor for `codec`.
    ///
    /// # Errors
    /// zstd cannot start (out of memory).
    pub(crate) fn new(codec: Codec) -> io::Result<Self> {
        let kind = match codec.compression {
            Compression::Zstd => Kind::Zstd(zstd::bulk::Compressor::new(codec.level)?),
            Compression::Lz4 => Kind::Lz4,
        };
        Ok(Self {
            kind,
            buf: Vec::new(),
        })
    }

    /// The compressed bytes of `src` when they are smaller than `src`, else `None` (the block
    /// is then stored as it is, with its "uncompressed" bit set).
    ///
    /// # Errors
    /// The compressor failed.
    pub(crate) fn compress(&mut self, src: &[u8]) -> io::Result<Option<&[u8]>> {
        let n = match &mut self.kind {
            Kind::Zstd(z) => {
                // zstd writes into the spare capacity and sets the length.
                self.buf.clear();
                self.buf.reserve(zstd::zstd_safe::compress_bound(src.len()));
                z.compress_to_buffer(src, &mut self.buf)?
            }
            Kind::Lz4 => {
                // lz4_flex writes into initialised bytes: zero them once, not per block.
                let need = lz4_flex::block::get_maximum_output_size(src.len());
                if self.buf.len() < need {
                    self.buf.resize(need, 0);
                }
                lz4_flex::block::compress_into(src, &mut self.buf).map_err(io::Error::other)?
            }
        };
        let out = self.buf.get(..n).ok_or_else(|| {
            io::Error::other(format!("the compressor reported {n} bytes, wrote fewer"))
        })?;
        Ok((n < src.len()).then_some(out))
    }
}

/// Decompress one block of at most `max` bytes (tests read back what was written).
#[cfg(test)]
pub(crate) fn decompress(c: Compression, src: &[u8], max: usize) -> io::Result<Vec<u8>> {
    match c {
        Compression::Zstd => zstd::bulk::decompress(src, max),
        Compression::Lz4 => {
            let mut out = vec![0u8; max];
            let n = lz4_flex::block::decompress_into(src, &mut out).map_err(io::Error::other)?;
            out.truncate(n);
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_incompressible_ones_are_stored() {
        let text: Vec<u8> = (0..131_072u32)
            .map(|i| b"abcdefgh"[(i % 8) as usize])
            .collect();
        // A xorshift stream: nothing to compress.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for c in Compression::ALL {
            let mut z = BlockCompressor::new(Codec {
                compression: c,
                level: 1,
            })
            .unwrap();
            let packed = z.compress(&text).unwrap().unwrap().to_vec();
            assert!(packed.len() < text.len() / 10, "{c}: {}", packed.len());
            assert_eq!(decompress(c, &packed, text.len()).unwrap(), text, "{c}");
            assert!(z.compress(&noise).unwrap().is_none(), "{c}");
            // Short blocks (an 8 KiB metadata block's tail) too.
            let short = b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let p = z.compress(short).unwrap().unwrap().to_vec();
            assert_eq!(decompress(c, &p, 8192).unwrap(), short, "{c}");
        }
    }

    #[test]
    fn names_ids_and_options() {
        assert_eq!("lz4".parse::<Compression>().unwrap(), Compression::Lz4);
        assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::Zstd);
        assert!("gzip".parse::<Compression>().is_err());
        assert_eq!(Compression::default(), Compression::Zstd);
        assert_eq!(
            (
                Compression::Zstd.squashfs_id(),
                Compression::Lz4.squashfs_id()
            ),
            (6, 5)
        );
        assert_eq!(Compression::Zstd.squashfs_options(), None);
        assert_eq!(
            Compression::Lz4.squashfs_options(),
            Some([1, 0, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(serde_json::to_string(&Compression::Lz4).unwrap(), "\"lz4\"");
    }
}
