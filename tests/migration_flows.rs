//! Migration flows of concurrent reservations on a real Open vSwitch: each
//! migration between the same two hosts has its own flow (its own port), a
//! release takes only its own, and legs that match the very same packets (two
//! migrations through the same stores) share one flow that outlives whichever
//! reservation made it.
//!
//! Three bridges of one sandbox stand for a source, a destination and an
//! intermediary; solive holds all three over OpenFlow 1.3 (meter mode, the
//! userspace datapath). What is checked is the switch's own flow table, read
//! with ovs-ofctl.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{config_toml, eventually, Sandbox, Solive};

/// The migration flows (priority 200) of a bridge: (cookie, match) pairs.
fn migration_flows(sb: &Sandbox, br: &str) -> Vec<(String, String)> {
    sb.ofctl(&["dump-flows", br])
        .lines()
        .filter(|l| l.contains("priority=200"))
        .map(|l| {
            let cookie = l
                .split(',')
                .find_map(|f| f.trim().strip_prefix("cookie="))
                .unwrap_or_default()
                .to_string();
            let m = l
                .split("priority=200,")
                .nth(1)
                .and_then(|r| r.split(" actions").next())
                .unwrap_or_default()
                .to_string();
            (cookie, m)
        })
        .collect()
}

async fn reserve(solive: &Solive, body: Value) -> u64 {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/reservations", solive.api))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{body}");
    r.json::<Value>().await.unwrap()["id"].as_u64().unwrap()
}

