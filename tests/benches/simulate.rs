//! `solive simulate` at the size the README promises: a made-up site of 50
//! source hosts, 25 destinations and 1,000 VMs (`50:25:1000`, seed 1),
//! placed, ordered and run to the end in simulated time, on one core (the
//! simulator is single-threaded). Five runs per setting; prints the
//! median, the fastest and the slowest wall time, and what was simulated.
//!
//!     cargo bench --bench simulate

use std::time::Instant;

use solive::evacuation::Concurrency;
use solive::simulate::{self, generate, Options, OrderChoice};

const RUNS: usize = 5;

fn main() {
    let spec: generate::Spec = "50:25:1000:1".parse().unwrap();
    let site = generate::site(&spec);
    let settings: Vec<(&str, Options)> = vec![
        ("rules, auto concurrency, reservation", Options::default()),
        (
            "rules, 1 at once per source",
            Options {
                concurrency: Concurrency::Fixed(1),
                ..Options::default()
            },
        ),
        (
            "predict (model's search per source)",
            Options {
                order: OrderChoice::Predict,
                ..Options::default()
            },
        ),
        (
            "predict with a 60 s deadline",
            Options {
                order: OrderChoice::Predict,
                deadline_s: Some(60.0),
                ..Options::default()
            },
        ),
    ];
    println!("site {} ({} VMs)", site.name, site.vms.len());
    for (name, opts) in settings {
        let mut walls = Vec::new();
        let mut last = None;
        for _ in 0..RUNS {
            let t = Instant::now();
            let r = simulate::simulate(&site, &opts).expect("the generated site simulates");
            walls.push(t.elapsed().as_secs_f64());
            last = Some(r);
        }
        walls.sort_by(f64::total_cmp);
        let r = last.expect("runs");
        println!(
            "{name}: median {:.3} s (min {:.3}, max {:.3}) wall; simulated total {:.1} s in {} steps, {} unfinished",
            walls[RUNS / 2],
            walls[0],
            walls[RUNS - 1],
            r.total_migration_ms.unwrap_or(0) as f64 / 1000.0,
            r.steps,
            r.unfinished.len()
        );
    }
}
