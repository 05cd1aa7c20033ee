//! The OVSDB client against a real ovsdb-server + ovs-vswitchd sandbox, checked
//! with ovs-vsctl as the independent reader and writer.

// tests/support uses `File::lock` (Rust 1.89) while Cargo.toml says
// rust-version 1.80; that is the fixture's business, not this file's.

mod support;

use std::time::{Duration, Instant};

use solive::ovsdb::vswitch::{self, QueueConfig, OWNER_KEY};
use solive::ovsdb::{
    Atom, Client, Condition, MonitorRequest, Mutation, Mutator, Operation, OvsdbError, Row, Value,
    WaitUntil, VSWITCH_DB,
};
use support::Sandbox;

fn s(v: &str) -> String {
    v.to_string()
}

/// `ovs-vsctl --bare --columns=_uuid list TABLE`, one uuid per row.
fn rows(sb: &Sandbox, table: &str) -> Vec<String> {
    sb.vsctl(&["--bare", "--columns=_uuid", "list", table])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn get(sb: &Sandbox, args: &[&str]) -> String {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    sb.vsctl(&a).trim().to_string()
}

async fn connect(sb: &Sandbox) -> Client {
    Client::connect(&sb.db).await.expect("connect over unix:")
}

#[tokio::test]
async fn unix_and_tcp_connections_list_dbs_and_get_schema() {
    let _lock = support::lock();
    let sb = Sandbox::start();
    let unix = connect(&sb).await;
    assert!(unix.list_dbs().await.unwrap().contains(&s("Open_vSwitch")));
    let schema = unix.get_schema(VSWITCH_DB).await.unwrap();
    assert_eq!(schema["name"], "Open_vSwitch");
    assert!(schema["tables"]["QoS"].is_object());
    assert!(matches!(
        unix.get_schema("Nope").await,
        Err(OvsdbError::Rpc {
            method: "get_schema",
            ..
        })
    ));

    // A TCP remote on a port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Through a Manager row (the sandbox's ovsdb-server reads remotes from
    // manager_options), because it can set a 1 s inactivity probe.
    let remote = format!("target=\"ptcp:{port}:127.0.0.1\"");
    sb.vsctl(&[
        "--",
        "--id=@m",
        "create",
        "Manager",
        &remote,
        "inactivity_probe=1000",
        "--",
        "add",
        "Open_vSwitch",
        ".",
        "manager_options",
        "@m",
    ]);
    let target = format!("tcp:127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let tcp = loop {
        match Client::connect(&target).await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {target}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(tcp.list_dbs().await.unwrap().contains(&s("Open_vSwitch")));
    tcp.echo().await.unwrap();
    // The server sends echo after 1 s of silence and drops the session if the
    // echo is not answered within another second; we answer it, so the session
    // is still alive after 4 idle seconds.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!tcp.is_closed());
    assert!(tcp.list_dbs().await.unwrap().contains(&s("Open_vSwitch")));

    assert!(matches!(
        Client::connect("ssl:127.0.0.1:1").await,
        Err(OvsdbError::BadTarget(_))
    ));
}

#[tokio::test]
async fn every_operation_kind_works_against_the_server() {
    let _lock = support::lock();
    let sb = Sandbox::start();
    let c = connect(&sb).await;
    let tag = Value::string_map(&[("test", "ops")]);
    let r = c
        .transact(
            VSWITCH_DB,
            vec![
                Operation::Comment(s("solive ovsdb test")),
                Operation::Insert {
                    table: s("Queue"),
                    row: Row::from([
                        (
                            s("other_config"),
                            Value::string_map(&[("max-rate", "1000000")]),
                        ),
                        (s("external_ids"), tag.clone()),
                    ]),
                    uuid_name: Some(s("q")),
                },
                Operation::Insert {
                    table: s("QoS"),
                    row: Row::from([
                        (s("type"), "linux-htb".into()),
                        (
                            s("queues"),
                            Value::Map(vec![(Atom::Integer(1), Atom::NamedUuid(s("q")))]),
                        ),
                        (s("external_ids"), tag.clone()),
                    ]),
                    uuid_name: None,
                },
            ],
        )
        .await
        .unwrap();
    let queue = r[1].uuid.unwrap();
    let qos = r[2].uuid.unwrap();
    assert_eq!(
        get(&sb, &["qos", &qos.to_string(), "queues"]),
        format!("{{1={queue}}}")
    );

    let by_tag = || vec![Condition::includes("external_ids", tag.clone())];
    let r = c
        .transact(
            VSWITCH_DB,
            vec![
                Operation::Update {
                    table: s("QoS"),
                    r#where: vec![Condition::uuid(qos)],
                    row: Row::from([(
                        s("other_config"),
                        Value::string_map(&[("max-rate", "5000000")]),
                    )]),
                },
                Operation::Mutate {
                    table: s("QoS"),
                    r#where: by_tag(),
                    mutations: vec![Mutation::new(
                        "external_ids",
                        Mutator::Insert,
                        Value::string_map(&[("extra", "yes")]),
                    )],
                },
                Operation::Wait {
                    table: s("QoS"),
                    r#where: vec![Condition::uuid(qos)],
                    columns: vec![s("type")],
                    until: WaitUntil::Equal,
                    rows: vec![Row::from([(s("type"), "linux-htb".into())])],
                    timeout: Some(Duration::ZERO),
                },
                Operation::Select {
                    table: s("QoS"),
                    r#where: by_tag(),
                    columns: Some(vec![s("_uuid"), s("other_config"), s("external_ids")]),
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(r[0].count, Some(1));
    assert_eq!(r[1].count, Some(1));
    let selected = r[3].rows.as_ref().unwrap();
    assert_eq!(selected.len(), 1);
    assert_eq!(
        selected[0]["other_config"].as_string_map()["max-rate"],
        "5000000"
    );
    assert_eq!(selected[0]["external_ids"].as_string_map()["extra"], "yes");
    assert_eq!(
        get(&sb, &["qos", &qos.to_string(), "other_config:max-rate"]),
        "\"5000000\""
    );
    assert_eq!(
        get(&sb, &["qos", &qos.to_string(), "external_ids:extra"]),
        "yes"
    );

    let r = c
        .transact(
            VSWITCH_DB,
            vec![
                Operation::Delete {
                    table: s("QoS"),
                    r#where: by_tag(),
                },
                Operation::Delete {
                    table: s("Queue"),
                    r#where: by_tag(),
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!((r[0].count, r[1].count), (Some(1), Some(1)));
    assert!(rows(&sb, "qos").is_empty());
    assert!(rows(&sb, "queue").is_empty());
}

#[tokio::test]
async fn a_failing_operation_is_reported_with_its_index_and_changes_nothing() {
    let _lock = support::lock();
    let sb = Sandbox::start();
    let c = connect(&sb).await;
    let err = c
        .transact(
            VSWITCH_DB,
            vec![
                Operation::Insert {
                    table: s("Queue"),
                    row: Row::from([(s("external_ids"), Value::string_map(&[("t", "fail")]))]),
                    uuid_name: None,
                },
                Operation::Comment(s("next one fails")),
                Operation::Wait {
                    table: s("Open_vSwitch"),
                    r#where: vec![],
                    columns: vec![s("next_cfg")],
                    until: WaitUntil::Equal,
                    rows: vec![Row::from([(s("next_cfg"), Value::integer(-42))])],
                    timeout: Some(Duration::ZERO),
                },
            ],
        )
        .await
        .unwrap_err();
    match &err {
        OvsdbError::OperationFailed {
            index: 2,
            op: "wait",
            error,
            ..
        } => {
            assert_eq!(error, "timed out")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("operation 2 (wait)"), "{err}");
    assert!(
        rows(&sb, "queue").is_empty(),
        "the failed transaction must not commit"
    );

    // A commit-time failure (a QoS referring to a Queue that does not exist).
    let ghost = uuid::Uuid::new_v4();
    let err = c
        .transact(
            VSWITCH_DB,
            vec![Operation::Insert {
                table: s("QoS"),
                row: Row::from([(
                    s("queues"),
                    Value::Map(vec![(Atom::Integer(1), Atom::Uuid(ghost))]),
                )]),
                uuid_name: None,
            }],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OvsdbError::OperationFailed {
                index: 1,
                op: "commit",
                ..
            }
        ),
        "unexpected {err:?}"
    );
}

#[tokio::test]
async fn monitor_delivers_a_bridge_added_by_vsctl() {
    let _lock = support::lock();
    let sb = Sandbox::start();
    let c = connect(&sb).await;
    let (initial, mut rx) = c
        .monitor(
            VSWITCH_DB,
            &[(
                "Bridge",
                MonitorRequest::columns(&["name", "datapath_type"]),
            )],
        )
        .await
        .unwrap();
    assert!(initial.get("Bridge").is_none_or(|t| t.is_empty()));
    sb.add_bridge("br-mon");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let upd = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .expect("no update for the new bridge")
            .expect("monitor closed");
        let found = upd
            .get("Bridge")
            .into_iter()
            .flat_map(|t| t.values())
            .any(|r| {
                r.old.is_none()
                    && r.new
                        .as_ref()
                        .is_some_and(|n| n["name"] == Value::string("br-mon"))
            });
        if found {
            break;
        }
    }
    // The same connection still answers requests while the monitor runs.
    assert!(vswitch::bridge(&c, "br-mon").await.unwrap().is_some());
}

#[tokio::test]
async fn bridge_helpers_agree_with_vsctl() {
    let _lock = support::lock();
    let sb = Sandbox::start();
    sb.add_bridge("br0");
    let c = connect(&sb).await;
    assert_eq!(vswitch::bridge(&c, "nope").await.unwrap(), None);
    assert!(matches!(
        vswitch::set_fail_mode(&c, "nope", "secure").await,
        Err(OvsdbError::NotFound { kind: "bridge", .. })
    ));

    vswitch::set_controller(&c, "br0", &["tcp:127.0.0.1:6653", "tcp:127.0.0.1:6654"])
        .await
        .unwrap();
    vswitch::set_controller(&c, "br0", &["tcp:127.0.0.1:6633"])
        .await
        .unwrap();
    assert_eq!(
        sb.vsctl(&["get-controller", "br0"]).trim(),
        "tcp:127.0.0.1:6633"
    );
    assert_eq!(
        rows(&sb, "controller").len(),
        1,
        "replaced controllers must go away"
    );

    vswitch::set_fail_mode(&c, "br0", "secure").await.unwrap();
    assert_eq!(get(&sb, &["bridge", "br0", "fail_mode"]), "secure");
    vswitch::set_protocols(&c, "br0", &["OpenFlow13"])
        .await
        .unwrap();
    assert_eq!(get(&sb, &["bridge", "br0", "protocols"]), "[OpenFlow13]");
    vswitch::set_datapath_type(&c, "br0", "netdev")
        .await
        .unwrap();

    let dpid_text = get(&sb, &["bridge", "br0", "datapath_id"]);
    let b = vswitch::bridge(&c, "br0").await.unwrap().unwrap();
    assert_eq!(b.name, "br0");
    assert_eq!(b.uuid.to_string(), get(&sb, &["bridge", "br0", "_uuid"]));
    assert_eq!(b.controllers, vec![s("tcp:127.0.0.1:6633")]);
    assert_eq!(b.fail_mode.as_deref(), Some("secure"));
    assert_eq!(b.protocols, vec![s("OpenFlow13")]);
    assert_eq!(b.datapath_type, "netdev");
    assert_eq!(b.ports, vec![s("br0")]);
    let expect = u64::from_str_radix(dpid_text.trim_matches('"'), 16).ok();
    assert!(expect.is_some(), "vswitchd set no datapath_id: {dpid_text}");
    assert_eq!(b.datapath_id, expect);

    vswitch::set_controller(&c, "br0", &[]).await.unwrap();
    assert!(rows(&sb, "controller").is_empty());
}

#[tokio::test]
async fn interfaces_carry_external_ids_and_ingress_policing() {
    let _lock = support::lock();
    let sb = Sandbox::start();
    sb.add_bridge("br0");
    sb.vsctl(&[
        "add-port",
        "br0",
        "vnet0",
        "--",
        "set",
        "interface",
        "vnet0",
        "type=internal",
        "external_ids:iface-id=vm1-nic0",
        "external_ids:vm-id=1b7e2d52-5a36-4c9a-9c1e-0d8c7f2c0a11",
        "external_ids:attached-mac=52:54:00:12:34:56",
    ]);
    let c = connect(&sb).await;
    let ofport = vswitch::wait_for_ofport(&c, "vnet0", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        ofport.to_string(),
        get(&sb, &["interface", "vnet0", "ofport"])
    );

    let ifaces = vswitch::interfaces(&c, "br0").await.unwrap();
    assert_eq!(
        ifaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["br0", "vnet0"]
    );
    let v = &ifaces[1];
    assert_eq!(v.port, "vnet0");
    assert_eq!(v.kind, "internal");
    assert_eq!(v.ofport, Some(ofport));
    assert_eq!(v.external_ids["iface-id"], "vm1-nic0");
    assert_eq!(v.external_ids["attached-mac"], "52:54:00:12:34:56");
    assert_eq!(
        v.external_ids["vm-id"],
        "1b7e2d52-5a36-4c9a-9c1e-0d8c7f2c0a11"
    );
    assert_eq!(v.ingress_policing_rate, 0);
    assert_eq!(
        vswitch::port_of_interface(&c, "vnet0").await.unwrap(),
        Some(s("vnet0"))
    );
    assert_eq!(vswitch::port_of_interface(&c, "nope").await.unwrap(), None);

    vswitch::set_ingress_policing(&c, "vnet0", 10_000, 1_000)
        .await
        .unwrap();
    assert_eq!(
        get(&sb, &["interface", "vnet0", "ingress_policing_rate"]),
        "10000"
    );
    assert_eq!(
        get(&sb, &["interface", "vnet0", "ingress_policing_burst"]),
        "1000"
    );
    let v = vswitch::interface(&c, "vnet0").await.unwrap().unwrap();
    assert_eq!(
        (v.ingress_policing_rate, v.ingress_policing_burst),
        (10_000, 1_000)
    );
    vswitch::set_ingress_policing(&c, "vnet0", 0, 0)
        .await
        .unwrap();
    assert_eq!(
        get(&sb, &["interface", "vnet0", "ingress_policing_rate"]),
        "0"
    );
    assert!(matches!(
        vswitch::set_ingress_policing(&c, "nope", 1, 1).await,
        Err(OvsdbError::NotFound {
            kind: "interface",
            ..
        })
    ));
}

#[tokio::test]
async fn htb_qos_is_created_replaced_without_orphans_and_cleaned_up() {
    let _lock = support::lock();
    let sb = Sandbox::start();
    sb.add_bridge("br0");
    for p in ["p1", "p2"] {
        sb.vsctl(&[
            "add-port",
            "br0",
            p,
            "--",
            "set",
            "interface",
            p,
            "type=internal",
        ]);
    }
    // A QoS that is not ours must survive everything below.
    sb.vsctl(&[
        "--",
        "--id=@q",
        "create",
        "qos",
        "type=linux-htb",
        "external_ids:mine=no",
    ]);
    let c = connect(&sb).await;
    let q = |min, max, prio| QueueConfig {
        min_rate: min,
        max_rate: max,
        priority: prio,
        burst: None,
    };

    let qos1 = vswitch::set_htb_qos(
        &c,
        "p1",
        100_000_000,
        &[
            (0, q(None, Some(50_000_000), None)),
            (1, q(Some(20_000_000), None, Some(1))),
        ],
        "mig-a",
    )
    .await
    .unwrap();
    assert_eq!(get(&sb, &["port", "p1", "qos"]), qos1.to_string());
    let qid = qos1.to_string();
    assert_eq!(get(&sb, &["qos", &qid, "type"]), "linux-htb");
    assert_eq!(
        get(&sb, &["qos", &qid, "other_config:max-rate"]),
        "\"100000000\""
    );
    assert_eq!(
        get(&sb, &["qos", &qid, &format!("external_ids:{OWNER_KEY}")]),
        "mig-a"
    );
    let queues = rows(&sb, "queue");
    assert_eq!(queues.len(), 2);
    for u in &queues {
        assert_eq!(
            get(&sb, &["queue", u, &format!("external_ids:{OWNER_KEY}")]),
            "mig-a"
        );
    }
    let owned = vswitch::owned_qos(&c, "mig-a").await.unwrap();
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0].ports, vec![s("p1")]);
    assert_eq!(owned[0].max_rate, Some(100_000_000));
    let q1 = owned[0].queues[&1].to_string();
    assert_eq!(
        get(&sb, &["queue", &q1, "other_config:min-rate"]),
        "\"20000000\""
    );
    assert_eq!(get(&sb, &["queue", &q1, "other_config:priority"]), "\"1\"");
    let q0 = owned[0].queues[&0].to_string();
    assert_eq!(
        get(&sb, &["queue", &q0, "other_config:max-rate"]),
        "\"50000000\""
    );

    // Replacing it leaves exactly the new rows.
    let qos2 = vswitch::set_htb_qos(
        &c,
        "p1",
        80_000_000,
        &[(0, q(Some(1_000), None, None))],
        "mig-a",
    )
    .await
    .unwrap();
    assert_ne!(qos1, qos2);
    assert_eq!(get(&sb, &["port", "p1", "qos"]), qos2.to_string());
    assert_eq!(rows(&sb, "qos").len(), 2, "ours and the foreign one");
    assert_eq!(rows(&sb, "queue").len(), 1, "the old queues must be gone");

    // clear_qos removes the reference and our rows.
    vswitch::clear_qos(&c, "p1", "mig-a").await.unwrap();
    assert_eq!(get(&sb, &["port", "p1", "qos"]), "[]");
    assert_eq!(rows(&sb, "qos").len(), 1);
    assert!(rows(&sb, "queue").is_empty());

    // Two owners on two ports; cleanup of one leaves the other and nothing dangling.
    vswitch::set_htb_qos(
        &c,
        "p1",
        10_000_000,
        &[(0, q(None, Some(1_000_000), None))],
        "mig-a",
    )
    .await
    .unwrap();
    let keep = vswitch::set_htb_qos(
        &c,
        "p2",
        10_000_000,
        &[(0, q(None, Some(2_000_000), None))],
        "mig-b",
    )
    .await
    .unwrap();
    let deleted = vswitch::cleanup_owned(&c, "mig-a").await.unwrap();
    assert_eq!(deleted, 2);
    assert!(vswitch::owned_qos(&c, "mig-a").await.unwrap().is_empty());
    assert_eq!(get(&sb, &["port", "p1", "qos"]), "[]");
    assert_eq!(get(&sb, &["port", "p2", "qos"]), keep.to_string());
    assert_eq!(rows(&sb, "qos").len(), 2);
    assert_eq!(rows(&sb, "queue").len(), 1);
    vswitch::cleanup_owned(&c, "mig-b").await.unwrap();
    assert_eq!(get(&sb, &["port", "p2", "qos"]), "[]");
    assert_eq!(rows(&sb, "qos").len(), 1, "only the foreign QoS is left");
    assert!(rows(&sb, "queue").is_empty());
    assert_eq!(vswitch::cleanup_owned(&c, "mig-b").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_going_away_fails_requests_promptly() {
    let _lock = support::lock();
    let sb = Sandbox::start();
    sb.add_bridge("br0");
    let c = connect(&sb).await.with_timeout(Duration::from_secs(60));
    let (_, mut updates) = c
        .monitor(
            VSWITCH_DB,
            &[("Bridge", MonitorRequest::columns(&["name"]))],
        )
        .await
        .unwrap();
    // A wait the server holds open until its (long) timeout.
    let c2 = c.clone();
    let pending = tokio::spawn(async move {
        c2.transact(
            VSWITCH_DB,
            vec![Operation::Wait {
                table: s("Bridge"),
                r#where: vec![Condition::eq("name", "br0")],
                columns: vec![s("name")],
                until: WaitUntil::Equal,
                rows: vec![Row::from([(s("name"), "never".into())])],
                timeout: Some(Duration::from_secs(50)),
            }],
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished());
    tokio::task::spawn_blocking(move || drop(sb)).await.unwrap();
    let stopped = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(3), pending)
        .await
        .expect("the pending request hung after the server stopped")
        .unwrap();
    assert!(matches!(r, Err(OvsdbError::Disconnected)), "{r:?}");
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        while updates.recv().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "the monitor channel did not close");
    assert!(c.is_closed());
    assert!(matches!(c.list_dbs().await, Err(OvsdbError::Disconnected)));
    assert!(stopped.elapsed() < Duration::from_secs(3));
}