async fn release(solive: &Solive, id: u64) {
    let r = reqwest::Client::new()
        .delete(format!("{}/v1/reservations/{id}", solive.api))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// Waits until `br`'s migration flows are exactly `want` (matches, sorted).
async fn flows_become(sb: &Sandbox, br: &str, want: &[&str]) -> Vec<(String, String)> {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    eventually(20, &format!("{br}'s migration flows {want:?}"), || async {
        let f = migration_flows(sb, br);
        let mut have: Vec<String> = f.iter().map(|(_, m)| m.clone()).collect();
        have.sort();
        if have == want {
            Ok(f)
        } else {
            Err(format!("{f:?}"))
        }
    })
    .await
}

fn cookie_of<'a>(flows: &'a [(String, String)], m: &str) -> &'a str {
    &flows.iter().find(|(_, x)| x == m).unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_keep_their_own_flows_and_shared_ones_outlive_their_owner() {
    let _lock = support::lock();
    let sb = Sandbox::start();
    for (br, up) in [("br-s", "s-up"), ("br-d", "d-up"), ("br-i", "i-up")] {
        sb.add_bridge(br);
        sb.vsctl(&[
            "add-port",
            br,
            up,
            "--",
            "set",
            "interface",
            up,
            "type=internal",
        ]);
    }
    let mut toml = config_toml(
        &[
            ("s", &sb.db, "br-s", "s-up", 100),
            ("d", &sb.db, "br-d", "d-up", 100),
            ("i", &sb.db, "br-i", "i-up", 100),
        ],
        200,
    );
    for (up, addr) in [
        ("s-up", "10.0.0.1"),
        ("d-up", "10.0.0.2"),
        ("i-up", "10.0.0.3"),
    ] {
        toml = toml.replacen(
            &format!("uplink = \"{up}\"\ncapacity_mbps = 100\n"),
            &format!("uplink = \"{up}\"\ncapacity_mbps = 100\naddress = \"{addr}\"\n"),
            1,
        );
    }
    let solive = Solive::start(&toml).await;
    for h in ["s", "d", "i"] {
        solive
            .host_when(h, "connected", |v| v["connected"] == true)
            .await;
    }

    // Two migrations from s to d at once, each on its own port.
    let a = reserve(
        &solive,
        json!({"source": "s", "destination": "d", "urgency": 40, "migration_port": 49152}),
    )
    .await;
    let b = reserve(
        &solive,
        json!({"source": "s", "destination": "d", "urgency": 40, "migration_port": 49153}),
    )
    .await;
    let a_there = "tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_dst=49152";
    let a_back = "tcp,nw_src=10.0.0.2,nw_dst=10.0.0.1,tp_src=49152";
    let b_there = "tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_dst=49153";
    let b_back = "tcp,nw_src=10.0.0.2,nw_dst=10.0.0.1,tp_src=49153";
    let both = flows_become(&sb, "br-s", &[a_there, a_back, b_there, b_back]).await;
    assert_ne!(cookie_of(&both, a_there), cookie_of(&both, b_there));
    // They coexist: several periods later the table still holds both, with
    // the same cookies (flows that replaced each other would swap them).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = migration_flows(&sb, "br-s");
    let mut x = both.clone();
    let mut y = later.clone();
    x.sort();
    y.sort();
    assert_eq!(x, y, "the flows changed with nothing to change them");
    // Each reservation reports its own legs.
    for id in [a, b] {
        let v = solive.get(&format!("/v1/reservations/{id}")).await;
        assert!(v["reserve_pct"].as_f64().is_some(), "{v}");
    }
    let meters_before = sb.ofctl(&["dump-meters", "br-s"]);
    assert!(meters_before.contains("meter="), "{meters_before}");

    // Releasing a leaves b's flows as they were, and the host's meter.
    release(&solive, a).await;
    let after = flows_become(&sb, "br-s", &[b_there, b_back]).await;
    assert_eq!(cookie_of(&after, b_there), cookie_of(&both, b_there));
    assert_eq!(cookie_of(&after, b_back), cookie_of(&both, b_back));
    let meters = sb.ofctl(&["dump-meters", "br-s"]);
    assert!(
        meters.contains("meter="),
        "b's host lost its meter: {meters}"
    );
    release(&solive, b).await;
    flows_become(&sb, "br-s", &[]).await;

    // Three at once on s's uplink: one reservation for the link, split three
    // ways; their parts (what caps their speed) never add up to more than
    // the link's reservation, and that is within max_reserve of C.
    let three = [
        reserve(
            &solive,
            json!({"source": "s", "destination": "d", "urgency": 60, "migration_port": 49160}),
        )
        .await,
        reserve(
            &solive,
            json!({"source": "s", "destination": "d", "urgency": 60, "migration_port": 49161}),
        )
        .await,
        reserve(
            &solive,
            json!({"source": "s", "destination": "d", "urgency": 60, "migration_port": 49162}),
        )
        .await,
    ];
    for _ in 0..10 {
        let mut parts = 0.0;
        let mut link = None;
        for id in three {
            let v = solive.get(&format!("/v1/reservations/{id}")).await;
            let src = v["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["role"] == "source")
                .unwrap_or_else(|| panic!("no source leg: {v}"));
            parts += src["reserve_bps"].as_f64().unwrap();
            let last = v["history"].as_array().unwrap().last().cloned().unwrap();
            if let Some(l) = last["link_pct"].as_f64() {
                link = Some(l);
            }
        }
        let link_bps = link.expect("a shared link shows its reservation") / 100.0 * 100e6;
        assert!(
            parts <= link_bps * 1.0001,
            "parts {parts} > link {link_bps}"
        );
        assert!(link_bps <= 95e6 + 1.0, "link {link_bps} past max_reserve");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for id in three {
        release(&solive, id).await;
    }

    // Two migrations through the same store on i: their legs from i to d
    // match the same packets (the store's port), so d holds one flow for
    // both, and it stays when the reservation that made it goes.
    let via = |port: u16| {
        json!({"source": "s", "destination": "d", "intermediaries": ["i"],
               "urgency": 40, "migration_port": port, "store_port": 6379})
    };
    let c = reserve(&solive, via(49152)).await;
    let d = reserve(&solive, via(49153)).await;
    let gather = "tcp,nw_src=10.0.0.3,nw_dst=10.0.0.2,tp_src=6379";
    let direct = |p: u16| format!("tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_dst={p}");
    let back = |p: u16| format!("tcp,nw_src=10.0.0.2,nw_dst=10.0.0.1,tp_src={p}");
    let shared = flows_become(
        &sb,
        "br-d",
        &[
            gather,
            &direct(49152),
            &back(49152),
            &direct(49153),
            &back(49153),
        ],
    )
    .await;
    let owner = cookie_of(&shared, gather).to_string();
    release(&solive, c).await;
    let left = flows_become(&sb, "br-d", &[gather, &direct(49153), &back(49153)]).await;
    assert_ne!(
        cookie_of(&left, gather),
        owner,
        "the shared flow now belongs to the reservation that is left"
    );
    release(&solive, d).await;
    flows_become(&sb, "br-d", &[]).await;
    solive.stop().await;
}
