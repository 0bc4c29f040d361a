//! State store behaviour: corrupt files, versions, hostile files, reconciliation.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use vmsan_core::state::{ListEntry, ProcessId, StateStore, VmState, VmStatus};
use vmsan_core::{ErrorCode, Paths, VmId};

fn store() -> (tempfile::TempDir, StateStore) {
    let home = tempfile::tempdir().unwrap();
    let store =
        StateStore::open(&Paths::new(home.path()).with_run_dir(home.path().join("run"))).unwrap();
    (home, store)
}

fn create(store: &StateStore) -> VmState {
    store
        .create(|id, _| VmState::new(id.clone(), &vmsan_core::time::now_rfc3339()))
        .unwrap()
}

#[test]
fn a_fresh_host_lists_nothing() {
    let (_h, store) = store();
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn a_corrupt_state_is_reported_and_never_breaks_list() {
    let (_h, store) = store();
    let good = create(&store);
    let bad = create(&store);
    let newer = create(&store);
    std::fs::write(
        store.paths().state_file(&bad.id),
        b"{\"stateVersion\": 3, \"id\": ",
    )
    .unwrap();
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.paths().state_file(&newer.id)).unwrap())
            .unwrap();
    v["stateVersion"] = 99.into();
    std::fs::write(store.paths().state_file(&newer.id), v.to_string()).unwrap();

    let list = store.list().unwrap();
    assert_eq!(list.len(), 3);
    let mut corrupt = 0;
    for e in &list {
        match e {
            ListEntry::Vm(st) => assert_eq!(st.id, good.id),
            ListEntry::Corrupt { id, error, .. } => {
                corrupt += 1;
                if *id == newer.id.to_string() {
                    assert!(error.contains("newer vmsan"), "{error}");
                }
            }
        }
    }
    assert_eq!(corrupt, 2);
    assert_eq!(
        store.get(&bad.id).unwrap_err().code(),
        ErrorCode::VmStateCorrupt
    );
    // A corrupt VM's slot is never handed out again, nor its id.
    let next = create(&store);
    assert_ne!(next.network.slot, bad.network.slot);
}

#[test]
fn a_state_file_naming_another_vm_is_corrupt() {
    let (_h, store) = store();
    let a = create(&store);
    let b = create(&store);
    std::fs::copy(
        store.paths().state_file(&a.id),
        store.paths().state_file(&b.id),
    )
    .unwrap();
    assert_eq!(
        store.get(&b.id).unwrap_err().code(),
        ErrorCode::VmStateCorrupt
    );
}

#[test]
fn a_symlinked_state_file_is_not_followed() {
    let (h, store) = store();
    let a = create(&store);
    let outside = h.path().join("outside.json");
    std::fs::copy(store.paths().state_file(&a.id), &outside).unwrap();
    std::fs::remove_file(store.paths().state_file(&a.id)).unwrap();
    std::os::unix::fs::symlink(&outside, store.paths().state_file(&a.id)).unwrap();
    assert!(store.get(&a.id).is_err());
}

#[test]
fn missing_vms_and_idempotent_remove() {
    let (_h, store) = store();
    let id = VmId::parse("vm-0badc0de").unwrap();
    assert_eq!(store.get(&id).unwrap_err().code(), ErrorCode::VmNotFound);
    assert_eq!(
        store.update(&id, |_| Ok(())).unwrap_err().code(),
        ErrorCode::VmNotFound
    );
    assert!(!store.remove(&id).unwrap());
    let a = create(&store);
    assert!(store.remove(&a.id).unwrap());
    assert!(!store.paths().vm_dir(&a.id).exists());
    assert_eq!(store.get(&a.id).unwrap_err().code(), ErrorCode::VmNotFound);
}

#[test]
fn a_failed_update_leaves_the_state_untouched() {
    let (_h, store) = store();
    let a = create(&store);
    let err = store
        .update(&a.id, |st| {
            st.project = "changed".into();
            Err(vmsan_core::Error::new(ErrorCode::Internal, "no"))
        })
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal);
    let now = store.get(&a.id).unwrap();
    assert_eq!(now.project, "");
    assert_eq!(now.generation, a.generation);
}

