//! The task that owns one switch connection. See the module above for the
//! protocol it speaks; this file is the event loop.

use std::collections::HashMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::codec::Framed;

use super::{body_name, Expect, Outgoing, SwitchError, SwitchEvent, SwitchHandle};
use crate::openflow::messages::HelloFailedCode;
use crate::openflow::{
    Body, ErrorCode, ErrorMsg, Hello, Message, MultipartReply, MultipartReplyBody, OfCodec, Role,
    OFP_VERSION,
};

/// Timers of a switch session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Silence after which we send an ECHO_REQUEST.
    pub echo_interval: Duration,
    /// How long a request, an echo or the handshake may wait for an answer.
    pub request_timeout: Duration,
    /// Capacity of the queue of outgoing requests per switch.
    pub queue: usize,
    /// The role this controller claims on every switch (a replica of a
    /// cluster: MASTER with its election's generation when leader, SLAVE
    /// otherwise), sent after the handshake and again whenever it changes.
    /// `None` (one controller): no ROLE_REQUEST, the switch's default EQUAL.
    pub role: Option<watch::Receiver<Role>>,
    /// Mutual TLS on the listener (`crate::pki`); `None`: plain TCP.
    pub tls: Option<std::sync::Arc<super::TlsServerConfig>>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            echo_interval: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            queue: 1024,
            role: None,
            tls: None,
        }
    }
}

struct Pending {
    what: &'static str,
    expect: Expect,
    /// Order of sending, to resolve error-only waiters sent before a barrier.
    seq: u64,
    deadline: Instant,
    partial: Option<MultipartReplyBody>,
}

type Conn<S> = Framed<S, OfCodec>;

/// Runs one switch session to its end. Never panics on what the peer sends:
/// every failure ends the session with a [`SwitchEvent::Disconnected`] (or, if
/// the handshake did not finish, a log line).
pub async fn run_session<S>(
    stream: S,
    peer: super::Peer,
    session: u64,
    config: SessionConfig,
    events: mpsc::UnboundedSender<SwitchEvent>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn = Framed::new(stream, OfCodec);
    let mut early = Vec::new();
    let features = match handshake(&mut conn, &config, &mut early).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(peer = %peer.addr, error = %e, "switch handshake failed");
            return;
        }
    };
    let dpid = features.datapath_id;
    let mut role = config.role.clone();
    let (tx, rx) = mpsc::channel(config.queue);
    let handle = SwitchHandle::new(dpid, session, features, peer.clone(), tx);
    let peer = peer.addr;
    tracing::info!(dpid = format!("{dpid:016x}"), %peer, session, "switch connected");
    if events.send(SwitchEvent::Connected(handle)).is_err() {
        return;
    }
    let mut s = Session {
        dpid,
        config,
        events,
        pending: HashMap::new(),
        next_xid: 0x100,
        seq: 0,
        last_rx: Instant::now(),
        echo_sent: None,
        role_sent: None,
    };
    // The claim goes out before anything the controller sends through the
    // handle (the switch handles a connection's messages in order), so no
    // write of ours reaches the switch under a role we did not claim.
    let claim = role.as_mut().map(|r| *r.borrow_and_update());
    let claimed = match claim {
        Some(claim) => s.claim_role(&mut conn, claim).await,
        None => Ok(()),
    };
    let reason = match claimed {
        Err(e) => e,
        Ok(()) => {
            for msg in early {
                s.incoming(&mut conn, msg).await.ok();
            }
            s.run(&mut conn, rx, role).await
        }
    };
    tracing::info!(dpid = format!("{dpid:016x}"), %peer, session, %reason, "switch disconnected");
    // Dropping the pending senders wakes every waiter with Disconnected.
    s.pending.clear();
    let _ = s.events.send(SwitchEvent::Disconnected {
        dpid,
        session,
        reason,
    });
}

