//! `vmsan create`, `start`, `stop`, `remove`: the VM lifecycle.

use std::fmt::Write as _;

use serde_json::{Value, json};
use vmsan_core::VmId;
use vmsan_core::error::{Error, ErrorCode};
use vmsan_core::state::{StateStore, VmState, ip_text};
use vmsan_core::validate::options::{RemoveOptions, StopOptions};
use vmsan_core::vm::{self, StopOutcome};

use super::Ctx;
use super::list::texts;
use crate::convert::CreateCommand;
use crate::output::{Outcome, Style};

fn summary_json(st: &VmState) -> Value {
    json!({
        "vmId": st.id,
        "status": st.status,
        "vcpus": st.vcpu_count,
        "memMib": st.mem_size_mib,
        "diskSizeGb": st.disk_size_gb,
        "runtime": st.runtime,
        "image": st.image.as_ref().map(|i| i.reference.clone()),
        "networkPolicy": st.network.network_policy,
        "guestIp": ip_text(st.network.guest_ip),
        "pid": st.pid,
        "kernel": st.kernel,
        "rootfs": st.rootfs,
        "timeoutAt": st.timeout_at,
    })
}

fn summary_text(ctx: &Ctx, st: &VmState) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}",
        ctx.out
            .paint(Style::Bold, &format!("VM {} is running", st.id))
    );
    let _ = writeln!(
        s,
        "  vCPUs {}, memory {} MiB, disk {} GiB",
        st.vcpu_count, st.mem_size_mib, st.disk_size_gb
    );
    let _ = writeln!(
        s,
        "  guest {} via {}, policy {}",
        ip_text(st.network.guest_ip),
        ip_text(st.network.host_ip),
        st.network.network_policy
    );
    if let Some(t) = &st.timeout_at {
        let _ = writeln!(s, "  stops at {t}");
    }
    let _ = writeln!(s, "  exec into it:  vmsan exec {} <command>", st.id);
    s
}

/// `vmsan create`: the engine makes the VMs; this prints them, or opens the shell.
pub(crate) fn create(ctx: &Ctx, cmd: &CreateCommand) -> Result<Outcome, Error> {
    let out = ctx.out;
    let quiet = out.json || cmd.silent;
    let bars = crate::progress::image_progress(quiet);
    let progress: vm::ProgressSink = std::sync::Arc::new(move |p| match p {
        vm::Progress::Step(m) if !quiet => out.note(m),
        vm::Progress::Image(p) => {
            if let Some(f) = &bars {
                f(p);
            }
        }
        vm::Progress::Step(_) => {}
    });
    let creation = vm::create_vms(
        &ctx.supervisor,
        ctx.runtime()?.handle(),
        &ctx.paths,
        &cmd.request,
        &progress,
    )?;
    let created = &creation.vms;
    for c in created {
        for s in &c.steps {
            let alongside = if s.parallel { " (in parallel)" } else { "" };
            ctx.out.debug(&format!(
                "{}: {} took {:.2} ms{alongside}",
                c.state.id, s.name, s.ms
            ));
        }
    }
    if cmd.connect
        && let Some(c) = created.first()
    {
        let outcome = super::guest::connect_to(ctx, &c.state.id, None);
        // Leaving the shell does not stop the VM (unlike `docker run --rm -it`): say so.
        ctx.out.note(&format!(
            "{id} is still running. Reconnect: `vmsan connect {id}`; stop it: `sudo vmsan stop \
             {id}`; remove it: `sudo vmsan remove -f {id}`.",
            id = c.state.id
        ));
        return outcome;
    }
    let warnings = &creation.warnings;
    if !quiet {
        for w in warnings {
            out.note(&format!("WARNING: {w}"));
        }
    }
    let text: String = if cmd.silent {
        String::new()
    } else {
        created
            .iter()
            .map(|c| summary_text(ctx, &c.state))
            .collect()
    };
    let with_timings = |c: &vm::Created| {
        let mut doc = summary_json(&c.state);
        doc["timingsMs"] = c
            .steps
            .iter()
            .map(|s| {
                let mut step = json!({ "step": s.name, "ms": s.ms });
                if s.parallel {
                    // It overlapped other steps: not part of the sum.
                    step["parallel"] = json!(true);
                }
                step
            })
            .collect();
        doc
    };
    let mut doc = if created.len() == 1 {
        with_timings(&created[0])
    } else {
        json!({ "vms": created.iter().map(with_timings).collect::<Vec<_>>() })
    };
    if !warnings.is_empty() {
        doc["warnings"] = json!(warnings);
    }
    Ok(Outcome::ok(doc, text))
}

