//! The REST API in-process, without a switch: JSON shapes, unknown resources,
//! and a host whose ovsdb-server cannot be reached.

mod support;

use solive::config::Config;
use support::config_toml;
use tokio::net::TcpListener;

#[tokio::test]
async fn health_hosts_and_errors() {
    let mut config = Config::parse(&config_toml(
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
    let of = TcpListener::bind("127.0.0.1:0").await.unwrap();
    config.controller.openflow_listen = of.local_addr().unwrap();
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", api.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = solive::server::start(config, of, api, async {
        let _ = stopped.await;
    });

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

    for path in ["/v1/hosts/nope", "/v1/nothing", "/"] {
        let r = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "not_found", "{path}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 5);
    }

    let _ = stop.send(());
    running.task.await.unwrap();
    // After shutdown the API is gone.
    assert!(reqwest::get(format!("{base}/v1/health")).await.is_err());
}
