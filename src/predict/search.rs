//! The order the model says is best, and the deadline plan. Pure.
//!
//! Without a deadline the best order is the one that ends soonest (every VM
//! moved first: an order that leaves a VM unmoved loses to any that moves
//! it). With a deadline T it is the one that moves the most priority
//! weight by T, then the soonest end.
//!
//! Up to [`EXHAUSTIVE_MAX`] VMs every order is simulated (8! = 40,320
//! simulations of a handful of events each: well under a second). Beyond,
//! a local search: from the paper's order and from the deadline's greedy
//! order (priority per predicted second, highest first), move one VM to
//! another place whenever that improves the plan, until no move does or
//! [`LOCAL_BUDGET`] simulations are spent. It finds a local optimum, not
//! necessarily the best; the result says which search ran.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::schedule::{alone, simulate_from, Scenario, Schedule};

/// Every order is tried up to this many VMs.
pub const EXHAUSTIVE_MAX: usize = 8;

/// Simulations the local search may run.
pub const LOCAL_BUDGET: u64 = 20_000;

/// What a plan is judged by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective {
    pub deadline_s: Option<f64>,
}

/// A plan's figures, best first when compared.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score {
    saved: u64,
    unfinished: usize,
    total_s: f64,
}

impl Score {
    fn of(sc: &Scenario, s: &Schedule, obj: Objective) -> Score {
        Score {
            saved: obj.deadline_s.map_or(0, |d| s.saved(&sc.vms, d)),
            unfinished: s.unfinished.len(),
            total_s: s.total_migration_s.unwrap_or(f64::INFINITY),
        }
    }

    /// Less is better.
    fn cmp(&self, o: &Score) -> Ordering {
        o.saved
            .cmp(&self.saved)
            .then(self.unfinished.cmp(&o.unfinished))
            .then(if (self.total_s - o.total_s).abs() < TIE_S {
                Ordering::Equal
            } else {
                self.total_s.total_cmp(&o.total_s)
            })
    }
}

/// Which search found the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Exhaustive,
    Local,
}

/// The best order found and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub order: Vec<usize>,
    pub schedule: Schedule,
    pub method: Method,
    pub simulations: u64,
}

/// The best order for `sc` by `obj`; `start` is the paper's order (the
/// local search's first start, and the tie-breaker: among equal plans the
/// one found first wins, and the paper's order is tried first).
pub fn best_order(sc: &Scenario, start: &[usize], obj: Objective) -> Found {
    best_order_from(sc, start, &[], obj)
}

/// [`best_order`] of the VMs in `start` only, with those in `moved` on
/// the destination already (a running evacuation re-planned between
/// migrations: `obj`'s deadline then counts from now).
pub fn best_order_from(sc: &Scenario, start: &[usize], moved: &[usize], obj: Objective) -> Found {
    // The sequential walk keys its memo on a bit per VM.
    let fits_mask = sc.vms.len() <= 64;
    match start.len() {
        n if n <= EXHAUSTIVE_MAX && sc.concurrency <= 1 && fits_mask => {
            sequential(sc, start, moved, obj)
        }
        n if n <= EXHAUSTIVE_MAX_CONCURRENT => exhaustive(sc, start, moved, obj),
        _ => local(sc, start, moved, obj),
    }
}

/// `order` simulated with `moved` on the destination already.
fn simulate(sc: &Scenario, order: &[usize], moved: &[usize]) -> Schedule {
    simulate_from(sc, order, Vec::new(), moved)
}

/// With several at once every order is one full simulation; beyond this
/// many VMs (5,040 orders) the local search runs instead.
pub const EXHAUSTIVE_MAX_CONCURRENT: usize = 7;

