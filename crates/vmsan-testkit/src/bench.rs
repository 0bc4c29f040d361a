//! Small helpers the benchmarks share: settings from the environment, percentiles, and the
//! step breakdown `create --json` reports.

use serde_json::Value;

/// `name` from the environment as a number, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` percentile (0.0-1.0) of sorted, non-empty samples.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    let last = sorted.len().saturating_sub(1);
    let i = ((last as f64) * p).round() as usize;
    sorted.get(i.min(last)).copied().unwrap_or(f64::NAN)
}

/// The sum of the named steps of a `create --json` breakdown (`timingsMs`), ms.
pub fn steps_ms(doc: &Value, names: &[&str]) -> f64 {
    doc["timingsMs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| names.iter().any(|n| s["step"] == *n))
        .filter_map(|s| s["ms"].as_f64())
        .sum()
}

/// Print the step-by-step breakdown of `create --json` documents (p50 and p95 of each step,
/// in the order the steps come; steps that ran alongside others are marked), then the whole
/// command's wall time (`wall`, sorted here).
pub fn steps_table(title: &str, docs: &[Value], wall: &mut [f64]) {
    let mut steps: std::collections::BTreeMap<String, (usize, Vec<f64>)> =
        std::collections::BTreeMap::new();
    for doc in docs {
        for (i, s) in doc["timingsMs"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let mut name = s["step"].as_str().unwrap_or("?").to_owned();
            if s["parallel"] == true {
                name.push_str(" (parallel)");
            }
            let e = steps.entry(name).or_insert((i, Vec::new()));
            e.1.extend(s["ms"].as_f64());
        }
    }
    println!("{title}");
    println!("{:<64} {:>8} {:>8}", "step", "p50 ms", "p95 ms");
    let mut ordered: Vec<_> = steps.into_iter().collect();
    ordered.sort_by_key(|(_, (i, _))| *i);
    for (name, (_, mut v)) in ordered {
        v.sort_by(f64::total_cmp);
        println!("{name:<64} {:>8.2} {:>8.2}", pct(&v, 0.5), pct(&v, 0.95));
    }
    wall.sort_by(f64::total_cmp);
    println!(
        "{:<64} {:>8.2} {:>8.2}",
        "total (wall, whole command)",
        pct(wall, 0.5),
        pct(wall, 0.95)
    );
}

/// What [`create_at_once`] got.
#[derive(Debug, Default)]
pub struct AtOnce {
    /// The ids of the VMs that came up.
    pub ids: Vec<String>,
    /// How many failed, by error code.
    pub failures: std::collections::BTreeMap<String, usize>,
    /// Wall time until the last command ended, s.
    pub secs: f64,
}

impl AtOnce {
    /// `"<n> succeeded (<pct>%), wall <s> s[, failures {…}]"`.
    #[must_use]
    pub fn summary(&self, tried: usize) -> String {
        format!(
            "{} succeeded ({:.0}%), wall {:.2} s{}",
            self.ids.len(),
            100.0 * self.ids.len() as f64 / tried.max(1) as f64,
            self.secs,
            if self.failures.is_empty() {
                String::new()
            } else {
                format!(", failures {:?}", self.failures)
            }
        )
    }
}

/// Run `n` commands `vmsan --json ARGS` (creates) at once, one process each; print the first
/// error of each kind.
pub fn create_at_once(home: &crate::e2e::Home, args: &[&str], n: usize) -> AtOnce {
    let t = std::time::Instant::now();
    let children: Vec<_> = (0..n)
        .filter_map(|_| {
            home.vmsan()
                .arg("--json")
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()
        })
        .collect();
    let mut got = AtOnce::default();
    for c in children {
        let Ok(out) = c.wait_with_output() else {
            continue;
        };
        let doc = crate::e2e::parse(&out);
        match doc["vmId"].as_str() {
            Some(id) if out.status.success() => got.ids.push(id.to_owned()),
            _ => {
                let code = doc["error"]["code"].as_str().unwrap_or("?").to_owned();
                if !got.failures.contains_key(&code) {
                    println!("first {code}: {}", doc["error"]);
                }
                *got.failures.entry(code).or_default() += 1;
            }
        }
    }
    got.secs = t.elapsed().as_secs_f64();
    got
}
