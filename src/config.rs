//! The configuration of `solive serve`, read from a TOML file.
//!
//! Unknown keys are errors that name the key: a misspelt `capacity_mpbs` must not
//! silently leave a host with a default capacity.
//!
//! ```toml
//! [controller]
//! openflow_listen = "0.0.0.0:6653"   # where switches connect
//! period_ms = 1000                   # polling / reservation period
//!
//! [api]
//! listen = "127.0.0.1:8080"
//!
//! [[hosts]]
//! name = "h1"
//! ovsdb = "unix:/var/run/openvswitch/db.sock"   # or "tcp:IP:PORT"
//! bridge = "br0"
//! uplink = "eth1"                    # the bridge port that leads to the fabric
//! capacity_mbps = 100
//! # controller_target = "tcp:10.0.0.1:6653"   # what the bridge connects to;
//! #                                             default: openflow_listen, with
//! #                                             0.0.0.0 read as 127.0.0.1
//! # address = "10.0.0.1"             # the host's fabric IPv4 (for migration flows)
//! # enforcement = "auto"             # auto | meter | queue
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("the topology named by [topology] file")]
    Topology(#[from] crate::topology::TopologyError),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub controller: ControllerConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub hosts: Vec<HostConfig>,
    /// Hosts taken from a topology file (the testbed's format), added to
    /// `[[hosts]]`.
    #[serde(default)]
    pub topology: Option<TopologyRef>,
    /// `[state] dir = "..."`: where reservations and evacuations are kept
    /// across restarts. Without it, history lives only in memory.
    #[serde(default)]
    pub state: Option<StateConfig>,
    #[serde(default)]
    pub scatter: ScatterConfig,
    /// `[cache]`: pre-caching of VMs' local disks on backup hosts (see
    /// `crate::cache`).
    #[serde(default)]
    pub cache: CacheConfig,
    /// `[cluster]`: replicas sharing their state in etcd, one leader at a
    /// time (see `crate::cluster`). Without it, one process and `[state]`.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// `[tls]`: mutual TLS on OpenFlow and OVSDB (see `crate::pki`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `[tls]`: the controller's certificate and key, and the CA that signs
/// the switches' and OVSDB servers' certificates (PEM files).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// `[cluster]`: this replica's place in a cluster of solive controllers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd's client URLs (`http://127.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// This replica's name, unique in the cluster (shown as the leader's).
    pub name: String,
    /// The leadership lease: a leader that cannot renew it for this long is
    /// deposed and a standby takes over. Takeover takes about this long.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Every replica's OpenFlow target (`tcp:IP:PORT`, as a bridge connects
    /// to it): each bridge lists them all, so a standby holds its sessions
    /// and a takeover does not wait for switches to reconnect.
    pub openflow_targets: Vec<String>,
    /// Key prefix of the cluster's records and election in etcd, so several
    /// clusters can share one etcd.
    #[serde(default = "default_cluster_prefix")]
    pub prefix: String,
}

fn default_lease_ms() -> u64 {
    2000
}

fn default_cluster_prefix() -> String {
    "/solive".into()
}

/// `[cache]`: how fast and how often the disk caches sync.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// The most one sync sends, Mbit/s (it takes half the room it sees on
    /// the source's uplink, up to this).
    #[serde(default = "default_cache_max_mbps")]
    pub max_rate_mbps: f64,
    /// The least, Mbit/s, however full the link.
    #[serde(default = "default_cache_floor_mbps")]
    pub floor_rate_mbps: f64,
    /// Seconds from the end of one sync to the start of the next.
    #[serde(default = "default_cache_every_s")]
    pub every_s: f64,
    /// First port of the backups' NBD servers (one per running transfer).
    #[serde(default = "default_cache_port")]
    pub port: u16,
}

fn default_cache_max_mbps() -> f64 {
    80.0
}
fn default_cache_floor_mbps() -> f64 {
    8.0
}
fn default_cache_every_s() -> f64 {
    15.0
}
fn default_cache_port() -> u16 {
    10809
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_rate_mbps: default_cache_max_mbps(),
            floor_rate_mbps: default_cache_floor_mbps(),
            every_s: default_cache_every_s(),
            port: default_cache_port(),
        }
    }
}

