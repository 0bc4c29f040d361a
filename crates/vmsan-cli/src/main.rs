//! The `vmsan` command.

fn main() {
    let argv = std::env::args_os().collect();
    std::process::exit(vmsan_cli::run(argv, vmsan_cli::supervisor_command()));
}
