//! `vmsan doctor`: render the host checks of `vmsan_core::doctor`.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::json;
use vmsan_core::error::Error;

use super::Ctx;
use crate::output::{Outcome, Output, Style, exit};

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Fine.
    Pass,
    /// Works, but worth a look.
    Warn,
    /// vmsan cannot work until this is fixed.
    Fail,
}

/// One check, as the CLI shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoctorCheck {
    /// Group heading ("System", "Binaries", …).
    pub category: String,
    /// What was checked.
    pub name: String,
    /// The outcome.
    pub status: CheckStatus,
    /// What was found.
    pub detail: String,
    /// What to do about a warning or failure.
    pub fix: Option<String>,
}

/// Render checks: grouped by category in human mode, `{"checks", "summary"}` in `--json`
/// mode (fixes included). Exit 1 when any check fails.
pub fn render_doctor(out: &Output, checks: &[DoctorCheck]) -> Outcome {
    let count = |s: CheckStatus| checks.iter().filter(|c| c.status == s).count();
    let (passed, warned, failed) = (
        count(CheckStatus::Pass),
        count(CheckStatus::Warn),
        count(CheckStatus::Fail),
    );
    let doc = json!({
        "checks": checks,
        "summary": { "passed": passed, "warned": warned, "failed": failed, "total": checks.len() },
    });
    let mut s = format!("{}\n", out.paint(Style::Bold, "vmsan doctor"));
    let mut categories: Vec<&str> = Vec::new();
    for c in checks {
        if !categories.contains(&c.category.as_str()) {
            categories.push(&c.category);
        }
    }
    for cat in categories {
        let _ = writeln!(s, "\n  {}", out.paint(Style::Bold, cat));
        for c in checks.iter().filter(|c| c.category == cat) {
            let dots = ".".repeat(28usize.saturating_sub(c.name.chars().count()).max(2));
            let word = match c.status {
                CheckStatus::Pass => out.paint(Style::Green, "ok"),
                CheckStatus::Warn => out.paint(Style::Yellow, "WARN"),
                CheckStatus::Fail => out.paint(Style::Red, "FAIL"),
            };
            let detail = if c.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", c.detail)
            };
            let _ = writeln!(
                s,
                "    {} {} {word}{detail}",
                c.name,
                out.paint(Style::Dim, &dots)
            );
            if let (true, Some(fix)) = (c.status != CheckStatus::Pass, &c.fix) {
                let _ = writeln!(
                    s,
                    "      {}",
                    out.paint(Style::Yellow, &format!("Fix: {fix}"))
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "\nResult: {passed} passed, {warned} warnings, {failed} failed"
    );
    Outcome {
        json: doc,
        text: s.into_bytes(),
        exit_code: if failed > 0 { exit::ERROR } else { exit::OK },
    }
}

/// `vmsan doctor`.
pub(crate) fn run(_ctx: &Ctx) -> Result<Outcome, Error> {
    // The checks themselves live in `vmsan_core::doctor`; until they land, say so.
    Err(Error::not_implemented("Host checks (`vmsan doctor`)").detail("command", "doctor"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, status: CheckStatus) -> DoctorCheck {
        DoctorCheck {
            category: if name == "KVM" {
                "System".into()
            } else {
                "Binaries".into()
            },
            name: name.into(),
            status,
            detail: "d".into(),
            fix: Some(format!("fix {name}")),
        }
    }

    #[test]
    fn renders_groups_summary_and_exit() {
        let out = Output {
            json: false,
            verbose: false,
            color: false,
            err_color: false,
        };
        let checks = [
            check("KVM", CheckStatus::Pass),
            check("Firecracker", CheckStatus::Fail),
        ];
        let o = render_doctor(&out, &checks);
        let text = String::from_utf8(o.text).unwrap();
        assert!(text.contains("\n  System\n    KVM ..."), "{text}");
        assert!(
            text.contains("FAIL (d)\n      Fix: fix Firecracker"),
            "{text}"
        );
        assert!(!text.contains("fix KVM"), "fixes only for failures: {text}");
        assert!(
            text.ends_with("Result: 1 passed, 0 warnings, 1 failed\n"),
            "{text}"
        );
        assert_eq!(o.exit_code, 1);
        assert_eq!(o.json["summary"]["failed"], 1);
        assert_eq!(o.json["checks"][1]["status"], "fail");
        assert_eq!(o.json["checks"][1]["fix"], "fix Firecracker");

        let ok = render_doctor(&out, &[check("KVM", CheckStatus::Warn)]);
        assert_eq!(ok.exit_code, 0);
    }
}
