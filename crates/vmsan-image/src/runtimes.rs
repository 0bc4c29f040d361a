//! The named runtimes, defined once as image references.

/// `(runtime name, image reference)`, the single definition of the runtimes.
pub const RUNTIMES: &[(&str, &str)] = &[
    ("base", "docker.io/library/ubuntu:24.04"),
    ("node22", "docker.io/library/node:22-bookworm-slim"),
    ("node24", "docker.io/library/node:24-bookworm-slim"),
    ("python3.13", "docker.io/library/python:3.13-slim-bookworm"),
];

/// The default runtime.
pub const DEFAULT_RUNTIME: &str = "base";

/// Image reference of a runtime, or `None` for an unknown name.
pub fn runtime_image(name: &str) -> Option<&'static str> {
    RUNTIMES.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

/// Names of all runtimes.
pub fn runtime_names() -> impl Iterator<Item = &'static str> {
    RUNTIMES.iter().map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_runtime_is_a_valid_reference() {
        for (n, r) in RUNTIMES {
            crate::reference::Reference::parse(r).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        assert_eq!(
            runtime_names().collect::<Vec<_>>(),
            ["base", "node22", "node24", "python3.13"]
        );
        assert!(runtime_image(DEFAULT_RUNTIME).is_some());
        assert!(runtime_image("ruby").is_none());
    }
}
