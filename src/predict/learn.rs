//! What measured migrations teach the model. Pure.
//!
//! Three inputs are not known before a host has migrated anything, and are
//! wrong by an order of magnitude if guessed: the rate a host can push (on
//! the testbed CPU bounds a migration at ~30 Mbit/s on a 1 Gbit/s link), the
//! start-up time, and the fixed part of the pause. Each finished migration
//! corrects them, by an exponentially weighted mean ([`ALPHA`]): the latest
//! migration counts as much as all before it, so a host that slows down is
//! followed within two or three migrations.
//!
//! A rate only says what a host can push when the link did not bound it:
//! a migration that sent below [`CPU_BOUND_SHARE`] of the rate the link gave
//! it was held back by the host (the sample), one at the link's rate only
//! says the host can push at least that much.
//!
//! What a host pushes also depends on what its VMs send meanwhile: on the
//! testbed, with a TCG guest sending 20 Mbit/s still on the source, the
//! migrations ran at 15-24 Mbit/s where they ran at 28-35 once it had left
//! (12 evacuations of `paper-4vm-precopy-40m`, with and without a
//! reservation; a guest receiving as much changed nothing). So the push rate
//! is learned at two points: quiet (the VMs on the source send under
//! [`BUSY_SHARE`] of the link) and busy (what they sent and what the
//! migrations got then, whatever bound them), and the model draws a line
//! between ([`crate::predict::schedule::push_at`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::Params;
use super::schedule::{BusyPoint, Scenario};

/// The weight of the newest sample.
pub const ALPHA: f64 = 0.5;

/// Below this share of what the link gave it, a migration was bound by the
/// host, not the link.
pub const CPU_BOUND_SHARE: f64 = 0.8;

/// The VMs on a source sending more than this share of its link make it
/// busy: a migration then teaches the busy point, not the quiet rate.
pub const BUSY_SHARE: f64 = 0.05;

/// Whether a source whose VMs send `guests_tx_bps` is quiet ([`BUSY_SHARE`]
/// of its link `capacity_bps`; no capacity known: nothing to judge by).
pub fn quiet(guests_tx_bps: f64, capacity_bps: f64) -> bool {
    capacity_bps <= 0.0 || guests_tx_bps <= BUSY_SHARE * capacity_bps
}

/// The corrections so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Learned {
    /// Per source host: what it pushes in all while its VMs are quiet, bit/s.
    pub push_bps: BTreeMap<String, f64>,
    /// Per source host: what its migrations got while its VMs were busy.
    #[serde(default)]
    pub busy_bps: BTreeMap<String, BusyPoint>,
    pub startup_s: Option<f64>,
    pub downtime_overhead_ms: Option<f64>,
    /// Migrations learned from.
    pub samples: u64,
}

/// One finished migration, as measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation<'a> {
    pub source: &'a str,
    /// Its mean rate while it sent, bit/s (several at once: their sum).
    pub rate_bps: f64,
    /// What the link gave the migrations meanwhile (their cap), bit/s.
    pub link_bps: f64,
    /// What the VMs on the source sent meanwhile (the migrating ones
    /// included), as measured for the plan, bit/s, and the source's link.
    pub guests_tx_bps: f64,
    pub capacity_bps: f64,
    /// From the start of the migration to its first bytes, s.
    pub startup_s: Option<f64>,
    /// Its measured pause and the part its last dirty set explains, ms.
    pub downtime_ms: Option<f64>,
    pub last_transfer_ms: Option<f64>,
}

fn ewma(old: Option<f64>, new: f64) -> f64 {
    old.map_or(new, |o| o + ALPHA * (new - o))
}

impl Learned {
    pub fn observe(&mut self, o: &Observation) {
        if o.rate_bps > 0.0 && !quiet(o.guests_tx_bps, o.capacity_bps) {
            // What the migrations got, bound by the host or by the link
            // shared with the VMs' traffic alike: the model takes the lower
            // of this and the link's room.
            let old = self.busy_bps.get(o.source);
            let point = BusyPoint {
                tx_bps: ewma(old.map(|b| b.tx_bps), o.guests_tx_bps),
                rate_bps: ewma(old.map(|b| b.rate_bps), o.rate_bps),
            };
            self.busy_bps.insert(o.source.to_string(), point);
        } else if o.rate_bps > 0.0 {
            let old = self.push_bps.get(o.source).copied();
            let push = if o.link_bps <= 0.0 || o.rate_bps < CPU_BOUND_SHARE * o.link_bps {
                ewma(old, o.rate_bps)
            } else {
                // Link-bound: the host pushes at least this.
                old.map_or(o.rate_bps, |p| p.max(o.rate_bps))
            };
            self.push_bps.insert(o.source.to_string(), push);
        }
        if let Some(s) = o.startup_s.filter(|s| *s >= 0.0) {
            self.startup_s = Some(ewma(self.startup_s, s));
        }
        if let Some(d) = o.downtime_ms {
            let fixed = (d - o.last_transfer_ms.unwrap_or(0.0)).max(0.0);
            self.downtime_overhead_ms = Some(ewma(self.downtime_overhead_ms, fixed));
        }
        self.samples += 1;
    }

