//! Stock Mininet, as solive's users run it: the network of a solive topology
//! built by Mininet from `mininet/solive_topo.py` (the custom topology file
//! for `mn --custom`), on a real Open vSwitch sandbox, with solive as its
//! remote controller on the configuration `solive_topo.py config` prints. A
//! reservation between two Mininet hosts must shape their traffic as on the
//! sandbox fabric (`tests/reservation_live.rs`): the application held to the
//! share the reservation leaves it, the migration-like flow given the rest of
//! what the link delivered in the same run.
//!
//! Needs root and `mininet/install.sh` (Mininet). Holds [`support::lock`]:
//! the sandbox's ovs-vswitchd runs in the root network namespace.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{repo_root, Sandbox, Solive};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_shapes_traffic_between_mininet_hosts() {
    let _lock = support::lock();
    assert!(
        std::path::Path::new("/usr/bin/mn").exists(),
        "Mininet is missing: run `sudo mininet/install.sh`"
    );
    let sb = Sandbox::start();
    let py = |args: &[&str]| {
        Command::new("/usr/bin/python3")
            .arg(repo_root().join("mininet/solive_topo.py"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = py(&["config", "evac-2vm", "--ovsdb", &sb.db]);
    assert!(out.status.success(), "{out:?}");
    let config = solive::config::Config::parse(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(config.hosts.len(), 2);
    let of = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let of_addr = of.local_addr().unwrap().to_string();
    let solive = Solive::start_with(config, of).await;

    let api = solive.api.clone();
    let sandbox = sb.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["300", "/usr/bin/python3"])
            .arg(repo_root().join("mininet/mn-reservation"))
            .args([
                "--topology",
                "evac-2vm",
                "--openflow",
                &of_addr,
                "--api",
                &api,
            ])
            // Mininet's ovs-vsctl and ovs-ofctl talk to the sandbox.
            .env("OVS_RUNDIR", &sandbox)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mn-reservation failed: {stderr}");
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let f = |p: &str| r.pointer(p).and_then(Value::as_f64).unwrap();
    let (app0, mig0) = (f("/unreserved/application"), f("/unreserved/migration"));
    let (app1, mig1) = (f("/reserved/application"), f("/reserved/migration"));
    let share = f("/app_share_pct");
    let c = f("/capacity_mbps");
    eprintln!(
        "Mininet: unreserved application {app0:.1} + migration {mig0:.1} Mbit/s; \
         reserved application {app1:.1}, migration {mig1:.1} Mbit/s; application share {share:.1}% over {} periods",
        r["periods"]
    );
    // The flows contend for the link (its shaper, not the datapath, bounds
    // them) ...
    let delivered = app0 + mig0;
    assert!(delivered > c / 2.0, "the flows did not fill the link: {r}");
    assert!(r["periods"].as_u64().unwrap() >= 5, "{r}");
    // ... the application is held to what the reservation leaves it (plus
    // 10% for the meter's burst) ...
    let app_allowed = c * share / 100.0;
    assert!(
        app1 <= app_allowed * 1.1,
        "application got {app1:.1} Mbit/s under a {app_allowed:.1} Mbit/s share"
    );
    // ... and the migration gets the rest of what the link delivered (at
    // most its own 80 Mbit/s, ~76 of goodput).
    let due = (delivered - app_allowed).min(0.95 * 80.0);
    assert!(
        mig1 >= 0.9 * due,
        "migration got {mig1:.1} Mbit/s, under 90% of the {due:.1} left to it"
    );
    assert_eq!(solive.get("/v1/reservations").await, serde_json::json!([]));
    solive.stop().await;
}
