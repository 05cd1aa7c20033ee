//! The simulator's clock: the migrations of many sources into many
//! destinations, stepped event to event on a fluid model of the hosts'
//! links (as [`crate::predict::schedule`] does for one pair), with a
//! controller period in which the real controller's own code runs:
//!
//! - **Algorithm 1**, as the controller's own link reservation
//!   ([`crate::controller::reservation::Reservation`]), steps once per
//!   period on each source uplink on the aggregate of the migrations leaving
//!   it: measurement 0 when the link's first migration starts, its value
//!   kept until the migrations are seen moving (libvirt's start-up sends
//!   nothing, and a link idle meanwhile would otherwise be handed to them),
//!   its floor held at what the pre-copies need
//!   ([`crate::controller::link::floor_pct`]);
//! - each uplink's reservation is **split** among its migrations by
//!   remaining bytes, and each destination's incoming link **fitted** to
//!   what may arrive there ([`crate::controller::link::split`],
//!   [`crate::controller::link::fit`]), as the controller sets the speed
//!   caps; a migration sends at its part;
//! - **concurrency**: a pinned number per source, or the feedback
//!   controller ([`crate::evacuation::concurrency::Feedback`]) per source,
//!   fed one sample per period with the same figures the runner gives it
//!   (aggregate rate, caps, stalls, the applications squeezed, tails that
//!   give up their slot).
//!
//! Without reservation the migrations of a link share what the VMs leave
//! of it, or half of it, whichever is more (TCP against the VMs' flows),
//! which is also the floor model the planner's predictions use; with one
//! source and one destination and no period effects the two agree
//! (tested).
//!
//! The VMs' own traffic: what a VM sends loads the uplink of the host it
//! runs on, what it receives that host's downlink; a migrating VM runs on
//! its source until its pause (or until post-copy starts). The fabric
//! between the hosts is taken as non-blocking: the hosts' links are the
//! bottlenecks, as on the testbed and in the paper.

use crate::controller::link::{self, Member};
use crate::controller::reservation::{HistoryPoint, Reservation, ReservationRequest};
use crate::evacuation::concurrency::{self, Feedback, Sample};
use crate::evacuation::record::ConcurrencyRecord;
use crate::evacuation::request::Concurrency;
use crate::order::Mode;
use crate::predict::model::{Migration, Outcome, Params, VmInput};
use crate::reserve::{self, Measurement};

/// A host as the clock sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    /// Its link, bit/s each way.
    pub capacity_bps: f64,
    /// What it can send in all, bit/s (CPU bounds it below the link on the
    /// testbed).
    pub push_bps: f64,
}

/// How the migrations get their bandwidth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bandwidth {
    /// No reservation: what the VMs leave, or this share of the link.
    Floor(f64),
    /// Algorithm 1 with these parameters.
    Reserve(reserve::Params),
}

impl Bandwidth {
    /// Algorithm 1 with `reserve`'s parameters, or without a reservation
    /// TCP's even share against the VMs' flows.
    pub fn of(reserve: Option<reserve::Params>) -> Bandwidth {
        match reserve {
            Some(p) => Bandwidth::Reserve(p),
            None => Bandwidth::Floor(crate::predict::schedule::FLOOR_WITHOUT_RESERVATION),
        }
    }
}

/// One source: its host and its VMs in order, each with its destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub host: usize,
    /// (VM index, destination host index), in migration order.
    pub order: Vec<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub hosts: Vec<Host>,
    pub vms: Vec<VmInput>,
    /// Each VM's host at the start.
    pub at: Vec<usize>,
    pub sources: Vec<Source>,
    pub mode: Mode,
    pub params: Params,
    pub bandwidth: Bandwidth,
    /// Per source.
    pub concurrency: Concurrency,
    /// The feedback controller's ceiling per source.
    pub max_concurrency: u32,
    pub period_s: f64,
    /// What has not ended by then never ends.
    pub horizon_s: f64,
    /// Migrations already under way when the clock starts (a forecast
    /// re-made while an evacuation runs, [`crate::evacuation::site`]): each
    /// goes on from its state and holds a slot of its source. Their VMs are
    /// in no source's `order`.
    pub running: Vec<Resumed>,
}

/// A migration under way at the clock's start.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumed {
    pub vm: usize,
    /// Index into `sources`.
    pub source: usize,
    /// Destination host.
    pub dest: usize,
    pub m: Migration,
}

