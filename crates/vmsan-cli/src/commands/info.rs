//! `version` and `completion`.

use clap::CommandFactory;
use clap_complete::Shell;
use serde_json::json;
use vmsan_core::error::Error;

use super::Ctx;
use crate::args::Cli;
use crate::output::Outcome;

/// `vmsan version`.
pub(crate) fn version() -> Outcome {
    let v = env!("CARGO_PKG_VERSION");
    Outcome::ok(
        json!({ "name": "vmsan", "version": v }),
        format!("vmsan {v}\n"),
    )
}

/// `vmsan completion <shell>`: the script on stdout (inside the document in `--json` mode).
pub(crate) fn completion(_ctx: &Ctx, shell: Shell) -> Result<Outcome, Error> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "vmsan", &mut buf);
    let script = String::from_utf8_lossy(&buf).into_owned();
    Ok(Outcome::ok(
        json!({ "shell": shell.to_string(), "script": script }),
        buf,
    ))
}
