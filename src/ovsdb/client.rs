//! The JSON-RPC connection: framing, the connection task and the [`Client`] handle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value as Json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Decoder, Encoder, Framed};
use tracing::{debug, warn};

use super::ops::{
    table_updates_from_json, MonitorRequest, Operation, OperationResult, TableUpdates,
};
use super::OvsdbError;

/// How long a request waits for its reply unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest JSON message accepted from the server.
const MAX_MESSAGE: usize = 64 << 20;

/// How many table updates a monitor's channel holds (more wait in an unbounded
/// queue behind it; see [`forwarder`]).
const MONITOR_BUFFER: usize = 256;

/// Frames a stream of concatenated JSON values (OVSDB sends no delimiter).
///
/// Check, then parse: a cheap scan over brackets and strings finds where a
/// complete top-level value ends; only then is it handed to serde_json.
#[derive(Debug, Default)]
pub struct JsonCodec {
    /// Bytes of the current value already scanned, and the scanner's state.
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Decoder for JsonCodec {
    type Item = Json;
    type Error = OvsdbError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Json>, OvsdbError> {
        // Skip whitespace between messages.
        if self.scanned == 0 {
            let ws = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
            buf.advance(ws);
        }
        while self.scanned < buf.len() {
            let b = buf[self.scanned];
            self.scanned += 1;
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    if self.depth == 0 {
                        return Err(OvsdbError::Unexpected("an unbalanced JSON message".into()));
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        let frame = buf.split_to(self.scanned);
                        *self = JsonCodec::default();
                        return Ok(Some(serde_json::from_slice(&frame)?));
                    }
                }
                _ if self.depth == 0 => {
                    return Err(OvsdbError::Unexpected(
                        "a JSON-RPC message that is not an object".into(),
                    ))
                }
                _ => {}
            }
        }
        if buf.len() > MAX_MESSAGE {
            return Err(OvsdbError::Unexpected(format!(
                "a JSON message longer than {MAX_MESSAGE} bytes"
            )));
        }
        Ok(None)
    }
}

impl Encoder<Json> for JsonCodec {
    type Error = OvsdbError;

    fn encode(&mut self, item: Json, dst: &mut BytesMut) -> Result<(), OvsdbError> {
        dst.extend_from_slice(&serde_json::to_vec(&item)?);
        Ok(())
    }
}

type Reply = oneshot::Sender<Result<Json, OvsdbError>>;

enum Command {
    Request {
        method: &'static str,
        params: Json,
        reply: Reply,
        /// For `monitor`: the monitor id and where its updates go.
        monitor: Option<(String, mpsc::Sender<TableUpdates>)>,
    },
}

/// A cheap, cloneable handle to one OVSDB connection. The connection closes when
/// the last handle is dropped or the server goes away.
#[derive(Clone, Debug)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    closed: Arc<AtomicBool>,
    timeout: Duration,
    locks: tokio::sync::broadcast::Sender<LockNotice>,
}

/// The server's word about a lock this connection asked for (RFC 7047
/// 4.1.8-4.1.11): granted later (`locked`) or taken by a `steal` (`stolen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockNotice {
    Locked(String),
    Stolen(String),
}

impl Client {
    /// Connects to `unix:/path` or `tcp:IP:PORT`.
    pub async fn connect(target: &str) -> Result<Client, OvsdbError> {
        Client::connect_tls(target, None).await
    }

