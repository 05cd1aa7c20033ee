//! `[cluster]`: replicas on a real etcd (started here), one leader at a time,
//! and switch roles fenced by the election's generation on a real Open
//! vSwitch.
//!
//! - The switch itself refuses a deposed master: two sessions to one bridge
//!   claim MASTER in turn; the older one's writes and its stale re-claim are
//!   refused by ovs-vswitchd.
//! - Takeover: two `solive serve` replicas (the real binary) share an etcd;
//!   the leader is killed with SIGKILL; the standby leads within a bounded
//!   time, claims MASTER with a newer generation, and puts the reservation
//!   that was in force back on the bridges (they were wiped after the kill).
//!   The time it took is printed (a figure, not an assertion).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use solive::openflow::{
    Action, Body, ControllerRole, ErrorCode, FlowMod, Instruction, Match, Role,
};
use solive::switch::{self, SessionConfig, SwitchError, SwitchEvent, SwitchHandle};
use support::{eventually, free_port, KillOnDrop, Sandbox};
use tokio::sync::{mpsc, watch};

/// A one-member etcd in a temporary directory, killed on drop.
struct Etcd {
    _dir: tempfile::TempDir,
    _proc: KillOnDrop,
    url: String,
}

impl Etcd {
    async fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let proc = Command::new("etcd")
            .args(["--name", "solive-test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("solive-test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian's etcd-server; ovs/install.sh installs it)");
        let etcd = Etcd {
            _dir: dir,
            _proc: KillOnDrop(proc),
            url,
        };
        let health = format!("{}/health", etcd.url);
        eventually(20, "etcd healthy", || async {
            let r = reqwest::get(&health).await.map_err(|e| e.to_string())?;
            let v: Value = r.json().await.map_err(|e| e.to_string())?;
            if v["health"] == "true" {
                Ok(())
            } else {
                Err(v.to_string())
            }
        })
        .await;
        etcd
    }
}

/// A switch listener of the test's own whose sessions claim `role`.
async fn listener_with_role(
    role: watch::Receiver<Role>,
) -> (u16, mpsc::UnboundedReceiver<SwitchEvent>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    let config = SessionConfig {
        role: Some(role),
        ..SessionConfig::default()
    };
    tokio::spawn(switch::listen(l, config, tx, std::future::pending()));
    (port, rx)
}

async fn connected(events: &mut mpsc::UnboundedReceiver<SwitchEvent>) -> SwitchHandle {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("the bridge connected within 20 s")
            .expect("listener running");
        if let SwitchEvent::Connected(h) = ev {
            return h;
        }
    }
}

fn claim(role: ControllerRole, generation_id: u64) -> Role {
    Role {
        role,
        generation_id,
    }
}

/// A flow only this test writes (priority 7, cookie 0x7e57).
fn write(
    h: &SwitchHandle,
    tcp_port: u16,
) -> impl std::future::Future<Output = Result<(), SwitchError>> + '_ {
    let fm = FlowMod::add(
        0,
        7,
        Match::new()
            .eth_type(0x0800)
            .ip_proto(6)
            .tcp_dst(tcp_port, None),
        vec![Instruction::ApplyActions(vec![Action::output(
            solive::openflow::port::NORMAL,
        )])],
    )
    .cookie(0x7e57);
    h.send_all("test flow", vec![Body::FlowMod(fm)])
}

