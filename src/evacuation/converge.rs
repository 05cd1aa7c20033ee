//! Noticing a pre-copy migration that does not converge, and what to do
//! about it. Pure: the runner feeds the hypervisor's progress every period
//! and acts on what [`Watch::observe`] returns.
//!
//! Pre-copy ends when what is left to send fits in the downtime limit at the
//! measured rate (QEMU's rule). When the guest dirties memory about as fast
//! as the link carries it, that never happens: each pass resends the working
//! set and the migration runs until someone stops it (on the testbed, 560 s
//! for a 2 MiB working set over a 40 Mbit/s link). A serious tool notices
//! and acts; what to do is the operator's call ([`OnStall`]): accept a longer
//! pause, switch to post-copy, or give up and leave the VM where it is.
//!
//! "Does not converge" is judged on what QEMU reports. Within a pass the
//! remainder falls as pages go out; at the next pass it jumps to what the
//! guest dirtied meanwhile, the *dirty set*, and QEMU finishes once a dirty
//! set fits in the downtime limit at the measured rate. So the watch keeps,
//! per pass, the largest remainder sampled in it (the dirty set, as closely
//! as one sample per period sees it). A converging migration's dirty sets
//! shrink geometrically (by the dirty-rate/transfer-rate ratio each pass);
//! one whose lowest dirty set has not fallen by [`MIN_GAIN`] within
//! `iterations` passes is resending the same working set: stalled.

use serde::{Deserialize, Serialize};

use crate::hypervisor::MigrationProgress;

/// What to do when pre-copy stalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStall {
    /// The default: `Postcopy` where it is possible and the source is not
    /// expected to fail, `Downtime` elsewhere ([`remedy`]).
    #[default]
    Auto,
    /// Raise QEMU's downtime limit to what the remainder needs at the
    /// measured rate, up to the request's `max_downtime_ms`: the VM pauses
    /// longer at the end, but it moves.
    Downtime,
    /// Start the migration with QEMU's auto-converge ([`THROTTLE`]): QEMU
    /// slows the guest's vCPUs, step by step, while it dirties memory faster
    /// than the migration sends it. A migration that stalls all the same
    /// then gets `Downtime`'s remedy.
    Throttle,
    /// Switch to post-copy: the VM runs on the destination at once and
    /// fetches the rest (the migration is started with post-copy allowed).
    Postcopy,
    /// Abort: the VM keeps running on the source, recorded as failed.
    Abort,
    /// Record the stall, change nothing.
    None,
}

/// What `on_stall` means for one migration: `Auto` is post-copy when the
/// request has no deadline and the migration can switch (`can_switch`: it
/// goes straight to the destination, moves memory only, over one
/// connection), the longer pause otherwise; anything else is itself.
///
/// Why (`experiments/m-remedy`, M stalling on `paper-4vm-precopy-40m`, 3
/// runs per remedy in two orders): post-copy kept M's pause at 4-440 ms
/// where the downtime remedy needed 703-882 ms in one order and 1.3-1.4 s
/// in the other, at no cost in M's or the evacuation's time; throttling
/// did no better than the pause. But for post-copy's last seconds the VM's
/// memory is split between the hosts, and a source that fails then loses
/// the VM: a deadline says the site is failing (a disaster's evacuation),
/// so then the VM keeps running on the source until it pauses. A disk
/// copy, a relay's one-way stream and multifd channels are left to the
/// pause too: solive has not run post-copy with them.
pub fn remedy(on_stall: OnStall, deadline: bool, can_switch: bool) -> OnStall {
    match on_stall {
        OnStall::Auto if !deadline && can_switch => OnStall::Postcopy,
        OnStall::Auto => OnStall::Downtime,
        other => other,
    }
}

/// Auto-converge's steps for `on_stall: "throttle"`: QEMU's own defaults
/// (20% of the vCPUs' time, 10 more each pass that still falls behind), as
/// KubeVirt, Nova and oVirt leave them. Gentler than larger steps for the
/// guest's services; a working set that outruns them still moves, by the
/// downtime fallback.
pub const THROTTLE: crate::hypervisor::AutoConverge = crate::hypervisor::AutoConverge {
    initial_pct: 20,
    increment_pct: 10,
};

/// A remainder must drop by this share to count as progress.
pub const MIN_GAIN: f64 = 0.10;

/// Passes without progress before a migration counts as stalled, by default.
pub const DEFAULT_STALL_ITERATIONS: u64 = 5;

/// QEMU's own downtime limit, and the floor of any limit solive sets.
pub const QEMU_DEFAULT_DOWNTIME_MS: u64 = 300;

/// The request's convergence settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub on_stall: OnStall,
    /// Whether the request has a deadline (`Auto` then never switches,
    /// [`remedy`]).
    pub deadline: bool,
    /// Passes without progress before a migration counts as stalled.
    pub iterations: u64,
    /// The highest downtime limit `OnStall::Downtime` may set, ms.
    pub max_downtime_ms: u64,
}