    /// `base` with what has been learned.
    pub fn params(&self, base: Params) -> Params {
        Params {
            startup_s: self.startup_s.unwrap_or(base.startup_s),
            downtime_overhead_ms: self
                .downtime_overhead_ms
                .unwrap_or(base.downtime_overhead_ms),
            ..base
        }
    }

    /// What `host` pushes while its VMs are quiet, or `default` before it
    /// has migrated anything then.
    pub fn push(&self, host: &str, default: f64) -> f64 {
        self.push_bps.get(host).copied().unwrap_or(default)
    }

    /// What `host`'s migrations got while its VMs were busy, once seen.
    pub fn busy(&self, host: &str) -> Option<BusyPoint> {
        self.busy_bps.get(host).copied()
    }

    /// `sc`, a scenario of evacuating `host`, with everything learned: its
    /// quiet push rate (or `sc`'s own before any), its busy point, the
    /// start-up and the fixed part of the pause. Every forecast takes what
    /// has been learned through here, so none leaves a part out.
    pub fn apply(&self, host: &str, sc: &mut Scenario) {
        sc.push_bps = self.push(host, sc.push_bps);
        sc.busy_push = self.busy(host);
        sc.params = self.params(sc.params);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_whose_vms_send_much_is_busy() {
        assert!(quiet(1e6, 100e6));
        assert!(quiet(5e6, 100e6));
        assert!(!quiet(20e6, 100e6));
        // No capacity known: nothing to judge by.
        assert!(quiet(20e6, 0.0));
    }

    fn obs(rate: f64, link: f64) -> Observation<'static> {
        Observation {
            source: "h1",
            rate_bps: rate,
            link_bps: link,
            guests_tx_bps: 0.0,
            capacity_bps: 1e9,
            startup_s: Some(2.0),
            downtime_ms: Some(400.0),
            last_transfer_ms: Some(100.0),
        }
    }

    #[test]
    fn a_cpu_bound_migration_teaches_the_push_rate() {
        let mut l = Learned::default();
        assert_eq!(l.push("h1", 1e9), 1e9);
        l.observe(&obs(30e6, 1e9));
        assert_eq!(l.push("h1", 1e9), 30e6);
        l.observe(&obs(50e6, 1e9));
        assert_eq!(l.push("h1", 1e9), 40e6);
        assert_eq!(l.params(Params::default()).startup_s, 2.0);
        assert_eq!(l.params(Params::default()).downtime_overhead_ms, 300.0);
        assert_eq!(l.samples, 2);
    }

    #[test]
    fn a_link_bound_migration_only_raises_it() {
        let mut l = Learned::default();
        l.observe(&obs(30e6, 1e9));
        l.observe(&obs(38e6, 40e6));
        assert_eq!(l.push("h1", 1e9), 38e6);
        l.observe(&obs(20e6, 20e6));
        assert_eq!(l.push("h1", 1e9), 38e6);
    }

    /// The testbed's figures: quiet at 32 Mbit/s, 20 Mbit/s of guests'
    /// traffic on the source and the migrations at 19 and 21, the line
    /// between the two points.
    #[test]
    fn a_busy_source_teaches_the_busy_point_and_the_line_follows() {
        let mut l = Learned::default();
        let busy = |rate: f64| Observation {
            guests_tx_bps: 20e6,
            capacity_bps: 40e6,
            ..obs(rate, 40e6)
        };
        l.observe(&busy(19e6));
        // The quiet rate is not taught by a busy source.
        assert_eq!(l.push("h1", 40e6), 40e6);
        l.observe(&busy(21e6));
        let b = l.busy("h1").unwrap();
        assert_eq!((b.tx_bps, b.rate_bps), (20e6, 20e6));
        l.observe(&Observation {
            capacity_bps: 40e6,
            ..obs(32e6, 40e6)
        });
        assert_eq!(l.push("h1", 40e6), 32e6);
        let at = |tx| crate::predict::schedule::push_at(32e6, l.busy("h1"), tx);
        assert_eq!(at(0.0), 32e6);
        assert_eq!(at(10e6), 26e6);
        assert_eq!(at(20e6), 20e6);
        assert_eq!(at(40e6), 20e6);
        // A busy point above the quiet rate says nothing of a slope.
        let faster = Some(BusyPoint {
            tx_bps: 20e6,
            rate_bps: 35e6,
        });
        assert_eq!(crate::predict::schedule::push_at(32e6, faster, 20e6), 32e6);
    }
}
