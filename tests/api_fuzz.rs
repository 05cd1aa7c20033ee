//! Random JSON thrown at the POST endpoints: every answer is a 2xx or a 4xx
//! with a JSON error body, never a 5xx, never a dropped connection.

mod support;

use proptest::prelude::*;
use solive::config::Config;
use solive::hypervisor::fake::{FakeCloud, FakeVm};
use support::{config_toml, Solive};
use tokio::net::TcpListener;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        // Names the endpoints know, so some bodies get deep into validation.
        prop_oneof![
            Just("h1".to_string()),
            Just("h2".to_string()),
            Just("precopy".to_string()),
            Just("auto".to_string()),
            Just("a".to_string()),
            ".{0,8}"
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("source".to_string()),
            Just("destination".to_string()),
            Just("urgency".to_string()),
            Just("threshold".to_string()),
            Just("max_reserve".to_string()),
            Just("intermediaries".to_string()),
            Just("migration_port".to_string()),
            Just("capacity_bps".to_string()),
            Just("vms".to_string()),
            Just("name".to_string()),
            Just("non_zero_pages".to_string()),
            Just("dirty_pages_per_sec".to_string()),
            Just("tx_bps".to_string()),
            Just("rx_bps".to_string()),
            Just("mode".to_string()),
            Just("order".to_string()),
            Just("max_parallel".to_string()),
            Just("balance_pct".to_string()),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::from),
            prop::collection::btree_map(keys, inner, 0..7)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn random_json_gets_2xx_or_4xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut toml = config_toml(
        &[
            ("h1", "unix:/nonexistent/a.sock", "br0", "up0", 100),
            ("h2", "unix:/nonexistent/b.sock", "br1", "up1", 100),
        ],
        100,
    );
    toml = toml.replace(
        "capacity_mbps = 100\n",
        "capacity_mbps = 100\naddress = \"10.0.0.9\"\n",
    );
    let config = Config::parse(&toml).unwrap();
    // Evacuations run against a fake cloud (h1 holds VMs a and b).
    let cloud = FakeCloud::new();
    for vm in ["a", "b"] {
        cloud.add_vm(
            "h1",
            vm,
            FakeVm {
                memory_kib: 65536,
                non_zero_pages: 1024,
                dirty_pages_per_sec: 0.0,
                cpu_pct: 1.0,
            },
        );
    }
    let hvs = cloud.host_hypervisors(&["h1", "h2"]);
    let solive = rt.block_on(async {
        Solive::start_with_hypervisors(config, TcpListener::bind("127.0.0.1:0").await.unwrap(), hvs)
            .await
    });
    let http = reqwest::Client::new();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 400,
        ..ProptestConfig::default()
    });
    runner
        .run(&(json_value(), 0usize..3), |(body, which)| {
            let path = ["/v1/plan", "/v1/reservations", "/v1/evacuations"][which];
            let (status, text) = rt.block_on(async {
                let r = http
                    .post(format!("{}{path}", solive.api))
                    .json(&body)
                    .send()
                    .await
                    .expect("connection");
                (r.status(), r.text().await.unwrap_or_default())
            });
            prop_assert!(
                status.is_success() || status.is_client_error(),
                "{path} {body} -> {status} {text}"
            );
            if status.is_client_error() {
                let v: serde_json::Value = serde_json::from_str(&text).expect("JSON error body");
                prop_assert!(v["error"]["message"].is_string(), "{text}");
            }
            Ok(())
        })
        .unwrap();
    rt.block_on(solive.stop());
}
