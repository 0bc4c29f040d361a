//! Bandwidth limits: `--bandwidth`.

use super::invalid;
use crate::error::{Error, ErrorCode};

/// Highest limit, Mbit/s.
pub const BANDWIDTH_MAX_MBIT: u32 = 1000;

/// Parse `--bandwidth`: Mbit/s, 1..=1000, as `<n>`, `<n>m` or `<n>mbit` (case-insensitive).
pub fn parse_bandwidth(raw: &str) -> Result<u32, Error> {
    let rule = format!("Must be an integer between 1 and {BANDWIDTH_MAX_MBIT} mbit.");
    let err = || invalid(ErrorCode::ValidationInteger, "--bandwidth", raw, &rule);
    let lower = raw.to_ascii_lowercase();
    let digits_end = lower.bytes().take_while(u8::is_ascii_digit).count();
    let (num, suffix) = lower.split_at(digits_end);
    if num.is_empty() || num.len() > 10 || !matches!(suffix, "" | "m" | "mbit") {
        return Err(err());
    }
    match num.parse::<u32>() {
        Ok(n) if (1..=BANDWIDTH_MAX_MBIT).contains(&n) => Ok(n),
        _ => Err(err()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth() {
        assert_eq!(parse_bandwidth("10").unwrap(), 10);
        assert_eq!(parse_bandwidth("10m").unwrap(), 10);
        assert_eq!(parse_bandwidth("100Mbit").unwrap(), 100);
        assert_eq!(parse_bandwidth("1000").unwrap(), 1000);
        for bad in ["0", "1001", "", "10g", "10mbps", "1.5", "-1", "m"] {
            assert_eq!(
                parse_bandwidth(bad).unwrap_err().code(),
                ErrorCode::ValidationInteger,
                "{bad}"
            );
        }
        assert!(
            parse_bandwidth("0")
                .unwrap_err()
                .message()
                .ends_with("mbit.")
        );
    }
}
