//! The state store under real concurrency: many processes (not threads: locks are per open
//! file and per process) creating, updating and deleting VM states at once, and writers killed
//! with SIGKILL in the middle of a write.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmsan_core::Paths;
use vmsan_core::ids::VmId;
use vmsan_core::state::{ListEntry, StateStore, VmState, VmStatus};

const WORKER_ENV: &str = "VMSAN_TEST_STATE_WORKER";
const WORKERS: usize = 50;
const SHARED_UPDATES: u64 = 20;
const OWN_VMS: usize = 3;
const DOMAINS: usize = 2000;

/// The store's paths, with slot claims kept inside the test's home: these tests check the
/// claims of their own VMs, not the host's.
fn test_paths(home: &Path) -> Paths {
    Paths::new(home).with_run_dir(home.join("run"))
}

fn new_state(id: &VmId) -> VmState {
    VmState::new(id.clone(), &vmsan_core::time::now_rfc3339())
}

/// Re-runs this test binary as a worker process (see `state_worker`).
fn spawn_worker(args: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "state_worker",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_ENV, args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The body of a worker process; a no-op unless started by one of the tests below.
#[test]
#[ignore = "worker process of the concurrency tests; they start it themselves"]
fn state_worker() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let store = StateStore::open(&test_paths(Path::new(parts[1]))).unwrap();
    let shared = VmId::parse(parts[2]).unwrap();
    match parts[0] {
        "mixed" => {
            let mut mine = Vec::new();
            for i in 0..SHARED_UPDATES {
                store.update(&shared, |_| Ok(())).unwrap();
                if (i as usize) < OWN_VMS {
                    let st = store.create(|id, _| new_state(id)).unwrap();
                    mine.push(st.id);
                }
            }
            for id in &mine {
                for _ in 0..2 {
                    store
                        .update(id, |st| {
                            st.status = VmStatus::Stopped;
                            Ok(())
                        })
                        .unwrap();
                }
            }
            assert!(store.remove(&mine[0]).unwrap());
            assert!(
                !store.remove(&mine[0]).unwrap(),
                "second remove must report nothing removed"
            );
        }
        "churn" => loop {
            store
                .update(&shared, |st| {
                    // Self-consistent content: the project names the generation this write
                    // produces, and the domain list is long enough to take several writes.
                    st.project = format!("gen-{}", st.generation + 1);
                    st.network.allowed_domains = (0..DOMAINS)
                        .map(|i| domain(&format!("d{i}-{}.example.com", st.generation + 1)))
                        .collect();
                    Ok(())
                })
                .unwrap();
        },
        other => panic!("unknown worker mode {other}"),
    }
}

fn domain(name: &str) -> vmsan_net::DomainPattern {
    name.parse().unwrap()
}

fn check_consistent(st: &VmState) {
    assert_eq!(
        st.project,
        format!("gen-{}", st.generation),
        "torn or mixed state"
    );
    assert_eq!(st.network.allowed_domains.len(), DOMAINS);
    let suffix = format!("-{}.example.com", st.generation);
    assert!(
        st.network
            .allowed_domains
            .iter()
            .all(|d| d.to_string().ends_with(&suffix)),
        "mixed generations"
    );
}

fn vms(store: &StateStore) -> Vec<VmState> {
    store
        .list()
        .unwrap()
        .into_iter()
        .map(|e| match e {
            ListEntry::Vm(st) => *st,
            ListEntry::Corrupt { id, error, .. } => panic!("corrupt state for {id}: {error}"),
        })
        .collect()
}

