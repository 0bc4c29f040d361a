//! Benchmark harness: run commands repeatedly and print p50/p95/mean wall time side by side.
//! Usage: `bench_commands <runs> <label> <cmd> [args…] [';' <label> <cmd> [args…]]…`
//! Each command's stdout is discarded; a non-zero exit aborts the benchmark.

use std::process::{Command, Stdio};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (runs, rest) = args
        .split_first()
        .ok_or("usage: bench_commands <runs> <label> <cmd>…")?;
    let runs: usize = runs.parse()?;
    println!(
        "{:<28} {:>6} {:>10} {:>10} {:>10}",
        "command", "runs", "p50 ms", "p95 ms", "mean ms"
    );
    for group in rest.split(|a| a == ";") {
        let [label, cmd, cmd_args @ ..] = group else {
            return Err("each group needs a label and a command".into());
        };
        // One warm-up run fills the page cache, as on a host where `list` runs often.
        run_once(cmd, cmd_args)?;
        let mut ms: Vec<f64> = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            run_once(cmd, cmd_args)?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        println!(
            "{label:<28} {runs:>6} {:>10.2} {:>10.2} {mean:>10.2}",
            pct(0.50),
            pct(0.95)
        );
    }
    Ok(())
}

fn run_once(cmd: &str, args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let status = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("{cmd} {args:?} failed: {status}").into());
    }
    Ok(())
}
