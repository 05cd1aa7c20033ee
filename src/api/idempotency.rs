//! `Idempotency-Key` on POST: a retried request gets the first answer
//! instead of starting a second evacuation or reservation.
//!
//! The first request with a key runs; its status and body are kept (in the
//! state database when there is one, so a retry after a restart is covered
//! too). A retry with the same key and the same method, path and body gets
//! that answer again, marked `Idempotent-Replayed: true`; the same key with a
//! different request is refused (422); a retry while the first still runs
//! gets 409. 5xx answers are not kept: the request may be retried for real.
//! A request whose client goes away before the answer (its future dropped)
//! leaves no "in flight" mark behind, so a retry runs instead of getting 409
//! for ever. Answers are kept for [`KEEP_FOR`], at most [`MAX_KEYS`] of them
//! (the oldest go first), so the table does not grow without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
/// How long an answer is replayed (a client retries within minutes, not
/// days).
pub const KEEP_FOR: Duration = Duration::from_secs(24 * 3600);
/// At most this many answers are kept in memory.
pub const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone)]
enum Entry {
    InFlight { request: String },
    Done { answer: Idempotent, at: Instant },
}

/// Drops answers older than `keep_for`, then the oldest ones beyond `max`
/// (requests in flight are never dropped).
fn prune(entries: &mut HashMap<String, Entry>, now: Instant, keep_for: Duration, max: usize) {
    entries.retain(|_, e| match e {
        Entry::Done { at, .. } => now.saturating_duration_since(*at) < keep_for,
        Entry::InFlight { .. } => true,
    });
    if entries.len() > max {
        let mut done: Vec<(Instant, String)> = entries
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Done { at, .. } => Some((*at, k.clone())),
                Entry::InFlight { .. } => None,
            })
            .collect();
        done.sort();
        let excess = entries.len() - max;
        for (_, k) in done.into_iter().take(excess) {
            entries.remove(&k);
        }
    }
}

/// The mark of a request in flight under `key`: removed when dropped unless
/// the answer replaced it (the client went away, the future was dropped).
struct InFlight<'a> {
    idem: &'a Idempotency,
    key: &'a str,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut entries = self.idem.entries();
        if matches!(entries.get(self.key), Some(Entry::InFlight { .. })) {
            entries.remove(self.key);
        }
    }
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
        let now = Instant::now();
        let mut entries = kept
            .into_iter()
            .map(|i| (i.key.clone(), Entry::Done { answer: i, at: now }))
            .collect();
        prune(&mut entries, now, KEEP_FOR, MAX_KEYS);
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
            Some(Entry::Done { answer, .. }) if answer.request == request => return replay(answer),
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
    let mut mark = InFlight {
        idem: &idem,
        key: &key,
        done: false,
    };
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (rparts, rbody) = resp.into_parts();
    let rbytes = match axum::body::to_bytes(rbody, usize::MAX).await {
        Ok(b) => b,
        // The mark goes with `mark`.
        Err(e) => return ApiError::Unavailable(format!("answer: {e}")).into_response(),
    };
    if !rparts.status.is_server_error() {
        mark.done = true;
        let done = Idempotent {
            key: key.clone(),
            request,
            status: rparts.status.as_u16(),
            body: String::from_utf8_lossy(&rbytes).into_owned(),
        };
        if let Some(s) = &idem.store {
            s.put_idempotent(&done);
        }
        let now = Instant::now();
        let mut entries = idem.entries();
        entries.insert(
            key.clone(),
            Entry::Done {
                answer: done,
                at: now,
            },
        );
        prune(&mut entries, now, KEEP_FOR, MAX_KEYS);
    }
    drop(mark);
    Response::from_parts(rparts, Body::from(rbytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::ServiceExt;

    fn done(key: &str, at: Instant) -> (String, Entry) {
        let answer = Idempotent {
            key: key.into(),
            request: "POST /x\n".into(),
            status: 201,
            body: "{}".into(),
        };
        (key.into(), Entry::Done { answer, at })
    }

    #[test]
    fn prune_drops_old_answers_then_the_oldest_beyond_the_cap_but_never_one_in_flight() {
        let t0 = Instant::now();
        let mut e: HashMap<String, Entry> = [
            done("old", t0),
            done("a", t0 + Duration::from_secs(50)),
            done("b", t0 + Duration::from_secs(60)),
            done("c", t0 + Duration::from_secs(70)),
        ]
        .into_iter()
        .collect();
        e.insert(
            "running".into(),
            Entry::InFlight {
                request: "POST /x\n".into(),
            },
        );
        prune(
            &mut e,
            t0 + Duration::from_secs(100),
            Duration::from_secs(60),
            3,
        );
        let sorted = |e: &HashMap<String, Entry>| {
            let mut keys: Vec<String> = e.keys().cloned().collect();
            keys.sort();
            keys
        };
        // "old" and "a" are past 60 s; then 3 left: b, c, running.
        assert_eq!(sorted(&e), ["b", "c", "running"]);
        prune(
            &mut e,
            t0 + Duration::from_secs(100),
            Duration::from_secs(60),
            1,
        );
        assert_eq!(sorted(&e), ["running"], "in flight survives any cap");
    }

    fn request() -> Request {
        Request::builder()
            .method("POST")
            .uri("/x")
            .header("idempotency-key", "k1")
            .body(Body::from("{}"))
            .unwrap()
    }

    #[tokio::test]
    async fn a_request_whose_client_went_away_leaves_no_in_flight_mark() {
        // The first call hangs (its client gives up: the future is dropped);
        // the retry must run, not get 409 for ever.
        let hang = Arc::new(AtomicBool::new(true));
        let h = hang.clone();
        let idem = Idempotency::default();
        let app = axum::Router::new()
            .route(
                "/x",
                post(move || {
                    let h = h.clone();
                    async move {
                        if h.load(Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        (axum::http::StatusCode::CREATED, "{\"id\": 1}")
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(idem.clone(), layer));
        let gone =
            tokio::time::timeout(Duration::from_millis(100), app.clone().oneshot(request())).await;
        assert!(gone.is_err(), "the first call hangs");
        assert!(idem.entries().is_empty(), "no mark left behind");
        hang.store(false, Ordering::SeqCst);
        let r = app.clone().oneshot(request()).await.unwrap();
        assert_eq!(r.status(), 201);
        // And now it is kept: a retry replays it.
        let r = app.oneshot(request()).await.unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["idempotent-replayed"], "true");
    }
}