/// One VM's simulated migration.
#[derive(Debug, Clone, PartialEq)]
pub struct Course {
    pub destination: usize,
    pub start_s: Option<f64>,
    pub end_s: Option<f64>,
    pub bytes: u64,
    pub downtime_ms: Option<u64>,
    pub passes: u64,
    /// None while it had not ended at the horizon.
    pub outcome: Option<Outcome>,
    pub stalled: bool,
}

impl Course {
    /// A migration to `destination` that has not ended, started at
    /// `start_s` if it has.
    fn to(destination: usize, start_s: Option<f64>) -> Course {
        Course {
            destination,
            start_s,
            end_s: None,
            bytes: 0,
            downtime_ms: None,
            passes: 0,
            outcome: None,
            stalled: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Per VM of the input; None for the VMs not to move.
    pub courses: Vec<Option<Course>>,
    /// Per source, in the input's order.
    pub concurrency: Vec<ConcurrencyRecord>,
    /// Per source: its uplink's Algorithm 1 steps (with reservation).
    pub uplinks: Vec<Vec<HistoryPoint>>,
    /// Simulated time when the last migration ended (or the horizon).
    pub end_s: f64,
    /// Steps of the clock (events and periods), for the benchmark.
    pub steps: u64,
}

/// A migration under way.
struct Run {
    vm: usize,
    source: usize,
    dest: usize,
    m: Migration,
    /// When it gave up its slot in its tail (auto).
    released_s: Option<f64>,
    on_source: bool,
    /// Its rate in the last step, bytes/s (what a period measures).
    rate: f64,
    /// When it was first seen sending, s (the warm-up: [`concurrency::warmed`]).
    sent_s: Option<f64>,
}

struct State<'a> {
    inp: &'a Input,
    queues: Vec<std::collections::VecDeque<(usize, usize)>>,
    running: Vec<Run>,
    feedback: Vec<Option<Feedback>>,
    /// Per host: what the VMs on it send and receive, bit/s.
    tx_at: Vec<f64>,
    rx_at: Vec<f64>,
    /// Per source: its uplink's reservation while migrations leave it.
    reserver: Vec<Option<Reservation>>,
    /// Per source: the VM that stalled since the last sample.
    stalled: Vec<Option<String>>,
    out: Output,
}

/// Runs the simulation.
pub fn run(inp: &Input) -> Output {
    let n_src = inp.sources.len();
    let mut courses = vec![None; inp.vms.len()];
    for s in &inp.sources {
        for &(vm, dest) in &s.order {
            courses[vm] = Some(Course::to(dest, None));
        }
    }
    for r in &inp.running {
        courses[r.vm] = Some(Course::to(r.dest, Some(0.0)));
    }
    let mut tx_at = vec![0.0; inp.hosts.len()];
    let mut rx_at = vec![0.0; inp.hosts.len()];
    for (i, v) in inp.vms.iter().enumerate() {
        tx_at[inp.at[i]] += v.tx_bps;
        rx_at[inp.at[i]] += v.rx_bps;
    }
    let mut st = State {
        inp,
        queues: inp
            .sources
            .iter()
            .map(|s| s.order.iter().copied().collect())
            .collect(),
        running: Vec::new(),
        feedback: vec![None; n_src],
        tx_at,
        rx_at,
        reserver: vec![None; n_src],
        stalled: vec![None; n_src],
        out: Output {
            courses,
            concurrency: vec![ConcurrencyRecord::new(inp.concurrency); n_src],
            uplinks: vec![Vec::new(); n_src],
            end_s: 0.0,
            steps: 0,
        },
    };
    for r in &inp.running {
        st.resume(r);
    }
    if inp.concurrency == Concurrency::Auto {
        for s in 0..n_src {
            // A re-made forecast's controller starts at what runs there.
            let under_way = inp.running.iter().filter(|r| r.source == s).count() as u32;
            let f = Feedback::new(under_way.max(1), inp.max_concurrency);
            st.out.concurrency[s].decisions.push(f.start(0));
            st.out.concurrency[s].lead_ms = Some(lead_ms(&inp.params));
            st.feedback[s] = Some(f);
        }
    }
    let period = inp.period_s.max(1e-3);
    let mut t = 0.0;
    let mut next_tick = period;
    loop {
        st.start(t);
        // Nothing more can happen once every migration running resends its
        // working set for ever: their slots never free (the rest never
        // start), and stepping periods to the horizon would only cost time.
        if st.running.iter().all(|r| r.m.never_converges()) {
            break;
        }
        let rates = st.rates();
        let dt = st
            .running
            .iter()
            .zip(&rates)
            .map(|(r, rate)| r.m.time_to_event(*rate))
            .fold(next_tick - t, f64::min)
            .max(0.0);
        if t + dt > inp.horizon_s {
            t = inp.horizon_s;
            break;
        }
        t += dt;
        st.out.steps += 1;
        for (r, rate) in st.running.iter_mut().zip(&rates) {
            r.m.advance(dt, *rate);
            r.rate = *rate;
        }
        st.settle(t);
        if t >= next_tick - 1e-9 {
            st.tick(t);
            next_tick += period;
        }
    }
    st.leftovers();
    st.out.end_s = t;
    st.out
}

fn lead_ms(p: &Params) -> u64 {
    (p.startup_s * 1000.0).round() as u64
}

impl State<'_> {
    fn limit(&self, s: usize) -> usize {
        match (&self.feedback[s], self.inp.concurrency) {
            (Some(f), _) => f.limit() as usize,
            (None, Concurrency::Fixed(n)) => n.max(1) as usize,
            (None, Concurrency::Auto) => 1,
        }
    }

