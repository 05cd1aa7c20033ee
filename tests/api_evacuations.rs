//! `/v1/evacuations` over HTTP, in-process: a real controller and API, the
//! hosts' hypervisors from the fake cloud (the real libvirt path is
//! `tests/testbed.rs`). Every error a cloud manager can cause is a 4xx with a
//! JSON body naming the field, and changes nothing.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use solive::config::Config;
use solive::hypervisor::fake::{FakeCloud, FakeVm};
use support::{eventually, Solive};
use tokio::net::TcpListener;

fn vm(non_zero_mib: u64) -> FakeVm {
    FakeVm {
        memory_kib: 64 * 1024,
        non_zero_pages: non_zero_mib * 256,
        dirty_pages_per_sec: 0.0,
        cpu_pct: 1.0,
    }
}

/// Hosts h1, h2 and h3 at 100 Mbit/s, no switches.
fn config() -> Config {
    support::switchless_config(&["h1", "h2", "h3"])
}

async fn start(cloud: &FakeCloud) -> Solive {
    let config = config();
    // h3 has no hypervisor: it cannot take part in evacuations.
    let hvs = cloud.host_hypervisors(&["h1", "h2"]);
    Solive::start_with_hypervisors(config, TcpListener::bind("127.0.0.1:0").await.unwrap(), hvs)
        .await
}

