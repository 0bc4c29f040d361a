//! vmsan CLI library.
