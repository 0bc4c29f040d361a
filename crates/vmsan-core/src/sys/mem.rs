//! Keeping a long-lived process small: one malloc arena, and unmapping file pages (code and
//! read-only data) that only start-up needed.

use std::io;

/// Use a single malloc arena. glibc otherwise gives each thread that allocates its own arena
/// (with its own free lists and top chunk), which a process that is mostly idle never needs.
pub(crate) fn single_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes two integers by value; M_ARENA_MAX only caps future arenas.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// A mapping of `/proc/self/smaps` that can be dropped from this process's page tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Droppable {
    start: usize,
    len: usize,
}

/// The read-only, private, file-backed mappings of an smaps listing that hold no anonymous
/// (copied-on-write) page. Dropping their pages loses nothing: a later access maps the same
/// page of the file again (from the page cache, which keeps it). Writable mappings, and
/// read-only ones that were written before being made read-only (relocations, RELRO), hold
/// anonymous pages and are kept.
fn droppable(smaps: &str) -> Vec<Droppable> {
    let mut out = Vec::new();
    let mut current: Option<(Droppable, bool)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else {
            continue;
        };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            // A new mapping: "start-end perms offset dev inode path".
            if let Some((d, true)) = current.take() {
                out.push(d);
            }
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            let candidate = perms.starts_with('r')
                && !perms.contains('w')
                && perms.ends_with('p')
                && path.starts_with('/');
            current = candidate.then_some((
                Droppable {
                    start,
                    len: end.saturating_sub(start),
                },
                false,
            ));
            continue;
        }
        if let Some((_, ok)) = current.as_mut() {
            match first {
                // Known clean only once its Anonymous line says so.
                "Anonymous:" => *ok = fields.next() == Some("0"),
                "Locked:" if fields.next() != Some("0") => *ok = false,
                _ => {}
            }
        }
    }
    if let Some((d, true)) = current {
        out.push(d);
    }
    out
}

/// Unmap from this process the pages of its read-only file mappings (the program's and
/// libraries' code and constants) that hold no private data. Code that runs later is mapped
/// again on first use; what start-up alone needed stops counting towards this process's
/// resident memory. The pages stay in the page cache, shared with every other process.
/// Returns how many bytes of mappings were dropped.
pub(crate) fn drop_clean_file_pages() -> io::Result<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut dropped = 0;
    for d in droppable(&smaps) {
        // SAFETY: the range is exactly one existing mapping of this process (from
        // /proc/self/smaps), private, read-only and file-backed, with no anonymous page: it
        // holds nothing but page-cache pages of its file, which MADV_DONTNEED unmaps and a
        // later access maps again with the same contents. No reference into it is
        // invalidated. A mapping changed since smaps was read makes madvise fail (ignored).
        let r = unsafe { libc::madvise(d.start as *mut libc::c_void, d.len, libc::MADV_DONTNEED) };
        if r == 0 {
            dropped += d.len;
        }
    }
    Ok(dropped)
}

/// This process's resident memory in bytes (`/proc/self/statm`).
pub(crate) fn resident_bytes() -> io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/self/statm"))?;
    // SAFETY: sysconf takes an integer by value and returns an integer.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * u64::try_from(page).unwrap_or(4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d4a0000000-55d4a0a00000 r-xp 00100000 fd:01 123 /usr/bin/vmsan
Size:              10240 kB
Rss:                4888 kB
Anonymous:             0 kB
Locked:                0 kB
55d4a0a00000-55d4a0a50000 r--p 00a00000 fd:01 123 /usr/bin/vmsan
Size:                320 kB
Anonymous:           316 kB
Locked:                0 kB
55d4a0a50000-55d4a0a54000 rw-p 00a50000 fd:01 123 /usr/bin/vmsan
Anonymous:            16 kB
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
Anonymous:            48 kB
7f0000100000-7f0000200000 r--p 00000000 fd:01 456 /usr/lib/libc.so.6
Anonymous:             0 kB
Locked:                4 kB
7f0000200000-7f0000300000 r-xp 00000000 fd:01 456 /usr/lib/libc.so.6
Anonymous:             0 kB
Locked:                0 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_file_mappings_are_dropped() {
        assert_eq!(
            droppable(SMAPS),
            vec![
                Droppable {
                    start: 0x55d4a0000000,
                    len: 0xa00000
                },
                Droppable {
                    start: 0x7f0000200000,
                    len: 0x100000
                },
            ]
        );
    }

    #[test]
    fn dropping_our_own_pages_keeps_the_process_working() {
        let before = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(drop_clean_file_pages().unwrap() > 0);
        // Code and constants come back on use.
        let after = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(before.contains("VmRSS:") && after.contains("VmRSS:"));
        assert!(resident_bytes().unwrap() > 0);
        assert_eq!(droppable(SMAPS).len(), 2);
    }
}
