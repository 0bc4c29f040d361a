//! How a guest kernel boots: `--kernel-args`, `--cpu-template`, `--cpu-template-file`,
//! `--boot-timeout`.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use vmsan_firecracker::{CustomCpuTemplate, KernelArgs};

use super::{invalid, parse_duration};
use crate::error::{Error, ErrorCode};
use crate::state::CpuTemplateSetting;

/// The shortest and longest `--boot-timeout`.
pub const BOOT_TIMEOUT_MIN: Duration = Duration::from_secs(5);
/// An hour: a kernel slower than that is stuck, not slow.
pub const BOOT_TIMEOUT_MAX: Duration = Duration::from_secs(3600);

/// `--kernel-args`: space-separated kernel parameters appended to vmsan's own. Returns them
/// normalised (single spaces); an empty string is valid (no extra arguments).
pub fn parse_kernel_args(flag: &str, raw: &str) -> Result<String, Error> {
    KernelArgs::parse(raw).map(|a| a.to_line()).map_err(|e| {
        Error::new(ErrorCode::ValidationArgs, format!("Invalid {flag}: {e}"))
            .why(
                "Extra kernel arguments go after vmsan's own on the guest's command line; \
                 vmsan's keys (vmsan_*), init, rdinit and `--` decide how the agent starts \
                 and cannot be set.",
            )
            .fix(format!(
                "Give space-separated parameters without quotes or control characters, at most \
                 {} bytes in all, e.g. {flag} \"loglevel=7 tsc=reliable\".",
                KernelArgs::MAX_LEN
            ))
            .detail("flag", flag)
    })
}

/// `--cpu-template`: one of Firecracker's static templates for this architecture.
pub fn parse_cpu_template(flag: &str, raw: &str) -> Result<CpuTemplateSetting, Error> {
    let names = vmsan_firecracker::cpu_template::static_names();
    if vmsan_firecracker::cpu_template::parse_static(raw).is_none() {
        return Err(invalid(
            ErrorCode::ValidationArgs,
            flag,
            raw,
            &format!(
                "Use one of Firecracker's static CPU templates for this architecture ({}), or \
                 --cpu-template-file for a custom one.",
                names.join(", ")
            ),
        ));
    }
    Ok(CpuTemplateSetting::Static {
        name: raw.to_owned(),
    })
}

/// `--cpu-template-file`: a custom CPU template (Firecracker's JSON format), read and checked
/// now so a bad file fails `create`, not the boot.
pub fn read_cpu_template_file(flag: &str, path: &Path) -> Result<CpuTemplateSetting, Error> {
    let bad = |why: String| {
        Error::new(
            ErrorCode::ValidationArgs,
            format!("Invalid {flag} {}: {why}", path.display()),
        )
        .fix(
            "Give a custom CPU template in Firecracker's format: an object with \
             kvm_capabilities, cpuid_modifiers and msr_modifiers (x86_64), numbers as 0x… or \
             0b… strings, bitmaps as 0b followed by 0, 1 and x.",
        )
        .detail("flag", flag)
    };
    let f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let meta = f.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let limit = vmsan_firecracker::cpu_template::MAX_TEMPLATE_BYTES;
    let mut bytes = Vec::new();
    // One byte more than the limit: enough to see that it is too big, never the whole file.
    f.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(e.to_string()))?;
    let template = CustomCpuTemplate::parse(&bytes).map_err(|e| bad(e.0))?;
    Ok(CpuTemplateSetting::Custom { template })
}

/// `--boot-timeout`: as `--timeout` (a bare number is minutes), from 5 s to 1 h.
pub fn parse_boot_timeout(flag: &str, raw: &str) -> Result<Duration, Error> {
    let d = parse_duration(flag, raw)?;
    if !(BOOT_TIMEOUT_MIN..=BOOT_TIMEOUT_MAX).contains(&d) {
        return Err(invalid(
            ErrorCode::ValidationDuration,
            flag,
            raw,
            "The boot timeout must be between 5s and 1h (default 60s).",
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_args_are_normalised_and_reserved_keys_refused_with_a_code() {
        assert_eq!(
            parse_kernel_args("--kernel-args", " noxsave  tsc=reliable ").unwrap(),
            "noxsave tsc=reliable"
        );
        assert_eq!(parse_kernel_args("--kernel-args", "").unwrap(), "");
        for bad in ["vmsan_config=/dev/vda", "a\nb", "rdinit=/x", "x -- y"] {
            let e = parse_kernel_args("--kernel-args", bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationArgs, "{bad:?}");
        }
    }

    #[test]
    fn cpu_templates_static_and_from_a_file() {
        assert_eq!(
            parse_cpu_template("--cpu-template", "T2S").unwrap(),
            CpuTemplateSetting::Static { name: "T2S".into() }
        );
        let e = parse_cpu_template("--cpu-template", "t2").unwrap_err();
        assert_eq!(e.code(), ErrorCode::ValidationArgs);
        assert!(e.to_string().contains("T2CL"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("no-bmi2.json");
        std::fs::write(
            &good,
            r#"{"cpuid_modifiers":[{"leaf":"0x7","subleaf":"0x0","flags":1,"modifiers":[{"register":"ebx","bitmap":"0bxxxxxxxxxxxxxxxxxxxxxxx0xxxxxxxx"}]}]}"#,
        )
        .unwrap();
        assert!(matches!(
            read_cpu_template_file("--cpu-template-file", &good).unwrap(),
            CpuTemplateSetting::Custom { .. }
        ));
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"reg_modifiers":[]}"#).unwrap();
        let e = read_cpu_template_file("--cpu-template-file", &bad).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ValidationArgs);
        assert!(e.to_string().contains("reg_modifiers"), "{e}");
        let huge = dir.path().join("huge.json");
        std::fs::write(&huge, vec![b' '; 200 * 1024]).unwrap();
        assert!(read_cpu_template_file("--cpu-template-file", &huge).is_err());
        assert!(read_cpu_template_file("--cpu-template-file", dir.path()).is_err());
    }

    #[test]
    fn boot_timeouts_have_a_range() {
        assert_eq!(
            parse_boot_timeout("--boot-timeout", "15m").unwrap(),
            Duration::from_secs(900)
        );
        for bad in ["1s", "2h", "0", "x"] {
            let e = parse_boot_timeout("--boot-timeout", bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationDuration, "{bad}");
        }
    }
}
