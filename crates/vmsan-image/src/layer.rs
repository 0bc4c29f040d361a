//! The rules of OCI image layers, written once for both appliers.
//!
//! A layer is a tar archive applied on top of the layers below it. What an entry means and
//! whether it is safe is decided here; how it is carried out is up to the two appliers, on
//! disk ([`crate::merge`]) and in memory ([`crate::tree`]):
//!
//! - entry paths split into normal components; absolute paths, `..` components and paths
//!   past [`Limits::max_path_len`] are rejected ([`components`]);
//! - an entry naming the root may only be a directory (its metadata) ([`Scope::classify`]);
//! - `.wh..wh..opq` hides what lower layers put in its directory, `.wh.NAME` removes `NAME`
//!   from lower layers; neither ever hides what the same layer created ([`Scope`]);
//! - a hard link targets an existing non-directory beneath the root, given by a relative
//!   path without `..` ([`link_target`], [`link_missing`], [`link_to_dir`]);
//! - a symlink target is neither empty nor longer than a path may be ([`check_symlink_target`]);
//! - the total uncompressed bytes and entries of an image are bounded ([`Limits`],
//!   [`too_many_entries`], [`entry_too_big`], [`BombError`]).

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path};

use crate::error::{Error, Result};

/// Limits against decompression bombs and absurd images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total uncompressed tar bytes over all layers.
    pub max_bytes: u64,
    /// Total entries over all layers.
    pub max_entries: u64,
    /// Longest entry path, in bytes.
    pub max_path_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 32 << 30,
            max_entries: 2_000_000,
            max_path_len: 4096,
        }
    }
}

/// Name prefix of a whiteout.
const WH_PREFIX: &[u8] = b".wh.";
/// Name of an opaque-directory marker.
const WH_OPAQUE: &[u8] = b".wh..wh..opq";

/// An entry refused for safety.
pub(crate) fn unsafe_entry(layer: &str, path: &Path, reason: impl Into<String>) -> Error {
    Error::UnsafeEntry {
        layer: layer.to_owned(),
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Split an archive path into normal components, rejecting absolute paths and `..`.
pub(crate) fn components(layer: &str, p: &Path, limits: &Limits) -> Result<Vec<OsString>> {
    if p.as_os_str().len() > limits.max_path_len {
        return Err(unsafe_entry(
            layer,
            p,
            format!("path longer than {} bytes", limits.max_path_len),
        ));
    }
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_entry(layer, p, "absolute path"));
            }
            Component::ParentDir => return Err(unsafe_entry(layer, p, "`..` component")),
        }
    }
    Ok(out)
}

/// The uncompressed content of an image went past [`Limits::max_bytes`] (carried inside an
/// `io::Error` out of a counting reader).
#[derive(Debug)]
pub(crate) struct BombError(pub(crate) u64);

impl std::fmt::Display for BombError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uncompressed content exceeds {} bytes", self.0)
    }
}

impl std::error::Error for BombError {}

/// A read error of the archive: the byte limit if a counting reader raised it, else a
/// malformed archive.
pub(crate) fn read_error(layer: &str, e: io::Error) -> Error {
    if let Some(b) = e.get_ref().and_then(|i| i.downcast_ref::<BombError>()) {
        return Error::LimitExceeded {
            what: format!("layer {layer}"),
            reason: b.to_string(),
        };
    }
    Error::malformed(
        format!("layer {layer}"),
        format!("cannot read the archive: {e}"),
    )
}

/// The error when the image holds more than [`Limits::max_entries`] entries.
pub(crate) fn too_many_entries(layer: &str, limits: &Limits) -> Error {
    Error::LimitExceeded {
        what: format!("layer {layer}"),
        reason: format!("more than {} entries", limits.max_entries),
    }
}

