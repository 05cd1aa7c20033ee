//! Serving the REST API, plain or HTTPS: rustls (with the `ring` provider,
//! no OpenSSL), the same axum router either way. Each connection runs in its
//! own task; a handshake that does not finish in 10 s is dropped, headers
//! must arrive within 10 s, and at most 512 connections are open at once,
//! the longest-idle one giving way to a new one (`super::conns`), so a
//! client that opens sockets and sends nothing holds little, not for long,
//! and locks nobody out. (axum's own `serve` sets no header timeout: hyper
//! applies one only with a timer, which axum does not give it.)

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;

use super::conns::{Admission, Conns, Counted};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("api.tls_cert {path}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("api.tls_key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("api.tls_cert and api.tls_key do not make a usable pair: {0}")]
    Config(String),
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads the certificate chain and key (PEM).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert.to_path_buf(),
            message: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

pub use super::conns::MAX_CONNECTIONS;

/// A client must send a request's headers within this long (slowloris).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` (over TLS with `config`, plain HTTP without) until
/// `shutdown`, then lets open requests finish (at most 5 s). Every wait is
/// bounded: the TLS handshake, the request headers, the number of
/// connections (and each request's handling, by the router's timeout).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, app, config, Conns::new(MAX_CONNECTIONS), shutdown).await
}

/// [`serve`] with the connection table given (a test reads its figures).
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    config: Option<Arc<ServerConfig>>,
    conns: Conns,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = config.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "cannot accept an API connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let (slot, evicted) = match conns.admit(Instant::now()) {
            Admission::Open { slot, evicted } => (slot, evicted),
            Admission::Full => {
                tracing::warn!(%peer, limit = MAX_CONNECTIONS, "every API connection busy: closed");
                continue;
            }
        };
        let (acceptor, app, builder) = (acceptor.clone(), app.clone(), builder.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let slot = Arc::new(slot);
            // Each request marks the connection busy until its answer is
            // written, so only idle connections are ever closed for room.
            let service = TowerToHyperService::new(tower::service_fn(
                move |req: axum::extract::Request<hyper::body::Incoming>| {
                    let busy = slot.request();
                    let app = app.clone();
                    async move {
                        let resp = app.oneshot(req).await?;
                        Ok::<_, Infallible>(resp.map(|b| Counted::wrap(b, busy)))
                    }
                },
            ));
            let served = async {
                let Some(acceptor) = acceptor else {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                    return;
                };
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                let _ = watcher.watch(conn.into_owned()).await;
            };
            tokio::select! {
                _ = served => {}
                // Idle the longest while the table was full: dropped (no
                // request of its is in progress).
                _ = evicted => tracing::debug!(%peer, "idle API connection closed for a new one"),
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}
