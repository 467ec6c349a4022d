//! Per-object exponential backoff with jitter. The failure count lives in the object's status
//! (`status.failures`), so it is shared by every replica and resets when a reconcile succeeds.

use std::time::Duration;

/// Exponential backoff: `initial * 2^(failures-1)`, capped at `max`, spread by `jitter`.
///
/// ```
/// use std::time::Duration;
/// use threeport_core::Backoff;
///
/// let backoff = Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(10), jitter: 0.0 };
/// assert_eq!(backoff.delay(1), Duration::from_secs(1));
/// assert_eq!(backoff.delay(3), Duration::from_secs(4));
/// assert_eq!(backoff.delay(30), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Relative spread, 0.0 to 1.0: the delay is scaled by a random factor in
    /// `[1 - jitter, 1 + jitter]` so replicas retrying together drift apart.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(300),
            jitter: 0.1,
        }
    }
}

impl Backoff {
    /// Delay before retrying after `failures` consecutive failures (at least 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(30);
        let base = self.initial.saturating_mul(1u32 << exponent).min(self.max);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return base;
        }
        let factor = 1.0 + jitter * (2.0 * fastrand::f64() - 1.0);
        base.mul_f64(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubles_and_caps() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            jitter: 0.0,
        };
        let delays: Vec<_> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let b = Backoff {
            initial: Duration::from_millis(1000),
            max: Duration::from_secs(60),
            jitter: 0.2,
        };
        let delays: Vec<_> = (0..200).map(|_| b.delay(1).as_millis()).collect();
        assert!(
            delays.iter().all(|d| (800..=1200).contains(d)),
            "{delays:?}"
        );
        assert!(delays.iter().any(|d| *d != delays[0]), "jitter must vary");
    }
}
