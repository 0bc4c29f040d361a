//! vmsan-firecracker
