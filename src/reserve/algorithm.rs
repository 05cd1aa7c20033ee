//! Algorithm 1 of the paper (section V-A): the urgency-driven bandwidth
//! reservation, as a pure step function.
//!
//! Percentages are of the source uplink's capacity C. Each period the loop is
//! given `outgoing` (everything leaving the source uplink, migration included)
//! and `migration` (the migration flows alone), in the same unit as C.
//!
//! - Measurement 0, before the migration starts:
//!   `avail = (1 - outgoing/C)·100`, `reserve = max(avail, urgency)`.
//! - Every later period, with `mig = migration/C·100`:
//!   - `avail > threshold`: the link has room, give it to the migration:
//!     `reserve += avail`;
//!   - else `reserve - mig < 1` (the migration uses all it has) and
//!     `urgency > reserve`: back up to the urgency: `reserve = urgency`;
//!   - else `reserve - mig > threshold` (too much is reserved): release the
//!     unused part: `reserve = mig`.
//! - After every step `reserve` is clamped to `[0, max_reserve]`, so the
//!   applications are never cut to nothing.
//!
//! `avail` and `mig` are reported as computed, not clamped: a measured
//! `outgoing` slightly above C (counter timing) gives a slightly negative
//! `avail`, which the rules above handle as "no room".

use serde::{Deserialize, Serialize};

/// The operator's parameters of one reservation, in percent of C.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub urgency: f64,
    pub threshold: f64,
    pub max_reserve: f64,
}

/// `max_reserve` when the operator does not give one.
pub const DEFAULT_MAX_RESERVE: f64 = 95.0;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    #[error("{name} must be a percentage from 0 to 100, not {value}")]
    OutOfRange { name: &'static str, value: f64 },
}

impl Params {
    /// Validates the three percentages.
    pub fn new(urgency: f64, threshold: f64, max_reserve: f64) -> Result<Params, ParamError> {
        for (name, value) in [
            ("urgency", urgency),
            ("threshold", threshold),
            ("max_reserve", max_reserve),
        ] {
            if !(0.0..=100.0).contains(&value) {
                return Err(ParamError::OutOfRange { name, value });
            }
        }
        Ok(Params {
            urgency,
            threshold,
            max_reserve,
        })
    }
}

/// What one step computed, in percent of C.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Step {
    pub avail_pct: f64,
    pub mig_pct: f64,
    pub reserve_pct: f64,
}

/// One measurement, in any unit shared by the three values (bit/s here).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// C: the capacity of the source uplink. Must be positive.
    pub capacity: f64,
    /// Everything leaving the source uplink, migration included.
    pub outgoing: f64,
    /// The migration flows alone.
    pub migration: f64,
}

impl Measurement {
    fn avail_pct(&self) -> f64 {
        (1.0 - self.outgoing / self.capacity) * 100.0
    }
    fn mig_pct(&self) -> f64 {
        self.migration / self.capacity * 100.0
    }
}

/// Measurement 0: the initial reservation.
pub fn initial(p: &Params, m: &Measurement) -> Step {
    let avail = m.avail_pct();
    let reserve = avail.max(p.urgency);
    Step {
        avail_pct: avail,
        mig_pct: m.mig_pct(),
        reserve_pct: clamp(p, reserve),
    }
}

/// Every later period: the new reservation from the previous one.
pub fn next(p: &Params, reserve: f64, m: &Measurement) -> Step {
    let avail = m.avail_pct();
    let mig = m.mig_pct();
    let reserve = if avail > p.threshold {
        reserve + avail
    } else if reserve - mig < 1.0 && p.urgency > reserve {
        p.urgency
    } else if reserve - mig > p.threshold {
        mig
    } else {
        reserve
    };
    Step {
        avail_pct: avail,
        mig_pct: mig,
        reserve_pct: clamp(p, reserve),
    }
}

fn clamp(p: &Params, reserve: f64) -> f64 {
    reserve.clamp(0.0, p.max_reserve)
}

/// The loop's state across periods: the live controller and `solive replay`
/// both drive this, so a replayed trace gives exactly what the controller did.
#[derive(Debug, Clone, PartialEq)]
pub struct Reserver {
    pub params: Params,
    reserve: Option<f64>,
}

impl Reserver {
    pub fn new(params: Params) -> Reserver {
        Reserver {
            params,
            reserve: None,
        }
    }

    /// Feeds one measurement (the first is measurement 0) and returns the step.
    pub fn step(&mut self, m: &Measurement) -> Step {
        let s = match self.reserve {
            None => initial(&self.params, m),
            Some(r) => next(&self.params, r, m),
        };
        self.reserve = Some(s.reserve_pct);
        s
    }

    /// Holds the reservation at `floor_pct` or above (within `max_reserve`),
    /// once measurement 0 was seen. Not part of the paper's loop: its release
    /// step follows a migration's rate down, and a migration slowed by
    /// anything but the link (CPU, a busy guest) would pull its own cap down
    /// with it, period after period; the caller's floor stops that ratchet.
    pub fn raise_to(&mut self, floor_pct: f64) {
        if let Some(r) = &mut self.reserve {
            *r = r.max(clamp(&self.params, floor_pct));
        }
    }

