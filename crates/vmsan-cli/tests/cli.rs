//! The `vmsan` binary end to end: rejected forms of every flag of every command (with the
//! exact error code, in `--json` mode), the one-JSON-document rule, human error format,
//! help/version/completion, and what commands say about things that do not exist.
//!
//! Validation runs before the root check, so these tests mean the same as root or not.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers may unwrap.

use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;

fn vmsan() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmsan"));
    // A store that does not exist: reading commands see no VMs, nothing is ever written.
    c.env("VMSAN_HOME", "/nonexistent/vmsan-cli-tests")
        .env_remove("NO_COLOR");
    c
}

/// Parse stdout as exactly one JSON document followed by one newline, and nothing else.
fn one_json_document(out: &Output) -> Value {
    let stdout = std::str::from_utf8(&out.stdout).expect("stdout is UTF-8");
    assert!(
        stdout.ends_with('\n'),
        "stdout must end with a newline: {stdout:?}"
    );
    assert_eq!(
        stdout.matches('\n').count(),
        1,
        "exactly one line on stdout: {stdout:?}"
    );
    let mut docs = serde_json::Deserializer::from_str(stdout).into_iter::<Value>();
    let doc = docs.next().expect("a document").expect("valid JSON");
    assert!(
        docs.next().is_none(),
        "a second document on stdout: {stdout:?}"
    );
    assert!(doc.is_object(), "{doc}");
    doc
}

/// Run with `--json` first on the line and return (exit code, document).
fn json_run(args: &[&str]) -> (i32, Value) {
    let out = vmsan()
        .arg("--json")
        .args(args)
        .output()
        .expect("run vmsan");
    let doc = one_json_document(&out);
    (out.status.code().expect("exit code"), doc)
}

