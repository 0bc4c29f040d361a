//! Validation of user input (flags and arguments), shared by the CLI and any future API.
//!
//! Every function here takes the raw text the user typed, checks it strictly and returns a
//! typed value, or an [`Error`](crate::Error) with a stable `ERR_VALIDATION_*` code, a message
//! that quotes the flag and the offending value, and a `flag` detail for `--json` output.
//! Nothing here touches the filesystem or the network: it is pure and cheap, so callers run it
//! on every input before anything else happens.
//!
//! [`options`] holds the typed option structs (`CreateOptions`, `ExecOptions`, …) that the
//! CLI produces and the lifecycle code consumes.

mod bandwidth;
mod cidr;
mod domain;
mod duration;
mod env;
mod guest;
mod image;
mod int;
mod misc;
mod network;
pub mod options;
mod port;
mod runtime;
mod size;

pub use bandwidth::{BANDWIDTH_MAX_MBIT, parse_bandwidth};
pub use cidr::{parse_cidr, parse_ipv4};
pub use domain::parse_domain;
pub use duration::{MAX_DURATION, parse_duration};
pub use env::{EnvVar, parse_env};
pub use guest::{
    BOOT_TIMEOUT_MAX, BOOT_TIMEOUT_MIN, parse_boot_timeout, parse_cpu_template, parse_kernel_args,
    read_cpu_template_file,
};
pub use image::parse_image_ref;
pub use int::{
    COUNT_MAX, MEMORY_MAX_MIB, MEMORY_MIN_MIB, VCPUS_MAX, parse_count, parse_int_in_range,
    parse_memory_mib, parse_vcpus,
};
pub use misc::{
    parse_guest_path, parse_host_path, parse_platform, parse_project, parse_session_id, parse_url,
    parse_user,
};
pub use network::{NetworkPolicy, NetworkRules, PolicyInput, resolve_network_policy};
pub use port::{AGENT_PORT, Protocol, PublishedPort, parse_port_mapping, parse_publish_ports};
pub use runtime::Runtime;
pub use size::{DISK_DEFAULT_GIB, DISK_MAX_GIB, DiskSize, parse_disk_size};

use crate::error::{Error, ErrorCode};

/// Keep quoted user input in messages bounded, even for hostile input.
pub(crate) fn shown(raw: &str) -> String {
    let mut s: String = raw.chars().take(80).collect();
    if raw.chars().count() > 80 {
        s.push('…');
    }
    s
}

/// A validation error about one flag's value: `Invalid --flag: "value". <rule>`.
pub(crate) fn invalid(code: ErrorCode, flag: &str, raw: &str, rule: &str) -> Error {
    Error::new(code, format!("Invalid {flag}: {:?}. {rule}", shown(raw)))
        .detail("flag", flag)
        .detail("value", shown(raw))
}

/// Split comma-separated lists given once or many times (`--x a,b --x c`) into items.
///
/// Empty items (`a,,b`, a trailing comma, an empty value) are rejected with `code`: they are
/// almost always a typo, and silently dropping them hides it.
pub fn split_list(code: ErrorCode, flag: &str, values: &[String]) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for value in values {
        for item in value.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(invalid(code, flag, value, "Empty entry in the list."));
            }
            out.push(item.to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_list_accepts_repeats_and_commas() {
        let v = vec!["a,b".to_owned(), " c ".to_owned()];
        assert_eq!(
            split_list(ErrorCode::ValidationPort, "--x", &v).unwrap(),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn split_list_rejects_empty_items() {
        for bad in ["", "a,", ",a", "a,,b", " , "] {
            let e = split_list(ErrorCode::ValidationCidr, "--x", &[bad.to_owned()]).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationCidr, "{bad:?}");
            assert_eq!(e.details()["flag"], "--x");
        }
    }

    #[test]
    fn shown_truncates() {
        assert_eq!(shown(&"x".repeat(200)).chars().count(), 81);
    }
}