/// HELLO exchange and FEATURES_REQUEST. Messages that arrive before the
/// features reply (a PORT_STATUS, say) are kept in `early`, not dropped.
async fn handshake<S>(
    conn: &mut Conn<S>,
    config: &SessionConfig,
    early: &mut Vec<Message>,
) -> Result<crate::openflow::SwitchFeatures, SwitchError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io = |e: crate::openflow::CodecError| SwitchError::Io(e.to_string());
    conn.send(Message {
        xid: 1,
        body: Body::Hello(Hello::new()),
    })
    .await
    .map_err(io)?;
    let deadline = Instant::now() + config.request_timeout;
    let mut got_hello = false;
    loop {
        let msg = tokio::time::timeout_at(deadline, conn.next())
            .await
            .map_err(|_| SwitchError::Handshake("no HELLO and FEATURES_REPLY in time".into()))?
            .ok_or_else(|| SwitchError::Handshake("peer closed the connection".into()))?
            .map_err(|e| SwitchError::Handshake(e.to_string()))?;
        match msg.body {
            Body::Hello(h) if !got_hello => {
                if !h.supports(OFP_VERSION) {
                    // OpenFlow says: answer HELLO_FAILED/INCOMPATIBLE, then close.
                    let err = ErrorMsg {
                        code: ErrorCode::HelloFailed(HelloFailedCode::Incompatible),
                        data: bytes::Bytes::from_static(b"solive speaks OpenFlow 1.3 only"),
                    };
                    let _ = conn
                        .send(Message {
                            xid: msg.xid,
                            body: Body::Error(err),
                        })
                        .await;
                    return Err(SwitchError::Handshake(format!(
                        "peer does not speak OpenFlow 1.3 (HELLO version {:#04x})",
                        h.version
                    )));
                }
                got_hello = true;
                conn.send(Message {
                    xid: 2,
                    body: Body::FeaturesRequest,
                })
                .await
                .map_err(io)?;
            }
            Body::EchoRequest(data) => {
                conn.send(Message {
                    xid: msg.xid,
                    body: Body::EchoReply(data),
                })
                .await
                .map_err(io)?;
            }
            Body::FeaturesReply(f) if got_hello => return Ok(f),
            Body::Error(e) => {
                return Err(SwitchError::Handshake(format!(
                    "peer sent {}",
                    super::describe(&e)
                )))
            }
            _ if got_hello => early.push(msg),
            other => {
                return Err(SwitchError::Handshake(format!(
                    "expected HELLO, got {}",
                    body_name(&other)
                )))
            }
        }
    }
}

/// The next claim, when the role's sender changed it; pending forever when
/// there is no role (or its sender is gone: the claim in force stays).
async fn changed(role: &mut Option<watch::Receiver<Role>>) -> Option<Role> {
    if let Some(r) = role {
        if r.changed().await.is_ok() {
            let claim = *r.borrow_and_update();
            return Some(claim);
        }
    }
    std::future::pending().await
}

struct Session {
    dpid: u64,
    config: SessionConfig,
    events: mpsc::UnboundedSender<SwitchEvent>,
    pending: HashMap<u32, Pending>,
    next_xid: u32,
    seq: u64,
    last_rx: Instant,
    /// xid and time of an unanswered ECHO_REQUEST of ours.
    echo_sent: Option<(u32, Instant)>,
    /// xid and claim of our last ROLE_REQUEST.
    role_sent: Option<(u32, Role)>,
}

