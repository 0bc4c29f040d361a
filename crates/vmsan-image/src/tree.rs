//! The merged image tree, in memory.
//!
//! Each layer is decompressed and indexed on its own thread ([`index_layer`]): entry headers
//! go into a list, file contents into one buffer per layer (in memory, or spilled to an
//! unlinked temporary file past a memory budget), already compressed into squashfs blocks
//! with the image's compression (each layer's data says which). The layers are then applied
//! in order ([`Tree::apply`]) with the rules of [`crate::layer`], shared with the on-disk merge:
//! whiteouts and opaque markers hide lower layers only, parent components resolve through
//! symlinks but never outside the root (absolute symlinks and `..` past the root are
//! rejected), hard links share one node, and no entry may name the root as anything but a
//! directory. Nothing is written to disk for the merge; the filesystem image is written
//! straight from the tree ([`crate::squashfs`]).

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::compression::{BlockCompressor, Codec, Compression};
use crate::error::{Error, IoContext, Result};
use crate::layer::{
    Action, BombError, Limits, Scope, check_symlink_target, components, entry_too_big,
    is_extension_header, link_missing, link_target, link_to_dir, read_error, too_many_entries,
    unsafe_entry, unsupported_type,
};

/// Index of a node in [`Tree::nodes`].
pub(crate) type NodeId = usize;

/// Longest chain of symlinks followed while resolving one path (as the kernel's).
const MAX_SYMLINKS: u32 = 40;

/// Ownership, permissions, time and extended attributes of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Permission bits (`0o7777`).
    pub(crate) mode: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: u32,
    /// Full names (`security.capability`) and values.
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Children by name (sorted bytewise, as squashfs wants them).
    Dir(BTreeMap<Vec<u8>, NodeId>),
    /// `size` bytes: full blocks `first..first + blocks` of layer `layer`'s chunks, then the
    /// tail at an offset in one of that layer's fragments.
    File {
        layer: usize,
        size: u64,
        first: usize,
        blocks: usize,
        frag: Option<(usize, u32)>,
    },
    Symlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) meta: Meta,
    pub(crate) kind: Kind,
}

/// Kinds of layer entries, after the tar types were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RawKind {
    Dir,
    File {
        size: u64,
        first: usize,
        blocks: usize,
        frag: Option<(usize, u32)>,
    },
    Symlink(Vec<u8>),
    Link(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Debug)]
struct RawEntry {
    path: Vec<u8>,
    kind: RawKind,
    meta: Meta,
}

/// File contents of one layer.
#[derive(Debug)]
pub(crate) enum LayerData {
    Mem(Vec<u8>),
    File { file: File, len: u64 },
}

impl LayerData {
    fn len(&self) -> u64 {
        match self {
            Self::Mem(v) => v.len() as u64,
            Self::File { len, .. } => *len,
        }
    }

    /// Run `f` on `len` bytes at `off`, reading into `scratch` when spilled to a file.
    pub(crate) fn with<R>(
        &self,
        off: u64,
        len: usize,
        scratch: &mut Vec<u8>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> io::Result<R> {
        match self {
            Self::Mem(v) => {
                let start = usize::try_from(off).map_err(io::Error::other)?;
                let s = v
                    .get(start..start.saturating_add(len))
                    .ok_or_else(|| io::Error::other("file data out of range"))?;
                Ok(f(s))
            }
            Self::File { file, .. } => {
                scratch.resize(len, 0);
                file.read_exact_at(scratch, off)?;
                Ok(f(scratch))
            }
        }
    }
}

/// Counters shared by the layers of one image: the limits apply to their sum.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    bytes: AtomicU64,
    entries: AtomicU64,
    in_memory: AtomicU64,
}

/// Where layer data goes once the in-memory budget is used up.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    pub(crate) memory: u64,
    pub(crate) spill_dir: std::path::PathBuf,
}

impl Shared {
    /// Entries read so far.
    pub(crate) fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }
}

impl Budget {
    /// A third of the available memory (at least 256 MiB), then files in `spill_dir`.
    pub(crate) fn new(spill_dir: &Path) -> Self {
        let avail = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemAvailable:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(1 << 30, |kb| kb.saturating_mul(1024));
        Self {
            memory: (avail / 3).max(256 << 20),
            spill_dir: spill_dir.to_owned(),
        }
    }
}

