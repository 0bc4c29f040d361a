//! Integers with bounds: `--vcpus`, `--memory`, `--count`.

use super::invalid;
use crate::error::{Error, ErrorCode};

/// Most vCPUs a VM may have (Firecracker's limit).
pub const VCPUS_MAX: u32 = 32;
/// Least memory, MiB.
pub const MEMORY_MIN_MIB: u32 = 128;
/// Most memory, MiB.
pub const MEMORY_MAX_MIB: u32 = 32_768;
/// Most VMs one `create --count` makes.
pub const COUNT_MAX: u32 = 100;

/// A base-10 integer in `min..=max`: ASCII digits only (no sign, no spaces, no `0x`).
///
/// The message names the flag, the value and the range, with `unit` after the range when
/// given: `Invalid --vcpus: "x". Must be an integer between 1 and 32.`
pub fn parse_int_in_range(
    flag: &str,
    raw: &str,
    min: u64,
    max: u64,
    unit: Option<&str>,
) -> Result<u64, Error> {
    let unit = unit.map(|u| format!(" {u}")).unwrap_or_default();
    let rule = format!("Must be an integer between {min} and {max}{unit}.");
    if raw.is_empty() || raw.len() > 20 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(ErrorCode::ValidationInteger, flag, raw, &rule));
    }
    match raw.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(invalid(ErrorCode::ValidationInteger, flag, raw, &rule)),
    }
}

fn to_u32(n: u64) -> u32 {
    // Callers bound `n` by a u32 maximum first.
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `--vcpus`: 1..=32.
pub fn parse_vcpus(raw: &str) -> Result<u32, Error> {
    parse_int_in_range("--vcpus", raw, 1, VCPUS_MAX.into(), None).map(to_u32)
}

/// `--memory`: MiB, 128..=32768. A bare number is MiB; `m`, `mb`, `mib` (MiB) and `g`, `gb`,
/// `gib` (GiB) suffixes are accepted, case-insensitive: `512`, `512m`, `2g`, `2GiB`.
pub fn parse_memory_mib(raw: &str) -> Result<u32, Error> {
    let lower = raw.to_ascii_lowercase();
    let digits_end = lower.bytes().take_while(u8::is_ascii_digit).count();
    let (num, suffix) = lower.split_at(digits_end);
    let factor: u64 = match suffix {
        "" | "m" | "mb" | "mib" => 1,
        "g" | "gb" | "gib" => 1024,
        _ => 0,
    };
    let rule = format!(
        "Must be an integer between {MEMORY_MIN_MIB} and {MEMORY_MAX_MIB} MiB \
         (a bare number is MiB; suffixes m/mib and g/gib are accepted)."
    );
    let err = || invalid(ErrorCode::ValidationInteger, "--memory", raw, &rule);
    if factor == 0 || num.is_empty() || num.len() > 12 {
        return Err(err());
    }
    let mib = num
        .parse::<u64>()
        .map_err(|_| err())?
        .checked_mul(factor)
        .ok_or_else(err)?;
    if (u64::from(MEMORY_MIN_MIB)..=u64::from(MEMORY_MAX_MIB)).contains(&mib) {
        Ok(to_u32(mib))
    } else {
        Err(err())
    }
}

/// `--count`: how many VMs to create, 1..=100.
pub fn parse_count(raw: &str) -> Result<u32, Error> {
    parse_int_in_range("--count", raw, 1, COUNT_MAX.into(), None).map(to_u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpus() {
        assert_eq!(parse_vcpus("1").unwrap(), 1);
        assert_eq!(parse_vcpus("32").unwrap(), 32);
        assert_eq!(parse_vcpus("08").unwrap(), 8);
        for bad in [
            "0",
            "33",
            "-1",
            "+2",
            "1.5",
            "",
            " 2",
            "two",
            "0x2",
            "99999999999999999999999",
        ] {
            let e = parse_vcpus(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationInteger, "{bad}");
            assert_eq!(e.details()["flag"], "--vcpus");
        }
        assert_eq!(
            parse_vcpus("x").unwrap_err().message(),
            "Invalid --vcpus: \"x\". Must be an integer between 1 and 32."
        );
    }

    #[test]
    fn memory() {
        assert_eq!(parse_memory_mib("128").unwrap(), 128);
        assert_eq!(parse_memory_mib("512m").unwrap(), 512);
        assert_eq!(parse_memory_mib("512MiB").unwrap(), 512);
        assert_eq!(parse_memory_mib("2g").unwrap(), 2048);
        assert_eq!(parse_memory_mib("2GB").unwrap(), 2048);
        assert_eq!(parse_memory_mib("32gib").unwrap(), 32_768);
        for bad in [
            "127",
            "33g",
            "0",
            "",
            "g",
            "1.5g",
            "2t",
            "-128",
            "128 m",
            "99999999999999g",
        ] {
            assert_eq!(
                parse_memory_mib(bad).unwrap_err().code(),
                ErrorCode::ValidationInteger,
                "{bad}"
            );
        }
        assert!(parse_memory_mib("1").unwrap_err().message().contains("MiB"));
    }

    #[test]
    fn count() {
        assert_eq!(parse_count("3").unwrap(), 3);
        assert_eq!(
            parse_count("0").unwrap_err().code(),
            ErrorCode::ValidationInteger
        );
        assert_eq!(
            parse_count("101").unwrap_err().code(),
            ErrorCode::ValidationInteger
        );
    }
}
