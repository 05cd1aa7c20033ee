//! Scatter-gather migration through intermediaries (paper section V-B), the
//! data path: the source pushes a VM's migration stream to Redis stores on
//! one or more intermediary hosts at its own pace, and the destination
//! gathers it from them at its pace. The reservations around it (source
//! outgoing, 1/k incoming on each intermediary) are the controller's.
//!
//! - [`chunk`]: the records and keys (pure): checksummed chunks, session
//!   header, manifest, one keyspace per VM.
//! - [`store`]: one intermediary's Redis (pipelined batches, timeouts).
//! - [`push`](push()) / [`gather`](gather()): the two ends, on any byte stream;
//!   [`push_tcp`] / [`gather_tcp`] put them between QEMUs.
//!
//! How it carries a real migration (`solive scatter push|gather`, README
//! "Scatter-gather"): libvirt migrates peer to peer with the migration URI
//! `tcp://127.0.0.1:PORT`. On the source host that is `solive scatter push`,
//! listening; on the destination host the destination QEMU listens on
//! 127.0.0.1:PORT (libvirt's listen address) and `solive scatter gather`
//! connects to it. libvirt 9 turns on QEMU's *return path* for every
//! migration, and with it the source QEMU waits, at the end, for the
//! destination's "shut" message before it completes: the gatherer therefore
//! relays the few bytes the destination QEMU sends back through the stores
//! (`rp` list) and the pusher writes them to the source QEMU.
//!
//! ```mermaid
//! sequenceDiagram
//!   participant SQ as source QEMU
//!   participant P as push (source)
//!   participant R as Redis on i1..ik
//!   participant G as gather (destination)
//!   participant DQ as destination QEMU
//!   SQ->>P: stream (pre-copy rounds, then device state)
//!   P->>R: SET chunk, RPUSH idx (pipelined batches, ack = reply)
//!   G->>R: LRANGE idx, GET chunks (pipelined)
//!   G->>DQ: checked payloads, in order
//!   DQ->>G: return path (shut)
//!   G->>R: RPUSH rp
//!   P->>R: LRANGE rp
//!   P->>SQ: return path
//!   SQ-->>P: close
//!   P->>R: SET end (manifest)
//!   G->>R: GET end, check, clear keyspace
//! ```

pub mod chunk;
mod gather;
mod push;
pub mod store;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};

pub use gather::gather;
pub use push::push;

/// Errors of the scatter-gather data path.
#[derive(Debug, thiserror::Error)]
pub enum ScatterError {
    #[error("VM name {0:?} is not usable as a keyspace (1-64 of A-Z a-z 0-9 . _ -)")]
    BadVmName(String),
    #[error("bad configuration: {0}")]
    Config(String),
    /// A store did not connect, answer in time, or acknowledge a write.
    #[error("intermediary store {store}: {message}")]
    Store { store: String, message: String },
    /// A record failed its checks: refused before any of it is delivered.
    #[error("corrupt {what} on {store}: {message}")]
    Corrupt {
        store: String,
        what: String,
        message: String,
    },
    /// Chunks missing, or the stream does not match its manifest.
    #[error("incomplete stream: {0}")]
    Incomplete(String),
    /// The pusher gave up and said why.
    #[error("the push was aborted: {0}")]
    Aborted(String),
    #[error("no stream for VM {vm} appeared on the stores within {secs:.1} s")]
    NoStream { vm: String, secs: f64 },
    #[error("reading the migration stream: {0}")]
    Input(String),
    #[error("writing the migration stream: {0}")]
    Output(String),
}

/// How to push.
#[derive(Debug, Clone)]
pub struct PushConfig {
    pub vm: String,
    /// `redis://HOST:PORT` of each intermediary's store.
    pub stores: Vec<String>,
    /// Chunks per pipelined write (the paper found 10 over 20x faster than 1).
    pub batch: usize,
    pub chunk_bytes: usize,
    /// A pause of the input this long sends a partial chunk.
    pub flush: Duration,
    /// Connect and response timeout of each store.
    pub timeout: Duration,
}

