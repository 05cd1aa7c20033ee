//! Session logic against a fake switch on an in-memory pipe. Time is paused, so
//! timeouts and keepalives are exercised without waiting. The real switch is
//! exercised by the integration tests (tests/controller.rs).

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use super::*;
use crate::openflow::messages::BadRequestCode;
use crate::openflow::multipart::PortStats;
use crate::openflow::{
    ErrorCode, Hello, HelloElement, MeterBand, MeterFlags, MeterMod, MultipartReply, OfCodec, Port,
    PortReason, PortStatus,
};

const DPID: u64 = 0x0000_1234_5678_9abc;

type Fake = Framed<DuplexStream, OfCodec>;

fn config() -> SessionConfig {
    SessionConfig {
        echo_interval: Duration::from_secs(2),
        request_timeout: Duration::from_secs(1),
        queue: 16,
        role: None,
        tls: None,
    }
}

fn features() -> SwitchFeatures {
    SwitchFeatures {
        datapath_id: DPID,
        n_buffers: 0,
        n_tables: 254,
        auxiliary_id: 0,
        capabilities: 0x4f,
        reserved: 0,
    }
}

/// Starts a session and plays the switch's side of the handshake.
async fn connect() -> (Fake, SwitchHandle, mpsc::UnboundedReceiver<SwitchEvent>) {
    connect_with(config()).await
}

async fn connect_with(
    config: SessionConfig,
) -> (Fake, SwitchHandle, mpsc::UnboundedReceiver<SwitchEvent>) {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let (tx, mut events) = mpsc::unbounded_channel();
    tokio::spawn(run_session(ours, "fake".into(), 7, config, tx));
    let mut sw = Framed::new(theirs, OfCodec);
    let hello = sw.next().await.unwrap().unwrap();
    assert!(matches!(hello.body, Body::Hello(ref h) if h.supports(0x04)));
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
        body: Body::FeaturesReply(features()),
    })
    .await
    .unwrap();
    let Some(SwitchEvent::Connected(handle)) = events.recv().await else {
        panic!("no Connected")
    };
    assert_eq!((handle.dpid, handle.session), (DPID, 7));
    (sw, handle, events)
}

fn port_status(no: u32) -> Body {
    let desc = Port {
        port_no: no,
        hw_addr: Default::default(),
        name: format!("p{no}"),
        config: 0,
        state: 0,
        curr: 0,
        advertised: 0,
        supported: 0,
        peer: 0,
        curr_speed: 0,
        max_speed: 0,
    };
    Body::PortStatus(PortStatus {
        reason: PortReason::Add,
        desc,
    })
}

fn stats(no: u32) -> PortStats {
    PortStats {
        port_no: no,
        tx_bytes: u64::from(no) * 100,
        ..Default::default()
    }
}

/// A replica's claim goes out right after the handshake and again when it
/// changes, each time before anything sent through the handle after the
/// change; a refused claim ends the session.
#[tokio::test]
async fn the_role_claim_precedes_every_write_and_a_refusal_ends_the_session() {
    use crate::openflow::{ControllerRole, Role};
    let master = |generation_id| Role {
        role: ControllerRole::Master,
        generation_id,
    };
    let (role_tx, role) = tokio::sync::watch::channel(master(3));
    let (mut sw, h, mut events) = connect_with(SessionConfig {
        role: Some(role),
        ..config()
    })
    .await;
    let first = sw.next().await.unwrap().unwrap();
    assert_eq!(first.body, Body::RoleRequest(master(3)));
    sw.send(Message {
        xid: first.xid,
        body: Body::RoleReply(master(3)),
    })
    .await
    .unwrap();
    role_tx.send(master(4)).unwrap();
    h.send(Body::BarrierRequest).await.unwrap();
    let claim = sw.next().await.unwrap().unwrap();
    assert_eq!(claim.body, Body::RoleRequest(master(4)));
    assert_eq!(sw.next().await.unwrap().unwrap().body, Body::BarrierRequest);
    sw.send(Message {
        xid: claim.xid,
        body: Body::Error(ErrorMsg {
            code: ErrorCode::RoleRequestFailed(
                crate::openflow::messages::RoleRequestFailedCode::Stale,
            ),
            data: Bytes::new(),
        }),
    })
    .await
    .unwrap();
    let reason = loop {
        match events.recv().await.unwrap() {
            SwitchEvent::Disconnected { reason, .. } => break reason,
            _ => continue,
        }
    };
    assert!(
        reason.contains("refused role master with generation 4"),
        "{reason}"
    );
}