/// Every order, one migration at a time. Then a VM's course depends only on
/// which VMs have moved before it, so each (VM, moved set) is simulated once
/// ([`alone`]: n·2ⁿ⁻¹ at most, 1,024 for 8 VMs) and the orders are walked
/// depth first on those, a branch dropped as soon as it cannot beat the
/// best (its time already longer, or its priority weight unreachable).
fn sequential(sc: &Scenario, start: &[usize], moved: &[usize], obj: Objective) -> Found {
    struct Walk<'a> {
        sc: &'a Scenario,
        obj: Objective,
        memo: std::collections::HashMap<(usize, u64), super::schedule::PlannedVm>,
        best: Option<(Vec<usize>, Score)>,
        path: Vec<usize>,
        simulations: u64,
    }
    impl Walk<'_> {
        fn course(&mut self, vm: usize, moved: u64) -> super::schedule::PlannedVm {
            let sc = self.sc;
            let sims = &mut self.simulations;
            self.memo
                .entry((vm, moved))
                .or_insert_with(|| {
                    *sims += 1;
                    let on: Vec<usize> =
                        (0..sc.vms.len()).filter(|i| moved >> i & 1 == 1).collect();
                    alone(sc, vm, &on)
                })
                .clone()
        }

        /// `left`: VMs not yet placed, in the start order; `t`: when the
        /// next starts; `saved`: priority moved by the deadline so far.
        fn walk(&mut self, left: &[usize], moved: u64, t: f64, saved: u64) {
            let remaining: u64 = left.iter().map(|&i| self.sc.vms[i].priority as u64).sum();
            if let Some((_, b)) = &self.best {
                let reachable = match self.obj.deadline_s {
                    Some(d) if t < d => saved + remaining,
                    Some(_) => saved,
                    None => 0,
                };
                let no_better_time = b.unfinished == 0 && t >= b.total_s - TIE_S;
                if reachable < b.saved || (reachable == b.saved && no_better_time) {
                    return;
                }
            }
            if left.is_empty() {
                let score = Score {
                    saved,
                    unfinished: 0,
                    total_s: t,
                };
                self.offer(score);
                return;
            }
            for k in 0..left.len() {
                let vm = left[k];
                let c = self.course(vm, moved);
                let mut rest = left.to_vec();
                rest.remove(k);
                self.path.push(vm);
                match c.duration_s {
                    Some(d) => {
                        let end = t + d;
                        let made = c.outcome != Some(super::model::Outcome::Aborted)
                            && self.obj.deadline_s.is_some_and(|dl| end <= dl);
                        let gain = if made {
                            self.sc.vms[vm].priority as u64
                        } else {
                            0
                        };
                        let on = if c.outcome == Some(super::model::Outcome::Aborted) {
                            moved
                        } else {
                            moved | 1 << vm
                        };
                        self.walk(&rest, on, end, saved + gain);
                    }
                    None => {
                        // It never ends: the rest never start.
                        let path_len = self.path.len();
                        self.path.extend(&rest);
                        let score = Score {
                            saved,
                            unfinished: rest.len() + 1,
                            total_s: f64::INFINITY,
                        };
                        self.offer(score);
                        self.path.truncate(path_len);
                    }
                }
                self.path.pop();
            }
        }

        fn offer(&mut self, score: Score) {
            if self
                .best
                .as_ref()
                .is_none_or(|(_, b)| score.cmp(b) == Ordering::Less)
            {
                self.best = Some((self.path.clone(), score));
            }
        }
    }
    let mut w = Walk {
        sc,
        obj,
        memo: Default::default(),
        best: None,
        path: Vec::new(),
        simulations: 0,
    };
    let mask = moved.iter().fold(0u64, |m, &i| m | 1 << i);
    w.walk(start, mask, 0.0, 0);
    let order = w.best.map(|(o, _)| o).unwrap_or_else(|| start.to_vec());
    Found {
        schedule: simulate(sc, &order, moved),
        order,
        method: Method::Exhaustive,
        simulations: w.simulations,
    }
}

/// Plans whose totals differ by less than this are equal: the first found
/// (the paper's order is tried first) stays.
const TIE_S: f64 = 1e-6;