/// Fails when an entry of `size` bytes, after `so_far` bytes, would pass the byte limit.
pub(crate) fn entry_too_big(
    layer: &str,
    raw: &Path,
    so_far: u64,
    size: u64,
    limits: &Limits,
) -> Result<()> {
    if so_far.saturating_add(size) > limits.max_bytes {
        return Err(Error::LimitExceeded {
            what: format!("layer {layer}"),
            reason: format!(
                "entry {} of {size} bytes exceeds the {} byte limit",
                raw.display(),
                limits.max_bytes
            ),
        });
    }
    Ok(())
}

/// PAX headers describe the next entry; they are not entries of the tree.
pub(crate) fn is_extension_header(t: tar::EntryType) -> bool {
    matches!(t, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader)
}

/// The error for tar entry types an image may not hold (anything but directories, files,
/// symlinks, hard links, device nodes and FIFOs).
pub(crate) fn unsupported_type(layer: &str, raw: &Path, t: tar::EntryType) -> Error {
    unsafe_entry(layer, raw, format!("unsupported entry type {t:?}"))
}

/// Checks a symlink's target (its length in bytes).
pub(crate) fn check_symlink_target(
    layer: &str,
    raw: &Path,
    target_len: usize,
    limits: &Limits,
) -> Result<()> {
    if target_len == 0 || target_len > limits.max_path_len {
        return Err(unsafe_entry(layer, raw, "symlink target empty or too long"));
    }
    Ok(())
}

/// The components of a hard link's target, or `None` when the entry links to itself (a
/// no-op).
///
/// # Errors
/// Targets that are absolute, have `..`, or name the root.
pub(crate) fn link_target(
    layer: &str,
    raw: &Path,
    target: &Path,
    comps: &[OsString],
    limits: &Limits,
) -> Result<Option<Vec<OsString>>> {
    let tcomps = components(layer, target, limits).map_err(|_| {
        unsafe_entry(
            layer,
            raw,
            format!(
                "hard link target {} is absolute or has `..`",
                target.display()
            ),
        )
    })?;
    if tcomps.is_empty() {
        return Err(unsafe_entry(layer, raw, "hard link to the root"));
    }
    if tcomps == comps {
        return Ok(None);
    }
    Ok(Some(tcomps))
}

/// The error when a hard link's target does not exist.
pub(crate) fn link_missing(layer: &str, raw: &Path, target: &Path) -> Error {
    unsafe_entry(
        layer,
        raw,
        format!("hard link target {} does not exist", target.display()),
    )
}

/// The error when a hard link's target is a directory.
pub(crate) fn link_to_dir(layer: &str, raw: &Path) -> Error {
    unsafe_entry(layer, raw, "hard link to a directory")
}

/// What one entry asks of the tree below it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action<'a> {
    /// The root directory itself: set its metadata.
    Root,
    /// Remove from directory `dir` whatever lower layers put there
    /// ([`Scope::keeps`] says what survives).
    Opaque { dir: &'a [OsString] },
    /// Remove `name` (recursively) from directory `dir`, if both exist.
    Whiteout {
        dir: &'a [OsString],
        name: &'a OsStr,
    },
    /// Nothing to do (a whiteout of something the same layer created).
    Skip,
    /// Create or replace `name` in directory `dir` (its missing parents are created).
    Put {
        dir: &'a [OsString],
        name: &'a OsStr,
    },
}

/// The entries one layer has created so far: its whiteouts and opaque markers only hide
/// lower layers.
#[derive(Debug, Default)]
pub(crate) struct Scope {
    created: HashSet<Vec<OsString>>,
}

