//! End to end: the `vmsan` binary drives a whole VM life — setup, image import, create, exec,
//! files, a PTY shell, egress over the VM's network, stop, start with the disk intact, remove —
//! and afterwards nothing of the VM is left on the host.
//!
//! It runs against the stand-in VMM of `vmsan-testkit` (this machine's KVM cannot boot a
//! guest), or against real Firecracker when `VMSAN_E2E_FIRECRACKER=1` and
//! `VMSAN_E2E_FIRECRACKER_BIN`, `VMSAN_E2E_JAILER_BIN` and `VMSAN_E2E_KERNEL` name the real
//! binaries and a guest kernel. The VMs' "host" network side lives in a namespace the test
//! creates (`VMSAN_HOST_NETNS`), whose default route leads to an "internet" namespace with a
//! TCP server: no packet leaves the machine and the real host's networking is never touched.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const INTERNET_IP: &str = "192.0.2.2";
const HOST_IP: &str = "192.0.2.1";
const SERVER_PORT: u16 = 8080;
const GREETING: &str = "hello-from-the-internet";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Why this machine cannot run the suite, if it cannot.
fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("needs root (namespaces, loop devices, nftables)".into());
    }
    if !Path::new("/bin/busybox").is_file() {
        return Some(
            "needs /bin/busybox (Debian package busybox-static) for the guest image".into(),
        );
    }
    if agent_binary().is_none() {
        return Some(
            "needs the static guest agent: run scripts/build-agent (scripts/test does)".into(),
        );
    }
    if which("nft").is_none() {
        return Some("needs nft (Debian package nftables)".into());
    }
    None
}

fn which(tool: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// The static agent built by scripts/build-agent (`<target>/agent-static/vmsan-agent`), or
/// `VMSAN_AGENT_BIN`.
fn agent_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VMSAN_AGENT_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    // <target>/debug/deps/e2e-… → <target>
    let target = exe.parent()?.parent()?.parent()?;
    let p = target.join("agent-static/vmsan-agent");
    p.is_file().then_some(p)
}

/// Firecracker, jailer and kernel: real ones when asked for, else the stand-ins.
fn vmm_binaries(work: &Path) -> Result<(PathBuf, PathBuf, PathBuf), String> {
    if std::env::var("VMSAN_E2E_FIRECRACKER").as_deref() == Ok("1") {
        let get = |k: &str| {
            std::env::var_os(k)
                .map(PathBuf::from)
                .ok_or(format!("{k} is not set"))
        };
        return Ok((
            get("VMSAN_E2E_FIRECRACKER_BIN")?,
            get("VMSAN_E2E_JAILER_BIN")?,
            get("VMSAN_E2E_KERNEL")?,
        ));
    }
    let p =
        vmsan_testkit::standin::paths().map_err(|e| format!("stand-in binaries not built: {e}"))?;
    // The stand-in never runs the kernel, but Firecracker's API checks that it opens.
    let kernel = work.join("vmlinux");
    std::fs::write(&kernel, b"stand-in guest kernel (never executed)\n").unwrap();
    Ok((p.firecracker, p.jailer, kernel))
}

/// Runs `ip` (test plumbing only; the product never spawns it).
fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?}");
}

/// The test's two namespaces and its TCP server; removed on drop.
struct Network {
    host: String,
    internet: String,
}

impl Network {
    fn new() -> Self {
        let tag = std::process::id();
        let net = Self {
            host: format!("test-e2e-h{tag}"),
            internet: format!("test-e2e-i{tag}"),
        };
        ip(&["netns", "add", &net.host]);
        ip(&["netns", "add", &net.internet]);
        ip(&[
            "-n",
            &net.host,
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "in0",
            "netns",
            &net.internet,
        ]);
        ip(&[
            "-n",
            &net.host,
            "addr",
            "add",
            &format!("{HOST_IP}/24"),
            "dev",
            "up0",
        ]);
        ip(&[
            "-n",
            &net.internet,
            "addr",
            "add",
            &format!("{INTERNET_IP}/24"),
            "dev",
            "in0",
        ]);
        for (ns, dev) in [
            (&net.host, "up0"),
            (&net.internet, "in0"),
            (&net.host, "lo"),
            (&net.internet, "lo"),
        ] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        ip(&[
            "-n",
            &net.host,
            "route",
            "add",
            "default",
            "via",
            INTERNET_IP,
        ]);
        // Replies to the VMs come back to the "host", which NATs them: it needs no more routes.
        net.serve();
        net
    }

