//! Durations: `--timeout`.

use std::time::Duration;

use super::invalid;
use crate::error::{Error, ErrorCode};

/// The longest duration accepted: 365 days.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

const RULE: &str = "Use amounts with units d, h, m, s (90s, 5m, 1h30m, \"2h 30m\", 1d), \
                    greater than zero and at most 365d.";

/// Parse a duration: a sequence of `<n><unit>` tokens with units `d`, `h`, `m`, `s`
/// (case-insensitive, each unit at most once, optional spaces between tokens), summed. Zero and
/// more than a year are rejected. A bare number is refused rather than guessed: the tool we
/// re-created read it as minutes, Docker and E2B read seconds, and `--timeout 1` meaning a
/// minute surprised users who expected a second.
pub fn parse_duration(flag: &str, raw: &str) -> Result<Duration, Error> {
    let err = || invalid(ErrorCode::ValidationDuration, flag, raw, RULE);
    let s = raw.trim().to_ascii_lowercase();
    if s.is_empty() || s.len() > 64 {
        return Err(err());
    }
    let total_secs: u64 = if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            ErrorCode::ValidationDuration,
            flag,
            raw,
            &format!("Give a unit: {s}s for seconds, {s}m for minutes ({RULE})"),
        ));
    } else {
        let mut total: u64 = 0;
        let mut seen = [false; 4];
        let mut rest = s.as_str();
        while !rest.is_empty() {
            let n_end = rest.bytes().take_while(u8::is_ascii_digit).count();
            if n_end == 0 {
                return Err(err());
            }
            let n: u64 = rest[..n_end].parse().map_err(|_| err())?;
            let after = rest[n_end..].trim_start();
            let unit = after.chars().next().ok_or_else(err)?;
            let (idx, mult) = match unit {
                'd' => (0, 86_400),
                'h' => (1, 3_600),
                'm' => (2, 60),
                's' => (3, 1),
                _ => return Err(err()),
            };
            if seen[idx] {
                return Err(err());
            }
            seen[idx] = true;
            total = n
                .checked_mul(mult)
                .and_then(|x| total.checked_add(x))
                .ok_or_else(err)?;
            rest = after[1..].trim_start();
        }
        total
    };
    let d = Duration::from_secs(total_secs);
    if d.is_zero() || d > MAX_DURATION {
        return Err(err());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> u64 {
        parse_duration("--timeout", s).unwrap().as_secs()
    }

    #[test]
    fn accepted() {
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("5m"), 300);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("2h 30m"), 9000);
        assert_eq!(secs("1H"), 3600);
        assert_eq!(secs("1d2h3m4s"), 93_784);
        assert_eq!(secs("4s 3m"), 184);
        assert_eq!(secs(" 10m "), 600);
        assert_eq!(secs("365d"), 365 * 86_400);
    }

    #[test]
    fn rejected() {
        for bad in [
            "",
            " ",
            "0",
            "0m",
            "abc",
            "5x",
            "m",
            "1h1h",
            "1.5h",
            "-5m",
            "5m-",
            "h5",
            "366d",
            "99999999999999999999",
            "5 m x",
            "1w",
            "30",
            "1",
        ] {
            let e = parse_duration("--timeout", bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationDuration, "{bad:?}");
            assert_eq!(e.details()["flag"], "--timeout");
        }
        let bare = parse_duration("--timeout", "30").unwrap_err();
        let text = format!("{} {}", bare.message(), bare.fix_text().unwrap_or_default());
        assert!(text.contains("30s") && text.contains("30m"), "{text}");
    }
}
