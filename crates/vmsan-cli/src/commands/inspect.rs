//! `vmsan inspect <vm>`.

use std::fmt::Write as _;

use vmsan_core::VmId;
use vmsan_core::error::Error;
use vmsan_core::report;
use vmsan_core::state::{StateStore, ip_text};
use vmsan_core::time::epoch_ms;

use super::Ctx;
use super::list::{created_text, image_of, texts, timeout_text};
use crate::output::{Outcome, Style};

/// `vmsan inspect <vm>`: `{"vm": <state without the agent token>}` in `--json` mode; a
/// readable summary otherwise.
pub(crate) fn run(ctx: &Ctx, id: &VmId) -> Result<Outcome, Error> {
    let store = StateStore::open(&ctx.paths)?;
    let vm = store.get(id)?;
    let doc = report::inspect_json(&vm);
    if ctx.out.json {
        return Ok(Outcome::ok(doc, Vec::new()));
    }
    let now = epoch_ms();
    let out = &ctx.out;
    let mut s = String::new();
    let dash = |v: &str| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.to_owned()
        }
    };
    let mut row = |k: &str, v: String| {
        // Values may come from an imported snapshot (the image reference): escaped.
        let v = crate::escape::escape_text(&v);
        let _ = writeln!(s, "  {}{v}", out.paint(Style::Dim, &format!("{k:<16}")));
    };
    let header = format!("VM {}", vm.id);
    let mut text = format!("{}\n", out.paint(Style::Bold, &header));
    row("Status", vm.status.as_str().to_owned());
    if let Some(e) = &vm.error {
        row("Error", e.clone());
    }
    row(
        "Created",
        format!("{} ({})", vm.created_at, created_text(&vm, now)),
    );
    row("Project", dash(&vm.project));
    row("Image", image_of(&vm));
    row("vCPUs", vm.vcpu_count.to_string());
    row("Memory", format!("{} MiB", vm.mem_size_mib));
    row("Disk", format!("{} GiB", vm.disk_size_gb));
    row("Timeout", timeout_text(&vm, now));
    row("PID", vm.pid.map_or("-".to_owned(), |p| p.to_string()));
    row(
        "Snapshot",
        vm.snapshot
            .as_ref()
            .map_or("-".to_owned(), ToString::to_string),
    );
    let n = &vm.network;
    row("Guest IP", dash(&ip_text(n.guest_ip)));
    row("Host IP", dash(&ip_text(n.host_ip)));
    row("MAC", dash(&n.mac_address));
    row("Policy", dash(n.network_policy.as_str()));
    row(
        "LAN",
        if n.allow_lan {
            "reachable (--allow-lan)".to_owned()
        } else {
            "blocked".to_owned()
        },
    );
    if !n.allowed_domains.is_empty() {
        row("Domains", texts(&n.allowed_domains).join(", "));
    }
    if !n.allowed_cidrs.is_empty() {
        row("Allowed CIDRs", texts(&n.allowed_cidrs).join(", "));
    }
    if !n.denied_cidrs.is_empty() {
        row("Denied CIDRs", texts(&n.denied_cidrs).join(", "));
    }
    if !n.published_ports.is_empty() {
        let ports: Vec<String> = n
            .published_ports
            .iter()
            .map(|p| format!("{}:{}/{}", p.host_port, p.guest_port, p.protocol))
            .collect();
        row("Ports", ports.join(", "));
    }
    let iso = vm.isolation;
    let off: Vec<&str> = [
        (iso.seccomp, "seccomp"),
        (iso.pid_ns, "pid-ns"),
        (iso.cgroup, "cgroup"),
        (iso.netns, "netns"),
        (iso.jailer, "jailer"),
    ]
    .iter()
    .filter(|(on, _)| !on)
    .map(|(_, n)| *n)
    .collect();
    row(
        "Isolation",
        if off.is_empty() {
            "full".to_owned()
        } else {
            format!("without {}", off.join(", "))
        },
    );
    text.push_str(&s);
    Ok(Outcome::ok(doc, text))
}
