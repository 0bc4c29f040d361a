//! `vmsan logs <vm> [-f] [--tail N]`: the VM's serial console log.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::Path;

use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde_json::json;
use vmsan_core::error::{Error, ErrorCode};
use vmsan_core::state::{StateStore, VmStatus};
use vmsan_core::validate::options::LogsOptions;

use super::Ctx;
use crate::output::{Outcome, exit};

/// Read chunk when scanning backwards for `--tail`.
const CHUNK: u64 = 64 * 1024;

/// How long `--follow` waits for a file event before it re-checks whether the VM still runs.
/// Firecracker is not our child, so its exit has no event we can wait on; the supervisor's
/// final state write does, and this bounds the wait when no supervisor is left to write it.
const LIVENESS_RECHECK_MS: u16 = 1000;

/// The byte offset where the last `n` lines of `f` start (a final newline does not start a
/// new line). Reads backwards in chunks, so it is cheap on big logs.
pub(crate) fn tail_offset(f: &mut File, len: u64, n: u64) -> io::Result<u64> {
    if n == 0 {
        return Ok(len);
    }
    let mut newlines = 0u64;
    let mut end = len;
    let mut buf = vec![0u8; usize::try_from(CHUNK).unwrap_or(65_536)];
    let mut first = true;
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let size = usize::try_from(end - start).unwrap_or(0);
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..size])?;
        let mut slice = &buf[..size];
        if first {
            // A trailing newline ends the last line; it does not start another one.
            if slice.last() == Some(&b'\n') {
                slice = &slice[..size - 1];
            }
            first = false;
        }
        for (i, b) in slice.iter().enumerate().rev() {
            if *b == b'\n' {
                newlines += 1;
                if newlines == n {
                    return Ok(start + i as u64 + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

fn io_err(path: &Path, e: io::Error) -> Error {
    Error::io(format!("read {}", path.display()), e)
}

/// Read from `from` to the end of the file.
fn read_from(f: &mut File, from: u64, path: &Path) -> Result<Vec<u8>, Error> {
    f.seek(SeekFrom::Start(from)).map_err(|e| io_err(path, e))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(|e| io_err(path, e))?;
    Ok(buf)
}

/// `vmsan logs`.
pub(crate) fn run(ctx: &Ctx, opts: &LogsOptions) -> Result<Outcome, Error> {
    let store = StateStore::open(&ctx.paths)?;
    // The VM must exist (ERR_VM_NOT_FOUND otherwise), even when it never wrote a log.
    store.get(&opts.vm)?;
    let path = ctx.paths.serial_log(&opts.vm);

    // Watch before the first read, so nothing written in between is missed.
    let watch = if opts.follow {
        Some(watch_dir(&ctx.paths.vm_dir(&opts.vm))?)
    } else {
        None
    };

    let (content, mut pos) = match File::open(&path) {
        Ok(mut f) => {
            let len = f.metadata().map_err(|e| io_err(&path, e))?.len();
            let from = match opts.tail {
                Some(n) => tail_offset(&mut f, len, n).map_err(|e| io_err(&path, e))?,
                None => 0,
            };
            let data = read_from(&mut f, from, &path)?;
            let end = from + data.len() as u64;
            (data, end)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (Vec::new(), 0),
        Err(e) => return Err(io_err(&path, e)),
    };

    let Some(inotify) = watch else {
        let text = String::from_utf8_lossy(&content);
        let lines: Vec<&str> = text.lines().collect();
        let doc = json!({
            "vmId": opts.vm,
            "path": path.display().to_string(),
            "lines": lines,
        });
        return Ok(Outcome::ok(doc, for_stdout(content)));
    };

    // --follow (human mode only: --json conflicts with it).
    if !write_all(&content) {
        return Ok(Outcome::ok(json!({}), Vec::new()));
    }
    loop {
        let vm_done = !matches!(
            store.get(&opts.vm).map(|v| v.status),
            Ok(VmStatus::Running | VmStatus::Paused | VmStatus::Creating)
        );
        match File::open(&path) {
            Ok(mut f) => {
                let len = f.metadata().map_err(|e| io_err(&path, e))?.len();
                if len < pos {
                    pos = 0; // truncated or replaced: start over
                }
                if len > pos {
                    let data = read_from(&mut f, pos, &path)?;
                    pos += data.len() as u64;
                    if !write_all(&data) {
                        break;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => pos = 0,
            Err(e) => return Err(io_err(&path, e)),
        }
        if vm_done {
            break;
        }
        wait_for_change(&inotify)?;
    }
    Ok(Outcome {
        json: json!({}),
        text: Vec::new(),
        exit_code: exit::OK,
    })
}

/// The log as it goes to stdout. On a terminal, the guest's control characters are escaped
/// (its escape sequences would otherwise drive the user's terminal). Into a pipe or a file
/// the bytes stay exact, as `cat` and `docker logs` keep them: whoever saves or greps a log
/// wants what the guest wrote, and a pager such as `less` escapes on its own.
fn for_stdout(data: Vec<u8>) -> Vec<u8> {
    if io::stdout().is_terminal() {
        crate::escape::escape_bytes(&data)
    } else {
        data
    }
}

/// Write to stdout (through [`for_stdout`]); false when the reader went away.
fn write_all(data: &[u8]) -> bool {
    if data.is_empty() {
        return true;
    }
    let data = for_stdout(data.to_vec());
    let mut out = io::stdout().lock();
    out.write_all(&data).and_then(|()| out.flush()).is_ok()
}

fn watch_dir(dir: &Path) -> Result<Inotify, Error> {
    let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map_err(|e| {
        Error::new(ErrorCode::Io, format!("inotify_init: {e}")).source(io::Error::from(e))
    })?;
    ino.add_watch(
        dir,
        AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF,
    )
    .map_err(|e| Error::io(format!("watch {}", dir.display()), io::Error::from(e)))?;
    Ok(ino)
}

/// Block until something changes in the VM's directory (or the liveness re-check is due).
fn wait_for_change(ino: &Inotify) -> Result<(), Error> {
    let mut fds = [PollFd::new(ino.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, LIVENESS_RECHECK_MS) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(Error::io("poll", io::Error::from(e))),
    }
    // Drain the queue; the events themselves do not matter, only that something happened.
    loop {
        match ino.read_events() {
            Ok(ev) if !ev.is_empty() => {}
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => return Err(Error::io("read inotify events", io::Error::from(e))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(content: &[u8], n: u64) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, content).unwrap();
        let mut f = File::open(&p).unwrap();
        let off = tail_offset(&mut f, content.len() as u64, n).unwrap();
        content[usize::try_from(off).unwrap()..].to_vec()
    }

    #[test]
    fn tail_counts_lines_from_the_end() {
        assert_eq!(tail_of(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail_of(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail_of(b"a\nb\nc\n", 5), b"a\nb\nc\n");
        assert_eq!(tail_of(b"a\nb\nc\n", 0), b"");
        assert_eq!(tail_of(b"", 3), b"");
        assert_eq!(tail_of(b"\n\n", 1), b"\n");
    }

    #[test]
    fn tail_crosses_chunks() {
        let mut content = Vec::new();
        for i in 0..50_000 {
            content.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let t = tail_of(&content, 3);
        assert_eq!(t, b"line 49997\nline 49998\nline 49999\n");
        assert_eq!(tail_of(&content, 50_000), content);
    }
}