/// What the watch saw when it called the migration stalled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    /// QEMU's pass count at the time.
    pub iteration: u64,
    /// The largest dirty set of the passes without progress, bytes: what
    /// has to fit in the downtime.
    pub dirty_set: u64,
    /// The remainder now, bytes.
    pub remaining: u64,
    /// QEMU's transfer rate, bytes/s.
    pub rate_bps: u64,
}

impl Stall {
    /// The downtime the dirty set needs at the measured rate, ms, with a
    /// quarter more for the rate's jitter; None when the rate is unknown.
    pub fn needed_downtime_ms(&self) -> Option<u64> {
        (self.rate_bps > 0).then(|| {
            let s = self.dirty_set as f64 / self.rate_bps as f64 * 1.25;
            ((s * 1000.0).ceil() as u64).max(QEMU_DEFAULT_DOWNTIME_MS)
        })
    }
}

/// Watches one pre-copy migration.
#[derive(Debug, Clone)]
pub struct Watch {
    iterations: u64,
    /// The pass being sampled and its largest remainder so far.
    pass: Option<(u64, u64)>,
    /// The lowest dirty set so far and the pass it was seen in.
    best: Option<(u64, u64)>,
    /// The largest dirty set since `best` was set.
    worst: u64,
    /// The dirty set of the last pass that ended.
    last: Option<u64>,
}

impl Watch {
    /// `iterations`: passes without a new low before calling it stalled.
    pub fn new(iterations: u64) -> Watch {
        Watch {
            iterations: iterations.max(1),
            pass: None,
            best: None,
            worst: 0,
            last: None,
        }
    }

    /// The dirty set of the last pass that ended, bytes (None during the
    /// first two passes).
    pub fn dirty_set(&self) -> Option<u64> {
        self.last
    }

    /// Feeds one progress report; Some once `iterations` passes have gone
    /// by without the lowest dirty set falling by [`MIN_GAIN`]. After a
    /// Some the watch starts over, so the next stall is reported only after
    /// as many passes again (time for the remedy to work).
    pub fn observe(&mut self, p: &MigrationProgress) -> Option<Stall> {
        // Pass 1 sends every page once; only the resends say anything.
        if p.mem_iteration < 2 {
            return None;
        }
        match self.pass {
            Some((n, max)) if n == p.mem_iteration => {
                self.pass = Some((n, max.max(p.data_remaining)));
                return None;
            }
            Some((n, max)) => self.close_pass(n, max),
            None => {}
        }
        self.pass = Some((p.mem_iteration, p.data_remaining));
        let (_, since) = self.best?;
        if p.mem_iteration.saturating_sub(since) < self.iterations {
            return None;
        }
        let stall = Stall {
            iteration: p.mem_iteration,
            dirty_set: self.worst,
            remaining: p.data_remaining,
            rate_bps: p.mem_bps,
        };
        self.best = None;
        self.worst = 0;
        Some(stall)
    }

    /// A pass is over: its largest sample is its dirty set.
    fn close_pass(&mut self, pass: u64, dirty_set: u64) {
        self.last = Some(dirty_set);
        match self.best {
            Some((b, since)) if dirty_set as f64 >= b as f64 * (1.0 - MIN_GAIN) => {
                self.worst = self.worst.max(dirty_set);
                if dirty_set < b {
                    self.best = Some((dirty_set, since));
                }
            }
            _ => {
                self.best = Some((dirty_set, pass));
                self.worst = dirty_set;
            }
        }
    }
}

/// The rate, bit/s, at which a dirty set of `dirty_set` bytes fits in a
/// downtime limit of `limit_ms`, with a quarter more for the rate's jitter
/// (as [`Stall::needed_downtime_ms`]): what a pre-copy's cap must not fall
/// below if it is to finish ([`crate::controller::link`]'s floor).
pub fn needed_rate_bps(dirty_set: u64, limit_ms: u64) -> f64 {
    dirty_set as f64 * 8.0 * 1.25 / (limit_ms.max(1) as f64 / 1000.0)
}