impl Scope {
    /// Classify the entry at `comps` (its archive path `raw`); `is_dir` when it is a
    /// directory.
    ///
    /// # Errors
    /// A non-directory for the root, a malformed whiteout.
    pub(crate) fn classify<'a>(
        &self,
        layer: &str,
        raw: &Path,
        comps: &'a [OsString],
        is_dir: bool,
    ) -> Result<Action<'a>> {
        use std::os::unix::ffi::OsStrExt;
        let Some((name, dir)) = comps.split_last() else {
            if is_dir {
                return Ok(Action::Root);
            }
            return Err(unsafe_entry(layer, raw, "non-directory entry for the root"));
        };
        let bytes = name.as_bytes();
        if bytes == WH_OPAQUE {
            return Ok(Action::Opaque { dir });
        }
        if let Some(target) = bytes.strip_prefix(WH_PREFIX) {
            if target.is_empty() || target == b"." || target == b".." || target.contains(&b'/') {
                return Err(unsafe_entry(layer, raw, "malformed whiteout"));
            }
            let target = OsStr::from_bytes(target);
            let mut victim = dir.to_vec();
            victim.push(target.to_os_string());
            if self.created.contains(&victim) {
                return Ok(Action::Skip);
            }
            return Ok(Action::Whiteout { dir, name: target });
        }
        Ok(Action::Put { dir, name })
    }

    /// Whether `name` in `dir` survives an opaque marker of `dir` (the same layer made it).
    pub(crate) fn keeps(&self, dir: &[OsString], name: &OsStr) -> bool {
        let mut p = dir.to_vec();
        p.push(name.to_os_string());
        self.created.contains(&p)
    }

    /// Record that this layer created (or replaced) the entry at `comps`.
    pub(crate) fn created(&mut self, comps: Vec<OsString>) {
        self.created.insert(comps);
    }
}

