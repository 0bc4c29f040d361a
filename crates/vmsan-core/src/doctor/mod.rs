//! `vmsan doctor`: is this host ready to run VMs? Every check says what it found and, when it
//! is not fine, what to do about it.

mod binaries;
pub mod guest;
mod host;

use serde::Serialize;

use crate::paths::Paths;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Pass,
    /// Works, but worth attention.
    Warn,
    /// VMs cannot run (or a feature cannot work) until this is fixed.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `System`, `Binaries` or `Images`.
    pub category: &'static str,
    /// Short name, e.g. `KVM`.
    pub name: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do, when the status is not `pass`.
    pub fix: Option<String>,
}

impl Check {
    fn pass(category: &'static str, name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            category,
            name,
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(
        category: &'static str,
        name: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            category,
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(
        category: &'static str,
        name: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            category,
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Counts for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Checks that passed.
    pub passed: usize,
    /// Checks that warned.
    pub warned: usize,
    /// Checks that failed.
    pub failed: usize,
    /// All checks.
    pub total: usize,
}

/// Summarise a list of checks.
pub fn summarize(checks: &[Check]) -> Summary {
    let count = |s| checks.iter().filter(|c| c.status == s).count();
    Summary {
        passed: count(Status::Pass),
        warned: count(Status::Warn),
        failed: count(Status::Fail),
        total: checks.len(),
    }
}

/// Run every check, in display order. Checks never fail as a whole: a check that cannot look
/// reports what stopped it.
pub fn run(paths: &Paths) -> Vec<Check> {
    let mut out = host::checks(paths);
    out.push(guest::host_check(paths));
    out.extend(binaries::checks(paths));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_non_pass_has_a_fix_and_names_are_unique() {
        let home = tempfile::tempdir().unwrap();
        let checks = run(&Paths::new(home.path()));
        assert!(checks.len() >= 15, "{} checks", checks.len());
        let mut names = std::collections::HashSet::new();
        for c in &checks {
            assert!(names.insert(c.name), "duplicate check {}", c.name);
            assert!(!c.detail.is_empty(), "{} has no detail", c.name);
            if c.status != Status::Pass {
                assert!(
                    c.fix.as_deref().is_some_and(|f| !f.is_empty()),
                    "{} has no fix",
                    c.name
                );
            }
        }
        // A fresh home has no Firecracker and no kernel: those must fail, not pass.
        for name in ["Firecracker", "Jailer", "Kernel"] {
            let c = checks.iter().find(|c| c.name == name).unwrap();
            assert_eq!(c.status, Status::Fail, "{name}: {}", c.detail);
        }
        let s = summarize(&checks);
        assert_eq!(s.passed + s.warned + s.failed, s.total);
    }
}
