//! An RFC 7047 OVSDB client (JSON-RPC over `unix:` and `tcp:` sockets) and typed
//! helpers for the Open_vSwitch schema rows solive uses.
//!
//! - [`value`]: the OVSDB value model (atoms, sets, maps) and its JSON encoding.
//! - [`ops`]: transaction operations, conditions, mutations, results, monitor types.
//! - [`client`]: the connection task and the cloneable [`Client`] handle.
//! - [`vswitch`]: bridges, controllers, interfaces, ingress policing, HTB QoS and
//!   queues, with solive-owned rows tagged `external_ids:solive-owner`.
//!
//! ## Why not the `ovsdb` crate
//!
//! We evaluated the `ovsdb` crate (crates.io 0.0.6, described by its authors as
//! heavily work in progress) and did not use it. Its `Operation` type has a
//! single variant, `Select`, whose `where` clauses are plain strings, so insert
//! with `uuid-name`, update, mutate, delete and wait cannot be expressed; it has
//! no `monitor` and no `update` notifications; its connection loop reaches
//! an unimplemented-path panic on any request from the server, including the `echo`
//! that ovsdb-server sends to keep TCP sessions alive, and on any read error;
//! its `Client` is not `Clone`. solive instead has its own client of about a
//! thousand lines on tokio and serde_json: one task per connection owns the
//! socket, frames the undelimited JSON stream with a bracket-counting scanner,
//! answers `echo`, routes replies to a `oneshot` per JSON-RPC id, delivers
//! `update` notifications to a channel per monitor, times requests out, and on
//! disconnection fails every pending and later request with `Disconnected`.

pub mod client;
pub mod ops;
pub mod value;
pub mod vswitch;

pub use client::{Client, LockNotice, DEFAULT_TIMEOUT};
pub use ops::{
    Condition, Function, MonitorRequest, MonitorSelect, Mutation, Mutator, Operation,
    OperationResult, RowUpdate, TableUpdates, WaitUntil,
};
pub use value::{Atom, Row, Value};

/// The database every helper in [`vswitch`] works on.
pub const VSWITCH_DB: &str = "Open_vSwitch";

/// Errors of the OVSDB client.
#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    #[error("cannot connect to OVSDB server {target}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "OVSDB target {0:?} is neither unix:PATH nor tcp:IP:PORT (nor ssl:IP:PORT with [tls])"
    )]
    BadTarget(String),
    #[error("OVSDB connection failed")]
    Io(#[from] std::io::Error),
    #[error("OVSDB server sent invalid JSON")]
    Json(#[from] serde_json::Error),
    #[error("OVSDB server refused {method}: {error}{}", suffix(details))]
    Rpc {
        method: &'static str,
        error: String,
        details: String,
    },
    #[error("the OVSDB connection is closed")]
    Disconnected,
    #[error("the OVSDB server did not answer in time")]
    Timeout,
    #[error(
        "operation {index} ({op}) of the transaction failed: {error}{}",
        suffix(details)
    )]
    OperationFailed {
        index: usize,
        op: &'static str,
        error: String,
        details: String,
    },
    #[error("OVSDB server sent {0}")]
    Unexpected(String),
    #[error("there is no {kind} named {name:?}")]
    NotFound { kind: &'static str, name: String },
}

/// `" (details)"`, or nothing when the server gave no details.
fn suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}
