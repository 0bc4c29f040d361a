//! Progress of long work (image pulls, builds, setup downloads) on stderr: one bar per layer
//! on a terminal, a line per step otherwise, nothing in `--json` mode.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use vmsan_image::{Progress, ProgressFn};

/// A progress callback for the image crate, or none in `--json` mode.
pub fn image_progress(json: bool) -> Option<ProgressFn> {
    if json {
        return None;
    }
    if !std::io::stderr().is_terminal() {
        return Some(Arc::new(|p: &Progress| {
            if let Some(line) = plain_line(p) {
                eprintln!("{line}");
            }
        }));
    }
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let bars: Mutex<HashMap<String, ProgressBar>> = Mutex::new(HashMap::new());
    let style = ProgressStyle::with_template(
        "  {prefix:.dim} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    Some(Arc::new(move |p: &Progress| {
        let Ok(mut bars) = bars.lock() else { return };
        let mut bar_for = |key: String, total: u64| {
            bars.entry(key.clone())
                .or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(total));
                    b.set_style(style.clone());
                    b.set_prefix(key.get(..19).unwrap_or(&key).to_owned());
                    b
                })
                .clone()
        };
        match p {
            Progress::LayerStart {
                digest,
                size,
                offset,
            } => bar_for(digest.to_string(), *size).set_position(*offset),
            Progress::LayerProgress { digest, done, size } => {
                bar_for(digest.to_string(), *size).set_position(*done);
            }
            Progress::LayerDone { digest, .. } => {
                let b = bar_for(digest.to_string(), 0);
                b.finish();
            }
            Progress::Download { name, done, total } => {
                bar_for(name.clone(), total.unwrap_or(0)).set_position(*done);
            }
            other => {
                if let Some(line) = plain_line(other) {
                    let _ = multi.println(line);
                }
            }
        }
    }))
}

/// One line for the steps worth a line.
fn plain_line(p: &Progress) -> Option<String> {
    Some(match p {
        Progress::Resolving { reference } => format!("Resolving {reference}"),
        Progress::Resolved {
            digest,
            layers,
            total_bytes,
        } => {
            format!(
                "Manifest {digest}: {layers} layer(s), {:.1} MB",
                *total_bytes as f64 / 1e6
            )
        }
        Progress::LayerDone {
            digest,
            cached: true,
        } => format!("  {digest}: cached"),
        Progress::Unpacking { index, count } => format!("Unpacking layer {}/{count}", index + 1),
        Progress::Building { fs_type } => format!("Building the {} filesystem", fs_type.as_str()),
        Progress::Done { digest, cached } => {
            format!(
                "Image {digest} ready{}",
                if *cached { " (cached)" } else { "" }
            )
        }
        _ => return None,
    })
}

/// A byte-count bar for an upload or download on a terminal (none in `--json` mode or when
/// stderr is not a terminal). The callback gets bytes so far and the total, when known.
pub fn transfer_progress(json: bool, what: &str) -> Option<vmsan_agent_client::Progress> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(what.to_owned());
    Some(Arc::new(move |done: u64, total: Option<u64>| {
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(done);
        if total.is_some_and(|t| done >= t) {
            bar.finish();
        }
    }))
}