#[tokio::test]
async fn echo_from_the_switch_is_answered() {
    let (mut sw, _h, _ev) = connect().await;
    sw.send(Message {
        xid: 99,
        body: Body::EchoRequest(Bytes::from_static(b"ping")),
    })
    .await
    .unwrap();
    let reply = sw.next().await.unwrap().unwrap();
    assert_eq!(
        reply,
        Message {
            xid: 99,
            body: Body::EchoReply(Bytes::from_static(b"ping"))
        }
    );
}

#[tokio::test]
async fn replies_are_routed_by_xid_and_events_are_not_lost() {
    let (mut sw, h, mut events) = connect().await;
    let a = tokio::spawn({
        let h = h.clone();
        async move { h.request("a", Body::BarrierRequest).await }
    });
    let req_a = sw.next().await.unwrap().unwrap();
    let b = tokio::spawn({
        let h = h.clone();
        async move { h.request("b", Body::BarrierRequest).await }
    });
    let req_b = sw.next().await.unwrap().unwrap();
    // An asynchronous event arrives first, then the replies in reverse order.
    sw.send(Message {
        xid: 0,
        body: port_status(3),
    })
    .await
    .unwrap();
    sw.send(Message {
        xid: req_b.xid,
        body: Body::BarrierReply,
    })
    .await
    .unwrap();
    sw.send(Message {
        xid: req_a.xid,
        body: Body::BarrierReply,
    })
    .await
    .unwrap();
    assert_eq!(a.await.unwrap().unwrap().xid, req_a.xid);
    assert_eq!(b.await.unwrap().unwrap().xid, req_b.xid);
    let ev = events.recv().await.unwrap();
    assert!(
        matches!(ev, SwitchEvent::PortStatus { dpid: DPID, ref status } if status.desc.port_no == 3),
        "{ev:?}"
    );
}