impl CacheConfig {
    pub fn settings(&self) -> Result<crate::cache::CacheSettings, String> {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        if !ok(self.max_rate_mbps) || !ok(self.floor_rate_mbps) || !ok(self.every_s) {
            return Err(
                "[cache]: max_rate_mbps, floor_rate_mbps and every_s must be positive".into(),
            );
        }
        Ok(crate::cache::CacheSettings {
            max_rate_bps: self.max_rate_mbps * 1e6,
            floor_rate_bps: self.floor_rate_mbps * 1e6,
            every: std::time::Duration::from_secs_f64(self.every_s),
            ports: (self.port, 64),
        })
    }
}

/// `[scatter]`: migrations through intermediaries (see `crate::scatter`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScatterConfig {
    /// The solive binary on the hosts; default: this one (right when the
    /// hosts share its filesystem, as the testbed's do).
    #[serde(default)]
    pub solive: Option<PathBuf>,
    /// Chunks per store write or read.
    #[serde(default = "default_batch")]
    pub batch: usize,
    #[serde(default = "default_chunk_kib")]
    pub chunk_kib: usize,
    /// Go through every host with a store when the destination cannot take
    /// more than this share of the source's reservation short of it, percent
    /// (when the request does not name intermediaries).
    #[serde(default = "default_shortfall_pct")]
    pub shortfall_pct: f64,
    /// First local port of the relays (one per concurrent migration).
    #[serde(default = "default_relay_port")]
    pub relay_port: u16,
}

fn default_batch() -> usize {
    10
}
fn default_chunk_kib() -> usize {
    256
}
fn default_shortfall_pct() -> f64 {
    20.0
}
fn default_relay_port() -> u16 {
    49300
}

impl Default for ScatterConfig {
    fn default() -> Self {
        ScatterConfig {
            solive: None,
            batch: default_batch(),
            chunk_kib: default_chunk_kib(),
            shortfall_pct: default_shortfall_pct(),
            relay_port: default_relay_port(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    pub dir: PathBuf,
}

/// `[topology] file = "...", ovsdb = "unix:..."`: every host of the topology
/// file becomes a `[[hosts]]` entry (name, bridge, uplink, capacity,
/// address) reached through `ovsdb`. A relative `file` is relative to the
/// configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyRef {
    pub file: std::path::PathBuf,
    pub ovsdb: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    pub openflow_listen: SocketAddr,
    #[serde(default = "default_period_ms")]
    pub period_ms: u64,
    /// Idle time after which the controller sends an ECHO_REQUEST to a switch.
    #[serde(default = "default_echo_interval_ms")]
    pub echo_interval_ms: u64,
    /// How long a request (and an echo) may wait for its reply before the
    /// switch is considered dead.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Every this many periods the controller re-reads each switch's flows and
    /// meters and repairs any drift, so missed events heal.
    #[serde(default = "default_resync_periods")]
    pub resync_periods: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// Bearer tokens, one `NAME:TOKEN` or `NAME:TOKEN:ro` per line (see
    /// [`crate::api::auth`]). Without it the API is open, so it may only
    /// listen on a loopback address.
    #[serde(default)]
    pub tokens_file: Option<std::path::PathBuf>,
    /// PEM certificate chain and private key: with both, the API speaks
    /// HTTPS (rustls) instead of HTTP.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_api_listen(),
            tokens_file: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub name: String,
    pub ovsdb: String,
    pub bridge: String,
    pub uplink: String,
    pub capacity_mbps: u64,
    #[serde(default)]
    pub controller_target: Option<String>,
    /// With `[tls]`: the name (common name or DNS alternative name) in the
    /// certificate of this host's switch. A switch that claims this host's
    /// datapath id without it is refused.
    #[serde(default)]
    pub switch_certificate: Option<String>,
    /// The host's own IPv4 address on the fabric: migration flows go from the
    /// source's address to the destination's, so reservations need it.
    #[serde(default)]
    pub address: Option<std::net::Ipv4Addr>,
    /// How reservations are enforced on this host's bridge.
    #[serde(default)]
    pub enforcement: EnforcementMode,
    /// The host's libvirt URI (e.g. `qemu+tcp://h1/system`): evacuations
    /// list, measure and migrate its VMs through it, and migrate to it.
    #[serde(default)]
    pub libvirt: Option<String>,
    /// How solive runs a helper on this host (scatter-gather's relays), as a
    /// command prefix: `["ssh", "root@h1"]` in a datacenter,
    /// `["ip", "netns", "exec", "h1"]` on the testbed. Empty: here.
    #[serde(default)]
    pub exec: Vec<String>,
    /// This host's intermediary store, `redis://IP:PORT`: a host with one can
    /// be an intermediary of scatter-gather migrations.
    #[serde(default)]
    pub store: Option<String>,
    /// What this host offers guests in all, for placing VMs when an
    /// evacuation names several destinations (what its VMs use is taken
    /// off); absent: not limited.
    #[serde(default)]
    pub guest_memory_mib: Option<u64>,
    #[serde(default)]
    pub guest_vcpus: Option<u32>,
    /// Directories on storage every host sees (NFS, a cluster filesystem):
    /// a VM's disk under one is not copied when it migrates; any other
    /// local disk is (libvirt's storage migration, over NBD).
    #[serde(default)]
    pub shared_storage: Vec<String>,
}

/// How a host enforces reservations (see `controller::enforce`).
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EnforcementMode {
    /// Meters on the userspace datapath (where `set_queue` and ingress
    /// policing do not take effect), queues and policing on a kernel datapath.
    #[default]
    Auto,
    /// OpenFlow 1.3 meters on the application flows.
    Meter,
    /// linux-htb queues with `set_queue` for migration flows, and ingress
    /// policing on the VMs' interfaces.
    Queue,
}

fn default_period_ms() -> u64 {
    1000
}
fn default_echo_interval_ms() -> u64 {
    5000
}
fn default_request_timeout_ms() -> u64 {
    5000
}
fn default_resync_periods() -> u64 {
    10
}
fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse_at(&text, path.parent())
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_at(text, None)
    }

