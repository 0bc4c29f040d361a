//! One dispatch function per command. Commands whose capability belongs to another piece of
//! work validate everything (in [`crate::convert`]) and then fail with `ERR_NOT_IMPLEMENTED`;
//! wiring one in means replacing its arm in [`dispatch`] with a call into `vmsan_core`.

mod doctor;
mod guest;
mod images;
mod info;
mod inspect;
mod list;
mod logs;
pub mod table;
mod vm;

use serde_json::Value;
use vmsan_core::error::Error;
use vmsan_core::paths::Paths;

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
}

/// A tokio runtime for one command's async work.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("start a runtime", e))
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
        other => Err(not_implemented(&other)),
    }
}

/// `ERR_NOT_IMPLEMENTED`, carrying the validated options so callers (and tests) can see
/// exactly what would have run.
fn not_implemented(action: &Action) -> Error {
    let doc = serde_json::to_value(action).unwrap_or(Value::Null);
    let name = doc
        .get("command")
        .and_then(Value::as_str)
        .unwrap_or("this command")
        .to_owned();
    let what = match name.as_str() {
        "create" | "start" | "stop" | "remove" => "VM lifecycle",
        "exec" | "connect" | "upload" | "download" => "Guest agent access",
        "network" => "Network policy changes",
        "snapshotCreate" | "snapshotList" | "snapshotDelete" => "Snapshots",
        "setup" => "Setup",
        _ => "Image management",
    };
    let mut err = Error::not_implemented(&format!("{what} (`vmsan {}`)", human_name(&name)))
        .detail("command", name);
    if let Some(opts) = doc.get("options") {
        err = err.detail("options", opts.clone());
    }
    err
}

fn human_name(camel: &str) -> String {
    let mut s = String::new();
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            s.push(' ');
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s.replace("image list", "image ls")
        .replace("image remove", "image rm")
}
