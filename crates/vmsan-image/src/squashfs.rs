//! A squashfs 4.0 writer: the read-only root filesystem written straight from the merged tree
//! ([`crate::tree::Tree`]), with no staging directory and no external tool.
//!
//! Layout, in file order (the order the kernel's sanity checks expect): superblock, the
//! compression options (LZ4 only), data blocks and fragment blocks, inode table, directory
//! table, fragment table, id table, xattr table. Data blocks (128 KiB) and fragment blocks
//! (file tails packed together, per layer) were compressed while the layers were read
//! ([`crate::tree`]), with the image's [`Compression`](crate::Compression); here they are
//! only copied, each file's blocks contiguous. Metadata blocks (8 KiB) are compressed as
//! they fill, with the same compression; a block that does not shrink is stored as is. Files
//! with several links, or extended attributes, get the extended inode types (xattr prefixes
//! `user.`, `trusted.`, `security.`); directory listings are sorted bytewise, in runs of at
//! most 256 entries whose inodes share one metadata block; directories too large for the
//! basic inode get the extended one, without a lookup index. No NFS export table is written.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use crate::compression::{BlockCompressor, Codec};
use crate::error::{Error, IoContext, Result};
use crate::tree::{BLOCK_SIZE, Chunk, Kind, Meta, NodeId, ROOT, Tree};

const MAGIC: u32 = 0x7371_7368;
const SUPERBLOCK_SIZE: u64 = 96;
const METADATA_SIZE: usize = 8192;
const BLOCK_UNCOMPRESSED: u32 = 1 << 24;
const META_UNCOMPRESSED: u16 = 0x8000;
const NO_FRAGMENT: u32 = 0xFFFF_FFFF;
const NO_XATTR: u32 = 0xFFFF_FFFF;
const INVALID_TABLE: u64 = u64::MAX;
const FLAG_NO_XATTRS: u16 = 0x0200;
/// The superblock flag saying a compression-options block follows it.
const FLAG_COMP_OPT: u16 = 0x0400;
const MAX_NAME: usize = 256;
const DIR_RUN: usize = 256;

fn build_err(detail: impl Into<String>) -> Error {
    Error::Command {
        program: "squashfs writer".into(),
        detail: detail.into(),
    }
}

/// The metadata blocks' compressor.
struct Compressor(BlockCompressor);

impl Compressor {
    fn new(codec: Codec) -> Result<Self> {
        BlockCompressor::new(codec)
            .map(Self)
            .map_err(|e| build_err(format!("{} init: {e}", codec.compression)))
    }

    /// The compressed bytes when smaller than `src`, else `None` (store as is).
    fn compress(&mut self, src: &[u8]) -> Result<Option<&[u8]>> {
        self.0
            .compress(src)
            .map_err(|e| build_err(format!("compress a metadata block: {e}")))
    }
}

/// A stream of metadata blocks: 2-byte length header (bit 15: stored uncompressed), then up
/// to 8 KiB of data.
struct MetaWriter {
    out: Vec<u8>,
    cur: Vec<u8>,
    /// Offsets in `out` where each block starts.
    blocks: Vec<u64>,
}

impl MetaWriter {
    fn new() -> Self {
        Self {
            out: Vec::new(),
            cur: Vec::with_capacity(METADATA_SIZE * 2),
            blocks: Vec::new(),
        }
    }

    /// Where the next byte goes: (start of its block in the output, offset in the block).
    fn pos(&self) -> (u64, u16) {
        (self.out.len() as u64, self.cur.len() as u16)
    }

    fn put(&mut self, c: &mut Compressor, b: &[u8]) -> Result<()> {
        self.cur.extend_from_slice(b);
        while self.cur.len() >= METADATA_SIZE {
            let rest = self.cur.split_off(METADATA_SIZE);
            let block = std::mem::replace(&mut self.cur, rest);
            self.flush(c, &block)?;
        }
        Ok(())
    }

    fn flush(&mut self, c: &mut Compressor, block: &[u8]) -> Result<()> {
        self.blocks.push(self.out.len() as u64);
        match c.compress(block)? {
            Some(z) => {
                self.out.extend_from_slice(&(z.len() as u16).to_le_bytes());
                self.out.extend_from_slice(z);
            }
            None => {
                self.out
                    .extend_from_slice(&(block.len() as u16 | META_UNCOMPRESSED).to_le_bytes());
                self.out.extend_from_slice(block);
            }
        }
        Ok(())
    }