fn exhaustive(sc: &Scenario, start: &[usize], moved: &[usize], obj: Objective) -> Found {
    let mut perm = start.to_vec();
    let mut best = (perm.clone(), simulate(sc, &perm, moved));
    let mut best_score = Score::of(sc, &best.1, obj);
    let mut simulations = 1;
    // Heap's algorithm, iterative: every permutation once.
    let n = perm.len();
    let mut c = vec![0usize; n];
    let mut i = 1;
    while i < n {
        if c[i] < i {
            let j = if i % 2 == 0 { 0 } else { c[i] };
            perm.swap(j, i);
            let s = simulate(sc, &perm, moved);
            simulations += 1;
            let score = Score::of(sc, &s, obj);
            if score.cmp(&best_score) == Ordering::Less {
                best = (perm.clone(), s);
                best_score = score;
            }
            c[i] += 1;
            i = 1;
        } else {
            c[i] = 0;
            i += 1;
        }
    }
    Found {
        order: best.0,
        schedule: best.1,
        method: Method::Exhaustive,
        simulations,
    }
}

fn local(sc: &Scenario, start: &[usize], moved: &[usize], obj: Objective) -> Found {
    let mut simulations = 0;
    let mut starts = vec![start.to_vec()];
    if obj.deadline_s.is_some() {
        starts.push(greedy_by_priority(sc, start, moved));
    }
    let mut best: Option<(Vec<usize>, Schedule, Score)> = None;
    for s0 in starts {
        let mut cur = s0;
        let mut cur_s = simulate(sc, &cur, moved);
        simulations += 1;
        let mut cur_score = Score::of(sc, &cur_s, obj);
        'improve: while simulations < LOCAL_BUDGET {
            for from in 0..cur.len() {
                for to in 0..cur.len() {
                    if from == to || simulations >= LOCAL_BUDGET {
                        continue;
                    }
                    let mut cand = cur.clone();
                    let v = cand.remove(from);
                    cand.insert(to, v);
                    let s = simulate(sc, &cand, moved);
                    simulations += 1;
                    let score = Score::of(sc, &s, obj);
                    if score.cmp(&cur_score) == Ordering::Less {
                        (cur, cur_s, cur_score) = (cand, s, score);
                        continue 'improve;
                    }
                }
            }
            break;
        }
        if best
            .as_ref()
            .is_none_or(|b| cur_score.cmp(&b.2) == Ordering::Less)
        {
            best = Some((cur, cur_s, cur_score));
        }
    }
    let (order, schedule, _) = best.expect("at least one start");
    Found {
        order,
        schedule,
        method: Method::Local,
        simulations,
    }
}

