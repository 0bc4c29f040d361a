//! Bandwidth limits as Firecracker rate limiters.
//!
//! Firecracker's network interface takes `rx_rate_limiter` (traffic to the guest) and
//! `tx_rate_limiter` (traffic from the guest), each with a `bandwidth` token bucket of `size`
//! bytes refilled every `refill_time` milliseconds. The JSON of [`RateLimiter`] is exactly
//! Firecracker's `RateLimiter` object.

use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};

/// A limit in megabits per second for each direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    /// Guest download (host → guest), Mbit/s.
    pub rx_mbit: u32,
    /// Guest upload (guest → host), Mbit/s.
    pub tx_mbit: u32,
}

impl Bandwidth {
    /// The same limit both ways (`--bandwidth M`).
    pub fn symmetric(mbit: u32) -> Result<Self> {
        let b = Self {
            rx_mbit: mbit,
            tx_mbit: mbit,
        };
        b.validate()?;
        Ok(b)
    }

    /// 1..=100000 Mbit/s each way.
    pub fn validate(&self) -> Result<()> {
        for v in [self.rx_mbit, self.tx_mbit] {
            if !(1..=100_000).contains(&v) {
                return Err(NetError::invalid(
                    "bandwidth",
                    format!("{v} Mbit/s (want 1..=100000)"),
                ));
            }
        }
        Ok(())
    }

    /// Firecracker's `rx_rate_limiter`.
    pub fn rx_limiter(&self) -> RateLimiter {
        RateLimiter::mbit(self.rx_mbit)
    }

    /// Firecracker's `tx_rate_limiter`.
    pub fn tx_limiter(&self) -> RateLimiter {
        RateLimiter::mbit(self.tx_mbit)
    }
}

/// Firecracker's `TokenBucket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBucket {
    /// Bucket size in bytes.
    pub size: u64,
    /// Initial extra burst in bytes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill the bucket.
    pub refill_time: u64,
}

/// Firecracker's `RateLimiter` (bandwidth only; no ops limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimiter {
    /// Byte budget.
    pub bandwidth: TokenBucket,
}

/// Refill period used for every limiter: 100 ms keeps bursts small.
pub const REFILL_MS: u64 = 100;

impl RateLimiter {
    /// `mbit` megabits per second: `mbit · 10^6 / 8` bytes per second, refilled every
    /// [`REFILL_MS`] milliseconds.
    pub fn mbit(mbit: u32) -> Self {
        let bytes_per_sec = u64::from(mbit) * 1_000_000 / 8;
        Self {
            bandwidth: TokenBucket {
                size: bytes_per_sec * REFILL_MS / 1000,
                one_time_burst: None,
                refill_time: REFILL_MS,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_mbit_is_125000_bytes_per_100ms() {
        let b = Bandwidth::symmetric(10).unwrap();
        let rx = b.rx_limiter();
        assert_eq!(rx.bandwidth.size, 125_000);
        assert_eq!(rx.bandwidth.refill_time, 100);
        assert_eq!(
            serde_json::to_string(&rx).unwrap(),
            r#"{"bandwidth":{"size":125000,"refill_time":100}}"#
        );
        assert!(Bandwidth::symmetric(0).is_err());
    }
}