/// The downtime limit to set for a stall, or None when the limit already
/// set (`current_ms`) is as high as the operator allows.
pub fn raised_downtime_ms(stall: &Stall, current_ms: u64, max_ms: u64) -> Option<u64> {
    if current_ms >= max_ms {
        return None;
    }
    // Without a rate, go straight to the operator's maximum. A limit that
    // already covers the estimate and still stalls means the estimate was
    // low (the remainder is sampled mid-pass): double it instead.
    let want = stall
        .needed_downtime_ms()
        .unwrap_or(max_ms)
        .max(current_ms.saturating_mul(2));
    Some(want.min(max_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1_048_576.0;

    #[test]
    fn auto_switches_only_without_a_deadline_where_post_copy_can_run() {
        use OnStall::*;
        assert_eq!(remedy(Auto, false, true), Postcopy);
        assert_eq!(remedy(Auto, true, true), Downtime);
        assert_eq!(remedy(Auto, false, false), Downtime);
        // What the operator asked for is theirs.
        for asked in [Downtime, Throttle, Postcopy, Abort, None] {
            assert_eq!(remedy(asked, true, false), asked);
        }
        assert_eq!(OnStall::default(), Auto);
    }

    #[test]
    fn the_needed_rate_fits_the_last_dirty_set_in_the_limit() {
        let mut w = Watch::new(5);
        assert_eq!(w.dirty_set(), None);
        for (i, mib) in [(2, 3.0), (2, 2.0), (3, 1.5)] {
            w.observe(&p(i, mib));
        }
        assert_eq!(w.dirty_set(), Some((3.0 * MIB) as u64));
        // 3 MiB within 300 ms, with a quarter more.
        let r = needed_rate_bps(3 << 20, 300);
        assert!((r - 3.0 * MIB * 8.0 * 1.25 / 0.3).abs() < 1.0, "{r}");
    }

    fn p(iteration: u64, remaining_mib: f64) -> MigrationProgress {
        MigrationProgress {
            data_remaining: (remaining_mib * MIB) as u64,
            mem_iteration: iteration,
            mem_bps: 3 * 1_048_576,
            ..Default::default()
        }
    }

    /// Samples of a pass: the remainder falling from `dirty_set` as it goes.
    fn pass(w: &mut Watch, iteration: u64, dirty_set: f64) -> Option<Stall> {
        [1.0, 0.6, 0.2]
            .iter()
            .find_map(|f| w.observe(&p(iteration, dirty_set * f)))
    }

    #[test]
    fn the_first_pass_says_nothing() {
        let mut w = Watch::new(2);
        for _ in 0..100 {
            assert_eq!(w.observe(&p(1, 100.0)), None);
        }
    }

    #[test]
    fn a_converging_migration_is_never_stalled() {
        // The dirty set halves every pass.
        let mut w = Watch::new(3);
        let mut d = 64.0;
        for it in 2..30 {
            assert_eq!(pass(&mut w, it, d), None, "pass {it}");
            d /= 2.0;
        }
    }

    #[test]
    fn a_plateau_is_a_stall_after_the_given_passes_and_then_again() {
        let mut w = Watch::new(5);
        // The dirty sets wander around 2 MiB, never 10% under the first.
        let wander = [2.0, 1.9, 2.3, 1.95, 2.1];
        let mut stalls = vec![];
        for it in 2..=14 {
            if let Some(s) = pass(&mut w, it, wander[(it as usize - 2) % 5]) {
                stalls.push((it, s));
            }
        }
        assert_eq!(stalls.len(), 2, "{stalls:?}");
        // Pass 2's dirty set is known when pass 3 starts; 5 passes later.
        assert_eq!(stalls[0].0, 7);
        assert_eq!(
            stalls[1].0, 12,
            "5 passes after pass 7, where it started over"
        );
        let s = stalls[0].1;
        // The largest of the passes without progress, as sampled.
        assert_eq!(s.dirty_set, (2.3 * MIB) as u64);
        // 2.3 MiB at 3 MiB/s, plus a quarter: 959 ms.
        assert_eq!(s.needed_downtime_ms(), Some(959));
    }

    #[test]
    fn a_new_low_restarts_the_count() {
        let mut w = Watch::new(3);
        assert_eq!(pass(&mut w, 2, 10.0), None);
        assert_eq!(pass(&mut w, 3, 9.5), None); // 5%: not progress
        assert_eq!(pass(&mut w, 4, 8.0), None); // 20%: a new low
        assert_eq!(pass(&mut w, 5, 8.0), None);
        assert_eq!(pass(&mut w, 6, 8.0), None);
        let s = pass(&mut w, 7, 8.0).expect("3 passes after pass 4");
        assert_eq!(s.dirty_set, 8 * 1_048_576);
    }

    #[test]
    fn passes_between_samples_still_count() {
        // Passes shorter than the sampling period: one sample every 4.
        let mut w = Watch::new(5);
        let seen: Vec<_> = (2..40)
            .step_by(4)
            .filter_map(|it| w.observe(&p(it, 2.0)))
            .collect();
        assert_eq!(seen[0].iteration, 10, "{seen:?}");
    }

    #[test]
    fn downtime_goes_up_to_the_maximum_and_no_further() {
        let s = Stall {
            iteration: 7,
            dirty_set: 8 * 1_048_576,
            remaining: 9 * 1_048_576,
            rate_bps: 4 * 1_048_576,
        };
        // 2 s needed, 2.5 s with the margin.
        assert_eq!(raised_downtime_ms(&s, 300, 10_000), Some(2500));
        assert_eq!(raised_downtime_ms(&s, 300, 2000), Some(2000));
        assert_eq!(raised_downtime_ms(&s, 2000, 2000), None);
        // Already above the estimate and still stalled: doubled.
        assert_eq!(raised_downtime_ms(&s, 3000, 10_000), Some(6000));
        assert_eq!(raised_downtime_ms(&s, 3000, 5000), Some(5000));
        // No rate: the maximum.
        let blind = Stall { rate_bps: 0, ..s };
        assert_eq!(raised_downtime_ms(&blind, 300, 4000), Some(4000));
        // A tiny dirty set still gets QEMU's default floor.
        let tiny = Stall {
            dirty_set: 1000,
            ..s
        };
        assert_eq!(tiny.needed_downtime_ms(), Some(300));
    }
}
