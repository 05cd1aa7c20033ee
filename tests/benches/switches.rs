//! Scale: 1,000 simulated switches on one `solive serve`, and on a leader
//! with two standbys (issue 14 item 7).
//!
//! The real binary (`solive serve`, release) runs with 1,000 `[[hosts]]` at
//! a 1 s period. Each host has its own datapath id, bridge and fabric
//! address. The controller learns a bridge's datapath id from the host's
//! OVSDB (it will not bind a switch to a host otherwise), so real
//! ovsdb-servers (Debian's, no ovs-vswitchd) hold the bridges: one server
//! per 50 hosts, each bridge a row with its `datapath_id` and
//! `datapath_type=netdev` (so enforcement is by meters) and no ports (a
//! server shared by many hosts would send every host's interfaces to every
//! host's monitor, which one ovsdb-server per host would not).
//!
//! The switches are tokio tasks in this process, TCP clients speaking
//! OpenFlow 1.3 through solive's own codec (`solive::openflow`): HELLO,
//! FEATURES_REPLY with the dpid, 32 ports in PORT_DESC (port 1 the uplink),
//! port statistics whose counters grow (uplink ~200 Mbit/s out, the others
//! ~5 Mbit/s), a flow table (a few flows of their own, plus whatever
//! FLOW_MODs add, modify or delete, with cookie masks and hard timeouts)
//! answered in flow statistics, a meter table (METER_MOD add/modify/delete)
//! answered in meter configuration and meter statistics, meter features,
//! ECHO, BARRIER and ROLE_REQUEST (MASTER/SLAVE/EQUAL with the generation
//! check; a SLAVE's FLOW_MOD or METER_MOD is refused with IS_SLAVE). Anything
//! else is logged once and answered with an OFPT_ERROR.
//!
//! 100 reservations between pairs of hosts (h0000→h0001, h0002→h0003, ...)
//! are in force during the measurement, so Algorithm 1 steps every period
//! and meters and migration flows are pushed to 200 switches.
//!
//! Measured over `SOLIVE_SWITCH_PERIODS` periods (default 60) after a
//! warm-up: solive's CPU (utime+stime from /proc/PID/stat) per period, as %
//! of one core, p50/p99 of the per-second samples and the mean; the
//! controller's `period_seconds` gauge scraped from `/metrics` every
//! second; the "sweep" as the switches see it: per period, from the first
//! request solive sends to any switch to the last (polls, reconciles,
//! FLOW_MOD/METER_MOD, barriers; not echoes); VmRSS and VmHWM; and the time
//! for all 1,000 switches to be connected and bound to their hosts.
//! The simulated switches run on one thread of this process on the same 2
//! cores: their CPU is printed too.
//!
//! Needs root and the packages of `ovs/install.sh` (ovsdb-server, etcd).
//!
//!     cargo bench --bench switches
//!     SOLIVE_SWITCH_PERIODS=20 SOLIVE_SWITCHES=200 cargo bench --bench switches
//!     SOLIVE_SWITCH_CLUSTER=0 cargo bench --bench switches   # one solive only

#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use solive::openflow::flow_mod::{FlowModCommand, TABLE_ALL};
use solive::openflow::messages::{BadRequestCode, RoleRequestFailedCode};
use solive::openflow::multipart::{
    FlowStats, MeterBandStats, MeterConfig, MeterFeatures, MeterStats, PortStats,
};
use solive::openflow::{
    Action, Body, ControllerRole, ErrorCode, ErrorMsg, FlowMod, Hello, Instruction, Match, Message,
    MeterBand, MeterCommand, MeterFlags, MultipartReply, MultipartReplyBody, MultipartRequestBody,
    OfCodec, Port, Role,
};
use support::{free_port, KillOnDrop};
use tokio_util::codec::Framed;

