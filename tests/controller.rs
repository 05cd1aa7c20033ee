//! The controller against a real Open vSwitch: bridge configuration through
//! OVSDB, state installed over OpenFlow and checked with ovs-ofctl/ovs-vsctl,
//! reconcile after drift and after an ovs-vswitchd restart, a host that cannot
//! be reached, and clean removal of everything on shutdown.

mod support;

use std::time::Duration;

use serde_json::Value;
use solive::config::Config;
use solive::controller::reconcile::COOKIE_TAG;
use solive::controller::{Applied, FlowSpec, MeterSpec};
use solive::openflow::{port, Action, Instruction, Match};
use solive::ovsdb::vswitch::QueueConfig;
use support::{config_toml, eventually, Sandbox, Solive};
use tokio::net::TcpListener;

fn metered_flow(cookie_low: u64, in_port: u32, meter: u32) -> FlowSpec {
    FlowSpec {
        cookie: COOKIE_TAG | cookie_low,
        table_id: 0,
        priority: 100,
        matches: Match::new().in_port(in_port).eth_type(0x0800),
        instructions: vec![
            Instruction::Meter(meter),
            Instruction::ApplyActions(vec![Action::output(port::NORMAL)]),
        ],
        hard_timeout: 0,
        refresh: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_configures_installs_heals_and_cleans_up() {
    let _lock = support::lock();
    let sb = Sandbox::start();
    sb.add_bridge("br0");
    sb.vsctl(&[
        "add-port",
        "br0",
        "up0",
        "--",
        "set",
        "interface",
        "up0",
        "type=internal",
    ]);
    sb.vsctl(&[
        "add-port",
        "br0",
        "vm1p",
        "--",
        "set",
        "interface",
        "vm1p",
        "type=internal",
        "external_ids:vm-id=vm1",
        "external_ids:iface-id=vm1-eth0",
        "external_ids:attached-mac=52:54:00:00:00:01",
    ]);
    // Leftovers of an earlier solive that died without cleaning up (a flow with
    // our cookie tag, a meter, a QoS row tagged as ours), next to someone
    // else's flow and QoS row, which must survive everything below.
    // (An earlier solive left the bridge secure with a controller target; OVS
    // itself flushes every flow when fail_mode changes or a bridge gets its
    // first controller, so that is how such leftovers look.)
    sb.vsctl(&[
        "set",
        "bridge",
        "br0",
        "protocols=OpenFlow13",
        "fail_mode=secure",
    ]);
    sb.vsctl(&["set-controller", "br0", "tcp:127.0.0.1:1"]);
    sb.ofctl(&["add-meter", "br0", "meter=99,kbps,band=type=drop,rate=1000"]);
    sb.ofctl(&[
        "add-flow",
        "br0",
        "cookie=0x5011000000000099,priority=10,in_port=1,actions=meter:99,NORMAL",
    ]);
    sb.ofctl(&[
        "add-flow",
        "br0",
        "cookie=0x77,priority=50,udp,tp_dst=9,actions=drop",
    ]);
    sb.htb_qos("up0", &["external_ids:solive-owner=solive"], &[]);
    sb.htb_qos("vm1p", &["external_ids:owner=someone-else"], &[]);
    let toml = config_toml(
        &[
            ("h1", &sb.db, "br0", "up0", 100),
            ("ghost", "unix:/nonexistent/db.sock", "brX", "up", 100),
        ],
        200,
    );
    let solive = Solive::start(&toml).await;

    // The bridge is configured through OVSDB and connects over OpenFlow 1.3.
    let h1 = solive
        .host_when("h1", "h1 connected", |h| h["connected"] == true)
        .await;
    assert_eq!(h1["datapath_type"], "netdev");
    assert_eq!(
        sb.vsctl(&["get", "bridge", "br0", "fail_mode"]).trim(),
        "secure"
    );
    assert!(sb
        .vsctl(&["get", "bridge", "br0", "protocols"])
        .contains("OpenFlow13"));
    assert!(sb
        .vsctl(&["get-controller", "br0"])
        .contains("tcp:127.0.0.1:"));
    // The unreachable host is shown disconnected with a reason; h1 works anyway.
    let ghost = solive.get("/v1/hosts/ghost").await;
    assert_eq!(ghost["connected"], false, "{ghost}");
    assert!(
        ghost["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{ghost}"
    );

    // Ports and the VM behind one of them, from PORT_DESC and OVSDB external_ids.
    let h1 = solive
        .host_when("h1", "ports with VM", |h| {
            h["ports"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["vm"]["vm_id"] == "vm1"))
        })
        .await;
    let ports = h1["ports"].as_array().unwrap();
    assert!(
        ports
            .iter()
            .any(|p| p["name"] == "up0" && p["uplink"] == true),
        "{h1}"
    );
    let vm1 = ports.iter().find(|p| p["name"] == "vm1p").unwrap();
    assert_eq!(vm1["vm"]["iface_id"], "vm1-eth0");
    let vm1_port: u32 = vm1["port_no"].as_u64().unwrap() as u32;

    // The earlier run's leftovers are gone; someone else's state is untouched.
    eventually(10, "stale solive state removed", || async {
        let f = sb.ofctl(&["dump-flows", "br0"]);
        let m = sb.ofctl(&["dump-meters", "br0"]);
        let q = sb.vsctl(&["list", "qos"]);
        let clean = !f.contains("0x5011000000000099")
            && !m.contains("meter=99")
            && !q.contains("solive-owner");
        if clean {
            Ok(())
        } else {
            Err(format!("{f}\n{m}\n{q}"))
        }
    })
    .await;
    assert!(sb.ofctl(&["dump-flows", "br0"]).contains("cookie=0x77"));
    assert!(sb.vsctl(&["list", "qos"]).contains("someone-else"));

    // The baseline NORMAL flow keeps the bridge forwarding.
    let flows = sb.ofctl(&["dump-flows", "br0"]);
    assert!(
        flows.contains("cookie=0x5011000000000000") && flows.contains("priority=0 actions=NORMAL"),
        "{flows}"
    );

    // A meter and a flow through it, confirmed by the switch, seen by ovs-ofctl.
    let c = &solive.running.controller;
    let m = MeterSpec {
        id: 1,
        rate_kbps: 50_000,
        burst_kb: 10_000,
    };
    assert_eq!(c.put_meter("h1", m).await.unwrap(), Applied::Now);
    assert_eq!(
        c.put_flow("h1", metered_flow(1, vm1_port, 1))
            .await
            .unwrap(),
        Applied::Now
    );
    let meters = sb.ofctl(&["dump-meters", "br0"]);
    assert!(
        meters.contains("meter=1 kbps burst stats bands=")
            && meters.contains("type=drop rate=50000 burst_size=10000"),
        "{meters}"
    );
    let flows = sb.ofctl(&["dump-flows", "br0"]);
    assert!(
        flows.contains("cookie=0x5011000000000001") && flows.contains("meter:1"),
        "{flows}"
    );
    // Changing the rate modifies the meter in place.
    c.put_meter(
        "h1",
        MeterSpec {
            rate_kbps: 20_000,
            ..m
        },
    )
    .await
    .unwrap();
    assert!(sb.ofctl(&["dump-meters", "br0"]).contains("rate=20000"));
    // Unknown host and bad ids are errors, not panics.
    assert!(c.put_meter("nope", m).await.is_err());
    assert!(c.put_meter("h1", MeterSpec { id: 0, ..m }).await.is_err());
    let reserved = MeterSpec {
        id: solive::controller::enforce::APP_OUT_METER,
        ..m
    };
    assert!(
        c.put_meter("h1", reserved).await.is_err(),
        "enforcement meter ids are not for callers"
    );

    // QoS through OVSDB, tagged as ours.
    let q = QueueConfig {
        min_rate: Some(10_000_000),
        max_rate: Some(100_000_000),
        priority: None,
        burst: None,
    };
    c.set_port_qos("h1", "up0", 100_000_000, &[(0, q), (1, q)])
        .await
        .unwrap();
    let qos = sb.vsctl(&["list", "qos"]);
    assert!(
        qos.contains("linux-htb") && qos.contains("solive-owner"),
        "{qos}"
    );

    // Drift heals: someone deletes our flows and meters behind our back.
    sb.ofctl(&["del-flows", "br0"]);
    sb.ofctl(&["del-meters", "br0"]);
    eventually(
        10,
        "flows and meters reinstalled after deletion",
        || async {
            let f = sb.ofctl(&["dump-flows", "br0"]);
            let m = sb.ofctl(&["dump-meters", "br0"]);
            if f.contains("meter:1") && f.contains("actions=NORMAL") && m.contains("rate=20000") {
                Ok(())
            } else {
                Err(format!("{f}\n{m}"))
            }
        },
    )
    .await;

    // ovs-vswitchd restarts: the switch comes back empty and reconnects; the
    // controller reinstalls everything on the new session.
    sb.restart_switch();
    eventually(
        20,
        "state reinstalled after ovs-vswitchd restart",
        || async {
            let f = sb.ofctl(&["dump-flows", "br0"]);
            let m = sb.ofctl(&["dump-meters", "br0"]);
            if f.contains("meter:1") && m.contains("rate=20000") {
                Ok(())
            } else {
                Err(format!("{f}\n{m}"))
            }
        },
    )
    .await;
    solive
        .host_when("h1", "h1 connected again", |h| h["connected"] == true)
        .await;

    // Someone else's flow, added while solive runs, survives resyncs and shutdown.
    sb.ofctl(&[
        "add-flow",
        "br0",
        "cookie=0x77,priority=50,udp,tp_dst=9,actions=drop",
    ]);
    tokio::time::sleep(Duration::from_millis(1500)).await; // more than resync_periods x period
    assert!(sb.ofctl(&["dump-flows", "br0"]).contains("cookie=0x77"));

    // Shutdown removes reservations (meters, metered flows, QoS rows) and leaves
    // the bridge forwarding.
    solive.stop().await;
    let flows = sb.ofctl(&["dump-flows", "br0"]);
    assert!(
        !flows.contains("meter:1") && flows.contains("actions=NORMAL"),
        "{flows}"
    );
    let meters = sb.ofctl(&["dump-meters", "br0"]);
    assert!(!meters.contains("meter=1"), "{meters}");
    let qos = sb.vsctl(&["list", "qos"]);
    assert!(
        !qos.contains("solive-owner") && qos.contains("someone-else"),
        "{qos}"
    );
    assert_eq!(sb.vsctl(&["list", "queue"]).trim(), "");
    assert!(
        flows.contains("cookie=0x77"),
        "someone else's flow survives: {flows}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switches_in_side_by_side_sandboxes() {
    // Two independent OVS instances (each in its own namespace, see
    // ovs/sandbox.sh) controlled by one solive.
    let a = Sandbox::start_in(Some("solive-t-a"));
    let b = Sandbox::start_in(Some("solive-t-b"));
    a.add_bridge("bra");
    b.add_bridge("brb");
    let of = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = of.local_addr().unwrap().port();
    let mut config = Config::parse(&config_toml(
        &[
            ("ha", &a.db, "bra", "bra", 100),
            ("hb", &b.db, "brb", "brb", 100),
        ],
        200,
    ))
    .unwrap();
    config.controller.openflow_listen = of.local_addr().unwrap();
    config.hosts[0].controller_target =
        Some(format!("tcp:{}:{port}", a.controller_ip.as_ref().unwrap()));
    config.hosts[1].controller_target =
        Some(format!("tcp:{}:{port}", b.controller_ip.as_ref().unwrap()));
    let solive = Solive::start_with(config, of).await;
    let url = format!("{}/v1/hosts", solive.api);
    let hosts: Value = eventually(20, "both hosts connected", || async {
        let v: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        let all = v.as_array().unwrap().iter().all(|h| h["connected"] == true);
        if all {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await;
    let dpids: Vec<&str> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["dpid"].as_str().unwrap())
        .collect();
    assert_ne!(dpids[0], dpids[1]);
    solive.stop().await;
}

/// Anyone who reaches the OpenFlow port can claim a datapath id. A second
/// connection claiming the id of a bridge already connected is refused and
/// closed; the real switch stays attached and keeps its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_claiming_a_connected_datapath_id_is_refused() {
    let _lock = support::lock();
    let sb = Sandbox::start();
    sb.add_bridge("br0");
    let of = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = of.local_addr().unwrap();
    let mut config =
        Config::parse(&config_toml(&[("h1", &sb.db, "br0", "br0", 100)], 200)).unwrap();
    config.controller.openflow_listen = addr;
    let solive = Solive::start_with(config, of).await;
    let h1 = solive
        .host_when("h1", "h1 connected", |h| h["connected"] == true)
        .await;
    let dpid = u64::from_str_radix(h1["dpid"].as_str().unwrap(), 16).unwrap();
    let baseline = |f: &str| f.contains("priority=0 actions=NORMAL");
    eventually(10, "baseline flow installed", || async {
        let f = sb.ofctl(&["dump-flows", "br0"]);
        if baseline(&f) {
            Ok(())
        } else {
            Err(f)
        }
    })
    .await;

    // The impostor: the switch's side of the handshake with br0's id.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // solive closes it (it may send nothing first, or an echo at most).
    support::closed_after_features(stream, dpid, "the impostor").await;
    // The real switch is still the host's, with its state.
    let h1 = solive.get("/v1/hosts/h1").await;
    assert_eq!(h1["connected"], true, "{h1}");
    assert!(baseline(&sb.ofctl(&["dump-flows", "br0"])));
    // ...and its session works: a meter put through it is on the bridge.
    let m = MeterSpec {
        id: 7,
        rate_kbps: 10_000,
        burst_kb: 1_000,
    };
    assert_eq!(
        solive.running.controller.put_meter("h1", m).await.unwrap(),
        Applied::Now
    );
    assert!(sb.ofctl(&["dump-meters", "br0"]).contains("meter=7"));
    solive.stop().await;
}