/// Assert that `args` fails with `code` in `--json` mode, exit 1.
fn rejects(args: &[&str], code: &str) {
    let (rc, doc) = json_run(args);
    assert_eq!(doc["error"]["code"], code, "vmsan --json {args:?} -> {doc}");
    assert_eq!(rc, 1, "vmsan --json {args:?}");
    for field in ["message", "why", "fix"] {
        assert!(
            doc["error"].get(field).is_some(),
            "error.{field} missing: {doc}"
        );
    }
    assert!(
        doc["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

fn nix_is_root() -> bool {
    // Effective uid from our own status file.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

const VM: &str = "vm-0123abcd";
const ARGS: &str = "ERR_VALIDATION_ARGS";

macro_rules! rejected {
    ($($name:ident: [$($arg:expr),* $(,)?] => $code:expr;)*) => {
        $(
            #[test]
            fn $name() {
                rejects(&[$($arg),*], $code);
            }
        )*
    };
}

// create: every flag.
rejected! {
    create_vcpus_zero: ["create", "--vcpus", "0"] => "ERR_VALIDATION_INTEGER";
    create_vcpus_too_many: ["create", "--vcpus", "33"] => "ERR_VALIDATION_INTEGER";
    create_vcpus_word: ["create", "--vcpus", "two"] => "ERR_VALIDATION_INTEGER";
    create_vcpus_negative: ["create", "--vcpus", "-1"] => "ERR_VALIDATION_INTEGER";
    create_vcpus_missing_value: ["create", "--vcpus"] => ARGS;
    create_memory_small: ["create", "--memory", "64"] => "ERR_VALIDATION_INTEGER";
    create_memory_large: ["create", "--memory", "64g"] => "ERR_VALIDATION_INTEGER";
    create_memory_unit: ["create", "--memory", "1t"] => "ERR_VALIDATION_INTEGER";
    create_kernel_empty: ["create", "--kernel", ""] => "ERR_VALIDATION_PATH";
    create_rootfs_empty: ["create", "--rootfs", ""] => "ERR_VALIDATION_PATH";
    create_rootfs_and_image: ["create", "--rootfs", "/r", "--from-image", "alpine"] => "ERR_VALIDATION_FLAGS";
    create_from_image_empty: ["create", "--from-image", ""] => "ERR_VALIDATION_IMAGE_REF";
    create_from_image_empty_tag: ["create", "--from-image", "alpine:"] => "ERR_VALIDATION_IMAGE_REF";
    create_pull_bad: ["create", "--from-image", "a", "--pull", "sometimes"] => ARGS;
    create_pull_without_image: ["create", "--pull", "never"] => "ERR_VALIDATION_FLAGS";
    create_init_bad: ["create", "--init", "systemd"] => ARGS;
    create_runtime_bad: ["create", "--runtime", "node18"] => "ERR_VALIDATION_RUNTIME";
    create_runtime_and_image: ["create", "--runtime", "node22", "--from-image", "a"] => "ERR_VALIDATION_FLAGS";
    create_project_control: ["create", "--project", "a\nb"] => ARGS;
    create_disk_zero: ["create", "--disk", "0"] => "ERR_VALIDATION_DISK_SIZE";
    create_disk_huge: ["create", "--disk", "2000gb"] => "ERR_VALIDATION_DISK_SIZE";
    create_disk_mib: ["create", "--disk", "512m"] => "ERR_VALIDATION_DISK_SIZE";
    create_timeout_zero: ["create", "--timeout", "0"] => "ERR_VALIDATION_DURATION";
    create_timeout_word: ["create", "--timeout", "soon"] => "ERR_VALIDATION_DURATION";
    create_timeout_unit: ["create", "--timeout", "5w"] => "ERR_VALIDATION_DURATION";
    create_timeout_bare_number: ["create", "--timeout", "1"] => "ERR_VALIDATION_DURATION";
    exec_timeout_bare_number: ["exec", "--timeout", "30", VM, "ls"] => "ERR_VALIDATION_DURATION";
    create_port_zero: ["create", "--publish-port", "0"] => "ERR_VALIDATION_PORT";
    create_port_high: ["create", "--publish-port", "70000"] => "ERR_VALIDATION_PORT";
    create_port_proto: ["create", "--publish-port", "80/sctp"] => "ERR_VALIDATION_PORT";
    create_port_agent: ["create", "--publish-port", "9119"] => "ERR_VALIDATION_PORT";
    create_port_empty_item: ["create", "--publish-port", "80,"] => "ERR_VALIDATION_PORT";
    create_port_twice: ["create", "--publish-port", "8080:80", "--publish-port", "8080"] => "ERR_VALIDATION_PORT_CONFLICT";
    create_snapshot_bad: ["create", "--snapshot", "../x"] => "ERR_VALIDATION_ID";
    create_snapshot_and_vcpus: ["create", "--snapshot", "vm-0123abcd-1", "--vcpus", "2"] => "ERR_VALIDATION_FLAGS";
    create_policy_bad: ["create", "--network-policy", "open"] => "ERR_VALIDATION_NETWORK_POLICY";
    create_domain_space: ["create", "--allowed-domain", "bad domain"] => "ERR_VALIDATION_DOMAIN";
    create_domain_inner_star: ["create", "--allowed-domain", "a.*.com"] => "ERR_VALIDATION_DOMAIN";
    create_allowed_cidr_prefix: ["create", "--allowed-cidr", "10.0.0.0/33"] => "ERR_VALIDATION_CIDR";
    create_allowed_cidr_v6: ["create", "--allowed-cidr", "::/0"] => "ERR_VALIDATION_CIDR";
    create_denied_cidr_octet: ["create", "--denied-cidr", "300.0.0.0/8"] => "ERR_VALIDATION_CIDR";
    create_deny_all_allowed_domain: ["create", "--network-policy", "deny-all", "--allowed-domain", "a.com"] => "ERR_VALIDATION_POLICY_CONFLICT";
    create_deny_all_allowed_cidr: ["create", "--network-policy", "deny-all", "--allowed-cidr", "1.1.1.1"] => "ERR_VALIDATION_POLICY_CONFLICT";
    create_deny_all_allow_udp: ["create", "--network-policy", "deny-all", "--allow-udp"] => "ERR_VALIDATION_POLICY_CONFLICT";
    create_allow_udp_value: ["create", "--allow-udp=yes"] => ARGS;
    create_bandwidth_zero: ["create", "--bandwidth", "0"] => "ERR_VALIDATION_INTEGER";
    create_bandwidth_high: ["create", "--bandwidth", "2000mbit"] => "ERR_VALIDATION_INTEGER";
    create_bandwidth_unit: ["create", "--bandwidth", "10gbit"] => "ERR_VALIDATION_INTEGER";
    create_dns_short: ["create", "--dns", "1.1.1"] => "ERR_VALIDATION_CIDR";
    create_dns_v6: ["create", "--dns", "2606:4700::1111"] => "ERR_VALIDATION_CIDR";
    create_no_seccomp_value: ["create", "--no-seccomp=true"] => ARGS;
    create_no_pid_ns_value: ["create", "--no-pid-ns=1"] => ARGS;
    create_no_cgroup_value: ["create", "--no-cgroup=yes"] => ARGS;
    create_no_netns_value: ["create", "--no-netns=no"] => ARGS;
    create_no_jailer_value: ["create", "--no-jailer=false"] => ARGS;
    create_seccomp_negation_is_not_a_flag: ["create", "--seccomp"] => ARGS;
    create_count_zero: ["create", "--count", "0"] => "ERR_VALIDATION_INTEGER";
    create_count_high: ["create", "--count", "101"] => "ERR_VALIDATION_INTEGER";
    create_count_connect: ["create", "--count", "2", "--connect"] => "ERR_VALIDATION_FLAGS";
    create_count_ports: ["create", "--count", "2", "--publish-port", "80"] => "ERR_VALIDATION_FLAGS";
    create_connect_json: ["create", "--connect"] => "ERR_VALIDATION_FLAGS";
    create_silent_value: ["create", "--silent=1"] => ARGS;
    create_unknown_flag: ["create", "--cpus", "2"] => ARGS;
    create_positional: ["create", "extra"] => ARGS;
}

// exec.
rejected! {
    exec_no_command: ["exec", VM] => ARGS;
    exec_no_vm: ["exec"] => ARGS;
    exec_bad_vm: ["exec", "vm-xyz", "ls"] => "ERR_VALIDATION_ID";
    exec_env_bad: ["exec", "-e", "NOEQUALS", VM, "env"] => "ERR_VALIDATION_ENV";
    exec_env_bad_key: ["exec", "--env", "1X=1", VM, "env"] => "ERR_VALIDATION_ENV";
    exec_workdir_relative: ["exec", "-w", "app", VM, "ls"] => "ERR_VALIDATION_PATH";
    exec_workdir_long_relative: ["exec", "--workdir", "app", VM, "ls"] => "ERR_VALIDATION_PATH";
    exec_user_bad: ["exec", "--user", "a b", VM, "id"] => ARGS;
    exec_sudo_and_user: ["exec", "--sudo", "--user", "u", VM, "id"] => "ERR_VALIDATION_FLAGS";
    exec_sudo_value: ["exec", "--sudo=1", VM, "id"] => ARGS;
    exec_timeout_bad: ["exec", "--timeout", "0s", VM, "ls"] => "ERR_VALIDATION_DURATION";
    exec_interactive_json: ["exec", "-i", VM, "sh"] => "ERR_VALIDATION_FLAGS";
    exec_interactive_long_json: ["exec", "--interactive", VM, "sh"] => "ERR_VALIDATION_FLAGS";
    exec_tty_value: ["exec", "--tty=1", VM, "sh"] => ARGS;
    exec_no_extend_timeout_value: ["exec", "--no-extend-timeout=1", VM, "sh"] => ARGS;
    exec_unknown_flag_as_command: ["exec", VM, "--workdr", "/x", "ls"] => ARGS;
}

// Everything else.
rejected! {
    list_extra: ["list", "x"] => ARGS;
    ls_flag: ["ls", "--all"] => ARGS;
    inspect_no_vm: ["inspect"] => ARGS;
    inspect_bad_vm: ["inspect", "vm-0123ABCD"] => "ERR_VALIDATION_ID";
    inspect_traversal: ["inspect", "../../etc"] => "ERR_VALIDATION_ID";
    inspect_missing_vm: ["inspect", VM] => "ERR_VM_NOT_FOUND";
    logs_bad_vm: ["logs", "nope"] => "ERR_VALIDATION_ID";
    logs_tail_bad: ["logs", VM, "--tail", "x"] => "ERR_VALIDATION_INTEGER";
    logs_tail_negative: ["logs", VM, "--tail", "-5"] => "ERR_VALIDATION_INTEGER";
    logs_follow_json: ["logs", VM, "-f"] => "ERR_VALIDATION_FLAGS";
    logs_follow_long_json: ["logs", VM, "--follow"] => "ERR_VALIDATION_FLAGS";
    logs_missing_vm: ["logs", VM] => "ERR_VM_NOT_FOUND";
    start_no_vm: ["start"] => ARGS;
    start_bad_vm: ["start", "x"] => "ERR_VALIDATION_ID";
    stop_no_vm: ["stop"] => ARGS;
    stop_bad_vm: ["stop", VM, "vm-1"] => "ERR_VALIDATION_ID";
    remove_no_vm: ["remove"] => ARGS;
    remove_bad_vm: ["remove", "-f", "../x"] => "ERR_VALIDATION_ID";
    rm_bad_vm: ["rm", "x"] => "ERR_VALIDATION_ID";
    remove_force_value: ["rm", "--force=yes", VM] => ARGS;
    connect_bad_vm: ["connect", "x"] => "ERR_VALIDATION_ID";
    connect_bad_session: ["connect", VM, "-s", "../x"] => "ERR_VALIDATION_ID";
    connect_bad_session_long: ["connect", VM, "--session", "a b"] => "ERR_VALIDATION_ID";
    connect_json: ["connect", VM] => "ERR_VALIDATION_FLAGS";
    upload_no_files: ["upload", VM] => ARGS;
    upload_bad_vm: ["upload", "x", "f"] => "ERR_VALIDATION_ID";
    upload_dest_relative: ["upload", VM, "f", "-d", "root"] => "ERR_VALIDATION_PATH";
    upload_dest_long_relative: ["upload", VM, "f", "--dest", "root"] => "ERR_VALIDATION_PATH";
    upload_empty_file: ["upload", VM, ""] => "ERR_VALIDATION_PATH";
    download_no_path: ["download", VM] => ARGS;
    download_relative: ["download", VM, "etc/hosts"] => "ERR_VALIDATION_PATH";
    download_dest_empty: ["download", VM, "/etc/hosts", "-d", ""] => "ERR_VALIDATION_PATH";
    download_dest_long_empty: ["download", VM, "/etc/hosts", "--dest", ""] => "ERR_VALIDATION_PATH";
    network_no_policy: ["network", VM] => ARGS;
    network_bad_policy: ["network", VM, "--network-policy", "none"] => "ERR_VALIDATION_NETWORK_POLICY";
    network_bad_domain: ["network", VM, "--network-policy", "custom", "--allowed-domain", "a-.com"] => "ERR_VALIDATION_DOMAIN";
    network_bad_allowed_cidr: ["network", VM, "--network-policy", "custom", "--allowed-cidr", "1.2.3.4/40"] => "ERR_VALIDATION_CIDR";
    network_bad_denied_cidr: ["network", VM, "--network-policy", "custom", "--denied-cidr", "x"] => "ERR_VALIDATION_CIDR";
    network_conflict: ["network", VM, "--network-policy", "deny-all", "--denied-cidr", "10.0.0.0/8"] => "ERR_VALIDATION_POLICY_CONFLICT";
    network_allow_udp_conflict: ["network", VM, "--network-policy", "deny-all", "--allow-udp"] => "ERR_VALIDATION_POLICY_CONFLICT";
    network_allow_lan_conflict: ["network", VM, "--network-policy", "deny-all", "--allow-lan"] => "ERR_VALIDATION_POLICY_CONFLICT";
    create_deny_all_allow_lan: ["create", "--network-policy", "deny-all", "--allow-lan"] => "ERR_VALIDATION_POLICY_CONFLICT";
    network_bad_vm: ["network", "x", "--network-policy", "deny-all"] => "ERR_VALIDATION_ID";
    snapshot_no_sub: ["snapshot"] => ARGS;
    snapshot_bad_sub: ["snapshot", "restore", VM] => ARGS;
    snapshot_create_bad_vm: ["snapshot", "create", "x"] => "ERR_VALIDATION_ID";
    snapshot_create_resume_value: ["snapshot", "create", VM, "--resume=false"] => ARGS;
    snapshot_create_no_resume_value: ["snapshot", "create", VM, "--no-resume=1"] => ARGS;
    snapshot_delete_none: ["snapshot", "delete"] => ARGS;
    snapshot_delete_traversal: ["snapshot", "delete", "../.."] => "ERR_VALIDATION_ID";
    snapshot_rm_bad: ["snapshot", "rm", "vm-0123abcd-"] => "ERR_VALIDATION_ID";
    snapshot_list_extra: ["snapshot", "ls", "x"] => ARGS;
    setup_bad_url: ["setup", "--release-url", "ftp://x"] => ARGS;
    setup_empty_firecracker: ["setup", "--firecracker", ""] => "ERR_VALIDATION_PATH";
    setup_empty_jailer: ["setup", "--jailer", ""] => "ERR_VALIDATION_PATH";
    setup_empty_kernel: ["setup", "--kernel", ""] => "ERR_VALIDATION_PATH";
    setup_empty_agent: ["setup", "--agent", ""] => "ERR_VALIDATION_PATH";
    setup_force_value: ["setup", "--force=1"] => ARGS;
    setup_bad_image_compression: ["setup", "--image-compression", "gzip"] => ARGS;
    setup_no_image_compression: ["setup", "--image-compression"] => ARGS;
    image_no_sub: ["image"] => ARGS;
    image_ls_extra: ["image", "ls", "x"] => ARGS;
    image_pull_empty: ["image", "pull", ""] => "ERR_VALIDATION_IMAGE_REF";
    image_pull_no_ref: ["image", "pull"] => ARGS;
    image_pull_platform: ["image", "pull", "alpine", "--platform", "x86_64"] => ARGS;
    image_import_no_name: ["image", "import", "a.tar"] => ARGS;
    image_import_bad_name: ["image", "import", "a.tar", "--name", "a:"] => "ERR_VALIDATION_IMAGE_REF";
    image_import_empty_path: ["image", "import", "", "--name", "a"] => "ERR_VALIDATION_PATH";
    image_rm_none: ["image", "rm"] => ARGS;
    image_rm_bad: ["image", "rm", "a@"] => "ERR_VALIDATION_IMAGE_REF";
    image_prune_all_value: ["image", "prune", "--all=1"] => ARGS;
    completion_no_shell: ["completion"] => ARGS;
    completion_bad_shell: ["completion", "tcsh"] => ARGS;
    version_extra: ["version", "x"] => ARGS;
    doctor_extra: ["doctor", "--fix"] => ARGS;
    no_command: [] => ARGS;
    unknown_command: ["destroy"] => ARGS;
    unknown_global_flag: ["--colour", "list"] => ARGS;
    global_verbose_value: ["--verbose=1", "list"] => ARGS;
    global_json_value: ["list", "--json=true"] => ARGS;
    repeated_single_value_flag: ["create", "--vcpus", "2", "--vcpus", "3"] => ARGS;
}

#[test]
fn json_flag_anywhere_and_usage_errors_stay_json() {
    for args in [
        vec!["--json", "create", "--vcpus", "0"],
        vec!["create", "--json", "--vcpus", "0"],
        vec!["create", "--vcpus", "0", "--json"],
    ] {
        let out = vmsan().args(&args).output().unwrap();
        let doc = one_json_document(&out);
        assert_eq!(doc["error"]["code"], "ERR_VALIDATION_INTEGER", "{args:?}");
        assert_eq!(doc["error"]["flag"], "--vcpus");
        assert!(
            out.stderr.is_empty(),
            "nothing on stderr in --json mode: {args:?}"
        );
    }
    // A clap usage error with --json after the error point.
    let out = vmsan()
        .args(["create", "--nope", "--json"])
        .output()
        .unwrap();
    assert_eq!(one_json_document(&out)["error"]["code"], ARGS);
}

#[test]
fn every_json_invocation_prints_one_document() {
    for args in [
        vec!["list"],
        vec!["ls"],
        vec!["version"],
        vec!["--version"],
        vec!["--help"],
        vec!["create", "--help"],
        vec!["completion", "bash"],
        vec!["completion", "fish"],
        vec!["snapshot", "list"],
        vec!["image", "ls"],
        vec!["create"],
        vec!["exec", VM, "echo", "--json"],
        vec!["inspect", VM],
        vec!["bogus"],
    ] {
        let out = vmsan().arg("--json").args(&args).output().unwrap();
        one_json_document(&out);
    }
    // Reading commands never create the home (as root, `image ls` once made the whole tree).
    assert!(
        !std::path::Path::new("/nonexistent/vmsan-cli-tests").exists(),
        "a reading command created the vmsan home"
    );
}

#[test]
fn version_help_and_completion() {
    let (rc, doc) = json_run(&["version"]);
    assert_eq!(rc, 0);
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["schemaVersion"], 1);
    let (rc, doc) = json_run(&["--version"]);
    assert_eq!(
        (rc, &doc["version"]),
        (0, &Value::from(env!("CARGO_PKG_VERSION")))
    );
    let (rc, doc) = json_run(&["exec", "--help"]);
    assert_eq!(rc, 0);
    assert!(
        doc["help"]
            .as_str()
            .unwrap()
            .contains("--no-extend-timeout")
    );

    let out = vmsan().arg("version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("vmsan {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = vmsan().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));

    let out = vmsan().args(["completion", "bash"]).output().unwrap();
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    for word in [
        "vmsan",
        "create",
        "exec",
        "snapshot",
        "--no-seccomp",
        "--publish-port",
    ] {
        assert!(script.contains(word), "completion lacks {word}");
    }
    let (_, doc) = json_run(&["completion", "zsh"]);
    assert!(doc["script"].as_str().unwrap().contains("#compdef vmsan"));
}

#[test]
fn human_errors_go_to_stderr_with_why_and_fix() {
    let out = vmsan().args(["create", "--vcpus", "99"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("ERROR Invalid --vcpus: \"99\". Must be an integer between 1 and 32.\n"),
        "{err}"
    );
    assert!(err.contains("\n  Fix: "), "{err}");
    assert!(
        !err.contains('\x1b'),
        "no colours when stderr is not a terminal: {err:?}"
    );

    let out = vmsan()
        .args([
            "create",
            "--network-policy",
            "deny-all",
            "--allowed-cidr",
            "1.1.1.1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("  Why: deny-all blocks all traffic"), "{err}");

    let out = vmsan().args(["create", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("ERROR unexpected argument '--bogus' found"),
        "{err}"
    );
    assert!(err.contains("Usage: vmsan create [OPTIONS]"), "{err}");
}

/// Commands that have landed get past validation to their real work: in an empty vmsan home
/// that is "no kernel" for `create`, "not found" for commands naming a VM. (The typed values of
/// every flag are checked in `convert.rs`'s unit tests.)
#[test]
fn implemented_commands_validate_then_work() {
    if !nix_is_root() {
        vmsan_testkit::skip!("these commands need root; the root-check tests cover non-root users");
        return;
    }
    let full_create = [
        "create",
        "--vcpus",
        "2",
        "--memory",
        "1g",
        "--disk",
        "20gb",
        "--timeout",
        "1h30m",
        "--publish-port",
        "8080:80,53/udp",
        "--allowed-domain",
        "*.GitHub.com",
        "--dns",
        "1.1.1.1",
        "--no-seccomp",
        "--bandwidth",
        "100mbit",
        "--from-image",
        "alpine:3.20",
        "--pull",
        "never",
        "--init",
        "image",
        "--project",
        "p",
        "--count",
        "1",
        "--silent",
        "--allow-udp",
    ];
    rejects(&full_create, "ERR_SETUP_NO_KERNEL");
    // There is no --no-netns: a VM without its own network namespace could not have egress
    // rules that hold (they would have to live in the host's namespace).
    rejects(&["create", "--no-netns"], "ERR_VALIDATION_ARGS");
    for args in [
        vec!["start", VM],
        vec!["stop", VM],
        vec!["remove", "--force", VM],
        vec!["rm", VM],
        vec!["exec", VM, "ls", "-la", "/tmp"],
        vec!["upload", VM, "/etc/hostname"],
        vec!["download", VM, "/etc/hostname"],
        vec!["network", VM, "--network-policy", "deny-all"],
    ] {
        rejects(&args, "ERR_VM_NOT_FOUND");
    }
}

#[test]
fn snapshot_commands_on_an_empty_store() {
    rejects(&["snapshot", "create", VM], "ERR_VM_NOT_FOUND");
    rejects(&["snapshot", "create", VM, "--diff"], "ERR_VM_NOT_FOUND");
    rejects(
        &[
            "snapshot",
            "export",
            "vm-0123abcd-1",
            "/tmp/vmsan-cli-x.tar",
        ],
        "ERR_VM_SNAPSHOT_NOT_FOUND",
    );
    rejects(
        &["snapshot", "export", "../..", "/tmp/x.tar"],
        "ERR_VALIDATION_ID",
    );
    rejects(
        &["create", "--snapshot", "vm-0123abcd-1"],
        "ERR_VM_SNAPSHOT_NOT_FOUND",
    );
    rejects(&["snapshot", "import", "/nonexistent/x.tar"], "ERR_IO");
    let (rc, doc) = json_run(&["snapshot", "list"]);
    assert_eq!((rc, doc["count"].as_u64()), (0, Some(0)), "{doc}");
    let (rc, doc) = json_run(&["snapshot", "delete", "vm-0123abcd-1"]);
    assert_eq!(rc, 1, "{doc}");
    assert_eq!(doc["results"][0]["success"], false, "{doc}");
    assert_eq!(
        doc["results"][0]["error"]["code"], "ERR_VM_SNAPSHOT_NOT_FOUND",
        "{doc}"
    );
}

/// `doctor` runs the real host checks (as root they include a test nftables table in a
/// scratch network namespace), hence the `privileged_` name: nextest runs these one at a time.
#[test]
fn privileged_doctor_json_and_exit_code() {
    let (rc, doc) = json_run(&["doctor"]);
    let checks = doc["checks"].as_array().expect("checks");
    assert!(!checks.is_empty());
    for c in checks {
        for field in ["category", "name", "status", "detail", "fix"] {
            assert!(c.get(field).is_some(), "{field} missing in {c}");
        }
        assert!(
            ["pass", "warn", "fail"].contains(&c["status"].as_str().unwrap()),
            "{c}"
        );
        if c["status"] != "pass" {
            assert!(
                c["fix"].as_str().is_some_and(|f| !f.is_empty()),
                "a fix for {c}"
            );
        }
    }
    let failed = checks.iter().filter(|c| c["status"] == "fail").count();
    assert_eq!(doc["summary"]["failed"], failed);
    assert_eq!(doc["summary"]["total"], checks.len());
    assert_eq!(
        rc,
        i32::from(failed > 0),
        "exit 1 exactly when a check fails"
    );

    let out = vmsan().arg("doctor").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("vmsan doctor\n"), "{text}");
    assert!(text.contains(&format!("{failed} failed")), "{text}");
}

#[test]
fn verbose_goes_to_stderr_and_json_wins() {
    let out = vmsan().args(["list", "--verbose"]).output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("[debug] action: {\"command\":\"list\""),
        "{err}"
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "No VMs found.\n");

    let out = vmsan()
        .args(["--verbose", "list", "--json"])
        .output()
        .unwrap();
    assert!(out.stderr.is_empty(), "--json silences --verbose");
    one_json_document(&out);
}
