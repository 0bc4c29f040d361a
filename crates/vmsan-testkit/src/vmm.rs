//! The stand-in VMM: Firecracker's API state machine, and the guest it starts on InstanceStart.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};

use crate::api::*;
use crate::helper::{self, BootPlan, HelperMessage, HelperRequest, PlanDrive, PlanNet};
use crate::http::{Request, Response};
use crate::log::Logger;
use crate::relay;

/// Version the stand-in reports (the API it follows).
pub const FC_VERSION: &str = "1.16.1";

/// Marker written in snapshot files and logs.
pub const MEMORY_NOTE: &str = "firecracker-standin: guest memory is NOT preserved; loading this snapshot re-creates the configuration and boots the guest's init again";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotStarted,
    Running,
    Paused,
}

struct NetDev {
    cfg: NetworkInterface,
    tap: Arc<File>,
    rx: relay::SharedLimiter,
    tx: relay::SharedLimiter,
}

struct VsockDev {
    cfg: Vsock,
    listener: Option<UnixListener>,
}

/// Talks to the privileged helper: requests get replies in order; `Exited` events go to the
/// exit callback.
struct HelperClient {
    sock: Arc<OwnedFd>,
    replies: Mutex<Receiver<(HelperMessage, Vec<OwnedFd>)>>,
}

impl HelperClient {
    fn start(sock: OwnedFd, on_exit: Box<dyn Fn(String) + Send>) -> io::Result<Self> {
        let sock = Arc::new(sock);
        let (tx, rx): (Sender<(HelperMessage, Vec<OwnedFd>)>, _) = channel();
        let s2 = Arc::clone(&sock);
        std::thread::Builder::new()
            .name("fc_helper".into())
            .spawn(move || {
                loop {
                    match helper::recv::<HelperMessage>(s2.as_raw_fd()) {
                        Ok(Some((HelperMessage::Exited { status }, _))) => {
                            drop(tx);
                            on_exit(status);
                            return;
                        }
                        Ok(Some(m)) => {
                            if tx.send(m).is_err() {
                                return;
                            }
                        }
                        Ok(None) | Err(_) => {
                            drop(tx);
                            on_exit("privileged helper went away".into());
                            return;
                        }
                    }
                }
            })?;
        Ok(Self {
            sock,
            replies: Mutex::new(rx),
        })
    }

    fn call(
        &self,
        req: &HelperRequest,
        fds: &[RawFd],
    ) -> Result<(HelperMessage, Vec<OwnedFd>), String> {
        // One request in flight at a time: replies come back in order.
        let rx = self
            .replies
            .lock()
            .map_err(|_| "helper: poisoned".to_owned())?;
        helper::send(self.sock.as_raw_fd(), req, fds).map_err(|e| format!("helper: {e}"))?;
        rx.recv()
            .map_err(|_| "helper: connection closed".to_owned())
    }
}

/// Everything the VMM owns.
pub struct Vmm {
    id: String,
    log: Arc<Logger>,
    state: State,
    boot_path: bool,
    boot_source: Option<(BootSource, Option<File>)>,
    drives: Vec<(Drive, File)>,
    machine: MachineConfig,
    nets: Vec<NetDev>,
    vsock: Option<VsockDev>,
    entropy: Option<Entropy>,
    logger_cfg: Option<crate::api::Logger>,
    metrics: Option<(Metrics, File)>,
    helper_fd: Option<OwnedFd>,
    helper: Option<Arc<HelperClient>>,
    runtime: Option<PathBuf>,
    stopper: Option<relay::Stopper>,
    exit: Arc<dyn Fn(String) + Send + Sync>,
    /// When InstanceStart was received, and when the guest init was running.
    pub boot_timing: Option<(Instant, Instant)>,
    boot_timer: bool,
}

impl std::fmt::Debug for Vmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmm")
            .field("id", &self.id)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

type R = Result<Response, Response>;

fn bad(msg: impl AsRef<str>) -> Response {
    Response::fault(400, msg.as_ref())
}

fn parse<T: for<'de> serde::Deserialize<'de>>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "An error occurred when deserializing the json body of a request: {e}."
        ))
    })
}

const POST_BOOT: &str = "The requested operation is not supported after starting the microVM.";
/// How Firecracker prefixes every problem with a snapshot's state file.
const STATE_FILE: &str = "Failed to get snapshot state from file: ";
const PRE_BOOT: &str = "The requested operation is not supported before starting the microVM.";