const PORTS: u32 = 32;
const HOSTS_PER_OVSDB: usize = 50;
const RESERVATIONS: usize = 100;
const WARMUP_PERIODS: u64 = 5;
const DPID_BASE: u64 = 0x0000_5a00_0000_0000;

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(s) => s.parse().unwrap_or_else(|_| {
            eprintln!("{name} must be a whole number, not {s:?}");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

fn host_name(i: usize) -> String {
    format!("h{i:04}")
}

fn dpid_of(i: usize) -> u64 {
    DPID_BASE + i as u64 + 1
}

// ---------------------------------------------------------------- switches

/// What every simulated switch's connections report to the bench.
#[derive(Default)]
struct Seen {
    /// Per target (replica): when each request from solive arrived (not
    /// echoes), to find each period's sweep.
    requests: Vec<Mutex<Vec<Instant>>>,
    /// Per target: connections past the handshake.
    handshakes: Vec<AtomicUsize>,
    flow_mods: AtomicUsize,
    meter_mods: AtomicUsize,
    /// METER_MODs by command (add, modify, delete) and refused.
    meter_cmds: [AtomicUsize; 4],
    refused_slave: AtomicUsize,
    unknown: Mutex<HashSet<String>>,
}

impl Seen {
    fn new(targets: usize) -> Seen {
        Seen {
            requests: (0..targets).map(|_| Mutex::new(Vec::new())).collect(),
            handshakes: (0..targets).map(|_| AtomicUsize::new(0)).collect(),
            ..Seen::default()
        }
    }

    fn unknown(&self, what: String) {
        if self.unknown.lock().unwrap().insert(what.clone()) {
            eprintln!("simulated switch: unhandled {what} (answered with an ERROR)");
        }
    }
}

struct Flow {
    table_id: u8,
    priority: u16,
    cookie: u64,
    hard_timeout: u16,
    match_: Match,
    instructions: Vec<Instruction>,
    installed: Instant,
}

struct Meter {
    flags: MeterFlags,
    bands: Vec<MeterBand>,
    installed: Instant,
}

/// One switch's state, shared by its connections (one per replica).
struct SwitchState {
    index: usize,
    born: Instant,
    flows: Vec<Flow>,
    meters: BTreeMap<u32, Meter>,
    /// The connection that is MASTER, and the last generation claimed.
    master: Option<usize>,
    generation: Option<u64>,
}

impl SwitchState {
    fn new(index: usize) -> SwitchState {
        let born = Instant::now();
        // A few flows of the switch's own (not solive's: cookie 0): normal
        // forwarding, ARP, a drop rule.
        let own = |priority: u16, m: Match, actions: Vec<Action>| Flow {
            table_id: 0,
            priority,
            cookie: 0,
            hard_timeout: 0,
            match_: m,
            instructions: if actions.is_empty() {
                vec![]
            } else {
                vec![Instruction::ApplyActions(actions)]
            },
            installed: born,
        };
        let flows = vec![
            own(
                0,
                Match::new(),
                vec![Action::output(solive::openflow::port::NORMAL)],
            ),
            own(
                100,
                Match::new().eth_type(0x0806),
                vec![Action::output(solive::openflow::port::NORMAL)],
            ),
            own(50, Match::new().eth_type(0x86dd), vec![]),
        ];
        SwitchState {
            index,
            born,
            flows,
            meters: BTreeMap::new(),
            master: None,
            generation: None,
        }
    }

    fn port_desc(&self) -> Vec<Port> {
        (1..=PORTS)
            .map(|no| Port {
                port_no: no,
                hw_addr: Default::default(),
                name: format!("p{no}"),
                config: 0,
                state: 0,
                curr: 0x2000,
                advertised: 0,
                supported: 0,
                peer: 0,
                curr_speed: 1_000_000,
                max_speed: 1_000_000,
            })
            .collect()
    }

    fn port_stats(&self, port_no: u32) -> Vec<PortStats> {
        let t = self.born.elapsed();
        let secs = t.as_secs_f64();
        (1..=PORTS)
            .filter(|no| port_no == solive::openflow::port::ANY || *no == port_no)
            .map(|no| {
                // Bytes/s: the uplink sends ~200 Mbit/s, the VM ports ~5.
                let jitter = 1.0 + 0.05 * ((secs * 0.7 + f64::from(no)).sin());
                let (tx, rx) = if no == 1 {
                    (25e6 * jitter, 12e6 * jitter)
                } else {
                    (0.6e6 * jitter, 0.6e6 * jitter)
                };
                let tx_bytes = (tx * secs) as u64 + (self.index as u64) * 1000;
                let rx_bytes = (rx * secs) as u64;
                PortStats {
                    port_no: no,
                    tx_bytes,
                    rx_bytes,
                    tx_packets: tx_bytes / 1000,
                    rx_packets: rx_bytes / 1000,
                    duration_sec: t.as_secs() as u32,
                    duration_nsec: t.subsec_nanos(),
                    ..Default::default()
                }
            })
            .collect()
    }

    fn expire(&mut self) {
        self.flows.retain(|f| {
            f.hard_timeout == 0
                || f.installed.elapsed() < Duration::from_secs(f.hard_timeout.into())
        });
    }

    fn flow_mod(&mut self, fm: FlowMod) {
        self.expire();
        let cookie_ok = |f: &Flow| f.cookie & fm.cookie_mask == fm.cookie & fm.cookie_mask;
        let table_ok = |f: &Flow| fm.table_id == TABLE_ALL || f.table_id == fm.table_id;
        let empty = fm.match_ == Match::new();
        let cmd = fm.command;
        if cmd == FlowModCommand::Add {
            self.flows.retain(|f| {
                !(f.table_id == fm.table_id && f.priority == fm.priority && f.match_ == fm.match_)
            });
            self.flows.push(Flow {
                table_id: fm.table_id,
                priority: fm.priority,
                cookie: fm.cookie,
                hard_timeout: fm.hard_timeout,
                match_: fm.match_,
                instructions: fm.instructions,
                installed: Instant::now(),
            });
        } else if cmd == FlowModCommand::Modify || cmd == FlowModCommand::ModifyStrict {
            let strict = cmd == FlowModCommand::ModifyStrict;
            for f in self.flows.iter_mut() {
                let m = if strict {
                    f.match_ == fm.match_ && f.priority == fm.priority
                } else {
                    empty || f.match_ == fm.match_
                };
                if m && table_ok(f) && cookie_ok(f) {
                    f.instructions = fm.instructions.clone();
                }
            }
        } else if cmd == FlowModCommand::Delete || cmd == FlowModCommand::DeleteStrict {
            let strict = cmd == FlowModCommand::DeleteStrict;
            self.flows.retain(|f| {
                let m = if strict {
                    f.match_ == fm.match_ && f.priority == fm.priority
                } else {
                    empty || f.match_ == fm.match_
                };
                !(m && table_ok(f) && cookie_ok(f))
            });
        }
    }

    fn flow_stats(&mut self, req: &solive::openflow::FlowStatsRequest) -> Vec<FlowStats> {
        self.expire();
        let empty = req.match_ == Match::new();
        self.flows
            .iter()
            .filter(|f| req.table_id == TABLE_ALL || f.table_id == req.table_id)
            .filter(|f| f.cookie & req.cookie_mask == req.cookie & req.cookie_mask)
            .filter(|f| empty || f.match_ == req.match_)
            .map(|f| {
                let age = f.installed.elapsed();
                // A migration's flow carries ~100 Mbit/s.
                let bytes = (12.5e6 * age.as_secs_f64()) as u64;
                FlowStats {
                    table_id: f.table_id,
                    duration_sec: age.as_secs() as u32,
                    duration_nsec: age.subsec_nanos(),
                    priority: f.priority,
                    idle_timeout: 0,
                    hard_timeout: f.hard_timeout,
                    flags: 0,
                    cookie: f.cookie,
                    packet_count: bytes / 1400,
                    byte_count: bytes,
                    match_: f.match_.clone(),
                    instructions: f.instructions.clone(),
                }
            })
            .collect()
    }

    fn meter_mod(&mut self, mm: solive::openflow::MeterMod) -> Option<ErrorCode> {
        use solive::openflow::messages::MeterModFailedCode;
        let all = mm.meter_id == solive::openflow::meter::ALL;
        match mm.command {
            MeterCommand::Add => {
                if self.meters.contains_key(&mm.meter_id) {
                    return Some(ErrorCode::MeterModFailed(MeterModFailedCode::MeterExists));
                }
                self.meters.insert(
                    mm.meter_id,
                    Meter {
                        flags: mm.flags,
                        bands: mm.bands,
                        installed: Instant::now(),
                    },
                );
            }
            MeterCommand::Modify => match self.meters.get_mut(&mm.meter_id) {
                Some(m) => {
                    m.flags = mm.flags;
                    m.bands = mm.bands;
                }
                None => return Some(ErrorCode::MeterModFailed(MeterModFailedCode::UnknownMeter)),
            },
            MeterCommand::Delete if all => self.meters.clear(),
            MeterCommand::Delete => {
                self.meters.remove(&mm.meter_id);
            }
            _ => return Some(ErrorCode::MeterModFailed(MeterModFailedCode::BadCommand)),
        }
        None
    }

    fn meter_ids(&self, id: u32) -> Vec<u32> {
        if id == solive::openflow::meter::ALL {
            self.meters.keys().copied().collect()
        } else {
            self.meters.keys().copied().filter(|k| *k == id).collect()
        }
    }
}

fn error_for(msg: &Message, code: ErrorCode) -> Body {
    let bytes = msg.to_bytes();
    Body::Error(ErrorMsg {
        code,
        data: Bytes::copy_from_slice(&bytes[..bytes.len().min(64)]),
    })
}

/// One connection of a switch to one target, reconnecting until the bench
/// ends (solive refuses a second connection for a dpid already connected,
/// and a switch keeps trying, as ovs-vswitchd does).
async fn switch_connection(
    state: Arc<Mutex<SwitchState>>,
    conn_id: usize,
    target: std::net::SocketAddr,
    t_index: usize,
    seen: Arc<Seen>,
) {
    loop {
        let stream = match tokio::net::TcpStream::connect(target).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut conn = Framed::new(stream, OfCodec);
        if let Err(e) = serve(&state, conn_id, &mut conn, t_index, &seen).await {
            eprintln!("switch {conn_id}: session to {target} ended: {e}");
        }
        {
            let mut s = state.lock().unwrap();
            if s.master == Some(conn_id) {
                s.master = None;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn serve(
    state: &Mutex<SwitchState>,
    conn_id: usize,
    conn: &mut Framed<tokio::net::TcpStream, OfCodec>,
    t_index: usize,
    seen: &Seen,
) -> Result<(), String> {
    let dpid = dpid_of(state.lock().unwrap().index);
    conn.send(Message {
        xid: 1,
        body: Body::Hello(Hello::new()),
    })
    .await
    .map_err(|e| e.to_string())?;
    // This connection's own role (EQUAL until it claims one); MASTER only
    // while the switch's master is this connection.
    let mut my_role = ControllerRole::Equal;
    let mut counted = false;
    while let Some(msg) = conn.next().await {
        let msg = msg.map_err(|e| e.to_string())?;
        if !matches!(
            msg.body,
            Body::EchoRequest(_) | Body::EchoReply(_) | Body::Hello(_)
        ) {
            seen.requests[t_index].lock().unwrap().push(Instant::now());
        }
        let xid = msg.xid;
        let mut replies: Vec<Body> = Vec::new();
        {
            let mut s = state.lock().unwrap();
            let role = if my_role == ControllerRole::Master && s.master != Some(conn_id) {
                ControllerRole::Slave
            } else {
                my_role
            };
            match &msg.body {
                Body::Hello(_) | Body::EchoReply(_) => {}
                Body::FeaturesRequest => {
                    replies.push(Body::FeaturesReply(support::switch_features(dpid)));
                    if !counted {
                        counted = true;
                        seen.handshakes[t_index].fetch_add(1, Ordering::Relaxed);
                    }
                }
                Body::EchoRequest(d) => replies.push(Body::EchoReply(d.clone())),
                Body::BarrierRequest => replies.push(Body::BarrierReply),
                Body::RoleRequest(r) => {
                    let stale = matches!(r.role, ControllerRole::Master | ControllerRole::Slave)
                        && s.generation
                            .is_some_and(|g| (r.generation_id.wrapping_sub(g) as i64) < 0);
                    if stale {
                        replies.push(error_for(
                            &msg,
                            ErrorCode::RoleRequestFailed(RoleRequestFailedCode::Stale),
                        ));
                    } else {
                        let granted = if r.role == ControllerRole::NoChange {
                            role
                        } else {
                            r.role
                        };
                        if matches!(r.role, ControllerRole::Master | ControllerRole::Slave) {
                            s.generation = Some(r.generation_id);
                        }
                        if r.role != ControllerRole::NoChange {
                            my_role = r.role;
                            if r.role == ControllerRole::Master {
                                s.master = Some(conn_id);
                            } else if s.master == Some(conn_id) {
                                s.master = None;
                            }
                        }
                        replies.push(Body::RoleReply(Role {
                            role: granted,
                            generation_id: s.generation.unwrap_or(r.generation_id),
                        }));
                    }
                }
                Body::FlowMod(_) | Body::MeterMod(_) if role == ControllerRole::Slave => {
                    seen.refused_slave.fetch_add(1, Ordering::Relaxed);
                    replies.push(error_for(
                        &msg,
                        ErrorCode::BadRequest(BadRequestCode::IsSlave),
                    ));
                }
                Body::FlowMod(fm) => {
                    seen.flow_mods.fetch_add(1, Ordering::Relaxed);
                    s.flow_mod(fm.clone());
                }
                Body::MeterMod(mm) => {
                    seen.meter_mods.fetch_add(1, Ordering::Relaxed);
                    let c = match mm.command {
                        MeterCommand::Add => 0,
                        MeterCommand::Modify => 1,
                        _ => 2,
                    };
                    seen.meter_cmds[c].fetch_add(1, Ordering::Relaxed);
                    if let Some(code) = s.meter_mod(mm.clone()) {
                        seen.meter_cmds[3].fetch_add(1, Ordering::Relaxed);
                        replies.push(error_for(&msg, code));
                    }
                }
                Body::MultipartRequest(req) => {
                    let body = match &req.body {
                        MultipartRequestBody::PortDesc => {
                            Some(MultipartReplyBody::PortDesc(s.port_desc()))
                        }
                        MultipartRequestBody::PortStats { port_no } => {
                            Some(MultipartReplyBody::PortStats(s.port_stats(*port_no)))
                        }
                        MultipartRequestBody::Flow(f) => {
                            Some(MultipartReplyBody::Flow(s.flow_stats(f)))
                        }
                        MultipartRequestBody::MeterFeatures => {
                            Some(MultipartReplyBody::MeterFeatures(MeterFeatures {
                                max_meter: 0x10_0000,
                                band_types: 1 << solive::openflow::meter::BAND_DROP,
                                capabilities: 0xf,
                                max_bands: 1,
                                max_color: 0,
                            }))
                        }
                        MultipartRequestBody::MeterConfig { meter_id } => {
                            Some(MultipartReplyBody::MeterConfig(
                                s.meter_ids(*meter_id)
                                    .into_iter()
                                    .map(|id| {
                                        let m = &s.meters[&id];
                                        MeterConfig {
                                            flags: m.flags,
                                            meter_id: id,
                                            bands: m.bands.clone(),
                                        }
                                    })
                                    .collect(),
                            ))
                        }
                        MultipartRequestBody::Meter { meter_id } => {
                            Some(MultipartReplyBody::Meter(
                                s.meter_ids(*meter_id)
                                    .into_iter()
                                    .map(|id| {
                                        let m = &s.meters[&id];
                                        let age = m.installed.elapsed();
                                        let bytes = (6e6 * age.as_secs_f64()) as u64;
                                        MeterStats {
                                            meter_id: id,
                                            flow_count: 1,
                                            packet_in_count: bytes / 1400,
                                            byte_in_count: bytes,
                                            duration_sec: age.as_secs() as u32,
                                            duration_nsec: age.subsec_nanos(),
                                            bands: m
                                                .bands
                                                .iter()
                                                .map(|_| MeterBandStats {
                                                    packet_band_count: bytes / 14000,
                                                    byte_band_count: bytes / 10,
                                                })
                                                .collect(),
                                        }
                                    })
                                    .collect(),
                            ))
                        }
                        _ => None,
                    };
                    match body {
                        Some(b) => replies.push(Body::MultipartReply(MultipartReply::new(b))),
                        None => {
                            seen.unknown(format!("multipart request {:?}", req.body));
                            replies.push(error_for(
                                &msg,
                                ErrorCode::BadRequest(BadRequestCode::BadMultipart),
                            ));
                        }
                    }
                }
                other => {
                    seen.unknown(solive::switch::body_name(other));
                    replies.push(error_for(
                        &msg,
                        ErrorCode::BadRequest(BadRequestCode::BadType),
                    ));
                }
            }
        }
        for body in replies {
            conn.feed(Message { xid, body })
                .await
                .map_err(|e| e.to_string())?;
        }
        conn.flush().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

// ------------------------------------------------------- ovsdb, etcd, solive

/// ovsdb-servers holding the bridges (no ovs-vswitchd): one per
/// `HOSTS_PER_OVSDB` hosts. Returns each host's `unix:` target.
fn start_ovsdb(dir: &Path, hosts: usize) -> (Vec<KillOnDrop>, Vec<String>) {
    let schema = "/usr/share/openvswitch/vswitch.ovsschema";
    let mut procs = Vec::new();
    let mut targets = Vec::new();
    for (g, first) in (0..hosts).step_by(HOSTS_PER_OVSDB).enumerate() {
        let last = (first + HOSTS_PER_OVSDB).min(hosts);
        let db = dir.join(format!("conf{g}.db"));
        support::run(
            Command::new("ovsdb-tool")
                .arg("create")
                .arg(&db)
                .arg(schema),
        );
        let mut ops = vec![serde_json::json!({
            "op": "insert", "table": "Open_vSwitch",
            "row": {"bridges": ["set", (first..last).map(|i| serde_json::json!(["named-uuid", format!("b{i}")])).collect::<Vec<_>>()]}
        })];
        for i in first..last {
            ops.push(serde_json::json!({
                "op": "insert", "table": "Bridge", "uuid-name": format!("b{i}"),
                "row": {"name": format!("br{i}"), "datapath_type": "netdev"}
            }));
        }
        let mut txn = vec![serde_json::json!("Open_vSwitch")];
        txn.extend(ops);
        support::run(
            Command::new("ovsdb-tool")
                .arg("transact")
                .arg(&db)
                .arg(serde_json::Value::Array(txn).to_string()),
        );
        let sock = dir.join(format!("db{g}.sock"));
        let proc = Command::new("ovsdb-server")
            .arg(&db)
            .arg(format!("--remote=punix:{}", sock.display()))
            .arg(format!(
                "--unixctl={}",
                dir.join(format!("db{g}.ctl")).display()
            ))
            .arg(format!(
                "--log-file={}",
                dir.join(format!("ovsdb{g}.log")).display()
            ))
            .arg("--no-chdir")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ovsdb-server (ovs/install.sh installs it)");
        procs.push(KillOnDrop(proc));
        for _ in first..last {
            targets.push(format!("unix:{}", sock.display()));
        }
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // datapath_id is an ephemeral column (ovs-vswitchd's to write): it
        // is not kept in the file, so it goes in once the server runs.
        let mut txn = vec![serde_json::json!("Open_vSwitch")];
        for i in first..last {
            txn.push(serde_json::json!({
                "op": "update", "table": "Bridge",
                "where": [["name", "==", format!("br{i}")]],
                "row": {"datapath_id": format!("{:016x}", dpid_of(i))}
            }));
        }
        support::run(
            Command::new("ovsdb-client")
                .arg("transact")
                .arg(format!("unix:{}", sock.display()))
                .arg(serde_json::Value::Array(txn).to_string()),
        );
    }
    (procs, targets)
}

fn start_etcd(dir: &Path) -> (KillOnDrop, String) {
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let proc = Command::new("etcd")
        .args(["--name", "solive-bench", "--data-dir"])
        .arg(dir.join("etcd-data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("solive-bench={peer_url}")])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("etcd (Debian's etcd-server; ovs/install.sh installs it)");
    (KillOnDrop(proc), url)
}

struct Replica {
    name: String,
    pid: u32,
    api: String,
    of: std::net::SocketAddr,
    log: PathBuf,
    _proc: KillOnDrop,
}

fn config_toml(
    of: u16,
    api: u16,
    ovsdb: &[String],
    cluster: Option<(&str, &str, &[u16])>,
) -> String {
    let mut t = format!(
        "[controller]\nopenflow_listen = \"127.0.0.1:{of}\"\nperiod_ms = 1000\n\
         [api]\nlisten = \"127.0.0.1:{api}\"\n"
    );
    if let Some((name, etcd, targets)) = cluster {
        let targets: Vec<String> = targets
            .iter()
            .map(|p| format!("\"tcp:127.0.0.1:{p}\""))
            .collect();
        t += &format!(
            "[cluster]\nendpoints = [\"{etcd}\"]\nname = \"{name}\"\nlease_ms = 2000\n\
             openflow_targets = [{}]\n",
            targets.join(", ")
        );
    }
    for (i, db) in ovsdb.iter().enumerate() {
        t += &format!(
            "[[hosts]]\nname = \"{}\"\novsdb = \"{db}\"\nbridge = \"br{i}\"\nuplink = \"p1\"\n\
             capacity_mbps = 1000\naddress = \"10.{}.{}.1\"\n",
            host_name(i),
            1 + i / 200,
            1 + i % 200
        );
    }
    t
}

fn start_solive(dir: &Path, name: &str, toml: &str, of: u16, api: u16) -> Replica {
    let (proc, log) = support::serve_process(dir, name, toml);
    Replica {
        name: name.to_string(),
        pid: proc.0.id(),
        api: format!("http://127.0.0.1:{api}"),
        of: format!("127.0.0.1:{of}").parse().unwrap(),
        log,
        _proc: proc,
    }
}

// ----------------------------------------------------------------- /proc

/// Running (not exited, not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|x| x.1.trim_start().to_string()))
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// utime + stime of a process, seconds.
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces): state is
    // field 3, utime 14, stime 15.
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// VmRSS and VmHWM, MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

// ------------------------------------------------------------- the scenario

async fn wait_bound(
    http: &reqwest::Client,
    r: &Replica,
    n: usize,
    secs: u64,
) -> Result<(), String> {
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        if let Ok(resp) = http.get(format!("{}/v1/hosts", r.api)).send().await {
            if let Ok(v) = resp.json::<serde_json::Value>().await {
                let hosts = v.as_array().cloned().unwrap_or_default();
                let connected = hosts.iter().filter(|h| h["connected"] == true).count();
                if connected == n {
                    return Ok(());
                }
                last = format!("{connected}/{n} hosts connected");
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("{}: after {secs} s {last}", r.name))
}

async fn metric(http: &reqwest::Client, r: &Replica, name: &str) -> Option<(f64, usize, Duration)> {
    let t0 = Instant::now();
    let body = http
        .get(format!("{}/metrics", r.api))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let took = t0.elapsed();
    let v = body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())?;
    Some((v, body.len(), took))
}

/// Splits request arrival times into periods (bursts separated by 300 ms of
/// quiet) and returns each burst's length, seconds, for bursts starting
/// inside `[from, to)`.
fn sweeps(times: &mut [Instant], from: Instant, to: Instant) -> Vec<f64> {
    times.sort();
    let mut out = Vec::new();
    let mut start: Option<(Instant, Instant)> = None;
    for &t in times.iter() {
        match start {
            Some((s, last)) if t.duration_since(last) < Duration::from_millis(300) => {
                start = Some((s, t));
            }
            Some((s, last)) => {
                if s >= from && s < to {
                    out.push(last.duration_since(s).as_secs_f64());
                }
                start = Some((t, t));
            }
            None => start = Some((t, t)),
        }
    }
    out
}

struct Figures {
    connect_s: f64,
    cpu: Vec<(String, f64, f64, f64, f64, f64)>,
    period_p50_ms: f64,
    period_p99_ms: f64,
    period_max_ms: f64,
    sweep: (f64, f64, f64, usize),
    bench_cpu_pct: f64,
}

async fn scenario(cluster: bool, n: usize, periods: u64) -> Figures {
    let dir = tempfile::Builder::new()
        .prefix("solive-switches-")
        .tempdir()
        .unwrap();
    let (_ovsdb, dbs) = start_ovsdb(dir.path(), n);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut _etcd = None;
    let replicas: Vec<Replica> = if cluster {
        let (proc, url) = start_etcd(dir.path());
        _etcd = Some(proc);
        // The replicas start once etcd answers (as tests/cluster.rs does).
        let t0 = Instant::now();
        loop {
            let ok = match http.get(format!("{url}/health")).send().await {
                Ok(r) => r
                    .json::<serde_json::Value>()
                    .await
                    .is_ok_and(|v| v["health"] == "true"),
                Err(_) => false,
            };
            if ok {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "etcd not healthy in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let of: Vec<u16> = ports.iter().map(|p| p.0).collect();
        let rs: Vec<Replica> = ["a", "b", "c"]
            .iter()
            .zip(&ports)
            .map(|(name, (o, a))| {
                let toml = config_toml(*o, *a, &dbs, Some((name, &url, &of)));
                start_solive(dir.path(), name, &toml, *o, *a)
            })
            .collect();
        rs
    } else {
        let (o, a) = (free_port(), free_port());
        vec![start_solive(
            dir.path(),
            "single",
            &config_toml(o, a, &dbs, None),
            o,
            a,
        )]
    };
    // Every replica's API up; in a cluster, which one leads.
    let t0 = Instant::now();
    let mut leader = None;
    let mut up = vec![false; replicas.len()];
    while leader.is_none() || up.contains(&false) {
        if let Some(r) = replicas.iter().find(|r| !alive(r.pid)) {
            panic!("{} exited: {}", r.name, log_tail(&r.log));
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no leader within 60 s; logs in {}",
            dir.path().display()
        );
        for (i, r) in replicas.iter().enumerate() {
            if let Ok(resp) = http.get(format!("{}/v1/health", r.api)).send().await {
                if let Ok(v) = resp.json::<serde_json::Value>().await {
                    up[i] = true;
                    if !cluster || v["role"] == "leader" {
                        leader = Some(i);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leader = leader.unwrap();
    let lead = &replicas[leader];
    println!(
        "\n== {} ({n} switches, {} ovsdb-servers{}) ==",
        if cluster {
            "leader + two standbys"
        } else {
            "one solive"
        },
        n.div_ceil(HOSTS_PER_OVSDB),
        if cluster {
            format!(", leader {}", lead.name)
        } else {
            String::new()
        }
    );

    let seen = Arc::new(Seen::new(replicas.len()));
    let bench_cpu0 = cpu_secs(std::process::id());
    let t_connect = Instant::now();
    for i in 0..n {
        let state = Arc::new(Mutex::new(SwitchState::new(i)));
        for (t, r) in replicas.iter().enumerate() {
            tokio::spawn(switch_connection(
                state.clone(),
                i * 4 + t,
                r.of,
                t,
                seen.clone(),
            ));
        }
    }
    if let Err(e) = wait_bound(&http, lead, n, 180).await {
        panic!("{e}; logs in {}", dir.path().display());
    }
    let connect_s = t_connect.elapsed().as_secs_f64();
    let hs: Vec<usize> = seen
        .handshakes
        .iter()
        .map(|h| h.load(Ordering::Relaxed))
        .collect();
    println!(
        "all {n} switches connected and bound to their hosts on the leader in {connect_s:.2} s (handshakes per replica: {hs:?})"
    );
    // Reservations between pairs of hosts.
    let k = RESERVATIONS.min(n / 2);
    let mut created = 0;
    for j in 0..k {
        let r = http
            .post(format!("{}/v1/reservations", lead.api))
            .json(&serde_json::json!({
                "source": host_name(2 * j), "destination": host_name(2 * j + 1),
                "urgency": 50, "migration_port": 49152
            }))
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 201 {
            created += 1;
        } else if created == 0 {
            println!(
                "reservation refused: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
    }
    println!("{created}/{k} reservations created (h0000→h0001, h0002→h0003, ...)");

    tokio::time::sleep(Duration::from_secs(WARMUP_PERIODS)).await;
    let fm0 = seen.flow_mods.load(Ordering::Relaxed);
    let mc0: Vec<usize> = seen
        .meter_cmds
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let mm0 = seen.meter_mods.load(Ordering::Relaxed);
    let pids: Vec<u32> = replicas.iter().map(|r| r.pid).collect();
    let start = Instant::now();
    let cpu0: Vec<f64> = pids.iter().map(|p| cpu_secs(*p)).collect();
    let bench0 = cpu_secs(std::process::id());
    let mut last: Vec<f64> = cpu0.clone();
    let mut per_second: Vec<Vec<f64>> = vec![Vec::new(); pids.len()];
    let mut period_s = Vec::new();
    let mut scrape = Vec::new();
    let mut metrics_len = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_t = Instant::now();
    for _ in 0..periods {
        tick.tick().await;
        let now = Instant::now();
        let dt = now.duration_since(last_t).as_secs_f64();
        last_t = now;
        for (i, p) in pids.iter().enumerate() {
            let c = cpu_secs(*p);
            per_second[i].push((c - last[i]) / dt * 100.0);
            last[i] = c;
        }
        if let Some((v, len, took)) = metric(&http, lead, "solive_period_seconds").await {
            period_s.push(v * 1000.0);
            scrape.push(took.as_secs_f64() * 1000.0);
            metrics_len = len;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let end = Instant::now();
    for r in replicas.iter().filter(|r| !alive(r.pid)) {
        println!("{} EXITED during the run: {}", r.name, log_tail(&r.log));
    }
    let bench_cpu_pct = (cpu_secs(std::process::id()) - bench0) / wall * 100.0;
    let _ = bench_cpu0;
    let mut cpu = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        let mean = (cpu_secs(r.pid) - cpu0[i]) / wall * 100.0;
        let s = sorted(per_second[i].clone());
        let (rss, hwm) = memory_mib(r.pid);
        let role = if !cluster {
            "solive".to_string()
        } else if i == leader {
            format!("leader {}", r.name)
        } else {
            format!("standby {}", r.name)
        };
        cpu.push((
            role,
            mean,
            percentile(&s, 0.5),
            percentile(&s, 0.99),
            rss,
            hwm,
        ));
    }
    let mut times = std::mem::take(&mut *seen.requests[leader].lock().unwrap());
    let series = sweeps(&mut times, start, end - Duration::from_millis(1000));
    // In order, so bursts (the resync every 10 periods) show.
    println!(
        "sweeps in order, ms: {}",
        series
            .iter()
            .map(|x| format!("{:.0}", x * 1000.0))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{} CPU per second in order, %: {}",
        replicas[leader].name,
        per_second[leader]
            .iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let sw = sorted(series);
    let ps = sorted(period_s);
    let sc = sorted(scrape);
    let figures = Figures {
        connect_s,
        cpu,
        period_p50_ms: percentile(&ps, 0.5),
        period_p99_ms: percentile(&ps, 0.99),
        period_max_ms: ps.last().copied().unwrap_or(f64::NAN),
        sweep: (
            percentile(&sw, 0.5) * 1000.0,
            percentile(&sw, 0.99) * 1000.0,
            sw.last().copied().unwrap_or(f64::NAN) * 1000.0,
            sw.len(),
        ),
        bench_cpu_pct,
    };

    println!(
        "measured {periods} periods over {wall:.1} s; {} FLOW_MODs and {} METER_MODs received meanwhile (add/modify/delete/refused: {:?}; {} refused as from a SLAVE in all)",
        seen.flow_mods.load(Ordering::Relaxed) - fm0,
        seen.meter_mods.load(Ordering::Relaxed) - mm0,
        seen.meter_cmds
            .iter()
            .zip(&mc0)
            .map(|(c, c0)| c.load(Ordering::Relaxed) - c0)
            .collect::<Vec<_>>(),
        seen.refused_slave.load(Ordering::Relaxed)
    );
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "process", "CPU mean", "CPU p50", "CPU p99", "VmRSS", "VmHWM"
    );
    for (role, mean, p50, p99, rss, hwm) in &figures.cpu {
        println!(
            "{role:<12} {:>9.1}% {:>9.1}% {:>9.1}% {:>6.1} MiB {:>6.1} MiB",
            mean, p50, p99, rss, hwm
        );
    }
    println!(
        "(CPU: % of one core per 1 s period, from utime+stime; p50/p99 over per-second samples)"
    );
    println!(
        "period_seconds (/metrics, the controller task's own work each tick, {} samples): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ps.len(),
        figures.period_p50_ms,
        figures.period_p99_ms,
        figures.period_max_ms
    );
    println!(
        "sweep seen by the switches (first to last request of a period, leader): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} periods",
        figures.sweep.0, figures.sweep.1, figures.sweep.2, figures.sweep.3
    );
    println!(
        "scraping /metrics ({} B) took p50 {:.1} ms; simulated switches (this process): {:.1}% of a core",
        metrics_len,
        percentile(&sc, 0.5),
        figures.bench_cpu_pct
    );
    for r in &replicas {
        let log = std::fs::read_to_string(&r.log).unwrap_or_default();
        let warns = log.lines().filter(|l| l.contains("WARN")).count();
        let errors = log.lines().filter(|l| l.contains("ERROR")).count();
        println!("{} log: {warns} WARN, {errors} ERROR lines", r.name);
        if let Some(first) = log
            .lines()
            .find(|l| l.contains("WARN") || l.contains("ERROR"))
        {
            println!("  first: {}", first.chars().take(300).collect::<String>());
        }
    }
    if std::env::var("SOLIVE_SWITCH_KEEP").is_ok() {
        let kept = dir.keep();
        println!("kept {}", kept.display());
    }
    figures
}

fn main() {
    let n = env_usize("SOLIVE_SWITCHES", 1000);
    let periods = env_usize("SOLIVE_SWITCH_PERIODS", 60) as u64;
    let cluster = env_usize("SOLIVE_SWITCH_CLUSTER", 1) != 0;
    // The switches and the measuring on one thread: solive gets the rest.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let single = rt.block_on(scenario(false, n, periods));
    let three = cluster.then(|| rt.block_on(scenario(true, n, periods)));
    println!("\n== summary ({n} switches x {PORTS} ports, {periods} periods of 1 s) ==");
    for (what, f) in
        std::iter::once(("one solive", &single)).chain(three.iter().map(|f| ("cluster", f)))
    {
        for (role, mean, p50, p99, rss, hwm) in &f.cpu {
            println!(
                "{what:<10} {role:<10} connect {:>5.1} s  CPU mean {:>5.1}% p50 {:>5.1}% p99 {:>5.1}% of a core  RSS {:>6.1} MiB (peak {:>6.1})",
                f.connect_s, mean, p50, p99, rss, hwm
            );
        }
        println!(
            "{what:<10} period_seconds p50 {:.2} ms p99 {:.2} ms; sweep p50 {:.1} ms p99 {:.1} ms; switches' CPU {:.1}%",
            f.period_p50_ms, f.period_p99_ms, f.sweep.0, f.sweep.1, f.bench_cpu_pct
        );
    }
    println!("targets: CPU per period < 20% of one core; period p99 < 200 ms");
}
