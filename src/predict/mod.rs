//! Predicting an evacuation before and while it runs: how long each
//! migration takes, what it sends, when its pause comes, and which order
//! finishes first or saves most before a deadline. Pure.
//!
//! - [`model`]: one migration as QEMU runs it (start-up, pre-copy passes,
//!   the stall remedies, post-copy), stepped at a given rate;
//! - [`schedule`]: a whole evacuation in simulated time on a fluid model of
//!   the links, the VMs' own traffic included, so that order matters;
//! - [`search`]: the order the model says is best, and the deadline plan;
//! - [`learn`]: the corrections measured migrations make to the inputs.

pub mod model;
pub mod schedule;
