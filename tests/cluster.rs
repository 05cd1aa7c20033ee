//! `[cluster]`: replicas on a real etcd (started here: three members on
//! loopback, which the tests kill and restart one by one), one leader at a
//! time, and switch roles fenced by the election's generation on a real
//! Open vSwitch.
//!
//! - The switch itself refuses a deposed master: two sessions to one bridge
//!   claim MASTER in turn; the older one's writes and its stale re-claim are
//!   refused by ovs-vswitchd.
//! - Takeover: three `solive serve` replicas (the real binary) share a
//!   3-member etcd; the leader is killed with SIGKILL; a standby leads within
//!   a bounded time, claims MASTER with a newer generation, and puts the
//!   reservation that was in force back on the bridges (they were wiped
//!   after the kill); the other standby stands by behind it. The time it
//!   took is printed (a figure, not an assertion). Then a leader paused past
//!   its lease is replaced and, resumed, exits with status 75.
//! - Quorum loss: two of the three etcd members are killed under three
//!   replicas with a reservation in force. The leader exits with status 75
//!   within the lease plus 3 s; for 6 s nobody leads, nobody is master on the
//!   bridges, every POST is refused, the standbys keep running and the
//!   reservation's flows and meters stay as they were. Once the members are
//!   restarted a standby leads and the reservation is in force under it. Both
//!   times are printed.
//! - Mid-evacuation (QEMU + libvirt testbed, two replicas, one etcd member):
//!   the standby finishes the evacuation the killed leader started, starting
//!   no VM twice.

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

/// One member of an [`Etcd`] cluster: its name, URLs and data directory
/// (kept when the process is killed, so a restarted member rejoins).
struct EtcdMember {
    name: String,
    client: String,
    peer: String,
    data: std::path::PathBuf,
    log: std::path::PathBuf,
    proc: Option<KillOnDrop>,
}

/// An etcd cluster of `n` members on loopback in a temporary directory,
/// killed on drop; members can be killed and started again one by one.
struct Etcd {
    _dir: tempfile::TempDir,
    members: Vec<EtcdMember>,
    initial_cluster: String,
}

impl Etcd {
    async fn start(n: usize) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<EtcdMember> = (0..n)
            .map(|i| EtcdMember {
                name: format!("solive-test-{i}"),
                client: format!("http://127.0.0.1:{}", free_port()),
                peer: format!("http://127.0.0.1:{}", free_port()),
                data: dir.path().join(format!("data-{i}")),
                log: dir.path().join(format!("etcd-{i}.log")),
                proc: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            _dir: dir,
            members,
            initial_cluster,
        };
        // Every member must run before any has a quorum.
        for i in 0..n {
            etcd.spawn(i);
        }
        etcd.healthy().await;
        etcd
    }