    fn host_path(&self) -> String {
        format!("/run/netns/{}", self.host)
    }

    /// A TCP server in the internet namespace that greets every connection.
    fn serve(&self) {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.internet)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // This thread alone enters the namespace.
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let l = TcpListener::bind((INTERNET_IP, SERVER_PORT)).unwrap();
            tx.send(()).unwrap();
            for mut s in l.incoming().flatten() {
                let _ = s.write_all(format!("{GREETING}\n").as_bytes());
            }
        });
        rx.recv().unwrap();
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in [&self.host, &self.internet] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A vmsan home with its VMs; every VM is force-removed on drop, even when the test failed.
struct Home {
    dir: tempfile::TempDir,
    host_netns: String,
}

impl Home {
    fn vmsan(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vmsan"));
        c.env("VMSAN_HOME", self.dir.path())
            .env("VMSAN_HOST_NETNS", &self.host_netns)
            .env_remove("NO_COLOR");
        c
    }

    /// Run `vmsan --json ARGS`, expect success, return the document.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.vmsan().arg("--json").args(args).output().unwrap();
        let doc = parse(&out);
        assert!(
            out.status.success(),
            "vmsan {args:?} failed: {doc}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        doc
    }

    fn run(&self, args: &[&str]) -> Output {
        self.vmsan().args(args).output().unwrap()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let out = self.vmsan().args(["--json", "list"]).output();
        if let Ok(out) = out
            && let Ok(doc) = serde_json::from_slice::<Value>(&out.stdout)
        {
            for vm in doc["vms"].as_array().into_iter().flatten() {
                if let Some(id) = vm["id"].as_str() {
                    let _ = self.vmsan().args(["remove", "--force", id]).output();
                }
            }
        }
    }
}

