//! Turning cumulative byte counters into rates.
//!
//! Switches report cumulative counters (OpenFlow port, queue and meter
//! statistics). A rate is the difference of two samples over the time between
//! them. Two things make that less trivial than it looks:
//! - a counter can go *backwards*: the port was deleted and re-added, or
//!   ovs-vswitchd restarted. That is a reset, and the interval carries no rate;
//! - a 64-bit counter can wrap. At 100 Gbit/s that takes 46 years, so a
//!   backwards step is only taken as a wrap when the wrapped difference is
//!   plausible for the interval (below [`MAX_PLAUSIBLE_BPS`]).
//!
//! OpenFlow uses all-ones (`u64::MAX`) for "this counter is not available"; such
//! samples are ignored.

use std::time::Duration;

/// Rates above this (10 Tbit/s) are not physical for one port: a wrapped
/// difference that would imply more is a reset, not a wrap.
pub const MAX_PLAUSIBLE_BPS: f64 = 10e12;

/// One reading of a cumulative byte counter, `at` measured from any fixed origin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub bytes: u64,
    pub at: Duration,
}

/// What one new sample says about the interval since the previous one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delta {
    /// The counter advanced (possibly through a wrap): bits per second.
    Rate(f64),
    /// The counter went backwards: it was reset. No rate for this interval.
    Reset,
    /// No usable interval: no previous sample, time did not advance, or the
    /// counter is unavailable.
    Unknown,
}

/// The rate, in bit/s, between two samples of a byte counter.
pub fn delta(prev: Option<Sample>, now: Sample) -> Delta {
    let Some(prev) = prev else {
        return Delta::Unknown;
    };
    if prev.bytes == u64::MAX || now.bytes == u64::MAX || now.at <= prev.at {
        return Delta::Unknown;
    }
    let secs = (now.at - prev.at).as_secs_f64();
    if now.bytes >= prev.bytes {
        return Delta::Rate((now.bytes - prev.bytes) as f64 * 8.0 / secs);
    }
    // Backwards: a wrap only if the wrapped difference fits the interval.
    let wrapped = (u64::MAX - prev.bytes)
        .wrapping_add(now.bytes)
        .wrapping_add(1);
    let bps = wrapped as f64 * 8.0 / secs;
    if bps <= MAX_PLAUSIBLE_BPS {
        Delta::Rate(bps)
    } else {
        Delta::Reset
    }
}

/// Tracks one counter and keeps its latest rate.
///
/// The rate is not smoothed by default: the reservation loop wants what
/// happened during the last period. `alpha` < 1 gives an exponentially weighted
/// moving average for displays that prefer a steadier figure.
#[derive(Debug, Clone)]
pub struct RateEstimator {
    last: Option<Sample>,
    rate: Option<f64>,
    alpha: f64,
    resets: u64,
}

impl Default for RateEstimator {
    fn default() -> Self {
        Self::new(1.0)
    }
}

impl RateEstimator {
    /// `alpha` is the weight of the newest interval, clamped to (0, 1].
    pub fn new(alpha: f64) -> Self {
        let alpha = if alpha.is_finite() {
            alpha.clamp(f64::MIN_POSITIVE, 1.0)
        } else {
            1.0
        };
        RateEstimator {
            last: None,
            rate: None,
            alpha,
            resets: 0,
        }
    }

    /// Feeds a new sample and returns the updated rate in bit/s, if known.
    pub fn update(&mut self, now: Sample) -> Option<f64> {
        match delta(self.last, now) {
            Delta::Rate(bps) => {
                self.rate = Some(match self.rate {
                    Some(old) => self.alpha * bps + (1.0 - self.alpha) * old,
                    None => bps,
                });
            }
            Delta::Reset => {
                self.resets += 1;
                self.rate = None;
            }
            Delta::Unknown => {}
        }
        if now.bytes != u64::MAX && self.last.is_none_or(|l| now.at > l.at) {
            self.last = Some(now);
        }
        self.rate
    }

    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// How many counter resets were seen.
    pub fn resets(&self) -> u64 {
        self.resets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(bytes: u64, ms: u64) -> Sample {
        Sample {
            bytes,
            at: Duration::from_millis(ms),
        }
    }

    #[test]
    fn steady_counter_gives_bits_per_second() {
        // 1_250_000 bytes in 1 s = 10 Mbit/s.
        assert_eq!(delta(Some(s(0, 0)), s(1_250_000, 1000)), Delta::Rate(10e6));
        assert_eq!(delta(Some(s(100, 500)), s(100, 1000)), Delta::Rate(0.0));
    }

    #[test]
    fn first_sample_and_stalled_clock_are_unknown() {
        assert_eq!(delta(None, s(5, 1)), Delta::Unknown);
        assert_eq!(delta(Some(s(5, 1)), s(9, 1)), Delta::Unknown);
        assert_eq!(delta(Some(s(5, 2)), s(9, 1)), Delta::Unknown);
    }

    #[test]
    fn backwards_counter_is_a_reset() {
        assert_eq!(delta(Some(s(1_000_000, 0)), s(10, 1000)), Delta::Reset);
    }

    #[test]
    fn wrap_near_the_top_is_a_rate() {
        // 16 bytes before the top, then 84 bytes after: 100 bytes in 1 s.
        let d = delta(Some(s(u64::MAX - 15, 0)), s(84, 1000));
        assert_eq!(d, Delta::Rate(800.0));
    }

    #[test]
    fn unavailable_counter_is_ignored() {
        assert_eq!(delta(Some(s(u64::MAX, 0)), s(10, 1000)), Delta::Unknown);
        let mut e = RateEstimator::default();
        e.update(s(0, 0));
        assert_eq!(e.update(s(u64::MAX, 500)), None);
        // The unavailable sample did not replace the baseline.
        assert_eq!(e.update(s(125, 1000)), Some(1000.0));
    }

    #[test]
    fn estimator_recovers_after_reset() {
        let mut e = RateEstimator::default();
        assert_eq!(e.update(s(0, 0)), None);
        assert_eq!(e.update(s(1000, 1000)), Some(8000.0));
        assert_eq!(e.update(s(10, 2000)), None);
        assert_eq!(e.resets(), 1);
        assert_eq!(e.update(s(1010, 3000)), Some(8000.0));
    }

    #[test]
    fn ewma_smooths() {
        let mut e = RateEstimator::new(0.5);
        e.update(s(0, 0));
        e.update(s(1000, 1000)); // 8000
        assert_eq!(e.update(s(1000, 2000)), Some(4000.0)); // 0.5*0 + 0.5*8000
    }
}