impl Session {
    /// The event loop; returns why the session ended.
    async fn run<S>(
        &mut self,
        conn: &mut Conn<S>,
        mut rx: mpsc::Receiver<Outgoing>,
        mut role: Option<watch::Receiver<Role>>,
    ) -> String
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let tick = (self.config.request_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_millis(250));
        let mut timer = tokio::time::interval(tick);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // A new claim first: a replica made leader changes its claim
                // before its controller starts sending through the handle.
                biased;
                changed = changed(&mut role) => {
                    if let Some(claim) = changed {
                        if let Err(e) = self.claim_role(conn, claim).await {
                            return e;
                        }
                    }
                }
                frame = conn.next() => match frame {
                    Some(Ok(msg)) => {
                        if let Err(e) = self.incoming(conn, msg).await {
                            return e;
                        }
                    }
                    Some(Err(e)) => return format!("protocol error: {e}"),
                    None => return "connection closed by the switch".into(),
                },
                out = rx.recv() => match out {
                    Some(out) => {
                        if let Err(e) = self.outgoing(conn, out).await {
                            return e;
                        }
                    }
                    None => return "no handle to the session is left".into(),
                },
                _ = timer.tick() => {
                    if let Err(e) = self.on_tick(conn).await {
                        return e;
                    }
                }
            }
        }
    }

    /// Sends a ROLE_REQUEST; its answer is checked in [`Session::incoming`].
    async fn claim_role<S>(&mut self, conn: &mut Conn<S>, claim: Role) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let xid = self.alloc_xid();
        self.role_sent = Some((xid, claim));
        conn.send(Message {
            xid,
            body: Body::RoleRequest(claim),
        })
        .await
        .map_err(|e| format!("send failed: {e}"))
    }

    /// The answer to our ROLE_REQUEST. A refusal ends the session: a switch
    /// that refuses our claim (a stale generation: a newer leader has
    /// claimed it) would refuse every write of ours too, and a replica that
    /// lost its election must not keep a session that looks usable.
    fn role_answer(&mut self, msg: &Message) -> Option<Result<(), String>> {
        let (xid, claim) = self.role_sent?;
        if msg.xid != xid {
            return None;
        }
        self.role_sent = None;
        let dpid = format!("{:016x}", self.dpid);
        Some(match &msg.body {
            Body::RoleReply(r) => {
                tracing::info!(%dpid, role = %r.role, generation = r.generation_id, "switch role granted");
                Ok(())
            }
            Body::Error(e) => Err(format!(
                "the switch refused role {} with generation {}: {}",
                claim.role,
                claim.generation_id,
                super::describe(e)
            )),
            other => Err(format!(
                "the switch answered ROLE_REQUEST with {}",
                body_name(other)
            )),
        })
    }

    fn alloc_xid(&mut self) -> u32 {
        // Skip xids still in use after a wrap (and the handshake's 1 and 2).
        loop {
            self.next_xid = self.next_xid.wrapping_add(1);
            if self.next_xid > 2 && !self.pending.contains_key(&self.next_xid) {
                return self.next_xid;
            }
        }
    }

    async fn outgoing<S>(&mut self, conn: &mut Conn<S>, out: Outgoing) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let xid = self.alloc_xid();
        self.seq += 1;
        if !matches!(out.expect, Expect::Nothing) {
            let deadline = Instant::now() + self.config.request_timeout;
            let pending = Pending {
                what: out.what,
                expect: out.expect,
                seq: self.seq,
                deadline,
                partial: None,
            };
            self.pending.insert(xid, pending);
        }
        conn.send(Message {
            xid,
            body: out.body,
        })
        .await
        .map_err(|e| format!("send failed: {e}"))
    }

    async fn incoming<S>(&mut self, conn: &mut Conn<S>, msg: Message) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.last_rx = Instant::now();
        let dpid = self.dpid;
        match msg.body {
            Body::EchoRequest(data) => {
                let reply = Message {
                    xid: msg.xid,
                    body: Body::EchoReply(data),
                };
                return conn
                    .send(reply)
                    .await
                    .map_err(|e| format!("send failed: {e}"));
            }
            Body::EchoReply(_) if self.echo_sent.is_some_and(|(x, _)| x == msg.xid) => {
                self.echo_sent = None;
                return Ok(());
            }
            _ => {}
        }
        if let Some(answer) = self.role_answer(&msg) {
            return answer;
        }
        if let Some(mut p) = self.pending.remove(&msg.xid) {
            let is_barrier = matches!(msg.body, Body::BarrierReply);
            let seq = p.seq;
            match (p.expect, msg.body) {
                (Expect::ErrorOnly(tx), Body::Error(e)) => {
                    let _ = tx.send(Some(e));
                }
                (Expect::Reply(tx), Body::Error(error)) => {
                    let _ = tx.send(Err(SwitchError::Rejected {
                        dpid,
                        what: p.what,
                        error,
                    }));
                }
                (Expect::Multipart(tx), Body::Error(error)) => {
                    let _ = tx.send(Err(SwitchError::Rejected {
                        dpid,
                        what: p.what,
                        error,
                    }));
                }
                (Expect::Reply(tx), body) => {
                    let _ = tx.send(Ok(Message { xid: msg.xid, body }));
                }
                (Expect::Multipart(tx), Body::MultipartReply(reply)) => {
                    let more = reply.more();
                    let MultipartReply { body, .. } = reply;
                    let merged = match p.partial.take() {
                        None => Ok(body),
                        Some(mut acc) => acc.merge(body).map(|()| acc),
                    };
                    match merged {
                        Err(e) => {
                            let err = SwitchError::Protocol(format!("{}: {e}", p.what));
                            let _ = tx.send(Err(err));
                        }
                        Ok(acc) if more => {
                            // More parts follow: keep waiting, with a fresh deadline.
                            p.partial = Some(acc);
                            p.expect = Expect::Multipart(tx);
                            p.deadline = Instant::now() + self.config.request_timeout;
                            self.pending.insert(msg.xid, p);
                        }
                        Ok(acc) => {
                            let _ = tx.send(Ok(acc));
                        }
                    }
                }
                (Expect::Multipart(tx), other) => {
                    let got = body_name(&other);
                    let _ = tx.send(Err(SwitchError::UnexpectedReply {
                        dpid,
                        what: p.what,
                        got,
                    }));
                }
                (expect @ Expect::ErrorOnly(_), _) | (expect @ Expect::Nothing, _) => {
                    // Not an answer we wait for; keep the waiter.
                    p.expect = expect;
                    self.pending.insert(msg.xid, p);
                }
            }
            if is_barrier {
                self.barrier_answered(seq);
            }
            return Ok(());
        }
        let event = match msg.body {
            Body::PortStatus(status) => SwitchEvent::PortStatus { dpid, status },
            Body::FlowRemoved(removed) => SwitchEvent::FlowRemoved { dpid, removed },
            Body::Error(error) => SwitchEvent::Error {
                dpid,
                xid: msg.xid,
                error,
            },
            other => {
                // PACKET_IN and stray replies: solive installs no flow that sends
                // to the controller, so these are only worth a debug line.
                tracing::debug!(dpid = format!("{dpid:016x}"), xid = msg.xid, msg = %body_name(&other), "ignored message");
                return Ok(());
            }
        };
        // The receiver is gone only while the controller shuts down.
        let _ = self.events.send(event);
        Ok(())
    }

    /// Everything sent before a barrier has been processed: error-only waiters
    /// older than it succeeded.
    fn barrier_answered(&mut self, barrier_seq: u64) {
        let done: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.seq < barrier_seq && matches!(p.expect, Expect::ErrorOnly(_)))
            .map(|(xid, _)| *xid)
            .collect();
        for xid in done {
            if let Some(Pending {
                expect: Expect::ErrorOnly(tx),
                ..
            }) = self.pending.remove(&xid)
            {
                let _ = tx.send(None);
            }
        }
    }

    async fn on_tick<S>(&mut self, conn: &mut Conn<S>) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let now = Instant::now();
        let expired: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(x, _)| *x)
            .collect();
        for xid in expired {
            if let Some(p) = self.pending.remove(&xid) {
                let err = SwitchError::Timeout {
                    dpid: self.dpid,
                    what: p.what,
                    timeout: self.config.request_timeout,
                };
                match p.expect {
                    Expect::Reply(tx) => drop(tx.send(Err(err))),
                    Expect::Multipart(tx) => drop(tx.send(Err(err))),
                    Expect::ErrorOnly(_) | Expect::Nothing => {}
                }
            }
        }
        match self.echo_sent {
            Some((_, sent)) if self.last_rx > sent => self.echo_sent = None,
            Some((_, sent)) if now.duration_since(sent) >= self.config.request_timeout => {
                return Err(format!(
                    "no answer to ECHO_REQUEST within {:?}: peer is dead",
                    self.config.request_timeout
                ));
            }
            Some(_) => {}
            None if now.duration_since(self.last_rx) >= self.config.echo_interval => {
                let xid = self.alloc_xid();
                self.echo_sent = Some((xid, now));
                conn.send(Message {
                    xid,
                    body: Body::EchoRequest(bytes::Bytes::new()),
                })
                .await
                .map_err(|e| format!("send failed: {e}"))?;
            }
            None => {}
        }
        Ok(())
    }
}
