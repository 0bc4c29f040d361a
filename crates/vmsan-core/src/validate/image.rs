//! Image references. The full reference grammar belongs to `vmsan-image`; until it is wired
//! in, this is the minimal syntax check every reference must pass.

use super::invalid;
use crate::error::{Error, ErrorCode};

/// Check an image reference: not empty, at most 512 characters, no whitespace or control
/// characters, no trailing `:` (empty tag) or `@` (empty digest).
pub fn parse_image_ref(flag: &str, raw: &str) -> Result<String, Error> {
    let err = |rule: &str| invalid(ErrorCode::ValidationImageRef, flag, raw, rule);
    if raw.is_empty() {
        return Err(err("The image reference cannot be empty."));
    }
    if raw.len() > 512 || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(
            "Image references have no spaces and are at most 512 characters long.",
        ));
    }
    if raw.ends_with(':') {
        return Err(err("Tag cannot be empty."));
    }
    if raw.ends_with('@') {
        return Err(err("Digest cannot be empty."));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs() {
        for good in [
            "alpine",
            "alpine:3.20",
            "localhost:5000/a/b:c",
            "x@sha256:00",
        ] {
            assert_eq!(parse_image_ref("--from-image", good).unwrap(), good);
        }
        for bad in ["", "alpine:", "a b", "x@", "a\tb"] {
            let e = parse_image_ref("--from-image", bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationImageRef, "{bad:?}");
        }
    }
}