async fn post(base: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/evacuations"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn call(method: reqwest::Method, url: String) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, url)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evacuation_over_rest() {
    let cloud = FakeCloud::new();
    cloud.add_vm("h1", "a", vm(4));
    cloud.add_vm("h1", "b", vm(4));
    let solive = start(&cloud).await;
    let base = solive.api.clone();

    // Errors: status, code and the field named; nothing created.
    let bad = [
        (r#"{"source":"h1"}"#, 400, "destination"),
        (
            r#"{"source":"h1","destination":"h2","speed":1}"#,
            400,
            "speed",
        ),
        (
            r#"{"source":"h1","destination":"h2","urgency":"high"}"#,
            400,
            "urgency",
        ),
        (
            r#"{"source":"h1","destination":"h2","urgency":150}"#,
            400,
            "urgency",
        ),
        (r#"{"source":"h1","destination":"h1"}"#, 400, "destination"),
        (
            r#"{"source":"h1","destination":"h3"}"#,
            400,
            "unknown host \"h3\"",
        ),
        (
            r#"{"source":"h1","destination":"h2","vms":["zz"]}"#,
            400,
            "\"zz\" is not a VM on h1",
        ),
        (
            r#"{"source":"h2","destination":"h1"}"#,
            400,
            "h2 has no VMs to evacuate",
        ),
        (
            r#"{"source":"h1","destination":"h2","mode":"fast"}"#,
            400,
            "mode",
        ),
        (
            r#"{"source":"h1","destination":"h2","max_parallel":99}"#,
            400,
            "max_parallel",
        ),
        (
            r#"{"source":"h1","destination":"h2","concurrency":0}"#,
            400,
            "concurrency: must be \"auto\" or from 1 to 16, not 0",
        ),
        (
            r#"{"source":"h1","destination":"h2","concurrency":"lots"}"#,
            400,
            "concurrency",
        ),
        (
            r#"{"source":"h1","destination":"h2","parallel_connections":99}"#,
            400,
            "parallel_connections: must be from 1 to 16, not 99",
        ),
        ("not json", 400, ""),
    ];
    for (body, status, needle) in bad {
        let (s, v) = post(&base, body).await;
        assert_eq!(s, status, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
        assert_eq!(v["error"]["code"], "bad_request");
    }
    assert_eq!(
        solive.get("/v1/evacuations").await["evacuations"],
        json!([])
    );
    assert_eq!(
        call(reqwest::Method::GET, format!("{base}/v1/evacuations/7"))
            .await
            .0,
        404
    );
    assert_eq!(
        call(reqwest::Method::GET, format!("{base}/v1/evacuations/x"))
            .await
            .0,
        400
    );
    assert_eq!(
        call(
            reqwest::Method::GET,
            format!("{base}/v1/evacuations?limit=0")
        )
        .await
        .0,
        400
    );

    let (s, v) = post(&base, r#"{"source":"h1","destination":"h2","urgency":80}"#).await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_u64().unwrap();
    // A second evacuation of the same source while it runs: 409.
    let (s, v) = post(&base, r#"{"source":"h1","destination":"h2"}"#).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    let rec = eventually(30, "evacuation done", || async {
        let r = solive.get(&format!("/v1/evacuations/{id}")).await;
        if r["state"] == "done" {
            Ok(r)
        } else {
            Err(r.to_string())
        }
    })
    .await;
    assert_eq!(rec["vms"].as_array().unwrap().len(), 2);
    assert_eq!(rec["plan"]["order"], rec["order"]);
    for v in rec["vms"].as_array().unwrap() {
        assert_eq!(v["state"], "done");
        assert!(v["duration_ms"].as_u64().unwrap() > 0);
        assert!(v["bytes"].as_u64().unwrap() >= 4 << 20);
    }
    assert!(rec["total_migration_ms"].as_u64().unwrap() > 0);
    assert_eq!(rec["eviction_ms"], rec["total_migration_ms"]);
    assert_eq!(cloud.vms_on("h2"), vec!["a", "b"]);
    assert_eq!(solive.get("/v1/reservations").await, json!([]));
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let labels = format!("{{id=\"{id}\",source=\"h1\",destination=\"h2\"}}");
    for line in [
        format!("solive_evacuation_vms{labels} 2"),
        format!("solive_evacuation_vms_done{labels} 2"),
        format!("solive_evacuation_running{labels} 0"),
    ] {
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
    // Finished: cancelling is a conflict.
    let (s, _) = call(
        reqwest::Method::DELETE,
        format!("{base}/v1/evacuations/{id}"),
    )
    .await;
    assert_eq!(s, 409);

    // Back, slowly, and cancelled half-way: the VM stays on h2.
    cloud.add_vm("h2", "big", vm(400));
    let (s, v) = post(
        &base,
        r#"{"source":"h2","destination":"h1","vms":["big"],"urgency":10}"#,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id2 = v["id"].as_u64().unwrap();
    eventually(20, "migrating", || async {
        let r = solive.get(&format!("/v1/evacuations/{id2}")).await;
        match r["vms"][0]["progress"]["data_processed"].as_u64() {
            Some(b) if b > 0 => Ok(()),
            _ => Err(r.to_string()),
        }
    })
    .await;
    let (s, v) = call(
        reqwest::Method::DELETE,
        format!("{base}/v1/evacuations/{id2}"),
    )
    .await;
    assert_eq!((s, v["state"].as_str()), (202, Some("cancelling")), "{v}");
    let rec = eventually(20, "cancelled", || async {
        let r = solive.get(&format!("/v1/evacuations/{id2}")).await;
        if r["state"] == "cancelled" {
            Ok(r)
        } else {
            Err(r.to_string())
        }
    })
    .await;
    assert_eq!(rec["vms"][0]["state"], "cancelled");
    assert!(cloud.vms_on("h2").contains(&"big".to_string()));
    assert_eq!(solive.get("/v1/reservations").await, json!([]));

    // Pagination.
    let page = solive.get("/v1/evacuations?limit=1").await;
    assert_eq!(page["evacuations"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_after"], json!(id));
    let page = solive
        .get(&format!("/v1/evacuations?limit=1&after={id}"))
        .await;
    assert_eq!(page["evacuations"][0]["id"], json!(id2));
    assert_eq!(page["next_after"], Value::Null);
    tokio::time::sleep(Duration::from_millis(10)).await;
    solive.stop().await;
}

/// Several destinations over REST: each VM placed where there is room (the
/// record says where), a request naming `sources` answered with the list of
/// evacuations, and a site without room a 409 naming the destinations,
/// before anything moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_evacuation_over_rest() {
    let cloud = FakeCloud::new();
    for n in ["a", "b", "c"] {
        cloud.add_vm("h1", n, vm(4));
    }
    let config = config();
    // Room for one 64 MiB guest on each destination.
    let mut hvs = cloud.host_hypervisors(&["h1", "h2", "h3"]);
    for h in ["h2", "h3"] {
        hvs.get_mut(h).unwrap().room.memory_mib = Some(64);
    }
    let solive = Solive::start_with_hypervisors(
        config,
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        hvs,
    )
    .await;
    let base = solive.api.clone();
    let (status, body) = post(&base, r#"{"sources":["h1"],"destinations":["h2","h3"]}"#).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("h2 has 0 MiB"),
        "{body}"
    );
    assert_eq!(cloud.vms_on("h1").len(), 3);
    let (status, body) = post(
        &base,
        r#"{"sources":["h1"],"destinations":["h2","h3"],"vms":["a","b"]}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let recs = body["evacuations"].as_array().unwrap();
    assert_eq!(recs.len(), 1);
    let id = recs[0]["id"].as_u64().unwrap();
    let dests: Vec<&str> = recs[0]["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["destination"].as_str().unwrap())
        .collect();
    assert_eq!(dests.len(), 2);
    assert_ne!(dests[0], dests[1], "one guest each: {dests:?}");
    eventually(30, "the evacuation done", || {
        let url = format!("{base}/v1/evacuations/{id}");
        async move {
            let (_, r) = call(reqwest::Method::GET, url).await;
            if r["state"] == "done" {
                Ok(())
            } else {
                Err(format!("{}", r["state"]))
            }
        }
    })
    .await;
    assert_eq!(cloud.vms_on("h2").len(), 1);
    assert_eq!(cloud.vms_on("h3").len(), 1);
    assert_eq!(cloud.vms_on("h1"), vec!["c"]);
    // The list shows both destinations.
    let (_, list) = call(reqwest::Method::GET, format!("{base}/v1/evacuations")).await;
    let mut shown: Vec<&str> = list["evacuations"][0]["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    shown.sort();
    assert_eq!(shown, ["h2", "h3"], "{list}");
}
