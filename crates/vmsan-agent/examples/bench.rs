//! Benchmark of the agent (plain mode, Unix socket) side by side with OpenSSH on loopback.
//! Run by `scripts/bench-agent`, which builds the release agent and sets up sshd.
//!
//! ```text
//! bench --agent BIN --work DIR [--ssh-port N --ssh-key FILE --ssh-dir DIR] [--gib N]
//! ```
//! Without the ssh arguments only the agent's figures are printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use vmsan_agent_client::{AgentClient, Endpoint, ReadyListener};
use vmsan_proto::ExecRequest;

const TOKEN: &str = "bench-token";

struct Args {
    agent: PathBuf,
    work: PathBuf,
    ssh_port: Option<String>,
    ssh_key: Option<PathBuf>,
    ssh_dir: Option<PathBuf>,
    ssh_user: String,
    bytes: u64,
}

fn parse() -> Args {
    let mut a = Args {
        agent: PathBuf::new(),
        work: PathBuf::new(),
        ssh_port: None,
        ssh_key: None,
        ssh_dir: None,
        ssh_user: "root".into(),
        bytes: 1 << 30,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut it = v.iter();
    while let Some(f) = it.next() {
        let val = it
            .next()
            .cloned()
            .unwrap_or_else(|| panic!("{f} needs a value"));
        match f.as_str() {
            "--agent" => a.agent = val.into(),
            "--work" => a.work = val.into(),
            "--ssh-port" => a.ssh_port = Some(val),
            "--ssh-key" => a.ssh_key = Some(val.into()),
            "--ssh-dir" => a.ssh_dir = Some(val.into()),
            "--ssh-user" => a.ssh_user = val,
            "--gib" => a.bytes = val.parse::<u64>().unwrap() << 30,
            "--mib" => a.bytes = val.parse::<u64>().unwrap() << 20,
            _ => panic!("unknown argument {f}"),
        }
    }
    a
}

#[derive(Default)]
struct Sink(u64);

impl tokio::io::AsyncWrite for Sink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0 += b.len() as u64;
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn pct(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    (at(0.50), at(0.95))
}

fn req(a: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: a.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

struct Ssh {
    user: String,
    port: String,
    key: PathBuf,
    control: PathBuf,
}

impl Ssh {
    fn base(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.args(["-i"]).arg(&self.key).args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
        ]);
        c
    }
    fn ssh(&self, warm: bool) -> Command {
        let mut c = self.base("ssh");
        c.args(["-p", &self.port]);
        if warm {
            c.arg("-o")
                .arg(format!("ControlPath={}", self.control.display()));
            c.args(["-o", "ControlMaster=auto", "-o", "ControlPersist=120"]);
        }
        c.arg(self.host());
        c
    }
    fn host(&self) -> String {
        format!("{}@127.0.0.1", self.user)
    }
    fn scp(&self) -> Command {
        let mut c = self.base("scp");
        c.args(["-q", "-P", &self.port]);
        c
    }
}

fn time_cmd(mut c: Command) -> Duration {
    let t = Instant::now();
    let st = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "{c:?} failed");
    t.elapsed()
}

fn make_file(p: &Path, bytes: u64) {
    use std::io::Write;
    let chunk: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut w = std::io::BufWriter::new(std::fs::File::create(p).unwrap());
    for _ in 0..(bytes >> 20) {
        w.write_all(&chunk).unwrap();
    }
    w.flush().unwrap();
}

