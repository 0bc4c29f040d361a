//! Test harness: a real `vmsan-agent` process in plain mode on a Unix socket.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vmsan_agent_client::{AgentClient, Endpoint, ReadyListener};

pub const TOKEN: &str = "test-token-0123456789abcdef";

pub struct AgentProc {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
}

impl AgentProc {
    /// Start the agent and wait for its readiness announcement (no polling).
    pub async fn start() -> Self {
        Self::start_with_env(&[]).await
    }

    pub async fn start_with_env(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let child = spawn_agent(dir.path(), &sock, env).await;
        Self { child, dir, sock }
    }

    /// Kill the agent and start a new one on the same socket.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_agent(self.dir.path(), &self.sock, &[]).await;
    }

    pub fn client(&self) -> AgentClient {
        AgentClient::new(Endpoint::Unix(self.sock.clone()), TOKEN)
    }

    pub fn client_with_token(&self, token: &str) -> AgentClient {
        AgentClient::new(Endpoint::Unix(self.sock.clone()), token)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set of the agent, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_field(&format!("/proc/{}/status", self.pid()), "VmHWM:")
    }

    pub fn rss_kib(&self) -> u64 {
        status_field(&format!("/proc/{}/status", self.pid()), "VmRSS:")
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn spawn_agent(dir: &Path, sock: &Path, env: &[(&str, &str)]) -> Child {
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let ready = ReadyListener::bind_path(dir.join("ready.sock")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmsan-agent"));
    cmd.arg("serve")
        .arg("--unix")
        .arg(sock)
        .arg("--token-file")
        .arg(&token_file)
        .arg("--announce")
        .arg(ready.path())
        .arg("--vm-id")
        .arg("vm-test")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let ann = ready.wait(Duration::from_secs(20)).await.unwrap();
    assert_eq!(ann.vm_id, "vm-test");
    child
}

pub fn status_field(path: &str, field: &str) -> u64 {
    let s = std::fs::read_to_string(path).unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Peak resident set of this test process, KiB.
pub fn self_peak_rss_kib() -> u64 {
    status_field("/proc/self/status", "VmHWM:")
}

pub fn is_root() -> bool {
    nix_geteuid() == 0
}

fn nix_geteuid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

pub fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

pub fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}
