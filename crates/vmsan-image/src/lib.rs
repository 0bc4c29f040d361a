//! vmsan-image
