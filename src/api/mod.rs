//! The REST API (axum): a thin layer that turns HTTP requests into controller
//! commands and their answers into JSON. One file per resource, firecracker
//! style; errors are always `{"error": {"code": ..., "message": ...}}`.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/v1/openapi.json` | the OpenAPI 3 document ([`OPENAPI`]) |
//! | GET | `/v1/health` | `{"status": "ok", "version": ...}` |
//! | GET | `/v1/hosts` | every host with connection state, dpid, ports and rates |
//! | GET | `/v1/hosts/{name}` | one host, 404 if unknown |
//! | GET | `/metrics` | Prometheus (OpenMetrics) figures per host and for the controller |
//! | POST | `/v1/plan` | the migration order for measured VMs, with reasons |
//! | POST | `/v1/reservations` | make a reservation (201 with its view) |
//! | GET | `/v1/reservations` | every reservation |
//! | GET | `/v1/reservations/{id}` | one, with per-host enforcement and history |
//! | DELETE | `/v1/reservations/{id}` | release it (204) |
//! | POST | `/v1/caches` | keep a VM's local disks cached on a backup host (201) |
//! | GET | `/v1/caches` | every cache with its lag and dirty bytes |
//! | GET | `/v1/caches/{vm}` | one |
//! | DELETE | `/v1/caches/{vm}` | stop caching (its final status) |

pub mod auth;
mod caches;
pub mod conns;
pub(crate) mod error;
mod evacuations;
pub mod health;
mod hosts;
pub mod idempotency;
mod metrics;
mod page;
mod plan;
mod reservations;
pub mod tls;

pub use error::ApiError;

use axum::routing::{get, post, MethodRouter};
use axum::Router;

use crate::controller::ControllerHandle;

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    pub controller: ControllerHandle,
    pub evacuations: crate::evacuation::Evacuations,
}

/// The OpenAPI 3 document of this API, written by hand and held to the
/// routes by `tests/api.rs` (every documented operation answers, every other
/// method of a documented path is 405, and the documented paths are exactly
/// [`paths`]).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route: the one table both the router and the OpenAPI test use.
fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/v1/health", get(health::get)),
        ("/v1/openapi.json", get(openapi)),
        ("/metrics", get(metrics::get)),
        ("/v1/hosts", get(hosts::list)),
        ("/v1/hosts/{name}", get(hosts::get)),
        ("/v1/plan", post(plan::create)),
        (
            "/v1/reservations",
            post(reservations::create).get(reservations::list),
        ),
        (
            "/v1/reservations/{id}",
            get(reservations::get).delete(reservations::delete),
        ),
        (
            "/v1/evacuations",
            post(evacuations::create).get(evacuations::list),
        ),
        ("/v1/caches", post(caches::create).get(caches::list)),
        ("/v1/caches/{vm}", get(caches::get).delete(caches::delete)),
        (
            "/v1/evacuations/{id}",
            get(evacuations::get).delete(evacuations::delete),
        ),
        ("/v1/evacuation-groups/{id}", get(evacuations::group)),
    ]
}

/// The paths the router serves, in OpenAPI's `{param}` form.
pub fn paths() -> Vec<&'static str> {
    routes().into_iter().map(|(p, _)| p).collect()
}

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

/// The API's routes, behind bearer-token authentication when `auth` holds
/// tokens.
/// How long the API works on one request before answering 503.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub fn router(
    controller: ControllerHandle,
    evacuations: crate::evacuation::Evacuations,
    auth: auth::Auth,
    idempotency: idempotency::Idempotency,
) -> Router {
    let mut r = Router::new();
    for (path, methods) in routes() {
        r = r.route(path, methods);
    }
    // Layers run outermost last-added: authentication before idempotency,
    // so an unauthenticated retry learns nothing; the timeout outermost, so
    // no request waits without a bound whatever it waits on.
    r.fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            idempotency,
            idempotency::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(auth, auth::require))
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(
                    error::timed_out,
                ))
                .timeout(REQUEST_TIMEOUT),
        )
        .with_state(AppState {
            controller,
            evacuations,
        })
}
