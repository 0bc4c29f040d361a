//! Users and groups read straight from the guest's `/etc/passwd` and `/etc/group` (no NSS).

use std::path::Path;

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: Vec<u32>,
    pub(crate) home: String,
    pub(crate) shell: String,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
    shell: String,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_owned(),
                shell: f[6].to_owned(),
            })
        })
        .collect()
}

/// `(name, gid, members)` of each group.
fn parse_group(text: &str) -> Vec<(String, u32, Vec<String>)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let members = f[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect();
            Some((f[0].to_owned(), f[2].parse().ok()?, members))
        })
        .collect()
}

/// Resolve `spec` (`name`, `uid`, `name:group`, `uid:gid`) against the files under `root`
/// (`/` in the guest).
pub(crate) fn resolve(root: &Path, spec: &str) -> Result<User, String> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    resolve_in(&passwd, &group, spec)
}

pub(crate) fn resolve_in(passwd: &str, group: &str, spec: &str) -> Result<User, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if !valid_name(user_part) || group_part.is_some_and(|g| !valid_name(g)) {
        return Err(format!("invalid user {spec:?}"));
    }
    let entries = parse_passwd(passwd);
    let groups = parse_group(group);
    let numeric: Option<u32> = user_part.parse().ok();
    let entry = entries
        .iter()
        .find(|e| e.name == user_part)
        .or_else(|| numeric.and_then(|n| entries.iter().find(|e| e.uid == n)));
    let mut user = match (entry, numeric) {
        (Some(e), _) => User {
            name: e.name.clone(),
            uid: e.uid,
            gid: e.gid,
            groups: Vec::new(),
            home: if e.home.is_empty() {
                "/".into()
            } else {
                e.home.clone()
            },
            shell: if e.shell.is_empty() {
                "/bin/sh".into()
            } else {
                e.shell.clone()
            },
        },
        (None, Some(n)) => User {
            name: n.to_string(),
            uid: n,
            gid: n,
            groups: Vec::new(),
            home: "/".into(),
            shell: "/bin/sh".into(),
        },
        (None, None) => return Err(format!("user {user_part:?} not found in /etc/passwd")),
    };
    if let Some(g) = group_part {
        user.gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|(name, _, _)| name == g)
                .map(|(_, gid, _)| *gid)
                .ok_or_else(|| format!("group {g:?} not found in /etc/group"))?,
        };
    }
    user.groups.push(user.gid);
    for (_, gid, members) in &groups {
        if members.contains(&user.name) && !user.groups.contains(gid) {
            user.groups.push(*gid);
        }
    }
    Ok(user)
}

/// Owner and group names by number, read once per request from the guest's files.
#[derive(Debug, Default)]
pub(crate) struct Names {
    users: std::collections::HashMap<u32, String>,
    groups: std::collections::HashMap<u32, String>,
}

impl Names {
    /// Read `/etc/passwd` and `/etc/group` under `root`; a missing file names nobody.
    pub(crate) fn load(root: &Path) -> Self {
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
        let group = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
        Self::parse(&passwd, &group)
    }

    fn parse(passwd: &str, group: &str) -> Self {
        let mut names = Self::default();
        // The first line for a number wins, as getpwuid would answer.
        for e in parse_passwd(passwd) {
            names.users.entry(e.uid).or_insert(e.name);
        }
        for (name, gid, _) in parse_group(group) {
            names.groups.entry(gid).or_insert(name);
        }
        names
    }

    /// The user's name, or the uid in decimal.
    pub(crate) fn user(&self, uid: u32) -> String {
        self.users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }

    /// The group's name, or the gid in decimal.
    pub(crate) fn group(&self, gid: u32) -> String {
        self.groups
            .get(&gid)
            .cloned()
            .unwrap_or_else(|| gid.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\n# c\nalice:x:1000:1000::/home/alice:/bin/zsh\nbad line\n";
    const GROUP: &str = "root:x:0:\nalice:x:1000:\nsudo:x:27:alice,bob\nwheel:x:10:bob\n";

    #[test]
    fn resolves_names_uids_and_groups() {
        let a = resolve_in(PASSWD, GROUP, "alice").unwrap();
        assert_eq!(
            (a.uid, a.gid, a.home.as_str(), a.shell.as_str()),
            (1000, 1000, "/home/alice", "/bin/zsh")
        );
        assert_eq!(a.groups, vec![1000, 27]);
        let r = resolve_in(PASSWD, GROUP, "0").unwrap();
        assert_eq!(r.name, "root");
        let n = resolve_in(PASSWD, GROUP, "4242:wheel").unwrap();
        assert_eq!((n.uid, n.gid, n.home.as_str()), (4242, 10, "/"));
        assert!(resolve_in(PASSWD, GROUP, "nobody").is_err());
        assert!(resolve_in(PASSWD, GROUP, "../etc").is_err());
        assert!(resolve_in(PASSWD, GROUP, "alice:nogroup").is_err());
    }

    #[test]
    fn names_fall_back_to_numbers() {
        let n = Names::parse(PASSWD, GROUP);
        assert_eq!(
            (n.user(0), n.user(1000), n.user(4242)),
            ("root".into(), "alice".into(), "4242".into())
        );
        assert_eq!((n.group(27), n.group(5)), ("sudo".into(), "5".into()));
    }
}
