//! Bandwidth reservation for migrations (paper section V-A).
//!
//! - [`algorithm`]: Algorithm 1 as a pure step ([`algorithm::Reserver`]).
//! - [`replay`]: the same step over a recorded trace (`solive replay`).

pub mod algorithm;
pub mod replay;

pub use algorithm::{Measurement, Params, Reserver, Step, DEFAULT_MAX_RESERVE};