/// Data block size of the image (squashfs blocks).
pub(crate) const BLOCK_SIZE: usize = 128 * 1024;

/// A compressed (or, when compression did not shrink it, stored) block in a layer's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) off: u64,
    pub(crate) len: u32,
    pub(crate) raw: bool,
}

/// A layer's file contents, compressed as they were read: full blocks in `chunks`, tails
/// packed in archive order into `frags`, their bytes in `data`, every block compressed with
/// `compression` (or stored).
#[derive(Debug)]
pub(crate) struct LayerOut {
    pub(crate) compression: Compression,
    pub(crate) data: LayerData,
    pub(crate) chunks: Vec<Chunk>,
    pub(crate) frags: Vec<Chunk>,
}

/// One layer, indexed: its entries in archive order and its compressed file contents.
#[derive(Debug)]
pub(crate) struct LayerIndex {
    name: String,
    entries: Vec<RawEntry>,
    out: LayerOut,
}

/// Where a file's contents went: full blocks `first..first + blocks` of the layer's chunks,
/// and its tail in fragment `frag.0` at offset `frag.1`.
struct Placed {
    first: usize,
    blocks: usize,
    frag: Option<(usize, u32)>,
}

/// Compresses a layer's file contents into blocks and fragments as they are read.
struct Packer {
    z: BlockCompressor,
    block: Vec<u8>,
    frag: Vec<u8>,
    chunks: Vec<Chunk>,
    frags: Vec<Chunk>,
}

impl Packer {
    fn new(codec: Codec) -> io::Result<Self> {
        Ok(Self {
            z: BlockCompressor::new(codec)?,
            block: vec![0u8; BLOCK_SIZE],
            frag: Vec::with_capacity(BLOCK_SIZE),
            chunks: Vec::new(),
            frags: Vec::new(),
        })
    }

    fn store(z: &mut BlockCompressor, sink: &mut DataSink<'_>, d: &[u8]) -> io::Result<Chunk> {
        let off = sink.data.len();
        if let Some(c) = z.compress(d)? {
            sink.write(c)?;
            Ok(Chunk {
                off,
                len: c.len() as u32,
                raw: false,
            })
        } else {
            sink.write(d)?;
            Ok(Chunk {
                off,
                len: d.len() as u32,
                raw: true,
            })
        }
    }

    /// Read `size` bytes of one file and compress them; returns (first block, blocks,
    /// fragment).
    fn file(
        &mut self,
        r: &mut impl Read,
        size: u64,
        sink: &mut DataSink<'_>,
    ) -> io::Result<Placed> {
        let first = self.chunks.len();
        let mut left = size;
        while left >= BLOCK_SIZE as u64 {
            r.read_exact(&mut self.block)?;
            let c = Self::store(&mut self.z, sink, &self.block)?;
            self.chunks.push(c);
            left -= BLOCK_SIZE as u64;
        }
        let blocks = self.chunks.len() - first;
        if left == 0 {
            return Ok(Placed {
                first,
                blocks,
                frag: None,
            });
        }
        let tail = left as usize;
        if self.frag.len() + tail > BLOCK_SIZE {
            self.flush(sink)?;
        }
        let at = (self.frags.len(), self.frag.len() as u32);
        let start = self.frag.len();
        self.frag.resize(start + tail, 0);
        r.read_exact(&mut self.frag[start..])?;
        Ok(Placed {
            first,
            blocks,
            frag: Some(at),
        })
    }

    fn flush(&mut self, sink: &mut DataSink<'_>) -> io::Result<()> {
        if !self.frag.is_empty() {
            let c = Self::store(&mut self.z, sink, &self.frag)?;
            self.frags.push(c);
            self.frag.clear();
        }
        Ok(())
    }
}

/// Bytes out of the decompressor, counted against the limit shared by all layers.
struct Counting<'a, R> {
    inner: R,
    shared: &'a Shared,
    local: &'a Local,
    max: u64,
}

