//! A reservation on the real fabric, driven through the `solive` binary's REST
//! API: two hosts (bridges) joined by a 100 Mbit/s HTB-shaped uplink, an
//! application flow from a VM interface on the source saturating it, and a
//! migration-like flow from the source host's own address to a port in
//! libvirt's migration range on the destination.
//!
//! 1. Without a reservation the two flows share the link.
//! 2. With a reservation at urgency 75 the application is held to the share
//!    the reservation leaves it and the migration gets at least 90% of the
//!    rest of what the link delivers.
//! 3. When the application stops, the reservation rises to max_reserve within
//!    three periods.
//! 4. When the controller is killed (SIGKILL, no cleanup), the application is
//!    back above 85% of what the link delivers soon after the hard timeout of
//!    its throttling flows.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::fabric::TwoHosts;
use support::iperf::{app_share_pct, mean, Iperf};
use support::{eventually, KillOnDrop, Sandbox};

const API: &str = "http://127.0.0.1:48081";
const C_MBPS: u64 = 100;

async fn get(path: &str) -> Value {
    support::get_json(API, path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_holds_on_the_fabric_and_lapses_when_the_controller_dies() {
    let _lock = support::lock();
    let sb = Sandbox::start();
    let net = TwoHosts::new(&sb, "slr", "10.197.0", C_MBPS);
    let (vm, hs) = (&net.vm, &net.hs);
    let _app_srv = net.server(5201);
    let _mig_srv = net.server(49152);

    // The controller, as an operator runs it.
    let toml = format!(
        "[controller]\nopenflow_listen = \"127.0.0.1:46654\"\nperiod_ms = 1000\nresync_periods = 5\n\
         [api]\nlisten = \"127.0.0.1:48081\"\n{}",
        net.hosts_toml(&sb, C_MBPS)
    );
    let cfg = sb.path().join("solive.toml");
    std::fs::write(&cfg, toml).unwrap();
    let mut solive = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_solive"))
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .stderr(std::fs::File::create(sb.path().join("solive.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    eventually(30, "both hosts connected in meter mode", || async {
        let v = match reqwest::get(format!("{API}/v1/hosts")).await {
            Ok(r) => r.json::<Value>().await.map_err(|e| e.to_string())?,
            Err(e) => return Err(e.to_string()),
        };
        let ok = v.as_array().is_some_and(|a| {
            a.iter()
                .all(|h| h["connected"] == true && h["enforcement"]["mode"] == "meter")
        });
        if ok {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;

    // 1. Without a reservation: both flows, unlimited, share the link.
    let app = Iperf::start(vm, "10.197.0.2", 5201, 6, None);
    let mig = Iperf::start(hs, "10.197.0.2", 49152, 6, None);
    let (app0, mig0) = (app.finish(), mig.finish());
    let (app0, mig0) = (mean(&app0, 2.0, 6.0), mean(&mig0, 2.0, 6.0));
    eprintln!("without reservation: application {app0:.1} Mbit/s, migration {mig0:.1} Mbit/s");
    // How TCP splits the link between the two is not fixed (measured from
    // 48/48 to 23/73); what matters is that they contend for it. Together
    // they carried 82 to 95 Mbit/s on this machine; below half of C the
    // datapath, not the 100 Mbit/s shaper, would be the bottleneck and the
    // shares below would mean little.
    assert!(
        app0 + mig0 > 50.0,
        "the flows did not fill the link: {app0:.1} + {mig0:.1}"
    );
    assert!(
        app0 > 10.0,
        "without a reservation the application is not held back: {app0:.1}"
    );
    // What the link really delivers to TCP on this machine: iperf3 counts
    // goodput (a few percent under the 100 Mbit/s wire rate) and a busy
    // userspace datapath carries less still (measured 90.7 on a loaded CI
    // machine, 94 on an idle one). The shares below are judged against this,
    // not against the nominal C, so the test measures solive, not the CPU.
    let delivered = app0 + mig0;

    // 2. The application saturates the link; then the reservation; then the
    // migration (libvirt-like, capped at 80 Mbit/s).
    let app = Iperf::start(vm, "10.197.0.2", 5201, 40, None);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let body = json!({"source": "src", "destination": "dst", "urgency": 75, "threshold": 10});
    let created = Instant::now();
    let r = reqwest::Client::new()
        .post(format!("{API}/v1/reservations"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let res: Value = r.json().await.unwrap();
    let id = res["id"].as_u64().unwrap();
    let initial = eventually(5, "measurement 0", || async {
        let v = get(&format!("/v1/reservations/{id}")).await;
        v["reserve_pct"].as_f64().ok_or(v.to_string())
    })
    .await;
    assert!(
        (initial - 75.0).abs() < 0.01,
        "initial reservation {initial} (link saturated: max(avail, 75))"
    );
    let mig = Iperf::start(hs, "10.197.0.2", 49152, 12, Some("80M"));
    let mig_off = mig.started.duration_since(created).as_secs_f64();
    let mig_iv = mig.finish();
    let app_during = app.started.elapsed().as_secs_f64();
    let mig1 = mean(&mig_iv, 3.0, 12.0);
    let view = get(&format!("/v1/reservations/{id}")).await;
    eprintln!(
        "with reservation: migration {mig1:.1} Mbit/s; reservation {}",
        view["reserve_pct"]
    );
    let hist: Vec<String> = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{:.0}/{:.0}/{:.0}",
                p["avail_pct"].as_f64().unwrap(),
                p["mig_pct"].as_f64().unwrap(),
                p["reserve_pct"].as_f64().unwrap()
            )
        })
        .collect();
    eprintln!("history avail/mig/reserve: {}", hist.join(" "));
    // The reservation in force while the rates were measured (the
    // migration's seconds 2 to 12; a point holds until the next period).
    // Algorithm 1 moves it: when the migration uses less than it holds, it
    // releases the rest to the applications for a period, then takes it back.
    let app_share = app_share_pct(&view, mig_off + 2.0, mig_off + 12.0);
    let app_allowed = C_MBPS as f64 * app_share / 100.0;
    let app_iv = app.stop();
    let app1 = mean(&app_iv, app_during - 9.0, app_during);
    eprintln!(
        "application during the reservation: {app1:.1} Mbit/s, allowed {app_allowed:.1} (mean share {app_share:.1}%)"
    );
    // Enforcement: the application is held to what the reservation leaves it
    // (plus 10% for the meter's burst, a tenth of a second of the rate) ...
    assert!(
        app1 <= app_allowed * 1.1,
        "application got {app1:.1} Mbit/s under a {app_allowed:.1} Mbit/s share"
    );
    // ... and the migration gets the rest of what the link delivers on this
    // machine (iperf3 sends it at most 80 Mbit/s on the wire, ~76 goodput).
    let mig_due = (delivered - app_allowed).min(0.95 * 80.0);
    assert!(
        mig1 >= 0.9 * mig_due,
        "migration got {mig1:.1} Mbit/s, less than 90% of the {mig_due:.1} the reservation leaves it \
         on a link delivering {delivered:.1}"
    );
    // What a monitoring system scrapes shows the reservation too.
    let metrics = reqwest::get(format!("{API}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let reserved: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("solive_host_reserved_percent{host=\"src\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no reserved percent for src in\n{metrics}"));
    let now = get(&format!("/v1/reservations/{id}")).await;
    let recent: Vec<f64> = now["history"].as_array().unwrap()[..]
        .iter()
        .rev()
        .take(3)
        .map(|p| p["reserve_pct"].as_f64().unwrap())
        .collect();
    assert!(
        recent.iter().any(|r| (r - reserved).abs() < 0.01),
        "src reserved {reserved}% in /metrics, the reservation's last periods: {recent:?}"
    );

    // 3. The application stops: the migration alone leaves room, so the
    // reservation climbs to max_reserve (95) within three periods.
    let mig = Iperf::start(hs, "10.197.0.2", 49152, 30, Some("80M"));
    let t0 = Instant::now();
    let climbed = eventually(8, "reservation at max_reserve", || async {
        let v = get(&format!("/v1/reservations/{id}")).await;
        let r = v["reserve_pct"].as_f64().unwrap_or(0.0);
        if (r - 95.0).abs() < 0.01 {
            Ok(t0.elapsed())
        } else {
            Err(v["history"].to_string())
        }
    })
    .await;
    eprintln!(
        "reservation reached 95% {:.1} s after the application stopped",
        climbed.as_secs_f64()
    );
    assert!(
        climbed <= Duration::from_millis(3 * 1000 + 1500),
        "took {climbed:?}"
    );
    drop(mig.stop());

    // 4. The application runs again (throttled to 5 Mbit/s by the 95%
    // reservation); the controller is killed without any cleanup.
    let app = Iperf::start(vm, "10.197.0.2", 5201, 14, None);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let flows = sb.ofctl(&["dump-flows", "brs"]);
    assert!(
        flows.contains(&format!(
            "meter:{}",
            solive::controller::enforce::APP_OUT_METER
        )) && flows.contains("hard_timeout=3"),
        "{flows}"
    );
    let killed_at = app.started.elapsed().as_secs_f64();
    solive.0.kill().unwrap();
    let _ = solive.0.wait();
    let killed = Instant::now();
    let mut lapsed = [None, None];
    while killed.elapsed() < Duration::from_secs(8) && lapsed.iter().any(Option::is_none) {
        for (i, br) in ["brs", "brd"].iter().enumerate() {
            if lapsed[i].is_none() && !sb.ofctl(&["dump-flows", br]).contains("meter:") {
                lapsed[i] = Some(killed.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("throttling flows gone from brs/brd after {lapsed:?}");
    let app_iv = app.finish();
    let before = mean(&app_iv, killed_at - 2.0, killed_at);
    // "Back" is 85% of what the link delivered to two flows in step 1.
    let full = 0.85 * delivered;
    let back = app_iv
        .iter()
        .find(|(t, r)| *t > killed_at && *r > full)
        .map(|(t, _)| t - killed_at);
    eprintln!("application before the kill {before:.1} Mbit/s; above {full:.1} Mbit/s {back:?} s after it; {app_iv:?}");
    assert!(
        before < 10.0,
        "application was not throttled before the kill: {before:.1}"
    );
    // The throttling flows lapse with their hard timeout (3 periods = 3 s
    // after their last refresh, which was at most one period before the kill).
    for (br, t) in ["brs", "brd"].iter().zip(lapsed) {
        let t = t.unwrap_or_else(|| panic!("throttling flows still on {br} 8 s after the kill"));
        assert!(
            t <= Duration::from_millis(3500),
            "{br}: flows lapsed only {t:?} after the kill"
        );
    }
    // What solive controls ends above: the throttling flows are gone. The
    // datapath follows within a revalidation pass (~0.5 s), iperf3 reports in
    // 0.5 s intervals, and then it is TCP's turn: after a long stretch of
    // policer drops a flow can sit in retransmission backoff for seconds
    // (measured: back above 80 Mbit/s 3.5 to 6 s after the kill). Allow that,
    // but no more: a throttle that outlived the controller would fail this.
    let back = back.unwrap_or_else(|| panic!("application never got back above {full:.1} Mbit/s"));
    assert!(
        back <= 3.0 + 5.0,
        "application back above {full:.1} Mbit/s only {back:.1} s after the kill"
    );
}