    /// [`Client::connect`], and `ssl:IP:PORT` with `tls` (mutual TLS: the
    /// server's certificate is checked against the CA for IP, and ours is
    /// presented; see `crate::pki`).
    pub async fn connect_tls(
        target: &str,
        tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    ) -> Result<Client, OvsdbError> {
        let connect_err = |source| OvsdbError::Connect {
            target: target.to_string(),
            source,
        };
        let fut = async {
            if let Some(path) = target.strip_prefix("unix:") {
                let s = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(connect_err)?;
                Ok(Client::from_stream(s))
            } else if let Some(addr) = target.strip_prefix("tcp:") {
                let addr = tcp_addr(addr);
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(connect_err)?;
                s.set_nodelay(true).map_err(connect_err)?;
                Ok(Client::from_stream(s))
            } else if let (Some(addr), Some(tls)) = (target.strip_prefix("ssl:"), tls) {
                let addr = tcp_addr(addr);
                let s = tokio::net::TcpStream::connect(&addr)
                    .await
                    .map_err(connect_err)?;
                s.set_nodelay(true).map_err(connect_err)?;
                let ip = s.peer_addr().map_err(connect_err)?.ip();
                let name = rustls_pki_types::ServerName::IpAddress(ip.into());
                let s = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, s)
                    .await
                    .map_err(connect_err)?;
                Ok(Client::from_stream(s))
            } else {
                Err(OvsdbError::BadTarget(target.to_string()))
            }
        };
        tokio::time::timeout(DEFAULT_TIMEOUT, fut)
            .await
            .map_err(|_| OvsdbError::Timeout)?
    }

    /// Runs the protocol over an already connected stream (also how unit tests
    /// put a fake server on the other end).
    pub fn from_stream<S>(stream: S) -> Client
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel(64);
        let closed = Arc::new(AtomicBool::new(false));
        let (locks, _) = tokio::sync::broadcast::channel(16);
        tokio::spawn(connection(
            Framed::new(stream, JsonCodec::default()),
            rx,
            closed.clone(),
            locks.clone(),
        ));
        Client {
            commands: tx,
            closed,
            timeout: DEFAULT_TIMEOUT,
            locks,
        }
    }

    /// A handle to the same connection whose requests time out after `timeout`.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            timeout,
            ..self.clone()
        }
    }

    /// True once the connection has gone away; every request then fails with
    /// [`OvsdbError::Disconnected`].
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.commands.is_closed()
    }

    async fn request_inner(
        &self,
        method: &'static str,
        params: Json,
        monitor: Option<(String, mpsc::Sender<TableUpdates>)>,
    ) -> Result<Json, OvsdbError> {
        if self.is_closed() {
            return Err(OvsdbError::Disconnected);
        }
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Request {
                method,
                params,
                reply,
                monitor,
            })
            .await
            .map_err(|_| OvsdbError::Disconnected)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => Err(OvsdbError::Timeout),
            Ok(Err(_)) => Err(OvsdbError::Disconnected),
            Ok(Ok(r)) => r,
        }
    }

    /// Sends any JSON-RPC request and returns its `result`.
    pub async fn request(&self, method: &'static str, params: Json) -> Result<Json, OvsdbError> {
        self.request_inner(method, params, None).await
    }

    /// Asks for lock `name`: true if granted now; otherwise the server
    /// queues the request and says [`LockNotice::Locked`] when it is.
    pub async fn lock(&self, name: &str) -> Result<bool, OvsdbError> {
        let r = self.request("lock", json!([name])).await?;
        Ok(r["locked"].as_bool().unwrap_or(false))
    }

    /// Takes lock `name` from whoever holds it (they get
    /// [`LockNotice::Stolen`]).
    pub async fn steal(&self, name: &str) -> Result<(), OvsdbError> {
        self.request("steal", json!([name])).await.map(drop)
    }

    /// Lock notices from now on (subscribe before asking for the lock).
    pub fn lock_notices(&self) -> tokio::sync::broadcast::Receiver<LockNotice> {
        self.locks.subscribe()
    }

    pub async fn echo(&self) -> Result<(), OvsdbError> {
        self.request("echo", json!([])).await.map(|_| ())
    }

    pub async fn list_dbs(&self) -> Result<Vec<String>, OvsdbError> {
        let r = self.request("list_dbs", json!([])).await?;
        Ok(serde_json::from_value(r)?)
    }

    pub async fn get_schema(&self, db: &str) -> Result<Json, OvsdbError> {
        self.request("get_schema", json!([db])).await
    }

    /// Runs `ops` as one transaction. If any operation failed (or the commit did),
    /// the whole transaction had no effect and the error names the operation.
    pub async fn transact(
        &self,
        db: &str,
        ops: Vec<Operation>,
    ) -> Result<Vec<OperationResult>, OvsdbError> {
        let mut params = vec![Json::from(db)];
        params.extend(ops.iter().map(Operation::to_json));
        let r = self.request("transact", Json::Array(params)).await?;
        let results = r
            .as_array()
            .ok_or_else(|| OvsdbError::Unexpected(format!("a transact result {r}")))?;
        for (index, res) in results.iter().enumerate() {
            if let Some(error) = res.get("error").and_then(Json::as_str) {
                let details = res.get("details").and_then(Json::as_str).unwrap_or("");
                let op = ops.get(index).map_or("commit", Operation::name);
                return Err(OvsdbError::OperationFailed {
                    index,
                    op,
                    error: error.to_string(),
                    details: details.to_string(),
                });
            }
        }
        results.iter().map(OperationResult::from_json).collect()
    }

    /// Starts monitoring tables of `db`: returns their current contents (for
    /// tables whose `select.initial` is set) and a channel of later changes. The
    /// channel closes when the connection does; dropping it ends the monitor.
    pub async fn monitor(
        &self,
        db: &str,
        requests: &[(&str, MonitorRequest)],
    ) -> Result<(TableUpdates, mpsc::Receiver<TableUpdates>), OvsdbError> {
        let id = uuid::Uuid::new_v4().to_string();
        let reqs: serde_json::Map<String, Json> = requests
            .iter()
            .map(|(t, r)| (t.to_string(), r.to_json()))
            .collect();
        let (tx, rx) = mpsc::channel(MONITOR_BUFFER);
        let r = self
            .request_inner("monitor", json!([db, id, reqs]), Some((id.clone(), tx)))
            .await?;
        Ok((table_updates_from_json(&r)?, rx))
    }
}

