//! The REST API (axum): a thin layer that turns HTTP requests into controller
//! commands and their answers into JSON. One file per resource, firecracker
//! style; errors are always `{"error": {"code": ..., "message": ...}}`.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/v1/health` | `{"status": "ok", "version": ...}` |
//! | GET | `/v1/hosts` | every host with connection state, dpid, ports and rates |
//! | GET | `/v1/hosts/{name}` | one host, 404 if unknown |
//! | GET | `/metrics` | Prometheus (OpenMetrics) figures per host and for the controller |
//! | POST | `/v1/plan` | the migration order for measured VMs, with reasons |
//! | POST | `/v1/reservations` | make a reservation (201 with its view) |
//! | GET | `/v1/reservations` | every reservation |
//! | GET | `/v1/reservations/{id}` | one, with per-host enforcement and history |
//! | DELETE | `/v1/reservations/{id}` | release it (204) |

pub mod auth;
mod error;
mod health;
mod hosts;
mod metrics;
mod plan;
mod reservations;

pub use error::ApiError;

use axum::routing::{get, post};
use axum::Router;

use crate::controller::ControllerHandle;

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    pub controller: ControllerHandle,
}

/// The API's routes, behind bearer-token authentication when `auth` holds
/// tokens.
pub fn router(controller: ControllerHandle, auth: auth::Auth) -> Router {
    Router::new()
        .route("/v1/health", get(health::get))
        .route("/metrics", get(metrics::get))
        .route("/v1/hosts", get(hosts::list))
        .route("/v1/hosts/{name}", get(hosts::get))
        .route("/v1/plan", post(plan::create))
        .route(
            "/v1/reservations",
            post(reservations::create).get(reservations::list),
        )
        .route(
            "/v1/reservations/{id}",
            get(reservations::get).delete(reservations::delete),
        )
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(auth, auth::require))
        .with_state(AppState { controller })
}
