//! vmsan-testkit
