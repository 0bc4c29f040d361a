//! vmsan-testkit: test equipment. Holds the stand-in Firecracker VMM and jailer
//! (`firecracker-standin`, `jailer-standin`), and fixtures to build guests for them.
//! Never a dependency of the product.

pub mod api;
pub mod args;
pub mod bench;
pub mod cmdline;
pub mod cpio;
pub mod cpu_config;
pub mod e2e;
pub mod fc;
pub mod fixture;
pub mod golden;
pub mod helper;
pub mod http;
pub mod jailer;
pub mod kernel;
pub mod log;
pub mod realfc;
pub mod relay;
pub mod skip;
pub mod standin;
pub mod sys;
pub mod vmm;