    /// Parses a configuration whose relative paths are relative to `dir`.
    pub fn parse_at(text: &str, dir: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text)?;
        if let Some(t) = &config.topology {
            let file = match dir {
                Some(d) if t.file.is_relative() => d.join(&t.file),
                _ => t.file.clone(),
            };
            let topo = crate::topology::Topology::load(&file)?;
            for h in &topo.hosts {
                config.hosts.push(HostConfig {
                    name: h.name.clone(),
                    ovsdb: t.ovsdb.clone(),
                    bridge: h.bridge(),
                    uplink: h.uplink(),
                    capacity_mbps: h.capacity_mbps,
                    controller_target: None,
                    switch_certificate: None,
                    address: Some(h.address),
                    enforcement: EnforcementMode::Auto,
                    libvirt: None,
                    exec: Vec::new(),
                    store: None,
                    guest_memory_mib: None,
                    guest_vcpus: None,
                    shared_storage: Vec::new(),
                });
            }
        }
        if let (Some(st), Some(d)) = (&mut config.state, dir) {
            if st.dir.is_relative() {
                st.dir = d.join(&st.dir);
            }
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        match &self.tls {
            Some(_) => {
                if let Some(h) = self.hosts.iter().find(|h| h.switch_certificate.is_none()) {
                    return bad(format!(
                        "host {:?}: with [tls] every host names its switch's certificate (switch_certificate)",
                        h.name
                    ));
                }
            }
            None => {
                if let Some(h) = self.hosts.iter().find(|h| h.ovsdb.starts_with("ssl:")) {
                    return bad(format!(
                        "host {:?}: ovsdb {:?} needs [tls] (the controller's certificate and the CA)",
                        h.name, h.ovsdb
                    ));
                }
            }
        }
        for h in &self.hosts {
            if let Some(p) = h.shared_storage.iter().find(|p| !p.starts_with('/')) {
                return bad(format!(
                    "host {:?}: shared_storage {p:?} is not an absolute path",
                    h.name
                ));
            }
        }
        if let Some(c) = &self.cluster {
            if c.endpoints.is_empty() || c.name.is_empty() || c.openflow_targets.is_empty() {
                return bad(
                    "cluster.endpoints, cluster.name and cluster.openflow_targets must not be empty"
                        .into(),
                );
            }
            // etcd grants leases in whole seconds.
            if c.lease_ms < 1000 {
                return bad(format!(
                    "cluster.lease_ms is {}; etcd's leases are at least 1000 ms",
                    c.lease_ms
                ));
            }
            if self.state.is_some() {
                return bad("[cluster] keeps the state in etcd: remove [state]".into());
            }
        }
        if self.controller.period_ms < 10 {
            return bad(format!(
                "controller.period_ms is {}; it must be at least 10",
                self.controller.period_ms
            ));
        }
        if self.controller.echo_interval_ms == 0 || self.controller.request_timeout_ms == 0 {
            return bad(
                "controller.echo_interval_ms and request_timeout_ms must be positive".into(),
            );
        }
        if self.api.tls_cert.is_some() != self.api.tls_key.is_some() {
            return bad("api.tls_cert and api.tls_key go together: give both or neither".into());
        }
        if self.api.tokens_file.is_none() && !self.api.listen.ip().is_loopback() {
            return bad(format!(
                "api.listen is {}, but without api.tokens_file the API has no authentication and may only listen on a loopback address",
                self.api.listen
            ));
        }
        // A bearer token sent over plain HTTP off this machine can be read
        // and replayed by anyone on the path.
        if self.api.tokens_file.is_some()
            && self.api.tls_cert.is_none()
            && !self.api.listen.ip().is_loopback()
        {
            return bad(format!(
                "api.listen is {} with api.tokens_file but without TLS: the tokens would cross the network in clear; give api.tls_cert and api.tls_key, or listen on a loopback address (behind a TLS proxy)",
                self.api.listen
            ));
        }
        let mut names = BTreeSet::new();
        for h in &self.hosts {
            if h.name.is_empty() {
                return bad("a host has an empty name".into());
            }
            if !names.insert(h.name.as_str()) {
                return bad(format!("host {:?} is defined twice", h.name));
            }
            if h.capacity_mbps == 0 {
                return bad(format!("host {:?}: capacity_mbps must be positive", h.name));
            }
            if h.bridge.is_empty() || h.uplink.is_empty() {
                return bad(format!("host {:?}: bridge and uplink must be set", h.name));
            }
            if !["unix:", "tcp:", "ssl:"]
                .iter()
                .any(|p| h.ovsdb.starts_with(p))
            {
                return bad(format!(
                    "host {:?}: ovsdb {:?} must be unix:PATH, tcp:IP:PORT or ssl:IP:PORT",
                    h.name, h.ovsdb
                ));
            }
        }
        Ok(())
    }

