//! vmsan-net
