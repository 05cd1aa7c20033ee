use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;

use super::{ApiError, AppState};
use crate::cache::CacheStatus;
use crate::controller::HostView;

/// A host as the controller sees it, with the disk caches of the VMs that
/// run there (per disk: cached bytes, dirty bytes not cached yet, lag).
#[derive(Debug, Serialize)]
pub struct Host {
    #[serde(flatten)]
    view: HostView,
    caches: Vec<CacheStatus>,
}

fn with_caches(s: &AppState, view: HostView) -> Host {
    let caches = s.evacuations.caches().of_host(&view.name);
    Host { view, caches }
}

pub async fn list(State(s): State<AppState>) -> Result<Json<Vec<Host>>, ApiError> {
    let views = s.controller.hosts().await?;
    Ok(Json(
        views.into_iter().map(|v| with_caches(&s, v)).collect(),
    ))
}

pub async fn get(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Host>, ApiError> {
    s.controller
        .host(&name)
        .await?
        .map(|v| Json(with_caches(&s, v)))
        .ok_or_else(|| ApiError::NotFound(format!("unknown host {name:?}")))
}