    fn finish(mut self, c: &mut Compressor) -> Result<(Vec<u8>, Vec<u64>)> {
        if !self.cur.is_empty() {
            let block = std::mem::take(&mut self.cur);
            self.flush(c, &block)?;
        }
        Ok((self.out, self.blocks))
    }
}

struct Ids {
    map: HashMap<u32, u16>,
    list: Vec<u32>,
}

impl Ids {
    fn index(&mut self, id: u32) -> Result<u16> {
        if let Some(i) = self.map.get(&id) {
            return Ok(*i);
        }
        let i = u16::try_from(self.list.len())
            .map_err(|_| build_err("more than 65535 distinct owners"))?;
        self.map.insert(id, i);
        self.list.push(id);
        Ok(i)
    }
}

/// The xattr prefixes squashfs stores: user, trusted, security.
fn xattr_prefix(name: &[u8]) -> Option<(u16, &[u8])> {
    for (t, p) in [
        (0u16, &b"user."[..]),
        (1, &b"trusted."[..]),
        (2, &b"security."[..]),
    ] {
        if let Some(rest) = name.strip_prefix(p)
            && !rest.is_empty()
        {
            return Some((t, rest));
        }
    }
    None
}

/// Names and values of one inode's extended attributes, sorted by name.
type XattrSet = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Default)]
struct Xattrs {
    map: HashMap<XattrSet, u32>,
    sets: Vec<XattrSet>,
}

impl Xattrs {
    fn index(&mut self, meta: &Meta) -> Result<u32> {
        let mut set: XattrSet = meta
            .xattrs
            .iter()
            .filter(|(n, v)| xattr_prefix(n).is_some() && u32::try_from(v.len()).is_ok())
            .cloned()
            .collect();
        if set.is_empty() {
            return Ok(NO_XATTR);
        }
        set.sort();
        set.dedup_by(|a, b| a.0 == b.0);
        if let Some(i) = self.map.get(&set) {
            return Ok(*i);
        }
        let i = u32::try_from(self.sets.len())
            .ok()
            .filter(|i| *i != NO_XATTR)
            .ok_or_else(|| build_err("too many distinct xattr sets"))?;
        self.map.insert(set.clone(), i);
        self.sets.push(set);
        Ok(i)
    }
}

/// The block-size word of a chunk: its length, bit 24 when stored uncompressed.
fn word(c: Chunk) -> u32 {
    c.len | if c.raw { BLOCK_UNCOMPRESSED } else { 0 }
}

fn basic_type(k: &Kind) -> u16 {
    match k {
        Kind::Dir(_) => 1,
        Kind::File { .. } => 2,
        Kind::Symlink(_) => 3,
        Kind::Block(..) => 4,
        Kind::Char(..) => 5,
        Kind::Fifo => 6,
    }
}

fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// Little-endian field writer for one inode or directory record.
#[derive(Default)]
struct Rec(Vec<u8>);

impl Rec {
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
}

/// Post-order of the reachable nodes (every directory after its contents), with inode
/// numbers, link counts and directory parents.
struct Walk {
    order: Vec<NodeId>,
    ino: Vec<u32>,
    nlink: Vec<u32>,
    parent: Vec<NodeId>,
}

fn walk(tree: &Tree) -> Result<Walk> {
    let n = tree.nodes.len();
    let mut w = Walk {
        order: Vec::new(),
        ino: vec![0; n],
        nlink: vec![0; n],
        parent: vec![ROOT; n],
    };
    let list = |id: NodeId| -> Vec<NodeId> {
        tree.children(id)
            .map(|m| m.values().copied().collect())
            .unwrap_or_default()
    };
    let mut stack: Vec<(NodeId, Vec<NodeId>, usize)> = vec![(ROOT, list(ROOT), 0)];
    w.nlink[ROOT] = 2;
    while let Some(top) = stack.last_mut() {
        let (dir, children, i) = (top.0, &top.1, top.2);
        if i == children.len() {
            w.order.push(dir);
            w.ino[dir] = u32::try_from(w.order.len()).map_err(|_| build_err("too many inodes"))?;
            stack.pop();
            continue;
        }
        let child = children[i];
        top.2 += 1;
        if matches!(tree.nodes[child].kind, Kind::Dir(_)) {
            if w.nlink[child] != 0 {
                return Err(build_err("a directory is linked twice"));
            }
            w.nlink[child] = 2;
            w.nlink[dir] += 1;
            w.parent[child] = dir;
            stack.push((child, list(child), 0));
        } else {
            w.nlink[child] += 1;
            if w.nlink[child] == 1 {
                w.order.push(child);
                w.ino[child] =
                    u32::try_from(w.order.len()).map_err(|_| build_err("too many inodes"))?;
            }
        }
    }
    Ok(w)
}