#[test]
fn slots_are_the_lowest_free_and_reused_after_remove() {
    let (_h, store) = store();
    let a = create(&store);
    let b = create(&store);
    let c = create(&store);
    assert_eq!(
        (a.network.slot, b.network.slot, c.network.slot),
        (Some(0), Some(1), Some(2))
    );
    store.remove(&b.id).unwrap();
    assert_eq!(create(&store).network.slot, Some(1));
}

#[test]
fn reads_reconcile_with_the_real_processes() {
    let (_h, store) = store();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let live = vmsan_core::process::identify(child.id()).unwrap();
    let a = create(&store);
    store
        .update(&a.id, |st| {
            st.status = VmStatus::Running;
            st.vmm = Some(live);
            st.pid = Some(live.pid);
            Ok(())
        })
        .unwrap();
    assert_eq!(store.get(&a.id).unwrap().status, VmStatus::Running);
    child.kill().unwrap();
    child.wait().unwrap();
    let st = store.get(&a.id).unwrap();
    assert_eq!(st.status, VmStatus::Error);
    assert!(st.error.unwrap().contains(&format!("pid {}", live.pid)));
    // The record itself is not rewritten by a read (readers may lack write access).
    assert_eq!(store.get_recorded(&a.id).unwrap().status, VmStatus::Running);

    // A VM stuck in `creating` whose creator died is an error too.
    let b = create(&store);
    store
        .update(&b.id, |st| {
            st.supervisor = Some(ProcessId {
                pid: live.pid,
                start_time: live.start_time,
            });
            Ok(())
        })
        .unwrap();
    assert_eq!(store.get(&b.id).unwrap().status, VmStatus::Error);
}

#[test]
fn remove_releases_the_slot_claim() {
    let (_h, store) = store();
    let a = create(&store);
    let claim = store
        .paths()
        .slots_dir()
        .join(a.network.slot.unwrap().to_string());
    assert!(
        std::fs::read_to_string(&claim)
            .unwrap()
            .starts_with(&format!("vm {}\n", a.id))
    );
    assert_eq!(store.host_claims().unwrap()[0].vm, a.id);
    store.remove(&a.id).unwrap();
    assert!(!claim.exists());
}

/// Two homes on one host share the host-wide slot claims (issue 17, item 8): they never hand
/// out the same slot, removing one home's VM leaves the other's claim, and the claims of a
/// home deleted under its VMs are reclaimed.
#[test]
fn two_homes_on_one_host_never_share_a_slot() {
    let host = tempfile::tempdir().unwrap();
    let run = host.path().join("run");
    let home = |name: &str| {
        let dir = host.path().join(name);
        StateStore::open(&Paths::new(&dir).with_run_dir(&run)).unwrap()
    };
    let (a, b) = (home("a"), home("b"));
    let a1 = create(&a);
    let b1 = create(&b);
    let a2 = create(&a);
    let slots: Vec<u32> = [&a1, &b1, &a2]
        .iter()
        .map(|s| s.network.slot.unwrap())
        .collect();
    assert_eq!(slots, vec![0, 1, 2], "one host, one slot sequence");
    a.remove(&a1.id).unwrap();
    let claims: Vec<VmId> = b.host_claims().unwrap().into_iter().map(|c| c.vm).collect();
    assert!(
        claims.contains(&b1.id) && claims.contains(&a2.id),
        "{claims:?}"
    );
    assert!(!claims.contains(&a1.id));
    // Slot 0 is free again and goes to the next VM of either home.
    assert_eq!(create(&b).network.slot, Some(0));
    // Home A deleted under its VM: its claim is debris, reclaimed by the next create.
    std::fs::remove_dir_all(host.path().join("a")).unwrap();
    assert_eq!(create(&b).network.slot, Some(2));
}
