//! `/v1/evacuations`: empty a host onto another (see `crate::evacuation`).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::page::Page;
use super::{ApiError, AppState};
use crate::evacuation::{EvacuationError, EvacuationRecord, EvacuationRequest, EvacuationState};

impl From<EvacuationError> for ApiError {
    fn from(e: EvacuationError) -> Self {
        match e {
            EvacuationError::Request(_) => ApiError::BadRequest(e.to_string()),
            EvacuationError::Busy { .. } | EvacuationError::Finished(_) => {
                ApiError::Conflict(e.to_string())
            }
            EvacuationError::NotFound(_) => ApiError::NotFound(e.to_string()),
            // The hosts are full: the request is fine, the site is not.
            EvacuationError::NoRoom(_) => ApiError::Conflict(e.to_string()),
            EvacuationError::Hypervisor(_) | EvacuationError::List { .. } => {
                ApiError::Unavailable(e.to_string())
            }
        }
    }
}

/// What `POST /v1/evacuations` answers: a request naming `sources` gets
/// every evacuation it started, `{"evacuations": [record, ...]}` (one per
/// source); any other, the record.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Created {
    One(Box<EvacuationRecord>),
    Many { evacuations: Vec<EvacuationRecord> },
}

pub async fn create(
    State(s): State<AppState>,
    body: Result<Json<EvacuationRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let many = req.sources.is_some();
    let mut recs = s.evacuations.start_all(req).await?;
    let body = if many {
        Created::Many { evacuations: recs }
    } else {
        Created::One(Box::new(recs.remove(0)))
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// One line of the list: what a dashboard shows without the details.
#[derive(Debug, Serialize)]
pub struct Summary {
    id: u64,
    source: String,
    destination: String,
    /// Every destination, when the evacuation has several.
    #[serde(skip_serializing_if = "Option::is_none")]
    destinations: Option<Vec<String>>,
    /// The evacuations started by one request naming several sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<u64>,
    state: EvacuationState,
    created_unix_ms: u64,
    vms_total: usize,
    vms_done: usize,
    total_migration_ms: Option<u64>,
    eviction_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct List {
    evacuations: Vec<Summary>,
    /// Pass as `after` for the next page; absent on the last.
    next_after: Option<u64>,
}

pub async fn list(
    State(s): State<AppState>,
    q: Result<Query<Page>, QueryRejection>,
) -> Result<Json<List>, ApiError> {
    let page = Page::from_query(q)?;
    let (records, next_after) = page.slice(s.evacuations.list(), |r| r.id);
    let evacuations: Vec<Summary> = records
        .into_iter()
        .map(|r| Summary {
            id: r.id,
            source: r.request.source.clone(),
            destination: r.request.destination.clone(),
            destinations: r.request.destinations.clone(),
            group: r.group,
            state: r.state,
            created_unix_ms: r.created_unix_ms,
            vms_total: r.vms.len(),
            vms_done: r.done(),
            total_migration_ms: r.total_migration_ms,
            eviction_ms: r.eviction_ms,
        })
        .collect();
    Ok(Json(List {
        evacuations,
        next_after,
    }))
}

pub async fn get(
    State(s): State<AppState>,
    p: Result<Path<u64>, PathRejection>,
) -> Result<Json<EvacuationRecord>, ApiError> {
    let id = super::error::path_id(p, "evacuation")?;
    s.evacuations
        .get(id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no evacuation {id}")))
}

/// The evacuations one request with several sources started, as one: their
/// states, every VM's course, and the forecast of all sources together.
pub async fn group(
    State(s): State<AppState>,
    p: Result<Path<u64>, PathRejection>,
) -> Result<Json<crate::evacuation::site::GroupView>, ApiError> {
    let id = super::error::path_id(p, "group")?;
    s.evacuations
        .group(id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no evacuation group {id}")))
}

/// Cancels: 202, the record in state `cancelling`.
pub async fn delete(
    State(s): State<AppState>,
    p: Result<Path<u64>, PathRejection>,
) -> Result<(StatusCode, Json<EvacuationRecord>), ApiError> {
    let id = super::error::path_id(p, "evacuation")?;
    Ok((StatusCode::ACCEPTED, Json(s.evacuations.cancel(id)?)))
}