#[tokio::test]
async fn multipart_parts_are_reassembled() {
    let (mut sw, h, _ev) = connect().await;
    let call = tokio::spawn(async move {
        h.multipart(
            "port stats",
            MultipartRequest::port_stats(crate::openflow::port::ANY),
        )
        .await
    });
    let req = sw.next().await.unwrap().unwrap();
    assert!(matches!(req.body, Body::MultipartRequest(_)));
    let part = |ports: Vec<PortStats>, more: bool| Message {
        xid: req.xid,
        body: Body::MultipartReply(MultipartReply {
            flags: u16::from(more),
            body: MultipartReplyBody::PortStats(ports),
        }),
    };
    sw.send(part(vec![stats(1), stats(2)], true)).await.unwrap();
    sw.send(part(vec![stats(3)], false)).await.unwrap();
    let MultipartReplyBody::PortStats(all) = call.await.unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(
        all.iter().map(|p| p.port_no).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

#[tokio::test]
async fn error_reply_rejects_the_request() {
    let (mut sw, h, _ev) = connect().await;
    let call = tokio::spawn(async move { h.request("role", Body::BarrierRequest).await });
    let req = sw.next().await.unwrap().unwrap();
    let err = ErrorMsg {
        code: ErrorCode::BadRequest(BadRequestCode::BadType),
        data: Bytes::new(),
    };
    sw.send(Message {
        xid: req.xid,
        body: Body::Error(err),
    })
    .await
    .unwrap();
    let e = call.await.unwrap().unwrap_err();
    assert!(matches!(e, SwitchError::Rejected { .. }), "{e}");
    assert!(e.to_string().contains("BadRequest"), "{e}");
}

#[tokio::test]
async fn send_all_reports_the_error_of_a_batch_member() {
    let (mut sw, h, _ev) = connect().await;
    let meter = |id| {
        Body::MeterMod(MeterMod::add(
            id,
            MeterFlags::KBPS,
            vec![MeterBand::drop(1000, 0)],
        ))
    };
    // Clean batch: the barrier reply means success.
    let call = tokio::spawn({
        let h = h.clone();
        async move { h.send_all("meters", vec![meter(1), meter(2)]).await }
    });
    for _ in 0..2 {
        assert!(matches!(
            sw.next().await.unwrap().unwrap().body,
            Body::MeterMod(_)
        ));
    }
    let barrier = sw.next().await.unwrap().unwrap();
    sw.send(Message {
        xid: barrier.xid,
        body: Body::BarrierReply,
    })
    .await
    .unwrap();
    call.await.unwrap().unwrap();
    // Batch whose second message fails: the error comes before the barrier reply.
    let call = tokio::spawn(async move { h.send_all("meters", vec![meter(3), meter(4)]).await });
    let _m3 = sw.next().await.unwrap().unwrap();
    let m4 = sw.next().await.unwrap().unwrap();
    let barrier = sw.next().await.unwrap().unwrap();
    let err = ErrorMsg {
        code: ErrorCode::BadRequest(BadRequestCode::BadType),
        data: Bytes::new(),
    };
    sw.send(Message {
        xid: m4.xid,
        body: Body::Error(err),
    })
    .await
    .unwrap();
    sw.send(Message {
        xid: barrier.xid,
        body: Body::BarrierReply,
    })
    .await
    .unwrap();
    let e = call.await.unwrap().unwrap_err();
    assert!(
        matches!(e, SwitchError::Rejected { what: "meters", .. }),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn unanswered_request_times_out_and_session_survives() {
    let (mut sw, h, _ev) = connect().await;
    let e = tokio::spawn({
        let h = h.clone();
        async move { h.request("barrier", Body::BarrierRequest).await }
    });
    let _ignored = sw.next().await.unwrap().unwrap();
    let e = e.await.unwrap().unwrap_err();
    assert!(matches!(e, SwitchError::Timeout { .. }), "{e}");
    // Still usable.
    let call = tokio::spawn(async move { h.barrier().await });
    let req = sw.next().await.unwrap().unwrap();
    sw.send(Message {
        xid: req.xid,
        body: Body::BarrierReply,
    })
    .await
    .unwrap();
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn silent_peer_gets_an_echo_and_is_declared_dead() {
    let (mut sw, h, mut events) = connect().await;
    // After echo_interval of silence the controller probes...
    let echo = sw.next().await.unwrap().unwrap();
    assert!(matches!(echo.body, Body::EchoRequest(_)));
    // ...and without an answer within request_timeout, gives up.
    let ev = events.recv().await.unwrap();
    let SwitchEvent::Disconnected {
        dpid,
        session,
        reason,
    } = ev
    else {
        panic!("{ev:?}")
    };
    assert_eq!((dpid, session), (DPID, 7));
    assert!(reason.contains("ECHO"), "{reason}");
    // The handle now fails fast.
    assert!(matches!(
        h.barrier().await,
        Err(SwitchError::Disconnected(DPID))
    ));
}

#[tokio::test(start_paused = true)]
async fn answered_echo_keeps_the_session() {
    let (mut sw, h, mut events) = connect().await;
    for _ in 0..3 {
        let echo = sw.next().await.unwrap().unwrap();
        let Body::EchoRequest(data) = echo.body else {
            panic!()
        };
        sw.send(Message {
            xid: echo.xid,
            body: Body::EchoReply(data),
        })
        .await
        .unwrap();
    }
    assert!(events.try_recv().is_err());
    assert!(!h.is_closed());
}

#[tokio::test]
async fn garbage_ends_the_session_with_a_protocol_error_and_wakes_waiters() {
    let (sw, h, mut events) = connect().await;
    let call = tokio::spawn({
        let h = h.clone();
        async move { h.barrier().await }
    });
    tokio::task::yield_now().await;
    let mut raw = sw.into_inner();
    // A header whose length field (4) is below the 8-byte header size.
    raw.write_all(&[0x04, 0x00, 0x00, 0x04, 0, 0, 0, 1])
        .await
        .unwrap();
    let ev = events.recv().await.unwrap();
    let SwitchEvent::Disconnected { reason, .. } = ev else {
        panic!("{ev:?}")
    };
    assert!(reason.contains("protocol error"), "{reason}");
    assert!(call.await.unwrap().is_err());
}

#[tokio::test]
async fn switch_closing_the_connection_is_a_disconnect() {
    let (sw, _h, mut events) = connect().await;
    drop(sw);
    let ev = events.recv().await.unwrap();
    assert!(
        matches!(ev, SwitchEvent::Disconnected { ref reason, .. } if reason.contains("closed")),
        "{ev:?}"
    );
}

#[tokio::test]
async fn peer_without_openflow_13_is_refused() {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let (tx, mut events) = mpsc::unbounded_channel();
    let session = tokio::spawn(run_session(ours, "old".into(), 1, config(), tx));
    let mut sw = Framed::new(theirs, OfCodec);
    let _hello = sw.next().await.unwrap().unwrap();
    // A HELLO whose bitmap offers only OpenFlow 1.0.
    let old = Hello {
        version: 0x04,
        elements: vec![HelloElement::VersionBitmap(vec![1 << 1])],
    };
    sw.send(Message {
        xid: 1,
        body: Body::Hello(old),
    })
    .await
    .unwrap();
    let reply = sw.next().await.unwrap().unwrap();
    assert!(
        matches!(reply.body, Body::Error(ref e) if matches!(e.code, ErrorCode::HelloFailed(_))),
        "{reply:?}"
    );
    session.await.unwrap();
    assert!(
        events.try_recv().is_err(),
        "no Connected for an incompatible peer"
    );
}
