//! The REST API (axum): a thin layer that turns HTTP requests into controller
//! commands and their answers into JSON. One file per resource, firecracker
//! style; errors are always `{"error": {"code": ..., "message": ...}}`.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/v1/health` | `{"status": "ok", "version": ...}` |
//! | GET | `/v1/hosts` | every host with connection state, dpid, ports and rates |
//! | GET | `/v1/hosts/{name}` | one host, 404 if unknown |

mod error;
mod health;
mod hosts;

pub use error::ApiError;

use axum::routing::get;
use axum::Router;

use crate::controller::ControllerHandle;

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    pub controller: ControllerHandle,
}

pub fn router(controller: ControllerHandle) -> Router {
    Router::new()
        .route("/v1/health", get(health::get))
        .route("/v1/hosts", get(hosts::list))
        .route("/v1/hosts/{name}", get(hosts::get))
        .fallback(error::not_found)
        .with_state(AppState { controller })
}
