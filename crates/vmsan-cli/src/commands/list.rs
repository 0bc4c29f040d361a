//! `vmsan list`.

use comfy_table::Color;
use vmsan_core::error::Error;
use vmsan_core::report;
use vmsan_core::state::{ListEntry, StateStore, VmState, VmStatus};
use vmsan_core::time::{epoch_ms, parse_rfc3339};

use super::Ctx;
use super::table::{cell, new_table, render};
use crate::output::{Outcome, relative_time};

/// The colour of a status in tables.
pub(crate) fn status_color(s: VmStatus) -> Color {
    match s {
        VmStatus::Running => Color::Cyan,
        VmStatus::Paused => Color::Yellow,
        VmStatus::Creating => Color::Magenta,
        VmStatus::Stopped => Color::DarkGrey,
        VmStatus::Error => Color::Red,
    }
}

/// The image column: the OCI reference, else the runtime.
pub(crate) fn image_of(vm: &VmState) -> String {
    match &vm.image {
        Some(i) if !i.reference.is_empty() => i.reference.clone(),
        _ => vm.runtime.to_string(),
    }
}

/// Typed values (CIDRs, domains) as the text they are shown with.
pub(crate) fn texts<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

/// `createdAt` as "5 minutes ago" (or the raw text when it does not parse).
pub(crate) fn created_text(vm: &VmState, now: u64) -> String {
    parse_rfc3339(&vm.created_at).map_or_else(|| vm.created_at.clone(), |t| relative_time(now, t))
}

/// `timeoutAt` as "in 5 minutes", "expired" or "-".
pub(crate) fn timeout_text(vm: &VmState, now: u64) -> String {
    match vm.timeout_at.as_deref().and_then(parse_rfc3339) {
        None => "-".to_owned(),
        Some(t) if t <= now => "expired".to_owned(),
        Some(t) => relative_time(now, t),
    }
}

/// `vmsan list`.
pub(crate) fn run(ctx: &Ctx) -> Result<Outcome, Error> {
    let store = StateStore::open(&ctx.paths)?;
    let entries = store.list()?;
    let now = epoch_ms();

    let doc = report::list_json(&entries);

    if ctx.out.json {
        return Ok(Outcome::ok(doc, Vec::new()));
    }
    if entries.is_empty() {
        return Ok(Outcome::ok(doc, "No VMs found.\n"));
    }
    let mut t = new_table(
        &ctx.out,
        &[
            "ID", "STATUS", "CREATED", "MEMORY", "VCPUS", "IMAGE", "IP", "TIMEOUT", "SNAPSHOT",
        ],
    );
    for e in &entries {
        match e {
            ListEntry::Vm(vm) => {
                t.add_row(vec![
                    cell(&vm.id, None),
                    cell(vm.status.as_str(), Some(status_color(vm.status))),
                    cell(created_text(vm, now), None),
                    cell(format!("{} MiB", vm.mem_size_mib), None),
                    cell(vm.vcpu_count, None),
                    cell(image_of(vm), None),
                    cell(
                        vm.network
                            .guest_ip
                            .map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
                        None,
                    ),
                    cell(timeout_text(vm, now), None),
                    cell(vm.snapshot.as_ref().map_or("-", |s| s.as_str()), None),
                ]);
            }
            ListEntry::Corrupt { id, path, error } => {
                t.add_row(vec![
                    cell(id, None),
                    cell("corrupt", Some(Color::Red)),
                    cell("-", None),
                    cell("-", None),
                    cell("-", None),
                    cell("-", None),
                    cell("-", None),
                    cell("-", None),
                    cell("-", None),
                ]);
                ctx.out.note(&format!(
                    "warning: {id}: unreadable state {}: {error}",
                    path.display()
                ));
            }
        }
    }
    Ok(Outcome::ok(doc, render(&t)))
}
