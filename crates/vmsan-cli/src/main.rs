//! The `vmsan` command.
fn main() {}