fn parse(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {:?}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A busybox root filesystem: the guest image.
fn busybox_rootfs(dir: &Path) {
    for d in ["bin", "etc", "root", "tmp", "dev", "proc", "sys", "run"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
        }
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
}

/// Everything a VM may have left on the host, as a list of findings (empty = clean).
fn leftovers(home: &Path, host_ns: &str, id: &str) -> Vec<String> {
    let mut found = Vec::new();
    let netns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    if netns.contains(id) {
        found.push(format!("network namespace of {id}"));
    }
    let links = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-n", host_ns, "-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    for l in links
        .lines()
        .filter(|l| !l.contains(" lo:") && !l.contains(" up0@"))
    {
        found.push(format!("link in the host namespace: {l}"));
    }
    let tables = Command::new("ip")
        .args(["netns", "exec", host_ns, "nft", "list", "ruleset"])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&tables.stdout).contains(id) {
        found.push(format!("nftables rules naming {id} in the host namespace"));
    }
    let loops =
        String::from_utf8_lossy(&Command::new("losetup").arg("-a").output().unwrap().stdout)
            .into_owned();
    let home_s = home.display().to_string();
    for l in loops
        .lines()
        .filter(|l| l.contains(&home_s) || l.contains(id))
    {
        found.push(format!("loop device: {l}"));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for m in mounts
        .lines()
        .filter(|l| l.contains(&home_s) || l.contains(id))
    {
        found.push(format!("mount: {m}"));
    }
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(p.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(id)
        {
            found.push(format!(
                "process {}: {}",
                p.file_name().to_string_lossy(),
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    for ctl in ["cpu", "memory", "pids", "cpuset", "unified", ""] {
        let d = Path::new("/sys/fs/cgroup")
            .join(ctl)
            .join("firecracker")
            .join(id);
        if d.exists() {
            found.push(format!("cgroup {}", d.display()));
        }
    }
    for p in [
        home.join("vms").join(id),
        home.join("jail/firecracker").join(id),
    ] {
        if p.exists() {
            found.push(format!("file {}", p.display()));
        }
    }
    if std::fs::read_dir(home.join("slots"))
        .map(|d| d.count())
        .unwrap_or(0)
        != 0
    {
        found.push("a slot claim".into());
    }
    found
}

/// A vmsan home set up with Firecracker (or the stand-in), the agent and a busybox image,
/// whose VMs network through the test's namespaces. Fields drop in order: VMs go before the
/// namespaces they use.
struct Fixture {
    home: Home,
    net: Network,
    work: tempfile::TempDir,
}

/// The fixture, or `None` (with the reason printed) when this machine cannot run the suite.
fn fixture() -> Option<Fixture> {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return None;
    }
    let work = tempfile::tempdir().unwrap();
    let (firecracker, jailer, kernel) = match vmm_binaries(work.path()) {
        Ok(b) => b,
        Err(why) => {
            eprintln!("skipped: {why}");
            return None;
        }
    };
    let net = Network::new();
    let home = Home {
        dir: tempfile::tempdir().unwrap(),
        host_netns: net.host_path(),
    };
    let agent = agent_binary().unwrap();

    // Setup: the contract for scripted use (README).
    let doc = home.json(&[
        "setup",
        "--firecracker",
        firecracker.to_str().unwrap(),
        "--jailer",
        jailer.to_str().unwrap(),
        "--kernel",
        kernel.to_str().unwrap(),
        "--agent",
        agent.to_str().unwrap(),
    ]);
    assert!(
        doc["firecracker"]
            .as_str()
            .unwrap()
            .ends_with("/bin/firecracker"),
        "{doc}"
    );
    let rootfs = work.path().join("rootfs");
    busybox_rootfs(&rootfs);
    home.json(&[
        "image",
        "import",
        rootfs.to_str().unwrap(),
        "--name",
        "busybox",
    ]);
    Some(Fixture { home, net, work })
}

#[test]
fn privileged_e2e_vm_lifecycle() {
    let Some(fx) = fixture() else { return };
    let (home, net, work) = (&fx.home, &fx.net, &fx.work);

    // Create: returns once the agent has announced itself.
    let doc = home.json(&["create", "--from-image", "busybox"]);
    let id = doc["vmId"].as_str().unwrap().to_owned();
    assert_eq!(doc["status"], "running", "{doc}");
    let listed = home.json(&["list"]);
    assert_eq!(listed["vms"][0]["id"], id.as_str());
    assert_eq!(listed["vms"][0]["status"], "running");

    // Exec: output, exit codes, flags passed through verbatim.
    let out = home.run(&["exec", &id, "echo", "-n", "hello", "world"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello world",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
    let out = home.run(&["exec", &id, "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    let doc = parse(&home.run(&["--json", "exec", &id, "cat", "/etc/hostname"]));
    assert_eq!(doc["exitCode"], 0, "{doc}");
    assert_eq!(doc["stdout"].as_str().unwrap().trim(), id);

    // Files: upload, then download, byte for byte, with the mode kept.
    let payload = work.path().join("payload.bin");
    let bytes: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&payload, &bytes).unwrap();
    std::fs::set_permissions(
        &payload,
        std::os::unix::fs::PermissionsExt::from_mode(0o751),
    )
    .unwrap();
    home.json(&["upload", &id, payload.to_str().unwrap(), "--dest", "/root"]);
    let out = home.run(&["exec", &id, "stat", "-c", "%a %s", "/root/payload.bin"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "751 300000");
    let back = work.path().join("back.bin");
    home.json(&[
        "download",
        &id,
        "/root/payload.bin",
        "--dest",
        back.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(&back).unwrap() == bytes,
        "downloaded bytes differ"
    );

    // A shell on a real PTY.
    let mut cmd = home.vmsan();
    cmd.args(["connect", &id]);
    let mut pty = rexpect::session::spawn_command(cmd, Some(30_000)).unwrap();
    pty.send_line("echo pty-$((40+2))").unwrap();
    pty.exp_string("pty-42").unwrap();
    pty.send_line("exit 0").unwrap();
    pty.exp_eof().unwrap();

    // Egress through the VM's own namespace, NAT and the test's "internet".
    let out = home.run(&[
        "exec",
        &id,
        "nc",
        "-w",
        "5",
        INTERNET_IP,
        &SERVER_PORT.to_string(),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        GREETING,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The policy holds for real TCP and changes at once: deny-all stops the same connection,
    // a custom policy allowing the server's address lets it through again.
    let probe = || {
        home.run(&[
            "exec",
            &id,
            "nc",
            "-w",
            "3",
            INTERNET_IP,
            &SERVER_PORT.to_string(),
        ])
    };
    let doc = home.json(&["network", &id, "--network-policy", "deny-all"]);
    assert_eq!(doc["newPolicy"], "deny-all", "{doc}");
    let out = probe();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(GREETING),
        "deny-all let TCP through"
    );
    assert_ne!(out.status.code(), Some(0));
    let doc = home.json(&[
        "network",
        &id,
        "--network-policy",
        "custom",
        "--allowed-cidr",
        &format!("{INTERNET_IP}/32"),
    ]);
    assert_eq!(doc["newPolicy"], "custom", "{doc}");
    assert_eq!(String::from_utf8_lossy(&probe().stdout).trim(), GREETING);
    let doc = home.json(&[
        "network",
        &id,
        "--network-policy",
        "custom",
        "--allowed-cidr",
        "192.0.2.0/24",
        "--denied-cidr",
        &format!("{INTERNET_IP}/32"),
    ]);
    assert_eq!(doc["deniedCidrs"][0], format!("{INTERNET_IP}/32"), "{doc}");
    assert!(
        !String::from_utf8_lossy(&probe().stdout).contains(GREETING),
        "a denied CIDR inside an allowed one must stay denied"
    );
    home.json(&["network", &id, "--network-policy", "allow-all"]);

    // Stop, then start: same disk, same identity.
    home.json(&["exec", &id, "sh", "-c", "echo persisted > /root/data; sync"]);
    let doc = home.json(&["stop", &id]);
    assert_eq!(doc["results"][0]["success"], true, "{doc}");
    assert_eq!(home.json(&["inspect", &id])["vm"]["status"], "stopped");
    let doc = home.json(&["start", &id]);
    assert_eq!(doc["vmId"], id.as_str());
    let out = home.run(&["exec", &id, "cat", "/root/data"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "persisted\n");

    // Remove: nothing of the VM remains.
    let doc = home.json(&["remove", "--force", &id]);
    assert_eq!(doc["results"][0]["success"], true, "{doc}");
    let left = leftovers(home.dir.path(), &net.host, &id);
    assert!(
        left.is_empty(),
        "left behind after remove:\n{}",
        left.join("\n")
    );
}

/// Wait until `vmsan inspect` shows `status` (and, with `settled`, that the supervisor has
/// finished and recorded it), or fail after 30 s. (vmsan has no "wait" command yet, and the
/// state file is the only thing a user could watch.)
fn wait_status(home: &Home, id: &str, status: &str, settled: bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let doc = home.json(&["inspect", id]);
        if doc["vm"]["status"] == status && (!settled || doc["vm"]["supervisor"].is_null()) {
            return doc["vm"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} never became {status}: {doc}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn kill9(pid: u64) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
}

/// Faults are noticed and cleaned up: Firecracker killed, the supervisor killed, `--timeout`.
#[test]
fn privileged_e2e_faults() {
    let Some(fx) = fixture() else { return };
    let (home, net) = (&fx.home, &fx.net);

    // kill -9 of Firecracker: the supervisor notices, records why, and tears down.
    let id = home.json(&["create", "--from-image", "busybox"])["vmId"]
        .as_str()
        .unwrap()
        .to_owned();
    let vm = home.json(&["inspect", &id])["vm"].clone();
    kill9(vm["vmm"]["pid"].as_u64().unwrap());
    let vm = wait_status(home, &id, "error", true);
    assert!(vm["error"].as_str().unwrap().contains("signal 9"), "{vm}");
    home.json(&["remove", &id]);
    let left = leftovers(home.dir.path(), &net.host, &id);
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));

    // kill -9 of the supervisor: every read reports it, and remove cleans up after it.
    let id = home.json(&["create", "--from-image", "busybox"])["vmId"]
        .as_str()
        .unwrap()
        .to_owned();
    let vm = home.json(&["inspect", &id])["vm"].clone();
    kill9(vm["supervisor"]["pid"].as_u64().unwrap());
    let vm = wait_status(home, &id, "error", false);
    assert!(vm["error"].as_str().unwrap().contains("supervisor"), "{vm}");
    home.json(&["remove", "--force", &id]);
    let left = leftovers(home.dir.path(), &net.host, &id);
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));

    // A step that fails after the network and the jail were set up (the jail refuses a
    // kernel that is not a regular file) undoes everything: no VM, nothing on the host.
    let bad_kernel = fx.work.path().join("kernel-dir");
    std::fs::create_dir(&bad_kernel).unwrap();
    let out = home
        .vmsan()
        .args(["--json", "create", "--from-image", "busybox", "--kernel"])
        .arg(&bad_kernel)
        .output()
        .unwrap();
    let doc = parse(&out);
    assert!(
        !out.status.success(),
        "create with a directory as kernel succeeded: {doc}"
    );
    assert_eq!(
        home.json(&["list"])["count"],
        0,
        "a failed create left a VM"
    );
    let left = leftovers(home.dir.path(), &net.host, "vm-");
    assert!(
        left.is_empty(),
        "a failed create left:\n{}",
        left.join("\n")
    );

    // --timeout really stops the VM, through the normal stop path.
    let id = home.json(&["create", "--from-image", "busybox", "--timeout", "3s"])["vmId"]
        .as_str()
        .unwrap()
        .to_owned();
    let vm = wait_status(home, &id, "stopped", true);
    assert!(vm["error"].as_str().unwrap().contains("timeout"), "{vm}");
    home.json(&["remove", &id]);
    let left = leftovers(home.dir.path(), &net.host, &id);
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
}

/// Twenty `vmsan create` at once all succeed, with distinct slots and addresses, each VM
/// answers, and removing them all at once leaves nothing.
#[test]
fn privileged_e2e_concurrent_creates() {
    const N: usize = 20;
    let Some(fx) = fixture() else { return };
    let (home, net) = (&fx.home, &fx.net);
    let children: Vec<_> = (0..N)
        .map(|_| {
            home.vmsan()
                .args(["--json", "create", "--from-image", "busybox"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let doc = parse(&out);
        assert!(out.status.success(), "a concurrent create failed: {doc}");
        ids.push(doc["vmId"].as_str().unwrap().to_owned());
    }
    let list = home.json(&["list"]);
    assert_eq!(list["count"], N);
    assert_eq!(list["statuses"]["running"], N);
    let mut ips: Vec<String> = list["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["guestIp"].as_str().unwrap().to_owned())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), N, "guest addresses must be distinct");
    for id in &ids {
        let out = home.run(&["exec", id, "cat", "/etc/hostname"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);
    }
    let removers: Vec<_> = ids
        .iter()
        .map(|id| {
            home.vmsan()
                .args(["--json", "remove", "--force", id])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for r in removers {
        let out = r.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    for id in &ids {
        let left = leftovers(home.dir.path(), &net.host, id);
        assert!(left.is_empty(), "left behind by {id}:\n{}", left.join("\n"));
    }
}

/// Killing the process group and the cgroup of the shell that ran `vmsan create` leaves the
/// VM running: its supervisor left both.
#[test]
fn privileged_e2e_vm_outlives_the_callers_session_and_cgroup() {
    let Some(fx) = fixture() else { return };
    let home = &fx.home;
    // A cgroup of the caller's own, in the pids hierarchy (v1) or the unified one (v2).
    let root = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("cgroup.procs").exists());
    let Some(root) = root else {
        eprintln!("skipped: no writable cgroup hierarchy");
        return;
    };
    let cg = root.join(format!("test-e2e-caller-{}", std::process::id()));
    std::fs::create_dir(&cg).unwrap();
    struct Rmdir(PathBuf);
    impl Drop for Rmdir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _cg = Rmdir(cg.clone());

    // The "session": a shell in its own process group that joins the cgroup, then runs create.
    let mut shell = Command::new("sh");
    shell
        .args([
            "-c",
            "echo $$ > \"$1/cgroup.procs\" && exec \"$2\" --json create --from-image busybox",
            "sh",
        ])
        .arg(&cg)
        .arg(env!("CARGO_BIN_EXE_vmsan"))
        .env("VMSAN_HOME", home.dir.path())
        .env("VMSAN_HOST_NETNS", &home.host_netns);
    std::os::unix::process::CommandExt::process_group(&mut shell, 0);
    let child = shell.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let out = child.wait_with_output().unwrap();
    let doc = parse(&out);
    assert!(out.status.success(), "{doc}");
    let id = doc["vmId"].as_str().unwrap().to_owned();

    // Kill everything left in the caller's process group and cgroup.
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<u64>().ok()) {
        kill9(pid);
    }
    assert!(
        procs.trim().is_empty(),
        "processes of the VM stayed in the caller's cgroup: {procs}"
    );

    let vm = home.json(&["inspect", &id])["vm"].clone();
    assert_eq!(vm["status"], "running", "{vm}");
    let out = home.run(&["exec", &id, "echo", "still here"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still here\n");
    home.json(&["remove", "--force", &id]);
}
