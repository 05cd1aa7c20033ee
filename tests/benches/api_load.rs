//! The REST API under read load while an evacuation runs.
//!
//! solive runs in-process (a real controller and API; the hosts' hypervisors
//! from the fake cloud, the hosts' OVSDB unreachable so nothing needs root)
//! with four VMs on h1 that migrate in real tokio time at the lowest cap
//! (1 MiB/s, 48 MiB each), so the evacuation runs for the whole measurement.
//! Then 200 concurrent clients share one HTTP client and poll the GET
//! endpoints an operator's dashboard or a cloud manager would, round-robin:
//! the evacuation, the list of evacuations, hosts, reservations, `/metrics`
//! and health. Prints requests, req/s, latency percentiles and errors (any
//! transport error or non-2xx), overall and per endpoint. No assertion on
//! speed: the machine is shared (README "Benchmarks").
//!
//! The clients and solive share one tokio runtime and the machine's cores,
//! so the figures are for both sides together, as on a controller host
//! whose operator tools run beside it.
//!
//!     cargo bench --bench api_load            # 30 s
//!     SOLIVE_LOAD_SECS=5 cargo bench --bench api_load

use std::sync::Arc;
use std::time::{Duration, Instant};

use solive::hypervisor::fake::{FakeCloud, FakeVm};

const CLIENTS: usize = 200;
const DEFAULT_SECS: u64 = 30;
const VMS: usize = 4;
/// Non-zero memory per VM, MiB: at the 1 MiB/s floor of the cap, ~48 s each.
const VM_MIB: u64 = 48;
/// Sequential requests per endpoint before the load.
const QUIET_ROUNDS: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} us")
    }
}

/// What one client saw: latencies of successful requests per endpoint, and
/// its errors.
#[derive(Default)]
struct Seen {
    latencies: Vec<Vec<Duration>>,
    errors: Vec<Vec<String>>,
}

async fn poll_until(
    http: reqwest::Client,
    urls: Arc<Vec<String>>,
    first: usize,
    until: Instant,
) -> Seen {
    let mut seen = Seen {
        latencies: vec![Vec::new(); urls.len()],
        errors: vec![Vec::new(); urls.len()],
    };
    // Clients start on different endpoints, so every endpoint is under load
    // at every moment, not in waves.
    let mut k = first;
    while Instant::now() < until {
        let e = k % urls.len();
        k += 1;
        let t0 = Instant::now();
        let r = match http.get(&urls[e]).send().await {
            Ok(r) => {
                let status = r.status();
                // The whole body counts: a dashboard reads it.
                match r.bytes().await {
                    Ok(_) if status.is_success() => Ok(()),
                    Ok(_) => Err(format!("status {status}")),
                    Err(err) => Err(format!("body: {err}")),
                }
            }
            Err(err) => Err(format!("send: {err}")),
        };
        match r {
            Ok(()) => seen.latencies[e].push(t0.elapsed()),
            Err(msg) => seen.errors[e].push(msg),
        }
    }
    seen
}

fn main() {
    let secs = match std::env::var("SOLIVE_LOAD_SECS") {
        Ok(s) => match s.parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("SOLIVE_LOAD_SECS must be a whole number of seconds above 0, not {s:?}");
                std::process::exit(2);
            }
        },
        Err(_) => DEFAULT_SECS,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run(secs));
}

