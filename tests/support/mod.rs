//! Test support: a real Open vSwitch sandbox (ovsdb-server + ovs-vswitchd,
//! userspace datapath) started through `ovs/sandbox.sh` in a private temporary
//! directory and stopped when the value is dropped.
//!
//! These tests need root and the packages of `ovs/install.sh`; the README's test
//! command installs them. A missing OVS is a failure, not a skip: a test that
//! silently skips proves nothing.
#![allow(dead_code)]

pub mod fabric;
pub mod iperf;
pub mod qga;
pub mod testbed;

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command and returns its stdout, panicking with its stderr on failure.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// `unix:<dir>/db.sock`
    pub db: String,
    /// With a namespace: the root-namespace address the switch reaches the
    /// controller at (see `ovs/sandbox.sh`).
    pub controller_ip: Option<String>,
    pub netns: Option<String>,
}

impl Sandbox {
    /// Starts a sandbox in the root network namespace. Only one such sandbox can
    /// run at a time on a machine (the userspace datapath's tap device is named
    /// `ovs-netdev`), so tests that use it take [`Sandbox::lock`] first.
    pub fn start() -> Sandbox {
        Self::start_in(None)
    }

    /// Starts a sandbox whose ovs-vswitchd runs in its own network namespace `ns`
    /// (created by the script); see `ovs/sandbox.sh`.
    pub fn start_in(netns: Option<&str>) -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("solive-ovs-")
            .tempdir()
            .unwrap();
        let mut cmd = Command::new(repo_root().join("ovs/sandbox.sh"));
        cmd.arg("start").arg(dir.path());
        if let Some(ns) = netns {
            cmd.args(["--netns", ns]);
        }
        let out = run(&mut cmd);
        let db = out.lines().next().unwrap_or_default().trim().to_string();
        assert!(db.starts_with("unix:"), "unexpected sandbox output: {out}");
        let controller_ip = out
            .lines()
            .find_map(|l| l.strip_prefix("controller_ip="))
            .map(str::to_string);
        Sandbox {
            dir,
            db,
            controller_ip,
            netns: netns.map(str::to_string),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn vsctl(&self, args: &[&str]) -> String {
        run(Command::new("ovs-vsctl")
            .arg(format!("--db={}", self.db))
            .args(args))
    }

    /// A linux-htb QoS row of the test's own on `port`, with `columns`
    /// (e.g. `external_ids:owner=x`) and then `more` (further vsctl
    /// commands of the same transaction, e.g. the queues it refers to).
    pub fn htb_qos(&self, port: &str, columns: &[&str], more: &[&str]) -> String {
        let mut args = vec![
            "--",
            "set",
            "port",
            port,
            "qos=@q",
            "--",
            "--id=@q",
            "create",
            "qos",
            "type=linux-htb",
        ];
        args.extend_from_slice(columns);
        args.extend_from_slice(more);
        self.vsctl(&args)
    }

    /// `ovs-ofctl -O OpenFlow13 ARGS` against a bridge of this sandbox.
    pub fn ofctl(&self, args: &[&str]) -> String {
        run(Command::new("ovs-ofctl")
            .env("OVS_RUNDIR", self.path())
            .args(["-O", "OpenFlow13"])
            .args(args))
    }

    /// Adds a userspace-datapath bridge.
    pub fn add_bridge(&self, br: &str) {
        self.vsctl(&[
            "add-br",
            br,
            "--",
            "set",
            "bridge",
            br,
            "datapath_type=netdev",
        ]);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("ovs/sandbox.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// Serialises tests that use the root-namespace sandbox (one `ovs-netdev` tap per
/// namespace) across threads and processes (nextest runs each test in its own
/// process), with an exclusive lock on a file. Hold the guard for the whole test.
pub fn lock() -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/solive-root-ovs.lock")
        .unwrap();
    f.lock().unwrap();
    f
}

impl Sandbox {
    /// Kills ovs-vswitchd and starts it again: the switch loses its flows and
    /// meters and reconnects to its controller, as after a crash.
    pub fn restart_switch(&self) {
        run(Command::new(repo_root().join("ovs/sandbox.sh"))
            .arg("restart-switch")
            .arg(self.path()));
    }
}

/// A TCP port free on 127.0.0.1 now (for servers the test starts as
/// processes, which must be told their port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `secs`
/// seconds with `what` and the last value seen.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) if std::time::Instant::now() >= deadline => {
                panic!("timed out after {secs} s waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

/// A solive config for hosts given as (name, ovsdb, bridge, uplink, capacity_mbps).
pub fn config_toml(hosts: &[(&str, &str, &str, &str, u64)], period_ms: u64) -> String {
    let mut s = format!(
        "[controller]\nopenflow_listen = \"127.0.0.1:0\"\nperiod_ms = {period_ms}\n\
         echo_interval_ms = 1000\nrequest_timeout_ms = 2000\nresync_periods = 3\n\
         [api]\nlisten = \"127.0.0.1:0\"\n"
    );
    for (name, db, br, up, cap) in hosts {
        s += &format!(
            "[[hosts]]\nname = \"{name}\"\novsdb = \"{db}\"\nbridge = \"{br}\"\nuplink = \"{up}\"\ncapacity_mbps = {cap}\n"
        );
    }
    s
}

/// `[[hosts]]` entries for hosts without a switch (an OVSDB socket that
/// does not exist), as the fake cloud's tests use them: host `i` of `names`
/// on bridge `br{i}`, uplink `up{i}`, address 10.0.0.{i+1}.
pub fn switchless_hosts(names: &[&str], capacity_mbps: u64) -> String {
    let mut s = String::new();
    for (i, h) in names.iter().enumerate() {
        s += &format!(
            "[[hosts]]\nname = \"{h}\"\novsdb = \"unix:/nonexistent/{h}.sock\"\nbridge = \"br{i}\"\n\
             uplink = \"up{i}\"\ncapacity_mbps = {capacity_mbps}\naddress = \"10.0.0.{}\"\n",
            i + 1
        );
    }
    s
}

/// A config for `names` ([`switchless_hosts`], 100 Mbit/s) with a 200 ms
/// period and the API on a free port.
pub fn switchless_config(names: &[&str]) -> solive::config::Config {
    let toml = String::from(
        "[controller]\nopenflow_listen = \"127.0.0.1:0\"\nperiod_ms = 200\n[api]\nlisten = \"127.0.0.1:0\"\n",
    ) + &switchless_hosts(names, 100);
    solive::config::Config::parse(&toml).unwrap()
}

/// A namespace host `ns` with interface `ns-eth0` at `ip`, joined to `br` by a
/// veth whose bridge side is `port`. Removed on drop.
pub struct NsHost {
    pub ns: String,
}

impl NsHost {
    pub fn new(sb: &Sandbox, br: &str, ns: &str, port: &str, ip: &str) -> NsHost {
        // Leftovers of a killed run.
        quiet(Command::new("ip").args(["netns", "del", ns]));
        quiet(Command::new("ip").args(["link", "del", port]));
        run(Command::new("ip").args(["netns", "add", ns]));
        let host = NsHost { ns: ns.to_string() };
        let eth = format!("{ns}-eth0");
        run(Command::new("ip").args([
            "link", "add", port, "type", "veth", "peer", "name", &eth, "netns", ns,
        ]));
        run(Command::new("ip").args(["link", "set", port, "up"]));
        host.exec(&["ip", "addr", "add", ip, "dev", &eth]);
        host.exec(&["ip", "link", "set", &eth, "up"]);
        host.exec(&["ip", "link", "set", "lo", "up"]);
        // TCP through the userspace datapath hangs unless the namespace side
        // computes its own checksums (TESTBED.md).
        host.exec(&["ethtool", "-K", &eth, "tx", "off"]);
        sb.vsctl(&["add-port", br, port]);
        host
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(args);
        c
    }

    pub fn exec(&self, args: &[&str]) -> String {
        run(&mut self.cmd(args))
    }
}

impl Drop for NsHost {
    fn drop(&mut self) {
        quiet(Command::new("ip").args(["netns", "del", &self.ns]));
    }
}

pub fn quiet(cmd: &mut Command) {
    let _ = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// `GET {api}{path}`, its JSON body (panics on a transport error or a body
/// that is not JSON: a test's API call either works or fails the test).
pub async fn get_json(api: &str, path: &str) -> serde_json::Value {
    reqwest::get(format!("{api}{path}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub struct KillOnDrop(pub std::process::Child);

/// Starts the real `solive serve` binary on `toml`, written to
/// `DIR/NAME.toml`; its log goes to `DIR/NAME.log` (returned).
pub fn serve_process(dir: &Path, name: &str, toml: &str) -> (KillOnDrop, PathBuf) {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, toml).unwrap();
    let log = dir.join(format!("{name}.log"));
    let proc = Command::new(env!("CARGO_BIN_EXE_solive"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "solive=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (KillOnDrop(proc), log)
}
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// solive running in-process on listeners bound to port 0, stopped by
/// [`Solive::stop`] through its shutdown future (a clean stop).
pub struct Solive {
    pub running: solive::server::Running,
    pub api: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Solive {
    pub async fn start(toml: &str) -> Solive {
        let config = solive::config::Config::parse(toml).unwrap();
        let of = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_with(config, of).await
    }

    /// Starts with an OpenFlow listener the test bound itself; the config's
    /// `openflow_listen` is set to its address.
    pub async fn start_with(config: solive::config::Config, of: tokio::net::TcpListener) -> Solive {
        let hvs = solive::server::hypervisors(&config);
        Self::start_with_hypervisors(config, of, hvs).await
    }

    /// [`Solive::start_with`] with the hosts' hypervisors given (fakes).
    #[allow(dead_code)]
    pub async fn start_with_hypervisors(
        mut config: solive::config::Config,
        of: tokio::net::TcpListener,
        hypervisors: std::collections::BTreeMap<String, solive::evacuation::HostHypervisor>,
    ) -> Solive {
        // solive's log goes to the test's captured output: printed with a
        // failing test (what CI shows), swallowed with a passing one.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("solive=info")),
            )
            .with_test_writer()
            .try_init();
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        config.controller.openflow_listen = of.local_addr().unwrap();
        let api_url = format!("http://{}", api.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let running = solive::server::start_with(config, hypervisors, of, api, async {
            let _ = rx.await;
        })
        .unwrap();
        Solive {
            running,
            api: api_url,
            stop: Some(tx),
        }
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        get_json(&self.api, path).await
    }

    pub async fn host_when(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        eventually(20, what, || async {
            let h = self.get(&format!("/v1/hosts/{name}")).await;
            if pred(&h) {
                Ok(h)
            } else {
                Err(h.to_string())
            }
        })
        .await
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(std::time::Duration::from_secs(20), self.running.task)
            .await
            .unwrap()
            .unwrap();
    }
}

impl Sandbox {
    /// Points bridge `br` at a switch listener of the test's own and returns
    /// the solive session to it (for benchmarks that talk to the switch
    /// directly, without a controller).
    pub async fn connect_switch(&self, br: &str) -> solive::switch::SwitchHandle {
        use solive::switch::{self, SessionConfig, SwitchEvent};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(switch::listen(
            listener,
            SessionConfig::default(),
            tx,
            std::future::pending(),
        ));
        self.vsctl(&["set", "bridge", br, "protocols=OpenFlow13"]);
        self.vsctl(&["set-controller", br, &format!("tcp:{addr}")]);
        let sw = loop {
            if let SwitchEvent::Connected(h) = events.recv().await.expect("session events") {
                break h;
            }
        };
        // The session ends when nobody takes its events: drain them.
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        sw
    }
}

/// What a fake switch claiming `dpid` answers a FEATURES_REQUEST with
/// (Open vSwitch's table count and capabilities).
pub fn switch_features(dpid: u64) -> solive::openflow::SwitchFeatures {
    solive::openflow::SwitchFeatures {
        datapath_id: dpid,
        n_buffers: 0,
        n_tables: 254,
        auxiliary_id: 0,
        capabilities: 0x4f,
        reserved: 0,
    }
}

/// Plays a switch's side of the OpenFlow handshake claiming `dpid`, then
/// expects the controller to close the connection (within 10 s) having sent
/// it nothing but echoes; `who` names the peer in failures.
pub async fn closed_after_features<S>(stream: S, dpid: u64, who: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::{SinkExt, StreamExt};
    use solive::openflow::{Body, Hello, Message, OfCodec};
    let mut sw = tokio_util::codec::Framed::new(stream, OfCodec);
    let hello = sw.next().await.unwrap().unwrap();
    assert!(matches!(hello.body, Body::Hello(_)));
    sw.send(Message {
        xid: 10,
        body: Body::Hello(Hello::new()),
    })
    .await
    .unwrap();
    let req = sw.next().await.unwrap().unwrap();
    assert_eq!(req.body, Body::FeaturesRequest);
    sw.send(Message {
        xid: req.xid,
        body: Body::FeaturesReply(switch_features(dpid)),
    })
    .await
    .unwrap();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match sw.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(m)) => assert!(
                    matches!(m.body, Body::EchoRequest(_)),
                    "{who} was sent {m:?}"
                ),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{who}'s connection was not closed");
}
