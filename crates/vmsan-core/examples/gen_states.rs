//! Benchmark fixture: fill a vmsan home with N VM states of mixed status, written the way the
//! store writes them. Usage: `gen_states <home> <count>`.

use std::path::PathBuf;

use vmsan_core::Paths;
use vmsan_core::ids::VmId;
use vmsan_core::state::{PublishedPort, StateStore, VmState, VmStatus};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let home = PathBuf::from(args.next().ok_or("usage: gen_states <home> <count>")?);
    let count: u32 = args
        .next()
        .ok_or("usage: gen_states <home> <count>")?
        .parse()?;
    let paths = Paths::new(&home);
    let store = StateStore::open(&paths)?;
    store.init()?;
    // A live process (init) for the "running" VMs, so reconciliation keeps them running and
    // `list` pays for the same /proc reads it would on a real host.
    let live = vmsan_core::process::identify(1);
    let base_ms = vmsan_core::time::epoch_ms() - u64::from(count) * 60_000;
    for i in 0..count {
        let id = VmId::parse(&format!("vm-{:08x}", 0x1000_0000 + i))?;
        let mut st = VmState::new(
            id.clone(),
            &vmsan_core::time::format_rfc3339(base_ms + u64::from(i) * 60_000),
        );
        st.generation = 1;
        st.status = [
            VmStatus::Running,
            VmStatus::Stopped,
            VmStatus::Error,
            VmStatus::Running,
        ][i as usize % 4];
        if st.status == VmStatus::Running {
            st.vmm = live;
            st.pid = live.map(|p| p.pid);
        }
        st.project = format!("project-{}", i % 7);
        st.network.slot = Some(i);
        st.network.guest_ip = format!("198.18.{}.{}", i / 64, (i % 64) * 4 + 2);
        st.network.network_policy = "custom".into();
        st.network.allowed_domains = vec!["example.com".into(), "*.github.com".into()];
        st.network.published_ports = vec![PublishedPort {
            host_port: 8000,
            guest_port: 80,
            protocol: "tcp".into(),
        }];
        st.agent_token = Some("0".repeat(64));
        let dir = paths.vm_dir(&id);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("lock"), b"")?;
        std::fs::write(dir.join("state.json"), serde_json::to_vec_pretty(&st)?)?;
    }
    println!("{count} VM states in {}", paths.vms_dir().display());
    Ok(())
}
