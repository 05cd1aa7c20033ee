//! `/v1/reservations`: bandwidth reservations for migrations.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::Json;

use super::page::Page;
use super::{ApiError, AppState};
use crate::controller::reservation::ReservationRequest;
use crate::controller::ReservationView;

pub async fn create(
    State(s): State<AppState>,
    body: Result<Json<ReservationRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<ReservationView>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let view = s.controller.create_reservation(req).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// The reservations in force, a page at a time (`?limit=N&after=ID`); the
/// body stays an array, and `X-Next-After` gives the next page's `after`.
pub async fn list(
    State(s): State<AppState>,
    q: Result<Query<Page>, QueryRejection>,
) -> Result<(HeaderMap, Json<Vec<ReservationView>>), ApiError> {
    let page = Page::from_query(q)?;
    let (items, next) = page.slice(s.controller.reservations().await?, |r| r.id);
    let mut headers = HeaderMap::new();
    if let Some(n) = next {
        headers.insert("x-next-after", n.into());
    }
    Ok((headers, Json(items)))
}

/// A live reservation, or one that ended (`state`: `active`, `released` or
/// `interrupted`).
pub async fn get(
    State(s): State<AppState>,
    p: Result<Path<u64>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = super::error::path_id(p, "reservation")?;
    s.controller
        .reservation_record(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no reservation {id}")))
}

pub async fn delete(
    State(s): State<AppState>,
    p: Result<Path<u64>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = super::error::path_id(p, "reservation")?;
    s.controller.delete_reservation(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