/// What one layer added to the shared counters, taken back if it is read again.
#[derive(Default)]
struct Local {
    bytes: std::cell::Cell<u64>,
    entries: std::cell::Cell<u64>,
    memory: std::cell::Cell<u64>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.local.bytes.set(self.local.bytes.get() + n as u64);
        let total = self.shared.bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total > self.max {
            return Err(io::Error::other(BombError(self.max)));
        }
        Ok(n)
    }
}

struct DataSink<'a> {
    data: LayerData,
    shared: &'a Shared,
    local: &'a Local,
    budget: &'a Budget,
}

impl DataSink<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<()> {
        match &mut self.data {
            LayerData::Mem(v) => {
                let used = self
                    .shared
                    .in_memory
                    .fetch_add(b.len() as u64, Ordering::Relaxed)
                    + b.len() as u64;
                self.local
                    .memory
                    .set(self.local.memory.get() + b.len() as u64);
                if used > self.budget.memory {
                    // Past the budget: move this layer's data to an unlinked file.
                    let mut file = tempfile::tempfile_in(&self.budget.spill_dir)?;
                    file.write_all(v)?;
                    file.write_all(b)?;
                    let moved = v.len() as u64 + b.len() as u64;
                    self.shared.in_memory.fetch_sub(moved, Ordering::Relaxed);
                    self.local
                        .memory
                        .set(self.local.memory.get().saturating_sub(moved));
                    let len = v.len() as u64 + b.len() as u64;
                    self.data = LayerData::File { file, len };
                } else {
                    v.extend_from_slice(b);
                }
            }
            LayerData::File { file, len } => {
                file.write_all(b)?;
                *len += b.len() as u64;
            }
        }
        Ok(())
    }
}

/// The entry's archive path, for messages.
fn shown(path: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(path))
}

/// Read a decompressed layer tar, recording its entries and keeping its file contents.
///
/// # Errors
/// Malformed archives, limits (shared with the other layers of the image), I/O of a spill.
pub(crate) fn index_layer(
    reader: impl Read,
    layer: &str,
    limits: &Limits,
    shared: &Shared,
    budget: &Budget,
    codec: Codec,
) -> Result<LayerIndex> {
    let local = Local::default();
    let res = index_layer_counted(reader, layer, limits, shared, budget, &local, codec);
    if res.is_err() {
        shared.bytes.fetch_sub(local.bytes.get(), Ordering::Relaxed);
        shared
            .entries
            .fetch_sub(local.entries.get(), Ordering::Relaxed);
        shared
            .in_memory
            .fetch_sub(local.memory.get(), Ordering::Relaxed);
    }
    res
}

