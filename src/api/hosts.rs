use axum::extract::{Path, State};
use axum::Json;

use super::{ApiError, AppState};
use crate::controller::HostView;

pub async fn list(State(s): State<AppState>) -> Result<Json<Vec<HostView>>, ApiError> {
    Ok(Json(s.controller.hosts().await?))
}

pub async fn get(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<HostView>, ApiError> {
    s.controller
        .host(&name)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("unknown host {name:?}")))
}