/// Write `tree` as a squashfs image at `out`, its metadata compressed with `codec` (which must
/// be what the layers' data blocks were compressed with); returns the image size.
///
/// # Errors
/// I/O, a layer compressed with another compression, or limits of the format (names longer
/// than 256 bytes, more than 65535 owners).
pub(crate) fn write(tree: &Tree, out: &Path, codec: Codec) -> Result<u64> {
    let bs = BLOCK_SIZE as u32;
    let compression = codec.compression;
    // One superblock id covers every block: a layer packed for another compression would
    // make an image the kernel cannot read.
    if let Some(l) = tree.layers.iter().find(|l| l.compression != compression) {
        return Err(build_err(format!(
            "a layer's data was compressed with {}, the image is {compression}",
            l.compression
        )));
    }
    let w = walk(tree)?;

    let f = File::create(out).ctx(|| format!("create {}", out.display()))?;
    let mut file = BufWriter::with_capacity(1 << 20, f);
    let io = |e: std::io::Error| Error::io(format!("write {}", out.display()), e);
    file.write_all(&[0u8; SUPERBLOCK_SIZE as usize])
        .map_err(io)?;
    let mut pos = SUPERBLOCK_SIZE;
    // The compression options: one metadata block, stored uncompressed (as mksquashfs does).
    let comp_opts = compression.squashfs_options();
    if let Some(o) = comp_opts {
        file.write_all(&(o.len() as u16 | META_UNCOMPRESSED).to_le_bytes())
            .map_err(io)?;
        file.write_all(&o).map_err(io)?;
        pos += 2 + o.len() as u64;
    }
    let mut scratch = Vec::new();
    let mut copy = |layer: usize, c: Chunk, file: &mut BufWriter<File>| -> Result<()> {
        tree.layers[layer]
            .data
            .with(c.off, c.len as usize, &mut scratch, |d| file.write_all(d))
            .map_err(io)?
            .map_err(io)
    };
    // Each file's full blocks, contiguous; then every layer's fragment blocks.
    let mut file_start: HashMap<NodeId, u64> = HashMap::new();
    for &id in &w.order {
        let Kind::File {
            layer,
            first,
            blocks,
            ..
        } = tree.nodes[id].kind
        else {
            continue;
        };
        file_start.insert(id, pos);
        for c in &tree.layers[layer].chunks[first..first + blocks] {
            copy(layer, *c, &mut file)?;
            pos += u64::from(c.len);
        }
    }
    let mut frag_base = Vec::with_capacity(tree.layers.len());
    let mut frag_entries = Vec::new();
    let mut frag_count = 0u32;
    for (layer, l) in tree.layers.iter().enumerate() {
        frag_base.push(frag_count);
        for c in &l.frags {
            frag_entries.extend_from_slice(&pos.to_le_bytes());
            frag_entries.extend_from_slice(&word(*c).to_le_bytes());
            frag_entries.extend_from_slice(&0u32.to_le_bytes());
            copy(layer, *c, &mut file)?;
            pos += u64::from(c.len);
            frag_count += 1;
        }
    }

    let mut c = Compressor::new(codec)?;
    let mut inodes = MetaWriter::new();
    let mut dirs = MetaWriter::new();
    let mut ids = Ids {
        map: HashMap::new(),
        list: Vec::new(),
    };
    let mut xattrs = Xattrs::default();
    let mut iref: Vec<(u64, u16)> = vec![(0, 0); tree.nodes.len()];
    let count = w.order.len() as u32;
    for &id in &w.order {
        let node = &tree.nodes[id];
        let m = &node.meta;
        let xi = xattrs.index(m)?;
        let ext = xi != NO_XATTR;
        let mut r = Rec::default();
        let header = |r: &mut Rec, t: u16, ids: &mut Ids| -> Result<()> {
            r.u16(t)
                .u16(m.mode & 0o7777)
                .u16(ids.index(m.uid)?)
                .u16(ids.index(m.gid)?)
                .u32(m.mtime)
                .u32(w.ino[id]);
            Ok(())
        };
        let nlink = w.nlink[id];
        match &node.kind {
            Kind::Dir(children) => {
                let (lblk, loff) = dirs.pos();
                let mut listing = Rec::default();
                let mut run: Vec<(&[u8], NodeId)> = Vec::new();
                let flush_run = |listing: &mut Rec, run: &mut Vec<(&[u8], NodeId)>| {
                    if let Some(&(_, first)) = run.first() {
                        let base = w.ino[first];
                        listing
                            .u32(run.len() as u32 - 1)
                            .u32(iref[first].0 as u32)
                            .u32(base);
                        for (name, child) in run.iter() {
                            let delta = i64::from(w.ino[*child]) - i64::from(base);
                            listing
                                .u16(iref[*child].1)
                                .u16(delta as i16 as u16)
                                .u16(basic_type(&tree.nodes[*child].kind))
                                .u16(name.len() as u16 - 1)
                                .bytes(name);
                        }
                    }
                    run.clear();
                };
                for (name, &child) in children {
                    if name.is_empty() || name.len() > MAX_NAME {
                        return Err(build_err(format!(
                            "name {:?} is longer than {MAX_NAME} bytes",
                            String::from_utf8_lossy(name)
                        )));
                    }
                    if let Some(&(_, first)) = run.first() {
                        let delta = i64::from(w.ino[child]) - i64::from(w.ino[first]);
                        if run.len() == DIR_RUN
                            || iref[child].0 != iref[first].0
                            || !(-32768..=32767).contains(&delta)
                        {
                            flush_run(&mut listing, &mut run);
                        }
                    }
                    run.push((name, child));
                }
                flush_run(&mut listing, &mut run);
                dirs.put(&mut c, &listing.0)?;
                let file_size = listing.0.len() as u64 + 3;
                let parent = if id == ROOT {
                    count + 1
                } else {
                    w.ino[w.parent[id]]
                };
                let lblk =
                    u32::try_from(lblk).map_err(|_| build_err("directory table too large"))?;
                if !ext && file_size <= 0xFFFF {
                    header(&mut r, 1, &mut ids)?;
                    r.u32(lblk)
                        .u32(nlink)
                        .u16(file_size as u16)
                        .u16(loff)
                        .u32(parent);
                } else {
                    header(&mut r, 8, &mut ids)?;
                    r.u32(nlink)
                        .u32(
                            u32::try_from(file_size)
                                .map_err(|_| build_err("directory too large"))?,
                        )
                        .u32(lblk)
                        .u32(parent)
                        .u16(0)
                        .u16(loff)
                        .u32(xi);
                }
            }
            Kind::File {
                layer,
                size,
                first,
                blocks,
                frag,
            } => {
                let start = if *blocks > 0 {
                    file_start.get(&id).copied().unwrap_or(0)
                } else {
                    0
                };
                let (fi, fo) =
                    frag.map_or((NO_FRAGMENT, 0), |(f, o)| (frag_base[*layer] + f as u32, o));
                if !ext && nlink == 1 && *size < 1 << 32 && start < 1 << 32 {
                    header(&mut r, 2, &mut ids)?;
                    r.u32(start as u32).u32(fi).u32(fo).u32(*size as u32);
                } else {
                    header(&mut r, 9, &mut ids)?;
                    r.u64(start)
                        .u64(*size)
                        .u64(0)
                        .u32(nlink)
                        .u32(fi)
                        .u32(fo)
                        .u32(xi);
                }
                for c in &tree.layers[*layer].chunks[*first..*first + *blocks] {
                    r.u32(word(*c));
                }
            }
            Kind::Symlink(t) => {
                header(&mut r, if ext { 10 } else { 3 }, &mut ids)?;
                r.u32(nlink).u32(t.len() as u32).bytes(t);
                if ext {
                    r.u32(xi);
                }
            }
            Kind::Block(a, b) | Kind::Char(a, b) => {
                let blk = matches!(node.kind, Kind::Block(..));
                let t = match (blk, ext) {
                    (true, false) => 4,
                    (false, false) => 5,
                    (true, true) => 11,
                    (false, true) => 12,
                };
                header(&mut r, t, &mut ids)?;
                r.u32(nlink).u32(encode_dev(*a, *b));
                if ext {
                    r.u32(xi);
                }
            }
            Kind::Fifo => {
                header(&mut r, if ext { 13 } else { 6 }, &mut ids)?;
                r.u32(nlink);
                if ext {
                    r.u32(xi);
                }
            }
        }
        iref[id] = inodes.pos();
        inodes.put(&mut c, &r.0)?;
    }

    let (inode_bytes, _) = inodes.finish(&mut c)?;
    let (dir_bytes, _) = dirs.finish(&mut c)?;
    let inode_table_start = pos;
    file.write_all(&inode_bytes).map_err(io)?;
    pos += inode_bytes.len() as u64;
    let directory_table_start = pos;
    file.write_all(&dir_bytes).map_err(io)?;
    pos += dir_bytes.len() as u64;

    // A table of fixed-size entries in metadata blocks, then the index of those blocks.
    let mut table = |entries: &[u8], file: &mut BufWriter<File>, pos: &mut u64| -> Result<u64> {
        let mut mw = MetaWriter::new();
        mw.put(&mut c, entries)?;
        let (bytes, blocks) = mw.finish(&mut c)?;
        let start = *pos;
        file.write_all(&bytes).map_err(io)?;
        *pos += bytes.len() as u64;
        let index = *pos;
        for b in blocks {
            file.write_all(&(start + b).to_le_bytes()).map_err(io)?;
            *pos += 8;
        }
        Ok(index)
    };
    let fragment_table_start = table(&frag_entries, &mut file, &mut pos)?;
    let id_entries: Vec<u8> = ids.list.iter().flat_map(|i| i.to_le_bytes()).collect();
    let id_table_start = table(&id_entries, &mut file, &mut pos)?;

    let xattr_id_table_start = if xattrs.sets.is_empty() {
        INVALID_TABLE
    } else {
        let mut kv = MetaWriter::new();
        let mut id_entries = Vec::new();
        for set in &xattrs.sets {
            let (blk, off) = kv.pos();
            let mut size = 0u32;
            let mut rec = Rec::default();
            for (name, value) in set {
                let Some((t, suffix)) = xattr_prefix(name) else {
                    continue;
                };
                let nlen =
                    u16::try_from(suffix.len()).map_err(|_| build_err("xattr name too long"))?;
                rec.u16(t)
                    .u16(nlen)
                    .bytes(suffix)
                    .u32(value.len() as u32)
                    .bytes(value);
                size = size.saturating_add(8 + suffix.len() as u32 + value.len() as u32);
            }
            kv.put(&mut c, &rec.0)?;
            id_entries.extend_from_slice(&((blk << 16) | u64::from(off)).to_le_bytes());
            id_entries.extend_from_slice(&(set.len() as u32).to_le_bytes());
            id_entries.extend_from_slice(&size.to_le_bytes());
        }
        let (kv_bytes, _) = kv.finish(&mut c)?;
        let xattr_table_start = pos;
        file.write_all(&kv_bytes).map_err(io)?;
        pos += kv_bytes.len() as u64;
        let mut mw = MetaWriter::new();
        mw.put(&mut c, &id_entries)?;
        let (bytes, blocks) = mw.finish(&mut c)?;
        let md_start = pos;
        file.write_all(&bytes).map_err(io)?;
        pos += bytes.len() as u64;
        let header_at = pos;
        let mut h = Rec::default();
        h.u64(xattr_table_start)
            .u32(xattrs.sets.len() as u32)
            .u32(0);
        for b in blocks {
            h.u64(md_start + b);
        }
        file.write_all(&h.0).map_err(io)?;
        pos += h.0.len() as u64;
        header_at
    };
    let bytes_used = pos;
    // Pad to 4 KiB, as block devices want whole sectors.
    let padded = bytes_used.div_ceil(4096) * 4096;
    file.write_all(&vec![0u8; (padded - bytes_used) as usize])
        .map_err(io)?;

    let root = iref[ROOT];
    let mut sb = Rec::default();
    sb.u32(MAGIC)
        .u32(count)
        .u32(tree.nodes[ROOT].meta.mtime)
        .u32(bs)
        .u32(frag_count)
        .u16(compression.squashfs_id())
        .u16(bs.trailing_zeros() as u16)
        .u16(
            if xattrs.sets.is_empty() {
                FLAG_NO_XATTRS
            } else {
                0
            } | if comp_opts.is_some() {
                FLAG_COMP_OPT
            } else {
                0
            },
        )
        .u16(ids.list.len() as u16)
        .u16(4)
        .u16(0)
        .u64((root.0 << 16) | u64::from(root.1))
        .u64(bytes_used)
        .u64(id_table_start)
        .u64(xattr_id_table_start)
        .u64(inode_table_start)
        .u64(directory_table_start)
        .u64(fragment_table_start)
        .u64(INVALID_TABLE);
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(&sb.0).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(padded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::Compression;
    use crate::layer::Limits;
    use crate::tree::{Budget, Shared, index_layer};
    use std::process::Command;

    fn have(tool: &str) -> bool {
        Command::new(tool).arg("-help").output().is_ok()
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid + 1);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h
    }

    fn codec(compression: Compression) -> Codec {
        Codec {
            compression,
            level: 3,
        }
    }

    fn tree(layers: &[Vec<u8>], dir: &Path, compression: Compression) -> Tree {
        let shared = Shared::default();
        let budget = Budget::new(dir);
        let mut t = Tree::new(Limits::default());
        for (i, l) in layers.iter().enumerate() {
            t.apply(
                index_layer(
                    l.as_slice(),
                    &format!("l{i}"),
                    &Limits::default(),
                    &shared,
                    &budget,
                    codec(compression),
                )
                .unwrap(),
            )
            .unwrap();
        }
        t
    }

    fn image(layers: &[Vec<u8>], dir: &Path, compression: Compression) -> std::path::PathBuf {
        let t = tree(layers, dir, compression);
        let out = dir.join(format!("img-{compression}.sqfs"));
        write(&t, &out, codec(compression)).unwrap();
        out
    }

    #[test]
    fn written_image_reads_back_with_unsquashfs() {
        if !have("unsquashfs") {
            vmsan_testkit::skip!("squashfs-tools is not installed");
            return;
        }
        for compression in Compression::ALL {
            reads_back(compression);
        }
    }

    /// The superblock and options block say `compression`, and unsquashfs (its own zstd and
    /// liblz4 decoders) reads every file and attribute back.
    fn reads_back(compression: Compression) {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut b = tar::Builder::new(Vec::new());
        use tar::EntryType as E;
        b.append_data(
            &mut header(E::Directory, 0o755, 0, 0),
            "etc",
            std::io::empty(),
        )
        .unwrap();
        b.append_data(
            &mut header(E::Regular, 0o644, 0, 5),
            "etc/hosts",
            &b"hosts"[..],
        )
        .unwrap();
        b.append_data(
            &mut header(E::Regular, 0o4755, 7, big.len() as u64),
            "big",
            big.as_slice(),
        )
        .unwrap();
        b.append_pax_extensions([
            ("SCHILY.xattr.user.note", &b"hello"[..]),
            (
                "SCHILY.xattr.security.capability",
                &[1u8, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
            ),
        ])
        .unwrap();
        b.append_data(&mut header(E::Regular, 0o755, 0, 4), "cap", &b"bin!"[..])
            .unwrap();
        let mut h = header(E::Link, 0o644, 0, 0);
        b.append_link(&mut h, "big-link", "big").unwrap();
        let mut h = header(E::Symlink, 0o777, 0, 0);
        b.append_link(&mut h, "etc/h", "hosts").unwrap();
        b.append_data(
            &mut header(E::Directory, 0o700, 1000, 0),
            "home",
            std::io::empty(),
        )
        .unwrap();
        for i in 0..600 {
            b.append_data(
                &mut header(E::Regular, 0o600, 1000, 3),
                format!("home/f{i:04}"),
                &b"abc"[..],
            )
            .unwrap();
        }
        // A directory whose listing needs the extended inode (over 64 KiB), empty files, a
        // file of exactly one block (no fragment).
        b.append_data(
            &mut header(E::Directory, 0o755, 0, 0),
            "many",
            std::io::empty(),
        )
        .unwrap();
        for i in 0..4000 {
            b.append_data(
                &mut header(E::Regular, 0o644, 0, 0),
                format!("many/a-rather-long-file-name-{i:05}"),
                std::io::empty(),
            )
            .unwrap();
        }
        let block: Vec<u8> = (0..BLOCK_SIZE).map(|i| (i % 13) as u8).collect();
        b.append_data(
            &mut header(E::Regular, 0o644, 0, block.len() as u64),
            "block",
            block.as_slice(),
        )
        .unwrap();
        b.append_data(&mut header(E::Fifo, 0o644, 0, 0), "fifo", std::io::empty())
            .unwrap();
        let layer = b.into_inner().unwrap();
        let t = tempfile::tempdir().unwrap();
        let img = image(&[layer], t.path(), compression);
        let raw = std::fs::read(&img).unwrap();
        let u16_at = |o: usize| u16::from_le_bytes([raw[o], raw[o + 1]]);
        assert_eq!(u16_at(20), compression.squashfs_id(), "{compression}");
        match compression {
            Compression::Zstd => assert_eq!(u16_at(24) & FLAG_COMP_OPT, 0),
            Compression::Lz4 => {
                assert_eq!(u16_at(24) & FLAG_COMP_OPT, FLAG_COMP_OPT);
                // An uncompressed 8-byte metadata block: version 1 (legacy), flags 0.
                assert_eq!(&raw[96..106], &[8, 0x80, 1, 0, 0, 0, 0, 0, 0, 0]);
            }
        }
        let out = Command::new("unsquashfs")
            .arg("-s")
            .arg(&img)
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{s}");
        assert!(s.contains(&format!("Compression {compression}\n")), "{s}");
        let out = Command::new("unsquashfs")
            .arg("-lln")
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ls = String::from_utf8_lossy(&out.stdout);
        for want in [
            "squashfs-root/big-link",
            "squashfs-root/etc/h -> hosts",
            "drwx------ 1000/1001",
            "squashfs-root/home/f0599",
            "prw-r--r-- 0/1",
        ] {
            assert!(ls.contains(want), "{want} missing from\n{ls}");
        }
        let line = |p: &str| {
            ls.lines()
                .find(|l| l.ends_with(p))
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        assert_eq!(line("squashfs-root/big"), "-rwsr-xr-x 7/8 300000");
        assert!(line("squashfs-root/home").starts_with("drwx------ 1000/1001 "));
        let x = t.path().join(format!("x-{compression}"));
        let out = Command::new("unsquashfs")
            .arg("-d")
            .arg(&x)
            .arg(&img)
            .output()
            .unwrap();
        // Exit 2 is "non-fatal errors" (e.g. security xattrs as non-root).
        assert!(
            out.status.code().is_some_and(|c| c == 0 || c == 2),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(x.join("big")).unwrap(), big);
        assert_eq!(std::fs::read(x.join("etc/hosts")).unwrap(), b"hosts");
        assert_eq!(std::fs::read(x.join("home/f0123")).unwrap(), b"abc");
        assert_eq!(std::fs::read(x.join("block")).unwrap(), block);
        assert_eq!(std::fs::read_dir(x.join("many")).unwrap().count(), 4000);
        assert!(
            std::fs::read(x.join("many/a-rather-long-file-name-03999"))
                .unwrap()
                .is_empty()
        );
        use std::os::unix::fs::MetadataExt;
        let a = std::fs::metadata(x.join("big")).unwrap();
        let l = std::fs::metadata(x.join("big-link")).unwrap();
        assert_eq!((a.ino(), a.nlink()), (l.ino(), 2));
        if let Ok(o) = Command::new("getfattr")
            .args(["-d", "-m", "-", "-e", "text"])
            .arg(x.join("cap"))
            .output()
        {
            let s = String::from_utf8_lossy(&o.stdout);
            assert!(s.contains("user.note=\"hello\""), "{s}");
            if nix::unistd::Uid::effective().is_root() {
                assert!(s.contains("security.capability="), "{s}");
            }
        }
    }

    #[test]
    fn a_layer_packed_for_another_compression_is_refused() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(
            &mut header(tar::EntryType::Regular, 0o644, 0, 5),
            "f",
            &b"hello"[..],
        )
        .unwrap();
        let layer = b.into_inner().unwrap();
        let t = tempfile::tempdir().unwrap();
        let tr = tree(&[layer], t.path(), Compression::Zstd);
        let e = write(&tr, &t.path().join("x.sqfs"), codec(Compression::Lz4)).unwrap_err();
        assert!(e.to_string().contains("compressed with zstd"), "{e}");
    }
}
