//! How far a guest's dirty sets grow: its writable working set, from two
//! dirty-rate measurements of different lengths. Pure.
//!
//! QEMU's `calc-dirty-rate` counts the distinct pages that changed in its
//! window. A guest that rewrites a small area over and over dirties the same
//! pages in one second and in three; a guest that writes all over its memory
//! dirties three times as many in three. The model needs the difference: a
//! pre-copy pass of 30 s leaves behind the pages dirtied in 30 s, which is
//! `rate × 30 s` for the second guest but only its working set for the first
//! (on the testbed M rewrites 2 MiB; taken as 2 MiB/s for ever, the model
//! predicted passes of 60 MiB and migrations 1.2 to 4 times too long).
//!
//! The fit: distinct pages dirtied over `t` taken as `W · (1 − e^(−t/τ))`
//! (writes spread at random over a working set `W`, which saturates; a
//! guest rewriting its set in order saturates sooner, and the fit then reads
//! it as saturated). Two windows `t1` and `t2 = k · t1` give the ratio
//! `q = D2 / D1 = (1 − x^k) / (1 − x)` with `x = e^(−t1/τ)`; solving it for
//! `x` gives `W = D1 / (1 − x)`. A ratio close to `k` (no sign of
//! saturation) says nothing of `W` beyond "larger than these windows see":
//! no ceiling then, the memory is the bound.

/// How much longer the second window is than the first.
pub const SECOND_WINDOW: u32 = 3;

/// A ratio within this share of `k` reads as no saturation at all: the
/// measurement's noise (sampled pages, whole MiB/s) is about that size.
const LINEAR_SHARE: f64 = 0.9;

/// The working set, in the unit of `d1` and `d2` (bytes or pages), from the
/// distinct pages dirtied over a window `d1` and over one `k` times as long,
/// `d2`; `None` when the guest dirtied nothing or showed no saturation.
///
/// The longer window is read as at least the shorter one: the pages dirtied
/// over three seconds include those of the first one, and a shorter reading
/// only means QEMU's whole-MiB/s rounding took it below (a 2 MiB set over 3 s
/// reads 0 MiB/s).
pub fn working_set(d1: f64, d2: f64, k: f64) -> Option<f64> {
    // NaN compares false: it falls out here too.
    let measured = d1 > 0.0 && k > 1.0;
    if !measured {
        return None;
    }
    let d2 = d2.max(d1);
    let q = d2 / d1;
    if q >= k * LINEAR_SHARE {
        return None;
    }
    if q <= 1.0 + 1e-9 {
        return Some(d2);
    }
    // (1 − x^k) / (1 − x) rises from 1 at x = 0 to k as x → 1: bisect.
    let ratio = |x: f64| (1.0 - x.powf(k)) / (1.0 - x);
    let (mut lo, mut hi) = (0.0_f64, 1.0 - 1e-12);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if ratio(mid) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let x = (lo + hi) / 2.0;
    Some((d1 / (1.0 - x)).max(d2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn a_set_rewritten_within_the_first_window_is_its_own_ceiling() {
        // M on the testbed: 2 MiB in one second, 2 MiB in three.
        assert_eq!(working_set(2.0, 2.0, 3.0), Some(2.0));
    }

    #[test]
    fn a_longer_window_rounded_below_the_shorter_one_counts_as_the_shorter() {
        // 2 MiB over 3 s is 0.67 MiB/s: QEMU reads 0.
        assert_eq!(working_set(2.0, 0.0, 3.0), Some(2.0));
    }

    #[test]
    fn a_guest_that_dirties_in_proportion_to_time_has_no_ceiling() {
        assert_eq!(working_set(4.0, 12.0, 3.0), None);
        // Within the noise of proportional.
        assert_eq!(working_set(4.0, 11.0, 3.0), None);
    }

    #[test]
    fn a_guest_that_dirties_nothing_has_no_ceiling() {
        assert_eq!(working_set(0.0, 0.0, 3.0), None);
        assert_eq!(working_set(0.0, 5.0, 3.0), None);
    }

    #[test]
    fn a_half_saturated_set_is_fitted() {
        // W = 40, τ = 2 s: D(1) = 40 (1 − e^-0.5), D(3) = 40 (1 − e^-1.5).
        let w = 40.0;
        let d = |t: f64| w * (1.0 - (-t / 2.0_f64).exp());
        let fitted = working_set(d(1.0), d(3.0), 3.0).unwrap();
        assert!(close(fitted, w), "{fitted}");
        // By hand for k = 3: q = 1 + x + x², q = 2 gives x = 0.618.., W = D1 / 0.382...
        let fitted = working_set(16.0, 32.0, 3.0).unwrap();
        let x = (5.0_f64.sqrt() - 1.0) / 2.0;
        assert!(close(fitted, 16.0 / (1.0 - x)), "{fitted}");
    }

    #[test]
    fn the_ceiling_is_never_below_what_was_seen() {
        for (d1, d2) in [(1.0, 1.5), (3.0, 4.0), (5.0, 13.0)] {
            let w = working_set(d1, d2, 3.0).unwrap();
            assert!(w >= d2, "{d1} {d2}: {w}");
        }
    }
}
