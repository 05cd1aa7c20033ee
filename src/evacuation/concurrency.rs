//! The feedback controller that picks how many migrations run at once
//! (`"concurrency": "auto"`), after Kang & Fortes. Pure: the runner feeds
//! one [`Sample`] per period and starts migrations up to [`Feedback::limit`].
//!
//! It works like TCP's congestion window, on migrations instead of packets:
//!
//! - **Start** with one migration per source.
//! - **Measure progress, not bytes written**: a level is judged on its
//!   migrations' net progress ([`net_bps`]: what each sends less what its
//!   guest dirties meanwhile, which a pre-copy must send again), never
//!   above the link's capacity, and only from migrations that have been
//!   sending for a warm-up ([`warmup_ms`]). QEMU's rate counts what it writes into its
//!   socket, and right after a start that fills the send buffer faster
//!   than a slow link drains it: on the 8-VM experiment's 10 Mbit/s link
//!   2-4 new migrations read 10.5-16.4 Mbit/s together, and the probes
//!   that added them were judged rising. A migration that only splits the
//!   link with a dirtying one adds bytes but no progress.
//! - **Probe**: once exactly as many migrations as the limit allows have
//!   been sending for [`SETTLE_PERIODS`] (not necessarily in a row), unless
//!   they already send at [`CAPPED_SHARE`] or more of their speed caps (their
//!   parts of the link's reservation) or of the link itself (one more would
//!   only split it, and a started migration cannot be taken back; without
//!   a reservation the applications' traffic counts as filling the link
//!   too, since one more migration would take its part from them), the
//!   aggregate migration rate over those periods is the baseline, and one
//!   more migration is allowed. After a cut more run than the limit until
//!   some end: the level is not measured, and not probed, until then (a
//!   probe from there would start nothing and be judged on noise; the
//!   8-VM experiment's first auto runs climbed to six at once that way).
//! - **Judge** the probe when the new level has been full and sending for
//!   [`SETTLE_PERIODS`]: if the progress rose by [`MIN_RISE`] or more, keep
//!   it (and probe again later); if not, the extra migration only splits the same link:
//!   cut back multiplicatively (halve, rounding up), and do not probe that
//!   level again for [`RETRY_PERIODS`].
//! - **Cut** at once (halve) when a running migration stalls (the
//!   convergence watch, [`super::converge`]): sharing the link slowed its
//!   passes below its dirty rate; or when the applications are squeezed
//!   below what the urgency leaves them ([`squeezed`]).
//!
//! Besides the limit, auto mode overlaps a migration's start-up with the
//! previous one's tail: libvirt needs about two seconds to prepare the
//! destination before any byte moves, and sequential migration leaves the
//! link idle that long before each VM. A migration whose remaining bytes
//! take less than that start-up time ([`occupies`]) gives up its slot early.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::controller::reservation::HistoryPoint;

/// Periods a level must be full and sending before it is judged.
pub const SETTLE_PERIODS: usize = 3;

/// How much the progress must rise for one more migration to have paid.
///
/// A rise that must also pay for the longer individual migrations (one
/// more at once: each VM's own migration shares the rate with one more)
/// was tried: `(1 - w) / (w * left + (1 - w) * level)` for the score
/// `w * total + (1 - w) * mean individual`. In `solive simulate
/// --generate 50:25:1000` it made the score worse (80.8 s against 75.9 s
/// with a flat 5%): it cut more often, and a cut halves the level.
pub const MIN_RISE: f64 = 0.05;

/// A migration's first seconds of sending are left out of the judged rates
/// ([`warmup_ms`]): QEMU's rate then counts what fills its socket's send
/// buffer, which Linux lets grow to 4 MiB (`tcp_wmem`'s maximum).
pub const SEND_BUFFER_BYTES: f64 = 4.0 * 1024.0 * 1024.0;

/// The warm-up's bounds, ms.
pub const WARMUP_MS: (u64, u64) = (1000, 5000);

/// Migrations sending at this share of their caps together are held by
/// the reservation, not by themselves: no probe.
pub const CAPPED_SHARE: f64 = 0.8;

/// Periods after a cut before the level that did not pay is tried again.
pub const RETRY_PERIODS: u32 = 30;

/// Periods a probe may wait to be judged (its new migration slow to start,
/// or others ending meanwhile) before it is judged on what there is.
pub const PROBE_PATIENCE: u32 = 20;

