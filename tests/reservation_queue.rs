//! Queue mode (for kernel datapaths) against a real Open vSwitch. Its effect
//! on traffic needs a kernel datapath, which this machine's kernel lacks (on
//! the userspace datapath `set_queue` and ingress policing do not reach the
//! kernel; `tests/queue_datapath.rs` checks it on a kernel datapath inside a
//! guest); what is checked here is that the rows, columns and flows it writes
//! are really in a running OVS, are refreshed, and are removed again: on
//! release, at shutdown, and (for an earlier run's leftovers) at start; and
//! that `solive watchdog` lifts them when the controller dies.

mod support;

use std::time::Duration;

use solive::config::Config;
use solive::controller::reservation::ReservationRequest;
use support::{config_toml, eventually, Sandbox, Solive};
use tokio::net::TcpListener;

fn add_internal(sb: &Sandbox, br: &str, name: &str, ids: &[&str]) {
    let mut args = vec![
        "add-port",
        br,
        name,
        "--",
        "set",
        "interface",
        name,
        "type=internal",
    ];
    args.extend_from_slice(ids);
    sb.vsctl(&args);
}

/// Two hosts' bridges (source brs, destination brd) with their uplinks and
/// one VM interface on the source.
fn queue_hosts() -> Sandbox {
    let sb = Sandbox::start();
    sb.add_bridge("brs");
    sb.add_bridge("brd");
    add_internal(&sb, "brs", "qs-up", &[]);
    add_internal(&sb, "brd", "qd-up", &[]);
    add_internal(&sb, "brs", "qs-vm1", &["external_ids:vm-id=vm1"]);
    sb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_writes_and_removes_qos_policing_and_set_queue_flows() {
    let _lock = support::lock();
    let sb = queue_hosts();
    add_internal(&sb, "brs", "qs-vm2", &["external_ids:vm-id=vm2"]);
    add_internal(&sb, "brd", "qd-vm3", &["external_ids:vm-id=vm3"]);
    // Policing an earlier solive left on an interface it had tagged.
    sb.vsctl(&[
        "set",
        "interface",
        "qs-vm2",
        "ingress_policing_rate=1234",
        "external_ids:solive-policing-owner=solive",
    ]);

    let mut toml = config_toml(
        &[
            ("src", &sb.db, "brs", "qs-up", 100),
            ("dst", &sb.db, "brd", "qd-up", 100),
        ],
        500,
    );
    toml = toml.replacen(
        "capacity_mbps = 100\n",
        "capacity_mbps = 100\naddress = \"10.196.0.1\"\nenforcement = \"queue\"\n",
        1,
    );
    toml = toml.replacen(
        "qd-up\"\ncapacity_mbps = 100\n",
        "qd-up\"\ncapacity_mbps = 100\naddress = \"10.196.0.2\"\nenforcement = \"queue\"\n",
        1,
    );
    let config = Config::parse(&toml).unwrap();
    let solive = Solive::start_with(config, TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
    let url = solive.api.clone();
    let c = solive.running.controller.clone();

    let hosts: serde_json::Value = eventually(20, "hosts in queue mode", || async {
        let v: serde_json::Value = reqwest::get(format!("{url}/v1/hosts"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ok = v
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["connected"] == true && h["enforcement"]["mode"] == "queue");
        if ok {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await;
    // The reason says plainly that this datapath will not feel it.
    assert!(
        hosts[0]["enforcement"]["reason"]
            .as_str()
            .unwrap()
            .contains("do not take effect"),
        "{hosts}"
    );
    // The earlier run's policing is gone.
    eventually(10, "stale policing removed", || async {
        let r = sb.vsctl(&["get", "interface", "qs-vm2", "ingress_policing_rate"]);
        if r.trim() == "0" {
            Ok(())
        } else {
            Err(r)
        }
    })
    .await;

    let req = ReservationRequest {
        source: "src".into(),
        destination: "dst".into(),
        intermediaries: vec![],
        urgency: 75.0,
        threshold: 10.0,
        max_reserve: None,
        migration_port: Some(49160),
        store_port: None,
        disk_port: None,
    };
    let view = c.create_reservation(req.clone()).await.unwrap();
    let id = view.id;
    // Idle link: measurement 0 gives max(avail 100, 75), clamped to 95.
    eventually(10, "measurement 0", || async {
        let v = c.reservation(id).await.unwrap().unwrap();
        if v.reserve_pct == Some(95.0) {
            Ok(())
        } else {
            Err(format!("{v:?}"))
        }
    })
    .await;

    let written = || async {
        let qos = sb.vsctl(&["list", "qos"]);
        let queues = sb.vsctl(&["list", "queue"]);
        let up_qos = sb.vsctl(&["get", "port", "qs-up", "qos"]);
        let vm3_qos = sb.vsctl(&["get", "port", "qd-vm3", "qos"]);
        let pol1: u64 = sb
            .vsctl(&["get", "interface", "qs-vm1", "ingress_policing_rate"])
            .trim()
            .parse()
            .unwrap();
        let ids1 = sb.vsctl(&["get", "interface", "qs-vm1", "external_ids"]);
        let flows = sb.ofctl(&["dump-flows", "brs"]);
        let ok = qos.contains("linux-htb")
            && qos.contains("solive-owner")
            && queues.contains("min-rate=\"95000000\"")
            && queues.contains("min-rate=\"5000000\"")
            && up_qos.trim() != "[]"
            && vm3_qos.trim() != "[]"
            && pol1 > 0
            && ids1.contains("solive-policing-owner")
            && flows.contains("set_queue:1")
            && flows.contains("tp_dst=49160")
            && flows.contains("hard_timeout=2");
        if ok {
            Ok(flows)
        } else {
            Err(format!(
                "{qos}\n{queues}\nup:{up_qos} vm3:{vm3_qos} pol:{pol1} {ids1}\n{flows}"
            ))
        }
    };
    let flows = eventually(10, "queue-mode state written", written).await;
    // Two VMs share the 5% the applications keep: 5000 kbit/s in all.
    let pol: u64 = ["qs-vm1", "qs-vm2"]
        .iter()
        .map(|i| {
            sb.vsctl(&["get", "interface", i, "ingress_policing_rate"])
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert!((4998..=5002).contains(&pol), "policing total {pol} kbit/s");
    // The set_queue flow is refreshed: its age stays below the hard timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = sb.ofctl(&["dump-flows", "brs"]);
    assert!(
        later.contains("set_queue:1"),
        "refreshed flow lapsed: {later}\nbefore: {flows}"
    );

    // Release: everything goes.
    c.delete_reservation(id).await.unwrap();
    let gone = || async {
        let qos = sb.vsctl(&["list", "qos"]);
        let pol = sb.vsctl(&["get", "interface", "qs-vm1", "ingress_policing_rate"]);
        let ids = sb.vsctl(&["get", "interface", "qs-vm1", "external_ids"]);
        let flows = sb.ofctl(&["dump-flows", "brs"]);
        let ok = !qos.contains("solive-owner")
            && pol.trim() == "0"
            && !ids.contains("solive-policing")
            && !flows.contains("set_queue");
        if ok {
            Ok(())
        } else {
            Err(format!("{qos}\n{pol} {ids}\n{flows}"))
        }
    };
    eventually(10, "queue-mode state removed on release", gone).await;
    assert_eq!(sb.vsctl(&["list", "queue"]).trim(), "");

    // Again, then a clean stop removes it as well.
    let id = c.create_reservation(req).await.unwrap().id;
    eventually(10, "written again", || async {
        let v = c.reservation(id).await.unwrap().unwrap();
        let q = sb.vsctl(&["list", "qos"]);
        if v.reserve_pct.is_some() && q.contains("solive-owner") {
            Ok(())
        } else {
            Err(q)
        }
    })
    .await;
    eventually(10, "policing written again", || async {
        let p = sb.vsctl(&["get", "interface", "qs-vm1", "ingress_policing_rate"]);
        if p.trim() != "0" {
            Ok(())
        } else {
            Err(p)
        }
    })
    .await;
    solive.stop().await;
    gone().await.unwrap();
    assert_eq!(sb.vsctl(&["list", "queue"]).trim(), "");
}

/// Queue mode's OVSDB state has no timeout of its own: with solive killed
/// (SIGKILL, no cleanup), the host's `solive watchdog` gets the OVSDB lock
/// solive held and lifts the queues and policing; while solive runs it
/// touches nothing, and a new solive takes the lock back and writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_lifts_queue_mode_throttling_when_the_controller_dies() {
    use std::process::{Command, Stdio};
    use support::KillOnDrop;
    let _lock = support::lock();
    let sb = queue_hosts();
    let dir = tempfile::tempdir().unwrap();
    let (api, of) = (support::free_port(), support::free_port());
    let toml = config_toml(
        &[
            ("src", &sb.db, "brs", "qs-up", 100),
            ("dst", &sb.db, "brd", "qd-up", 100),
        ],
        500,
    )
    .replace(
        "\nlisten = \"127.0.0.1:0\"",
        &format!("\nlisten = \"127.0.0.1:{api}\""),
    )
    .replace(
        "openflow_listen = \"127.0.0.1:0\"",
        &format!("openflow_listen = \"127.0.0.1:{of}\""),
    )
    .replace(
        "capacity_mbps = 100\n",
        "capacity_mbps = 100\nenforcement = \"queue\"\n",
    )
    .replacen("qs-up\"\n", "qs-up\"\naddress = \"10.196.0.1\"\n", 1)
    .replacen("qd-up\"\n", "qd-up\"\naddress = \"10.196.0.2\"\n", 1);
    let cfg = dir.path().join("solive.toml");
    std::fs::write(&cfg, toml).unwrap();
    let bin = env!("CARGO_BIN_EXE_solive");
    let log = dir.path().join("watchdog.log");
    let _watchdog = KillOnDrop(
        Command::new(bin)
            .args(["watchdog", "--ovsdb", &sb.db])
            .env("RUST_LOG", "solive=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let solive_log = dir.path().join("solive.log");
    let serve = || {
        KillOnDrop(
            Command::new(bin)
                .args(["serve", "--config", cfg.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&solive_log).unwrap())
                .spawn()
                .unwrap(),
        )
    };
    let base = format!("http://127.0.0.1:{api}");
    let reserve = || async {
        eventually(20, "a reservation in queue mode", || async {
            let r = reqwest::Client::new()
                .post(format!("{base}/v1/reservations"))
                .json(
                    &serde_json::json!({"source": "src", "destination": "dst", "urgency": 75,
                    "migration_port": 49160}),
                )
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status().as_u16() == 201 {
                Ok(())
            } else {
                Err(r.text().await.unwrap_or_default())
            }
        })
        .await;
    };
    let throttled = || async {
        let qos = sb.vsctl(&["list", "qos"]);
        let pol = sb.vsctl(&["get", "interface", "qs-vm1", "ingress_policing_rate"]);
        if qos.contains("solive-owner") && pol.trim() != "0" {
            Ok(())
        } else {
            let said = std::fs::read_to_string(&solive_log).unwrap_or_default();
            Err(format!("{qos}\npolicing {pol}\nsolive said:\n{said}"))
        }
    };
    let lifted = || async {
        let qos = sb.vsctl(&["list", "qos"]);
        let queues = sb.vsctl(&["list", "queue"]);
        let pol = sb.vsctl(&["get", "interface", "qs-vm1", "ingress_policing_rate"]);
        if !qos.contains("solive-owner") && queues.trim().is_empty() && pol.trim() == "0" {
            Ok(())
        } else {
            Err(format!("{qos}\n{queues}\npolicing {pol}"))
        }
    };

    let mut solive = serve();
    reserve().await;
    eventually(20, "queue-mode state written", throttled).await;
    // The watchdog leaves a live controller's state alone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    throttled()
        .await
        .expect("the watchdog lifted a live controller's state");

    let killed = std::time::Instant::now();
    solive.0.kill().unwrap();
    solive.0.wait().unwrap();
    eventually(15, "the watchdog lifted the throttling", lifted).await;
    eprintln!(
        "watchdog lifted queue mode {:.2} s after solive was killed",
        killed.elapsed().as_secs_f64()
    );
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("lifted"), "{said}");

    // A new solive takes the host back and throttles again.
    let _solive = serve();
    reserve().await;
    eventually(20, "queue-mode state written again", throttled).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    throttled()
        .await
        .expect("the watchdog lifted the new controller's state");
}
