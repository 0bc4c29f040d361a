//! Identifying a process by pid *and* start time, so that a recycled pid is never mistaken for
//! the Firecracker we started (and never killed in its place).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A process as recorded in the VM's state: its pid and its start time (field 22 of
/// `/proc/<pid>/stat`, in clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ProcessIdentity {
    /// Pid in the host's PID namespace.
    pub pid: i32,
    /// Start time in clock ticks after boot.
    pub start_time: u64,
}

/// What became of a recorded process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// The same process is still running.
    Alive,
    /// It has exited (no such pid, or only a zombie is left).
    Exited,
    /// The pid now belongs to a different process.
    PidReused,
}

/// The fields of `/proc/<pid>/stat` vmsan reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// Pid.
    pub pid: i32,
    /// `comm` (the name in parentheses).
    pub comm: String,
    /// State letter (`R`, `S`, `Z`, …).
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Start time (field 22), clock ticks after boot.
    pub start_time: u64,
}

impl ProcStat {
    /// Whether only a zombie (or a dead task) is left.
    #[must_use]
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses one `/proc/<pid>/stat` line. `comm` may hold spaces and parentheses, so the fields
/// after it are found from the *last* `)`.
#[must_use]
pub fn parse_proc_stat(line: &str) -> Option<ProcStat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = line.get(..open)?.trim().parse().ok()?;
    let comm = line.get(open + 1..close)?.to_owned();
    // Fields from 3 (state) on.
    let mut rest = line.get(close + 1..)?.split_ascii_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    // state is field 3, start time field 22: skip fields 5..=21 (17 fields).
    let start_time = rest.nth(17)?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid,
        start_time,
    })
}

/// Reads `/proc/<pid>/stat`; `Ok(None)` when there is no such process.
///
/// # Errors
/// Unexpected I/O errors, or `InvalidData` for an unparsable file.
pub fn read_proc_stat(pid: i32) -> io::Result<Option<ProcStat>> {
    if pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid pid {pid}"),
        ));
    }
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    parse_proc_stat(&text).map(Some).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse /proc/{pid}/stat: {text:?}"),
        )
    })
}

impl ProcessIdentity {
    /// Records the identity of the running process `pid`.
    ///
    /// # Errors
    /// `NotFound` when it does not exist (or is a zombie), else as [`read_proc_stat`].
    pub fn of(pid: i32) -> io::Result<Self> {
        match read_proc_stat(pid)? {
            Some(stat) if !stat.is_dead() => Ok(Self {
                pid,
                start_time: stat.start_time,
            }),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("process {pid} does not exist"),
            )),
        }
    }

    /// Whether the recorded process is still the one running under its pid.
    ///
    /// # Errors
    /// As [`read_proc_stat`].
    pub fn liveness(&self) -> io::Result<Liveness> {
        Ok(match read_proc_stat(self.pid)? {
            None => Liveness::Exited,
            Some(stat) if stat.start_time != self.start_time => Liveness::PidReused,
            Some(stat) if stat.is_dead() => Liveness::Exited,
            Some(_) => Liveness::Alive,
        })
    }

    /// Whether `/proc/<pid>/exe` is the very file `expected` (same device and inode). Under
    /// the jailer `expected` is the jail's copy of Firecracker ([`crate::JailLayout::exec_copy`]).
    /// `Ok(false)` when the process is gone.
    ///
    /// # Errors
    /// I/O errors other than "no such process" (e.g. `expected` missing).
    pub fn exe_is(&self, expected: &Path) -> io::Result<bool> {
        let want = std::fs::symlink_metadata(expected)?;
        let exe = match std::fs::metadata(format!("/proc/{}/exe", self.pid)) {
            Ok(meta) => meta,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        if exe.dev() != want.dev() || exe.ino() != want.ino() {
            return Ok(false);
        }
        // The pid may have been recycled between the two reads: check it is still ours.
        Ok(self.liveness()? == Liveness::Alive)
    }
}

/// Real and effective uid and gid of a process (the `Uid:`/`Gid:` lines of
/// `/proc/<pid>/status`), e.g. to check that Firecracker really runs as the jail's
/// unprivileged uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessCredentials {
    /// Real uid.
    pub uid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Real gid.
    pub gid: u32,
    /// Effective gid.
    pub egid: u32,
}

/// Parses the `Uid:` and `Gid:` lines of a `/proc/<pid>/status` text.
#[must_use]
pub fn parse_status_credentials(status: &str) -> Option<ProcessCredentials> {
    let ids = |key: &str| -> Option<(u32, u32)> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let mut fields = line.get(key.len()..)?.split_ascii_whitespace();
        let real = fields.next()?.parse().ok()?;
        let effective = fields.next()?.parse().ok()?;
        Some((real, effective))
    };
    let (uid, euid) = ids("Uid:")?;
    let (gid, egid) = ids("Gid:")?;
    Some(ProcessCredentials {
        uid,
        euid,
        gid,
        egid,
    })
}

impl ProcessIdentity {
    /// The process's credentials; `Ok(None)` when it is gone or its pid was reused.
    ///
    /// # Errors
    /// Unexpected I/O errors, `InvalidData` for an unparsable status file.
    pub fn credentials(&self) -> io::Result<Option<ProcessCredentials>> {
        let text = match std::fs::read_to_string(format!("/proc/{}/status", self.pid)) {
            Ok(text) => text,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let credentials = parse_status_credentials(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no Uid:/Gid: lines in /proc/{}/status", self.pid),
            )
        })?;
        // Read after the status: if the pid changed hands meanwhile, say so.
        if self.liveness()? != Liveness::Alive {
            return Ok(None);
        }
        Ok(Some(credentials))
    }
}
