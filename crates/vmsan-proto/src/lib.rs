//! vmsan-proto