    /// Starts member `i` (again: its data directory is kept, so it rejoins).
    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap();
        let proc = Command::new("etcd")
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.data)
            .args(["--listen-client-urls", &m.client])
            .args(["--advertise-client-urls", &m.client])
            .args(["--listen-peer-urls", &m.peer])
            .args(["--initial-advertise-peer-urls", &m.peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "solive-test"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian's etcd-server; ovs/install.sh installs it)");
        self.members[i].proc = Some(KillOnDrop(proc));
    }

    /// Kills member `i` with SIGKILL.
    fn kill(&mut self, i: usize) {
        self.members[i].proc = None;
    }

    /// Waits until every running member reports a healthy cluster (a
    /// leader, and so a quorum).
    async fn healthy(&self) {
        for m in self.members.iter().filter(|m| m.proc.is_some()) {
            let health = format!("{}/health", m.client);
            eventually(20, &format!("etcd {} healthy", m.name), || async {
                let r = reqwest::get(&health).await.map_err(|e| e.to_string())?;
                let v: Value = r.json().await.map_err(|e| e.to_string())?;
                if v["health"] == "true" {
                    Ok(())
                } else {
                    Err(v.to_string())
                }
            })
            .await;
        }
    }

    /// The client URLs, as `[cluster] endpoints` lists them.
    fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
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
    etcd: &[String],
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
fn cluster_section(name: &str, etcd: &[String], targets: &[u16]) -> String {
    let targets: Vec<String> = targets
        .iter()
        .map(|p| format!("\"tcp:127.0.0.1:{p}\""))
        .collect();
    let endpoints: Vec<String> = etcd.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[cluster]\nendpoints = [{}]\nname = \"{name}\"\nlease_ms = 2000\n\
         openflow_targets = [{}]\n",
        endpoints.join(", "),
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

async fn until_standby(r: &Replica, leader: &str) -> Value {
    eventually(
        20,
        &format!("{} stands by behind {leader}", r.name),
        || async {
            // A replica that does not answer may have stopped: say why.
            let h = r
                .health()
                .await
                .map_err(|e| format!("{e}\n{}", r.log_tail(40)))?;
            if h["status"] == "standby" && h["leader"] == leader {
                Ok(h)
            } else {
                Err(h.to_string())
            }
        },
    )
    .await
}

struct Replica {
    name: &'static str,
    api: String,
    proc: KillOnDrop,
    log: std::path::PathBuf,
}

impl Replica {
    fn start(name: &'static str, dir: &std::path::Path, toml: &str, api: u16) -> Replica {
        let (proc, log) = support::serve_process(dir, name, toml);
        Replica {
            name,
            api: format!("http://127.0.0.1:{api}"),
            proc,
            log,
        }
    }

    async fn get(&self, path: &str) -> Value {
        support::get_json(&self.api, path).await
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

    /// The last `n` lines of its log.
    fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
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

/// Three replicas `a`, `b`, `c` of one cluster: their OpenFlow and API ports
/// and a directory for their configurations and logs.
struct Three<'a> {
    sb: &'a Sandbox,
    endpoints: Vec<String>,
    dir: tempfile::TempDir,
    of: [u16; 3],
    api: [u16; 3],
}

const NAMES: [&str; 3] = ["a", "b", "c"];

impl<'a> Three<'a> {
    fn new(sb: &'a Sandbox, etcd: &Etcd) -> Three<'a> {
        Three {
            sb,
            endpoints: etcd.endpoints(),
            dir: tempfile::tempdir().unwrap(),
            of: [free_port(), free_port(), free_port()],
            api: [free_port(), free_port(), free_port()],
        }
    }

    /// Starts replica `i`; every bridge lists all three replicas.
    fn start(&self, i: usize) -> Replica {
        let toml = replica_toml(
            NAMES[i],
            self.sb,
            &self.endpoints,
            self.api[i],
            self.of[i],
            &self.of,
        );
        Replica::start(NAMES[i], self.dir.path(), &toml, self.api[i])
    }

    /// Starts all three, `a` first so that it leads, and waits until `b`
    /// and `c` stand by behind it and `a` is master on both bridges; returns
    /// them and the generation `a` claimed.
    async fn start_all(&self) -> (Vec<Replica>, u64) {
        let a = self.start(0);
        until_leader(&a).await;
        let b = self.start(1);
        let h = until_standby(&b, "a").await;
        let c = self.start(2);
        until_standby(&c, "a").await;
        until_master(self.sb, self.of[0], "a master on both bridges").await;
        (vec![a, b, c], h["generation"].as_u64().unwrap())
    }
}

/// Waits until one of `rs[among]` answers as leader; its index.
async fn until_one_leads(rs: &[Replica], among: &[usize]) -> usize {
    eventually(30, "a replica leads", || async {
        let mut seen = vec![];
        for &i in among {
            match rs[i].health().await {
                Ok(h) if h["status"] == "ok" => return Ok(i),
                Ok(h) => seen.push(format!("{}: {h}", rs[i].name)),
                Err(e) => seen.push(format!("{}: {e}", rs[i].name)),
            }
        }
        Err(seen.join("; "))
    })
    .await
}

/// Waits until replica `r` has exited; its status.
async fn until_exited(r: &mut Replica, secs: u64, what: &str) -> std::process::ExitStatus {
    eventually(secs, what, || {
        let s = r.proc.0.try_wait();
        async move {
            match s {
                Ok(Some(s)) => Ok(s),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await
}

async fn post_reservation(api: &str) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::new()
        .post(format!("{api}/v1/reservations"))
        .json(&json!({"source": "h1", "destination": "h2", "urgency": 60}))
        .send()
        .await
}

/// Waits until the reservation's migration flow is on `br`; the bridge's
/// flows and meters.
async fn until_installed(sb: &Sandbox, br: &str, what: &str) -> String {
    eventually(20, what, || async {
        let f = meters_and_flows(sb, br);
        if f.contains("nw_dst=10.0.0.2") {
            Ok(f)
        } else {
            Err(f)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_the_switches_and_the_reservations() {
    let _lock = support::lock();
    let etcd = Etcd::start(3).await;
    let sb = Sandbox::start();
    sb.add_bridge("br0");
    sb.add_bridge("br1");
    let three = Three::new(&sb, &etcd);
    let (mut rs, first_generation) = three.start_all().await;
    let of = three.of;
    // The standbys say who leads, and refuse everything else with a 503.
    for r in &rs[1..] {
        let r = reqwest::get(format!("{}/v1/reservations", r.api))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
    }

    // Both bridges list the three replicas; a is master, b and c slaves.
    let roles = || sb.vsctl(&["--columns=target,role,is_connected", "list", "controller"]);
    eventually(20, "a master, b and c slaves on both bridges", || async {
        let r = roles();
        let role = |i: usize, role: &str| {
            r.matches(&format!(
                "tcp:127.0.0.1:{}\"\nrole                : {role}",
                of[i]
            ))
            .count()
        };
        if role(0, "master") == 2 && role(1, "slave") == 2 && role(2, "slave") == 2 {
            Ok(())
        } else {
            Err(r)
        }
    })
    .await;

    let res: Value = post_reservation(&rs[0].api)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rid = res["id"].as_u64().expect("reservation created");
    let before = until_installed(&sb, "br0", "the reservation's flows on br0").await;
    eprintln!("br0 with the reservation (leader a):\n{before}");

    // The leader dies; everything it put on the bridges goes too (as if its
    // hard timeouts had run out), so only the new leader can put it back.
    let killed = Instant::now();
    rs[0].proc.0.kill().unwrap();
    rs[0].proc.0.wait().unwrap();
    for br in ["br0", "br1"] {
        sb.ofctl(&["del-flows", br]);
        sb.ofctl(&["del-meters", br]);
    }
    let new = until_one_leads(&rs, &[1, 2]).await;
    let takeover = killed.elapsed();
    let other = 3 - new;
    let (name, other_name) = (rs[new].name, rs[other].name);
    let r = rs[new].get(&format!("/v1/reservations/{rid}")).await;
    assert_eq!(r["state"], "active", "{r}");
    assert_eq!(r["urgency"], 60.0, "{r}");
    let after = until_installed(&sb, "br0", "the reservation back on br0").await;
    let restored = killed.elapsed();
    until_master(&sb, of[new], &format!("{name} master on both bridges")).await;
    until_standby(&rs[other], name).await;
    let generation = rs[new].generation().expect("the election in its log");
    let health = rs[new].health().await.unwrap();
    assert_eq!(
        (
            &health["role"],
            &health["name"],
            health["generation"].as_u64()
        ),
        (&json!("leader"), &json!(name), Some(generation)),
        "{health}"
    );
    assert!(
        generation > first_generation,
        "{generation} after {first_generation}"
    );
    assert!(
        rs[other].generation().is_none(),
        "{other_name} was elected too: {}",
        rs[other].log()
    );
    eprintln!(
        "takeover (3 replicas, 3 etcd members): {name} answered as leader {:.2} s after a was killed, \
         the reservation was back on br0 after {:.2} s (lease 2 s; generation {first_generation} -> \
         {generation}); {other_name} stands by behind it; br0 now:\n{after}",
        takeover.as_secs_f64(),
        restored.as_secs_f64(),
    );
    assert!(
        !rs[new].log().contains("cannot take over"),
        "{name}: {}",
        rs[new].log()
    );

    // a comes back, as a standby. Then the leader is paused (SIGSTOP) past
    // its lease: another replica takes over; the paused one, resumed, finds
    // its lease gone and stops at once with status 75, having changed
    // nothing.
    rs[0] = three.start(0);
    until_standby(&rs[0], name).await;
    let pid = rs[new].proc.0.id().to_string();
    support::run(Command::new("kill").args(["-STOP", &pid]));
    let next = until_one_leads(&rs, &[0, other]).await;
    until_master(&sb, of[next], "the next leader master on both bridges").await;
    support::run(Command::new("kill").args(["-CONT", &pid]));
    let status = until_exited(&mut rs[new], 20, "the paused leader stops once resumed").await;
    let log = rs[new].log();
    assert_eq!(
        status.code(),
        Some(solive::cluster::replica::DEPOSED_EXIT),
        "{log}"
    );
    assert!(log.contains("leadership lost"), "{log}");
    assert!(rs[next].generation().unwrap() > generation);
    let r = rs[next].get(&format!("/v1/reservations/{rid}")).await;
    assert_eq!(r["state"], "active", "{r}");
    until_installed(&sb, "br0", "the reservation still on br0").await;
}

/// Both bridges' flows and meters without their counters, less the flows
/// with a hard timeout (the application flows, which a leader refreshes
/// every period and which the switch removes on its own without one).
fn bridges(sb: &Sandbox) -> String {
    ["br0", "br1"]
        .iter()
        .map(|br| {
            let flows = sb.ofctl(&["--no-stats", "dump-flows", br]);
            let kept: Vec<&str> = flows
                .lines()
                .filter(|l| !l.contains("hard_timeout="))
                .collect();
            format!(
                "{br}:\n{}\n{}",
                kept.join("\n"),
                sb.ofctl(&["dump-meters", br])
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The OpenFlow targets connected as master (`ovs-vsctl list controller`).
fn masters(sb: &Sandbox) -> Vec<String> {
    let r = sb.vsctl(&["--columns=target,role,is_connected", "list", "controller"]);
    r.split("\n\n")
        .filter(|c| c.contains(": master") && c.contains("is_connected        : true"))
        .map(|c| c.lines().next().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_etcd_quorum_the_leader_stops_and_nothing_acts() {
    let _lock = support::lock();
    let mut etcd = Etcd::start(3).await;
    let sb = Sandbox::start();
    sb.add_bridge("br0");
    sb.add_bridge("br1");
    let three = Three::new(&sb, &etcd);
    let (mut rs, first_generation) = three.start_all().await;
    let r = post_reservation(&rs[0].api).await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let rid = r.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    until_installed(&sb, "br0", "the reservation's flows on br0").await;
    // What the leader put on the bridges, once it no longer changes.
    let mut last = bridges(&sb);
    let before = eventually(10, "the bridges settled", || {
        let now = bridges(&sb);
        let same = now == last;
        last = now.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if same {
                Ok(now)
            } else {
                Err(now)
            }
        }
    })
    .await;

    // Two of the three etcd members die: no quorum. The leader cannot renew
    // its lease, and stops about a lease later with status 75.
    let cut = Instant::now();
    etcd.kill(1);
    etcd.kill(2);
    let status = until_exited(&mut rs[0], 10, "the leader stops without a quorum").await;
    let stepped_down = cut.elapsed();
    let log = rs[0].log();
    assert_eq!(
        status.code(),
        Some(solive::cluster::replica::DEPOSED_EXIT),
        "{log}"
    );
    assert!(log.contains("leadership lost"), "{log}");
    assert!(
        stepped_down < Duration::from_millis(2000 + 3000),
        "the leader stopped {stepped_down:?} after the quorum was lost (lease 2 s)"
    );

    // Nothing acts while the quorum is lost: the standbys stand by (and go
    // on running), nobody is master on the bridges, every write to the API
    // is refused, and the bridges keep what the leader put on them.
    eventually(5, "nobody master", || async {
        match masters(&sb) {
            m if m.is_empty() => Ok(()),
            m => Err(format!("{m:?}")),
        }
    })
    .await;
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(6) {
        for r in &mut rs[1..] {
            let h = r.health().await.unwrap_or_else(|e| {
                panic!(
                    "{} does not answer without a quorum: {e}\n{}",
                    r.name,
                    r.log()
                )
            });
            assert_eq!(h["status"], "standby", "{}: {h}", r.name);
            assert!(
                r.proc.0.try_wait().unwrap().is_none(),
                "{} stopped: {}",
                r.name,
                r.log()
            );
        }
        // a is gone (connection refused); b and c answer 503.
        for r in &rs {
            match post_reservation(&r.api).await.map(|r| r.status().as_u16()) {
                Ok(503) => {}
                Err(e) if r.name == "a" && e.is_connect() => {}
                s => panic!("{} answered a POST with {s:?} without a quorum", r.name),
            }
        }
        assert_eq!(masters(&sb), Vec::<String>::new());
        assert_eq!(bridges(&sb), before, "the bridges changed without a quorum");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for r in &rs[1..] {
        assert!(r.generation().is_none(), "{}: {}", r.name, r.log());
    }
    eprintln!(
        "quorum lost: the leader stopped (status 75) {:.2} s after 2 of 3 etcd members were killed \
         (lease 2 s); for {:.1} s after, b and c stood by, nobody was master, every POST was refused \
         and the bridges kept the reservation's flows and meters unchanged",
        stepped_down.as_secs_f64(),
        quiet.elapsed().as_secs_f64()
    );

    // The quorum is back: a standby is elected and the reservation is in
    // force under it.
    let back = Instant::now();
    etcd.spawn(1);
    etcd.spawn(2);
    let new = until_one_leads(&rs, &[1, 2]).await;
    let elected = back.elapsed();
    let name = rs[new].name;
    until_master(
        &sb,
        three.of[new],
        &format!("{name} master on both bridges"),
    )
    .await;
    let r = rs[new].get(&format!("/v1/reservations/{rid}")).await;
    assert_eq!(r["state"], "active", "{r}");
    let after = until_installed(&sb, "br0", "the reservation on br0 under the new leader").await;
    let in_force = back.elapsed();
    assert!(rs[new].generation().unwrap() > first_generation);
    until_standby(&rs[3 - new], name).await;
    eprintln!(
        "quorum back: {name} answered as leader {:.2} s after the 2 etcd members were restarted, \
         the reservation active and on br0 after {:.2} s; br0 now:\n{after}",
        elected.as_secs_f64(),
        in_force.as_secs_f64()
    );
}

/// A takeover in the middle of a real evacuation (QEMU + libvirt testbed;
/// three replicas on a three-member etcd): the leader is killed while the
/// first guest migrates. One standby leads (the other stands by behind it),
/// watches that migration to its end without starting it again, migrates
/// the other guest, and the record is complete with the takeover noted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_mid_evacuation_loses_no_vm_and_starts_none_twice() {
    use support::testbed::Testbed;
    let _lock = support::lock();
    let etcd = Etcd::start(3).await;
    let tb = Testbed::up("evac-2vm", "/tmp/solive-testbed-takeover");
    tb.wait_ready("h1", "quiet", 90);
    tb.wait_ready("h1", "send", 90);
    let base = std::fs::read_to_string(tb.state.join("solive.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let of = [free_port(), free_port(), free_port()];
    let api = [free_port(), free_port(), free_port()];
    let replica = |i: usize| {
        let toml = base
            .replace("127.0.0.1:6653", &format!("127.0.0.1:{}", of[i]))
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", api[i]))
            + &cluster_section(NAMES[i], &etcd.endpoints(), &of);
        Replica::start(NAMES[i], dir.path(), &toml, api[i])
    };
    let a = replica(0);
    until_leader(&a).await;
    let mut standbys = vec![replica(1), replica(2)];
    for r in &standbys {
        until_standby(r, "a").await;
    }

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
    let leads = until_one_leads(&standbys, &[0, 1]).await;
    let b = standbys.remove(leads);
    eprintln!(
        "{} leads {:.2} s after a was killed",
        b.name,
        killed.elapsed().as_secs_f64()
    );
    // The third stands by behind the new leader, and acts on nothing.
    until_standby(&standbys[0], b.name).await;
    let rec = eventually(
        300,
        "the evacuation finished under the new leader",
        || async {
            let r = b.get(&format!("/v1/evacuations/{id}")).await;
            if ["done", "failed", "cancelled", "interrupted"]
                .contains(&r["state"].as_str().unwrap_or(""))
            {
                Ok(r)
            } else {
                Err(format!("{} {}", r["state"], r["vms"]))
            }
        },
    )
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
    drop(standbys);
    tb.down();
}
