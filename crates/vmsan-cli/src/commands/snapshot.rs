//! `vmsan snapshot create|list|delete|export|import`.

use std::fmt::Write as _;

use serde_json::json;
use vmsan_core::error::Error;
use vmsan_core::snapshot;
use vmsan_core::validate::options::{
    SnapshotCreateOptions, SnapshotDeleteOptions, SnapshotExportOptions, SnapshotImportOptions,
};
use vmsan_core::vm::{self, TakeOptions};

use super::Ctx;
use super::table::{cell, new_table, render};
use crate::output::{Outcome, relative_time};

/// `vmsan snapshot create`.
pub(crate) fn create(ctx: &Ctx, opts: &SnapshotCreateOptions) -> Result<Outcome, Error> {
    let quiet = ctx.out.json;
    let taken = vm::take_snapshot(
        ctx.runtime()?.handle(),
        &ctx.paths,
        &opts.vm,
        TakeOptions {
            resume: opts.resume,
            diff: opts.diff,
        },
        &mut |m| {
            if !quiet {
                ctx.out.note(m);
            }
        },
    )?;
    for w in &taken.warnings {
        ctx.out.note(&format!("warning: {w}"));
    }
    for s in &taken.steps {
        ctx.out.debug(&format!("{}: {:.2} ms", s.name, s.ms));
    }
    let m = &taken.meta;
    let mut text = format!("Snapshot created: {}\n", m.id);
    let _ = writeln!(
        text,
        "  {} snapshot of {}, {} vCPU(s), {} MiB; the VM was paused {:.0} ms{}",
        m.kind.as_str(),
        m.vm_id,
        m.vcpus,
        m.mem_mib,
        taken.paused_ms,
        if opts.resume { "" } else { " and stays paused" }
    );
    let _ = writeln!(text, "  restore it:  vmsan create --snapshot {}", m.id);
    Ok(Outcome::ok(
        json!({
            "snapshotId": m.id,
            "vmId": m.vm_id,
            "kind": m.kind.as_str(),
            "parent": m.parent,
            "snapshotPath": taken.dir.join(snapshot::files::VMSTATE),
            "memPath": taken.dir.join(snapshot::files::MEMORY),
            "diskPath": taken.dir.join(snapshot::files::DISK),
            "resumed": opts.resume,
            "pausedMs": taken.paused_ms,
            "warnings": taken.warnings,
            "timingsMs": taken.steps.iter().map(|s| json!({ "step": s.name, "ms": s.ms })).collect::<Vec<_>>(),
        }),
        text,
    ))
}

/// `vmsan snapshot list`.
pub(crate) fn list(ctx: &Ctx) -> Result<Outcome, Error> {
    let snapshot::Listing {
        snapshots: found,
        unreadable: broken,
    } = snapshot::list(&ctx.paths)?;
    let rows: Vec<_> = found
        .iter()
        .map(|l| {
            let m = &l.meta;
            json!({
                "id": m.id,
                "vmId": m.vm_id,
                "kind": m.kind.as_str(),
                "parent": m.parent,
                "sizeMb": (l.size_bytes as f64 / 1e5).round() / 10.0,
                "sizeBytes": l.size_bytes,
                "createdAt": m.created_at,
                "vcpus": m.vcpus,
                "memMib": m.mem_mib,
                "image": m.image.as_ref().map(|i| i.reference.clone()),
                "firecrackerVersion": m.firecracker_version,
            })
        })
        .collect();
    for (name, why) in &broken {
        ctx.out
            .note(&format!("warning: snapshot {name} is unreadable: {why}"));
    }
    let doc = json!({ "count": rows.len(), "snapshots": rows });
    if found.is_empty() {
        return Ok(Outcome::ok(doc, "No snapshots found.\n"));
    }
    let now = vmsan_core::time::epoch_ms();
    let mut t = new_table(&ctx.out, &["ID", "VM", "KIND", "SIZE", "MEMORY", "CREATED"]);
    for l in &found {
        let m = &l.meta;
        let created = vmsan_core::time::parse_rfc3339(&m.created_at)
            .map_or_else(|| m.created_at.clone(), |t| relative_time(now, t));
        t.add_row(vec![
            cell(&m.id, None),
            cell(&m.vm_id, None),
            cell(m.kind.as_str(), None),
            cell(format!("{:.1} MB", l.size_bytes as f64 / 1e6), None),
            cell(format!("{} MiB", m.mem_mib), None),
            cell(created, None),
        ]);
    }
    Ok(Outcome::ok(doc, render(&t)))
}

/// `vmsan snapshot delete`: every id in turn; exit 1 if any failed.
pub(crate) fn delete(ctx: &Ctx, opts: &SnapshotDeleteOptions) -> Result<Outcome, Error> {
    Ok(super::batch(
        &opts.ids,
        ("snapshotIds", "snapshotId"),
        "delete",
        |id| snapshot::delete(&ctx.paths, id).map(|()| (format!("Deleted {id}"), json!({}))),
    ))
}

/// `vmsan snapshot export`.
pub(crate) fn export(ctx: &Ctx, opts: &SnapshotExportOptions) -> Result<Outcome, Error> {
    if !ctx.out.json {
        ctx.out
            .note(&format!("Exporting {} to {}", opts.id, opts.file.display()));
    }
    let size = snapshot::export(&ctx.paths, &opts.id, &opts.file)?;
    Ok(Outcome::ok(
        json!({ "snapshotId": opts.id, "file": opts.file, "sizeBytes": size }),
        format!(
            "Exported {} to {} ({:.1} MB)\n",
            opts.id,
            opts.file.display(),
            size as f64 / 1e6
        ),
    ))
}

/// `vmsan snapshot import`.
pub(crate) fn import(ctx: &Ctx, opts: &SnapshotImportOptions) -> Result<Outcome, Error> {
    let meta = snapshot::import(&ctx.paths, &opts.file)?;
    Ok(Outcome::ok(
        json!({ "snapshotId": meta.id, "vmId": meta.vm_id, "kind": meta.kind.as_str() }),
        format!(
            "Imported snapshot {}\n  restore it:  vmsan create --snapshot {}\n",
            meta.id, meta.id
        ),
    ))
}
