//! Working alongside firewalld.
//!
//! firewalld (nftables backend) keeps its rules in table `inet firewalld`. Its
//! `filter_FORWARD` chain hooks `forward` at priority `filter + 10`, accepts established and
//! related flows and DNATed flows (unless `StrictForwardPorts=yes`), dispatches the rest to
//! its zones and policies, and ends with `reject with icmpx admin-prohibited`. An accept in
//! our own table does not help: in nftables an accept ends only the chain that issued it,
//! and every other base chain on the hook still sees the packet, so firewalld would reject a
//! guest's new connections. Our rules must not go into firewalld's table either: firewalld
//! owns it and rewrites it on every reload.
//!
//! So when the table is there, vmsan asks firewalld itself, over D-Bus and in its runtime
//! configuration only (nothing is written to `/etc/firewalld`, no reload), to put the
//! interfaces `vmsan-h+` (firewalld's wildcard for every host veth) into a zone whose target
//! is `ACCEPT` (`trusted` by default, [`crate::HostConfig::firewalld_zone`]). firewalld
//! forwards what enters from an `ACCEPT` zone; what that lets through is already limited:
//! every guest packet passed its VM namespace's policy, and our host table still drops
//! anything from a VM to the host itself and anything with a foreign source address (a drop
//! in any base chain is final). The binding is made for the first VM (re-checked at every
//! setup, as firewalld forgets runtime bindings when restarted) and removed with the last;
//! a binding of `vmsan-h+` to another zone, made by the administrator, is left alone.
//!
//! Untested against a live firewalld (none may run on the build host): the D-Bus calls are
//! tested against a stand-in bus, the detection against a real table of that name.

use std::path::Path;

use crate::addr::HOST_VETH_PREFIX;
use crate::dbus::{CallError, Connection};
use crate::error::{NetError, Result};

/// firewalld's table, as [`crate::nft::list_tables`] names it.
pub const TABLE: &str = "inet firewalld";
/// The default zone for the VM interfaces (built in, target `ACCEPT`).
pub const DEFAULT_ZONE: &str = "trusted";

const DEST: &str = "org.fedoraproject.FirewallD1";
const PATH: &str = "/org/fedoraproject/FirewallD1";
const ZONE_IFACE: &str = "org.fedoraproject.FirewallD1.zone";

/// The interface pattern bound to the zone: every host veth.
pub fn interfaces() -> String {
    format!("{HOST_VETH_PREFIX}+")
}

/// Whether firewalld is active, judging by the host's nftables tables.
pub fn active(tables: &[String]) -> bool {
    tables.iter().any(|t| t == TABLE)
}

fn refused(what: &str, e: &CallError) -> NetError {
    NetError::sys(
        format!("firewalld {what}"),
        std::io::Error::other(format!("{}: {}", e.name, e.message)),
    )
}

fn zone_of(c: &mut Connection, iface: &str) -> Result<String> {
    match c.call(DEST, PATH, ZONE_IFACE, "getZoneOfInterface", &[iface])? {
        Ok(a) => Ok(a.into_iter().next().unwrap_or_default()),
        Err(e) => Err(refused(&format!("getZoneOfInterface({iface})"), &e)),
    }
}

/// The zone `vmsan-h+` is bound to in firewalld's runtime configuration (empty: none).
pub fn bound_zone(bus: &Path) -> Result<String> {
    zone_of(&mut Connection::open(bus)?, &interfaces())
}

/// Makes sure `vmsan-h+` is in `zone` (or in a zone the administrator chose).
pub fn bind(bus: &Path, zone: &str) -> Result<()> {
    let iface = interfaces();
    let mut c = Connection::open(bus)?;
    let cur = zone_of(&mut c, &iface)?;
    if cur == zone {
        return Ok(());
    }
    if !cur.is_empty() {
        tracing::info!(interfaces = %iface, zone = %cur, "firewalld: VM interfaces already bound to another zone; left as they are");
        return Ok(());
    }
    match c.call(DEST, PATH, ZONE_IFACE, "addInterface", &[zone, &iface])? {
        Ok(_) => Ok(()),
        // Bound concurrently, by another vmsan process or by the administrator.
        Err(e)
            if e.message.starts_with("ZONE_ALREADY_SET")
                || e.message.starts_with("ZONE_CONFLICT") =>
        {
            Ok(())
        }
        Err(e) => Err(refused(&format!("addInterface({zone}, {iface})"), &e)),
    }
}