    /// The current reservation in percent, once measurement 0 was seen.
    pub fn reserve_pct(&self) -> Option<f64> {
        self.reserve
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: f64 = 100e6;

    fn p(urgency: f64, threshold: f64) -> Params {
        Params::new(urgency, threshold, DEFAULT_MAX_RESERVE).unwrap()
    }

    /// Percentages from bit/s carry rounding (0.2 is not exact); compare to
    /// within 1e-9 percentage points.
    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn assert_step(s: Step, avail: f64, mig: f64, reserve: f64) {
        assert!(
            close(s.avail_pct, avail) && close(s.mig_pct, mig) && close(s.reserve_pct, reserve),
            "{s:?} != ({avail}, {mig}, {reserve})"
        );
    }

    fn m(outgoing_mbps: f64, migration_mbps: f64) -> Measurement {
        Measurement {
            capacity: C,
            outgoing: outgoing_mbps * 1e6,
            migration: migration_mbps * 1e6,
        }
    }

    #[test]
    fn a_floor_holds_the_release_step_up_within_max_reserve() {
        let mut r = Reserver::new(p(50.0, 10.0));
        r.raise_to(80.0);
        assert_eq!(
            r.reserve_pct(),
            None,
            "nothing to raise before measurement 0"
        );
        r.step(&m(60.0, 0.0));
        // The migration sends 5: the release step drops the reservation to 5.
        r.step(&m(95.0, 5.0));
        assert!(close(r.reserve_pct().unwrap(), 5.0));
        r.raise_to(30.0);
        assert!(close(r.reserve_pct().unwrap(), 30.0));
        r.raise_to(200.0);
        assert!(close(r.reserve_pct().unwrap(), DEFAULT_MAX_RESERVE));
    }

    #[test]
    fn initial_takes_the_larger_of_avail_and_urgency() {
        // 70% used: avail 30 < urgency 75.
        let s = initial(&p(75.0, 10.0), &m(70.0, 0.0));
        assert_step(s, 30.0, 0.0, 75.0);
        // 10% used: avail 90 > urgency 55.
        assert!(close(
            initial(&p(55.0, 10.0), &m(10.0, 0.0)).reserve_pct,
            90.0
        ));
    }

    #[test]
    fn initial_is_clamped_to_max_reserve() {
        // Idle link: avail 100 is clamped to 95.
        assert_eq!(initial(&p(50.0, 10.0), &m(0.0, 0.0)).reserve_pct, 95.0);
        let low = Params::new(80.0, 10.0, 60.0).unwrap();
        assert_eq!(initial(&low, &m(90.0, 0.0)).reserve_pct, 60.0);
    }

    #[test]
    fn room_on_the_link_is_added_to_the_reservation() {
        // avail = 20 > threshold 10: 50 + 20.
        let s = next(&p(75.0, 10.0), 50.0, &m(80.0, 40.0));
        assert_step(s, 20.0, 40.0, 70.0);
        // And clamped.
        assert_eq!(next(&p(75.0, 10.0), 90.0, &m(80.0, 40.0)).reserve_pct, 95.0);
    }

    #[test]
    fn saturated_migration_goes_back_to_urgency() {
        // avail 5 <= 10; reserve 40 - mig 39.5 = 0.5 < 1; urgency 75 > 40.
        let s = next(&p(75.0, 10.0), 40.0, &m(95.0, 39.5));
        assert_eq!(s.reserve_pct, 75.0);
        // Not when the urgency is not above the reservation.
        assert_eq!(next(&p(30.0, 10.0), 40.0, &m(95.0, 39.5)).reserve_pct, 40.0);
    }

    #[test]
    fn unused_reservation_is_released_to_the_migration_rate() {
        // avail 5; reserve 75 - mig 20 = 55 > threshold 10: reserve = 20.
        let s = next(&p(75.0, 10.0), 75.0, &m(95.0, 20.0));
        assert!(close(s.reserve_pct, 20.0), "{s:?}");
    }

    #[test]
    fn otherwise_the_reservation_stays() {
        // avail 5; reserve 75 - mig 70 = 5: neither < 1 nor > 10.
        assert_eq!(next(&p(75.0, 10.0), 75.0, &m(95.0, 70.0)).reserve_pct, 75.0);
        // Exactly at the threshold is not above it.
        assert_eq!(next(&p(75.0, 10.0), 75.0, &m(90.0, 65.0)).reserve_pct, 75.0);
    }

    #[test]
    fn reservation_is_never_negative() {
        // A negative migration rate cannot come from counters, but the clamp
        // holds whatever the input.
        let s = next(&p(75.0, 10.0), 75.0, &m(95.0, -5.0));
        assert_eq!(s.reserve_pct, 0.0);
    }

    #[test]
    fn parameters_are_validated() {
        assert!(Params::new(101.0, 10.0, 95.0).is_err());
        assert!(Params::new(50.0, -1.0, 95.0).is_err());
        let e = Params::new(50.0, 10.0, f64::NAN).unwrap_err();
        assert!(e.to_string().contains("max_reserve"), "{e}");
        assert!(Params::new(0.0, 0.0, 100.0).is_ok());
    }

    #[test]
    fn reserver_uses_initial_then_next() {
        let mut r = Reserver::new(p(75.0, 10.0));
        assert_eq!(r.reserve_pct(), None);
        assert_eq!(r.step(&m(70.0, 0.0)).reserve_pct, 75.0); // initial
        assert!(close(r.step(&m(95.0, 20.0)).reserve_pct, 20.0)); // released
        assert_eq!(r.step(&m(99.5, 19.5)).reserve_pct, 75.0); // saturated -> urgency
        assert_eq!(r.reserve_pct(), Some(75.0));
    }
}