    pub fn period(&self) -> Duration {
        Duration::from_millis(self.controller.period_ms)
    }

    /// The OpenFlow target a host's bridge is pointed at.
    /// The OpenFlow targets a host's bridge connects to: every replica's
    /// with `[cluster]`, else this solive's.
    pub fn controller_targets(&self, host: &HostConfig) -> Vec<String> {
        match &self.cluster {
            Some(c) => c.openflow_targets.clone(),
            None => vec![self.controller_target(host)],
        }
    }

    pub fn controller_target(&self, host: &HostConfig) -> String {
        if let Some(t) = &host.controller_target {
            return t.clone();
        }
        let mut addr = self.controller.openflow_listen;
        if addr.ip().is_unspecified() {
            addr.set_ip([127, 0, 0, 1].into());
        }
        let scheme = if self.tls.is_some() { "ssl" } else { "tcp" };
        format!("{scheme}:{addr}")
    }
}

impl HostConfig {
    pub fn capacity_bps(&self) -> u64 {
        self.capacity_mbps * 1_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [controller]
        openflow_listen = "0.0.0.0:6653"
        [api]
        listen = "127.0.0.1:8080"
        [[hosts]]
        name = "h1"
        ovsdb = "unix:/tmp/db.sock"
        bridge = "br0"
        uplink = "up1"
        capacity_mbps = 100
    "#;

    #[test]
    fn parses_with_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.controller.period_ms, 1000);
        assert_eq!(c.hosts[0].capacity_bps(), 100_000_000);
        assert_eq!(c.controller_target(&c.hosts[0]), "tcp:127.0.0.1:6653");
    }

    #[test]
    fn tls_and_cluster_settings_are_checked() {
        let err = |t: &str| Config::parse(t).unwrap_err().to_string();
        let tls = "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nca = \"ca.pem\"\n";
        assert!(err(&format!("{GOOD}{tls}")).contains("switch_certificate"));
        let named = GOOD.replace(
            "capacity_mbps = 100",
            "capacity_mbps = 100\nswitch_certificate = \"h1-switch\"",
        );
        let c = Config::parse(&format!("{named}{tls}")).unwrap();
        assert_eq!(c.controller_target(&c.hosts[0]), "ssl:127.0.0.1:6653");
        let ssl = GOOD.replace("unix:/tmp/db.sock", "ssl:10.0.0.1:6640");
        assert!(err(&ssl).contains("needs [tls]"));
        let cluster = "[cluster]\nendpoints = [\"http://127.0.0.1:2379\"]\nname = \"a\"\n\
                       openflow_targets = [\"tcp:10.0.0.5:6653\", \"tcp:10.0.0.6:6653\"]\n";
        let c = Config::parse(&format!("{GOOD}{cluster}")).unwrap();
        assert_eq!(c.controller_targets(&c.hosts[0]).len(), 2);
        assert_eq!(c.cluster.unwrap().lease_ms, 2000);
        assert!(err(&format!("{GOOD}{cluster}lease_ms = 500\n")).contains("at least 1000"));
        assert!(err(&format!("{GOOD}{cluster}[state]\ndir = \"/x\"\n")).contains("remove [state]"));
    }

    #[test]
    fn unknown_key_is_named() {
        let text = GOOD.replace(
            "capacity_mbps = 100",
            "capacity_mbps = 100\ncapacity_mpbs = 5",
        );
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("capacity_mpbs"), "{err}");
    }

    #[test]
    fn rejects_bad_values() {
        for (from, to, needle) in [
            ("capacity_mbps = 100", "capacity_mbps = 0", "capacity_mbps"),
            ("unix:/tmp/db.sock", "http:1.2.3.4:5", "unix:PATH"),
            ("[api]", "[api]\n", ""),
        ] {
            let text = GOOD.replace(from, to);
            let r = Config::parse(&text);
            if needle.is_empty() {
                assert!(r.is_ok());
            } else {
                let err = r.unwrap_err().to_string();
                assert!(err.contains(needle), "{err}");
            }
        }
        let twice = format!("{GOOD}\n[[hosts]]\nname = \"h1\"\novsdb = \"tcp:1.2.3.4:6640\"\nbridge = \"b\"\nuplink = \"u\"\ncapacity_mbps = 1\n");
        assert!(Config::parse(&twice)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let fast = GOOD.replace("[api]", "period_ms = 1\n[api]");
        assert!(Config::parse(&fast)
            .unwrap_err()
            .to_string()
            .contains("period_ms"));
    }
}

#[cfg(test)]
mod topology_tests {
    #[test]
    fn hosts_come_from_a_topology_file() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ovs");
        let text = "[controller]\nopenflow_listen = \"127.0.0.1:6653\"\n\
                    [topology]\nfile = \"../topologies/scatter-2i.toml\"\novsdb = \"unix:/tmp/db.sock\"\n";
        let c = super::Config::parse_at(text, Some(&dir)).unwrap();
        let names: Vec<&str> = c.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["src", "dst", "i1", "i2"]);
        assert_eq!(c.hosts[1].capacity_mbps, 30);
        assert_eq!(c.hosts[0].bridge, "br-src");
        assert_eq!(c.hosts[2].address, Some("10.0.0.3".parse().unwrap()));
        let missing = text.replace("scatter-2i", "nope");
        assert!(super::Config::parse_at(&missing, Some(&dir)).is_err());
    }
}

#[cfg(test)]
mod example_tests {
    #[test]
    fn shipped_example_config_is_valid() {
        let text = include_str!("../ovs/solive.example.toml");
        let c = super::Config::parse(text).unwrap();
        assert_eq!(c.hosts.len(), 1);
    }
}
