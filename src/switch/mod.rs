//! OpenFlow 1.3 switch sessions: one task per connected switch.
//!
//! [`listen`] accepts connections from Open vSwitch bridges
//! (`ovs-vsctl set-controller BR tcp:IP:PORT`) and spawns a [`session`] task for
//! each. The session task owns the socket. It
//! - does the handshake (HELLO with a version bitmap, FEATURES_REQUEST to learn
//!   the datapath id),
//! - answers ECHO_REQUEST itself and sends its own ECHO_REQUEST after
//!   `echo_interval` of silence; a peer silent for another `request_timeout`
//!   is declared dead and the connection closed,
//! - routes replies to waiting requests by xid (a `oneshot` per request),
//!   reassembling multipart replies and failing requests that time out,
//! - delivers asynchronous messages (PORT_STATUS, FLOW_REMOVED, unsolicited
//!   ERRORs) as [`SwitchEvent`]s on an unbounded channel, so none is lost while a
//!   request waits for its barrier.
//!
//! The rest of solive talks to a switch through a cloneable [`SwitchHandle`].
//!
//! ```mermaid
//! stateDiagram-v2
//!     [*] --> Hello: TCP accepted
//!     Hello --> Features: peer HELLO speaks 1.3
//!     Hello --> [*]: incompatible (ERROR HELLO_FAILED sent)
//!     Features --> Running: FEATURES_REPLY (dpid known, Connected event)
//!     Running --> Running: requests / replies / events / echo
//!     Running --> [*]: EOF, I/O or decode error, echo timeout, handle closed (Disconnected event)
//! ```

mod session;

pub use session::{run_session, SessionConfig};

pub use tokio_rustls::rustls::ServerConfig as TlsServerConfig;

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::openflow::{
    Body, ErrorMsg, FlowRemoved, Message, MultipartReplyBody, MultipartRequest, PortStatus,
    SwitchFeatures,
};

/// Errors of switch sessions and of requests made through a [`SwitchHandle`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum SwitchError {
    #[error("switch {0:016x} is not connected")]
    Disconnected(u64),
    #[error("switch {dpid:016x} did not answer {what} within {timeout:?}")]
    Timeout {
        dpid: u64,
        what: &'static str,
        timeout: Duration,
    },
    #[error("switch {dpid:016x} rejected {what}: {}", describe(error))]
    Rejected {
        dpid: u64,
        what: &'static str,
        error: ErrorMsg,
    },
    #[error("switch {dpid:016x} answered {what} with an unexpected {got}")]
    UnexpectedReply {
        dpid: u64,
        what: &'static str,
        got: String,
    },
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("connection error: {0}")]
    Io(String),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Something a switch said without being asked, or a change of its session.
#[derive(Debug, Clone)]
pub enum SwitchEvent {
    Connected(SwitchHandle),
    PortStatus {
        dpid: u64,
        status: PortStatus,
    },
    FlowRemoved {
        dpid: u64,
        removed: FlowRemoved,
    },
    /// An ERROR whose xid matches no waiting request (for example the answer to
    /// a fire-and-forget message).
    Error {
        dpid: u64,
        xid: u32,
        error: ErrorMsg,
    },
    /// The session ended. `session` identifies which one: a switch that
    /// reconnects quickly may already have a newer session.
    Disconnected {
        dpid: u64,
        session: u64,
        reason: String,
    },
}

/// What a request waits for.
#[derive(Debug)]
pub(crate) enum Expect {
    /// Nothing: fire and forget. An ERROR for it becomes a [`SwitchEvent::Error`].
    Nothing,
    /// One reply message (or an ERROR) with the same xid.
    Reply(oneshot::Sender<Result<Message, SwitchError>>),
    /// Multipart reply parts with the same xid until one without REPLY_MORE.
    Multipart(oneshot::Sender<Result<MultipartReplyBody, SwitchError>>),
    /// No reply on success: resolved with the ERROR the switch sends for it, or
    /// with `None` once a later barrier is answered.
    ErrorOnly(oneshot::Sender<Option<ErrorMsg>>),
}

#[derive(Debug)]
pub(crate) struct Outgoing {
    pub body: Body,
    pub what: &'static str,
    pub expect: Expect,
}

/// A cheap, cloneable handle to one switch session.
#[derive(Debug, Clone)]
pub struct SwitchHandle {
    pub dpid: u64,
    /// Distinguishes successive sessions of the same datapath.
    pub session: u64,
    pub features: SwitchFeatures,
    pub peer: String,
    /// Over TLS: the names in the switch's certificate (verified against
    /// the CA), which must include its host's `switch_certificate`.
    pub certificate: Option<Vec<String>>,
    tx: mpsc::Sender<Outgoing>,
}

/// Who is on the other end of a session: its address, and over TLS the
/// names in its certificate.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: String,
    pub certificate: Option<Vec<String>>,
}

impl From<String> for Peer {
    fn from(addr: String) -> Peer {
        Peer {
            addr,
            certificate: None,
        }
    }
}

impl From<&str> for Peer {
    fn from(addr: &str) -> Peer {
        Peer::from(addr.to_string())
    }
}

