//! vmsan-agent: the guest agent (init + exec/PTY/files server).
//!
//! Usage:
//!
//! ```text
//! vmsan-agent serve --unix PATH --token-file FILE [--default-user USER]
//!                   [--announce PATH --vm-id ID]      plain mode (tests, development)
//! vmsan-agent version
//! /init (PID 1, no arguments)                        init mode, see docs/guest-abi.md
//! ```

// Handlers return an early `Response` as their error: it is what they send either way.
#![allow(clippy::result_large_err)]

mod clock;
mod exec;
mod files;
mod identity;
mod init;
mod listen;
mod netlink;
mod pty;
mod server;
mod sys;
mod users;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use server::{Agent, AgentOptions};
use tokio::net::UnixListener;

#[derive(Debug, Default)]
struct ServeArgs {
    unix: Option<PathBuf>,
    token_file: Option<PathBuf>,
    default_user: Option<String>,
    announce: Option<PathBuf>,
    vm_id: Option<String>,
}

fn parse_serve(args: &[String]) -> Result<ServeArgs, String> {
    let mut a = ServeArgs::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--unix" => a.unix = Some(PathBuf::from(value()?)),
            "--token-file" => a.token_file = Some(PathBuf::from(value()?)),
            "--default-user" => a.default_user = Some(value()?),
            "--announce" => a.announce = Some(PathBuf::from(value()?)),
            "--vm-id" => a.vm_id = Some(value()?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: vmsan-agent serve --unix PATH --token-file FILE [--default-user USER] [--announce PATH --vm-id ID]\n       vmsan-agent version"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    // As PID 1 the kernel may pass stray words as arguments: init mode whatever they are.
    if std::process::id() == 1 {
        return init::run();
    }
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("version") => {
            println!(
                "vmsan-agent {} (protocol {})",
                env!("CARGO_PKG_VERSION"),
                vmsan_proto::PROTOCOL_VERSION
            );
            ExitCode::SUCCESS
        }
        Some("serve") => match parse_serve(&args[2..]) {
            Ok(a) => run_plain(a),
            Err(e) => {
                eprintln!("vmsan-agent: {e}");
                usage()
            }
        },
        _ => usage(),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
}

fn run_plain(a: ServeArgs) -> ExitCode {
    let (Some(sock), Some(token_file)) = (a.unix.clone(), a.token_file.clone()) else {
        eprintln!("vmsan-agent: serve needs --unix and --token-file");
        return usage();
    };
    let token = match std::fs::read_to_string(&token_file) {
        Ok(t) => t.trim_end_matches(['\n', '\r']).to_owned(),
        Err(e) => {
            eprintln!("vmsan-agent: read token file {}: {e}", token_file.display());
            return ExitCode::FAILURE;
        }
    };
    if token.is_empty() {
        eprintln!("vmsan-agent: token file {} is empty", token_file.display());
        return ExitCode::FAILURE;
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vmsan-agent: start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let agent = Agent::new(AgentOptions {
        token,
        mode: "plain",
        default_user: a.default_user.clone(),
        ..AgentOptions::default()
    });
    match rt.block_on(serve_unix(agent, sock, a.announce, a.vm_id)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmsan-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_unix(
    agent: Arc<Agent>,
    sock: PathBuf,
    announce_to: Option<PathBuf>,
    vm_id: Option<String>,
) -> Result<(), String> {
    match std::fs::remove_file(&sock) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("remove stale socket {}: {e}", sock.display())),
    }
    let listener =
        UnixListener::bind(&sock).map_err(|e| format!("bind {}: {e}", sock.display()))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", sock.display()))?;
    let announce = match announce_to {
        Some(p) => listen::Announce::Unix(p),
        None => listen::Announce::None,
    };
    let r = listen::serve(
        agent,
        listen::Listener::Unix(listener),
        announce,
        vm_id.as_deref().unwrap_or(""),
        std::time::Duration::from_secs(2),
    )
    .await;
    let _ = std::fs::remove_file(&sock);
    r
}