    /// The migrations of source `s` holding a slot at `t`.
    fn holding(&self, s: usize, t: f64) -> usize {
        let auto = self.feedback[s].is_some();
        let lead = lead_ms(&self.inp.params);
        self.running
            .iter()
            .filter(|r| r.source == s)
            .filter(|r| {
                !auto
                    || concurrency::occupies(
                        r.released_s.map(|x| (x * 1000.0) as u64),
                        (t * 1000.0) as u64,
                        lead,
                    )
            })
            .count()
    }

    /// Starts what the limits allow.
    fn start(&mut self, t: f64) {
        for s in 0..self.queues.len() {
            let mut changed = false;
            while self.holding(s, t) < self.limit(s) {
                let Some((vm, dest)) = self.queues[s].pop_front() else {
                    break;
                };
                let inp = self.inp;
                let c = self.out.courses[vm].as_mut().expect("a VM to move");
                c.start_s = Some(t);
                self.running.push(Run {
                    vm,
                    source: s,
                    dest,
                    m: Migration::new(&inp.vms[vm], inp.mode, &inp.params),
                    released_s: None,
                    on_source: true,
                    rate: 0.0,
                    sent_s: None,
                });
                changed = true;
                self.reserve_uplink(s, dest, t);
            }
            if changed {
                self.timeline(s, t);
            }
        }
    }

    /// Source `s`'s uplink reservation when its first migration starts
    /// (to `dest`), with measurement 0.
    fn reserve_uplink(&mut self, s: usize, dest: usize, t: f64) {
        let inp = self.inp;
        let (Bandwidth::Reserve(p), None) = (inp.bandwidth, &self.reserver[s]) else {
            return;
        };
        let h = inp.sources[s].host;
        let cap = inp.hosts[h].capacity_bps;
        let request = ReservationRequest {
            source: inp.hosts[h].name.clone(),
            destination: inp.hosts[dest].name.clone(),
            intermediaries: Vec::new(),
            urgency: p.urgency,
            threshold: p.threshold,
            max_reserve: Some(p.max_reserve),
            migration_port: None,
            store_port: None,
            disk_port: None,
        };
        let mut r = Reservation::new(s as u64, request, p);
        r.tick(
            ms(t),
            &Measurement {
                capacity: cap,
                outgoing: self.tx_at[h].min(cap),
                migration: 0.0,
            },
        );
        self.out.uplinks[s].extend(r.history.last().copied());
        self.reserver[s] = Some(r);
    }

    /// A migration under way at the start: it runs on from its state (its
    /// guest already on the destination once post-copy has begun), its
    /// link reserved as for a start, and counts as warmed up if sending.
    fn resume(&mut self, r: &Resumed) {
        let on_source = r.m.on_source();
        if !on_source {
            let src = self.inp.sources[r.source].host;
            let v = &self.inp.vms[r.vm];
            move_traffic(&mut self.tx_at, &mut self.rx_at, v, src, r.dest);
        }
        self.running.push(Run {
            vm: r.vm,
            source: r.source,
            dest: r.dest,
            m: r.m.clone(),
            released_s: None,
            on_source,
            rate: 0.0,
            sent_s: r.m.sending().then_some(0.0),
        });
        self.reserve_uplink(r.source, r.dest, 0.0);
    }