/// Layers shared by the tests of both appliers: each applier must give the outcome their
/// tests state.
#[cfg(test)]
pub(crate) mod vectors {
    use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as S};

    /// An entry: path, type, then contents (files) or target (links).
    pub(crate) type Entry<'a> = (&'a str, tar::EntryType, &'a str);

    /// A tar of `entries`, owned by `uid`:`gid`, modification time 0.
    pub(crate) fn tar_of(entries: &[Entry<'_>], uid: u32, gid: u32) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_uid(u64::from(uid));
            h.set_gid(u64::from(gid));
            h.set_mtime(0);
            if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
                h.set_size(0);
                b.append_link(&mut h, path, data).unwrap();
            } else {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    /// `bin` is a symlink to `usr/bin` (`bin/a` is written through it), then a directory:
    /// `bin/b` lands in the new directory, not in `usr/bin`.
    pub(crate) const SYMLINK_THEN_DIR: &[Entry<'static>] = &[
        ("usr", D, ""),
        ("usr/bin", D, ""),
        ("bin", S, "usr/bin"),
        ("bin/a", F, "a"),
        ("bin", D, ""),
        ("bin/b", F, "b"),
    ];

    /// Lower layer of [`UPPER`]: `d/low`, `x` = "1", `h1` = "hh".
    pub(crate) const LOWER: &[Entry<'static>] = &[
        ("d", D, ""),
        ("d/low", F, "1"),
        ("x", F, "1"),
        ("h1", F, "hh"),
    ];

    /// On [`LOWER`]: `d` made opaque after `d/mine` was added (`d/low` goes, `d/mine`
    /// stays); `x` rewritten to "2" before its whiteout (which does not hide it); `h2` a
    /// hard link to `h1`, then `h1` whited out (`h2` keeps the contents).
    pub(crate) const UPPER: &[Entry<'static>] = &[
        ("d", D, ""),
        ("d/mine", F, "2"),
        ("d/.wh..wh..opq", F, ""),
        ("x", F, "2"),
        (".wh.x", F, ""),
        ("h2", H, "h1"),
        (".wh.h1", F, ""),
    ];

    /// Single layers that must be refused as unsafe: parents through an absolute symlink,
    /// through a relative one that climbs out, through a symlink loop.
    pub(crate) const ESCAPES: &[&[Entry<'static>]] = &[
        &[("esc", S, "/tmp"), ("esc/x", F, "x")],
        &[("a", D, ""), ("a/up", S, "../../x"), ("a/up/f", F, "x")],
        &[("l", S, "l"), ("l/f", F, "x")],
    ];

    /// A relative symlink that stays beneath the root is followed: `b/f` = "ok".
    pub(crate) const BENEATH: &[Entry<'static>] = &[
        ("a", D, ""),
        ("b", D, ""),
        ("a/tob", S, "../b"),
        ("a/tob/f", F, "ok"),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(s: &str) -> Vec<OsString> {
        s.split('/').map(OsString::from).collect()
    }

    #[test]
    fn components_reject_escapes() {
        let l = Limits::default();
        assert!(components("l", Path::new("/etc/passwd"), &l).is_err());
        assert!(components("l", Path::new("a/../../b"), &l).is_err());
        assert_eq!(
            components("l", Path::new("./a/./b/"), &l).unwrap(),
            vec![OsString::from("a"), OsString::from("b")]
        );
        assert!(components("l", Path::new("."), &l).unwrap().is_empty());
        let long = "a/".repeat(3000);
        assert!(components("l", Path::new(&long), &l).is_err());
    }

    #[test]
    fn classify_root_whiteouts_and_opaque() {
        let mut s = Scope::default();
        let raw = Path::new("x");
        assert_eq!(s.classify("l", raw, &[], true).unwrap(), Action::Root);
        assert!(matches!(
            s.classify("l", raw, &[], false).unwrap_err(),
            Error::UnsafeEntry { .. }
        ));
        let c = comps("d/.wh..wh..opq");
        assert_eq!(
            s.classify("l", raw, &c, false).unwrap(),
            Action::Opaque { dir: &c[..1] }
        );
        let c = comps("d/.wh.f");
        assert_eq!(
            s.classify("l", raw, &c, false).unwrap(),
            Action::Whiteout {
                dir: &c[..1],
                name: OsStr::new("f")
            }
        );
        s.created(comps("d/f"));
        assert_eq!(
            s.classify("l", raw, &c, false).unwrap(),
            Action::Skip,
            "a whiteout never hides its own layer"
        );
        assert!(s.keeps(&comps("d"), OsStr::new("f")));
        assert!(!s.keeps(&comps("d"), OsStr::new("g")));
        for bad in ["d/.wh.", "d/.wh..", "d/.wh..."] {
            let c = comps(bad);
            assert!(
                matches!(
                    s.classify("l", raw, &c, false),
                    Err(Error::UnsafeEntry { .. })
                ),
                "{bad}"
            );
        }
        // `...` is a legal name, and so its whiteout.
        let c = comps("d/.wh....");
        assert!(s.classify("l", raw, &c, false).is_ok());
        let c = comps("d/f");
        assert_eq!(
            s.classify("l", raw, &c, true).unwrap(),
            Action::Put {
                dir: &c[..1],
                name: OsStr::new("f")
            }
        );
    }

    #[test]
    fn hard_link_targets() {
        let l = Limits::default();
        let raw = Path::new("a/h");
        let me = comps("a/h");
        for bad in ["/etc/passwd", "../x", "a/../../x", "."] {
            assert!(
                matches!(
                    link_target("l", raw, Path::new(bad), &me, &l),
                    Err(Error::UnsafeEntry { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            link_target("l", raw, Path::new("./a/h"), &me, &l).unwrap(),
            None
        );
        assert_eq!(
            link_target("l", raw, Path::new("b/t"), &me, &l).unwrap(),
            Some(comps("b/t"))
        );
    }

    #[test]
    fn symlink_targets_and_limits() {
        let l = Limits {
            max_bytes: 10,
            max_entries: 1,
            max_path_len: 4,
        };
        let raw = Path::new("s");
        assert!(check_symlink_target("l", raw, 0, &l).is_err());
        assert!(check_symlink_target("l", raw, 5, &l).is_err());
        assert!(check_symlink_target("l", raw, 4, &l).is_ok());
        assert!(entry_too_big("l", raw, 5, 5, &l).is_ok());
        assert!(matches!(
            entry_too_big("l", raw, 5, 6, &l),
            Err(Error::LimitExceeded { .. })
        ));
        let e = read_error("l", io::Error::other(BombError(10)));
        assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
        let e = read_error("l", io::Error::other("x"));
        assert!(!matches!(e, Error::LimitExceeded { .. }), "{e}");
    }
}