/// The start-up time assumed before one has been measured, ms.
pub const DEFAULT_LEAD_MS: u64 = 2000;

/// What the runner saw in one period.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    pub at_ms: u64,
    /// VMs not started yet.
    pub pending: usize,
    /// Migrations holding a slot ([`occupies`]).
    pub running: usize,
    /// Of those, the ones that have sent bytes.
    pub sending: usize,
    /// Their rates together, bit/s (QEMU's: bytes written).
    pub aggregate_bps: f64,
    /// Their net progress together, bit/s ([`net_bps`]), of those sending
    /// for their warm-up ([`warmup_ms`]) or more.
    pub progress_bps: f64,
    /// Their speed caps together, bit/s (0: unknown).
    pub caps_bps: f64,
    /// The capacity of the link that bounds them (the source's uplink, or
    /// the destination's part if smaller), bit/s (0: unknown). Speed caps
    /// are whole MiB/s, so on a slow link they say little.
    pub link_bps: f64,
    /// What the applications send over that link when nothing reserves
    /// their share, bit/s (0 under a reservation, or unknown). Without a
    /// reservation TCP shares the link per connection, so one more
    /// migration takes its part from them as much as from the others.
    pub unreserved_apps_bps: f64,
    /// A migration that stalled in this period.
    pub stalled: Option<String>,
    /// The applications' share squeezed: (what they offer, what they get),
    /// percent of the link ([`squeezed`]).
    pub squeezed: Option<(f64, f64)>,
}

/// Why the limit changed (or was kept after a probe).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// One migration per source to begin with.
    Start,
    /// Every slot busy and progressing at `rate_bps` (net, [`net_bps`]):
    /// one more is tried.
    Probe { rate_bps: f64 },
    /// The extra migration raised the progress: kept.
    Rising { before_bps: f64, after_bps: f64 },
    /// It did not: cut back.
    NotRising { before_bps: f64, after_bps: f64 },
    /// A probe that could not be judged in time (its migration slow to
    /// start, or too few left): the level is kept as it is.
    Unjudged,
    /// A running migration stopped converging.
    Stall { vm: String },
    /// The applications offer `apps_pct` of the link and get `left_pct`,
    /// less than the urgency leaves them.
    Squeezed { apps_pct: f64, left_pct: f64 },
}

/// One decision, for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Milliseconds since the evacuation was created.
    pub at_ms: u64,
    pub from: u32,
    pub to: u32,
    #[serde(flatten)]
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Steady,
    Probing { baseline_bps: f64, waited: u32 },
}

/// The controller's state.
#[derive(Debug, Clone)]
pub struct Feedback {
    limit: u32,
    max: u32,
    state: State,
    /// The aggregate of the last periods in which the level was full and
    /// sending (at most [`SETTLE_PERIODS`]; emptied when the level changes).
    /// Each: (net progress, QEMU's rates), bit/s.
    window: VecDeque<(f64, f64)>,
    /// The level that last did not pay, and the periods since.
    tried: Option<(u32, u32)>,
}

impl Feedback {
    /// Starts at `start` (one per source), never above `max`.
    pub fn new(start: u32, max: u32) -> Feedback {
        Feedback {
            limit: start.clamp(1, max.max(1)),
            max: max.max(1),
            state: State::Steady,
            window: VecDeque::new(),
            tried: None,
        }
    }

    /// How many migrations may hold a slot now.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The first decision, for the record.
    pub fn start(&self, at_ms: u64) -> Decision {
        Decision {
            at_ms,
            from: 0,
            to: self.limit,
            reason: Reason::Start,
        }
    }