impl SwitchHandle {
    pub(crate) fn new(
        dpid: u64,
        session: u64,
        features: SwitchFeatures,
        peer: Peer,
        tx: mpsc::Sender<Outgoing>,
    ) -> Self {
        SwitchHandle {
            dpid,
            session,
            features,
            peer: peer.addr,
            certificate: peer.certificate,
            tx,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    async fn submit(&self, out: Outgoing) -> Result<(), SwitchError> {
        self.tx
            .send(out)
            .await
            .map_err(|_| SwitchError::Disconnected(self.dpid))
    }

    /// Sends a message that has no reply (FLOW_MOD, METER_MOD, ...). Errors the
    /// switch reports for it arrive as [`SwitchEvent::Error`]; use
    /// [`SwitchHandle::send_all`] to learn them synchronously.
    pub async fn send(&self, body: Body) -> Result<(), SwitchError> {
        self.submit(Outgoing {
            body,
            what: "message",
            expect: Expect::Nothing,
        })
        .await
    }

    /// Sends a request and waits for its single reply.
    pub async fn request(&self, what: &'static str, body: Body) -> Result<Message, SwitchError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Outgoing {
            body,
            what,
            expect: Expect::Reply(tx),
        })
        .await?;
        rx.await.map_err(|_| SwitchError::Disconnected(self.dpid))?
    }

    /// Sends a multipart request and waits for the whole (reassembled) reply.
    pub async fn multipart(
        &self,
        what: &'static str,
        req: MultipartRequest,
    ) -> Result<MultipartReplyBody, SwitchError> {
        let (tx, rx) = oneshot::channel();
        let body = Body::MultipartRequest(req);
        self.submit(Outgoing {
            body,
            what,
            expect: Expect::Multipart(tx),
        })
        .await?;
        rx.await.map_err(|_| SwitchError::Disconnected(self.dpid))?
    }

    /// Waits until the switch has processed everything sent before.
    pub async fn barrier(&self) -> Result<(), SwitchError> {
        let reply = self.request("barrier", Body::BarrierRequest).await?;
        match reply.body {
            Body::BarrierReply => Ok(()),
            other => Err(self.unexpected("barrier", &other)),
        }
    }

    /// Sends a batch of modifications followed by a barrier and returns the
    /// first error the switch reported for any of them. OpenFlow guarantees the
    /// errors for messages before a barrier arrive before its reply, so when this
    /// returns `Ok` every message was applied.
    pub async fn send_all(&self, what: &'static str, bodies: Vec<Body>) -> Result<(), SwitchError> {
        let mut waits = Vec::with_capacity(bodies.len());
        for body in bodies {
            let (tx, rx) = oneshot::channel();
            self.submit(Outgoing {
                body,
                what,
                expect: Expect::ErrorOnly(tx),
            })
            .await?;
            waits.push(rx);
        }
        self.barrier().await?;
        for rx in waits {
            match rx.await {
                Ok(None) => {}
                Ok(Some(error)) => {
                    return Err(SwitchError::Rejected {
                        dpid: self.dpid,
                        what,
                        error,
                    })
                }
                Err(_) => return Err(SwitchError::Disconnected(self.dpid)),
            }
        }
        Ok(())
    }

    fn unexpected(&self, what: &'static str, got: &Body) -> SwitchError {
        SwitchError::UnexpectedReply {
            dpid: self.dpid,
            what,
            got: body_name(got),
        }
    }
}

/// An ERROR as a human reads it: `OFPET_METER_MOD_FAILED/OFPMMFC_INVALID_METER`.
pub fn describe(e: &ErrorMsg) -> String {
    let t = format!("{:?}", e.code.error_type());
    match e.code.code_name() {
        Some(c) => format!("{t}/{c}"),
        None => format!("{t}/code {}", e.code.to_wire().1),
    }
}

/// A short name for a message body, for errors and logs.
pub fn body_name(body: &Body) -> String {
    let dbg = format!("{body:?}");
    dbg.split(['(', ' ', '{'])
        .next()
        .unwrap_or("message")
        .to_string()
}

/// How long a switch may take over its TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Accepts switch connections until `shutdown` resolves, one session task
/// each; with `config.tls`, only over TLS with a certificate the CA signed
/// (a refused handshake is logged with the peer's address and why).
pub async fn listen(
    listener: TcpListener,
    config: SessionConfig,
    events: mpsc::UnboundedSender<SwitchEvent>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut next_session = 1u64;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let session = next_session;
                    next_session += 1;
                    let events = events.clone();
                    let config = config.clone();
                    tokio::spawn(async move {
                        let Some(tls) = config.tls.clone() else {
                            run_session(stream, peer.to_string().into(), session, config, events).await;
                            return;
                        };
                        let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
                        match tokio::time::timeout(TLS_HANDSHAKE, accept).await {
                            Ok(Ok(tls)) => {
                                let names = tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .map(crate::pki::names)
                                    .unwrap_or_default();
                                let peer = Peer {
                                    addr: peer.to_string(),
                                    certificate: Some(names),
                                };
                                run_session(tls, peer, session, config, events).await;
                            }
                            Ok(Err(e)) => {
                                tracing::warn!(%peer, error = %e, "switch refused: TLS handshake failed");
                            }
                            Err(_) => {
                                tracing::warn!(%peer, ?TLS_HANDSHAKE, "switch refused: no TLS handshake in time");
                            }
                        }
                    });
                }
                Err(e) => {
                    // Accept errors (out of file descriptors, ...) are transient:
                    // back off briefly rather than spin.
                    tracing::warn!(error = %e, "accepting a switch connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
