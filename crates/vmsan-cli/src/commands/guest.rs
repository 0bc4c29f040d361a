//! Commands that talk to a VM's guest agent: `exec`, `connect`, `upload`, `download`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;
use vmsan_agent_client::AgentClient;
use vmsan_agent_client::terminal::{InteractiveOptions, InteractiveOutcome, run_interactive};
use vmsan_core::VmId;
use vmsan_core::error::{Error, ErrorCode};
use vmsan_core::validate::options::{DownloadOptions, ExecOptions, ExecUser, UploadOptions};
use vmsan_core::vm;
use vmsan_proto::{ExecRequest, PtyOpenRequest};

use super::Ctx;
use crate::output::Outcome;

/// The exit code of a command the agent killed for running past `--timeout`.
const EXIT_TIMEOUT: i32 = 124;
/// The exit code after Ctrl-C.
const EXIT_INTERRUPTED: i32 = 130;

/// Run `fut` to completion on the command's runtime (which [`Ctx::finish`] ends without
/// waiting for the thread that reads stdin).
fn block_on<F: std::future::Future>(ctx: &Ctx, fut: F) -> Result<F::Output, Error> {
    Ok(ctx.runtime()?.block_on(fut))
}

fn user_of(u: &ExecUser) -> Option<String> {
    match u {
        ExecUser::Default => None,
        ExecUser::Root => Some("root".into()),
        ExecUser::Named(n) => Some(n.clone()),
    }
}