/// Removes the binding of `vmsan-h+` to `zone`, if that is where it is.
pub fn unbind(bus: &Path, zone: &str) -> Result<()> {
    let iface = interfaces();
    let mut c = Connection::open(bus)?;
    if zone_of(&mut c, &iface)? != zone {
        return Ok(());
    }
    match c.call(DEST, PATH, ZONE_IFACE, "removeInterface", &[zone, &iface])? {
        Ok(_) => Ok(()),
        Err(e) if e.message.starts_with("UNKNOWN_INTERFACE") => Ok(()),
        Err(e) => Err(refused(&format!("removeInterface({zone}, {iface})"), &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dbus::fake;
    use std::sync::{Arc, Mutex};

    /// A stand-in firewalld keeping one interface → zone map, answering like firewalld.
    fn firewalld(path: &Path, initial: Option<&str>) -> fake::Calls {
        let zones: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(initial.map(String::from)));
        fake::serve(path, move |m, a| {
            let mut z = zones.lock().expect("zones");
            let exc = |msg: String| Err(("org.fedoraproject.FirewallD1.Exception".into(), msg));
            match (m, a) {
                ("getZoneOfInterface", [_]) => Ok(vec![z.clone().unwrap_or_default()]),
                ("addInterface", [zone, i]) => {
                    if z.is_some() {
                        return exc(format!("ZONE_ALREADY_SET: {i}"));
                    }
                    *z = Some(zone.clone());
                    Ok(vec![zone.clone()])
                }
                ("removeInterface", [zone, i]) => {
                    if z.as_deref() != Some(zone.as_str()) {
                        return exc(format!("UNKNOWN_INTERFACE: {i}"));
                    }
                    *z = None;
                    Ok(vec![zone.clone()])
                }
                _ => exc(format!("INVALID_COMMAND: {m}")),
            }
        })
    }

    /// The stand-in bus's socket path, in a directory removed on drop (even on failure).
    struct Bus(std::path::PathBuf);

    impl std::ops::Deref for Bus {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Bus {
        fn drop(&mut self) {
            if let Some(d) = self.0.parent() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }

    fn bus(tag: &str) -> Bus {
        let dir = std::env::temp_dir().join(format!("vmsan-fwd-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join("bus");
        let _ = std::fs::remove_file(&p);
        Bus(p)
    }

    fn calls(c: &fake::Calls) -> Vec<(String, Vec<String>)> {
        c.lock().expect("calls").clone()
    }

    #[test]
    fn detects_its_table_only() {
        assert!(active(&["ip vmsan".into(), "inet firewalld".into()]));
        assert!(!active(&[
            "ip firewalld".into(),
            "inet firewalld_policy_drop".into()
        ]));
    }

    #[test]
    fn binds_once_and_unbinds_its_own_zone() {
        let p = bus("own");
        let c = firewalld(&p, None);
        bind(&p, "trusted").expect("bind");
        bind(&p, "trusted").expect("bind again");
        assert_eq!(bound_zone(&p).expect("zone"), "trusted");
        unbind(&p, "trusted").expect("unbind");
        unbind(&p, "trusted").expect("unbind again");
        assert_eq!(bound_zone(&p).expect("zone"), "");
        let got: Vec<String> = calls(&c)
            .into_iter()
            .map(|(m, a)| format!("{m}({})", a.join(",")))
            .collect();
        assert_eq!(
            got,
            [
                "getZoneOfInterface(vmsan-h+)",
                "addInterface(trusted,vmsan-h+)",
                "getZoneOfInterface(vmsan-h+)",
                "getZoneOfInterface(vmsan-h+)",
                "getZoneOfInterface(vmsan-h+)",
                "removeInterface(trusted,vmsan-h+)",
                "getZoneOfInterface(vmsan-h+)",
                "getZoneOfInterface(vmsan-h+)",
            ]
        );
    }

    #[test]
    fn leaves_an_administrators_zone_alone() {
        let p = bus("admin");
        let c = firewalld(&p, Some("internal"));
        bind(&p, "trusted").expect("bind");
        unbind(&p, "trusted").expect("unbind");
        assert_eq!(bound_zone(&p).expect("zone"), "internal");
        assert!(calls(&c).iter().all(|(m, _)| m == "getZoneOfInterface"));
    }

    #[test]
    fn reports_refusals_and_a_missing_bus() {
        let p = bus("refuse");
        let _c = fake::serve(&p, |_, _| {
            Err((
                "org.freedesktop.DBus.Error.AccessDenied".into(),
                "not allowed".into(),
            ))
        });
        let e = bind(&p, "trusted").expect_err("refused").to_string();
        assert!(
            e.contains("getZoneOfInterface") && e.contains("AccessDenied"),
            "{e}"
        );
        let e = bind(Path::new("/nonexistent/vmsan-bus"), "trusted")
            .expect_err("no bus")
            .to_string();
        assert!(e.contains("D-Bus at /nonexistent/vmsan-bus"), "{e}");
    }

    /// A stand-in host namespace holding a real `inet firewalld` table, and VMs set up and
    /// torn down in it with the stand-in firewalld on the bus. Everything goes on drop.
    struct Host {
        hc: crate::HostConfig,
        vms: Vec<(String, crate::Slot)>,
    }

    impl Drop for Host {
        fn drop(&mut self) {
            for (id, slot) in std::mem::take(&mut self.vms) {
                let _ = crate::teardown(&self.hc, &id, slot);
            }
            if let Some(ns) = &self.hc.host_netns {
                let _ = crate::netns::delete(ns);
            }
            let _ = std::fs::remove_file(&self.hc.lock_path);
        }
    }

    fn host(tag: &str, bus: &Path, with_table: bool) -> Host {
        let dir = Path::new(crate::netns::DEFAULT_DIR);
        let name = format!("vmsfw{}{tag}", std::process::id());
        let ns = crate::netns::create(dir, &format!("{name}_host")).expect("host netns");
        let h = Host {
            hc: crate::HostConfig {
                host_netns: Some(ns.clone()),
                netns_dir: dir.to_path_buf(),
                netns_prefix: format!("{name}-"),
                lock_path: std::path::PathBuf::from(format!("/run/lock/{name}.lock")),
                firewalld_bus: bus.to_path_buf(),
                firewalld_zone: DEFAULT_ZONE.to_string(),
            },
            vms: Vec::new(),
        };
        if with_table {
            crate::netns::run_in(&ns, || {
                let mut sock = crate::nfnl::Socket::open()?;
                let mut b = crate::nfnl::Batch::new();
                b.add_table(crate::nfnl::Family::Inet, "firewalld");
                sock.apply(b)
            })
            .expect("create a table named like firewalld's");
        }
        h
    }

    fn spec(n: u32) -> crate::VmNetSpec {
        crate::VmNetSpec {
            vm_id: format!("vm-{:08x}", (std::process::id() << 8) ^ n),
            slot: crate::Slot::new(n).expect("slot"),
            jail_uid: 4242,
            jail_gid: 4343,
            policy: crate::Policy::AllowAll,
            published_ports: vec![],
            bandwidth: None,
            dns_upstreams: vec![],
            allow_udp: false,
            allow_lan: false,
        }
    }

    fn is_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        vmsan_testkit::skip!("needs root (network namespaces)");
        false
    }

    #[test]
    fn privileged_first_setup_binds_last_teardown_unbinds() {
        if !is_root() {
            return;
        }
        let p = bus("live");
        let c = firewalld(&p, None);
        let mut h = host("a", &p, true);
        let ns = h.hc.host_netns.clone();
        assert!(active(
            &crate::nft::list_tables(ns.as_deref()).expect("tables")
        ));
        for n in [11, 12] {
            let s = spec(n);
            crate::setup(&h.hc, &s).expect("setup");
            h.vms.push((s.vm_id.clone(), s.slot));
            assert_eq!(bound_zone(&p).expect("zone"), "trusted");
        }
        let (id, slot) = h.vms.remove(0);
        crate::teardown(&h.hc, &id, slot).expect("teardown");
        assert_eq!(bound_zone(&p).expect("zone"), "trusted", "a VM is left");
        let (id, slot) = h.vms.remove(0);
        crate::teardown(&h.hc, &id, slot).expect("teardown");
        assert_eq!(
            bound_zone(&p).expect("zone"),
            "",
            "unbound with the last VM"
        );
        assert_eq!(crate::scan_leaks(&h.hc, &[]).expect("scan"), vec![]);
        let changes: Vec<_> = calls(&c)
            .into_iter()
            .filter(|(m, _)| m != "getZoneOfInterface")
            .collect();
        assert_eq!(
            changes,
            [
                (
                    "addInterface".to_string(),
                    vec!["trusted".into(), "vmsan-h+".into()]
                ),
                (
                    "removeInterface".to_string(),
                    vec!["trusted".into(), "vmsan-h+".into()]
                ),
            ]
        );
    }

    #[test]
    fn privileged_without_the_table_firewalld_is_not_asked() {
        if !is_root() {
            return;
        }
        let p = bus("absent");
        let c = firewalld(&p, None);
        let mut h = host("b", &p, false);
        let s = spec(13);
        crate::setup(&h.hc, &s).expect("setup");
        h.vms.push((s.vm_id.clone(), s.slot));
        let (id, slot) = h.vms.remove(0);
        crate::teardown(&h.hc, &id, slot).expect("teardown");
        assert_eq!(calls(&c), vec![]);
    }

    #[test]
    fn privileged_unreachable_firewalld_fails_setup_and_leaves_nothing() {
        if !is_root() {
            return;
        }
        let p = Path::new("/nonexistent/vmsan-firewalld-bus");
        let h = host("c", p, true);
        let s = spec(14);
        let e = crate::setup(&h.hc, &s).expect_err("firewalld unreachable");
        assert!(e.to_string().contains("D-Bus"), "{e}");
        assert_eq!(
            crate::leaks(&h.hc, &s.vm_id, s.slot).expect("leaks"),
            vec![]
        );
    }
}