fn index_layer_counted(
    reader: impl Read,
    layer: &str,
    limits: &Limits,
    shared: &Shared,
    budget: &Budget,
    local: &Local,
    codec: Codec,
) -> Result<LayerIndex> {
    let mut packer =
        Packer::new(codec).ctx(|| format!("start the {} compressor", codec.compression))?;
    let counting = Counting {
        inner: reader,
        shared,
        local,
        max: limits.max_bytes,
    };
    let mut archive = tar::Archive::new(counting);
    let mut sink = DataSink {
        data: LayerData::Mem(Vec::new()),
        shared,
        local,
        budget,
    };
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let iter = archive.entries().map_err(|e| read_error(layer, e))?;
    for entry in iter {
        let mut entry = entry.map_err(|e| read_error(layer, e))?;
        local.entries.set(local.entries.get() + 1);
        let n = shared.entries.fetch_add(1, Ordering::Relaxed) + 1;
        if n > limits.max_entries {
            return Err(too_many_entries(layer, limits));
        }
        let path = entry.path_bytes().into_owned();
        let size = entry.size();
        entry_too_big(
            layer,
            shown(&path),
            shared.bytes.load(Ordering::Relaxed),
            size,
            limits,
        )?;
        let h = entry.header();
        let etype = h.entry_type();
        if is_extension_header(etype) {
            continue;
        }
        let bad = |what: &str, e: io::Error| {
            Error::malformed(
                format!("layer {layer}"),
                format!(
                    "bad {what} of {}: {e}",
                    String::from_utf8_lossy(&path).into_owned()
                ),
            )
        };
        let mode = h.mode().map_err(|e| bad("mode", e))?;
        let uid = h.uid().map_err(|e| bad("owner", e))?;
        let gid = h.gid().map_err(|e| bad("owner", e))?;
        let uid = u32::try_from(uid)
            .map_err(|_| unsafe_entry(layer, shown(&path), "uid out of range"))?;
        let gid = u32::try_from(gid)
            .map_err(|_| unsafe_entry(layer, shown(&path), "gid out of range"))?;
        let mtime = u32::try_from(h.mtime().unwrap_or(0)).unwrap_or(u32::MAX);
        let dev = (
            h.device_major().ok().flatten().unwrap_or(0),
            h.device_minor().ok().flatten().unwrap_or(0),
        );
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(|e| read_error(layer, e))? {
            for ext in exts {
                let ext = ext.map_err(|e| read_error(layer, e))?;
                if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.")
                    && !name.is_empty()
                {
                    xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                }
            }
        }
        let meta = Meta {
            mode: (mode & 0o7777) as u16,
            uid,
            gid,
            mtime,
            xattrs,
        };
        let link = |entry: &tar::Entry<'_, _>| -> Result<Vec<u8>> {
            Ok(entry
                .link_name_bytes()
                .ok_or_else(|| unsafe_entry(layer, shown(&path), "link without target"))?
                .into_owned())
        };
        let kind = match etype {
            tar::EntryType::Directory => RawKind::Dir,
            tar::EntryType::Symlink => RawKind::Symlink(link(&entry)?),
            tar::EntryType::Link => RawKind::Link(link(&entry)?),
            tar::EntryType::Char => RawKind::Char(dev.0, dev.1),
            tar::EntryType::Block => RawKind::Block(dev.0, dev.1),
            tar::EntryType::Fifo => RawKind::Fifo,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let data_err = |e: io::Error| {
                    if e.get_ref().is_some_and(|i| i.is::<BombError>())
                        || e.kind() != io::ErrorKind::Other
                    {
                        read_error(layer, e)
                    } else {
                        Error::io(format!("keep data of layer {layer}"), e)
                    }
                };
                let (
                    size,
                    Placed {
                        first,
                        blocks,
                        frag,
                    },
                ) = if etype == tar::EntryType::GNUSparse {
                    // The archive reader expands sparse maps: take what it gives.
                    let mut v = Vec::new();
                    entry
                        .read_to_end(&mut v)
                        .map_err(|e| read_error(layer, e))?;
                    let n = v.len() as u64;
                    (
                        n,
                        packer
                            .file(&mut v.as_slice(), n, &mut sink)
                            .map_err(data_err)?,
                    )
                } else {
                    (
                        size,
                        packer.file(&mut entry, size, &mut sink).map_err(data_err)?,
                    )
                };
                RawKind::File {
                    size,
                    first,
                    blocks,
                    frag,
                }
            }
            other => return Err(unsupported_type(layer, shown(&path), other)),
        };
        entries.push(RawEntry { path, kind, meta });
    }
    // Read to the end of the stream: the trailing blocks, and (for a streamed download)
    // everything up to the end marker that says the bytes were verified.
    let mut rest = archive.into_inner();
    loop {
        match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(layer, e)),
        }
    }
    packer
        .flush(&mut sink)
        .ctx(|| format!("keep data of layer {layer}"))?;
    Ok(LayerIndex {
        name: layer.to_owned(),
        entries,
        out: LayerOut {
            compression: codec.compression,
            data: sink.data,
            chunks: packer.chunks,
            frags: packer.frags,
        },
    })
}

/// The merged tree.
#[derive(Debug)]
pub(crate) struct Tree {
    pub(crate) nodes: Vec<Node>,
    pub(crate) layers: Vec<LayerOut>,
    limits: Limits,
}

/// The root's node id.
pub(crate) const ROOT: NodeId = 0;

fn implicit_dir() -> Node {
    Node {
        meta: Meta {
            mode: 0o755,
            ..Meta::default()
        },
        kind: Kind::Dir(BTreeMap::new()),
    }
}

