//! `/v1/caches`: copies of VMs' local disks kept on backup hosts, so that an
//! evacuation there moves only what changed (see `crate::cache`).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::{ApiError, AppState};
use crate::cache::{CacheError, CacheRequest, CacheStatus};

impl From<CacheError> for ApiError {
    fn from(e: CacheError) -> Self {
        match e {
            CacheError::UnknownBackup(_)
            | CacheError::OwnHost(_)
            | CacheError::NoAddress(_)
            | CacheError::UnknownVm(_)
            | CacheError::NothingToCache(_) => ApiError::BadRequest(e.to_string()),
            CacheError::Exists { .. } => ApiError::Conflict(e.to_string()),
            CacheError::NotFound(_) => ApiError::NotFound(e.to_string()),
            CacheError::Host { .. } => ApiError::Unavailable(e.to_string()),
        }
    }
}

/// `POST /v1/caches {"vm": ..., "backup_host": ...}`: 201 with its status
/// (the first copy starts in the background).
pub async fn create(
    State(s): State<AppState>,
    body: Result<Json<CacheRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<CacheStatus>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let status = s.evacuations.caches().start(req).await?;
    Ok((StatusCode::CREATED, Json(status)))
}

pub async fn list(State(s): State<AppState>) -> Json<Vec<CacheStatus>> {
    Json(s.evacuations.caches().list())
}

pub async fn get(
    State(s): State<AppState>,
    Path(vm): Path<String>,
) -> Result<Json<CacheStatus>, ApiError> {
    s.evacuations
        .caches()
        .get(&vm)
        .map(Json)
        .ok_or_else(|| CacheError::NotFound(vm).into())
}

/// `DELETE /v1/caches/{vm}`: stops its syncs; answers the final status.
pub async fn delete(
    State(s): State<AppState>,
    Path(vm): Path<String>,
) -> Result<Json<CacheStatus>, ApiError> {
    Ok(Json(s.evacuations.caches().stop(&vm).await?))
}
