//! `firecracker-standin`'s process: command line, API socket, exit.

use std::io::BufReader;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use crate::api::{Level, validate_instance_id};
use crate::args::{self, Spec};
use crate::helper;
use crate::http::{self, ReadOutcome, Request};
use crate::log::Logger;
use crate::vmm::{FC_VERSION, SharedVmm, Vmm};

/// Exit code Firecracker uses for argument errors.
pub const EXIT_ARG_PARSING: i32 = 153;
/// Exit code Firecracker uses for a bad configuration file / start failure.
pub const EXIT_BAD_CONFIGURATION: i32 = 152;
/// Generic failure.
pub const EXIT_GENERIC: i32 = 1;

const SPECS: &[Spec] = &[
    args::value("api-sock"),
    args::value("id"),
    args::value("seccomp-filter"),
    args::flag("no-seccomp"),
    args::value("start-time-us"),
    args::value("start-time-cpu-us"),
    args::value("parent-cpu-time-us"),
    args::value("config-file"),
    args::value("metadata"),
    args::flag("no-api"),
    args::value("log-path"),
    args::value("level"),
    args::value("module"),
    args::flag("show-level"),
    args::flag("show-log-origin"),
    args::value("metrics-path"),
    args::flag("boot-timer"),
    args::flag("version"),
    args::value("snapshot-version"),
    args::value("describe-snapshot"),
    args::value("http-api-max-payload-size"),
    args::value("mmds-size-limit"),
    args::flag("enable-pci"),
];

static EXITING: OnceLock<()> = OnceLock::new();

/// Runs `firecracker-standin` with `argv` (without argv[0]); returns the exit code.
pub fn main(argv: &[String]) -> i32 {
    if std::env::var(helper::ROLE_ENV).as_deref() == Ok("helper") {
        return run_helper_role();
    }
    if let Err(e) = crate::jailer::enter_jail_from_env() {
        eprintln!("firecracker-standin: entering the jail: {e}");
        return EXIT_GENERIC;
    }
    let parsed = match args::parse(SPECS, argv) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Arguments parsing error: {e} \n\nFor more information try --help.");
            return EXIT_ARG_PARSING;
        }
    };
    if parsed.flag("help") {
        println!("Firecracker v{FC_VERSION} (firecracker-standin, test equipment)\n");
        for s in SPECS {
            println!(
                "  --{}{}",
                s.name,
                if s.takes_value { " <value>" } else { "" }
            );
        }
        return 0;
    }
    if parsed.flag("version") {
        println!("Firecracker v{FC_VERSION}\n");
        return 0;
    }
    if parsed.flag("no-seccomp") && parsed.value("seccomp-filter").is_some() {
        eprintln!(
            "Arguments parsing error: Argument 'no-seccomp' cannot be used together with argument 'seccomp-filter'. \n\nFor more information try --help."
        );
        return EXIT_ARG_PARSING;
    }
    if parsed.flag("no-api") && parsed.value("config-file").is_none() {
        eprintln!(
            "Arguments parsing error: Argument 'config-file' required, but not found. \n\nFor more information try --help."
        );
        return EXIT_ARG_PARSING;
    }
    let id = parsed
        .value("id")
        .unwrap_or("anonymous-instance")
        .to_owned();
    if let Err(e) = validate_instance_id(&id) {
        eprintln!("Invalid instance ID: {e}");
        return EXIT_GENERIC;
    }
    if let Some(f) = parsed.value("seccomp-filter")
        && let Err(e) = std::fs::metadata(f)
    {
        eprintln!("Seccomp error: Failed to open the seccomp filter file {f}: {e}");
        return EXIT_GENERIC;
    }
    let level = match parsed.value("level") {
        Some(l) => match Level::parse(l) {
            Some(l) => Some(l),
            None => {
                eprintln!(
                    "Invalid value for logger level: {l}.Possible values: [Error, Warning, Info, Debug]"
                );
                return EXIT_GENERIC;
            }
        },
        None => None,
    };
    let logger = Arc::new(Logger::new(&id));
    if let Some(p) = parsed.value("log-path")
        && let Err(e) = logger.configure(Some(p), level, Some(parsed.flag("show-level")))
    {
        eprintln!("Failed to initialize logger: Failed to open target file: {e}");
        return EXIT_GENERIC;
    }
    logger.info("main", &format!("Running Firecracker v{FC_VERSION}"));
    logger.warn(
        "main",
        "This is firecracker-standin: test equipment that runs the initrd's /init in namespaces instead of a kernel under KVM.",
    );

    let helper_fd = match std::env::var(helper::HELPER_FD_ENV) {
        Ok(v) => {
            // SAFETY-free: the env var is ours; remove it so nothing downstream inherits it.
            // (Removing env vars is unsafe in edition 2024 only because of threads; we have none yet.)
            let n: i32 = match v.parse() {
                Ok(n) => n,
                Err(_) => {
                    eprintln!("{}: not a descriptor number", helper::HELPER_FD_ENV);
                    return EXIT_GENERIC;
                }
            };
            match helper::adopt_fd(n) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    eprintln!("firecracker-standin: {e}");
                    return EXIT_GENERIC;
                }
            }
        }
        Err(_) => None,
    };

    let api_sock = PathBuf::from(
        parsed
            .value("api-sock")
            .unwrap_or("/run/firecracker.socket"),
    );
    let sock_for_exit = api_sock.clone();
    let vmm_cell: Arc<OnceLock<SharedVmm>> = Arc::new(OnceLock::new());
    let cell2 = Arc::clone(&vmm_cell);
    let log2 = Arc::clone(&logger);
    let exit: Arc<dyn Fn(String) + Send + Sync> = Arc::new(move |status: String| {
        if EXITING.set(()).is_err() {
            return;
        }
        log2.info(
            "fc_vmm",
            &format!("Guest init ended ({status}); firecracker-standin exits."),
        );
        if let Some(v) = cell2.get()
            && let Ok(mut g) = v.lock()
        {
            g.shutdown();
        }
        let _ = std::fs::remove_file(&sock_for_exit);
        log2.info("main", "Firecracker exiting successfully. exit_code=0");
        std::process::exit(0);
    });
    let vmm: SharedVmm = Arc::new(Mutex::new(Vmm::new(
        &id,
        Arc::clone(&logger),
        helper_fd,
        exit,
        parsed.flag("boot-timer"),
    )));
    let _ = vmm_cell.set(Arc::clone(&vmm));

    if let Some(cfg) = parsed.value("config-file")
        && let Err(e) = apply_config_file(&vmm, cfg)
    {
        logger.error("main", &e);
        eprintln!("{e}");
        return EXIT_BAD_CONFIGURATION;
    }
    if parsed.flag("no-api") {
        loop {
            std::thread::park();
        }
    }

    let listener = match UnixListener::bind(&api_sock) {
        Ok(l) => l,
        Err(e) => {
            let msg = format!(
                "Failed to open the API socket at: {}. Check that it is not already used. ({e})",
                api_sock.display()
            );
            logger.error("main", &msg);
            eprintln!("{msg}");
            return EXIT_GENERIC;
        }
    };
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let vmm = Arc::clone(&vmm);
        let spawned = std::thread::Builder::new()
            .name("fc_api".into())
            .spawn(move || serve_connection(conn, vmm));
        if spawned.is_err() {
            logger.error("fc_api", "cannot spawn a connection thread");
        }
    }
    EXIT_GENERIC
}

