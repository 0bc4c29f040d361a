//! Environment entries: `--env KEY=VALUE`.

use serde::Serialize;

use super::invalid;
use crate::error::{Error, ErrorCode};

/// One environment variable for a guest command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvVar {
    /// `[A-Za-z_][A-Za-z0-9_]*`, at most 255 characters.
    pub key: String,
    /// Anything but NUL (may contain `=`; may be empty).
    pub value: String,
}

/// Parse `KEY=VALUE`. The key is a portable shell name; the value is everything after the
/// first `=`, kept verbatim (it may be empty or contain `=`), without NUL bytes.
pub fn parse_env(raw: &str) -> Result<EnvVar, Error> {
    let flag = "--env";
    let Some((key, value)) = raw.split_once('=') else {
        return Err(invalid(
            ErrorCode::ValidationEnv,
            flag,
            raw,
            "Expected KEY=VALUE.",
        ));
    };
    let kb = key.as_bytes();
    let key_ok = !kb.is_empty()
        && kb.len() <= 255
        && (kb[0].is_ascii_alphabetic() || kb[0] == b'_')
        && kb.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
    if !key_ok {
        return Err(invalid(
            ErrorCode::ValidationEnv,
            flag,
            raw,
            "The name must start with a letter or '_' and hold only letters, digits and '_'.",
        ));
    }
    if value.contains('\0') {
        return Err(invalid(
            ErrorCode::ValidationEnv,
            flag,
            raw,
            "Values must not contain NUL.",
        ));
    }
    Ok(EnvVar {
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env() {
        assert_eq!(
            parse_env("A=1").unwrap(),
            EnvVar {
                key: "A".into(),
                value: "1".into()
            }
        );
        assert_eq!(parse_env("_X=").unwrap().value, "");
        assert_eq!(parse_env("URL=a=b c").unwrap().value, "a=b c");
        for bad in ["", "A", "=1", "1A=x", "A-B=1", "A B=1", "A=\0", "É=1"] {
            assert_eq!(
                parse_env(bad).unwrap_err().code(),
                ErrorCode::ValidationEnv,
                "{bad:?}"
            );
        }
    }
}
