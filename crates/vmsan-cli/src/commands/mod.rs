//! One dispatch function per command; [`crate::convert`] has validated everything before.

mod doctor;
mod guest;
mod images;
mod info;
mod inspect;
mod list;
mod logs;
mod snapshot;
pub mod table;
mod vm;

use serde_json::Value;
use vmsan_core::error::Error;
use vmsan_core::paths::Paths;
use vmsan_core::vm::SupervisorCommand;

use crate::convert::Action;
use crate::output::{Outcome, Output};

pub use doctor::render_doctor;

/// What every command gets.
#[derive(Debug)]
pub struct Ctx {
    /// How to print.
    pub out: Output,
    /// Where vmsan's files are.
    pub paths: Paths,
    /// How the engine starts a VM's supervisor: this binary, routed by [`crate::SUPERVISE_ARG`].
    pub supervisor: SupervisorCommand,
    /// The command's one tokio runtime, built the first time async work needs it (most
    /// commands have none, and `list` should not pay for threads).
    pub runtime: std::sync::OnceLock<tokio::runtime::Runtime>,
}

impl Ctx {
    /// The command's runtime (built on first use).
    pub(crate) fn runtime(&self) -> Result<&tokio::runtime::Runtime, Error> {
        if let Some(rt) = self.runtime.get() {
            return Ok(rt);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::io("start a runtime", e))?;
        Ok(self.runtime.get_or_init(|| rt))
    }

    /// End the runtime without waiting for its blocking threads: tokio reads stdin on one
    /// (`exec`, `connect`), which may sit in `read` forever once the session is over.
    pub fn finish(self) {
        if let Some(rt) = self.runtime.into_inner() {
            rt.shutdown_background();
        }
    }
}

/// Run one validated action.
pub fn dispatch(ctx: &Ctx, action: Action) -> Result<Outcome, Error> {
    match action {
        Action::List => list::run(ctx),
        Action::Inspect(vm) => inspect::run(ctx, &vm),
        Action::Logs(opts) => logs::run(ctx, &opts),
        Action::Doctor => doctor::run(ctx),
        Action::Completion(shell) => info::completion(ctx, shell),
        Action::Version => Ok(info::version()),
        Action::Create(opts) => vm::create(ctx, &opts),
        Action::Start(opts) => vm::start(ctx, &opts.vm),
        Action::Stop(opts) => vm::stop(ctx, &opts),
        Action::Remove(opts) => vm::remove(ctx, &opts),
        Action::Exec(opts) => guest::exec(ctx, &opts),
        Action::Connect(opts) => guest::connect_to(ctx, &opts.vm, opts.session.as_deref()),
        Action::Upload(opts) => guest::upload(ctx, &opts),
        Action::Download(opts) => guest::download(ctx, &opts),
        Action::Network(opts) => vm::network(ctx, &opts),
        Action::Setup(opts) => images::setup(ctx, &opts),
        Action::ImageList => images::list(ctx),
        Action::ImagePull(opts) => images::pull(ctx, &opts),
        Action::ImageImport(opts) => images::import(ctx, &opts),
        Action::ImageRemove(opts) => images::remove(ctx, &opts),
        Action::ImagePrune(opts) => images::prune(ctx, &opts),
        Action::SnapshotCreate(opts) => snapshot::create(ctx, &opts),
        Action::SnapshotList => snapshot::list(ctx),
        Action::SnapshotDelete(opts) => snapshot::delete(ctx, &opts),
        Action::SnapshotExport(opts) => snapshot::export(ctx, &opts),
        Action::SnapshotImport(opts) => snapshot::import(ctx, &opts),
    }
}

/// Run `op` on each id in turn (one failure does not stop the others), printing a line per id;
/// the document lists them under `keys.0` and every result with its id under `keys.1`, and the
/// exit code is 1 if any failed.
pub(crate) fn batch<I: serde::Serialize + std::fmt::Display>(
    ids: &[I],
    keys: (&str, &str),
    verb: &str,
    op: impl Fn(&I) -> Result<(String, Value), Error>,
) -> Outcome {
    use std::fmt::Write as _;
    let (list_key, id_key) = keys;
    let mut results = Vec::new();
    let mut text = String::new();
    let mut any_failed = false;
    for id in ids {
        let mut result = serde_json::json!({ id_key: id, "success": true });
        match op(id) {
            Ok((line, extra)) => {
                let _ = writeln!(text, "{line}");
                if let (Some(r), Some(e)) = (result.as_object_mut(), extra.as_object()) {
                    r.extend(e.clone());
                }
            }
            Err(e) => {
                let _ = writeln!(text, "Failed to {verb} {id}: {}", e.message());
                result = serde_json::json!({ id_key: id, "success": false, "error": e.to_json() });
                any_failed = true;
            }
        }
        results.push(result);
    }
    let mut o = Outcome::ok(
        serde_json::json!({ list_key: ids, "results": results }),
        text,
    );
    if any_failed {
        o.exit_code = 1;
    }
    o
}