/// `vmsan start`.
pub(crate) fn start(ctx: &Ctx, id: &VmId) -> Result<Outcome, Error> {
    let st = vm::start(&ctx.supervisor, &ctx.paths, id)?;
    let text = summary_text(ctx, &st);
    Ok(Outcome::ok(
        json!({ "vmId": st.id, "pid": st.pid, "guestIp": ip_text(st.network.guest_ip), "networking": st.network.network_policy }),
        text,
    ))
}

/// Check every id exists before acting on any: all or nothing, so a mistyped id changes no VM.
fn all_exist(ctx: &Ctx, ids: &[VmId]) -> Result<(), Error> {
    let store = StateStore::open(&ctx.paths)?;
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| matches!(store.get_recorded(id), Err(e) if e.code() == ErrorCode::VmNotFound))
        .map(ToString::to_string)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::VmNotFound,
            format!("VM(s) not found: {}", missing.join(", ")),
        )
        .detail("vmIds", missing))
    }
}

/// `vmsan stop`.
pub(crate) fn stop(ctx: &Ctx, opts: &StopOptions) -> Result<Outcome, Error> {
    all_exist(ctx, &opts.vms)?;
    Ok(super::batch(&opts.vms, ("vmIds", "vmId"), "stop", |id| {
        vm::stop(ctx.runtime()?.handle(), &ctx.paths, id).map(|o| match o {
            StopOutcome::Stopped => (format!("Stopped {id}"), json!({})),
            StopOutcome::AlreadyStopped => (
                format!("{id} is already stopped"),
                json!({ "alreadyStopped": true }),
            ),
        })
    }))
}

/// `vmsan remove`.
pub(crate) fn remove(ctx: &Ctx, opts: &RemoveOptions) -> Result<Outcome, Error> {
    all_exist(ctx, &opts.vms)?;
    if !opts.force {
        let store = StateStore::open(&ctx.paths)?;
        let busy: Vec<String> = opts
            .vms
            .iter()
            .filter_map(|id| store.get(id).ok())
            .filter(vm::is_active)
            .map(|st| st.id.to_string())
            .collect();
        if !busy.is_empty() {
            return Err(Error::new(
                ErrorCode::VmNotStopped,
                format!("Cannot remove running VM(s): {}", busy.join(", ")),
            )
            .fix("Stop them first with `vmsan stop`, or use --force (-f).")
            .detail("vmIds", busy));
        }
    }
    Ok(super::batch(&opts.vms, ("vmIds", "vmId"), "remove", |id| {
        vm::remove(ctx.runtime()?.handle(), &ctx.paths, id, opts.force)
            .map(|()| (format!("Removed {id}"), json!({})))
    }))
}

/// `vmsan network`: change a running VM's egress policy atomically.
pub(crate) fn network(
    ctx: &Ctx,
    opts: &vmsan_core::validate::options::NetworkOptions,
) -> Result<Outcome, Error> {
    let change = vm::set_policy(&ctx.paths, &opts.vm, &opts.rules)?;
    let n = &change.network;
    let mut text = format!(
        "Network policy updated for {}: {} → {}\n",
        opts.vm, change.previous, n.network_policy
    );
    for (label, items) in [
        ("Domains", texts(&n.allowed_domains)),
        ("Allowed CIDRs", texts(&n.allowed_cidrs)),
        ("Denied CIDRs", texts(&n.denied_cidrs)),
    ] {
        if !items.is_empty() {
            let _ = writeln!(text, "  {label}: {}", items.join(", "));
        }
    }
    Ok(Outcome::ok(
        json!({
            "vmId": opts.vm,
            "previousPolicy": change.previous,
            "newPolicy": n.network_policy,
            "domains": n.allowed_domains,
            "allowedCidrs": n.allowed_cidrs,
            "deniedCidrs": n.denied_cidrs,
            "allowUdp": n.allow_udp,
            "allowLan": n.allow_lan,
        }),
        text,
    ))
}
