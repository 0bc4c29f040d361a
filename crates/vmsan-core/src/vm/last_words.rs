//! What Firecracker and the guest said last before a VM stopped, for the error a failed boot
//! (or a VMM that dies) reports: Firecracker's own error line from its log (e.g. `Received
//! KVM_EXIT_INTERNAL_ERROR signal`, which its exit status 1 does not tell) and the guest
//! agent's last `vmsan-agent:` line from the serial console.

use std::path::Path;

use super::files::VmFiles;

/// The line vmsan writes into the serial log before each Firecracker starts: the log spans all
/// of a VM's boots, and only the current one's lines may explain its failure (a stopped VM's
/// last boot ended with the agent's "shutting down").
const BOOT_MARK: &str = "[vmsan] Firecracker starts";

/// Mark the start of a boot in the serial log, just before Firecracker gets it as its stdout.
pub(crate) fn mark_boot(serial: &mut std::fs::File) -> std::io::Result<()> {
    use std::io::Write as _;
    writeln!(serial, "{BOOT_MARK} at {}", crate::time::now_rfc3339())
}

/// The part of a serial log written since the last boot started.
pub(crate) fn this_boot(serial: &str) -> &str {
    match serial.rfind(BOOT_MARK) {
        Some(at) => &serial[at..],
        None => serial,
    }
}

/// How many bytes of a log's end are read (the lines that matter are the last ones; a guest
/// can write a serial log of any size).
const TAIL_BYTES: u64 = 64 << 10;
/// A line quoted in an error is cut to this many characters.
const MAX_LINE: usize = 300;

/// The end of a file as text (lossy), at most [`TAIL_BYTES`].
fn tail(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))
        .ok()?;
    let mut buf = Vec::new();
    f.take(TAIL_BYTES).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn cut(line: &str) -> String {
    let line = line.trim();
    match line.char_indices().nth(MAX_LINE) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_owned(),
    }
}

/// One line of Firecracker's log: `<timestamp> [id:thread(:LEVEL)] message`.
struct FcLine<'a> {
    thread: &'a str,
    /// With `show_level` (vmsan's logger setting): `ERROR`, `WARN`, `INFO`, …
    level: Option<&'a str>,
    message: &'a str,
}

fn split_fc_line(line: &str) -> Option<FcLine<'_>> {
    let rest = &line[line.find('[')? + 1..];
    let (tag, message) = rest.split_once("] ")?;
    let mut parts = tag.splitn(3, ':');
    let _id = parts.next()?;
    let thread = parts.next()?;
    Some(FcLine {
        thread,
        level: parts.next(),
        message,
    })
}

/// Whether a log line reports a failure: its level says so when the log has levels; else
/// the words do. Requests echoed by the API server are never one (a body may say `panic=1`),
/// nor is Firecracker's own noise on this kind of host (`KVM_KVMCLOCK_CTRL` fails on every
/// pause under a nested hypervisor).
fn is_failure(line: &FcLine<'_>) -> bool {
    if let Some(level) = line.level {
        return level == "ERROR";
    }
    let lower = line.message.to_ascii_lowercase();
    ["error", "fail", "panic", "unexpected", "kvm_exit"]
        .iter()
        .any(|w| lower.contains(w))
        && !line.message.contains("KVM_KVMCLOCK_CTRL")
        && !line.message.starts_with("The API server received")
        && !line.message.starts_with("Received Error. Status code")
}

/// Firecracker's line that says why it stopped: the last failure a vCPU thread reported (the
/// guest's exit, e.g. `Received KVM_EXIT_INTERNAL_ERROR signal`), else the last failure of
/// any thread (the wrap-up lines such as `Firecracker exiting with error` say less).
pub(crate) fn firecracker_line(log: &str) -> Option<String> {
    let failures: Vec<FcLine<'_>> = log
        .lines()
        .filter_map(split_fc_line)
        .filter(is_failure)
        .collect();
    failures
        .iter()
        .rev()
        .find(|l| l.thread.starts_with("fc_vcpu"))
        .or_else(|| failures.last())
        .map(|l| cut(l.message))
}

