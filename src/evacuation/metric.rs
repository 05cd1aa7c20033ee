//! How good an evacuation was, in one number as well as three (pure).
//!
//! Two times matter and they pull apart (Kang & Fortes): the **total
//! migration time** (first start to last end: how long the site is at
//! risk) falls as more migrations run at once, until the link is full; each
//! VM's **individual migration time** (its start to its end: how long that
//! VM is exposed, dirtying memory and losing a share of its link) rises with
//! every migration it shares the link with. Sequential migration minimises
//! the individual times and wastes the link between migrations; all at once
//! fills the link and stretches every VM's migration to nearly the total.
//!
//! The score weighs the two, in seconds, lower is better:
//!
//! ```text
//! score = w · total + (1 − w) · mean individual
//! ```
//!
//! `w` is the request's `score_weight` (default [`DEFAULT_WEIGHT`]: both
//! count the same). Both terms are times of the same evacuation, so the
//! score needs no normalising and reads as "seconds". Only migrations that
//! finished count as individual times; a VM that did not move is reported
//! by the record's states, not hidden in a mean.

use serde::{Deserialize, Serialize};

/// `score_weight` when the request gives none.
pub const DEFAULT_WEIGHT: f64 = 0.5;

/// The figures of a finished evacuation, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub total_s: f64,
    pub mean_individual_s: f64,
    pub max_individual_s: f64,
    /// `weight · total_s + (1 − weight) · mean_individual_s`.
    pub score_s: f64,
    pub weight: f64,
    /// How many migrations the individual times are of.
    pub migrations: usize,
}

/// The metrics of an evacuation whose total migration time is `total_ms`
/// and whose finished migrations took `individual_ms`; None when nothing
/// finished.
pub fn metrics(total_ms: Option<u64>, individual_ms: &[u64], weight: f64) -> Option<Metrics> {
    let total_s = total_ms? as f64 / 1000.0;
    if individual_ms.is_empty() {
        return None;
    }
    let secs: Vec<f64> = individual_ms.iter().map(|ms| *ms as f64 / 1000.0).collect();
    let mean = secs.iter().sum::<f64>() / secs.len() as f64;
    let max = secs.iter().cloned().fold(0.0, f64::max);
    Some(Metrics {
        total_s,
        mean_individual_s: mean,
        max_individual_s: max,
        score_s: score(weight, total_s, mean),
        weight,
        migrations: secs.len(),
    })
}

/// The combined score, seconds (lower is better).
pub fn score(weight: f64, total_s: f64, mean_individual_s: f64) -> f64 {
    weight * total_s + (1.0 - weight) * mean_individual_s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_and_parallel_trade_total_against_individual_times() {
        // Four 10 s migrations one after the other, 2 s idle before each.
        let seq = metrics(Some(46_000), &[10_000; 4], 0.5).unwrap();
        assert_eq!((seq.mean_individual_s, seq.max_individual_s), (10.0, 10.0));
        assert_eq!(seq.score_s, 28.0);
        // All four at once on the same link: 40 s, each takes 40 s.
        let par = metrics(Some(40_000), &[40_000; 4], 0.5).unwrap();
        assert_eq!(par.score_s, 40.0);
        // Weight 1 judges by the total alone.
        let par1 = metrics(Some(40_000), &[40_000; 4], 1.0).unwrap();
        let seq1 = metrics(Some(46_000), &[10_000; 4], 1.0).unwrap();
        assert!(par1.score_s < seq1.score_s);
        assert_eq!(par.migrations, 4);
    }

    #[test]
    fn nothing_finished_has_no_metrics() {
        assert_eq!(metrics(None, &[], 0.5), None);
        assert_eq!(metrics(Some(5), &[], 0.5), None);
    }
}
