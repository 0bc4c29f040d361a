//! The `vmsan` command.

fn main() {
    std::process::exit(vmsan_cli::run(std::env::args_os().collect()));
}
