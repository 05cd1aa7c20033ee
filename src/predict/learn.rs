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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::Params;

/// The weight of the newest sample.
pub const ALPHA: f64 = 0.5;

/// Below this share of what the link gave it, a migration was bound by the
/// host, not the link.
pub const CPU_BOUND_SHARE: f64 = 0.8;

/// A VM whose own traffic is above this share of its host's link is not
/// learned from for the push rate: its network keeps the host busy too (a
/// TCG guest sending 20 Mbit/s costs the testbed's cores; NO's migrations
/// ran at 22 Mbit/s where the quiet guests' after it ran at 26-27), so its
/// rate says less about what the host pushes for the others.
pub const BUSY_SHARE: f64 = 0.05;

/// Whether a migration of a VM that sends and receives `own_bps` says what
/// its host pushes ([`BUSY_SHARE`]).
pub fn says_push(own_bps: f64, capacity_bps: f64) -> bool {
    capacity_bps <= 0.0 || own_bps <= BUSY_SHARE * capacity_bps
}

/// The corrections so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Learned {
    /// Per source host: what it pushes in all, bit/s.
    pub push_bps: BTreeMap<String, f64>,
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
        if o.rate_bps > 0.0 {
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

    /// What `host` pushes, or `default` before it has migrated anything.
    pub fn push(&self, host: &str, default: f64) -> f64 {
        self.push_bps.get(host).copied().unwrap_or(default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_busy_on_the_network_does_not_say_what_the_host_pushes() {
        assert!(says_push(1e6, 100e6));
        assert!(says_push(5e6, 100e6));
        assert!(!says_push(20e6, 100e6));
        // No capacity known: nothing to judge by.
        assert!(says_push(20e6, 0.0));
    }

    fn obs(rate: f64, link: f64) -> Observation<'static> {
        Observation {
            source: "h1",
            rate_bps: rate,
            link_bps: link,
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
}
