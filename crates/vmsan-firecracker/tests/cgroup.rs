//! cgroup mode detection (from real and sample mountinfo) and removal of the jailer's
//! leftover directories in the real hierarchies.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use vmsan_firecracker::CgroupVersion;
use vmsan_firecracker::cgroup::{
    CgroupMode, CgroupMounts, create_v1_cgroups, detect_mode, remove_jailer_cgroups, spawn_born_in,
};

const HYBRID: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/my\\040space rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

const V2: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

const V1: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 31 0:30 / /mnt/again rw,relatime - cgroup cgroup rw,memory
";

#[test]
fn parses_hybrid_mountinfo() {
    let mounts = CgroupMounts::parse_mountinfo(HYBRID);
    assert_eq!(mounts.mode(), Some(CgroupMode::Hybrid));
    assert_eq!(mounts.jailer_version(), Some(CgroupVersion::V1));
    assert_eq!(
        mounts.unified.as_deref(),
        Some(Path::new("/sys/fs/cgroup/unified"))
    );
    assert_eq!(
        mounts.v1_controller_mount("cpu"),
        Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
    );
    assert_eq!(
        mounts.v1_controller_mount("cpuacct"),
        Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
    );
    assert_eq!(
        mounts.v1_controller_mount("pids"),
        Some(Path::new("/sys/fs/cgroup/my space"))
    );
    assert_eq!(mounts.v1_controller_mount("blkio"), None);
    assert_eq!(mounts.v1.len(), 4);
    assert!(mounts.v1.iter().any(|h| h.controllers == ["name=systemd"]));
    let dirs = mounts.jailer_cgroup_dirs("firecracker", "vm-1").unwrap();
    assert_eq!(
        dirs,
        [
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/firecracker/vm-1"),
            PathBuf::from("/sys/fs/cgroup/memory/firecracker/vm-1"),
            PathBuf::from("/sys/fs/cgroup/my space/firecracker/vm-1"),
            PathBuf::from("/sys/fs/cgroup/systemd/firecracker/vm-1"),
            PathBuf::from("/sys/fs/cgroup/unified/firecracker/vm-1"),
        ]
    );
    assert!(mounts.jailer_cgroup_dirs("../x", "vm-1").is_err());
    assert!(mounts.jailer_cgroup_dirs("firecracker", "a/b").is_err());
}

#[test]
fn parses_v2_and_v1_mountinfo() {
    let v2 = CgroupMounts::parse_mountinfo(V2);
    assert_eq!(v2.mode(), Some(CgroupMode::V2));
    assert_eq!(v2.jailer_version(), Some(CgroupVersion::V2));
    assert_eq!(
        v2.jailer_cgroup_dirs("vmsan", "vm-1").unwrap(),
        [PathBuf::from("/sys/fs/cgroup/vmsan/vm-1")]
    );
    let v1 = CgroupMounts::parse_mountinfo(V1);
    assert_eq!(v1.mode(), Some(CgroupMode::V1));
    // A hierarchy mounted twice counts once.
    assert_eq!(v1.v1.len(), 2);
    assert_eq!(
        v1.v1_controller_mount("memory"),
        Some(Path::new("/sys/fs/cgroup/memory"))
    );
    assert_eq!(CgroupMounts::parse_mountinfo("").mode(), None);
}

#[test]
fn detects_this_hosts_mode() {
    let mounts = CgroupMounts::detect().unwrap();
    let mode = detect_mode().unwrap();
    assert_eq!(Some(mode), mounts.mode());
    let pure_v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if pure_v2 {
        assert_eq!(mode, CgroupMode::V2);
    } else {
        assert!(
            matches!(mode, CgroupMode::V1 | CgroupMode::Hybrid),
            "{mode:?}"
        );
        assert_eq!(
            mode == CgroupMode::Hybrid,
            mounts.unified.is_some(),
            "{mounts:?}"
        );
        assert!(mounts.v1_controller_mount("cpu").is_some());
        assert!(mounts.v1_controller_mount("memory").is_some());
    }
    eprintln!("cgroup mode of this host: {mode:?} ({mounts:?})");
}

/// Removes the test's parent cgroup directories (and any child left behind) on drop.
struct CgroupGuard {
    parents: Vec<PathBuf>,
    child: Option<Child>,
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for parent in &self.parents {
            if let Ok(entries) = fs::read_dir(parent) {
                for entry in entries.flatten() {
                    if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        let _ = fs::remove_dir(entry.path());
                    }
                }
            }
            let _ = fs::remove_dir(parent);
        }
    }
}

