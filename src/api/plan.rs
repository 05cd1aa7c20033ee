//! `POST /v1/plan`: the migration order for measured VMs (no state).

use axum::extract::rejection::JsonRejection;
use axum::Json;

use super::ApiError;
use crate::order::{Plan, PlanRequest};

pub async fn create(
    body: Result<Json<PlanRequest>, JsonRejection>,
) -> Result<Json<Plan>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    req.plan()
        .map(Json)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}
