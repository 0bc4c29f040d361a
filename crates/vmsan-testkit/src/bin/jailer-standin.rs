//! `jailer-standin`: the jailer's command line and jail layout (test equipment).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(vmsan_testkit::jailer::main(&args));
}
