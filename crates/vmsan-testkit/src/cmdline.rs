//! How Linux splits the kernel command line between itself and `/init`
//! (`init/main.c`: `unknown_bootoption`, `rdinit=`, everything after `--`).

/// Result of splitting a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitArgs {
    /// Path of the init inside the initrd (`rdinit=`, default `/init`).
    pub init: String,
    /// argv, `argv[0]` included.
    pub argv: Vec<String>,
    /// Environment (`HOME=/`, `TERM=linux`, then unknown `k=v` parameters).
    pub env: Vec<String>,
}

/// Parameters the kernel itself consumes (a subset; anything with a `.` is a module
/// parameter and is consumed too).
const KERNEL_PARAMS: &[&str] = &[
    "console",
    "earlycon",
    "earlyprintk",
    "reboot",
    "panic",
    "pci",
    "quiet",
    "debug",
    "loglevel",
    "init",
    "rdinit",
    "root",
    "rootfstype",
    "rootflags",
    "rootwait",
    "ro",
    "rw",
    "nomodule",
    "swiotlb",
    "acpi",
    "noapic",
    "nolapic",
    "nokaslr",
    "mitigations",
    "tsc",
    "clocksource",
    "ipv6",
    "random",
    "nr_cpus",
    "maxcpus",
    "mem",
    "audit",
    "selinux",
    "apparmor",
    "lsm",
    "cgroup_no_v1",
    "systemd",
    "noreplace-smp",
    "align_va_addr",
    "pti",
    "nopti",
    "spectre_v2",
    "spec_store_bypass_disable",
    "ignore_loglevel",
    "initcall_debug",
    "printk",
];

fn words(cmdline: &str) -> Vec<String> {
    // The kernel's next_arg: whitespace separated, double quotes group (and are removed).
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut have = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                have = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => {
                cur.push(c);
                have = true;
            }
        }
    }
    if have {
        out.push(cur);
    }
    out
}

/// Splits `cmdline` as the kernel does for an initrd's init.
pub fn split(cmdline: &str) -> InitArgs {
    let mut init = "/init".to_owned();
    let mut argv_rest = Vec::new();
    let mut env = vec!["HOME=/".to_owned(), "TERM=linux".to_owned()];
    let mut after_dashes = Vec::new();
    let mut dashes = false;
    for w in words(cmdline) {
        if dashes {
            after_dashes.push(w);
            continue;
        }
        if w == "--" {
            dashes = true;
            continue;
        }
        let (key, value) = match w.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (w.clone(), None),
        };
        if key == "rdinit" {
            if let Some(v) = value {
                init = v;
            }
            continue;
        }
        if KERNEL_PARAMS.contains(&key.as_str()) || key.contains('.') {
            continue;
        }
        match value {
            Some(_) => {
                if let Some(existing) = env
                    .iter_mut()
                    .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key.as_str()))
                {
                    *existing = w;
                } else {
                    env.push(w);
                }
            }
            None => argv_rest.push(w),
        }
    }
    let mut argv = vec![init.clone()];
    argv.extend(argv_rest);
    argv.extend(after_dashes);
    InitArgs { init, argv, env }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_the_kernel() {
        let a = split(
            "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux quiet vmsan_rootfs=/dev/vda single \"msg=a b\" -- x y=z",
        );
        assert_eq!(a.init, "/init");
        assert_eq!(a.argv, vec!["/init", "single", "x", "y=z"]);
        assert_eq!(
            a.env,
            vec!["HOME=/", "TERM=linux", "vmsan_rootfs=/dev/vda", "msg=a b"]
        );
        let b = split("rdinit=/sbin/init foo=1 foo=2");
        assert_eq!(b.init, "/sbin/init");
        assert_eq!(b.argv, vec!["/sbin/init"]);
        assert_eq!(b.env, vec!["HOME=/", "TERM=linux", "foo=2"]);
    }
}