fn mibs(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = parse();
    std::fs::create_dir_all(&a.work).unwrap();
    let sock = a.work.join("agent.sock");
    let token = a.work.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let ready = ReadyListener::bind_path(a.work.join("ready.sock")).unwrap();
    let mut agent = Command::new(&a.agent)
        .args(["serve", "--unix"])
        .arg(&sock)
        .arg("--token-file")
        .arg(&token)
        .arg("--announce")
        .arg(ready.path())
        .spawn()
        .unwrap();
    ready.wait(Duration::from_secs(10)).await.unwrap();
    let pid = agent.id();
    let rss = |field: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let idle_rss = rss("VmRSS:");
    let size = std::fs::metadata(&a.agent).unwrap().len();
    let ssh = match (&a.ssh_port, &a.ssh_key, &a.ssh_dir) {
        (Some(p), Some(k), Some(d)) => Some(Ssh {
            user: a.ssh_user.clone(),
            port: p.clone(),
            key: k.clone(),
            control: d.join("cm.sock"),
        }),
        _ => None,
    };
    let client = AgentClient::new(Endpoint::Unix(sock.clone()), TOKEN);
    client.exec_collect(req(&["true"])).await.unwrap();

    // Warm exec round trip.
    let n_warm = 300;
    let mut warm = Vec::with_capacity(n_warm);
    for _ in 0..n_warm {
        let t = Instant::now();
        client.exec_collect(req(&["true"])).await.unwrap();
        warm.push(t.elapsed());
    }
    // Cold: a new connection every time.
    let n_cold = 100;
    let mut cold = Vec::with_capacity(n_cold);
    for _ in 0..n_cold {
        let t = Instant::now();
        AgentClient::new(Endpoint::Unix(sock.clone()), TOKEN)
            .exec_collect(req(&["true"]))
            .await
            .unwrap();
        cold.push(t.elapsed());
    }
    let (aw50, aw95) = pct(warm);
    let (ac50, ac95) = pct(cold);

    // Streaming.
    let bytes = a.bytes;
    let mut sink = Sink::default();
    let t = Instant::now();
    client
        .exec(
            req(&["head", "-c", &bytes.to_string(), "/dev/zero"]),
            None::<&[u8]>,
            &mut sink,
            &mut Sink::default(),
        )
        .await
        .unwrap();
    let astream = t.elapsed();
    assert_eq!(sink.0, bytes);

    // Transfers.
    let src = a.work.join("payload.bin");
    make_file(&src, bytes);
    let guest = a.work.join("guest");
    let t = Instant::now();
    client
        .upload(std::slice::from_ref(&src), guest.to_str().unwrap(), None)
        .await
        .unwrap();
    let aup = t.elapsed();
    let back = a.work.join("back.bin");
    let t = Instant::now();
    client
        .download(guest.join("payload.bin").to_str().unwrap(), &back, None)
        .await
        .unwrap();
    let adown = t.elapsed();
    std::fs::remove_file(&back).unwrap();
    let peak = rss("VmHWM:");

    println!();
    println!(
        "vmsan-agent: binary {:.2} MiB, idle RSS {:.2} MiB, peak RSS during the run {:.2} MiB",
        size as f64 / 1048576.0,
        idle_rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "{:<34} {:>22} {:>22} {:>9}",
        "measure", "vmsan-agent", "OpenSSH", "ratio"
    );
    let row = |name: &str, ours: String, theirs: Option<String>, ratio: Option<f64>| {
        println!(
            "{:<34} {:>22} {:>22} {:>9}",
            name,
            ours,
            theirs.unwrap_or_else(|| "-".into()),
            ratio
                .map(|r| format!("{r:.1}x"))
                .unwrap_or_else(|| "-".into())
        );
    };
    let gib = bytes as f64 / (1u64 << 30) as f64;
    if let Some(ssh) = &ssh {
        // Warm: a ControlMaster connection. Start it, then measure.
        let mut m = ssh.ssh(true);
        m.arg("true");
        time_cmd(m);
        let mut sw = Vec::new();
        for _ in 0..100 {
            let mut c = ssh.ssh(true);
            c.arg("true");
            sw.push(time_cmd(c));
        }
        let mut sc = Vec::new();
        for _ in 0..20 {
            let mut c = ssh.ssh(false);
            c.arg("true");
            sc.push(time_cmd(c));
        }
        let (sw50, sw95) = pct(sw);
        let (sc50, sc95) = pct(sc);
        let mut c = ssh.ssh(true);
        c.arg(format!("head -c {bytes} /dev/zero"));
        let sstream = time_cmd(c);
        // scp into and out of the ssh user's home directory.
        let mut c = ssh.scp();
        c.arg(&src).arg(format!("{}:", ssh.host()));
        let sup = time_cmd(c);
        let mut c = ssh.scp();
        c.arg(format!("{}:payload.bin", ssh.host()))
            .arg(a.work.join("scp-back.bin"));
        let sdown = time_cmd(c);
        let _ = std::fs::remove_file(a.work.join("scp-back.bin"));
        let mut c = ssh.ssh(true);
        c.arg("rm -f payload.bin");
        time_cmd(c);
        let mut stop = ssh.ssh(true);
        stop.args(["-O", "exit"]);
        let _ = stop.stderr(Stdio::null()).status();
        row(
            "exec `true`, warm: p50 / p95 ms",
            format!("{aw50:.2} / {aw95:.2}"),
            Some(format!("{sw50:.2} / {sw95:.2}")),
            Some(sw50 / aw50),
        );
        row(
            "exec `true`, cold: p50 / p95 ms",
            format!("{ac50:.2} / {ac95:.2}"),
            Some(format!("{sc50:.2} / {sc95:.2}")),
            Some(sc50 / ac50),
        );
        row(
            &format!("stdout streaming {gib:.2} GiB, MiB/s"),
            format!("{:.0}", mibs(bytes, astream)),
            Some(format!("{:.0}", mibs(bytes, sstream))),
            Some(sstream.as_secs_f64() / astream.as_secs_f64()),
        );
        row(
            &format!("upload {gib:.2} GiB, MiB/s (vs scp)"),
            format!("{:.0}", mibs(bytes, aup)),
            Some(format!("{:.0}", mibs(bytes, sup))),
            Some(sup.as_secs_f64() / aup.as_secs_f64()),
        );
        row(
            &format!("download {gib:.2} GiB, MiB/s (vs scp)"),
            format!("{:.0}", mibs(bytes, adown)),
            Some(format!("{:.0}", mibs(bytes, sdown))),
            Some(sdown.as_secs_f64() / adown.as_secs_f64()),
        );
        println!();
        println!(
            "goals: warm p50 <= 2 ms: {}; warm >= 5x faster than `ssh host true`: {} ({:.1}x its warm ControlMaster p50, {:.1}x its cold p50); transfers >= 2x scp: upload {}, download {}",
            if aw50 <= 2.0 { "met" } else { "NOT met" },
            if sw50 / aw50 >= 5.0 { "met" } else { "NOT met" },
            sw50 / aw50,
            sc50 / aw50,
            if sup.as_secs_f64() / aup.as_secs_f64() >= 2.0 {
                "met"
            } else {
                "NOT met"
            },
            if sdown.as_secs_f64() / adown.as_secs_f64() >= 2.0 {
                "met"
            } else {
                "NOT met"
            }
        );
    } else {
        row(
            "exec `true`, warm: p50 / p95 ms",
            format!("{aw50:.2} / {aw95:.2}"),
            None,
            None,
        );
        row(
            "exec `true`, cold: p50 / p95 ms",
            format!("{ac50:.2} / {ac95:.2}"),
            None,
            None,
        );
        row(
            &format!("stdout streaming {gib:.2} GiB, MiB/s"),
            format!("{:.0}", mibs(bytes, astream)),
            None,
            None,
        );
        row(
            &format!("upload {gib:.2} GiB, MiB/s"),
            format!("{:.0}", mibs(bytes, aup)),
            None,
            None,
        );
        row(
            &format!("download {gib:.2} GiB, MiB/s"),
            format!("{:.0}", mibs(bytes, adown)),
            None,
            None,
        );
    }
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_dir_all(&guest);
    let _ = agent.kill();
    let _ = agent.wait();
}