/// Highest priority per predicted second alone first: the deadline's
/// greedy start (weighted shortest job first).
fn greedy_by_priority(sc: &Scenario, start: &[usize], moved: &[usize]) -> Vec<usize> {
    let alone = |i: usize| {
        simulate(sc, &[i], moved).vms[0]
            .duration_s
            .unwrap_or(f64::INFINITY)
            .max(1e-9)
    };
    let mut keyed: Vec<(f64, usize)> = start
        .iter()
        .map(|&i| (sc.vms[i].priority as f64 / alone(i), i))
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// Why a VM is predicted to miss the deadline, or None when it makes it.
pub fn miss_reason(p: &super::schedule::PlannedVm, deadline_s: f64) -> Option<String> {
    use super::model::Outcome;
    match (p.outcome, p.start_s, p.end_s) {
        (Some(Outcome::Aborted), _, _) => Some("its pre-copy stalls and on_stall is abort: it stays on the source".into()),
        (Some(Outcome::NeverConverges), _, _) => Some(
            "its pre-copy never converges, even with the stall remedy (its dirty set does not fit the downtime allowed at the rate it would get)"
                .into(),
        ),
        (_, None, _) => Some("it never starts: the migrations before it do not end".into()),
        (_, Some(s), _) if s >= deadline_s => Some(format!(
            "it would start at {s:.0} s, at or after the deadline ({deadline_s:.0} s)"
        )),
        (_, _, Some(e)) if e > deadline_s => Some(format!(
            "predicted to end at {e:.0} s, after the deadline ({deadline_s:.0} s)"
        )),
        (_, _, None) => Some("predicted not to end".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::model::VmInput;
    use crate::predict::schedule::simulate;

    fn vm(name: &str, mb: u64, tx_mbps: f64, priority: u32) -> VmInput {
        VmInput {
            name: name.into(),
            memory_kib: 1 << 20,
            non_zero_pages: mb * 1_000_000 / 4096,
            dirty_pages_per_sec: 0.0,
            tx_bps: tx_mbps * 1e6,
            rx_bps: 0.0,
            priority,
            disk_bytes: 0,
            disk_write_bps: 0.0,
        }
    }

    fn scenario(vms: Vec<VmInput>) -> Scenario {
        crate::predict::schedule::tests::scenario(vms, 1)
    }

    /// The sender first ends soonest (see the schedule's tests), whatever
    /// order the search starts from.
    #[test]
    fn exhaustive_finds_the_shortest_order() {
        let sc = scenario(vec![
            vm("c", 100, 0.0, 1),
            vm("c2", 50, 0.0, 1),
            vm("no", 100, 60.0, 1),
        ]);
        let f = best_order(&sc, &[0, 1, 2], Objective { deadline_s: None });
        assert_eq!(f.method, Method::Exhaustive);
        // Each VM after each set of the other two: 3 x 4 courses.
        assert_eq!(f.simulations, 12);
        // Several at once: every order simulated whole.
        let two = Scenario {
            concurrency: 2,
            ..sc.clone()
        };
        let f2 = best_order(&two, &[0, 1, 2], Objective { deadline_s: None });
        assert_eq!((f2.method, f2.simulations), (Method::Exhaustive, 6));
        assert_eq!(f.order[0], 2, "{f:?}");
    }

    /// A 10 s deadline on a 100 Mbit/s link. The paper's order sends the
    /// big sender "no" first (100 MB at the 40 Mbit/s its own traffic
    /// leaves: 20 s): nothing is moved by 10 s. The small VMs first (10 MB
    /// each at 40 Mbit/s, 2 s each) save both, priority 5 + 5.
    #[test]
    fn the_deadline_plan_saves_more_than_the_papers_order() {
        let sc = scenario(vec![
            vm("no", 100, 60.0, 1),
            vm("a", 10, 0.0, 5),
            vm("b", 10, 0.0, 5),
        ]);
        let paper = [0, 1, 2];
        let obj = Objective {
            deadline_s: Some(10.0),
        };
        let by_paper = simulate(&sc, &paper);
        assert_eq!(by_paper.saved(&sc.vms, 10.0), 0);
        let f = best_order(&sc, &paper, obj);
        assert_eq!(f.schedule.saved(&sc.vms, 10.0), 10, "{f:?}");
        assert_eq!(f.order[2], 0);
        // And the reasons up front.
        let no = f.schedule.vms.iter().find(|p| p.name == "no").unwrap();
        assert!(
            miss_reason(no, 10.0)
                .unwrap()
                .contains("after the deadline"),
            "{no:?}"
        );
        assert_eq!(miss_reason(&f.schedule.vms[0], 10.0), None);
    }

    /// Beyond eight VMs the local search runs, and with a deadline it also
    /// starts from the priority-per-second greedy order.
    #[test]
    fn local_search_beyond_eight() {
        let mut vms: Vec<VmInput> = (0..10)
            .map(|i| vm(&format!("c{i}"), 10 + i as u64, 0.0, 1))
            .collect();
        vms.push(vm("no", 100, 60.0, 1));
        let sc = scenario(vms);
        let start: Vec<usize> = (0..11).collect();
        let f = best_order(&sc, &start, Objective { deadline_s: None });
        assert_eq!(f.method, Method::Local);
        assert_eq!(f.order[0], 10, "the sender first: {:?}", f.order);
        assert!(f.simulations < LOCAL_BUDGET);
        let paper = simulate(&sc, &start).total_migration_s.unwrap();
        assert!(f.schedule.total_migration_s.unwrap() < paper);
    }
}
