use axum::Json;
use serde_json::{json, Value};

/// Liveness: answers as long as the HTTP server runs.
pub async fn get() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}
