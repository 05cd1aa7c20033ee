//! A background transfer (a disk cache's sync) on the real fabric: two
//! bridges joined by a 100 Mbit/s HTB-shaped uplink, an application on the
//! source sending 60 Mbit/s, and a bulk TCP flow from the source host's own
//! address to the cache port on the destination, started as a background
//! transfer through the controller (as `crate::cache` does).
//!
//! 1. The transfer is held by a meter of its own to half the room the link
//!    has left (100 - 60 = 40: 20 Mbit/s), and the application keeps its
//!    rate.
//! 2. When the application stops, the transfer's share grows within a few
//!    periods (half the idle link).
//! 3. When the transfer ends, its flow and meter are gone from the switch.

mod support;

use std::time::Duration;

use solive::controller::background::{BackgroundRequest, BACKGROUND_METERS};
use support::fabric::TwoHosts;
use support::iperf::{mean, Iperf};
use support::{eventually, Sandbox, Solive};

const C_MBPS: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_transfer_gets_half_the_room_and_yields_it() {
    let _lock = support::lock();
    let sb = Sandbox::start();
    let net = TwoHosts::new(&sb, "sbg", "10.198.0", C_MBPS);
    let _app_srv = net.server(5201);
    let _cache_srv = net.server(10809);
    let toml = format!(
        "[controller]\nopenflow_listen = \"127.0.0.1:0\"\nperiod_ms = 1000\nresync_periods = 5\n\
         [api]\nlisten = \"127.0.0.1:0\"\n{}",
        net.hosts_toml(&sb, C_MBPS)
    );
    let solive = Solive::start(&toml).await;
    solive
        .host_when("src", "src in meter mode", |h| {
            h["connected"] == true && h["enforcement"]["mode"] == "meter"
        })
        .await;
    let controller = solive.running.controller.clone();

    // The application alone, then the transfer beside it.
    let app = Iperf::start(&net.vm, "10.198.0.2", 5201, 40, Some("60M"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let lease = controller
        .start_background(BackgroundRequest {
            host: "src".into(),
            src: "10.198.0.1".parse().unwrap(),
            dst: "10.198.0.2".parse().unwrap(),
            tcp_dst: 10809,
            floor_bps: 4e6,
            max_bps: 80e6,
        })
        .await
        .unwrap();
    assert!(lease.held.enforced, "{:?}", lease.held);
    let meter = BACKGROUND_METERS + lease.held.id;
    let cache = Iperf::start(&net.hs, "10.198.0.2", 10809, 30, None);
    // 1. Held to half the room (about 20 Mbit/s) while the application sends.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let share = lease.rate_bps().await.unwrap() / 1e6;
    let flows = sb.ofctl(&["dump-flows", "brs"]);
    assert!(
        flows.contains("tp_dst=10809") && flows.contains(&format!("meter:{meter}")),
        "{flows}"
    );
    let at = cache.started.elapsed().as_secs_f64();
    let app_iv = app.stop();
    let app_at = app_iv.last().map_or(0.0, |l| l.0);
    // The share grows over a few periods (the application's rate leaves the
    // measured average gradually), so the data plane is judged against the
    // share already in force when its window opens, not the final one.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let share_at_window = lease.rate_bps().await.unwrap() / 1e6;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let share_alone = lease.rate_bps().await.unwrap() / 1e6;
    let cache_iv = cache.stop();
    let during = mean(&cache_iv, at - 8.0, at);
    let alone = mean(&cache_iv, at + 6.0, at + 11.0);
    let app_rate = mean(&app_iv, app_at - 8.0, app_at);
    eprintln!(
        "application {app_rate:.1} Mbit/s; transfer beside it {during:.1} Mbit/s (share {share:.1}); \
         alone {alone:.1} Mbit/s (share {share_at_window:.1} when measured, then {share_alone:.1})"
    );
    // The share: half of 100 - 60, give or take what the meters let by.
    assert!((14.0..=28.0).contains(&share), "share {share:.1} Mbit/s");
    // The meter holds the transfer near its share (a tenth of a second of
    // burst), well under the ~40 Mbit/s TCP would take unheld ...
    assert!(
        during <= share * 1.2 + 2.0,
        "transfer {during:.1} over its {share:.1}"
    );
    // ... and the application keeps its rate.
    assert!(app_rate >= 54.0, "application fell to {app_rate:.1} Mbit/s");
    // 2. Alone on the link, the share is half the link (what the transfer
    // itself carries does not count against it).
    assert!(share_alone >= 40.0, "share alone {share_alone:.1} Mbit/s");
    // TCP through a meter (a policer: it drops, it does not queue) reached
    // 76-92% of the rate in force over ten runs here, so 70% is the bar.
    let in_force = share_at_window.min(share_alone);
    assert!(
        alone >= 0.7 * in_force,
        "transfer alone {alone:.1} under the {in_force:.1} in force"
    );
    assert!(
        alone >= 1.3 * during,
        "transfer alone {alone:.1} did not grow from {during:.1}"
    );
    // 3. Ended: its flow and meter go.
    drop(lease);
    eventually(10, "the transfer's flow and meter removed", || async {
        let flows = sb.ofctl(&["dump-flows", "brs"]);
        let meters = sb.ofctl(&["dump-meters", "brs"]);
        if flows.contains("tp_dst=10809") || meters.contains(&format!("meter={meter} ")) {
            Err(format!("{flows}\n{meters}"))
        } else {
            Ok(())
        }
    })
    .await;
    solive.stop().await;
}
