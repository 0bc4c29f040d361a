//! Talking to a running VM's guest agent: a client for it, and its failures as the engine's
//! errors (exec, connect, upload and download share them).

use vmsan_agent_client::{AgentClient, ClientError, Endpoint};

use crate::error::{Error, ErrorCode, Result};
use crate::ids::VmId;
use crate::paths::Paths;
use crate::state::{StateStore, VmStatus};

/// A client for a running VM's agent.
pub fn agent(paths: &Paths, id: &VmId) -> Result<AgentClient> {
    let st = StateStore::open(paths)?.get(id)?;
    if st.status != VmStatus::Running {
        return Err(Error::new(
            ErrorCode::VmNotRunning,
            format!("VM {id} is {}", st.status.as_str()),
        )
        .detail("vmId", id.as_str()));
    }
    let token = st.agent_token.ok_or_else(|| {
        Error::new(
            ErrorCode::VmNoAgentToken,
            format!("VM {id} has no agent token"),
        )
        .detail("vmId", id.as_str())
    })?;
    let vsock = st.vsock_socket.ok_or_else(|| {
        Error::new(
            ErrorCode::VmNotRunning,
            format!("VM {id} has no vsock socket recorded"),
        )
        .detail("vmId", id.as_str())
    })?;
    Ok(AgentClient::new(Endpoint::hybrid_vsock(vsock), token))
}

/// An agent failure, with a stable code and what it means for the user.
pub fn agent_error(id: &VmId, e: ClientError) -> Error {
    match &e {
        ClientError::Timeout { secs, .. } => {
            let why = format!(
                "The guest agent of {id} accepted the request and then sent nothing for {secs} s."
            );
            return Error::new(ErrorCode::TimeoutAgent, format!("{id}: {e}"))
                .why(why)
                .fix(
                    "Check the guest with `vmsan logs <id>` and `vmsan exec <id> uptime`; for \
                     a transfer that may stall longer, pass a longer --timeout (e.g. 5m).",
                )
                .detail("vmId", id.as_str());
        }
        ClientError::TooLarge { limit, .. } => {
            return Error::new(ErrorCode::AgentFileTooLarge, format!("{id}: {e}"))
                .why(format!(
                    "Downloads are limited to {limit} bytes so that a guest cannot fill the host's disk."
                ))
                .detail("vmId", id.as_str());
        }
        ClientError::Refused(_) => {
            return Error::new(ErrorCode::ValidationPath, format!("{id}: {e}"))
                .why(
                    "vmsan never writes a download through a symlink on the host, nor outside \
                     the destination: the guest chooses names and links.",
                )
                .fix("Download into a new or empty directory.")
                .detail("vmId", id.as_str());
        }
        _ => {}
    }
    let code = if vmsan_agent_client::is_auth_error(&e) {
        ErrorCode::AgentUnauthorized
    } else if e.agent_code() == Some("not_found") {
        ErrorCode::AgentFileNotFound
    } else {
        ErrorCode::AgentRequest
    };
    let err = Error::new(code, format!("{id}: {e}")).detail("vmId", id.as_str());
    // The agent answered, so the VM runs: the code's default "check that the VM is running"
    // would send the user the wrong way. Say what the refusal means instead.
    match e.agent_code() {
        Some("path_escape") => err
            .why("The guest agent refused a path that leaves the destination directory (`..`, an absolute path, or a link pointing out of it).")
            .fix("Upload names and links that stay inside the destination; nothing of the refused upload was kept."),
        Some("spawn_failed") => err
            .why("The guest agent could not start the command.")
            .fix("Check that the program exists in the image and is executable: `vmsan exec <id> ls -l /bin /usr/bin`."),
        Some("forbidden") => err
            .why("The guest agent refused the request for this user or path.")
            .fix("Run it as another user (`--user`, `--sudo`) or choose another path."),
        Some("bad_request") => err
            .why("The guest agent refused the request as malformed.")
            .fix("Check the arguments; if they are right, the agent and vmsan may be of different versions: recreate the VM."),
        Some(_) if code == ErrorCode::AgentRequest => err
            .why("The guest agent answered with an error.")
            .fix("The message above says what it refused."),
        _ => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_refusal_does_not_say_the_vm_is_down() {
        let vm = VmId::parse("vm-0123abcd").unwrap();
        let refused = |code: &str| {
            agent_error(
                &vm,
                ClientError::Agent {
                    what: "upload".into(),
                    status: 400,
                    code: code.into(),
                    message: "refused".into(),
                },
            )
        };
        for code in [
            "path_escape",
            "spawn_failed",
            "forbidden",
            "bad_request",
            "other",
        ] {
            let e = refused(code);
            let fix = e.fix_text().unwrap_or_default();
            assert!(!fix.contains("running"), "{code}: {fix}");
        }
        assert!(
            refused("path_escape")
                .why_text()
                .unwrap()
                .contains("leaves the destination")
        );
    }

    #[test]
    fn transfer_failures_get_their_own_codes() {
        let vm = VmId::parse("vm-0123abcd").unwrap();
        let e = agent_error(
            &vm,
            ClientError::Timeout {
                what: "download /var/log/big".into(),
                secs: 60,
            },
        );
        assert_eq!(e.code(), ErrorCode::TimeoutAgent);
        assert!(
            e.message().contains("vm-0123abcd") && e.message().contains("download /var/log/big"),
            "{}",
            e.message()
        );
        assert!(e.fix_text().is_some_and(|f| f.contains("--timeout")));
        let e = agent_error(
            &vm,
            ClientError::TooLarge {
                size: 20 << 30,
                limit: 16 << 30,
            },
        );
        assert_eq!(e.code(), ErrorCode::AgentFileTooLarge);
        assert!(e.fix_text().is_some_and(|f| f.contains("--max-size")));
        let e = agent_error(&vm, ClientError::Refused("x is a symlink".into()));
        assert_eq!(e.code(), ErrorCode::ValidationPath);
    }
}