impl PushConfig {
    pub fn new(vm: &str, stores: Vec<String>) -> PushConfig {
        PushConfig {
            vm: vm.to_string(),
            stores,
            batch: 10,
            chunk_bytes: 256 * 1024,
            flush: Duration::from_millis(20),
            timeout: Duration::from_secs(5),
        }
    }
    fn validate(&self) -> Result<(), ScatterError> {
        validate(&self.stores, self.batch)?;
        if self.chunk_bytes == 0 || self.chunk_bytes > chunk::MAX_CHUNK {
            return Err(ScatterError::Config(format!(
                "chunk size must be 1 byte to {} MiB",
                chunk::MAX_CHUNK >> 20
            )));
        }
        Ok(())
    }
}

/// How to gather.
#[derive(Debug, Clone)]
pub struct GatherConfig {
    pub vm: String,
    /// The same stores as the push's.
    pub stores: Vec<String>,
    /// Chunks read per pipeline from each store.
    pub batch: usize,
    /// How long to wait for the push to appear on the stores.
    pub wait: Duration,
    /// How long the next chunk may take before the stream counts as incomplete.
    pub idle: Duration,
    pub poll: Duration,
    pub timeout: Duration,
}

impl GatherConfig {
    pub fn new(vm: &str, stores: Vec<String>) -> GatherConfig {
        GatherConfig {
            vm: vm.to_string(),
            stores,
            batch: 10,
            wait: Duration::from_secs(60),
            idle: Duration::from_secs(30),
            poll: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
        }
    }
    fn validate(&self) -> Result<(), ScatterError> {
        validate(&self.stores, self.batch)
    }
}

fn validate(stores: &[String], batch: usize) -> Result<(), ScatterError> {
    if stores.is_empty() {
        return Err(ScatterError::Config("no store given".into()));
    }
    let mut seen = std::collections::HashSet::new();
    if !stores.iter().all(|s| seen.insert(s)) {
        return Err(ScatterError::Config("a store is given twice".into()));
    }
    if batch == 0 || batch > 10_000 {
        return Err(ScatterError::Config("batch must be 1 to 10000".into()));
    }
    Ok(())
}

/// A task that must not outlive its owner: the return-path relays hold one
/// half of QEMU's connection, which only closes when both halves are gone.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The abort marker's value: the session it ends, then why. A marker left by
/// an earlier push of the same VM names another session and is ignored.
fn abort_value(session: u64, why: &str) -> String {
    format!("{session:016x} {why}")
}

/// The reason, if `value` is an abort marker of `session`.
fn abort_reason(value: &[u8], session: u64) -> Option<String> {
    let v = String::from_utf8_lossy(value);
    v.strip_prefix(&format!("{session:016x} "))
        .map(str::to_string)
}

