use axum::{Extension, Json};
use serde_json::{json, Value};

/// A cluster leader's identity, shown by its health answer.
#[derive(Debug, Clone)]
pub struct Leader {
    pub name: String,
    /// Its election's generation (the OpenFlow role generation_id).
    pub generation: u64,
}

/// Liveness: answers as long as the HTTP server runs; a cluster's leader
/// also says it leads, and with which generation (a standby answers from
/// its own router, `cluster::replica`).
pub async fn get(leader: Option<Extension<Leader>>) -> Json<Value> {
    let mut v = json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") });
    if let Some(Extension(l)) = leader {
        v["role"] = "leader".into();
        v["name"] = l.name.into();
        v["generation"] = l.generation.into();
    }
    Json(v)
}