/// `tcp:IP:PORT` as OVS writes it; an IPv6 address may be bracketed or bare.
fn tcp_addr(addr: &str) -> String {
    if addr.starts_with('[') || addr.matches(':').count() <= 1 {
        return addr.to_string();
    }
    match addr.rsplit_once(':') {
        Some((ip, port)) => format!("[{ip}]:{port}"),
        None => addr.to_string(),
    }
}

/// Updates go through an unbounded queue and a task of their own to the
/// monitor's bounded channel, so that a slow monitor consumer never blocks the
/// connection task (which would deadlock a consumer that waits for a reply)
/// and no update is ever dropped.
fn forwarder(tx: mpsc::Sender<TableUpdates>) -> mpsc::UnboundedSender<TableUpdates> {
    let (utx, mut urx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(u) = urx.recv().await {
            if tx.send(u).await.is_err() {
                break;
            }
        }
    });
    utx
}

struct Pending {
    method: &'static str,
    reply: Reply,
    monitor: Option<String>,
}

/// The connection task: the only reader and writer of the socket. It routes
/// replies to waiters by id, answers `echo`, and delivers `update`
/// notifications to monitors. When it ends, every waiter gets `Disconnected`.
async fn connection<S>(
    mut framed: Framed<S, JsonCodec>,
    mut commands: mpsc::Receiver<Command>,
    closed: Arc<AtomicBool>,
    locks: tokio::sync::broadcast::Sender<LockNotice>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut next_id: u64 = 0;
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut monitors: HashMap<String, mpsc::UnboundedSender<TableUpdates>> = HashMap::new();
    let reason = loop {
        tokio::select! {
            cmd = commands.recv() => {
                let Some(Command::Request { method, params, reply, monitor }) = cmd else {
                    break "every client handle was dropped".to_string();
                };
                if reply.is_closed() {
                    continue;
                }
                next_id += 1;
                let msg = json!({"id": next_id, "method": method, "params": params});
                if let Err(e) = framed.send(msg).await {
                    let _ = reply.send(Err(OvsdbError::Disconnected));
                    break format!("cannot send: {e}");
                }
                let monitor = monitor.map(|(id, tx)| {
                    monitors.insert(id.clone(), forwarder(tx));
                    id
                });
                pending.retain(|_, p| !p.reply.is_closed());
                pending.insert(next_id, Pending { method, reply, monitor });
            }
            msg = framed.next() => {
                let msg = match msg {
                    None => break "the server closed the connection".to_string(),
                    Some(Err(e)) => break e.to_string(),
                    Some(Ok(m)) => m,
                };
                if let Err(e) = handle_message(msg, &mut framed, &mut pending, &mut monitors, &locks).await {
                    break e.to_string();
                }
            }
        }
    };
    closed.store(true, Ordering::Release);
    debug!(%reason, "OVSDB connection closed");
    for (_, p) in pending.drain() {
        let _ = p.reply.send(Err(OvsdbError::Disconnected));
    }
    // Dropping the senders closes every monitor's receiver.
    monitors.clear();
}