    fn timeline(&mut self, s: usize, t: f64) {
        let limit = self.limit(s) as u32;
        let running = self.running.iter().filter(|r| r.source == s).count() as u32;
        self.out.concurrency[s].point((t * 1000.0) as u64, limit, running);
    }

    /// Each running migration's rate now, bytes/s.
    fn rates(&self) -> Vec<f64> {
        let inp = self.inp;
        let mut part = vec![0.0; self.running.len()];
        let members = |idx: &[usize]| -> Vec<Member> {
            idx.iter()
                .map(|&i| {
                    let m = &self.running[i].m;
                    let reserve = matches!(inp.bandwidth, Bandwidth::Reserve(_));
                    Member {
                        reservation: i as u64,
                        remaining: m.left().filter(|_| reserve),
                        need: m.need_bps().filter(|_| reserve),
                    }
                })
                .collect()
        };
        let mut by_source: Vec<Vec<usize>> = vec![Vec::new(); inp.sources.len()];
        let mut by_dest: Vec<Vec<usize>> = vec![Vec::new(); inp.hosts.len()];
        for (i, r) in self.running.iter().enumerate() {
            if r.m.sending() {
                by_source[r.source].push(i);
                by_dest[r.dest].push(i);
            }
        }
        for (s, idx) in by_source.iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let h = &inp.hosts[inp.sources[s].host];
            let apps = self.tx_at[inp.sources[s].host];
            let allowance = match inp.bandwidth {
                Bandwidth::Floor(f) => (h.capacity_bps - apps).max(f * h.capacity_bps),
                Bandwidth::Reserve(p) => {
                    let pct = self.reserver[s]
                        .as_ref()
                        .and_then(Reservation::link_pct)
                        .unwrap_or(p.urgency);
                    pct / 100.0 * h.capacity_bps
                }
            };
            for (i, x) in idx
                .iter()
                .zip(link::split(allowance.min(h.push_bps), &members(idx)))
            {
                part[*i] = x;
            }
        }
        for (d, idx) in by_dest.iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let cap = inp.hosts[d].capacity_bps;
            let limit = match inp.bandwidth {
                Bandwidth::Floor(f) => (cap - self.rx_at[d]).max(f * cap),
                Bandwidth::Reserve(p) => cap * p.max_reserve / 100.0,
            };
            let want: Vec<f64> = idx.iter().map(|&i| part[i]).collect();
            for (i, x) in idx.iter().zip(link::fit(limit, &want, &members(idx))) {
                part[*i] = x;
            }
        }
        part.iter().map(|bits| bits / 8.0).collect()
    }

    /// After a step: VMs whose guest moved count on their destination,
    /// stalls are noted, ended migrations leave.
    fn settle(&mut self, t: f64) {
        let inp = self.inp;
        for r in &mut self.running {
            if r.on_source && !r.m.on_source() {
                r.on_source = false;
                let src = inp.sources[r.source].host;
                move_traffic(
                    &mut self.tx_at,
                    &mut self.rx_at,
                    &inp.vms[r.vm],
                    src,
                    r.dest,
                );
            }
            let c = self.out.courses[r.vm].as_mut().expect("a VM to move");
            if r.m.stalled() && !c.stalled {
                c.stalled = true;
                self.stalled[r.source] = Some(inp.vms[r.vm].name.clone());
            }
        }
        let mut ended = Vec::new();
        self.running.retain(|r| {
            let Some(o) = r.m.outcome() else { return true };
            ended.push((r.vm, r.source, r.dest, o, r.on_source, r.m.clone()));
            false
        });
        for (vm, s, dest, o, on_source, m) in ended {
            let c = self.out.courses[vm].as_mut().expect("a VM to move");
            record(c, &m);
            c.outcome = Some(o);
            let v = &inp.vms[vm];
            let src = inp.sources[s].host;
            if o != Outcome::Aborted {
                c.end_s = Some(t);
                if on_source {
                    move_traffic(&mut self.tx_at, &mut self.rx_at, v, src, dest);
                }
            }
            if !self.running.iter().any(|r| r.source == s) {
                self.reserver[s] = None;
            }
            self.timeline(s, t);
        }
    }

    /// The controller's period: Algorithm 1 on every busy uplink, then
    /// the feedback controllers' samples.
    fn tick(&mut self, t: f64) {
        let inp = self.inp;
        let t_ms = (t * 1000.0) as u64;
        let lead = lead_ms(&inp.params);
        for s in 0..inp.sources.len() {
            let h = inp.sources[s].host;
            let cap = inp.hosts[h].capacity_bps;
            // The rates at the period's end, bit/s (runs that ended in it
            // are gone, as the real counters no longer see them).
            let mine: Vec<(usize, f64)> = self
                .running
                .iter()
                .enumerate()
                .filter(|(_, r)| r.source == s)
                .map(|(i, r)| (i, r.rate * 8.0))
                .collect();
            let mig: f64 = mine.iter().map(|(_, b)| b).sum();
            let apps = self.tx_at[h];
            if let (Bandwidth::Reserve(p), Some(r)) = (inp.bandwidth, self.reserver[s].as_mut()) {
                r.tick(
                    t_ms,
                    &Measurement {
                        capacity: cap,
                        outgoing: apps.min((cap - mig).max(0.0)) + mig,
                        migration: mig,
                    },
                );
                let needs: Vec<f64> = mine
                    .iter()
                    .filter_map(|(i, _)| self.running[*i].m.need_bps())
                    .map(|b| b / cap * 100.0)
                    .collect();
                if let Some(floor) = link::floor_pct(&needs, 100.0 - apps / cap * 100.0, p.urgency)
                {
                    r.raise_to(floor);
                }
                self.out.uplinks[s].extend(r.history.last().copied());
            }
            let Some(f) = self.feedback[s].as_mut() else {
                continue;
            };
            let mut sample = Sample {
                at_ms: t_ms,
                pending: self.queues[s].len(),
                aggregate_bps: mig,
                link_bps: cap,
                // Under a reservation Algorithm 1 holds the applications'
                // part.
                unreserved_apps_bps: match inp.bandwidth {
                    Bandwidth::Reserve(_) => 0.0,
                    _ => apps.min((cap - mig).max(0.0)),
                },
                stalled: self.stalled[s].take(),
                ..Sample::default()
            };
            // Each new migration's buffer drains at its part of the link.
            let warmup = concurrency::warmup_ms(cap / mine.len().max(1) as f64);
            for (i, bps) in &mine {
                let r = &mut self.running[*i];
                let rate = bps / 8.0;
                if r.m.sending() && *bps > 0.0 {
                    r.sent_s.get_or_insert(t);
                }
                let warmed =
                    concurrency::warmed(r.sent_s.map(|x| (x * 1000.0) as u64), t_ms, warmup);
                if warmed {
                    sample.progress_bps += concurrency::net_bps(*bps, r.m.resend_bps() * 8.0);
                }
                if r.released_s.is_none()
                    && r.m.sending()
                    && concurrency::in_tail(r.m.left().unwrap_or(0.0) as u64, rate as u64, lead)
                {
                    r.released_s = Some(t);
                }
                if concurrency::occupies(r.released_s.map(|x| (x * 1000.0) as u64), t_ms, lead) {
                    sample.running += 1;
                    if warmed && r.m.sending() && *bps > 0.0 {
                        sample.sending += 1;
                    }
                }
            }
            if let (Bandwidth::Reserve(p), Some(r)) = (inp.bandwidth, &self.reserver[s]) {
                sample.caps_bps = r.link_pct().unwrap_or(0.0) / 100.0 * cap;
                sample.squeezed = self.out.uplinks[s]
                    .last()
                    .and_then(|pt| concurrency::squeezed(pt, p.urgency));
            }
            if let Some(d) = f.observe(&sample) {
                self.out.concurrency[s].decisions.push(d);
            }
            self.timeline(s, t);
        }
    }

    /// What runs at the horizon: its bytes so far.
    fn leftovers(&mut self) {
        for r in &self.running {
            if let Some(c) = self.out.courses[r.vm].as_mut() {
                record(c, &r.m);
                if r.m.never_converges() {
                    c.outcome = Some(Outcome::NeverConverges);
                }
            }
        }
    }
}

