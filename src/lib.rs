//! solive: an SDN controller that evacuates hosts by live-migrating their VMs in
//! an order and with bandwidth reservations that keep the VMs' services alive.
//!
//! Layout, from the wire up:
//! - [`openflow`]: the OpenFlow 1.3 codec (framing, messages, OXM, actions,
//!   instructions, meters, multipart). Pure; no I/O. Could be a crate of its own.
//! - [`ovsdb`]: an RFC 7047 OVSDB client (JSON-RPC over unix/tcp) with typed
//!   helpers for the Open_vSwitch schema rows solive uses.
//! - [`switch`]: one task per connected switch: handshake, keepalive, xid-matched
//!   requests, multipart reassembly, asynchronous events.
//! - [`rate`]: pure counter-to-rate estimation (resets and wrap handled).
//! - [`reserve`]: Algorithm 1 (urgency-driven bandwidth reservation) as a pure
//!   step, and its replay over recorded traces.
//! - [`order`]: the migration order (paper section IV) as a pure function.
//! - [`place`]: which destination each VM goes to, when there are several.
//! - [`predict`]: the migration-time model, the fluid simulation of an
//!   evacuation, the search for the best order, the deadline plan.
//! - [`simulate`]: a whole site's evacuation in simulated time
//!   (`solive simulate`), with the same placement, order, Algorithm 1 and
//!   concurrency rules as a real one.
//! - [`config`]: the TOML configuration of `solive serve`.
//! - [`topology`]: the topology files shared with the testbed.
//! - [`controller`]: the single owner of controller state; host tasks, polling,
//!   reconcile of desired switch state.
//! - [`api`]: the REST API (axum), a thin layer over controller commands.
//! - [`client`]: the operator commands that talk to a running solive.
//! - [`report`]: an evacuation's timeline as a standalone SVG (`solive report`).
//! - [`scatter`]: scatter-gather through intermediaries' Redis stores (the
//!   data path: chunks, push, gather).
//! - [`child`]: the processes started on the hosts (cache helpers, relays),
//!   each ending with the controller however it ends.
//! - [`server`]: wiring of `solive serve` (listeners, controller, API, shutdown).

pub mod api;
pub mod cache;
pub mod child;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod evacuation;
pub mod hypervisor;
pub mod openflow;
pub mod order;
pub mod ovsdb;
pub mod pki;
pub mod place;
pub mod predict;
pub mod rate;
pub mod report;
pub mod reserve;
pub mod scatter;
pub mod server;
pub mod simulate;
pub mod store;
pub mod switch;
pub mod topology;
pub mod watchdog;