    /// One period; Some when the limit changed or a probe was judged.
    pub fn observe(&mut self, s: &Sample) -> Option<Decision> {
        if let Some((_, since)) = &mut self.tried {
            *since += 1;
            if *since >= RETRY_PERIODS {
                self.tried = None;
            }
        }
        if let Some(vm) = &s.stalled {
            return self.cut(s.at_ms, Reason::Stall { vm: vm.clone() });
        }
        if let Some((apps_pct, left_pct)) = s.squeezed {
            return self.cut(s.at_ms, Reason::Squeezed { apps_pct, left_pct });
        }
        // Only periods in which the level was full and sending say what it
        // carries; they need not be consecutive (a migration ending and the
        // next starting leave a slot preparing for a couple of periods, and
        // with short migrations that is often).
        let full = s.running == self.limit as usize && s.sending >= self.limit as usize;
        if full {
            // Together they cannot carry more than the link.
            let progress = if s.link_bps > 0.0 {
                s.progress_bps.min(s.link_bps)
            } else {
                s.progress_bps
            };
            self.window.push_back((progress, s.aggregate_bps));
            while self.window.len() > SETTLE_PERIODS {
                self.window.pop_front();
            }
        }
        let settled =
            (self.window.len() == SETTLE_PERIODS).then(|| mean(self.window.iter().map(|w| w.0)));
        match self.state.clone() {
            State::Probing {
                baseline_bps,
                waited,
            } => {
                if let Some(after) = settled {
                    self.state = State::Steady;
                    let (before_bps, after_bps) = (baseline_bps, after);
                    if after >= baseline_bps * (1.0 + MIN_RISE) {
                        return Some(self.decide(
                            s.at_ms,
                            self.limit,
                            Reason::Rising {
                                before_bps,
                                after_bps,
                            },
                        ));
                    }
                    let level = self.limit;
                    let d = self.cut(
                        s.at_ms,
                        Reason::NotRising {
                            before_bps,
                            after_bps,
                        },
                    );
                    self.tried = Some((level, 0));
                    return d;
                }
                if waited + 1 >= PROBE_PATIENCE {
                    self.state = State::Steady;
                    return Some(self.decide(s.at_ms, self.limit, Reason::Unjudged));
                }
                self.state = State::Probing {
                    baseline_bps,
                    waited: waited + 1,
                };
                None
            }
            State::Steady => {
                let rate_bps = settled?;
                let next = self.limit + 1;
                let barred = self.tried.is_some_and(|(level, _)| next >= level);
                // Judged on this period too: every slot sending, and below
                // their caps and the link, over the window as in this
                // period (one period's reading dips: the 8-VM experiment's
                // runs probed from 87-92% of the link on such dips).
                let ceiling = [s.caps_bps, s.link_bps]
                    .into_iter()
                    .filter(|c| *c > 0.0)
                    .fold(f64::INFINITY, f64::min);
                let sent = mean(self.window.iter().map(|w| w.1)).max(s.aggregate_bps);
                // Without a reservation the applications fill the link too:
                // a probe would take from them (the 8-VM experiment's first
                // probes came while two guests' own 4 Mbit/s left the first
                // migration 57% of the link, and the extra migration ran
                // shared for its whole life).
                let capped = sent + s.unreserved_apps_bps >= ceiling * CAPPED_SHARE;
                if !full || s.pending == 0 || next > self.max || barred || capped {
                    return None;
                }
                self.state = State::Probing {
                    baseline_bps: rate_bps,
                    waited: 0,
                };
                self.window.clear();
                Some(self.decide(s.at_ms, next, Reason::Probe { rate_bps }))
            }
        }
    }

    /// Halves the limit (rounding up); None when it is 1 already.
    fn cut(&mut self, at_ms: u64, reason: Reason) -> Option<Decision> {
        self.state = State::Steady;
        self.window.clear();
        if self.limit <= 1 {
            return None;
        }
        let level = self.limit;
        self.tried = Some((level, 0));
        Some(self.decide(at_ms, level.div_ceil(2), reason))
    }

    fn decide(&mut self, at_ms: u64, to: u32, reason: Reason) -> Decision {
        let from = self.limit;
        self.limit = to;
        Decision {
            at_ms,
            from,
            to,
            reason,
        }
    }
}

/// A migration's net progress, bit/s: what it sends (`rate_bps`) less what
/// its guest dirties meanwhile (`dirty_bps`, which a pre-copy sends again),
/// never below 0. A post-copy's (or a disk copy's) dirtying costs nothing
/// on the wire: pass 0.
pub fn net_bps(rate_bps: f64, dirty_bps: f64) -> f64 {
    (rate_bps - dirty_bps.max(0.0)).max(0.0)
}

/// How long a new migration's rate is not trusted when its part of the
/// link is `share_bps` (0: unknown): the time that part takes to carry a
/// full send buffer, within [`WARMUP_MS`] (alone on the experiment's
/// 10 Mbit/s link 3.4 s, beside another the most; on a fast link the floor,
/// so short migrations are still judged).
pub fn warmup_ms(share_bps: f64) -> u64 {
    let (lo, hi) = WARMUP_MS;
    if share_bps <= 0.0 {
        return hi;
    }
    ((SEND_BUFFER_BYTES * 8.0 / share_bps * 1000.0) as u64).clamp(lo, hi)
}