/// `vmsan exec`.
pub(crate) fn exec(ctx: &Ctx, opts: &ExecOptions) -> Result<Outcome, Error> {
    let client = vm::agent(&ctx.paths, &opts.vm)?;
    let rt = ctx.runtime()?;
    let env = opts
        .env
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    if opts.interactive {
        if !std::io::stdin().is_terminal() {
            return Err(Error::new(
                ErrorCode::ValidationFlags,
                "--interactive requires a terminal (TTY)",
            )
            .why(
                "standard input is not a terminal, so there is no terminal to share with the guest",
            )
            .fix(
                "Run it from a terminal, or drop -i to run the command without a PTY (its \
                 standard input is then passed through: `echo hi | vmsan exec VM cat`).",
            ));
        }
        let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
        let req = PtyOpenRequest {
            argv: opts.command.clone(),
            env,
            cwd: opts.workdir.clone(),
            user: user_of(&opts.user),
            cols,
            rows,
        };
        // The VM is not stopped for its --timeout while this session is attached.
        let hold = if opts.extend_timeout {
            vmsan_core::vm::TimeoutHold::acquire(&ctx.paths, &opts.vm)
                .map_err(|e| {
                    ctx.out.note(&format!(
                        "The VM's --timeout is not extended for this session: {}",
                        e.message()
                    ));
                })
                .ok()
                .flatten()
        } else {
            None
        };
        let outcome = block_on(ctx, interactive(&client, &opts.vm, req, None))?;
        if let Some(hold) = hold
            && let Err(e) = hold.release()
        {
            ctx.out.note(&format!(
                "Could not end this session's hold on the VM's --timeout: {}",
                e.message()
            ));
        }
        return outcome;
    }
    let req = ExecRequest {
        argv: opts.command.clone(),
        env,
        cwd: opts.workdir.clone(),
        user: user_of(&opts.user),
        timeout_ms: opts
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        detached: false,
        stdin: false,
    };
    let started = Instant::now();
    if ctx.out.json {
        // One JSON document: the command's output goes into it, never beside it.
        let out = rt.block_on(async {
            tokio::select! {
                r = client.exec_collect(req) => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            }
        });
        let Some(out) = out else {
            return Err(Error::new(
                ErrorCode::Interrupted,
                "Interrupted; the command's process group was killed",
            ));
        };
        let out = out.map_err(|e| vm::agent_error(&opts.vm, e))?;
        let code = if out.status.timed_out {
            EXIT_TIMEOUT
        } else {
            out.status.code
        };
        let mut doc = json!({
            "vmId": opts.vm,
            "command": opts.command,
            "exitCode": out.status.code,
            "timedOut": out.status.timed_out,
            "signal": out.status.signal,
            "stdout": String::from_utf8_lossy(&out.stdout),
            "stderr": String::from_utf8_lossy(&out.stderr),
            "durationMs": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        // Output that is not UTF-8 is also given byte-exact, as hex.
        for (k, bytes) in [("stdoutHex", &out.stdout), ("stderrHex", &out.stderr)] {
            if std::str::from_utf8(bytes).is_err() {
                doc[k] = json!(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
            }
        }
        let mut o = Outcome::ok(doc, Vec::new());
        o.exit_code = code;
        return Ok(o);
    }
    // Human mode: stream to our own stdout and stderr; pipe our stdin through when it is not
    // a terminal (`echo hi | vmsan exec vm cat`).
    let result = block_on(ctx, async {
        let mut stdout = tokio::io::stdout();
        let mut stderr = tokio::io::stderr();
        let stdin = (!std::io::stdin().is_terminal()).then(tokio::io::stdin);
        tokio::select! {
            r = client.exec(req, stdin, &mut stdout, &mut stderr) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    })?;
    match result {
        None => {
            let mut o = Outcome::ok(json!({}), Vec::new());
            o.exit_code = EXIT_INTERRUPTED;
            Ok(o)
        }
        Some(Err(e)) => Err(vm::agent_error(&opts.vm, e)),
        Some(Ok(done)) => {
            if done.status.timed_out {
                ctx.out
                    .note("Command timed out; its process group was killed.");
            }
            let mut o = Outcome::ok(json!({}), Vec::new());
            o.exit_code = if done.status.timed_out {
                EXIT_TIMEOUT
            } else {
                done.status.code
            };
            Ok(o)
        }
    }
}

async fn interactive(
    client: &AgentClient,
    id: &VmId,
    req: PtyOpenRequest,
    attach: Option<&str>,
) -> Result<Outcome, Error> {
    let session = match attach {
        Some(s) => client.pty_attach(s).await,
        None => client.pty_open_attach(&req).await,
    }
    .map_err(|e| vm::agent_error(id, e))?;
    let outcome = run_interactive(
        session,
        tokio::io::stdin(),
        tokio::io::stdout(),
        InteractiveOptions::default(),
    )
    .await
    .map_err(|e| vm::agent_error(id, e))?;
    match outcome {
        InteractiveOutcome::Exited(status) => {
            let mut o = Outcome::ok(json!({ "vmId": id, "exitCode": status.code }), Vec::new());
            o.exit_code = status.code;
            Ok(o)
        }
        InteractiveOutcome::Detached { session } => Ok(Outcome::ok(
            json!({ "vmId": id, "session": session, "detached": true }),
            format!(
                "\r\nDetached. Resume this session with: vmsan connect {id} --session {session}\n"
            ),
        )),
        InteractiveOutcome::Disconnected => Err(Error::new(
            ErrorCode::AgentRequest,
            format!("{id}: the connection to the shell was lost"),
        )),
    }
}

/// `vmsan connect` (and `create --connect`): a shell, or re-attach to a session.
pub(crate) fn connect_to(ctx: &Ctx, id: &VmId, session: Option<&str>) -> Result<Outcome, Error> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::new(
            ErrorCode::ValidationFlags,
            "connect requires a terminal (TTY)",
        )
        .why("standard input is not a terminal, so there is no terminal to share with the guest")
        .fix("Run it from a terminal, or use `vmsan exec VM COMMAND` from scripts."));
    }
    let client = vm::agent(&ctx.paths, id)?;
    let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
    let req = PtyOpenRequest {
        argv: Vec::new(),
        env: Default::default(),
        cwd: None,
        user: None,
        cols,
        rows,
    };
    block_on(ctx, interactive(&client, id, req, session))?
}

/// `vmsan upload`.
pub(crate) fn upload(ctx: &Ctx, opts: &UploadOptions) -> Result<Outcome, Error> {
    let mut client = vm::agent(&ctx.paths, &opts.vm)?;
    if let Some(t) = opts.timeout {
        client = client.with_idle_timeout(t);
    }
    let r = ctx
        .runtime()?
        .block_on(client.upload(
            &opts.files,
            &opts.dest,
            crate::progress::transfer_progress(ctx.out.json, "upload"),
        ))
        .map_err(|e| vm::agent_error(&opts.vm, e))?;
    // `entries` counts what was written (files, directories, links), not the arguments.
    let what = match opts.files.as_slice() {
        [one] => one.display().to_string(),
        many => format!("{} paths", many.len()),
    };
    let text = format!(
        "Uploaded {what} to {}: {} entr{} (files, directories and links), {} bytes\n",
        opts.dest,
        r.entries,
        if r.entries == 1 { "y" } else { "ies" },
        r.bytes
    );
    Ok(Outcome::ok(
        json!({ "vmId": opts.vm, "files": opts.files, "dest": opts.dest, "entries": r.entries, "bytes": r.bytes }),
        text,
    ))
}

/// `vmsan download`.
pub(crate) fn download(ctx: &Ctx, opts: &DownloadOptions) -> Result<Outcome, Error> {
    let mut client = vm::agent(&ctx.paths, &opts.vm)?;
    if let Some(t) = opts.timeout {
        client = client.with_idle_timeout(t);
    }
    let base = std::path::Path::new(&opts.remote_path)
        .file_name()
        .map(PathBuf::from)
        .ok_or_else(|| {
            Error::new(
                ErrorCode::ValidationPath,
                "The remote path has no file name",
            )
        })?;
    let local = match &opts.dest {
        None => std::env::current_dir()
            .map_err(|e| Error::io("current directory", e))?
            .join(&base),
        Some(d) if opts.dest_is_dir || d.is_dir() => {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("create {}", d.display()), e))?;
            d.join(&base)
        }
        Some(d) => d.clone(),
    };
    let r = ctx
        .runtime()?
        .block_on(client.download_limited(
            &opts.remote_path,
            &local,
            opts.max_size,
            crate::progress::transfer_progress(ctx.out.json, "download"),
        ))
        .map_err(|e| vm::agent_error(&opts.vm, e))?;
    let text = format!("Downloaded to {} ({} bytes)\n", r.local.display(), r.bytes);
    Ok(Outcome::ok(
        json!({ "vmId": opts.vm, "remotePath": opts.remote_path, "localPath": r.local, "bytes": r.bytes, "isDir": r.is_dir }),
        text,
    ))
}