async fn handle_message<S>(
    msg: Json,
    framed: &mut Framed<S, JsonCodec>,
    pending: &mut HashMap<u64, Pending>,
    monitors: &mut HashMap<String, mpsc::UnboundedSender<TableUpdates>>,
    locks: &tokio::sync::broadcast::Sender<LockNotice>,
) -> Result<(), OvsdbError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let id = msg.get("id").cloned().unwrap_or(Json::Null);
    if let Some(method) = msg.get("method").and_then(Json::as_str) {
        let params = msg.get("params").cloned().unwrap_or(Json::Null);
        if !id.is_null() {
            // A request from the server.
            let reply = if method == "echo" {
                json!({"id": id, "result": params, "error": null})
            } else {
                warn!(method, "OVSDB server sent an unknown request");
                json!({"id": id, "result": null, "error": "unknown method"})
            };
            return framed.send(reply).await;
        }
        match method {
            "update" => {
                let (Some(mon), Some(updates)) = (params.get(0), params.get(1)) else {
                    warn!(%params, "malformed OVSDB update notification");
                    return Ok(());
                };
                let mon = mon.as_str().unwrap_or_default().to_string();
                let updates = match table_updates_from_json(updates) {
                    Ok(u) => u,
                    Err(e) => {
                        warn!(error = %e, "undecodable OVSDB update notification");
                        return Ok(());
                    }
                };
                if let Some(tx) = monitors.get(&mon) {
                    if tx.send(updates).is_err() {
                        // The receiver is gone: stop the server sending more.
                        monitors.remove(&mon);
                        framed
                            .send(json!({"id": null, "method": "monitor_cancel", "params": [mon]}))
                            .await?;
                    }
                }
            }
            "locked" | "stolen" => {
                let name = params[0].as_str().unwrap_or_default().to_string();
                let notice = if method == "locked" {
                    LockNotice::Locked(name)
                } else {
                    LockNotice::Stolen(name)
                };
                // Nobody listening is fine: the lock's owner did not ask.
                let _ = locks.send(notice);
            }
            other => debug!(method = other, "ignoring OVSDB notification"),
        }
        return Ok(());
    }
    let Some(p) = id.as_u64().and_then(|i| pending.remove(&i)) else {
        // A reply nobody waits for any more (its waiter timed out), or to a
        // notification such as monitor_cancel.
        debug!(%id, "OVSDB reply without a waiter");
        return Ok(());
    };
    let error = msg.get("error").cloned().unwrap_or(Json::Null);
    let result = if error.is_null() {
        Ok(msg.get("result").cloned().unwrap_or(Json::Null))
    } else {
        if let Some(m) = &p.monitor {
            monitors.remove(m);
        }
        let (error, details) = match &error {
            Json::String(s) => (s.clone(), String::new()),
            e => (
                e.get("error")
                    .and_then(Json::as_str)
                    .unwrap_or("unknown")
                    .to_string(),
                e.get("details")
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .to_string(),
            ),
        };
        Err(OvsdbError::Rpc {
            method: p.method,
            error,
            details,
        })
    };
    let _ = p.reply.send(result);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    type Server = Framed<DuplexStream, JsonCodec>;

    fn pair() -> (Client, Server) {
        let (a, b) = tokio::io::duplex(1 << 16);
        (Client::from_stream(a), Framed::new(b, JsonCodec::default()))
    }

    #[test]
    fn codec_frames_split_and_concatenated_messages() {
        let mut c = JsonCodec::default();
        let mut buf = BytesMut::from(&b"{\"a\":\"}{[\\\"\"}  [1,"[..]);
        assert_eq!(c.decode(&mut buf).unwrap(), Some(json!({"a": "}{[\""})));
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"2]{\"b\":{}}");
        assert_eq!(c.decode(&mut buf).unwrap(), Some(json!([1, 2])));
        assert_eq!(c.decode(&mut buf).unwrap(), Some(json!({"b": {}})));
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        let mut bad = BytesMut::from(&b"x"[..]);
        assert!(JsonCodec::default().decode(&mut bad).is_err());
    }

    #[tokio::test]
    async fn replies_are_routed_by_id_and_echo_is_answered() {
        let (client, mut server) = pair();
        let c2 = client.clone();
        let a = tokio::spawn(async move { c2.list_dbs().await });
        let first = server.next().await.unwrap().unwrap();
        let c3 = client.clone();
        let b = tokio::spawn(async move { c3.get_schema("Open_vSwitch").await });
        let second = server.next().await.unwrap().unwrap();
        assert_eq!(first["method"], "list_dbs");
        assert_eq!(second["method"], "get_schema");

        // The server pings us in between; we must answer with the same id.
        server
            .send(json!({"id": "e1", "method": "echo", "params": ["x"]}))
            .await
            .unwrap();
        let echo = server.next().await.unwrap().unwrap();
        assert_eq!(echo, json!({"id": "e1", "result": ["x"], "error": null}));

        // Replies in the opposite order, plus one for an unknown id.
        server
            .send(json!({"id": 999, "result": 1, "error": null}))
            .await
            .unwrap();
        server
            .send(json!({"id": second["id"], "result": {"name": "Open_vSwitch"}, "error": null}))
            .await
            .unwrap();
        server
            .send(json!({"id": first["id"], "result": ["A", "B"], "error": null}))
            .await
            .unwrap();
        assert_eq!(
            a.await.unwrap().unwrap(),
            vec!["A".to_string(), "B".to_string()]
        );
        assert_eq!(b.await.unwrap().unwrap()["name"], "Open_vSwitch");
    }

    #[tokio::test]
    async fn rpc_errors_and_failed_operations_are_reported() {
        let (client, mut server) = pair();
        let c = client.clone();
        let t = tokio::spawn(async move {
            c.transact("db", vec![Operation::Comment("a".into()), Operation::Abort])
                .await
        });
        let req = server.next().await.unwrap().unwrap();
        assert_eq!(
            req["params"],
            json!(["db", {"op": "comment", "comment": "a"}, {"op": "abort"}])
        );
        server
            .send(json!({"id": req["id"], "error": null,
                "result": [{}, {"error": "aborted", "details": "aborted by request"}]}))
            .await
            .unwrap();
        match t.await.unwrap() {
            Err(OvsdbError::OperationFailed {
                index: 1,
                op: "abort",
                error,
                ..
            }) => {
                assert_eq!(error, "aborted")
            }
            other => panic!("unexpected {other:?}"),
        }
        let c = client.clone();
        let t = tokio::spawn(async move { c.get_schema("nope").await });
        let req = server.next().await.unwrap().unwrap();
        server
            .send(json!({"id": req["id"], "result": null,
                "error": {"error": "unknown database", "details": "nope"}}))
            .await
            .unwrap();
        assert!(matches!(
            t.await.unwrap(),
            Err(OvsdbError::Rpc {
                method: "get_schema",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn monitor_updates_go_to_the_channel_and_close_with_the_connection() {
        let (client, mut server) = pair();
        let c = client.clone();
        let m = tokio::spawn(async move {
            c.monitor("db", &[("Bridge", MonitorRequest::columns(&["name"]))])
                .await
        });
        let req = server.next().await.unwrap().unwrap();
        let mon_id = req["params"][1].clone();
        assert_eq!(req["params"][2]["Bridge"]["columns"], json!(["name"]));
        server
            .send(json!({"id": req["id"], "result": {}, "error": null}))
            .await
            .unwrap();
        let (initial, mut rx) = m.await.unwrap().unwrap();
        assert!(initial.is_empty());
        let u = "36bb3ad5-3a63-4d76-a3e2-a9a44ac0b4b7";
        server
            .send(json!({"id": null, "method": "update",
                "params": [mon_id, {"Bridge": {u: {"new": {"name": "br0"}}}}]}))
            .await
            .unwrap();
        let upd = rx.recv().await.unwrap();
        assert!(upd["Bridge"].contains_key(&uuid::Uuid::parse_str(u).unwrap()));

        // A request in flight when the server goes away fails promptly.
        let c = client.clone();
        let pending = tokio::spawn(async move { c.list_dbs().await });
        let _ = server.next().await.unwrap().unwrap();
        drop(server);
        let r = tokio::time::timeout(Duration::from_secs(2), pending)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(r, Err(OvsdbError::Disconnected)));
        assert!(rx.recv().await.is_none());
        assert!(client.is_closed());
        assert!(matches!(
            client.list_dbs().await,
            Err(OvsdbError::Disconnected)
        ));
    }

    #[tokio::test]
    async fn requests_time_out() {
        let (client, mut server) = pair();
        let c = client.with_timeout(Duration::from_millis(50));
        let r = c.list_dbs().await;
        assert!(matches!(r, Err(OvsdbError::Timeout)));
        // A late reply is dropped without harm and the connection still works.
        let late = server.next().await.unwrap().unwrap();
        server
            .send(json!({"id": late["id"], "result": [], "error": null}))
            .await
            .unwrap();
        let c = client.clone();
        let t = tokio::spawn(async move { c.list_dbs().await });
        let req = server.next().await.unwrap().unwrap();
        server
            .send(json!({"id": req["id"], "result": ["X"], "error": null}))
            .await
            .unwrap();
        assert_eq!(t.await.unwrap().unwrap(), vec!["X".to_string()]);
    }

    #[tokio::test]
    async fn bad_targets_are_clear_errors() {
        assert!(matches!(
            Client::connect("ssl:1.2.3.4:6640").await,
            Err(OvsdbError::BadTarget(_))
        ));
        assert!(matches!(
            Client::connect("unix:/nonexistent/db.sock").await,
            Err(OvsdbError::Connect { .. })
        ));
        assert_eq!(tcp_addr("127.0.0.1:6640"), "127.0.0.1:6640");
        assert_eq!(tcp_addr("::1:6640"), "[::1]:6640");
    }
}