/// Whether a migration that first sent at `sent_ms` has sent for `warmup`
/// ms ([`warmup_ms`]), long enough for its rate to say what the link carries.
pub fn warmed(sent_ms: Option<u64>, now_ms: u64, warmup: u64) -> bool {
    sent_ms.is_some_and(|at| now_ms.saturating_sub(at) >= warmup)
}

fn mean(v: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = v.len().max(1);
    v.sum::<f64>() / n as f64
}

/// Whether a running migration holds a slot: it does unless it released it
/// (`released_ms`, when [`in_tail`] first held) less than three start-up
/// times ago. A migration still running long after its predicted end (a
/// pre-copy that needs more passes than its rate promised) takes its slot
/// back, so a stalled tail never lets the evacuation run over its limit for
/// long.
pub fn occupies(released_ms: Option<u64>, now_ms: u64, lead_ms: u64) -> bool {
    released_ms.is_none_or(|at| now_ms.saturating_sub(at) > 3 * lead_ms)
}

/// Whether what a migration has left takes less than `lead_ms` at its rate
/// (`remaining` bytes, `rate` bytes/s): its tail, time to start the next.
pub fn in_tail(remaining: u64, rate: u64, lead_ms: u64) -> bool {
    rate > 0 && remaining.saturating_mul(1000) / rate < lead_ms
}