/// A VM's own traffic now loads host `to`'s link instead of `from`'s.
fn move_traffic(tx_at: &mut [f64], rx_at: &mut [f64], v: &VmInput, from: usize, to: usize) {
    tx_at[from] -= v.tx_bps;
    rx_at[from] -= v.rx_bps;
    tx_at[to] += v.tx_bps;
    rx_at[to] += v.rx_bps;
}

fn record(c: &mut Course, m: &Migration) {
    c.bytes = m.bytes.round() as u64;
    c.passes = m.passes;
    c.downtime_ms = m.downtime_ms.map(|d| d.round() as u64);
}

fn ms(t: f64) -> u64 {
    (t * 1000.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::schedule::{self, tests::scenario};

    fn vm(name: &str, mb: f64, dirty_pages: f64, tx_mbps: f64, rx_mbps: f64) -> VmInput {
        VmInput {
            name: name.into(),
            memory_kib: 1 << 20,
            non_zero_pages: (mb * 1e6 / 4096.0) as u64,
            dirty_pages_per_sec: dirty_pages,
            tx_bps: tx_mbps * 1e6,
            rx_bps: rx_mbps * 1e6,
            priority: 1,
            disk_bytes: 0,
            disk_write_bps: 0.0,
        }
    }

    fn host(name: &str, mbps: f64) -> Host {
        Host {
            name: name.into(),
            capacity_bps: mbps * 1e6,
            push_bps: 1e12,
        }
    }

    /// No start-up or fixed pause, a 10% floor without reservation, one at
    /// a time: what the tests compute by hand; they change what they need.
    fn input(hosts: Vec<Host>, vms: Vec<VmInput>, at: Vec<usize>, sources: Vec<Source>) -> Input {
        Input {
            hosts,
            vms,
            at,
            sources,
            mode: Mode::Precopy,
            params: Params {
                startup_s: 0.0,
                downtime_overhead_ms: 0.0,
                ..Params::default()
            },
            bandwidth: Bandwidth::Floor(0.1),
            concurrency: Concurrency::Fixed(1),
            max_concurrency: 4,
            period_s: 1.0,
            horizon_s: 1e6,
            running: Vec::new(),
        }
    }

    /// One source and one destination without reservation: the clock gives
    /// what the planner's fluid model gives (its periods change nothing
    /// then), in every order and at 1 and 2 at once.
    #[test]
    fn one_pair_agrees_with_the_planners_model() {
        let vms = vec![
            vm("no", 100.0, 0.0, 60.0, 0.0),
            vm("m", 80.0, 500.0, 0.0, 0.0),
            vm("ni", 50.0, 0.0, 0.0, 40.0),
        ];
        for conc in [1, 2] {
            let sc = scenario(vms.clone(), conc);
            for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
                let want = schedule::simulate(&sc, &order);
                let mut inp = input(
                    vec![host("h1", 100.0), host("h2", 100.0)],
                    vms.clone(),
                    vec![0; 3],
                    vec![Source {
                        host: 0,
                        order: order.iter().map(|&i| (i, 1)).collect(),
                    }],
                );
                (inp.params, inp.bandwidth) = (sc.params, Bandwidth::Floor(sc.floor));
                inp.concurrency = Concurrency::Fixed(conc);
                let got = run(&inp);
                for p in &want.vms {
                    let i = vms.iter().position(|v| v.name == p.name).unwrap();
                    let c = got.courses[i].as_ref().unwrap();
                    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
                        (Some(a), Some(b)) => (a - b).abs() < 1e-6,
                        (a, b) => a == b,
                    };
                    assert!(
                        close(c.start_s, p.start_s) && close(c.end_s, p.end_s),
                        "{conc} at once, {order:?}, {}: {c:?} vs {p:?}",
                        p.name
                    );
                    assert_eq!((c.bytes, c.outcome), (p.bytes, p.outcome));
                }
            }
        }
    }

    /// A forecast re-made mid-way: a migration under way goes on from its
    /// state (50 of its 100 MB left at 50 Mbit/s, half the link with the
    /// floor: 8 s) and holds its source's one slot, so the next VM starts
    /// when it ends; one whose guest already runs on the destination
    /// (post-copy) loads the destination's link, not the source's.
    #[test]
    fn a_migration_under_way_goes_on_from_its_state() {
        let mut inp = input(
            vec![host("h1", 100.0), host("h2", 100.0)],
            vec![
                vm("a", 100.0, 0.0, 0.0, 0.0),
                vm("b", 100.0, 0.0, 0.0, 0.0),
                vm("noisy", 0.0, 0.0, 50.0, 0.0),
            ],
            vec![0, 0, 0],
            vec![Source {
                host: 0,
                order: vec![(1, 1)],
            }],
        );
        let a = Migration::resume(&inp.vms[0], Mode::Precopy, &inp.params, 50e6, false);
        inp.running = vec![Resumed {
            vm: 0,
            source: 0,
            dest: 1,
            m: a,
        }];
        let out = run(&inp);
        let (a, b) = (
            out.courses[0].as_ref().unwrap(),
            out.courses[1].as_ref().unwrap(),
        );
        assert_eq!(a.start_s, Some(0.0));
        // noisy sends 50 of h1's 100 Mbit/s: a gets the other 50.
        assert!((a.end_s.unwrap() - 8.0).abs() < 1e-3, "{a:?}");
        assert!((b.start_s.unwrap() - 8.0).abs() < 1e-3, "{b:?}");
        assert!(out.courses[2].is_none());
        // In post-copy its guest is on h2: its 50 Mbit/s leaves h1.
        let mut post = inp.clone();
        post.vms[0].tx_bps = 50e6;
        post.vms[2].tx_bps = 0.0;
        post.mode = Mode::Postcopy;
        post.running[0].m =
            Migration::resume(&post.vms[0], Mode::Postcopy, &post.params, 50e6, false);
        assert!(!post.running[0].m.on_source());
        let out = run(&post);
        let b = out.courses[1].as_ref().unwrap();
        // b then has h1 to itself: 100 MB at 100 Mbit/s, 8 s, and 10% more
        // for post-copy's faults (`postcopy_fault_share`).
        let (start, end) = (b.start_s.unwrap(), b.end_s.unwrap());
        assert!((end - start - 8.8).abs() < 1e-3, "{b:?}");
    }

    /// Two sources into one destination whose link is the bottleneck: the
    /// destination's link is shared (each gets half), and a source's own
    /// uplink never carries more than it has.
    #[test]
    fn two_sources_share_one_destination() {
        let inp = input(
            vec![host("s1", 100.0), host("s2", 100.0), host("d", 100.0)],
            vec![vm("a", 100.0, 0.0, 0.0, 0.0), vm("b", 100.0, 0.0, 0.0, 0.0)],
            vec![0, 1],
            vec![
                Source {
                    host: 0,
                    order: vec![(0, 2)],
                },
                Source {
                    host: 1,
                    order: vec![(1, 2)],
                },
            ],
        );
        let out = run(&inp);
        // 100 MB each at 50 Mbit/s: 16 s, together.
        for c in out.courses.iter().flatten() {
            assert!((c.end_s.unwrap() - 16.0).abs() < 1e-3, "{c:?}");
        }
        // Into two destinations instead: 8 s each.
        let mut two = inp.clone();
        two.hosts.push(host("d2", 100.0));
        two.sources[1].order = vec![(1, 3)];
        for c in run(&two).courses.iter().flatten() {
            assert!((c.end_s.unwrap() - 8.0).abs() < 1e-3, "{c:?}");
        }
    }

    /// With Algorithm 1 the reservation steps each period: measurement 0
    /// gives the room the VMs leave (40 of 100 Mbit/s with a 60 Mbit/s
    /// sender), which is what the migration gets; the feedback controller
    /// starts at one per source and records its decisions.
    #[test]
    fn algorithm_one_and_the_feedback_controller_run_each_period() {
        let vms = vec![
            vm("no", 100.0, 0.0, 60.0, 0.0),
            vm("a", 100.0, 0.0, 0.0, 0.0),
            vm("b", 100.0, 0.0, 0.0, 0.0),
        ];
        let mut inp = input(
            vec![host("h1", 100.0), host("h2", 100.0)],
            vms,
            vec![0; 3],
            vec![Source {
                host: 0,
                order: vec![(0, 1), (1, 1), (2, 1)],
            }],
        );
        inp.params = Params::default();
        inp.bandwidth = Bandwidth::Reserve(reserve::Params::new(30.0, 5.0, 95.0).unwrap());
        inp.concurrency = Concurrency::Auto;
        let out = run(&inp);
        let up = &out.uplinks[0];
        assert!((up[0].reserve_pct - 40.0).abs() < 1e-6, "{:?}", up[0]);
        assert!(out.courses.iter().flatten().all(|c| c.end_s.is_some()));
        let conc = &out.concurrency[0];
        assert_eq!(conc.decisions[0].to, 1);
        assert!(!conc.timeline.is_empty());
        // The reservation never exceeds max_reserve.
        assert!(up.iter().all(|p| p.reserve_pct <= 95.0 + 1e-9));
    }
}
