//! `vmsan doctor`: render the host checks of `vmsan_core::doctor`.

use std::fmt::Write as _;

use serde_json::json;
use vmsan_core::doctor::{self, Check, Status as CheckStatus};
use vmsan_core::error::Error;

use super::Ctx;
use crate::output::{Outcome, Output, Style, exit};

/// Render checks: grouped by category in human mode, `{"checks", "summary"}` in `--json`
/// mode (fixes included). Exit 1 when any check fails.
pub fn render_doctor(out: &Output, checks: &[Check]) -> Outcome {
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
        if !categories.contains(&c.category) {
            categories.push(c.category);
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
pub(crate) fn run(ctx: &Ctx) -> Result<Outcome, Error> {
    let checks = doctor::run(&ctx.paths);
    Ok(render_doctor(&ctx.out, &checks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &'static str, status: CheckStatus) -> Check {
        Check {
            category: if name == "KVM" { "System" } else { "Binaries" },
            name,
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
