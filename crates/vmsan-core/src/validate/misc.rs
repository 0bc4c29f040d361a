//! Small checks: host and guest paths, user names, project labels, session ids, URLs,
//! platforms.

use std::path::{Component, Path, PathBuf};

use super::invalid;
use crate::error::{Error, ErrorCode};

/// A host path given on the command line (`--kernel`, `--rootfs`, upload sources, …): not
/// empty, no NUL, at most 4096 bytes. A relative path is made absolute against `cwd`, and `.`
/// components are dropped; `..` is kept (it is the user's own path on their own machine, and
/// the file is opened, never trusted, by the caller).
pub fn parse_host_path(flag: &str, raw: &str, cwd: &Path) -> Result<PathBuf, Error> {
    if raw.is_empty() || raw.len() > 4096 || raw.contains('\0') {
        return Err(invalid(
            ErrorCode::ValidationPath,
            flag,
            raw,
            "Expected a file path (not empty, at most 4096 bytes).",
        ));
    }
    let p = Path::new(raw);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    Ok(joined
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect())
}

/// A path inside the guest (`--workdir`, `--dest`, a download source): absolute, no NUL, at
/// most 4096 bytes. It is sent to the agent as is; the agent resolves it inside the guest.
pub fn parse_guest_path(flag: &str, raw: &str) -> Result<String, Error> {
    if raw.is_empty() || raw.len() > 4096 || raw.contains('\0') || !raw.starts_with('/') {
        return Err(invalid(
            ErrorCode::ValidationPath,
            flag,
            raw,
            "Expected an absolute path inside the VM (starting with '/').",
        ));
    }
    Ok(raw.to_owned())
}

/// A guest user name or numeric uid (`--user`): `[A-Za-z0-9._-]{1,32}`, not starting with `-`.
pub fn parse_user(raw: &str) -> Result<String, Error> {
    let ok = (1..=32).contains(&raw.len())
        && !raw.starts_with('-')
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(invalid(
            ErrorCode::ValidationArgs,
            "--user",
            raw,
            "Expected a user name or uid: 1-32 characters of letters, digits, '.', '_' and '-'.",
        ))
    }
}

/// A project label (`--project`): at most 64 characters, no control characters.
pub fn parse_project(raw: &str) -> Result<String, Error> {
    if raw.chars().count() > 64 || raw.chars().any(char::is_control) {
        return Err(invalid(
            ErrorCode::ValidationArgs,
            "--project",
            raw,
            "Project labels are at most 64 characters, without control characters.",
        ));
    }
    Ok(raw.to_owned())
}

/// A shell session id (`connect --session`): 1-64 characters of `[A-Za-z0-9-]`.
pub fn parse_session_id(raw: &str) -> Result<String, Error> {
    let ok = (1..=64).contains(&raw.len())
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(invalid(
            ErrorCode::ValidationId,
            "--session",
            raw,
            "Session ids are 1-64 letters, digits or '-', as `vmsan connect` prints them.",
        ))
    }
}

/// An `http://` or `https://` URL with a host and no whitespace (`setup --release-url`).
pub fn parse_url(flag: &str, raw: &str) -> Result<String, Error> {
    let rest = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    let ok = raw.len() <= 2048
        && host.is_some_and(|h| !h.is_empty() && !h.starts_with(':'))
        && !raw.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(invalid(
            ErrorCode::ValidationArgs,
            flag,
            raw,
            "Expected an http:// or https:// URL with a host name.",
        ))
    }
}

/// An OCI platform (`--platform`): `os/arch` or `os/arch/variant`, lowercase
/// letters, digits and `_`.
pub fn parse_platform(raw: &str) -> Result<String, Error> {
    let parts: Vec<&str> = raw.split('/').collect();
    let ok = (2..=3).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 32
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(invalid(
            ErrorCode::ValidationArgs,
            "--platform",
            raw,
            "Expected os/arch or os/arch/variant, e.g. linux/amd64 or linux/arm64/v8.",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths() {
        let cwd = Path::new("/work");
        assert_eq!(
            parse_host_path("--kernel", "/a/b", cwd).unwrap(),
            Path::new("/a/b")
        );
        assert_eq!(
            parse_host_path("--kernel", "./k/./v", cwd).unwrap(),
            Path::new("/work/k/v")
        );
        assert_eq!(
            parse_host_path("--kernel", "../k", cwd).unwrap(),
            Path::new("/work/../k")
        );
        for bad in ["", "a\0b"] {
            let e = parse_host_path("--kernel", bad, cwd).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationPath);
        }
    }

    #[test]
    fn guest_paths() {
        assert_eq!(parse_guest_path("--workdir", "/app").unwrap(), "/app");
        for bad in ["", "app", "./x", "/a\0"] {
            assert_eq!(
                parse_guest_path("--workdir", bad).unwrap_err().code(),
                ErrorCode::ValidationPath
            );
        }
    }

    #[test]
    fn users_projects_sessions() {
        assert!(parse_user("ubuntu").is_ok());
        assert!(parse_user("1000").is_ok());
        for bad in ["", "-x", "a b", "a:b", &"u".repeat(33)] {
            assert_eq!(
                parse_user(bad).unwrap_err().code(),
                ErrorCode::ValidationArgs
            );
        }
        assert!(parse_project("").is_ok());
        assert!(parse_project("my app").is_ok());
        assert!(parse_project(&"p".repeat(65)).is_err());
        assert!(parse_project("a\nb").is_err());
        assert!(parse_session_id("0123456789abcdef0123456789abcdef").is_ok());
        assert_eq!(
            parse_session_id("../x").unwrap_err().code(),
            ErrorCode::ValidationId
        );
    }

    #[test]
    fn urls_and_platforms() {
        assert!(parse_url("--release-url", "https://example.com/r").is_ok());
        assert!(parse_url("--release-url", "http://mirror:8080").is_ok());
        for bad in [
            "",
            "ftp://x",
            "https://",
            "https:///x",
            "example.com",
            "https://a b",
        ] {
            assert!(parse_url("--release-url", bad).is_err(), "{bad}");
        }
        assert!(parse_platform("linux/amd64").is_ok());
        assert!(parse_platform("linux/arm64/v8").is_ok());
        for bad in [
            "",
            "linux",
            "linux/",
            "Linux/amd64",
            "a/b/c/d",
            "linux/amd 64",
        ] {
            assert!(parse_platform(bad).is_err(), "{bad}");
        }
    }
}
