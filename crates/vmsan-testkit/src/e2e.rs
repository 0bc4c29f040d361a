//! The end-to-end fixture: a vmsan home set up with the stand-in VMM (or real Firecracker),
//! the static agent and a busybox image, whose VMs network through test-made namespaces (a
//! "host" with a default route to an "internet" that runs a TCP server), plus the checks that
//! nothing of a VM is left on the host. Used by the CLI's end-to-end tests and benchmarks.
//!
//! Real Firecracker is used when `VMSAN_E2E_FIRECRACKER=1` and `VMSAN_E2E_FIRECRACKER_BIN`,
//! `VMSAN_E2E_JAILER_BIN` and `VMSAN_E2E_KERNEL` name the binaries and a guest kernel.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]
// Test equipment: a panic is the failure report.

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The "internet" server's address: beyond the "host"'s uplink, not on its connected network
/// (which `allow-all` does not reach, see the README's networking section).
pub const INTERNET_IP: &str = "203.0.113.10";
/// The "host"'s uplink address.
pub const HOST_IP: &str = "192.0.2.1";
/// The "internet" router's address on the uplink (the "host"'s default gateway).
pub const INTERNET_GW: &str = "192.0.2.2";
pub const SERVER_PORT: u16 = 8080;
pub const GREETING: &str = "hello-from-the-internet";

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Why this machine cannot run the suite, if it cannot.
pub fn skip_reason() -> Option<String> {
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

pub fn which(tool: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// The static agent built by scripts/build-agent (`<target>/agent-static/vmsan-agent`), or
/// `VMSAN_AGENT_BIN`.
pub fn agent_binary() -> Option<PathBuf> {
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
pub fn vmm_binaries(work: &Path) -> Result<(PathBuf, PathBuf, PathBuf), String> {
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
    let p = crate::standin::paths().map_err(|e| format!("stand-in binaries not built: {e}"))?;
    // The stand-in never runs the kernel, but Firecracker's API checks that it opens.
    let kernel = work.join("vmlinux");
    std::fs::write(&kernel, b"stand-in guest kernel (never executed)\n").unwrap();
    Ok((p.firecracker, p.jailer, kernel))
}

/// Runs `ip` (test plumbing only; the product never spawns it).
pub fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?}");
}

/// The test's two namespaces and its TCP server; removed on drop.
#[derive(Debug)]
pub struct Network {
    /// The namespace playing the host.
    pub host: String,
    /// The namespace playing the internet.
    pub internet: String,
}

impl Default for Network {
    fn default() -> Self {
        Self::new()
    }
}

impl Network {
    /// Create both namespaces, link them, and start the TCP server.
    pub fn new() -> Self {
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
            &format!("{INTERNET_GW}/24"),
            "dev",
            "in0",
        ]);
        ip(&[
            "-n",
            &net.internet,
            "addr",
            "add",
            &format!("{INTERNET_IP}/32"),
            "dev",
            "lo",
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
            INTERNET_GW,
        ]);
        // Replies to the VMs come back to the "host", which NATs them: it needs no more routes.
        net.serve();
        net
    }

    /// `VMSAN_HOST_NETNS` for VMs using this network.
    pub fn host_path(&self) -> String {
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
#[derive(Debug)]
pub struct Home {
    /// The vmsan home directory.
    pub dir: tempfile::TempDir,
    /// `VMSAN_HOST_NETNS` for its VMs.
    pub host_netns: String,
    /// The `vmsan` binary under test.
    pub vmsan: PathBuf,
}

impl Home {
    /// A `vmsan` command for this home.
    pub fn vmsan(&self) -> Command {
        let mut c = Command::new(&self.vmsan);
        c.env("VMSAN_HOME", self.dir.path())
            .env("VMSAN_HOST_NETNS", &self.host_netns)
            .env_remove("NO_COLOR");
        c
    }

    /// Run `vmsan --json ARGS`, expect success, return the document.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.vmsan().arg("--json").args(args).output().unwrap();
        let doc = parse(&out);
        assert!(
            out.status.success(),
            "vmsan {args:?} failed: {doc}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        doc
    }

    /// Run `vmsan ARGS` and return what it printed.
    pub fn run(&self, args: &[&str]) -> Output {
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

pub fn parse(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {:?}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A busybox root filesystem: the guest image.
pub fn busybox_rootfs(dir: &Path) {
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
pub fn leftovers(home: &Path, host_ns: &str, id: &str) -> Vec<String> {
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
    // vmsan's links carry their VM's id as an alias: another live VM's are not this one's
    // leftovers; a link of this VM's, or one without an alias, is.
    let others =
        |l: &str| l.contains("alias vmsan vm-") && !l.contains(&format!("alias vmsan {id}"));
    for l in links
        .lines()
        .filter(|l| !l.contains(" lo:") && !l.contains(" up0@") && !others(l))
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
    // Slot claims are host-wide (every home's), each naming its VM.
    for claim in std::fs::read_dir("/run/vmsan/slots").into_iter().flatten() {
        let claim = claim.unwrap().path();
        if std::fs::read_to_string(&claim).is_ok_and(|c| c.starts_with(&format!("vm {id}\n"))) {
            found.push(format!("slot claim {}", claim.display()));
        }
    }
    found
}

/// A vmsan home set up with Firecracker (or the stand-in), the agent and a busybox image,
/// whose VMs network through the test's namespaces. Fields drop in order: VMs go before the
/// namespaces they use.
#[derive(Debug)]
pub struct Fixture {
    /// The vmsan home.
    pub home: Home,
    /// The test's namespaces.
    pub net: Network,
    /// Scratch space (the image's root filesystem, a fake kernel).
    pub work: tempfile::TempDir,
}

/// The fixture, or `None` (with the reason printed) when this machine cannot run the suite.
pub fn fixture(vmsan: &Path) -> Option<Fixture> {
    fixture_in(vmsan, || tempfile::tempdir().unwrap())
}

/// [`fixture`] with a home of the caller's making (e.g. one with a long path).
pub fn fixture_in(vmsan: &Path, home: impl FnOnce() -> tempfile::TempDir) -> Option<Fixture> {
    if let Some(why) = skip_reason() {
        crate::skip!("{why}");
        return None;
    }
    let work = tempfile::tempdir().unwrap();
    let (firecracker, jailer, kernel) = match vmm_binaries(work.path()) {
        Ok(b) => b,
        Err(why) => {
            crate::skip!("{why}");
            return None;
        }
    };
    Some(fixture_with(
        vmsan,
        home(),
        work,
        &firecracker,
        &jailer,
        &kernel,
    ))
}

/// The fixture in `home` with these binaries and kernel (the caller has checked
/// [`skip_reason`]).
pub fn fixture_with(
    vmsan: &Path,
    home: tempfile::TempDir,
    work: tempfile::TempDir,
    firecracker: &Path,
    jailer: &Path,
    kernel: &Path,
) -> Fixture {
    let net = Network::new();
    let home = Home {
        dir: home,
        host_netns: net.host_path(),
        vmsan: vmsan.to_owned(),
    };
    set_up_home(&home, work.path(), (firecracker, jailer, kernel));
    Fixture { home, net, work }
}

impl Fixture {
    /// Another vmsan home, set up like the first, whose VMs share the first one's "host":
    /// two homes on one host (a home per CI job, as the README suggests).
    pub fn another_home(&self) -> Home {
        let (firecracker, jailer, kernel) = vmm_binaries(self.work.path()).unwrap();
        let home = Home {
            dir: tempfile::tempdir().unwrap(),
            host_netns: self.net.host_path(),
            vmsan: self.home.vmsan.clone(),
        };
        set_up_home(&home, self.work.path(), (&firecracker, &jailer, &kernel));
        home
    }
}

/// `vmsan setup` with these binaries, and the busybox image imported.
/// `vmsan setup` with these binaries and kernel and the static agent.
pub fn setup_args(firecracker: &Path, jailer: &Path, kernel: &Path) -> Vec<String> {
    let agent = agent_binary().unwrap();
    [
        "setup",
        "--firecracker",
        firecracker.to_str().unwrap(),
        "--jailer",
        jailer.to_str().unwrap(),
        "--kernel",
        kernel.to_str().unwrap(),
        "--agent",
        agent.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn set_up_home(home: &Home, work: &Path, (firecracker, jailer, kernel): (&Path, &Path, &Path)) {
    // Setup: the contract for scripted use (README).
    let args = setup_args(firecracker, jailer, kernel);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let doc = home.json(&args);
    assert!(
        doc["firecracker"]
            .as_str()
            .unwrap()
            .ends_with("/bin/firecracker"),
        "{doc}"
    );
    let rootfs = work.join("rootfs");
    if !rootfs.exists() {
        busybox_rootfs(&rootfs);
    }
    home.json(&[
        "image",
        "import",
        rootfs.to_str().unwrap(),
        "--name",
        "busybox",
    ]);
}
