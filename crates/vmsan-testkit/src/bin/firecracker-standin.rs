//! `firecracker-standin`: Firecracker's API and command line, without KVM (test equipment).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(vmsan_testkit::fc::main(&args));
}