impl Vmm {
    /// New VMM. `helper_fd` is the jailer-provided helper socket, if any; `exit` is called
    /// (from another thread) when the guest has exited and the process should end.
    pub fn new(
        id: &str,
        log: Arc<Logger>,
        helper_fd: Option<OwnedFd>,
        exit: Arc<dyn Fn(String) + Send + Sync>,
        boot_timer: bool,
    ) -> Self {
        Self {
            id: id.to_owned(),
            log,
            state: State::NotStarted,
            boot_path: false,
            boot_source: None,
            drives: Vec::new(),
            machine: MachineConfig::default(),
            nets: Vec::new(),
            vsock: None,
            entropy: None,
            logger_cfg: None,
            metrics: None,
            helper_fd,
            helper: None,
            runtime: None,
            stopper: None,
            exit,
            boot_timing: None,
            boot_timer,
        }
    }

    /// Handles one API request, logging it as Firecracker does.
    pub fn handle(&mut self, req: &Request) -> Response {
        let path = req.path.clone();
        let method = match req.method.as_str() {
            "GET" => "Get",
            "PUT" => "Put",
            "PATCH" => "Patch",
            "DELETE" => "Delete",
            other => other,
        };
        let desc = match &req.body {
            Some(b) if path != "/mmds" => format!(
                "{method} request on {path:?} with body {:?}",
                String::from_utf8_lossy(b)
            ),
            _ => format!("{method} request on {path:?}"),
        };
        self.log
            .info("fc_api", &format!("The API server received a {desc}."));
        let resp = self.route(req).unwrap_or_else(|e| e);
        match resp.status {
            200 => self.log.info(
                "fc_api",
                "The request was executed successfully. Status code: 200 OK.",
            ),
            204 => self.log.info(
                "fc_api",
                "The request was executed successfully. Status code: 204 No Content.",
            ),
            s => {
                let msg = resp
                    .body
                    .as_deref()
                    .and_then(|b| serde_json::from_str::<Value>(b).ok())
                    .and_then(|v| v["fault_message"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                self.log.error(
                    "fc_api",
                    &format!(
                        "Received Error. Status code: {s} {}. Message: {msg}",
                        crate::http::reason(s)
                    ),
                );
            }
        }
        resp
    }

    fn route(&mut self, req: &Request) -> R {
        let trimmed = req.path.trim_start_matches('/');
        let mut tokens = trimmed.split_terminator('/');
        let first = tokens.next().unwrap_or("");
        let second = tokens.next();
        let body = req.body.as_deref();
        match (req.method.as_str(), first, body) {
            ("GET", "", None) => Ok(self.instance_info()),
            ("GET", "version", None) => Ok(Response::ok(
                json!({ "firecracker_version": FC_VERSION }).to_string(),
            )),
            ("GET", "vm", None) if second == Some("config") => {
                Ok(Response::ok(self.full_config().to_string()))
            }
            ("GET", "machine-config", None) => Ok(Response::ok(
                serde_json::to_string(&self.machine).unwrap_or_default(),
            )),
            ("GET", "balloon" | "mmds" | "hotplug", None) => Err(unsupported(first)),
            ("GET", _, Some(_)) => Err(bad("GET request cannot have a body.")),
            ("PUT", "actions", Some(b)) => self.put_action(parse(b)?),
            ("PUT", "boot-source", Some(b)) => self.put_boot_source(parse(b)?),
            ("PUT", "drives", Some(b)) => {
                let id = path_id(second)?;
                let d: Drive = parse(b)?;
                if d.drive_id != id {
                    return Err(bad(
                        "The id from the path does not match the id from the body!",
                    ));
                }
                self.put_drive(d)
            }
            ("PUT", "logger", Some(b)) => self.put_logger(parse(b)?),
            ("PUT", "machine-config", Some(b)) => self.put_machine(parse(b)?),
            ("PUT", "metrics", Some(b)) => self.put_metrics(parse(b)?),
            ("PUT", "network-interfaces", Some(b)) => {
                let id = path_id(second)?;
                let n: NetworkInterface = parse(b)?;
                if n.iface_id != id {
                    return Err(bad(format!(
                        "The id from the path [{id}] does not match the id from the body [{}]!",
                        n.iface_id
                    )));
                }
                self.put_net(n)
            }
            ("PUT", "snapshot", Some(b)) => match second {
                Some("create") => self.snapshot_create(parse(b)?),
                Some("load") => self.snapshot_load(parse(b)?),
                // Unlike other unknown paths, Firecracker keeps the leading slash here.
                _ => Err(bad(format!(
                    "Invalid request method and/or path: PUT {}.",
                    req.path
                ))),
            },
            ("PUT", "vsock", Some(b)) => self.put_vsock(parse(b)?),
            ("PUT", "entropy", Some(b)) => self.put_entropy(parse(b)?),
            ("PUT", "cpu-config", Some(b)) => self.put_cpu_config(parse(b)?),
            ("PUT", "balloon" | "pmem" | "mmds" | "serial" | "hotplug", Some(_)) => {
                Err(unsupported(first))
            }
            ("PUT", _, None) => Err(bad("Empty PUT request.")),
            ("PATCH", "machine-config", Some(b)) => self.patch_machine(parse(b)?),
            ("PATCH", "vm", Some(b)) => self.patch_vm(parse(b)?),
            ("PATCH", "network-interfaces", Some(b)) => {
                let id = path_id(second)?;
                let n: NetworkInterfaceUpdate = parse(b)?;
                if n.iface_id != id {
                    return Err(bad(format!(
                        "The id from the path [{id}] does not match the id from the body [{}]!",
                        n.iface_id
                    )));
                }
                self.patch_net(n)
            }
            ("PATCH", "drives" | "balloon" | "mmds" | "pmem" | "hotplug", Some(_)) => {
                Err(unsupported(first))
            }
            ("PATCH", _, None) => Err(bad("Empty PATCH request.")),
            ("DELETE", _, Some(_)) => Err(bad("Empty Delete request.")),
            (m, p, _) => {
                let m = match m {
                    "GET" => "GET",
                    "PUT" => "PUT",
                    "PATCH" => "PATCH",
                    "DELETE" => "DELETE",
                    _ => {
                        return Err(bad(format!("Invalid request method and/or path: {m} {p}.")));
                    }
                };
                Err(bad(format!("Invalid request method and/or path: {m} {p}.")))
            }
        }
    }

    fn instance_info(&self) -> Response {
        let state = match self.state {
            State::NotStarted => "Not started",
            State::Running => "Running",
            State::Paused => "Paused",
        };
        Response::ok(
            json!({
                "id": self.id,
                "state": state,
                "vmm_version": FC_VERSION,
                "app_name": "Firecracker",
            })
            .to_string(),
        )
    }

    /// `GET /vm/config`.
    pub fn full_config(&self) -> Value {
        json!({
            "balloon": null,
            "drives": self.drives.iter().map(|(d, _)| d).collect::<Vec<_>>(),
            // Unconfigured, Firecracker shows an empty kernel path rather than null.
            "boot-source": self.boot_source.as_ref().map_or_else(
                || json!({ "kernel_image_path": "", "initrd_path": null, "boot_args": null }),
                |(b, _)| json!(b),
            ),
            "cpu-config": null,
            // Firecracker v1.16.1 never echoes the logger or metrics configuration.
            "logger": null,
            "machine-config": self.machine,
            "metrics": null,
            "mmds-config": null,
            "network-interfaces": self.nets.iter().map(|n| &n.cfg).collect::<Vec<_>>(),
            "vsock": self.vsock.as_ref().map(|v| &v.cfg),
            "entropy": self.entropy,
            "pmem": [],
            "memory-hotplug": null,
        })
    }

    fn pre_boot(&self) -> Result<(), Response> {
        if self.state == State::NotStarted {
            Ok(())
        } else {
            Err(bad(POST_BOOT))
        }
    }

    fn put_boot_source(&mut self, b: BootSource) -> R {
        self.pre_boot()?;
        File::open(&b.kernel_image_path).map_err(|e| {
            bad(format!(
                "Boot source error: The kernel file cannot be opened: {e}"
            ))
        })?;
        let initrd = match &b.initrd_path {
            Some(p) => Some(File::open(p).map_err(|e| {
                bad(format!("Boot source error: The initrd file cannot be opened due to invalid path or invalid permissions. {e}"))
            })?),
            None => None,
        };
        self.boot_source = Some((b, initrd));
        self.boot_path = true;
        Ok(Response::no_content())
    }

    fn put_drive(&mut self, d: Drive) -> R {
        self.pre_boot()?;
        if d.socket.is_some() {
            return Err(bad(
                "Drive config error: firecracker-standin does not emulate vhost-user block devices.",
            ));
        }
        let Some(path) = d.path_on_host.clone() else {
            return Err(bad(
                "Drive config error: Unable to create the virtio block device: path_on_host is required for virtio-block.",
            ));
        };
        let ro = d.is_read_only.unwrap_or(false);
        if d.is_root_device
            && self
                .drives
                .iter()
                .any(|(o, _)| o.is_root_device && o.drive_id != d.drive_id)
        {
            return Err(bad(
                "Drive config error: A root block device already exists!",
            ));
        }
        // Checked before opening, so a host block device is never even opened for writing.
        if std::fs::metadata(&path).is_ok_and(|m| !m.file_type().is_file()) {
            return Err(bad(format!(
                "Drive config error: Unable to create the virtio block device: firecracker-standin accepts only regular files as drives (never a host device): {path}"
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!ro)
            .open(&path)
            .map_err(|e| {
                bad(format!("Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: {e} {path}"))
            })?;
        if !file
            .metadata()
            .map(|m| m.file_type().is_file())
            .unwrap_or(false)
        {
            return Err(bad(format!(
                "Drive config error: Unable to create the virtio block device: firecracker-standin accepts only regular files as drives (never a host device): {path}"
            )));
        }
        let mut d = d;
        d.is_read_only = Some(ro);
        if let Some(pos) = self
            .drives
            .iter()
            .position(|(o, _)| o.drive_id == d.drive_id)
        {
            self.drives.remove(pos);
            if d.is_root_device {
                self.drives.insert(0, (d, file));
            } else {
                self.drives.insert(pos.min(self.drives.len()), (d, file));
            }
        } else if d.is_root_device {
            self.drives.insert(0, (d, file));
        } else {
            self.drives.push((d, file));
        }
        self.boot_path = true;
        Ok(Response::no_content())
    }

    fn check_machine(m: &MachineConfig) -> Result<(), Response> {
        if m.vcpu_count == 0
            || m.vcpu_count > 32
            || (m.smt && m.vcpu_count > 1 && m.vcpu_count % 2 == 1)
        {
            return Err(bad(
                "Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled.",
            ));
        }
        let page_mib = if m.huge_pages == HugePages::Hugetlbfs2M {
            2
        } else {
            1
        };
        if m.mem_size_mib == 0 || !m.mem_size_mib.is_multiple_of(page_mib) {
            return Err(bad(
                "Machine config error: The memory size (MiB) is either 0, or not a multiple of the configured page size.",
            ));
        }
        Ok(())
    }

    fn put_machine(&mut self, m: MachineConfig) -> R {
        self.pre_boot()?;
        Self::check_machine(&m)?;
        self.machine = m;
        self.boot_path = true;
        Ok(Response::no_content())
    }

    fn patch_machine(&mut self, u: MachineConfigUpdate) -> R {
        self.pre_boot()?;
        let mut m = self.machine.clone();
        if let Some(v) = u.vcpu_count {
            m.vcpu_count = v;
        }
        if let Some(v) = u.mem_size_mib {
            m.mem_size_mib = v;
        }
        if let Some(v) = u.smt {
            m.smt = v;
        }
        if u.cpu_template.is_some() {
            m.cpu_template = u.cpu_template;
        }
        if let Some(v) = u.track_dirty_pages {
            m.track_dirty_pages = v;
        }
        if let Some(v) = u.huge_pages {
            m.huge_pages = v;
        }
        Self::check_machine(&m)?;
        self.machine = m;
        self.boot_path = true;
        Ok(Response::no_content())
    }

    fn open_tap(name: &str) -> Result<File, Response> {
        crate::sys::tap_open(Path::new("/dev/net/tun"), name).map_err(|e| {
            bad(format!("Network config error: Could not create the network device: Open tap device failed: Error while creating ifreq structure: {e}. Invalid TUN/TAP Backend provided by {name}. Check our documentation on setting up the network devices."))
        })
    }

    fn put_net(&mut self, n: NetworkInterface) -> R {
        self.pre_boot()?;
        if let Some(mac) = &n.guest_mac {
            if parse_mac(mac).is_none() {
                return Err(bad(format!(
                    "An error occurred when deserializing the json body of a request: invalid MAC address {mac:?}."
                )));
            }
            if self.nets.iter().any(|o| {
                o.cfg.iface_id != n.iface_id
                    && o.cfg.guest_mac.as_deref().map(str::to_ascii_lowercase)
                        == Some(mac.to_ascii_lowercase())
            }) {
                return Err(bad(format!(
                    "Network config error: The MAC address is already in use: {mac}"
                )));
            }
        }
        if self
            .nets
            .iter()
            .any(|o| o.cfg.iface_id != n.iface_id && o.cfg.host_dev_name == n.host_dev_name)
        {
            return Err(bad(format!(
                "Network config error: The host device name {} is already in use.",
                n.host_dev_name
            )));
        }
        // Drop an existing device with this id first so its TAP can be reopened.
        let pos = self.nets.iter().position(|o| o.cfg.iface_id == n.iface_id);
        if let Some(p) = pos {
            self.nets.remove(p);
        }
        let tap = Self::open_tap(&n.host_dev_name)?;
        let dev = NetDev {
            rx: Arc::new(Mutex::new(relay::Limiter::new(n.rx_rate_limiter.as_ref()))),
            tx: Arc::new(Mutex::new(relay::Limiter::new(n.tx_rate_limiter.as_ref()))),
            cfg: n,
            tap: Arc::new(tap),
        };
        match pos {
            Some(p) => self.nets.insert(p, dev),
            None => self.nets.push(dev),
        }
        self.boot_path = true;
        Ok(Response::no_content())
    }

    fn patch_net(&mut self, u: NetworkInterfaceUpdate) -> R {
        if self.state == State::NotStarted {
            return Err(bad(PRE_BOOT));
        }
        let Some(dev) = self.nets.iter_mut().find(|d| d.cfg.iface_id == u.iface_id) else {
            return Err(bad(format!(
                "Network config error: Could not find the network device: {}",
                u.iface_id
            )));
        };
        // New buckets replace the old ones in the running relay.
        if u.rx_rate_limiter.is_some() {
            dev.cfg.rx_rate_limiter = u.rx_rate_limiter;
            if let Ok(mut l) = dev.rx.lock() {
                *l = relay::Limiter::new(dev.cfg.rx_rate_limiter.as_ref());
            }
        }
        if u.tx_rate_limiter.is_some() {
            dev.cfg.tx_rate_limiter = u.tx_rate_limiter;
            if let Ok(mut l) = dev.tx.lock() {
                *l = relay::Limiter::new(dev.cfg.tx_rate_limiter.as_ref());
            }
        }
        Ok(Response::no_content())
    }

    fn bind_vsock(path: &str) -> Result<UnixListener, Response> {
        UnixListener::bind(path).map_err(|e| {
            bad(format!("Vsock config error: Cannot create backend for vsock device: Error binding to the host-side Unix socket: {e}"))
        })
    }

    fn put_vsock(&mut self, v: Vsock) -> R {
        self.pre_boot()?;
        // Firecracker v1.16.1 takes any CID here, even the reserved 0, 1 and 2 (the guest
        // kernel is the one to refuse them).
        if let Some(old) = self.vsock.take() {
            drop(old.listener);
            let _ = std::fs::remove_file(&old.cfg.uds_path);
        }
        let listener = Self::bind_vsock(&v.uds_path)?;
        if v.vsock_id.is_some() {
            self.log
                .warn("fc_api", "PUT /vsock: vsock_id field is deprecated.");
        }
        self.vsock = Some(VsockDev {
            cfg: v,
            listener: Some(listener),
        });
        self.boot_path = true;
        Ok(Response::no_content())
    }

    /// A custom CPU template: the stand-in runs no guest CPU, so it is only checked (and, as
    /// by Firecracker, not shown by `GET /vm/config`).
    fn put_cpu_config(&mut self, _t: crate::cpu_config::CustomCpuTemplate) -> R {
        self.pre_boot()?;
        self.boot_path = true;
        Ok(Response::no_content())
    }

    fn put_entropy(&mut self, e: Entropy) -> R {
        self.pre_boot()?;
        self.entropy = Some(e);
        self.boot_path = true;
        Ok(Response::no_content())
    }

    fn put_logger(&mut self, l: crate::api::Logger) -> R {
        self.pre_boot()?;
        self.log
            .configure(l.log_path.as_deref(), l.level, l.show_level)
            .map_err(|e| bad(format!("Logger error: Failed to open target file: {e}")))?;
        self.logger_cfg = Some(l);
        Ok(Response::no_content())
    }

    fn put_metrics(&mut self, m: Metrics) -> R {
        self.pre_boot()?;
        if self.metrics.is_some() {
            return Err(bad(
                "Metrics error: Cannot initialize the metrics system due to bad user input: Reinitialization of metrics not allowed.",
            ));
        }
        crate::log::refuse_block_device(&m.metrics_path)
            .map_err(|e| bad(format!("Metrics error: Failed to open target file: {e}")))?;
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.metrics_path)
            .map_err(|e| bad(format!("Metrics error: Failed to open target file: {e}")))?;
        self.metrics = Some((m, f));
        Ok(Response::no_content())
    }

    fn put_action(&mut self, a: Action) -> R {
        match a.action_type {
            ActionType::FlushMetrics => {
                if self.state == State::NotStarted {
                    return Err(bad(PRE_BOOT));
                }
                if let Some((_, f)) = self.metrics.as_mut() {
                    let line = json!({ "utc_timestamp_ms": now_ms(), "standin": { "state": format!("{:?}", self.state) } });
                    let _ = writeln!(f, "{line}");
                }
                Ok(Response::no_content())
            }
            ActionType::SendCtrlAltDel => {
                if self.state == State::NotStarted {
                    return Err(bad(PRE_BOOT));
                }
                self.helper_call(HelperRequest::CtrlAltDel)?;
                Ok(Response::no_content())
            }
            ActionType::InstanceStart => {
                self.pre_boot()?;
                if self.boot_source.is_none() {
                    return Err(bad(
                        "Start microvm error: Cannot start microvm without kernel configuration.",
                    ));
                }
                self.start(false)
                    .map_err(|e| bad(format!("Start microvm error: {e}")))?;
                Ok(Response::no_content())
            }
        }
    }

    fn helper_call(&self, req: HelperRequest) -> Result<(), Response> {
        let Some(h) = &self.helper else {
            return Err(bad("Internal VMM error: no guest"));
        };
        match h.call(&req, &[]) {
            Ok((HelperMessage::Ok { .. }, _)) => Ok(()),
            Ok((HelperMessage::Err { error }, _)) => {
                Err(bad(format!("Internal VMM error: {error}")))
            }
            Ok(_) => Err(bad("Internal VMM error: unexpected helper reply")),
            Err(e) => Err(bad(format!("Internal VMM error: {e}"))),
        }
    }

    fn patch_vm(&mut self, v: VmState) -> R {
        if self.state == State::NotStarted {
            return Err(bad(PRE_BOOT));
        }
        match v.state {
            VmStateRequest::Paused => {
                self.helper_call(HelperRequest::Pause)?;
                self.state = State::Paused;
            }
            VmStateRequest::Resumed => {
                self.helper_call(HelperRequest::Resume)?;
                self.state = State::Running;
            }
        }
        Ok(Response::no_content())
    }

    fn ensure_helper(&mut self) -> Result<(), String> {
        if self.helper.is_some() {
            return Ok(());
        }
        let sock = match self.helper_fd.take() {
            Some(s) => s,
            None => {
                spawn_helper().map_err(|e| format!("cannot start the privileged helper: {e}"))?
            }
        };
        let exit = Arc::clone(&self.exit);
        let client = HelperClient::start(sock, Box::new(move |s| exit(s)))
            .map_err(|e| format!("helper thread: {e}"))?;
        self.helper = Some(Arc::new(client));
        Ok(())
    }

    fn start(&mut self, paused: bool) -> Result<(), String> {
        let t0 = Instant::now();
        let (bs, initrd) = self
            .boot_source
            .as_ref()
            .ok_or("Cannot start microvm without kernel configuration.")?;
        let initrd_fd = initrd
            .as_ref()
            .ok_or("firecracker-standin needs an initrd: it runs the initrd's /init, not a kernel")?
            .as_raw_fd();
        let boot_args = bs
            .boot_args
            .clone()
            .unwrap_or_else(|| DEFAULT_KERNEL_CMDLINE.to_owned());
        self.ensure_helper()?;
        let runtime = PathBuf::from(format!(
            "/run/{}{}",
            helper::RUNTIME_PREFIX,
            std::process::id()
        ));
        std::fs::create_dir_all(runtime.join("vsock"))
            .map_err(|e| format!("create {}: {e}", runtime.display()))?;
        self.runtime = Some(runtime.clone());
        let stopper = relay::Stopper::new().map_err(|e| e.to_string())?;
        let host_sock = UnixListener::bind(runtime.join("vsock/host.sock"))
            .map_err(|e| format!("bind host.sock: {e}"))?;

        let plan = BootPlan {
            runtime_dir: runtime.to_string_lossy().into_owned(),
            boot_args,
            drives: self
                .drives
                .iter()
                .map(|(d, _)| PlanDrive {
                    drive_id: d.drive_id.clone(),
                    read_only: d.is_read_only.unwrap_or(false),
                })
                .collect(),
            nets: self
                .nets
                .iter()
                .map(|n| PlanNet {
                    guest_mac: n.cfg.guest_mac.as_deref().and_then(parse_mac),
                })
                .collect(),
        };
        let mut fds: Vec<RawFd> = vec![1, initrd_fd];
        fds.extend(self.drives.iter().map(|(_, f)| f.as_raw_fd()));
        let helper = self.helper.as_ref().ok_or("no helper")?;
        let (reply, taps) = helper.call(&HelperRequest::Boot(plan), &fds)?;
        let loops = match reply {
            HelperMessage::Ok { loops, .. } => loops,
            HelperMessage::Err { error } => return Err(error),
            HelperMessage::Exited { status } => return Err(format!("guest exited: {status}")),
        };
        let t1 = Instant::now();
        if taps.len() != self.nets.len() {
            return Err(format!(
                "helper returned {} TAPs for {} interfaces",
                taps.len(),
                self.nets.len()
            ));
        }
        for (i, (n, guest_tap)) in self.nets.iter().zip(taps).enumerate() {
            let guest = Arc::new(File::from(guest_tap));
            relay::relay_frames(
                Arc::clone(&n.tap),
                Arc::clone(&guest),
                Arc::clone(&n.rx),
                stopper.watch(),
                format!("fc_net{i}_rx"),
            )
            .map_err(|e| e.to_string())?;
            relay::relay_frames(
                guest,
                Arc::clone(&n.tap),
                Arc::clone(&n.tx),
                stopper.watch(),
                format!("fc_net{i}_tx"),
            )
            .map_err(|e| e.to_string())?;
        }
        if let Some(v) = self.vsock.as_mut() {
            if let Some(l) = v.listener.take() {
                let log = Arc::clone(&self.log);
                let h = Arc::clone(helper);
                let dir = runtime.join("vsock");
                let connect: relay::GuestConnector = Arc::new(move |port: u32| {
                    match std::os::unix::net::UnixStream::connect(
                        dir.join(format!("guest-{port}.sock")),
                    ) {
                        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                            match h.call(&HelperRequest::ConnectGuest { port }, &[]) {
                                Ok((HelperMessage::Ok { .. }, mut fds)) if fds.len() == 1 => {
                                    Ok(std::os::unix::net::UnixStream::from(fds.remove(0)))
                                }
                                Ok((HelperMessage::Err { error }, _)) => {
                                    Err(io::Error::other(error))
                                }
                                Ok(_) => Err(io::Error::other("unexpected helper reply")),
                                Err(e) => Err(io::Error::other(e)),
                            }
                        }
                        other => other,
                    }
                });
                relay::serve_host_vsock(
                    l,
                    connect,
                    stopper.watch(),
                    Arc::new(move |m: &str| log.warn("fc_vsock", m)),
                )
                .map_err(|e| e.to_string())?;
            }
            relay::serve_guest_vsock(host_sock, PathBuf::from(&v.cfg.uds_path), stopper.watch())
                .map_err(|e| e.to_string())?;
        } else {
            drop(host_sock);
        }
        self.stopper = Some(stopper);
        self.state = State::Running;
        self.boot_timing = Some((t0, t1));
        self.log.info(
            "fc_vmm",
            &format!(
                "firecracker-standin: guest init started in {} us (loop devices {:?})",
                t1.duration_since(t0).as_micros(),
                loops
            ),
        );
        if self.boot_timer {
            self.log.info(
                "fc_vmm",
                &format!(
                    "Guest-boot-time = {:>6} us {} ms",
                    t1.duration_since(t0).as_micros(),
                    t1.duration_since(t0).as_millis()
                ),
            );
        }
        if paused {
            self.helper_call(HelperRequest::Pause)
                .map_err(|r| r.body.unwrap_or_default())?;
            self.state = State::Paused;
        }
        Ok(())
    }

    fn snapshot_create(&mut self, s: SnapshotCreate) -> R {
        match self.state {
            State::NotStarted => return Err(bad(PRE_BOOT)),
            State::Running => {
                return Err(bad(
                    "Create snapshot error: Cannot save the microVM state: Operation not allowed: save/restore unavailable while running",
                ));
            }
            State::Paused => {}
        }
        // Firecracker v1.16.1 makes diff snapshots without dirty-page tracking too (it then
        // asks the kernel which pages are resident), so the stand-in refuses none.
        let state = json!({
            "firecracker_standin_snapshot": 1,
            "note": MEMORY_NOTE,
            "snapshot_type": s.snapshot_type,
            "firecracker_version": FC_VERSION,
            "vm_config": self.full_config(),
        });
        let write = |path: &str, data: &[u8], len: Option<u64>| -> io::Result<()> {
            crate::log::refuse_block_device(path)?;
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)?;
            f.write_all(data)?;
            if let Some(l) = len {
                f.set_len(l.max(data.len() as u64))?;
            }
            f.sync_all()
        };
        let body = serde_json::to_vec_pretty(&state).unwrap_or_default();
        write(&s.snapshot_path, &body, None).map_err(|e| {
            bad(format!(
                "Create snapshot error: Cannot save the microVM state: {e} {}",
                s.snapshot_path
            ))
        })?;
        let mem_header = format!("{MEMORY_NOTE}\n");
        let mem_len = (self.machine.mem_size_mib as u64) << 20;
        write(&s.mem_file_path, mem_header.as_bytes(), Some(mem_len)).map_err(|e| {
            bad(format!(
                "Create snapshot error: Cannot write memory file: {e} {}",
                s.mem_file_path
            ))
        })?;
        self.log.warn("fc_vmm", MEMORY_NOTE);
        Ok(Response::no_content())
    }

    fn snapshot_load(&mut self, l: SnapshotLoad) -> R {
        if self.state != State::NotStarted {
            return Err(bad(POST_BOOT));
        }
        if self.boot_path {
            return Err(bad(
                "Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.",
            ));
        }
        let mem_path = match (&l.mem_file_path, &l.mem_backend) {
            (Some(p), None) => p.clone(),
            (None, Some(b)) => {
                if b.backend_type == BackendType::Uffd {
                    return Err(bad(
                        "Load snapshot error: firecracker-standin does not emulate Uffd memory backends.",
                    ));
                }
                b.backend_path.clone()
            }
            _ => {
                return Err(bad(
                    "An error occurred when deserializing the json body of a request: too many fields: either `mem_backend` or `mem_file_path` exclusively is required.",
                ));
            }
        };
        let fail = |m: String| {
            bad(format!(
                "Load snapshot error: Failed to restore from snapshot: {m}"
            ))
        };
        let state: Value = std::fs::read(&l.snapshot_path)
            .map_err(|e| fail(format!("{STATE_FILE}Failed to open snapshot file: {e}")))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| {
                    fail(format!(
                        "{STATE_FILE}Failed to load snapshot state from file: {e}"
                    ))
                })
            })?;
        if state["firecracker_standin_snapshot"] != json!(1) {
            return Err(fail("not a firecracker-standin snapshot".into()));
        }
        File::open(&mem_path).map_err(|e| fail(format!("Failed to load guest memory: {e}")))?;
        let cfg = &state["vm_config"];
        let from = |k: &str| cfg.get(k).cloned().unwrap_or(Value::Null);
        // Re-create the configuration through the same handlers (same validation).
        let res = (|| -> Result<(), Response> {
            let mc: MachineConfig =
                serde_json::from_value(from("machine-config")).map_err(|e| fail(e.to_string()))?;
            let mut mc = mc;
            if let Some(t) = l.track_dirty_pages {
                mc.track_dirty_pages = t;
            }
            self.put_machine(mc)?;
            if !from("boot-source").is_null() {
                self.put_boot_source(
                    serde_json::from_value(from("boot-source")).map_err(|e| fail(e.to_string()))?,
                )?;
            }
            let drives: Vec<Drive> =
                serde_json::from_value(from("drives")).map_err(|e| fail(e.to_string()))?;
            for d in drives {
                self.put_drive(d)?;
            }
            let nets: Vec<NetworkInterface> = serde_json::from_value(from("network-interfaces"))
                .map_err(|e| fail(e.to_string()))?;
            for o in &l.network_overrides {
                if !nets.iter().any(|n| n.iface_id == o.iface_id) {
                    // Firecracker's words (it checks while reading the state file).
                    return Err(fail(format!("{STATE_FILE}Unknown Network Device.")));
                }
            }
            for mut n in nets {
                if let Some(o) = l
                    .network_overrides
                    .iter()
                    .find(|o| o.iface_id == n.iface_id)
                {
                    n.host_dev_name = o.host_dev_name.clone();
                }
                self.put_net(n)?;
            }
            let vs = from("vsock");
            if !vs.is_null() {
                let mut v: Vsock = serde_json::from_value(vs).map_err(|e| fail(e.to_string()))?;
                if let Some(o) = &l.vsock_override {
                    v.uds_path = o.uds_path.clone();
                }
                self.put_vsock(v)?;
            } else if l.vsock_override.is_some() {
                return Err(fail(
                    "vsock override given but the snapshot has no vsock device".into(),
                ));
            }
            if !from("entropy").is_null() {
                self.put_entropy(
                    serde_json::from_value(from("entropy")).map_err(|e| fail(e.to_string()))?,
                )?;
            }
            Ok(())
        })();
        res?;
        self.log.warn("fc_vmm", MEMORY_NOTE);
        self.start(!l.resume_vm).map_err(fail)?;
        Ok(Response::no_content())
    }

    /// Stops relays, kills the guest, removes what the VMM created. Idempotent.
    pub fn shutdown(&mut self) {
        if let Some(mut s) = self.stopper.take() {
            s.stop();
        }
        if let Some(h) = &self.helper
            && self.state != State::NotStarted
        {
            let _ = helper::send(h.sock.as_raw_fd(), &HelperRequest::Kill, &[]);
        }
        if let Some(v) = self.vsock.take() {
            let _ = std::fs::remove_file(&v.cfg.uds_path);
        }
        if let Some(r) = self.runtime.take() {
            // Our own directory (the guest's mounts live only in its mount namespace; symlinks
            // are not followed): everything in it goes, including the guest's sockets.
            let _ = std::fs::remove_dir_all(&r);
        }
        self.drives.clear();
        self.nets.clear();
    }
}

fn path_id(id: Option<&str>) -> Result<String, Response> {
    let id = id.unwrap_or("");
    checked_id(id).map_err(bad)?;
    Ok(id.to_owned())
}

fn unsupported(what: &str) -> Response {
    bad(format!(
        "firecracker-standin does not emulate /{what} (test equipment: only what vmsan uses)."
    ))
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Starts the privileged helper as a child (`/proc/self/exe` in the helper role).
pub fn spawn_helper() -> io::Result<OwnedFd> {
    let (ours, theirs) = helper::pair()?;
    crate::sys::clear_cloexec(&theirs)?;
    let exe = std::fs::read_link("/proc/self/exe")?;
    // The arguments only label the process (`ps`, leak checks); the role comes from the env.
    let child = std::process::Command::new(exe)
        .args(["standin-helper-of", &std::process::id().to_string()])
        .env(helper::ROLE_ENV, "helper")
        .env(helper::HELPER_FD_ENV, theirs.as_raw_fd().to_string())
        .stdin(std::process::Stdio::null())
        .spawn()?;
    drop(theirs);
    // The helper exits by itself when our end closes; reap it in the background.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    Ok(ours)
}

/// Shared handle used by the API server threads.
pub type SharedVmm = Arc<Mutex<Vmm>>;
