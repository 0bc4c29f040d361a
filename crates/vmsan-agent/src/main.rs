//! vmsan-agent: the guest agent (init + exec/pty/files server).
fn main() {}