/// Does what the jailer does (a directory per hierarchy, a process in it), then checks that
/// the leftovers are removed once the process is gone and not while it is there.
#[test]
fn privileged_removes_the_jailers_leftover_cgroups() {
    if !nix::unistd::geteuid().is_root() {
        vmsan_testkit::skip!("needs root to create cgroups");
        return;
    }
    let mounts = CgroupMounts::detect().unwrap();
    let parent = format!("vmsan-fctest-{}", std::process::id());
    let id = "vm-fctest";
    let mut guard = CgroupGuard {
        parents: Vec::new(),
        child: None,
    };
    let mut created = Vec::new();
    let mut hierarchies: Vec<PathBuf> = mounts
        .v1
        .iter()
        .filter(|h| h.controllers.iter().any(|c| c == "cpu" || c == "memory"))
        .map(|h| h.mount_point.clone())
        .collect();
    if mounts.mode() == Some(CgroupMode::V2) {
        hierarchies.extend(mounts.unified.clone());
    }
    if hierarchies.is_empty() {
        vmsan_testkit::skip!("no cpu or memory hierarchy: {mounts:?}");
        return;
    }
    for hierarchy in &hierarchies {
        let parent_dir = hierarchy.join(&parent);
        guard.parents.push(parent_dir.clone());
        let dir = parent_dir.join(id);
        fs::create_dir_all(&dir).unwrap();
        created.push(dir);
    }

    // A process inside: the directory cannot go yet.
    let child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let procs = if mounts.mode() == Some(CgroupMode::V2) {
        "cgroup.procs"
    } else {
        "tasks"
    };
    fs::write(created[0].join(procs), child.id().to_string()).unwrap();
    guard.child = Some(child);
    let err = remove_jailer_cgroups(&mounts, &parent, id).unwrap_err();
    assert_eq!(err.path, created[0]);
    assert_eq!(err.source.raw_os_error(), Some(libc::EBUSY), "{err}");
    assert!(created[0].exists());
    // The other hierarchies held no process: their directories are already gone.
    for dir in &created[1..] {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }

    // Once it has exited (and been reaped), every directory goes.
    let mut child = guard.child.take().unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let removed = remove_jailer_cgroups(&mounts, &parent, id).unwrap();
    // Exactly the remaining one.
    assert_eq!(removed, [created[0].clone()]);
    for dir in &created {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
    // Nothing left: a second pass removes nothing and does not fail.
    assert!(
        remove_jailer_cgroups(&mounts, &parent, id)
            .unwrap()
            .is_empty()
    );
}

/// The cgroup (path) of `controller` in a `/proc/<pid>/cgroup` or `/proc/<pid>/task/<tid>/cgroup`.
fn cgroup_of(proc_file: &str, controller: &str) -> String {
    let text = fs::read_to_string(proc_file).unwrap();
    text.lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, list, path) = (f.next()?, f.next()?, f.next()?);
            list.split(',')
                .any(|c| c == controller)
                .then(|| path.to_owned())
        })
        .unwrap_or_else(|| panic!("no {controller} line in {proc_file}: {text}"))
}