fn is_slave_refusal(r: Result<(), SwitchError>) -> bool {
    matches!(
        r,
        Err(SwitchError::Rejected { error, .. })
            if error.code == ErrorCode::BadRequest(solive::openflow::messages::BadRequestCode::IsSlave)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switch_refuses_a_deposed_master() {
    let _lock = support::lock();
    let sb = Sandbox::start();
    sb.add_bridge("br0");
    let (role1_tx, role1) = watch::channel(claim(ControllerRole::Master, 5));
    let (role2_tx, role2) = watch::channel(claim(ControllerRole::Slave, 5));
    let (p1, mut ev1) = listener_with_role(role1).await;
    let (p2, mut ev2) = listener_with_role(role2).await;
    sb.vsctl(&[
        "set",
        "bridge",
        "br0",
        "protocols=OpenFlow13",
        "fail_mode=secure",
    ]);
    sb.vsctl(&[
        "set-controller",
        "br0",
        &format!("tcp:127.0.0.1:{p1}"),
        &format!("tcp:127.0.0.1:{p2}"),
    ]);
    let one = connected(&mut ev1).await;
    let two = connected(&mut ev2).await;
    let roles = || sb.vsctl(&["--columns=target,role", "list", "controller"]);
    eventually(10, "roles granted", || async {
        let r = roles();
        if r.contains("master") && r.contains("slave") {
            Ok(())
        } else {
            Err(r)
        }
    })
    .await;

    // The master writes; the slave cannot.
    write(&one, 1001).await.expect("the master writes");
    assert!(
        is_slave_refusal(write(&two, 1002).await),
        "a slave's write was accepted"
    );

    // A newer leader claims MASTER with a newer generation: the first is
    // demoted by the switch and its writes are refused from then on.
    role2_tx.send(claim(ControllerRole::Master, 6)).unwrap();
    eventually(10, "the second session is master", || async {
        match write(&two, 1003).await {
            Ok(()) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    assert!(
        is_slave_refusal(write(&one, 1004).await),
        "the deposed master's write was accepted"
    );
    // Its claim again with its old generation is stale: refused, and the
    // session ends rather than look usable.
    role1_tx.send(claim(ControllerRole::Master, 5)).unwrap();
    let reason = loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), ev1.recv())
            .await
            .expect("the stale session ended within 10 s")
            .unwrap();
        if let SwitchEvent::Disconnected { reason, .. } = ev {
            break reason;
        }
    };
    assert!(
        reason.contains("refused role master with generation 5"),
        "{reason}"
    );
    assert!(reason.contains("STALE"), "{reason}");
    let flows = sb.ofctl(&["dump-flows", "br0"]);
    assert!(
        flows.contains("tp_dst=1001") && flows.contains("tp_dst=1003"),
        "{flows}"
    );
    assert!(
        !flows.contains("tp_dst=1002") && !flows.contains("tp_dst=1004"),
        "{flows}"
    );
}

/// A replica's configuration: the two hosts' bridges in one sandbox, both
/// replicas' OpenFlow targets.
fn replica_toml(
    name: &str,
    sb: &Sandbox,
    etcd: &str,
    api: u16,
    of: u16,
    targets: &[u16],
) -> String {
    let mut t = format!(
        "[controller]\nopenflow_listen = \"127.0.0.1:{of}\"\nperiod_ms = 200\n\
         echo_interval_ms = 1000\nrequest_timeout_ms = 2000\n\
         [api]\nlisten = \"127.0.0.1:{api}\"\n{}",
        cluster_section(name, etcd, targets)
    );
    for (i, h) in ["h1", "h2"].iter().enumerate() {
        t += &format!(
            "[[hosts]]\nname = \"{h}\"\novsdb = \"{}\"\nbridge = \"br{i}\"\nuplink = \"br{i}\"\n\
             capacity_mbps = 100\naddress = \"10.0.0.{}\"\n",
            sb.db,
            i + 1
        );
    }
    t
}

/// Waits until the replica whose OpenFlow port is `of` is master on both
/// bridges (`ovs-vsctl list controller`).
async fn until_master(sb: &Sandbox, of: u16, what: &str) {
    let master = format!("tcp:127.0.0.1:{of}\"\nrole                : master");
    eventually(20, what, || async {
        let r = sb.vsctl(&["--columns=target,role,is_connected", "list", "controller"]);
        if r.matches(&master).count() == 2 {
            Ok(())
        } else {
            Err(r)
        }
    })
    .await;
}

/// `[cluster]` for replica `name` of a cluster whose replicas listen for
/// OpenFlow on `targets` (ports on 127.0.0.1).
fn cluster_section(name: &str, etcd: &str, targets: &[u16]) -> String {
    let targets: Vec<String> = targets
        .iter()
        .map(|p| format!("\"tcp:127.0.0.1:{p}\""))
        .collect();
    format!(
        "[cluster]\nendpoints = [\"{etcd}\"]\nname = \"{name}\"\nlease_ms = 2000\n\
         openflow_targets = [{}]\n",
        targets.join(", ")
    )
}

async fn until_leader(r: &Replica) {
    eventually(30, &format!("{} leads", r.name), || async {
        let h = r.health().await?;
        if h["status"] == "ok" {
            Ok(())
        } else {
            Err(h.to_string())
        }
    })
    .await;
}

async fn until_standby(r: &Replica, leader: &str) {
    eventually(
        20,
        &format!("{} stands by behind {leader}", r.name),
        || async {
            let h = r.health().await?;
            if h["status"] == "standby" && h["leader"] == leader {
                Ok(())
            } else {
                Err(h.to_string())
            }
        },
    )
    .await;
}

struct Replica {
    name: &'static str,
    api: String,
    proc: KillOnDrop,
    log: std::path::PathBuf,
}

impl Replica {
    fn start(name: &'static str, dir: &std::path::Path, toml: &str, api: u16) -> Replica {
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, toml).unwrap();
        let log = dir.join(format!("{name}.log"));
        let proc = Command::new(env!("CARGO_BIN_EXE_solive"))
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .env("RUST_LOG", "solive=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Replica {
            name,
            api: format!("http://127.0.0.1:{api}"),
            proc: KillOnDrop(proc),
            log,
        }
    }

    async fn get(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.api))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn health(&self) -> Result<Value, String> {
        let r = reqwest::get(format!("{}/v1/health", self.api))
            .await
            .map_err(|e| e.to_string())?;
        r.json().await.map_err(|e| e.to_string())
    }

    /// Its log, without the terminal's colour codes.
    fn log(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                chars.by_ref().find(|c| *c == 'm');
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The generation it claimed when elected, from its log.
    fn generation(&self) -> Option<u64> {
        let log = self.log();
        let line = log.lines().find(|l| l.contains("elected leader"))?;
        line.split("generation=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

fn meters_and_flows(sb: &Sandbox, br: &str) -> String {
    sb.ofctl(&["dump-flows", br]) + &sb.ofctl(&["dump-meters", br])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_the_switches_and_the_reservations() {
    let _lock = support::lock();
    let etcd = Etcd::start().await;
    let sb = Sandbox::start();
    sb.add_bridge("br0");
    sb.add_bridge("br1");
    let dir = tempfile::tempdir().unwrap();
    let (of_a, of_b, api_a, api_b) = (free_port(), free_port(), free_port(), free_port());
    let a = Replica::start(
        "a",
        dir.path(),
        &replica_toml("a", &sb, &etcd.url, api_a, of_a, &[of_a, of_b]),
        api_a,
    );
    until_leader(&a).await;
    let b = Replica::start(
        "b",
        dir.path(),
        &replica_toml("b", &sb, &etcd.url, api_b, of_b, &[of_a, of_b]),
        api_b,
    );
    // The standby says who leads, and refuses everything else with a 503.
    let h = eventually(20, "b stands by", || async {
        let h = b.health().await?;
        if h["status"] == "standby" && h["leader"] == "a" {
            Ok(h)
        } else {
            Err(h.to_string())
        }
    })
    .await;
    let first_generation = h["generation"].as_u64().unwrap();
    let r = reqwest::get(format!("{}/v1/reservations", b.api))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");

    // Both bridges list both replicas; a is master, b slave.
    let roles = || sb.vsctl(&["--columns=target,role,is_connected", "list", "controller"]);
    eventually(20, "a master and b slave on both bridges", || async {
        let r = roles();
        let master = format!("tcp:127.0.0.1:{of_a}\"\nrole                : master");
        let slave = format!("tcp:127.0.0.1:{of_b}\"\nrole                : slave");
        if r.matches(&master).count() == 2 && r.matches(&slave).count() == 2 {
            Ok(())
        } else {
            Err(r)
        }
    })
    .await;

    let res: Value = reqwest::Client::new()
        .post(format!("{}/v1/reservations", a.api))
        .json(&json!({"source": "h1", "destination": "h2", "urgency": 60}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rid = res["id"].as_u64().expect("reservation created");
    let installed = |br: &'static str| {
        let sb = &sb;
        move || async move {
            let f = meters_and_flows(sb, br);
            if f.contains("nw_dst=10.0.0.2") {
                Ok(f)
            } else {
                Err(f)
            }
        }
    };
    let before = eventually(20, "the reservation's flows on br0", installed("br0")).await;
    eprintln!("br0 with the reservation (leader a):\n{before}");

    // The leader dies; everything it put on the bridges goes too (as if its
    // hard timeouts had run out), so only the new leader can put it back.
    let killed = Instant::now();
    let mut a = a;
    a.proc.0.kill().unwrap();
    a.proc.0.wait().unwrap();
    for br in ["br0", "br1"] {
        sb.ofctl(&["del-flows", br]);
        sb.ofctl(&["del-meters", br]);
    }
    until_leader(&b).await;
    let takeover = killed.elapsed();
    let r = b.get(&format!("/v1/reservations/{rid}")).await;
    assert_eq!(r["state"], "active", "{r}");
    assert_eq!(r["urgency"], 60.0, "{r}");
    let after = eventually(20, "the reservation back on br0", installed("br0")).await;
    let restored = killed.elapsed();
    until_master(&sb, of_b, "b master on both bridges").await;
    let generation = b.generation().expect("b's election in its log");
    let health = b.health().await.unwrap();
    assert_eq!(
        (
            &health["role"],
            &health["name"],
            health["generation"].as_u64()
        ),
        (&json!("leader"), &json!("b"), Some(generation)),
        "{health}"
    );
    assert!(
        generation > first_generation,
        "{generation} after {first_generation}"
    );
    eprintln!(
        "takeover: b answered as leader {:.2} s after a was killed, the reservation was back on br0 after {:.2} s \
         (lease 2 s; generation {first_generation} -> {generation}); br0 now:\n{after}",
        takeover.as_secs_f64(),
        restored.as_secs_f64(),
    );
    assert!(
        !b.log().contains("cannot take over"),
        "{}: {}",
        b.name,
        b.log()
    );

    // a comes back, as a standby. Then b is paused (SIGSTOP) past its lease:
    // a takes over; b, resumed, finds its lease gone and stops at once with
    // status 75, having changed nothing.
    let a = Replica::start(
        "a",
        dir.path(),
        &replica_toml("a", &sb, &etcd.url, api_a, of_a, &[of_a, of_b]),
        api_a,
    );
    until_standby(&a, "b").await;
    let pid = b.proc.0.id().to_string();
    support::run(Command::new("kill").args(["-STOP", &pid]));
    until_leader(&a).await;
    until_master(&sb, of_a, "a master on both bridges").await;
    support::run(Command::new("kill").args(["-CONT", &pid]));
    let mut b = b;
    let status = eventually(20, "b stops once resumed", || {
        let s = b.proc.0.try_wait();
        async move {
            match s {
                Ok(Some(s)) => Ok(s),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_eq!(
        status.code(),
        Some(solive::cluster::replica::DEPOSED_EXIT),
        "{}",
        b.log()
    );
    assert!(b.log().contains("leadership lost"), "{}", b.log());
    assert!(a.generation().unwrap() > generation);
    let r = a.get(&format!("/v1/reservations/{rid}")).await;
    assert_eq!(r["state"], "active", "{r}");
    eventually(20, "the reservation still on br0", installed("br0")).await;
}

/// A takeover in the middle of a real evacuation (QEMU + libvirt testbed):
/// the leader is killed while the first guest migrates. The standby leads,
/// watches that migration to its end without starting it again, migrates
/// the other guest, and the record is complete with the takeover noted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_mid_evacuation_loses_no_vm_and_starts_none_twice() {
    use support::testbed::Testbed;
    let _lock = support::lock();
    let etcd = Etcd::start().await;
    let tb = Testbed::up("evac-2vm", "/tmp/solive-testbed-takeover");
    tb.wait_ready("h1", "quiet", 90);
    tb.wait_ready("h1", "send", 90);
    let base = std::fs::read_to_string(tb.state.join("solive.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (of_a, of_b, api_a, api_b) = (free_port(), free_port(), free_port(), free_port());
    let toml = |name: &str, of: u16, api: u16| {
        base.replace("127.0.0.1:6653", &format!("127.0.0.1:{of}"))
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{api}"))
            + &cluster_section(name, &etcd.url, &[of_a, of_b])
    };
    let a = Replica::start("a", dir.path(), &toml("a", of_a, api_a), api_a);
    until_leader(&a).await;
    let b = Replica::start("b", dir.path(), &toml("b", of_b, api_b), api_b);
    until_standby(&b, "a").await;

    let (s, v) = support::testbed::post_json(
        &a.api,
        "/v1/evacuations",
        json!({"source": "h1", "destination": "h2", "urgency": 80, "order": ["quiet", "send"], "concurrency": 1}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_u64().unwrap();
    eventually(120, "quiet migrating", || async {
        let r = a.get(&format!("/v1/evacuations/{id}")).await;
        match r["vms"][0]["progress"]["data_processed"].as_u64() {
            Some(b) if b > 2 << 20 => Ok(()),
            _ => Err(r["vms"][0].to_string()),
        }
    })
    .await;
    let mut a = a;
    a.proc.0.kill().unwrap();
    a.proc.0.wait().unwrap();
    let killed = Instant::now();
    until_leader(&b).await;
    eprintln!(
        "b leads {:.2} s after a was killed",
        killed.elapsed().as_secs_f64()
    );
    let rec = eventually(300, "the evacuation finished under b", || async {
        let r = b.get(&format!("/v1/evacuations/{id}")).await;
        if ["done", "failed", "cancelled", "interrupted"]
            .contains(&r["state"].as_str().unwrap_or(""))
        {
            Ok(r)
        } else {
            Err(format!("{} {}", r["state"], r["vms"]))
        }
    })
    .await;
    eprintln!("{}", solive::client::evacuation_summary(&rec));
    eprintln!("takeovers: {}", rec["takeovers"]);
    tb.assert_running("h2", "quiet");
    tb.assert_running("h2", "send");
    assert_eq!(rec["state"], "done", "{rec:#}");
    assert_eq!(rec["takeovers"].as_array().unwrap().len(), 1, "{rec:#}");
    assert_eq!(
        rec["takeovers"][0]["in_flight"],
        json!(["quiet"]),
        "{rec:#}"
    );
    for v in rec["vms"].as_array().unwrap() {
        assert_eq!(v["state"], "done", "{v:#}");
    }
    assert!(tb.virsh("h1", &["list", "--name"]).trim().is_empty());
    // Nothing is left reserved: the inherited migration's reservation was
    // released once it ended, the second's when it did.
    assert_eq!(b.get("/v1/reservations").await, json!([]));
    drop(b);
    tb.down();
}
