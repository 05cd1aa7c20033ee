//! Bearer-token authentication of the REST API.
//!
//! Tokens come from the file named by `[api] tokens_file`: one client per
//! line, `NAME:TOKEN` (may do anything) or `NAME:TOKEN:ro` (may only GET);
//! blank lines and lines starting with `#` are ignored. Every endpoint but
//! `/v1/health` needs `Authorization: Bearer <token>`: a missing or wrong token
//! is 401, a read-only token on anything but GET/HEAD is 403. Tokens are
//! compared in constant time (the `subtle` crate), and every configured token
//! is compared, so the time taken does not tell which one came close.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read the tokens file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tokens file {path}, line {line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
    #[error("tokens file {0} holds no token")]
    Empty(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub name: String,
    token: Vec<u8>,
    pub read_only: bool,
}

/// The configured clients; `None` in [`Auth`] means the API is open.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<Client>);

impl Tokens {
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: shown.clone(),
            source,
        })?;
        Tokens::parse(&text).map_err(|e| match e {
            TokensError::Line { line, message, .. } => TokensError::Line {
                path: shown.clone(),
                line,
                message,
            },
            TokensError::Empty(_) => TokensError::Empty(shown.clone()),
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Tokens, TokensError> {
        let mut clients: Vec<Client> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |message: &str| TokensError::Line {
                path: String::new(),
                line: i + 1,
                message: message.into(),
            };
            let parts: Vec<&str> = line.split(':').collect();
            let (name, token, read_only) = match parts.as_slice() {
                [n, t] => (*n, *t, false),
                [n, t, "ro"] => (*n, *t, true),
                [_, _, other] => return Err(bad(&format!("unknown flag {other:?} (only \"ro\")"))),
                _ => return Err(bad("expected NAME:TOKEN or NAME:TOKEN:ro")),
            };
            if name.is_empty() || token.is_empty() {
                return Err(bad("the name and the token must not be empty"));
            }
            // Short tokens can be guessed; 16 characters is a floor, not advice.
            if token.len() < 16 {
                return Err(bad("the token is shorter than 16 characters"));
            }
            if clients.iter().any(|c| c.name == name) {
                return Err(bad(&format!("client {name:?} is listed twice")));
            }
            clients.push(Client {
                name: name.into(),
                token: token.as_bytes().to_vec(),
                read_only,
            });
        }
        if clients.is_empty() {
            return Err(TokensError::Empty(String::new()));
        }
        Ok(Tokens(clients))
    }

    /// The client holding `token`, compared in constant time against all.
    pub fn find(&self, token: &[u8]) -> Option<&Client> {
        let mut found = None;
        for c in &self.0 {
            if bool::from(c.token.ct_eq(token)) {
                found = Some(c);
            }
        }
        found
    }
}

/// The middleware's state.
#[derive(Debug, Clone)]
pub struct Auth(pub Option<Arc<Tokens>>);

/// Checks the bearer token of every request except `/v1/health`.
pub async fn require(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    let Some(tokens) = auth.0.as_ref() else {
        return next.run(req).await;
    };
    if req.uri().path() == "/v1/health" {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(client) = presented.and_then(|t| tokens.find(t.as_bytes())) else {
        let mut r = ApiError::Unauthorized(
            "a valid `Authorization: Bearer <token>` header is required".into(),
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    };
    if client.read_only && !matches!(*req.method(), Method::GET | Method::HEAD) {
        return ApiError::Forbidden(format!("client {:?} has a read-only token", client.name))
            .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_clients_and_flags() {
        let t = Tokens::parse(
            "# ops\nmanager:0123456789abcdef0123\n\nviewer:fedcba9876543210fedc:ro\n",
        )
        .unwrap();
        assert_eq!(t.find(b"0123456789abcdef0123").unwrap().name, "manager");
        assert!(t.find(b"fedcba9876543210fedc").unwrap().read_only);
        assert!(t.find(b"0123456789abcdef012").is_none());
        assert!(t.find(b"").is_none());
    }

    #[test]
    fn bad_lines_name_their_number() {
        for (text, needle) in [
            ("a:0123456789abcdef\nb", "line 2: expected"),
            ("a:0123456789abcdef:rw", "line 1: unknown flag"),
            ("a:short", "shorter than 16"),
            (":0123456789abcdef", "must not be empty"),
            ("a:0123456789abcdef\na:0123456789abcdeg", "listed twice"),
            ("# nothing\n", "no token"),
        ] {
            let e = Tokens::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