async fn run(secs: u64) {
    let cloud = FakeCloud::new();
    for i in 0..VMS {
        cloud.add_vm(
            "h1",
            &format!("vm{i}"),
            FakeVm {
                memory_kib: 2 * VM_MIB * 1024,
                non_zero_pages: VM_MIB * 256,
                dirty_pages_per_sec: 50.0,
                cpu_pct: 5.0,
            },
        );
    }
    // 10 Mbit/s uplinks: urgency 50 gives 5 Mbit/s, below 1 MiB/s, so the
    // cap sits at libvirt's 1 MiB/s floor. The OVSDB sockets do not exist:
    // the hosts show disconnected and are retried with backoff meanwhile,
    // which /v1/hosts then reports (a realistic error path to serve).
    let mut toml = String::from(
        "[controller]\nopenflow_listen = \"127.0.0.1:0\"\nperiod_ms = 1000\n[api]\nlisten = \"127.0.0.1:0\"\n",
    );
    for (i, h) in ["h1", "h2"].iter().enumerate() {
        toml += &format!(
            "[[hosts]]\nname = \"{h}\"\novsdb = \"unix:/nonexistent/{h}.sock\"\nbridge = \"br{i}\"\n\
             uplink = \"up{i}\"\ncapacity_mbps = 10\naddress = \"10.0.0.{}\"\n",
            i + 1
        );
    }
    let mut config = solive::config::Config::parse(&toml).unwrap();
    let hvs = cloud.host_hypervisors(&["h1", "h2"]);
    let of = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    config.controller.openflow_listen = of.local_addr().unwrap();
    let base = format!("http://{}", api.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = solive::server::start_with(config, hvs, of, api, async {
        let _ = stop_rx.await;
    })
    .unwrap();

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = http
        .post(format!("{base}/v1/evacuations"))
        .json(&serde_json::json!({"source": "h1", "destination": "h2", "urgency": 50}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_u64()
        .unwrap();
    // Load from the moment a VM migrates: records then change every period.
    let evac_url = format!("{base}/v1/evacuations/{id}");
    let t0 = Instant::now();
    loop {
        let r: serde_json::Value = http
            .get(&evac_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["state"] == "migrating" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the evacuation did not start migrating: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let paths = [
        format!("/v1/evacuations/{id}"),
        "/v1/evacuations".to_string(),
        "/v1/hosts".to_string(),
        "/v1/reservations".to_string(),
        "/metrics".to_string(),
        "/v1/health".to_string(),
    ];
    let urls = Arc::new(
        paths
            .iter()
            .map(|p| format!("{base}{p}"))
            .collect::<Vec<_>>(),
    );

    // Each endpoint's own cost first, one request at a time: under load the
    // latency is mostly queueing behind the other clients, which hides it.
    let mut quiet = Vec::new();
    for url in urls.iter() {
        let mut l = Vec::with_capacity(QUIET_ROUNDS);
        for _ in 0..QUIET_ROUNDS {
            let t0 = Instant::now();
            let body = http.get(url).send().await.unwrap().bytes().await.unwrap();
            l.push((t0.elapsed(), body.len()));
        }
        l.sort();
        quiet.push(l);
    }
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(poll_until(http.clone(), urls.clone(), i, until)))
        .collect();
    let mut all = Seen {
        latencies: vec![Vec::new(); paths.len()],
        errors: vec![Vec::new(); paths.len()],
    };
    for t in tasks {
        let s = t.await.unwrap();
        for e in 0..paths.len() {
            all.latencies[e].extend(&s.latencies[e]);
            all.errors[e].extend(s.errors[e].iter().cloned());
        }
    }
    let elapsed = start.elapsed().as_secs_f64();

    let rec: serde_json::Value = http
        .get(&evac_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let migrating = rec["vms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["state"] == "migrating")
        .count();
    let done = rec["vms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["state"] == "done")
        .count();

    let mut every: Vec<Duration> = all.latencies.iter().flatten().copied().collect();
    every.sort();
    let errors: usize = all.errors.iter().map(Vec::len).sum();
    let total = every.len() + errors;
    println!(
        "API under load: {CLIENTS} clients for {elapsed:.1} s during evacuation {id} ({} at the end: {done}/{VMS} VMs done, {migrating} migrating)",
        rec["state"].as_str().unwrap_or("?")
    );
    println!(
        "all GETs: {total} requests, {:.0} req/s, p50 {}  p90 {}  p99 {}  max {}, {errors} errors",
        total as f64 / elapsed,
        fmt(percentile(&every, 0.50)),
        fmt(percentile(&every, 0.90)),
        fmt(percentile(&every, 0.99)),
        fmt(every.last().copied().unwrap_or_default()),
    );
    for (e, path) in paths.iter().enumerate() {
        let l = &mut all.latencies[e];
        l.sort();
        let q: Vec<Duration> = quiet[e].iter().map(|x| x.0).collect();
        println!(
            "  {path:<22} alone: p50 {:>9} ({} B)  under load: {:>8} ok  p50 {:>9}  p99 {:>9}  max {:>9}  {} errors{}",
            fmt(percentile(&q, 0.50)),
            quiet[e].last().map_or(0, |x| x.1),
            l.len(),
            fmt(percentile(l, 0.50)),
            fmt(percentile(l, 0.99)),
            fmt(l.last().copied().unwrap_or_default()),
            all.errors[e].len(),
            all.errors[e]
                .first()
                .map(|m| format!(" (first: {m})"))
                .unwrap_or_default(),
        );
    }

    // A clean stop: the running migration is aborted, its reservation goes.
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), running.task).await;
}
