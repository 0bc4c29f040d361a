//! How far a snapshot's metadata is trusted.
//!
//! An imported archive may come from anyone, and its metadata decides what a restore sets up
//! on this host. So every value in it that a `create` flag could have set passes the same
//! validator that flag does (a 4 TiB disk is refused as `--disk 4096` would be), and the
//! host-side network settings of an imported snapshot are dropped at import: published ports
//! (a DNAT of a host port, on every interface, into the clone), the DNS filter's upstream
//! resolvers, and the per-VM slot, TAP, addresses, MAC and namespace names. A restore of it
//! gets the host's defaults for those, and publishes ports only when its command line says so
//! (`create --snapshot ID --publish-port …`).

use super::layout::DISK;
use super::meta::SnapshotMeta;
use crate::error::{Error, Result};
use crate::ids::SnapshotId;
use crate::validate;

/// Check a snapshot's metadata before anything relies on it: its format, then every value a
/// `create` flag could have set, as strictly as that flag.
pub(crate) fn check(meta: &SnapshotMeta, expected: &SnapshotId) -> Result<()> {
    meta.check_format(expected)?;
    check_values(meta)
}

/// Check every value of `meta` that a `create` flag could have set with that flag's own
/// validator.
///
/// # Errors
/// The validator's error (its `ERR_VALIDATION_*` code), naming the snapshot and the field.
fn check_values(meta: &SnapshotMeta) -> Result<()> {
    let check = |field: &str, r: std::result::Result<(), Error>| {
        r.map_err(|e| refused(meta.id.as_str(), field, e))
    };

    check(
        "vcpus",
        validate::parse_vcpus(&meta.vcpus.to_string()).map(drop),
    )?;
    check(
        "memMib",
        validate::parse_memory_mib(&meta.mem_mib.to_string()).map(drop),
    )?;
    // The disk's size, as `--disk` takes it: whole GiB (a size that is not one is refused as
    // the same value in bytes would be).
    let disk = meta.files.get(DISK).map_or(0, |f| f.size);
    let disk_arg = if disk.is_multiple_of(1 << 30) {
        (disk >> 30).to_string()
    } else {
        format!("{disk}b")
    };
    check("disk size", validate::parse_disk_size(&disk_arg).map(drop))?;
    check("project", validate::parse_project(&meta.project).map(drop))?;
    if let Some(image) = &meta.image {
        check(
            "image",
            validate::parse_image_ref("--from-image", &image.reference).map(drop),
        )?;
    }
    let net = &meta.network;
    // The values are typed; the rules between them (no allow-list under `deny-all`, the
    // limits) are the flags' own.
    let texts = |v: &[_]| v.iter().map(ToString::to_string).collect();
    let policy = validate::PolicyInput {
        policy: Some(net.network_policy.as_str().to_owned()),
        allowed_domains: net
            .allowed_domains
            .iter()
            .map(ToString::to_string)
            .collect(),
        allowed_cidrs: texts(&net.allowed_cidrs),
        denied_cidrs: texts(&net.denied_cidrs),
        allow_udp: net.allow_udp,
        allow_lan: net.allow_lan,
    };
    check(
        "network policy",
        validate::resolve_network_policy(&policy).map(drop),
    )?;
    if let Some(mbit) = net.bandwidth_mbit {
        check(
            "bandwidth",
            validate::parse_bandwidth(&mbit.to_string()).map(drop),
        )?;
    }
    let ports: Vec<String> = net
        .published_ports
        .iter()
        .map(|p| format!("{}:{}/{}", p.host_port, p.guest_port, p.protocol))
        .collect();
    check(
        "published ports",
        validate::parse_publish_ports(&ports).map(drop),
    )?;
    Ok(())
}

/// The error of a value `create` would refuse, naming the snapshot and the field.
fn refused(id: &str, field: &str, e: Error) -> Error {
    Error::new(
        e.code(),
        format!(
            "Snapshot {id} has metadata that `vmsan create` would refuse ({field}): {}",
            e.message()
        ),
    )
    .detail("snapshotId", id)
    .detail("field", field)
    .why("A snapshot's metadata is checked like create's flags: an archive may come from anyone.")
    .fix("Import snapshots only from hosts you trust; this one cannot be restored.")
}

/// The values of an archive's `metadata` document that [`SnapshotMeta`] types (the policy, its
/// CIDRs and domains, the resolvers, the runtime), checked as text with their flag's validator
/// before the document is read: an archive's unknown policy is refused with
/// `--network-policy`'s code, as `create` would refuse it, not as an unreadable document.
///
/// # Errors
/// The validator's error (its `ERR_VALIDATION_*` code), naming the snapshot and the field.
pub(crate) fn check_raw_values(meta: &serde_json::Value) -> Result<()> {
    let id = meta
        .get("id")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    let check =
        |field: &str, r: std::result::Result<(), Error>| r.map_err(|e| refused(id, field, e));
    // `image` and `rootfs` name where the root came from; anything else is a `--runtime`.
    if let Some(runtime) = meta.get("runtime").and_then(serde_json::Value::as_str)
        && !matches!(runtime, "image" | "rootfs")
    {
        check("runtime", validate::Runtime::parse(runtime).map(drop))?;
    }
    let Some(net) = meta.get("network") else {
        return Ok(());
    };
    if let Some(policy) = net.get("networkPolicy").and_then(serde_json::Value::as_str) {
        check(
            "network policy",
            validate::NetworkPolicy::parse(policy).map(drop),
        )?;
    }
    for (key, flag) in [
        ("allowedCidrs", "--allowed-cidr"),
        ("deniedCidrs", "--denied-cidr"),
    ] {
        for cidr in texts(net.get(key)) {
            check("network policy", validate::parse_cidr(flag, cidr).map(drop))?;
        }
    }
    for domain in texts(net.get("allowedDomains")) {
        check(
            "network policy",
            validate::parse_domain("--allowed-domain", domain).map(drop),
        )?;
    }
    for dns in texts(net.get("dnsServers")) {
        check("dns", validate::parse_ipv4("--dns", dns).map(drop))?;
    }
    Ok(())
}

/// The strings of a JSON array (none when it is absent or not an array).
fn texts(v: Option<&serde_json::Value>) -> Vec<&str> {
    v.and_then(serde_json::Value::as_array)
        .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default()
}

/// Drop what an imported snapshot must not decide on this host (see the module's text).
pub(crate) fn strip_host_side(meta: &mut SnapshotMeta) {
    let net = &mut meta.network;
    net.published_ports.clear();
    net.dns_servers.clear();
    // Reaching this host's LAN is for this host's user to grant (`--allow-lan` on restore).
    net.allow_lan = false;
    net.slot = None;
    net.tap_device.clear();
    net.host_ip = None;
    net.guest_ip = None;
    net.mac_address.clear();
    net.subnet_mask = None;
    net.netns_name = None;
}
