//! The `vmsan` group, read from `/etc/group` (no NSS: this must also work in a static binary).

/// The group whose members may use read-only and guest-access commands without sudo.
pub const GROUP_NAME: &str = "vmsan";

/// The gid of the `vmsan` group, if the host has one.
pub fn vmsan_gid() -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    gid_in(&text, GROUP_NAME)
}

fn gid_in(group_file: &str, name: &str) -> Option<u32> {
    group_file.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_gid() {
        let g = "root:x:0:\nvmsanx:x:5:\nvmsan:x:998:alice,bob\n";
        assert_eq!(super::gid_in(g, "vmsan"), Some(998));
        assert_eq!(super::gid_in(g, "nope"), None);
    }
}