fn serve_connection(conn: std::os::unix::net::UnixStream, vmm: SharedVmm) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        match http::read_request(&mut reader) {
            Ok(ReadOutcome::Request(req)) => {
                let resp = match vmm.lock() {
                    Ok(mut v) => v.handle(&req),
                    Err(_) => http::Response::fault(500, "Internal VMM error: poisoned state"),
                };
                if http::write_response(&mut writer, &resp).is_err() {
                    return;
                }
            }
            Ok(ReadOutcome::Bad(resp)) => {
                let _ = http::write_response(&mut writer, &resp);
                return;
            }
            Ok(ReadOutcome::Closed) | Err(_) => return,
        }
    }
}

fn apply_config_file(vmm: &SharedVmm, path: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("Configuration for VMM from one single json failed: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        format!("Configuration for VMM from one single json failed: Invalid JSON: {e}")
    })?;
    let obj = v
        .as_object()
        .ok_or("Configuration for VMM from one single json failed: not an object")?;
    const KNOWN: &[&str] = &[
        "balloon",
        "drives",
        "boot-source",
        "cpu-config",
        "logger",
        "machine-config",
        "metrics",
        "mmds-config",
        "network-interfaces",
        "vsock",
        "entropy",
        "pmem",
        "memory-hotplug",
    ];
    for k in obj.keys() {
        if !KNOWN.contains(&k.as_str()) {
            return Err(format!(
                "Configuration for VMM from one single json failed: Invalid JSON: unknown field `{k}`"
            ));
        }
    }
    let mut reqs: Vec<Request> = Vec::new();
    let mut put = |path: String, body: &serde_json::Value| {
        reqs.push(Request {
            method: "PUT".into(),
            path,
            body: Some(body.to_string().into_bytes()),
        });
    };
    for key in [
        "logger",
        "metrics",
        "machine-config",
        "boot-source",
        "vsock",
        "entropy",
    ] {
        if let Some(b) = obj.get(key).filter(|b| !b.is_null()) {
            put(format!("/{key}"), b);
        }
    }
    for d in obj
        .get("drives")
        .and_then(|d| d.as_array())
        .into_iter()
        .flatten()
    {
        put(
            format!("/drives/{}", d["drive_id"].as_str().unwrap_or("")),
            d,
        );
    }
    for n in obj
        .get("network-interfaces")
        .and_then(|d| d.as_array())
        .into_iter()
        .flatten()
    {
        put(
            format!(
                "/network-interfaces/{}",
                n["iface_id"].as_str().unwrap_or("")
            ),
            n,
        );
    }
    reqs.push(Request {
        method: "PUT".into(),
        path: "/actions".into(),
        body: Some(br#"{"action_type":"InstanceStart"}"#.to_vec()),
    });
    let mut g = vmm.lock().map_err(|_| "poisoned")?;
    for r in reqs {
        let resp = g.handle(&r);
        if resp.status >= 300 {
            return Err(format!(
                "Configuration for VMM from one single json failed: {} {}",
                r.path,
                resp.body.unwrap_or_default()
            ));
        }
    }
    Ok(())
}

fn run_helper_role() -> i32 {
    let fd = match std::env::var(helper::HELPER_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        Some(n) => n,
        None => {
            eprintln!(
                "firecracker-standin helper: {} missing",
                helper::HELPER_FD_ENV
            );
            return EXIT_GENERIC;
        }
    };
    let sock = match helper::adopt_fd(fd) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("firecracker-standin helper: {e}");
            return EXIT_GENERIC;
        }
    };
    match helper::run(sock, std::path::Path::new("/")) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("firecracker-standin helper: {e}");
            EXIT_GENERIC
        }
    }
}