impl Tree {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            nodes: vec![implicit_dir()],
            layers: Vec::new(),
            limits,
        }
    }

    pub(crate) fn children(&self, id: NodeId) -> Option<&BTreeMap<Vec<u8>, NodeId>> {
        match &self.nodes.get(id)?.kind {
            Kind::Dir(c) => Some(c),
            _ => None,
        }
    }

    fn children_mut(&mut self, id: NodeId) -> Option<&mut BTreeMap<Vec<u8>, NodeId>> {
        match &mut self.nodes.get_mut(id)?.kind {
            Kind::Dir(c) => Some(c),
            _ => None,
        }
    }

    fn add(&mut self, n: Node) -> NodeId {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    /// Resolve the directory `comps` beneath the root, following symlinks in it as the kernel
    /// would with `RESOLVE_BENEATH`. With `create`, missing components become root-owned
    /// 0755 directories; without, a missing or non-directory component gives `None`.
    fn resolve_dir(
        &mut self,
        comps: &[OsString],
        create: bool,
        layer: &str,
        raw: &Path,
    ) -> Result<Option<NodeId>> {
        let mut pending: VecDeque<(Vec<u8>, bool)> = comps
            .iter()
            .map(|c| (c.as_bytes().to_vec(), false))
            .collect();
        let mut stack = vec![ROOT];
        let mut links = 0u32;
        while let Some((c, via_link)) = pending.pop_front() {
            if c.is_empty() || c == b"." {
                continue;
            }
            if c == b".." {
                if stack.len() == 1 {
                    return Err(unsafe_entry(
                        layer,
                        raw,
                        "path resolves outside the image root (symlink escape)",
                    ));
                }
                stack.pop();
                continue;
            }
            let cur = *stack.last().unwrap_or(&ROOT);
            let next = self.children(cur).and_then(|m| m.get(&c)).copied();
            match next {
                None => {
                    if !create {
                        return Ok(None);
                    }
                    if via_link {
                        return Err(unsafe_entry(
                            layer,
                            raw,
                            "a parent component is a dangling symlink",
                        ));
                    }
                    let id = self.add(implicit_dir());
                    if let Some(m) = self.children_mut(cur) {
                        m.insert(c, id);
                    }
                    stack.push(id);
                }
                Some(id) => match &self.nodes[id].kind {
                    Kind::Dir(_) => stack.push(id),
                    Kind::Symlink(t) => {
                        links += 1;
                        if links > MAX_SYMLINKS {
                            return Err(unsafe_entry(
                                layer,
                                raw,
                                "too many levels of symbolic links",
                            ));
                        }
                        if t.first() == Some(&b'/') {
                            return Err(unsafe_entry(
                                layer,
                                raw,
                                "path resolves outside the image root (symlink escape)",
                            ));
                        }
                        for part in t.split(|b| *b == b'/').rev() {
                            pending.push_front((part.to_vec(), true));
                        }
                    }
                    _ => {
                        if !create {
                            return Ok(None);
                        }
                        return Err(unsafe_entry(
                            layer,
                            raw,
                            "a parent component is not a directory",
                        ));
                    }
                },
            }
        }
        Ok(stack.last().copied())
    }

    /// Apply one indexed layer on top of what is there.
    ///
    /// # Errors
    /// Unsafe entries (escapes, hard links to nowhere, unsupported types).
    pub(crate) fn apply(&mut self, index: LayerIndex) -> Result<()> {
        let layer_no = self.layers.len();
        let layer = index.name.clone();
        let mut scope = Scope::default();
        for e in index.entries {
            let raw = shown(&e.path);
            let comps = components(&layer, raw, &self.limits)?;
            let (parent_comps, name) =
                match scope.classify(&layer, raw, &comps, e.kind == RawKind::Dir)? {
                    Action::Root => {
                        self.nodes[ROOT].meta = e.meta;
                        continue;
                    }
                    Action::Opaque { dir: parent_comps } => {
                        if let Some(dir) = self.resolve_dir(parent_comps, false, &layer, raw)?
                            && let Some(m) = self.children_mut(dir)
                        {
                            m.retain(|k, _| scope.keeps(parent_comps, OsStr::from_bytes(k)));
                        }
                        continue;
                    }
                    Action::Whiteout {
                        dir: parent_comps,
                        name,
                    } => {
                        if let Some(dir) = self.resolve_dir(parent_comps, false, &layer, raw)?
                            && let Some(m) = self.children_mut(dir)
                        {
                            m.remove(name.as_bytes());
                        }
                        continue;
                    }
                    Action::Skip => continue,
                    Action::Put { dir, name } => (dir, name.as_bytes().to_vec()),
                };
            let parent = self
                .resolve_dir(parent_comps, true, &layer, raw)?
                .ok_or_else(|| unsafe_entry(&layer, raw, "parent cannot be created"))?;
            let existing = self.children(parent).and_then(|m| m.get(&name)).copied();
            let node = match e.kind {
                RawKind::Dir => {
                    if let Some(id) = existing
                        && matches!(self.nodes[id].kind, Kind::Dir(_))
                    {
                        self.nodes[id].meta = e.meta;
                        scope.created(comps);
                        continue;
                    }
                    Node {
                        meta: e.meta,
                        kind: Kind::Dir(BTreeMap::new()),
                    }
                }
                RawKind::File {
                    size,
                    first,
                    blocks,
                    frag,
                } => Node {
                    meta: e.meta,
                    kind: Kind::File {
                        layer: layer_no,
                        size,
                        first,
                        blocks,
                        frag,
                    },
                },
                RawKind::Symlink(t) => {
                    check_symlink_target(&layer, raw, t.len(), &self.limits)?;
                    Node {
                        meta: Meta {
                            mode: 0o777,
                            ..e.meta
                        },
                        kind: Kind::Symlink(t),
                    }
                }
                RawKind::Char(a, b) => Node {
                    meta: e.meta,
                    kind: Kind::Char(a, b),
                },
                RawKind::Block(a, b) => Node {
                    meta: e.meta,
                    kind: Kind::Block(a, b),
                },
                RawKind::Fifo => Node {
                    meta: e.meta,
                    kind: Kind::Fifo,
                },
                RawKind::Link(target) => {
                    let target = shown(&target);
                    let Some(tcomps) = link_target(&layer, raw, target, &comps, &self.limits)?
                    else {
                        continue;
                    };
                    let missing = || link_missing(&layer, raw, target);
                    let (tname, tparent) = tcomps.split_last().ok_or_else(missing)?;
                    let tdir = self
                        .resolve_dir(tparent, false, &layer, raw)?
                        .ok_or_else(missing)?;
                    let tid = self
                        .children(tdir)
                        .and_then(|m| m.get(tname.as_bytes()))
                        .copied()
                        .ok_or_else(missing)?;
                    if matches!(self.nodes[tid].kind, Kind::Dir(_)) {
                        return Err(link_to_dir(&layer, raw));
                    }
                    if let Some(m) = self.children_mut(parent) {
                        m.insert(name, tid);
                    }
                    scope.created(comps);
                    continue;
                }
            };
            let id = self.add(node);
            if let Some(m) = self.children_mut(parent) {
                m.insert(name, id);
            }
            scope.created(comps);
        }
        self.layers.push(index.out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::layer::vectors;

    /// A tar owned by root (the tree only records owners).
    fn tar_of(entries: &[vectors::Entry<'_>]) -> Vec<u8> {
        vectors::tar_of(entries, 0, 0)
    }

    fn merged(layers: &[Vec<u8>]) -> Result<Tree> {
        merged_with(
            layers,
            &Budget::new(&std::env::temp_dir()),
            Compression::Zstd,
        )
    }

    fn merged_with(layers: &[Vec<u8>], budget: &Budget, compression: Compression) -> Result<Tree> {
        let shared = Shared::default();
        let mut t = Tree::new(Limits::default());
        for (i, l) in layers.iter().enumerate() {
            let idx = index_layer(
                l.as_slice(),
                &format!("l{i}"),
                &Limits::default(),
                &shared,
                budget,
                Codec {
                    compression,
                    level: 1,
                },
            )?;
            t.apply(idx)?;
        }
        Ok(t)
    }

    fn lookup(t: &Tree, path: &str) -> Option<NodeId> {
        let mut cur = ROOT;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            cur = *t.children(cur)?.get(c.as_bytes())?;
        }
        Some(cur)
    }

    fn content(t: &Tree, path: &str) -> Vec<u8> {
        let id = lookup(t, path).unwrap();
        let Kind::File {
            layer,
            size,
            first,
            blocks,
            frag,
        } = t.nodes[id].kind
        else {
            panic!("{path} is not a file");
        };
        let l = &t.layers[layer];
        let get = |c: Chunk| {
            let mut s = Vec::new();
            let b = l
                .data
                .with(c.off, c.len as usize, &mut s, <[u8]>::to_vec)
                .unwrap();
            if c.raw {
                b
            } else {
                crate::compression::decompress(l.compression, &b, BLOCK_SIZE).unwrap()
            }
        };
        let mut out = Vec::new();
        for c in &l.chunks[first..first + blocks] {
            out.extend(get(*c));
        }
        if let Some((f, o)) = frag {
            let fr = get(l.frags[f]);
            let tail = (size - out.len() as u64) as usize;
            out.extend_from_slice(&fr[o as usize..o as usize + tail]);
        }
        out
    }

    #[test]
    fn symlinked_parents_whiteouts_opaque_and_links() {
        // Both layers of the on-disk test, on top of the symlink replaced by a directory.
        let mut lower = vectors::SYMLINK_THEN_DIR.to_vec();
        let at = lower.iter().position(|e| e.0 == "bin/b").unwrap() - 1;
        let upper_of_bin = lower.split_off(at);
        lower.extend_from_slice(vectors::LOWER);
        let mut upper = upper_of_bin;
        upper.extend_from_slice(vectors::UPPER);
        let l1 = tar_of(&lower);
        let l2 = tar_of(&upper);
        let t = merged(&[l1, l2]).unwrap();
        assert_eq!(
            content(&t, "usr/bin/a"),
            b"a",
            "written through the symlink"
        );
        assert!(matches!(
            t.nodes[lookup(&t, "bin").unwrap()].kind,
            Kind::Dir(_)
        ));
        assert!(lookup(&t, "usr/bin/b").is_none());
        assert!(lookup(&t, "d/low").is_none());
        assert_eq!(content(&t, "d/mine"), b"2");
        assert_eq!(
            content(&t, "x"),
            b"2",
            "a whiteout never hides its own layer"
        );
        assert_eq!(
            content(&t, "h2"),
            b"hh",
            "hard link outlives the whiteout of h1"
        );
        assert!(lookup(&t, "h1").is_none());
    }

    #[test]
    fn past_the_memory_budget_layer_data_spills_to_a_file() {
        use tar::EntryType::Regular as F;
        let big: String = (0..300_000)
            .map(|i| char::from(b'a' + (i % 7) as u8))
            .collect();
        let l1 = tar_of(&[
            ("a", F, "small"),
            ("big", F, big.as_str()),
            ("b", F, "tail"),
        ]);
        // With either compression: the layer's data says which it is.
        for compression in Compression::ALL {
            let dir = tempfile::tempdir().unwrap();
            let budget = Budget {
                memory: 16,
                spill_dir: dir.path().to_owned(),
            };
            let t = merged_with(std::slice::from_ref(&l1), &budget, compression).unwrap();
            assert!(
                matches!(t.layers[0].data, LayerData::File { .. }),
                "spilled"
            );
            assert_eq!(t.layers[0].compression, compression);
            assert!(
                !t.layers[0].chunks[0].raw,
                "{compression} compressed a block"
            );
            assert_eq!(content(&t, "a"), b"small");
            assert_eq!(content(&t, "b"), b"tail");
            assert_eq!(content(&t, "big"), big.as_bytes());
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                0,
                "the spill file is unlinked"
            );
        }
    }

    #[test]
    fn escapes_are_rejected() {
        for layer in vectors::ESCAPES {
            let e = merged(&[tar_of(layer)]).unwrap_err();
            assert!(matches!(e, Error::UnsafeEntry { .. }), "{e}");
        }
        // Relative symlinks that stay beneath the root are followed.
        let t = merged(&[tar_of(vectors::BENEATH)]).unwrap();
        assert_eq!(content(&t, "b/f"), b"ok");
    }
}
