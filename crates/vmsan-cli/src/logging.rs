//! The command's `tracing` subscriber: the libraries' diagnostics (and, relayed, those of a
//! VM's supervisor while it boots) on stderr. Warnings and errors always, `--json` included
//! (stdout keeps its one document; a warning must not be lost); with `--verbose` (human
//! mode, which `--json` overrides) also vmsan's own info and debug events.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::output::Output;

/// The filter: WARN for everything; with `verbose`, DEBUG for vmsan's crates (their targets
/// start with `vmsan`), not for the libraries under them.
fn filter(verbose: bool) -> Targets {
    let base = Targets::new().with_default(LevelFilter::WARN);
    if verbose {
        base.with_target("vmsan", LevelFilter::DEBUG)
    } else {
        base
    }
}

/// Install the subscriber for this invocation (once; a second call keeps the first).
pub fn init(out: &Output) {
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(out.err_color)
        .without_time()
        .with_target(out.verbose)
        .with_filter(filter(out.verbose));
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn warnings_always_debug_of_vmsan_only_when_verbose() {
        let quiet = filter(false);
        assert!(quiet.would_enable("vmsan_net::setup", &Level::WARN));
        assert!(quiet.would_enable("hyper", &Level::ERROR));
        assert!(!quiet.would_enable("vmsan_core", &Level::INFO));
        let verbose = filter(true);
        assert!(verbose.would_enable("vmsan_image::pull", &Level::DEBUG));
        assert!(verbose.would_enable("vmsan::supervisor", &Level::INFO));
        assert!(!verbose.would_enable("vmsan_net", &Level::TRACE));
        assert!(!verbose.would_enable("hyper", &Level::DEBUG));
        assert!(verbose.would_enable("hyper", &Level::WARN));
    }
}
