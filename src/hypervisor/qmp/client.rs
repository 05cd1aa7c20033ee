//! A small async QMP client over a unix socket: one connection, one command
//! in flight at a time.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio_util::codec::{FramedRead, FramedWrite, LinesCodec};

use super::replies::{reply_value, QmpError};

/// How long one QMP command may take.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// A QMP line longer than this is a protocol error (replies are a few KiB).
const MAX_LINE: usize = 1 << 20;
/// Events skipped before the greeting at most.
const MAX_EARLY_EVENTS: usize = 8;

/// One QMP connection.
pub struct QmpClient {
    rx: FramedRead<OwnedReadHalf, LinesCodec>,
    tx: FramedWrite<OwnedWriteHalf, LinesCodec>,
    next_id: u64,
    /// Asynchronous events received while waiting for replies (the last 64).
    pub events: VecDeque<Value>,
}

impl QmpClient {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub async fn connect(path: &Path) -> Result<QmpClient, QmpError> {
        let s = tokio::time::timeout(COMMAND_TIMEOUT, UnixStream::connect(path))
            .await
            .map_err(|_| QmpError::Timeout("connect".into()))?
            .map_err(|e| QmpError::Io(format!("{}: {e}", path.display())))?;
        let (r, w) = s.into_split();
        let mut c = QmpClient {
            rx: FramedRead::new(r, LinesCodec::new_with_max_length(MAX_LINE)),
            tx: FramedWrite::new(w, LinesCodec::new()),
            next_id: 1,
            events: VecDeque::new(),
        };
        // QEMU 10 was seen (once, in CI, right after a migration ended) to
        // send an event (RESUME) on a new connection ahead of its greeting:
        // events are kept and skipped, a few at most.
        let mut greeting = c.read("the greeting").await?;
        for _ in 0..MAX_EARLY_EVENTS {
            if greeting.get("event").is_none() {
                break;
            }
            c.keep(greeting);
            greeting = c.read("the greeting").await?;
        }
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!("no QMP greeting: {greeting}")));
        }
        c.execute("qmp_capabilities", None).await?;
        Ok(c)
    }

    /// Keeps an event (the last 64).
    fn keep(&mut self, event: Value) {
        if self.events.len() == 64 {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    async fn read(&mut self, what: &str) -> Result<Value, QmpError> {
        let line = tokio::time::timeout(COMMAND_TIMEOUT, self.rx.next())
            .await
            .map_err(|_| QmpError::Timeout(what.to_string()))?
            .ok_or_else(|| QmpError::Io(format!("QEMU closed the socket before {what}")))?
            .map_err(|e| QmpError::Io(e.to_string()))?;
        serde_json::from_str(&line).map_err(|e| QmpError::Protocol(format!("{e}: {line}")))
    }

    /// Runs one command and returns its `return` value. Events that arrive
    /// first are kept in `events`; replies to other ids are dropped (there are
    /// none: one command is in flight at a time).
    pub async fn execute(&mut self, command: &str, args: Option<Value>) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"execute": command, "id": id});
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        self.tx
            .send(msg.to_string())
            .await
            .map_err(|e| QmpError::Io(e.to_string()))?;
        loop {
            let v = self.read(command).await?;
            if v.get("event").is_some() {
                self.keep(v);
                continue;
            }
            if v.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            return reply_value(command, v);
        }
    }
}
