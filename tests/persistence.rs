//! `[state] dir`: reservations, evacuations and idempotent answers outlive
//! the controller. In-process with a fake cloud for the evacuation history
//! and the `Idempotency-Key` replay; and once against the real binary,
//! killed with SIGKILL, for reservations.

mod support;

use std::process::{Command, Stdio};

use serde_json::{json, Value};
use solive::config::Config;
use solive::hypervisor::fake::{FakeCloud, FakeVm};
use support::{eventually, KillOnDrop, Solive};
use tokio::net::TcpListener;

fn toml(state: &std::path::Path, api: &str) -> String {
    format!(
        "[controller]\nopenflow_listen = \"127.0.0.1:0\"\nperiod_ms = 200\n[api]\nlisten = \"{api}\"\n\
         [state]\ndir = \"{}\"\n",
        state.display()
    ) + &support::switchless_hosts(&["h1", "h2"], 100)
}

async fn start(cloud: &FakeCloud, state: &std::path::Path) -> Solive {
    let config = Config::parse(&toml(state, "127.0.0.1:0")).unwrap();
    let hvs = cloud.host_hypervisors(&["h1", "h2"]);
    Solive::start_with_hypervisors(config, TcpListener::bind("127.0.0.1:0").await.unwrap(), hvs)
        .await
}

async fn post(base: &str, path: &str, key: Option<&str>, body: &Value) -> (u16, bool, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(body);
    if let Some(k) = key {
        r = r.header("Idempotency-Key", k);
    }
    let r = r.send().await.unwrap();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    (r.status().as_u16(), replayed, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_idempotent_answers_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = FakeCloud::new();
    for (n, mib) in [("a", 4), ("b", 4)] {
        cloud.add_vm(
            "h1",
            n,
            FakeVm {
                memory_kib: 65536,
                non_zero_pages: mib * 256,
                dirty_pages_per_sec: 0.0,
                cpu_pct: 1.0,
            },
        );
    }
    let solive = start(&cloud, dir.path()).await;
    let base = solive.api.clone();
    let body = json!({"source": "h1", "destination": "h2", "urgency": 80});
    let (s, replayed, first) = post(&base, "/v1/evacuations", Some("evac-1"), &body).await;
    assert_eq!((s, replayed), (201, false), "{first}");
    // The retry gets the first answer, and nothing starts twice.
    let (s, replayed, again) = post(&base, "/v1/evacuations", Some("evac-1"), &body).await;
    assert_eq!((s, replayed), (201, true));
    assert_eq!(again, first);
    // The same key for another request is refused.
    let other = json!({"source": "h1", "destination": "h2", "urgency": 10});
    let (s, _, e) = post(&base, "/v1/evacuations", Some("evac-1"), &other).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (422, Some("unprocessable")),
        "{e}"
    );
    let id = first["id"].as_u64().unwrap();
    let done = eventually(30, "evacuation done", || async {
        let r = solive.get(&format!("/v1/evacuations/{id}")).await;
        if r["state"] == "done" {
            Ok(r)
        } else {
            Err(r.to_string())
        }
    })
    .await;
    assert_eq!(
        solive.get("/v1/evacuations").await["evacuations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A reservation made directly, then released: its record stays.
    let (s, _, r) = post(
        &base,
        "/v1/reservations",
        None,
        &json!({"source": "h1", "destination": "h2", "urgency": 50}),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    let rid = r["id"].as_u64().unwrap();
    let del = reqwest::Client::new()
        .delete(format!("{base}/v1/reservations/{rid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status().as_u16(), 204);
    solive.stop().await;

    let solive = start(&cloud, dir.path()).await;
    let base = solive.api.clone();
    assert_eq!(solive.get(&format!("/v1/evacuations/{id}")).await, done);
    let (s, replayed, again) = post(&base, "/v1/evacuations", Some("evac-1"), &body).await;
    assert_eq!((s, replayed), (201, true), "replayed after the restart too");
    assert_eq!(again, first);
    let r = solive.get(&format!("/v1/reservations/{rid}")).await;
    assert_eq!(r["state"], "released", "{r}");
    // Numbering continues.
    let (_, _, r2) = post(
        &base,
        "/v1/reservations",
        None,
        &json!({"source": "h1", "destination": "h2", "urgency": 50}),
    )
    .await;
    assert_eq!(r2["id"].as_u64(), Some(rid + 1), "{r2}");
    assert_eq!(
        solive.get(&format!("/v1/reservations/{}", rid + 1)).await["state"],
        "active"
    );
    solive.stop().await;
}

/// The real binary, killed: what was active comes back as interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_killed_leaves_interrupted_reservations() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let api = format!("127.0.0.1:{port}");
    let base = format!("http://{api}");
    let cfg = dir.path().join("solive.toml");
    std::fs::write(&cfg, toml(&dir.path().join("state"), &api)).unwrap();
    let serve = || {
        KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_solive"))
                .args(["serve", "--config", cfg.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut proc = serve();
    let health = || async {
        reqwest::get(format!("{base}/v1/health"))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    };
    eventually(20, "solive up", health).await;
    let (s, _, r) = post(
        &base,
        "/v1/reservations",
        None,
        &json!({"source": "h1", "destination": "h2", "urgency": 60}),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    let rid = r["id"].as_u64().unwrap();
    // Let it reach the disk (writes are queued to the store's thread).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    proc.0.kill().unwrap();
    proc.0.wait().unwrap();

    let _proc = serve();
    eventually(20, "solive up again", health).await;
    let r: Value = reqwest::get(format!("{base}/v1/reservations/{rid}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["state"], "interrupted", "{r}");
    assert_eq!(r["urgency"], 60.0);
    let active: Value = reqwest::get(format!("{base}/v1/reservations"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(active, json!([]));
}