/// The v1 cgroups the jailer would make for `--cgroup` values, with the values written, and a
/// process born in them: it is there from its first instruction, while the thread that
/// started it stays where it was.
#[test]
fn privileged_a_process_is_born_in_v1_cgroups_made_for_it() {
    if !nix::unistd::geteuid().is_root() {
        vmsan_testkit::skip!("needs root to create cgroups");
        return;
    }
    let mounts = CgroupMounts::detect().unwrap();
    let (Some(cpu), Some(memory)) = (
        mounts.v1_controller_mount("cpu").map(Path::to_owned),
        mounts.v1_controller_mount("memory").map(Path::to_owned),
    ) else {
        vmsan_testkit::skip!("no cgroup v1 cpu and memory hierarchies (a v2 host): {mounts:?}");
        return;
    };
    let parent = format!("vmsan-borntest-{}", std::process::id());
    let id = "vm-borntest";
    let mut guard = CgroupGuard {
        parents: vec![cpu.join(&parent), memory.join(&parent)],
        child: None,
    };
    let values = [
        "cpu.cfs_quota_us=50000".to_owned(),
        "cpu.cfs_period_us=100000".to_owned(),
        "memory.limit_in_bytes=67108864".to_owned(),
    ];
    let dirs = create_v1_cgroups(&mounts, &parent, id, &values).unwrap();
    assert_eq!(
        dirs,
        [cpu.join(&parent).join(id), memory.join(&parent).join(id)]
    );
    let read = |p: PathBuf| fs::read_to_string(p).unwrap().trim().to_owned();
    assert_eq!(read(dirs[0].join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(dirs[1].join("memory.limit_in_bytes")), "67108864");

    let before = cgroup_of("/proc/thread-self/cgroup", "memory");
    let child = spawn_born_in(&dirs, || {
        Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
    })
    .unwrap();
    let pid = child.id();
    guard.child = Some(child);
    let want = format!("/{parent}/{id}");
    assert_eq!(cgroup_of(&format!("/proc/{pid}/cgroup"), "memory"), want);
    assert_eq!(cgroup_of(&format!("/proc/{pid}/cgroup"), "cpu"), want);
    assert_eq!(read(dirs[1].join("cgroup.procs")), pid.to_string());
    assert_eq!(
        cgroup_of("/proc/thread-self/cgroup", "memory"),
        before,
        "the calling thread moved"
    );

    // Bad values are refused before anything is written.
    for bad in [
        "cpu.cfs_quota_us",
        "nodot=1",
        "../memory.limit_in_bytes=1",
        "nosuch.x=1",
    ] {
        assert!(
            create_v1_cgroups(&mounts, &parent, "vm-bad", &[bad.to_owned()]).is_err(),
            "{bad}"
        );
    }
    assert!(create_v1_cgroups(&mounts, "../escape", id, &values).is_err());
    assert!(create_v1_cgroups(&mounts, &parent, "../vm", &values).is_err());
    drop(guard);
    for dir in &dirs {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
}

#[test]
fn parses_oom_counters() {
    use vmsan_firecracker::cgroup::parse_keyed_counter;
    let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
    assert_eq!(parse_keyed_counter(v1, "oom_kill"), Some(3));
    assert_eq!(parse_keyed_counter(v1, "under_oom"), Some(0));
    let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
    assert_eq!(parse_keyed_counter(v2, "oom_kill"), Some(1));
    assert_eq!(parse_keyed_counter(v2, "oom"), Some(2));
    assert_eq!(
        parse_keyed_counter("oom_kill_disable 0\n", "oom_kill"),
        None
    );
}

/// A process that outgrows the VM's memory cgroup is OOM-killed and the counter says so.
#[test]
fn privileged_counts_oom_kills_in_the_vm_cgroup() {
    use std::io::Write;
    use std::os::unix::process::ExitStatusExt;
    use vmsan_firecracker::cgroup::oom_kill_count;
    if !nix::unistd::geteuid().is_root() {
        vmsan_testkit::skip!("needs root to create cgroups");
        return;
    }
    let mounts = CgroupMounts::detect().unwrap();
    let (dir, procs, limit_files): (PathBuf, &str, Vec<(&str, &str)>) = match mounts.mode() {
        Some(CgroupMode::V1 | CgroupMode::Hybrid) => match mounts.v1_controller_mount("memory") {
            Some(memory) => (
                memory.to_owned(),
                "tasks",
                vec![("memory.limit_in_bytes", "33554432")],
            ),
            None => {
                vmsan_testkit::skip!("no v1 memory controller");
                return;
            }
        },
        Some(CgroupMode::V2) => (
            mounts.unified.clone().unwrap(),
            "cgroup.procs",
            vec![("memory.max", "33554432"), ("memory.swap.max", "0")],
        ),
        None => {
            vmsan_testkit::skip!("no cgroups");
            return;
        }
    };
    let parent = format!("vmsan-fctest-oom-{}", std::process::id());
    let id = "vm-oom";
    let mut guard = CgroupGuard {
        parents: vec![dir.join(&parent)],
        child: None,
    };
    let cgroup = dir.join(&parent).join(id);
    fs::create_dir_all(&cgroup).unwrap();
    if mounts.mode() == Some(CgroupMode::V2) {
        // The parent must delegate the memory controller.
        let _ = fs::write(dir.join("cgroup.subtree_control"), "+memory");
        if let Err(e) = fs::write(dir.join(&parent).join("cgroup.subtree_control"), "+memory") {
            vmsan_testkit::skip!("the memory controller cannot be delegated here: {e}");
            return;
        }
    }
    for (file, value) in &limit_files {
        if let Err(e) = fs::write(cgroup.join(file), value) {
            assert!(*file == "memory.swap.max", "{file}: {e}");
        }
    }
    assert_eq!(oom_kill_count(&mounts, &parent, id).unwrap(), Some(0));

    // A shell that waits for a line, then becomes `tail /dev/zero` (which keeps the whole
    // newline-free stream in memory) once it has been moved into the cgroup.
    let child = Command::new("sh")
        .args(["-c", "read line; exec tail /dev/zero"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    guard.child = Some(child);
    let child = guard.child.as_mut().unwrap();
    fs::write(cgroup.join(procs), child.id().to_string()).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let status = child.wait().unwrap();
    guard.child = None;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert_eq!(oom_kill_count(&mounts, &parent, id).unwrap(), Some(1));

    // Gone with the cgroup.
    remove_jailer_cgroups(&mounts, &parent, id).unwrap();
    assert_eq!(oom_kill_count(&mounts, &parent, id).unwrap(), None);
    assert!(oom_kill_count(&mounts, &parent, "../x").is_err());
}

#[test]
fn modes_serialise_in_lowercase() {
    assert_eq!(
        serde_json::to_string(&CgroupMode::Hybrid).unwrap(),
        "\"hybrid\""
    );
    assert_eq!(serde_json::to_string(&CgroupMode::V2).unwrap(), "\"v2\"");
    assert_eq!(serde_json::to_string(&CgroupVersion::V1).unwrap(), "\"v1\"");
}

/// Parent cgroups made for VMs go with the last VM (issue 17, item 18): only empty ones, only
/// ones recorded as made for vmsan, and one removed while a create raced with it is made again
/// by that create and still goes with the next last VM. Real hierarchies, test-named parents.
#[test]
fn privileged_parent_cgroups_go_with_the_last_vm_and_only_ours() {
    use std::time::Duration;
    use vmsan_firecracker::cgroup_parents::ParentRegistry;
    if !nix::unistd::geteuid().is_root() {
        vmsan_testkit::skip!("needs root to create cgroups");
        return;
    }
    let mounts = CgroupMounts::detect().unwrap();
    let ours = format!("vmsan-fcparent-{}", std::process::id());
    let theirs = format!("vmsan-fcadmin-{}", std::process::id());
    let roots: Vec<PathBuf> = mounts
        .v1
        .iter()
        .map(|h| h.mount_point.clone())
        .chain(mounts.unified.clone())
        .filter(|r| r.join("cgroup.procs").exists())
        .collect();
    assert!(!roots.is_empty(), "no cgroup hierarchy: {mounts:?}");
    let _guard = CgroupGuard {
        parents: roots
            .iter()
            .flat_map(|r| [r.join(&ours), r.join(&theirs)])
            .collect(),
        child: None,
    };
    let records = tempfile::tempdir().unwrap();
    let registry = ParentRegistry::new(records.path());

    // An administrator's parent, there before any VM: never ours.
    let root = &roots[0];
    fs::create_dir(root.join(&theirs)).unwrap();
    let absent = ParentRegistry::absent(&mounts, &[&ours, &theirs]);
    assert!(absent.contains(&root.join(&ours)));
    assert!(!absent.contains(&root.join(&theirs)));

    // Two VMs' cgroups under our parent (made by their create, in one hierarchy).
    for vm in ["vm-a", "vm-b"] {
        fs::create_dir_all(root.join(&ours).join(vm)).unwrap();
    }
    registry.record_made(&absent).unwrap();
    assert_eq!(registry.recorded(&mounts), vec![root.join(&ours)]);

    // The first VM goes: its parent stays for the other.
    fs::remove_dir(root.join(&ours).join("vm-a")).unwrap();
    assert!(registry.remove_empty(&mounts, Duration::ZERO).is_empty());
    assert!(root.join(&ours).exists());
    assert_eq!(registry.leftovers(&mounts), Vec::<PathBuf>::new());

    // The last VM goes: so does its parent, and only that one.
    fs::remove_dir(root.join(&ours).join("vm-b")).unwrap();
    assert_eq!(registry.leftovers(&mounts), vec![root.join(&ours)]);
    assert_eq!(
        registry.remove_empty(&mounts, Duration::from_secs(1)),
        vec![root.join(&ours)]
    );
    assert!(!root.join(&ours).exists(), "the empty parent stayed");
    assert!(
        root.join(&theirs).exists(),
        "a parent vmsan did not make went"
    );
    // doctor still names it (by name) as an empty parent.
    assert_eq!(
        vmsan_firecracker::cgroup_parents::empty_parents(&mounts, &[&theirs]),
        vec![root.join(&theirs)]
    );
    // ... but not while a process sits in it (a supervisor in `vmsan/`).
    let mut sleeper = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    fs::write(
        root.join(&theirs).join("cgroup.procs"),
        sleeper.id().to_string(),
    )
    .unwrap();
    let busy = vmsan_firecracker::cgroup_parents::empty_parents(&mounts, &[&theirs]);
    drop(sleeper.stdin.take());
    sleeper.wait().unwrap();
    assert!(
        busy.is_empty(),
        "a cgroup holding a process is not empty: {busy:?}"
    );

    // A create that raced with that removal finds its parent gone and makes it again; the
    // parent is still known as ours and goes with the next last VM.
    fs::create_dir_all(root.join(&ours).join("vm-c")).unwrap();
    fs::remove_dir(root.join(&ours).join("vm-c")).unwrap();
    assert_eq!(
        registry.remove_empty(&mounts, Duration::ZERO),
        vec![root.join(&ours)]
    );
    assert!(registry.leftovers(&mounts).is_empty());
}
