//! The `vmsan` command line. The binary is a thin `main` around [`run`], which takes a line
//! through four steps:
//!
//! 1. **parse** ([`args`], clap): syntax only. Unknown flags, missing values and missing
//!    arguments become `ERR_VALIDATION_ARGS`, in `--json` mode too.
//! 2. **validate** ([`convert`], calling `vmsan_core::validate`): every value and every rule
//!    between flags, into the typed options of `vmsan_core::validate::options`; each failure
//!    has its own `ERR_VALIDATION_*` code and a `flag` detail.
//! 3. **root check** ([`privilege`]), on the parsed command, after validation: a typo is
//!    reported before the user is asked for sudo.
//! 4. **run** ([`commands`]): one dispatch arm per command, printing through [`output`]: in
//!    `--json` mode exactly one document on stdout, whatever happens.
//!
//! Diagnostics of the libraries go to stderr through [`logging`]. The tests of the accepted
//! forms of every flag are in [`convert`]; the rejected forms, through the real binary, in
//! `tests/cli.rs`.

pub mod args;
pub mod commands;
pub mod convert;
pub mod escape;
pub mod logging;
pub mod output;
pub mod privilege;
pub mod progress;

use std::ffi::OsString;

use clap::Parser;
use clap::error::ErrorKind;
use serde_json::json;
use vmsan_core::error::{Error, ErrorCode};
use vmsan_core::paths::Paths;
use vmsan_core::vm::SupervisorCommand;

use crate::args::Cli;
use crate::commands::Ctx;
use crate::output::{Outcome, Output, exit};

/// Whether `--json` appears before any `--` (used only when clap cannot parse the line, so
/// that usage errors honour `--json` too).
fn json_requested(argv: &[OsString]) -> bool {
    argv.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// Map a clap error to our catalogue (`ERR_VALIDATION_ARGS`), or print help/version.
fn clap_error(e: &clap::Error, json: bool) -> i32 {
    let out = Output::new(json, false);
    let rendered = e.render().to_string();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let doc = if e.kind() == ErrorKind::DisplayHelp {
                json!({ "help": rendered })
            } else {
                json!({ "name": "vmsan", "version": env!("CARGO_PKG_VERSION") })
            };
            return Outcome::ok(doc, rendered).emit(&out);
        }
        _ => {}
    }
    let message = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        "A command is required".to_owned()
    } else {
        // The first paragraph of clap's message, on one line.
        let para: Vec<&str> = rendered
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect();
        let joined = para.join(" ");
        joined.strip_prefix("error: ").unwrap_or(&joined).to_owned()
    };
    let tips: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("tip:"))
        .collect();
    let usage = rendered
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .map(str::to_owned);
    let mut err = Error::new(ErrorCode::ValidationArgs, message);
    if !tips.is_empty() {
        err = err.why(tips.join(" "));
    } else if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        err = err.why("This command groups subcommands; name one.");
    }
    if let Some(u) = usage {
        let cmd: Vec<&str> = u
            .split_whitespace()
            .take_while(|w| !w.starts_with(['[', '<', '-']))
            .collect();
        err = err
            .fix(format!("Usage: {u}\nSee `{} --help`.", cmd.join(" ")))
            .detail("usage", u);
    }
    out.error(&err);
    err.exit_code()
}

/// The hidden subcommand that runs a VM's supervisor: `vmsan __supervise <vm-id>`. It is
/// internal, so it is not part of the parsed command surface.
pub const SUPERVISE_ARG: &str = "__supervise";

/// How the engine starts a supervisor from this binary: itself, with [`SUPERVISE_ARG`].
pub fn supervisor_command() -> SupervisorCommand {
    SupervisorCommand {
        // The kernel's link to this process's executable is what `current_exe` reads; if
        // reading it fails here, exec'ing it still runs the same binary.
        program: std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into()),
        args: vec![SUPERVISE_ARG.into()],
    }
}

/// Run `vmsan` with these arguments (the first is the program name) and return the exit code.
/// `supervisor` is how VMs' supervisors are started (see [`supervisor_command`]).
pub fn run(argv: Vec<OsString>, supervisor: SupervisorCommand) -> i32 {
    // `vmsan __supervise <vm>`: the per-VM supervisor that `create` and `start` spawn.
    if argv.get(1).is_some_and(|a| a == SUPERVISE_ARG) {
        return supervise(&argv);
    }
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => return clap_error(&e, json_requested(&argv)),
    };
    let out = Output::new(cli.json, cli.verbose);
    logging::init(&out);
    let ctx = Ctx {
        out,
        paths: Paths::from_env(),
        supervisor,
        runtime: std::sync::OnceLock::new(),
    };
    // Validation first (it is pure and cheap, and tells a user about a typo before asking
    // for sudo), then the root check, then the command.
    let gate = privilege::gate(&cli.command);
    let env = convert::Env {
        json: cli.json,
        cwd: std::env::current_dir().ok(),
        dash_dash: argv.iter().any(|a| a == "--"),
    };
    let result = convert::convert(cli.command, &env).and_then(|action| {
        privilege::require_root(gate, &argv, privilege::is_root())?;
        out.debug(&format!(
            "action: {}",
            serde_json::to_string(&action).unwrap_or_default()
        ));
        commands::dispatch(&ctx, action)
    });
    ctx.finish();
    match result {
        Ok(outcome) => outcome.emit(&out),
        Err(e) => {
            out.error(&e);
            e.exit_code()
        }
    }
}

fn supervise(argv: &[OsString]) -> i32 {
    let id = argv
        .get(2)
        .and_then(|a| a.to_str())
        .map(vmsan_core::VmId::parse);
    match id {
        Some(Ok(id)) => vmsan_core::vm::supervise(&Paths::from_env(), &id),
        _ => {
            eprintln!("usage: vmsan __supervise <vm-id> (internal)");
            2
        }
    }
}

/// Exit code for success, re-exported for the binary.
pub const EXIT_OK: i32 = exit::OK;