/// What one store took (push) or gave (gather).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StoreCount {
    pub store: String,
    pub chunks: u64,
    /// Encoded bytes (payload plus chunk header).
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushReport {
    pub vm: String,
    pub session: String,
    /// Payload bytes of the stream.
    pub bytes: u64,
    pub chunks: u64,
    pub stream_crc: String,
    /// From the stream's first byte to the acknowledgement of its last chunk:
    /// from then on every byte the source sent is on an intermediary.
    pub eviction_ms: f64,
    /// Wall-clock time of the stream's first byte (ms since the Unix
    /// epoch), to put `eviction_ms` on the caller's time line.
    pub first_byte_unix_ms: f64,
    /// From the first byte until the source closed the stream and the
    /// manifest was acknowledged. With libvirt this includes waiting for the
    /// destination (see the module documentation).
    pub input_closed_ms: f64,
    pub per_store: Vec<StoreCount>,
    pub batch: usize,
    pub chunk_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatherReport {
    pub vm: String,
    pub session: String,
    pub bytes: u64,
    pub chunks: u64,
    pub stream_crc: String,
    /// From the push's header appearing to the stream checked against its manifest.
    pub total_ms: f64,
    pub first_chunk_ms: f64,
    pub per_store: Vec<StoreCount>,
    pub batch: usize,
}

/// Accepts one connection on `listener` (the source QEMU's migration
/// connection) and pushes it, relaying the return path back to it.
pub async fn push_tcp(
    cfg: &PushConfig,
    listener: TcpListener,
    accept_timeout: Duration,
) -> Result<PushReport, ScatterError> {
    let (sock, peer) = tokio::time::timeout(accept_timeout, listener.accept())
        .await
        .map_err(|_| {
            ScatterError::Input(format!(
                "no connection within {:.0} s",
                accept_timeout.as_secs_f64()
            ))
        })?
        .map_err(|e| ScatterError::Input(e.to_string()))?;
    tracing::info!(%peer, vm = %cfg.vm, "scatter push: migration stream connected");
    let _ = sock.set_nodelay(true);
    let (r, w) = sock.into_split();
    push(cfg, r, Some(w)).await
}

/// Connects to the destination QEMU's migration listener at `addr`, retrying
/// until `cfg.wait` has passed (libvirt starts it during the migration), and
/// gathers into it.
pub async fn gather_tcp(
    cfg: &GatherConfig,
    addr: SocketAddr,
) -> Result<GatherReport, ScatterError> {
    let deadline = Instant::now() + cfg.wait;
    let sock = loop {
        match TcpStream::connect(addr).await {
            // Connecting to a local port in the ephemeral range that nothing
            // listens on yet can pick that very port as the source: TCP's
            // simultaneous open then connects the socket to itself, the
            // gather "succeeds" with no QEMU behind it, and QEMU's listen
            // fails with "Address already in use" (seen in CI). Drop it, so
            // the port is free again, and retry.
            Ok(s) if connected_to_itself(&s) => {
                drop(s);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => {
                return Err(ScatterError::Output(format!(
                    "cannot connect to {addr}: {e}"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let _ = sock.set_nodelay(true);
    let (r, w) = sock.into_split();
    gather(cfg, w, Some(r)).await
}

/// Whether a connection's two ends are one socket (see [`gather_tcp`]).
fn connected_to_itself(s: &TcpStream) -> bool {
    matches!((s.local_addr(), s.peer_addr()), (Ok(l), Ok(p)) if l == p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_connected_to_itself_is_recognised() {
        // Find a free port, then connect a socket bound to it to itself (what
        // an unlucky ephemeral port does by chance).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_reuseaddr(true).unwrap();
        sock.bind(addr).unwrap();
        let selfish = sock.connect(addr).await.unwrap();
        assert!(connected_to_itself(&selfish));
        drop(selfish);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let normal = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(!connected_to_itself(&normal));
    }

    #[test]
    fn an_abort_marker_counts_only_for_its_own_session() {
        let v = abort_value(0xab, "store i2 lost");
        assert_eq!(
            abort_reason(v.as_bytes(), 0xab).as_deref(),
            Some("store i2 lost")
        );
        assert_eq!(abort_reason(v.as_bytes(), 0xac), None);
        assert_eq!(abort_reason(b"garbage", 0xab), None);
        assert_eq!(abort_reason(&[0xff, 0xfe], 0xab), None);
    }

    #[test]
    fn configurations_are_checked() {
        let ok = PushConfig::new("vm1", vec!["redis://a".into()]);
        assert!(ok.validate().is_ok());
        let mut c = ok.clone();
        c.batch = 0;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.chunk_bytes = 0;
        assert!(c.validate().is_err());
        let c = PushConfig::new("vm1", vec!["redis://a".into(), "redis://a".into()]);
        assert!(c.validate().is_err());
        assert!(GatherConfig::new("vm1", vec![]).validate().is_err());
    }
}