/// The applications' share of a link squeezed below what the urgency leaves
/// them: they offer more than they get, and the link's reservation is above
/// the urgency (Algorithm 1 raised it into room the applications have since
/// asked for back). From the latest point of a reservation on the link;
/// Some((offered, left)) in percent of the link. One percent of slack for
/// the counters' jitter.
pub fn squeezed(p: &HistoryPoint, urgency: f64) -> Option<(f64, f64)> {
    let reserve = p.link_pct.unwrap_or(p.reserve_pct);
    let apps = (100.0 - p.avail_pct - p.mig_pct).max(0.0);
    let left = 100.0 - reserve;
    (reserve > urgency + 1.0 && apps > left + 1.0).then_some((apps, left))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(at_ms: u64, n: usize, rate: f64) -> Sample {
        Sample {
            at_ms,
            pending: 5,
            running: n,
            sending: n,
            aggregate_bps: rate,
            progress_bps: rate,
            ..Sample::default()
        }
    }

    /// Feeds `periods` full samples at `rate`; returns the decisions.
    fn run(f: &mut Feedback, t: &mut u64, periods: usize, rate: f64) -> Vec<Decision> {
        let mut out = Vec::new();
        for _ in 0..periods {
            *t += 1000;
            let n = f.limit() as usize;
            out.extend(f.observe(&full(*t, n, rate)));
        }
        out
    }

    #[test]
    fn adds_while_the_aggregate_rises_and_halves_when_it_stops() {
        let mut f = Feedback::new(1, 16);
        let mut t = 0;
        let d = run(&mut f, &mut t, 3, 20e6);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].from, d[0].to), (1, 2));
        assert_eq!(d[0].reason, Reason::Probe { rate_bps: 20e6 });
        // Two fill the link better: kept, then a third is tried.
        let d = run(&mut f, &mut t, 6, 30e6);
        assert!(matches!(d[0].reason, Reason::Rising { .. }), "{d:?}");
        assert_eq!((d[1].from, d[1].to), (2, 3));
        // The third adds nothing: halved (3 -> 2), and 3 is not tried again
        // for a while.
        let d = run(&mut f, &mut t, 3, 30.5e6);
        assert_eq!((d[0].from, d[0].to), (3, 2));
        assert!(matches!(d[0].reason, Reason::NotRising { .. }));
        assert!(run(&mut f, &mut t, RETRY_PERIODS as usize - 5, 30e6).is_empty());
        let d = run(&mut f, &mut t, 10, 30e6);
        assert_eq!((d[0].from, d[0].to), (2, 3), "tried again later: {d:?}");
    }

    #[test]
    fn a_level_is_judged_only_when_full_and_sending() {
        let mut f = Feedback::new(1, 16);
        let mut t = 0;
        run(&mut f, &mut t, 3, 20e6);
        assert_eq!(f.limit(), 2);
        // The second migration is still preparing: one sends.
        for _ in 0..5 {
            t += 1000;
            let s = Sample {
                sending: 1,
                ..full(t, 2, 20e6)
            };
            assert_eq!(f.observe(&s), None);
        }
        let d = run(&mut f, &mut t, 3, 39e6);
        assert!(matches!(d[0].reason, Reason::Rising { .. }));
    }

    #[test]
    fn a_stall_or_squeezed_applications_cut_at_once() {
        let mut f = Feedback::new(4, 16);
        let d = f.observe(&Sample {
            stalled: Some("m".into()),
            ..full(1000, 4, 1e6)
        });
        let d = d.unwrap();
        assert_eq!(
            (d.from, d.to, d.reason),
            (4, 2, Reason::Stall { vm: "m".into() })
        );
        let d = f
            .observe(&Sample {
                squeezed: Some((40.0, 20.0)),
                ..full(2000, 2, 1e6)
            })
            .unwrap();
        assert_eq!(d.to, 1);
        // At one there is nothing to cut.
        let s = Sample {
            stalled: Some("m".into()),
            ..full(3000, 1, 1e6)
        };
        assert_eq!(f.observe(&s), None);
    }

    #[test]
    fn no_probe_while_the_migrations_fill_their_caps() {
        let mut f = Feedback::new(1, 16);
        for i in 0..10 {
            let s = Sample {
                caps_bps: 20e6,
                ..full(i * 1000, 1, 19e6)
            };
            assert_eq!(f.observe(&s), None);
        }
        // Held back by something else (CPU): probed.
        let s = Sample {
            caps_bps: 40e6,
            ..full(11_000, 1, 19e6)
        };
        assert_eq!(f.observe(&s).unwrap().to, 2);
    }

    #[test]
    fn no_probe_while_the_migrations_fill_the_link() {
        // 10 Mbit/s, one migration at 9.7 Mbit/s: its cap (2 MiB/s, the
        // smallest whole MiB/s above the link) does not say it is full.
        let mut f = Feedback::new(1, 16);
        let at = |t: u64, rate: f64| Sample {
            caps_bps: 16.8e6,
            link_bps: 10e6,
            ..full(t, 1, rate)
        };
        for i in 0..10 {
            assert_eq!(f.observe(&at(i * 1000, 9.7e6)), None);
        }
        // One period's reading dips: the window still says full.
        assert_eq!(f.observe(&at(10_000, 5e6)), None);
        // Half the link for a while: probed.
        let d: Vec<_> = (11..14)
            .filter_map(|i| f.observe(&at(i * 1000, 5e6)))
            .collect();
        assert_eq!(d[0].to, 2, "{d:?}");
    }

    #[test]
    fn no_probe_while_unreserved_applications_fill_the_rest_of_the_link() {
        // The 8-VM experiment's start: no reservation, one migration at
        // 5.7 Mbit/s of 10, the guests' own traffic 4 Mbit/s.
        let mut f = Feedback::new(1, 16);
        let at = |t: u64, apps: f64| Sample {
            caps_bps: 16.8e6,
            link_bps: 10e6,
            unreserved_apps_bps: apps,
            ..full(t, 1, 5.7e6)
        };
        for i in 0..10 {
            assert_eq!(f.observe(&at(i * 1000, 4e6)), None);
        }
        // The guests go quiet: the link has room, and one more is tried.
        let d: Vec<_> = (10..13)
            .filter_map(|i| f.observe(&at(i * 1000, 0.5e6)))
            .collect();
        assert_eq!(d[0].to, 2, "{d:?}");
    }

    #[test]
    fn after_a_cut_nothing_is_probed_until_the_extra_migrations_end() {
        let mut f = Feedback::new(4, 16);
        let d = f
            .observe(&Sample {
                stalled: Some("m".into()),
                ..full(1000, 4, 1e6)
            })
            .unwrap();
        assert_eq!((d.from, d.to), (4, 2));
        // Four still run (they cannot be taken back): neither measured
        // nor probed, however long.
        let mut t = 1000;
        for _ in 0..(RETRY_PERIODS as usize + 10) {
            t += 1000;
            assert_eq!(f.observe(&full(t, 4, 1e6)), None);
        }
        // Two left: the level is measured, then probed.
        let d = run(&mut f, &mut t, 3, 1e6);
        assert_eq!((d[0].from, d[0].to), (2, 3), "{d:?}");
    }

    #[test]
    fn never_above_the_maximum_or_without_a_vm_to_start() {
        let mut f = Feedback::new(1, 1);
        let mut t = 0;
        assert!(run(&mut f, &mut t, 10, 1e6).is_empty());
        let mut f = Feedback::new(1, 16);
        for i in 0..10 {
            let s = Sample {
                pending: 0,
                ..full(i * 1000, 1, 1e6)
            };
            assert_eq!(f.observe(&s), None);
        }
    }

    #[test]
    fn a_probe_that_cannot_be_judged_is_dropped_in_time() {
        let mut f = Feedback::new(1, 16);
        let mut t = 0;
        run(&mut f, &mut t, 3, 1e6);
        let mut got = None;
        for _ in 0..PROBE_PATIENCE {
            t += 1000;
            got = got.or(f.observe(&full(t, 1, 1e6)));
        }
        let d = got.unwrap();
        assert_eq!((d.from, d.to, d.reason), (2, 2, Reason::Unjudged));
    }

    #[test]
    fn progress_is_judged_within_the_link() {
        // One migration at 7 Mbit/s on a 10 Mbit/s link; with a second the
        // readings (socket buffers filling) say 14 together: the link
        // carried at most 10, and it is judged on that.
        let mut f = Feedback::new(1, 16);
        let at = |t: u64, n: usize, rate: f64| Sample {
            pending: 2,
            link_bps: 10e6,
            ..full(t, n, rate)
        };
        let mut t = 0;
        let mut d = Vec::new();
        for _ in 0..3 {
            t += 1000;
            d.extend(f.observe(&at(t, 1, 7e6)));
        }
        assert_eq!(d[0].to, 2);
        let mut d = Vec::new();
        for _ in 0..3 {
            t += 1000;
            d.extend(f.observe(&at(t, 2, 14e6)));
        }
        assert!(
            matches!(d[0].reason, Reason::Rising { after_bps, .. } if after_bps == 10e6),
            "{d:?}"
        );
    }

    #[test]
    fn progress_is_net_of_what_the_guest_dirties_after_a_warm_up() {
        assert_eq!(net_bps(8e6, 3e6), 5e6);
        assert_eq!(net_bps(2e6, 3e6), 0.0);
        assert_eq!(net_bps(2e6, 0.0), 2e6);
        assert!(!warmed(None, 10_000, 3000));
        assert!(!warmed(Some(8_000), 10_000, 3000));
        assert!(warmed(Some(7_000), 10_000, 3000));
        // 4 MiB at 10 Mbit/s: 3.4 s; at 1 Gbit/s the floor; unknown: the most.
        assert_eq!(warmup_ms(10e6), 3355);
        assert_eq!(warmup_ms(1e9), 1000);
        assert_eq!(warmup_ms(0.0), 5000);
        assert_eq!(warmup_ms(1e6), 5000);
    }

    #[test]
    fn a_tail_gives_its_slot_up_for_a_while() {
        // 1 MiB left at 4 MiB/s: 250 ms, under a 2 s start-up.
        assert!(in_tail(1 << 20, 4 << 20, 2000));
        assert!(!in_tail(64 << 20, 4 << 20, 2000));
        assert!(!in_tail(1, 0, 2000));
        assert!(occupies(None, 10_000, 2000));
        assert!(!occupies(Some(9_000), 10_000, 2000));
        // Still running 6 s after its predicted end: it takes the slot back.
        assert!(occupies(Some(3_000), 10_000, 2000));
    }

    #[test]
    fn applications_are_squeezed_only_above_the_urgency() {
        let p = |avail: f64, mig: f64, reserve: f64| HistoryPoint {
            t_ms: 0,
            avail_pct: avail,
            mig_pct: mig,
            reserve_pct: reserve,
            link_pct: None,
        };
        // Reserved 90 (urgency 50); the applications offer 40, get 10.
        assert_eq!(squeezed(&p(-20.0, 80.0, 90.0), 50.0), Some((40.0, 10.0)));
        // At the urgency the applications get what it leaves them.
        assert_eq!(squeezed(&p(-20.0, 70.0, 50.0), 50.0), None);
        // Reserved above it, but the applications ask for no more than is left.
        assert_eq!(squeezed(&p(15.0, 80.0, 90.0), 50.0), None);
    }
}
