//! The API's open connections, and which one gives way when they are too
//! many.
//!
//! At most [`MAX_CONNECTIONS`] sockets are open at once, so a flood cannot
//! take the file descriptors the controller needs for switches and
//! hypervisors. Refusing the newest connection at the limit would let a
//! flood of idle sockets (or slowloris clients that never finish their
//! headers) lock every operator and health check out until the header
//! timeout frees a slot, and the flood takes it again. So a new connection
//! is let in and the connection idle the longest is closed instead: one that
//! holds no request (none being handled, no answer being written) since the
//! earliest time. Only when every open connection is in the middle of a
//! request is the new one refused. An idle connection therefore lasts as
//! long as the next [`MAX_CONNECTIONS`] connections take to arrive; a real
//! client sends its request right after connecting and is then busy, not
//! evictable.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use hyper::body::{Frame, SizeHint};
use tokio::sync::oneshot;

/// At most this many API connections at once (see the module's text).
pub const MAX_CONNECTIONS: usize = 512;

/// What the table knows of one connection.
#[derive(Debug)]
struct Conn {
    /// Requests being handled or answered on it.
    busy: usize,
    /// When it last became idle (its accept time if it never was busy).
    idle_since: Instant,
    /// Closes it (its task drops the connection).
    evict: Option<oneshot::Sender<()>>,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    open: HashMap<u64, Conn>,
    evicted: u64,
}

/// The open connections, shared by the accept loop and the connection
/// tasks.
#[derive(Debug, Clone, Default)]
pub struct Conns {
    table: Arc<Mutex<Table>>,
    limit: usize,
}

/// What happened to a new connection.
#[derive(Debug)]
pub enum Admission {
    /// Let in: serve it until it ends or `evicted` fires.
    Open {
        slot: Slot,
        evicted: oneshot::Receiver<()>,
    },
    /// Every open connection is busy with a request: close this one.
    Full,
}

/// Among `(id, busy, idle_since)`, the connection to close to make room: the
/// one idle (no request) since the earliest time; none if all are busy.
pub fn victim(conns: impl IntoIterator<Item = (u64, usize, Instant)>) -> Option<u64> {
    conns
        .into_iter()
        .filter(|&(_, busy, _)| busy == 0)
        .min_by_key(|&(id, _, since)| (since, id))
        .map(|(id, _, _)| id)
}

impl Conns {
    pub fn new(limit: usize) -> Conns {
        Conns {
            table: Arc::new(Mutex::new(Table::default())),
            limit,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection was accepted: room is made for it by closing the
    /// longest-idle one if the table is full.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut t = self.table();
        if t.open.len() >= self.limit {
            let Some(id) = victim(t.open.iter().map(|(&id, c)| (id, c.busy, c.idle_since))) else {
                return Admission::Full;
            };
            // Out of the table at once, so the count is right even before
            // its task has dropped the socket.
            if let Some(evict) = t.open.remove(&id).and_then(|c| c.evict) {
                let _ = evict.send(());
            }
            t.evicted += 1;
        }
        let id = t.next;
        t.next += 1;
        let (tx, rx) = oneshot::channel();
        t.open.insert(
            id,
            Conn {
                busy: 0,
                idle_since: now,
                evict: Some(tx),
            },
        );
        Admission::Open {
            slot: Slot {
                conns: self.clone(),
                id,
            },
            evicted: rx,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.table().open.len()
    }

    /// Connections closed so far to make room for newer ones.
    pub fn evicted(&self) -> u64 {
        self.table().evicted
    }

    fn started(&self, id: u64) {
        if let Some(c) = self.table().open.get_mut(&id) {
            c.busy += 1;
        }
    }

    fn finished(&self, id: u64) {
        if let Some(c) = self.table().open.get_mut(&id) {
            c.busy = c.busy.saturating_sub(1);
            if c.busy == 0 {
                c.idle_since = Instant::now();
            }
        }
    }
}

/// One open connection's place in the table; freed on drop.
#[derive(Debug)]
pub struct Slot {
    conns: Conns,
    id: u64,
}

impl Slot {
    /// A request on this connection starts: it is busy until the guard (held
    /// by the answer's body) is dropped, after the answer is written.
    pub fn request(&self) -> Busy {
        self.conns.started(self.id);
        Busy {
            conns: self.conns.clone(),
            id: self.id,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.table().open.remove(&self.id);
    }
}

/// A request in progress on a connection.
#[derive(Debug)]
pub struct Busy {
    conns: Conns,
    id: u64,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conns.finished(self.id);
    }
}

/// An answer's body that keeps its connection busy until hyper has written
/// it (hyper drops a body once its last frame is sent).
pub struct Counted {
    inner: Body,
    _busy: Busy,
}

impl Counted {
    pub fn wrap(inner: Body, busy: Busy) -> Body {
        Body::new(Counted { inner, _busy: busy })
    }
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_victim_is_the_longest_idle_and_never_a_busy_one() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            victim([(1, 0, at(5)), (2, 0, at(3)), (3, 1, at(1))]),
            Some(2)
        );
        assert_eq!(victim([(1, 2, at(5)), (2, 1, at(3))]), None);
        assert_eq!(victim(Vec::new()), None);
        // Ties go to the older connection.
        assert_eq!(victim([(7, 0, at(2)), (4, 0, at(2))]), Some(4));
    }

    #[tokio::test]
    async fn a_full_table_closes_its_longest_idle_connection_for_a_new_one() {
        let conns = Conns::new(2);
        let t0 = Instant::now();
        let Admission::Open {
            slot: a,
            evicted: mut a_evicted,
        } = conns.admit(t0)
        else {
            panic!("room")
        };
        let Admission::Open { slot: b, .. } = conns.admit(t0 + Duration::from_millis(1)) else {
            panic!("room")
        };
        // b is busy: a (idle, older) gives way to c.
        let busy_b = b.request();
        let Admission::Open { slot: c, .. } = conns.admit(t0 + Duration::from_millis(2)) else {
            panic!("a should have made room")
        };
        assert!(a_evicted.try_recv().is_ok(), "a was told to close");
        assert_eq!(conns.open(), 2);
        assert_eq!(conns.evicted(), 1);
        // a's task ends later; dropping its slot does not free c's or b's.
        drop(a);
        assert_eq!(conns.open(), 2);
        // b and c busy: a fourth is refused.
        let _busy_c = c.request();
        assert!(matches!(conns.admit(Instant::now()), Admission::Full));
        // b's answer written: b is idle again and gives way.
        drop(busy_b);
        assert!(matches!(
            conns.admit(Instant::now()),
            Admission::Open { .. }
        ));
        assert_eq!(conns.evicted(), 2);
    }
}
