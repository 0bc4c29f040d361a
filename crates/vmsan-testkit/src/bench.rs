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
