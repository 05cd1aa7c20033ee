//! The API's error type and its JSON form.

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::controller::ControllerError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let body = json!({ "error": { "code": code, "message": self.to_string() } });
        (status, Json(body)).into_response()
    }
}

impl From<ControllerError> for ApiError {
    fn from(e: ControllerError) -> Self {
        match e {
            ControllerError::UnknownHost(_) | ControllerError::NotFound(_) => {
                ApiError::NotFound(e.to_string())
            }
            ControllerError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            _ => ApiError::Unavailable(e.to_string()),
        }
    }
}

/// The numeric id in a path (`/v1/reservations/{id}`); `what` names it in
/// the 400 when it is not a number.
pub fn path_id(
    p: Result<axum::extract::Path<u64>, axum::extract::rejection::PathRejection>,
    what: &str,
) -> Result<u64, ApiError> {
    p.map(|axum::extract::Path(id)| id)
        .map_err(|e| ApiError::BadRequest(format!("{what} id: {}", e.body_text())))
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no such resource: {}", uri.path()))
}

/// A request that took longer than [`super::REQUEST_TIMEOUT`] (or failed in
/// a layer below the handlers): 503, the request may be retried.
pub async fn timed_out(e: tower::BoxError) -> ApiError {
    if e.is::<tower::timeout::error::Elapsed>() {
        ApiError::Unavailable(format!(
            "the request took longer than {} s",
            super::REQUEST_TIMEOUT.as_secs()
        ))
    } else {
        ApiError::Unavailable(format!("the request failed: {e}"))
    }
}
