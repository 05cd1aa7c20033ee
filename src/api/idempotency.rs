//! `Idempotency-Key` on POST: a retried request gets the first answer
//! instead of starting a second evacuation or reservation.
//!
//! The first request with a key runs; its status and body are kept (in the
//! state database when there is one, so a retry after a restart is covered
//! too). A retry with the same key and the same method, path and body gets
//! that answer again, marked `Idempotent-Replayed: true`; the same key with a
//! different request is refused (422); a retry while the first still runs
//! gets 409. 5xx answers are not kept: the request may be retried for real.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::store::{Idempotent, Store};

/// Bodies above this are not buffered (no endpoint takes one that large).
const MAX_BODY: usize = 1 << 20;
const MAX_KEY: usize = 255;

#[derive(Debug, Clone)]
enum Entry {
    InFlight { request: String },
    Done(Idempotent),
}

/// The keys seen, shared by the API's tasks.
#[derive(Debug, Clone, Default)]
pub struct Idempotency {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    store: Option<Store>,
}

impl Idempotency {
    /// Starts with the answers kept by an earlier run.
    pub fn new(store: Option<Store>, kept: Vec<Idempotent>) -> Idempotency {
        let entries = kept
            .into_iter()
            .map(|i| (i.key.clone(), Entry::Done(i)))
            .collect();
        Idempotency {
            entries: Arc::new(Mutex::new(entries)),
            store,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn replay(i: &Idempotent) -> Response {
    let mut r = Response::new(Body::from(i.body.clone()));
    *r.status_mut() =
        axum::http::StatusCode::from_u16(i.status).unwrap_or(axum::http::StatusCode::OK);
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    r
}

pub async fn layer(State(idem): State<Idempotency>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get("idempotency-key") else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= MAX_KEY => k.to_string(),
        _ => {
            return ApiError::BadRequest(format!(
                "Idempotency-Key: must be 1 to {MAX_KEY} visible ASCII characters"
            ))
            .into_response()
        }
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return ApiError::BadRequest(format!("request body: {e}")).into_response(),
    };
    let request = format!(
        "{} {}\n{}",
        parts.method,
        parts.uri.path(),
        String::from_utf8_lossy(&bytes)
    );
    {
        let mut entries = idem.entries();
        match entries.get(&key) {
            Some(Entry::Done(i)) if i.request == request => return replay(i),
            Some(Entry::InFlight { request: r }) if *r == request => {
                return ApiError::Conflict(
                    "a request with this Idempotency-Key is still running; retry later".into(),
                )
                .into_response()
            }
            Some(_) => {
                return ApiError::Unprocessable(
                    "Idempotency-Key was used for a different request".into(),
                )
                .into_response()
            }
            None => {
                entries.insert(
                    key.clone(),
                    Entry::InFlight {
                        request: request.clone(),
                    },
                );
            }
        }
    }
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (rparts, rbody) = resp.into_parts();
    let rbytes = match axum::body::to_bytes(rbody, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            idem.entries().remove(&key);
            return ApiError::Unavailable(format!("answer: {e}")).into_response();
        }
    };
    if rparts.status.is_server_error() {
        idem.entries().remove(&key);
    } else {
        let done = Idempotent {
            key: key.clone(),
            request,
            status: rparts.status.as_u16(),
            body: String::from_utf8_lossy(&rbytes).into_owned(),
        };
        if let Some(s) = &idem.store {
            s.put_idempotent(&done);
        }
        idem.entries().insert(key, Entry::Done(done));
    }
    Response::from_parts(rparts, Body::from(rbytes))
}
