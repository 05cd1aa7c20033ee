//! The REST API in-process, without a switch: JSON shapes, unknown resources,
//! and a host whose ovsdb-server cannot be reached.

mod support;

use solive::config::Config;
use support::{config_toml, Solive};
use tokio::net::TcpListener;

#[tokio::test]
async fn health_hosts_and_errors() {
    let config = Config::parse(&config_toml(
        &[
            (
                "h1",
                "unix:/nonexistent/solive-test.sock",
                "br0",
                "up0",
                100,
            ),
            ("h2", "tcp:127.0.0.1:1", "br1", "up1", 40),
        ],
        100,
    ))
    .unwrap();
    let solive = Solive::start_with(config, TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
    let base = solive.api.clone();

    let health: serde_json::Value = reqwest::get(format!("{base}/v1/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");

    let hosts: serde_json::Value =
        support::eventually(10, "both hosts report an error", || async {
            let v: serde_json::Value = reqwest::get(format!("{base}/v1/hosts"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let all = v.as_array().unwrap().iter().all(|h| h["error"].is_string());
            if all {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        })
        .await;
    let hosts = hosts.as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    for h in hosts {
        assert_eq!(h["connected"], false);
        assert_eq!(h["ovsdb_connected"], false);
        assert_eq!(h["switch_connected"], false);
        assert!(h["ports"].as_array().unwrap().is_empty());
    }
    assert_eq!(hosts[1]["capacity_mbps"], 40);

    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("openmetrics"));
    let text = metrics.text().await.unwrap();
    for needle in [
        "solive_host_connected{host=\"h1\"} 0",
        "solive_host_reserved_percent{host=\"h2\"} 0",
        "solive_switches_connected 0",
        "solive_reservations 0",
        "# EOF",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }

    for path in ["/v1/hosts/nope", "/v1/nothing", "/"] {
        let r = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "not_found", "{path}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 5);
    }

    solive.stop().await;
    // After shutdown the API is gone.
    assert!(reqwest::get(format!("{base}/v1/health")).await.is_err());
}

#[tokio::test]
async fn reservations_validate_and_round_trip() {
    let mut toml = config_toml(
        &[
            ("h1", "unix:/nonexistent/a.sock", "br0", "up0", 100),
            ("h2", "unix:/nonexistent/b.sock", "br1", "up1", 100),
            ("h3", "unix:/nonexistent/c.sock", "br2", "up2", 100),
        ],
        100,
    );
    // h1 and h2 have fabric addresses; h3 has none.
    toml = toml.replacen(
        "capacity_mbps = 100\n",
        "capacity_mbps = 100\naddress = \"10.0.0.1\"\n",
        1,
    );
    toml = toml.replacen(
        "up1\"\ncapacity_mbps = 100\n",
        "up1\"\ncapacity_mbps = 100\naddress = \"10.0.0.2\"\n",
        1,
    );
    let config = Config::parse(&toml).unwrap();
    let solive = Solive::start_with(config, TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
    let base = format!("{}/v1/reservations", solive.api);
    let http = reqwest::Client::new();
    let good = serde_json::json!({"source": "h1", "destination": "h2", "urgency": 75});

    let bad = [
        (
            serde_json::json!({"source": "h1", "destination": "h2", "urgency": 75, "colour": 1}),
            "unknown field",
        ),
        (
            serde_json::json!({"source": "h1", "destination": "h2", "urgency": "high"}),
            "urgency",
        ),
        (
            serde_json::json!({"source": "h1", "destination": "h2", "urgency": 150}),
            "urgency",
        ),
        (
            serde_json::json!({"source": "h1", "destination": "h2", "urgency": 75, "threshold": -3}),
            "threshold",
        ),
        (
            serde_json::json!({"source": "nope", "destination": "h2", "urgency": 75}),
            "source: unknown host",
        ),
        (
            serde_json::json!({"source": "h1", "destination": "h1", "urgency": 75}),
            "destination",
        ),
        (
            serde_json::json!({"source": "h1", "destination": "h3", "urgency": 75}),
            "address",
        ),
        (
            serde_json::json!({"destination": "h2", "urgency": 75}),
            "source",
        ),
    ];
    for (body, needle) in bad {
        let r = http.post(&base).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: serde_json::Value = r.json().await.unwrap();
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(v["error"]["code"], "bad_request", "{v}");
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    // The order is stateless and needs no host.
    let plan_url = base.replace("/v1/reservations", "/v1/plan");
    let body = serde_json::json!({"capacity_bps": 100, "mode": "postcopy", "vms": [
        {"name": "in", "non_zero_pages": 5, "dirty_pages_per_sec": 0, "tx_bps": 0, "rx_bps": 50},
        {"name": "out", "non_zero_pages": 5, "dirty_pages_per_sec": 0, "tx_bps": 50, "rx_bps": 0}]});
    let v: serde_json::Value = http
        .post(&plan_url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["order"], serde_json::json!(["out", "in"]), "{v}");
    for bad in [
        serde_json::json!({"capacity_bps": 100, "vms": []}),
        serde_json::json!({"capacity_bps": 100, "vms": [], "extra": 1}),
        serde_json::json!({"capacity_bps": 100, "vms": [], "mode": "sideways"}),
    ] {
        let r = http.post(&plan_url).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    // The forecast comes with every plan; "predict" searches orders, and a
    // deadline names who will not make it.
    let mut body = body.clone();
    body["capacity_bps"] = serde_json::json!(100e6);
    body["mode"] = serde_json::json!("precopy");
    body["order"] = serde_json::json!("predict");
    body["deadline_s"] = serde_json::json!(0.5);
    let v: serde_json::Value = http
        .post(&plan_url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let p = &v["prediction"];
    assert_eq!(p["schedule"]["vms"].as_array().unwrap().len(), 2, "{v}");
    assert!(
        p["schedule"]["total_migration_s"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert_eq!(p["search"]["method"], "exhaustive", "{v}");
    assert_eq!(p["deadline"]["at_risk"].as_array().unwrap().len(), 2, "{v}");
    for (field, value) in [
        ("deadline_s", serde_json::json!(-1)),
        ("deadline_s", serde_json::json!("soon")),
        ("concurrency", serde_json::json!(0)),
        ("order", serde_json::json!("fastest")),
    ] {
        let mut bad = body.clone();
        bad[field] = value;
        let r = http.post(&plan_url).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{e}"
        );
    }

    let r = http
        .post(&base)
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Nothing was created by the bad requests.
    let list: serde_json::Value = http.get(&base).send().await.unwrap().json().await.unwrap();
    assert_eq!(list, serde_json::json!([]));

    let r = http.post(&base).json(&good).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    let id = v["id"].as_u64().unwrap();
    // The hosts are not connected: nothing is measured yet.
    assert_eq!(v["reserve_pct"], serde_json::Value::Null);
    assert_eq!(v["params"]["max_reserve"], 95.0);
    assert_eq!(v["threshold"], 10.0);
    let one: serde_json::Value = http
        .get(format!("{base}/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["source"], "h1");
    let list: serde_json::Value = http.get(&base).send().await.unwrap().json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    // Pages: a second reservation, one per page.
    let r = http.post(&base).json(&good).send().await.unwrap();
    let id2 = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_u64()
        .unwrap();
    let page = http.get(format!("{base}?limit=1")).send().await.unwrap();
    assert_eq!(page.headers()["x-next-after"], id.to_string().as_str());
    let page: serde_json::Value = page.json().await.unwrap();
    assert_eq!(page.as_array().unwrap().len(), 1);
    let last = http
        .get(format!("{base}?limit=1&after={id}"))
        .send()
        .await
        .unwrap();
    assert!(last.headers().get("x-next-after").is_none());
    assert_eq!(
        last.json::<serde_json::Value>().await.unwrap()[0]["id"],
        id2
    );
    let bad = http.get(format!("{base}?limit=0")).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        http.delete(format!("{base}/{id2}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );

    assert_eq!(
        http.delete(format!("{base}/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        http.delete(format!("{base}/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // A released reservation is no longer listed, but its record stays.
    let released: serde_json::Value = http
        .get(format!("{base}/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(released["state"], "released", "{released}");
    let listed: serde_json::Value = http
        .get(base.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed.as_array().unwrap().iter().all(|r| r["id"] != id));
    let r = http.get(format!("{base}/abc")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reservation id"),
        "{v}"
    );

    solive.stop().await;
}

// Multi-threaded: the test blocks on the CLI process while the server, in the
// same runtime, answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_guard_everything_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "# clients\nmanager:m-0123456789abcdef\nviewer:v-0123456789abcdef:ro\n",
    )
    .unwrap();
    let mut config = Config::parse(&config_toml(
        &[("h1", "unix:/nonexistent/a.sock", "br0", "up0", 100)],
        100,
    ))
    .unwrap();
    config.api.tokens_file = Some(tokens);
    let solive = Solive::start_with(config, TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", solive.api);

    // Health is open.
    assert_eq!(
        http.get(url("/v1/health")).send().await.unwrap().status(),
        200
    );
    // Missing, malformed and wrong tokens: 401 with a JSON error and a challenge.
    for auth in [
        None,
        Some("m-0123456789abcdef"),
        Some("Bearer nope"),
        Some("Bearer m-0123456789abcdeX"),
    ] {
        let mut req = http.get(url("/v1/hosts"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unauthorized");
    }
    // Both tokens may read.
    for t in ["m-0123456789abcdef", "v-0123456789abcdef"] {
        let r = http
            .get(url("/v1/hosts"))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{t}");
    }
    // Only the full token may write; the read-only one gets 403 and changes nothing.
    let body = serde_json::json!({"capacity_bps": 100, "vms": [
        {"name": "a", "non_zero_pages": 1, "dirty_pages_per_sec": 0, "tx_bps": 0, "rx_bps": 0}]});
    let r = http
        .post(url("/v1/plan"))
        .bearer_auth("v-0123456789abcdef")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("viewer"),
        "{v}"
    );
    let r = http
        .delete(url("/v1/reservations/1"))
        .bearer_auth("v-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A bad id is the API's JSON error, not the router's plain text.
    let r = http
        .delete(url("/v1/reservations/abc"))
        .bearer_auth("m-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reservation"),
        "{v}"
    );
    // The operator CLI against the same server: with a token it prints the
    // table; without, the server's message, not a stack.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_solive"))
            .args(args)
            .args(["--api", &solive.api])
            .env_remove("SOLIVE_TOKEN")
            .output()
            .unwrap()
    };
    let out = cli(&["hosts", "--token", "v-0123456789abcdef"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HOST") && text.contains("h1"), "{text}");
    let out = cli(&["status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("solive answered 401") && err.contains("Bearer"),
        "{err}"
    );
    let out = cli(&["reservations", "--token", "m-0123456789abcdef"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ID"));
    let r = http
        .post(url("/v1/plan"))
        .bearer_auth("m-0123456789abcdef")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    solive.stop().await;
}

#[test]
fn open_api_must_stay_on_loopback_and_tokens_must_load() {
    let toml = config_toml(&[("h1", "unix:/x", "br0", "up0", 100)], 100);
    let public = toml.replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:8080\"");
    let e = Config::parse(&public).unwrap_err().to_string();
    assert!(e.contains("tokens_file") && e.contains("loopback"), "{e}");
    let with_tokens = public.replace("[api]\n", "[api]\ntokens_file = \"/etc/solive/tokens\"\n");
    // Tokens off loopback only over HTTPS: in clear anyone on the path
    // could replay them.
    let e = Config::parse(&with_tokens).unwrap_err().to_string();
    assert!(e.contains("in clear") && e.contains("tls_cert"), "{e}");
    let with_tls = with_tokens.replace(
        "[api]\n",
        "[api]\ntls_cert = \"/etc/solive/cert.pem\"\ntls_key = \"/etc/solive/key.pem\"\n",
    );
    assert!(Config::parse(&with_tls).is_ok());
    let e =
        solive::api::auth::Tokens::load(std::path::Path::new("/nonexistent/tokens")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/tokens"), "{e}");
}

#[test]
fn cli_reports_an_unreachable_api() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_solive"))
        .args(["status", "--api", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach solive at http://127.0.0.1:1"),
        "{err}"
    );
}

/// The OpenAPI document and the router agree: the same paths; every
/// documented operation is routed (not 404/405); every undocumented method of
/// a documented path is 405.
#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let doc: serde_json::Value = serde_json::from_str(solive::api::OPENAPI).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    let mut routed = solive::api::paths();
    documented.sort();
    routed.sort();
    assert_eq!(
        documented, routed,
        "documented paths differ from routed ones"
    );

    let config = Config::parse(&config_toml(
        &[("h1", "unix:/nonexistent/a.sock", "br0", "up0", 100)],
        100,
    ))
    .unwrap();
    let solive = Solive::start_with(config, TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
    let served: serde_json::Value = reqwest::get(format!("{}/v1/openapi.json", solive.api))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, doc);
    let http = reqwest::Client::new();
    for (path, item) in paths {
        let concrete = path.replace("{name}", "h1").replace("{id}", "1");
        for method in ["get", "post", "put", "patch", "delete"] {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = http
                .request(m, format!("{}{concrete}", solive.api))
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            if item.get(method).is_some() {
                assert_ne!(status, 405, "{method} {path} is documented but not routed");
                if !path.contains('{') {
                    assert_ne!(status, 404, "{method} {path} is documented but not routed");
                }
                for code in item[method]["responses"].as_object().unwrap().keys() {
                    assert!(code.len() == 3, "{method} {path}: response {code}");
                }
            } else {
                assert_eq!(status, 405, "{method} {path} answers but is not documented");
            }
        }
    }
    solive.stop().await;
}

/// No client holds the API without a bound: headers that never finish are
/// cut off, and connections beyond the limit are closed at once while the
/// API keeps answering the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_bounded_and_lock_no_one_out() {
    use solive::api::tls::{HEADER_TIMEOUT, MAX_CONNECTIONS};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const IDLE: usize = 10_000;
    let nofile = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse::<usize>().ok())
        .unwrap();
    assert!(
        nofile >= IDLE + 2 * MAX_CONNECTIONS + 512,
        "this test opens {IDLE} sockets: run it with ulimit -n >= {} (tests/run raises it)",
        IDLE + 2 * MAX_CONNECTIONS + 512
    );
    let config = Config::parse(&config_toml(
        &[(
            "h1",
            "unix:/nonexistent/solive-test.sock",
            "br0",
            "up0",
            100,
        )],
        100,
    ))
    .unwrap();
    let solive = Solive::start_with(config, TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
    let addr = solive.api.trim_start_matches("http://").to_string();
    let health = || async {
        let h: serde_json::Value = reqwest::get(format!("{}/v1/health", solive.api))
            .await
            .expect("the health check is answered")
            .json()
            .await
            .unwrap();
        assert_eq!(h["status"], "ok");
    };
    // Every slot taken by a client that starts a request and stops.
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    // A health check still gets in: the longest-idle connection gives way.
    health().await;
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), held[0].read(&mut buf))
        .await
        .expect("the oldest slow client was closed to make room")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    drop(held);
    // A flood of idle sockets: each newcomer pushes out the longest idle, the
    // server holds at most MAX_CONNECTIONS of them, and a health check
    // answers in the middle of it.
    let started = std::time::Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
        if i == IDLE / 2 {
            health().await;
        }
    }
    eprintln!(
        "{IDLE} idle connections opened in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    health().await;
    // Count those the server has closed (EOF at once) against those it holds.
    let reads = idle.iter_mut().map(|s| async move {
        let mut b = [0u8; 16];
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(3), s.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    });
    let closed = futures::future::join_all(reads)
        .await
        .into_iter()
        .filter(|c| *c)
        .count();
    eprintln!(
        "of {IDLE} idle connections the server closed {closed}, held {}",
        IDLE - closed
    );
    assert!(
        IDLE - closed <= MAX_CONNECTIONS,
        "the server held {} idle connections, more than {MAX_CONNECTIONS}",
        IDLE - closed
    );
    drop(idle);
    // Unfinished headers are cut off after HEADER_TIMEOUT even with room.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let _ = tokio::time::timeout(HEADER_TIMEOUT * 2, slow.read(&mut buf))
        .await
        .expect("a request whose headers never finish was cut off");
    eprintln!(
        "unfinished headers cut off after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    health().await;
    solive.stop().await;
}