/// The guest agent's last line on the serial console, if it printed one.
pub(crate) fn agent_line(serial: &str) -> Option<String> {
    serial
        .lines()
        .rev()
        .find_map(|l| l.find("vmsan-agent:").map(|at| cut(&l[at..])))
}

/// Firecracker's last line, timestamp and tag dropped (what it was doing when it went quiet).
fn firecracker_last_line(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .find_map(split_fc_line)
        .map(|l| cut(l.message))
}

/// Both, as the `why` of an error: `Firecracker logged: …` and `The guest agent said: …`.
/// With `quiet_too`, a Firecracker log without a failure is named too, by its last line (a
/// guest that never announced itself while Firecracker saw nothing wrong).
pub(crate) fn why(files: &VmFiles, quiet_too: bool) -> Option<String> {
    let log = tail(&files.firecracker_log()).unwrap_or_default();
    let fc = firecracker_line(&log)
        .map(|l| format!("Firecracker logged: {l}"))
        .or_else(|| {
            quiet_too
                .then(|| firecracker_last_line(&log))
                .flatten()
                .map(|l| format!("Firecracker logged no error; its last line: {l}"))
        });
    let agent = tail(&files.serial_log())
        .as_deref()
        .map(this_boot)
        .and_then(agent_line)
        .map(|l| format!("The guest agent said: {l}"));
    let parts: Vec<String> = [fc, agent].into_iter().flatten().collect();
    (!parts.is_empty()).then(|| parts.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn only_the_current_boots_serial_lines_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let mut f = std::fs::File::create(&path).unwrap();
        mark_boot(&mut f).unwrap();
        writeln!(f, "vmsan-agent: shutting down").unwrap();
        mark_boot(&mut f).unwrap();
        writeln!(
            f,
            "[   33.9] PCI: Fatal: No config space access function found"
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(agent_line(this_boot(&text)), None, "{text}");
        assert_eq!(
            agent_line(&text).as_deref(),
            Some("vmsan-agent: shutting down")
        );
        assert!(this_boot(&text).starts_with(BOOT_MARK));
        assert_eq!(this_boot("no mark\n"), "no mark\n");
    }

    /// Firecracker v1.16.1's log when the guest dies on an instruction the host's hypervisor
    /// cannot emulate (recorded with the `int3` guest on this project's machines).
    const KVM_INTERNAL_ERROR: &str = "\
2026-12-06T01:12:04.688871236 [crash:fc_api] The API server received a Put request on \"/actions\" with body \"{\\\"action_type\\\":\\\"InstanceStart\\\"}\".
2026-12-06T01:12:04.709926798 [crash:main] Artificially kick devices
2026-12-06T01:12:04.710589716 [crash:fc_vcpu 0] Received KVM_EXIT_INTERNAL_ERROR signal
2026-12-06T01:12:04.710646912 [crash:main] Vmm is stopping.
2026-12-06T01:12:04.710660364 [crash:fc_api] The request was executed successfully. Status code: 204 No Content.
2026-12-06T01:12:04.710767757 [crash:main] Killing vCPU threads
2026-12-06T01:12:04.725958952 [crash:main] RunWithApiError error: MicroVM stopped with an error: GenericError
2026-12-06T01:12:04.726006530 [crash:main] Firecracker exiting with error. exit_code=1
";

    #[test]
    fn the_vcpu_exit_is_picked_over_the_wrap_up() {
        assert_eq!(
            firecracker_line(KVM_INTERNAL_ERROR).as_deref(),
            Some("Received KVM_EXIT_INTERNAL_ERROR signal")
        );
    }

    #[test]
    fn a_triple_fault_and_a_panic_are_named() {
        let shutdown = "2026-12-06T01:12:04.929140898 [crash:fc_vcpu 0] Unexpected exit reason on vcpu run: Shutdown\n2026-12-06T01:12:04.953682343 [crash:main] Firecracker exiting with error. exit_code=1\n";
        assert_eq!(
            firecracker_line(shutdown).as_deref(),
            Some("Unexpected exit reason on vcpu run: Shutdown")
        );
        let panic = "2026-12-06T01:00:00.000000001 [x:main] Firecracker panicked at src/vmm/src/lib.rs:1:1: boom\n";
        assert_eq!(
            firecracker_line(panic).as_deref(),
            Some("Firecracker panicked at src/vmm/src/lib.rs:1:1: boom")
        );
    }

    /// The same with `show_level` (as vmsan configures the logger), and the API echoing a
    /// boot-source body that says `panic=1`.
    const LEVELED: &str = "\
2026-12-06T01:47:30.456912543 [c:fc_api:INFO] The API server received a Put request on \"/boot-source\" with body \"{\\\"boot_args\\\":\\\"reboot=k panic=1\\\"}\".
2026-12-06T01:47:30.466141214 [c:fc_vcpu 0:WARN] Received a VcpuEvent::Resume message with immediate_exit enabled. immediate_exit was disabled before proceeding
2026-12-06T01:47:30.672837183 [c:fc_vcpu 0:ERROR] Unexpected exit reason on vcpu run: Shutdown
2026-12-06T01:47:30.672870622 [c:main:INFO] Vmm is stopping.
2026-12-06T01:47:30.686054066 [c:main:ERROR] RunWithApiError error: MicroVM stopped with an error: GenericError
2026-12-06T01:47:30.686096762 [c:main:ERROR] Firecracker exiting with error. exit_code=1
";

    #[test]
    fn levels_decide_when_the_log_has_them() {
        assert_eq!(
            firecracker_line(LEVELED).as_deref(),
            Some("Unexpected exit reason on vcpu run: Shutdown")
        );
        let only_echo = LEVELED.lines().next().unwrap_or_default();
        assert_eq!(
            firecracker_line(only_echo),
            None,
            "a request body is no failure"
        );
        let unleveled_echo = "2026-12-06T01:00:00.1 [x:fc_api] The API server received a Put request on \"/boot-source\" with body \"panic=1\".";
        assert_eq!(firecracker_line(unleveled_echo), None);
    }

    #[test]
    fn a_quiet_log_names_nothing() {
        let quiet = "\
2026-12-06T00:53:22.820697870 [probe1:fc_vcpu 0] KVM_KVMCLOCK_CTRL call failed Invalid argument (os error 22)
2026-12-06T00:53:22.820735290 [probe1:fc_api] The request was executed successfully. Status code: 204 No Content.
2026-12-06T00:53:22.820740882 [probe1:fc_api] Received Error. Status code: 400 Bad Request. Message: x
";
        assert_eq!(firecracker_line(quiet), None);
        assert_eq!(firecracker_line(""), None);
        assert_eq!(
            firecracker_last_line(quiet).as_deref(),
            Some("Received Error. Status code: 400 Bad Request. Message: x")
        );
    }

    #[test]
    fn the_agents_last_line_is_found_among_kernel_output() {
        let serial = "[    0.1] Run /init as init process\nvmsan-agent: starting\r\n[    0.2] random: crng init done\nvmsan-agent: boot failed: open config drive /dev/vdc: No such file or directory\n[    0.3] Kernel panic - not syncing: Attempted to kill init!\n";
        assert_eq!(
            agent_line(serial).as_deref(),
            Some("vmsan-agent: boot failed: open config drive /dev/vdc: No such file or directory")
        );
        assert_eq!(agent_line("no agent here\n"), None);
    }

    #[test]
    fn long_lines_are_cut() {
        let long = format!("vmsan-agent: {}", "x".repeat(1000));
        let got = agent_line(&long).unwrap_or_default();
        assert_eq!(got.chars().count(), MAX_LINE + 1);
        assert!(got.ends_with('…'));
    }
}