#[test]
fn fifty_processes_create_update_delete_without_lost_updates_or_duplicate_slots() {
    let home = tempfile::tempdir().unwrap();
    let store = StateStore::open(&test_paths(home.path())).unwrap();
    let shared = store.create(|id, _| new_state(id)).unwrap();
    assert_eq!(shared.generation, 1);

    let spec = format!("mixed|{}|{}", home.path().display(), shared.id);
    let mut children: Vec<Child> = (0..WORKERS).map(|_| spawn_worker(&spec)).collect();

    // While they run, readers must never see a torn or unparsable file.
    let mut reads = 0;
    while children.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        let _ = vms(&store);
        reads += 1;
    }
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a worker failed");
    }

    let all = vms(&store);
    let shared_now = all.iter().find(|s| s.id == shared.id).unwrap();
    assert_eq!(
        shared_now.generation,
        1 + WORKERS as u64 * SHARED_UPDATES,
        "lost update"
    );
    assert_eq!(
        all.len(),
        1 + WORKERS * (OWN_VMS - 1),
        "VMs created minus removed"
    );
    for st in all.iter().filter(|s| s.id != shared.id) {
        assert_eq!(st.generation, 3, "{}: create + 2 updates", st.id);
        assert_eq!(st.status, VmStatus::Stopped);
    }
    let slots: HashSet<u32> = all.iter().map(|s| s.network.slot.unwrap()).collect();
    assert_eq!(slots.len(), all.len(), "duplicate slot");
    let ids: HashSet<&str> = all.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "duplicate id");
    // One slot claim per live VM, each naming its VM.
    let slots_dir = test_paths(home.path()).slots_dir();
    let claims = std::fs::read_dir(&slots_dir).unwrap().count();
    assert_eq!(claims, all.len(), "slot claims");
    for st in &all {
        let claim = slots_dir.join(st.network.slot.unwrap().to_string());
        assert!(
            std::fs::read_to_string(claim)
                .unwrap()
                .starts_with(&format!("vm {}\n", st.id)),
            "the claim of {} names it",
            st.id
        );
    }
    // Nothing but VM directories and the lock dir remain: no staging, trash or temp files.
    assert_no_debris(&home.path().join("vms"));
    eprintln!("{reads} concurrent list() calls saw only whole states");
}

fn assert_no_debris(vms_dir: &Path) {
    for e in std::fs::read_dir(vms_dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(VmId::parse(&name).is_ok(), "debris in vms/: {name}");
        for f in std::fs::read_dir(vms_dir.join(&name)).unwrap() {
            let f = f.unwrap().file_name().into_string().unwrap();
            assert!(f == "state.json" || f == "lock", "debris in {name}: {f}");
        }
    }
}

#[test]
fn sigkill_during_writes_leaves_the_old_or_the_new_state() {
    let home = tempfile::tempdir().unwrap();
    let store = StateStore::open(&test_paths(home.path())).unwrap();
    let st = store
        .create(|id, _| {
            let mut st = new_state(id);
            st.project = "gen-1".into();
            st.network.allowed_domains = (0..DOMAINS)
                .map(|i| domain(&format!("d{i}-1.example.com")))
                .collect();
            st
        })
        .unwrap();
    let spec = format!("churn|{}|{}", home.path().display(), st.id);

    for round in 0..25u64 {
        let before = store.get_recorded(&st.id).unwrap().generation;
        let mut child = spawn_worker(&spec);
        // Let it get a varying number of writes in, then kill it wherever it is.
        let target = before + 1 + round % 7;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = store.get_recorded(&st.id).unwrap();
            check_consistent(&now);
            if now.generation >= target {
                break;
            }
            assert!(Instant::now() < deadline, "worker made no progress");
            assert!(
                child.try_wait().unwrap().is_none(),
                "worker died on its own"
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let after = store.get_recorded(&st.id).unwrap();
        check_consistent(&after);
        assert!(after.generation >= target);
    }
    // The killed writers' locks died with them: an update goes through at once.
    let st2 = store
        .with_lock_timeout(Duration::from_secs(2))
        .update(&st.id, |s| {
            s.project = format!("gen-{}", s.generation + 1);
            s.network.allowed_domains = (0..DOMAINS)
                .map(|i| domain(&format!("d{i}-{}.example.com", s.generation + 1)))
                .collect();
            Ok(())
        })
        .unwrap();
    check_consistent(&st2);
    // And that write swept the temp files the killed writers left behind.
    assert_no_debris(&home.path().join("vms"));
}
