//! Wiring of `solive serve`: the OpenFlow listener, the controller task and the
//! REST API, all stopped by one shutdown future (mini-redis `server::run`
//! shape: the caller binds the listeners, so tests can use port 0).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::api::idempotency::Idempotency;
use crate::config::Config;
use crate::controller::{Controller, ControllerHandle};
use crate::evacuation::{self, Evacuations, HostHypervisor};
use crate::hypervisor::libvirt::Libvirt;
use crate::hypervisor::Hypervisor;
use crate::store::{Loaded, Store, StoreError};

/// Why solive could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tokens(#[from] crate::api::auth::TokensError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] crate::api::tls::TlsError),
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error("{0}")]
    Config(String),
}
use crate::switch::{self, SessionConfig};

/// A running solive: its controller handle and the task that ends when it stops.
pub struct Running {
    pub controller: ControllerHandle,
    pub evacuations: Evacuations,
    pub task: tokio::task::JoinHandle<()>,
}

/// Each configured host's hypervisor: libvirt where the host names a URI.
/// Migration data goes to the destination's fabric address.
pub fn hypervisors(config: &Config) -> BTreeMap<String, HostHypervisor> {
    config
        .hosts
        .iter()
        .filter_map(|h| {
            let uri = h.libvirt.clone()?;
            let hv: Arc<dyn Hypervisor> =
                Arc::new(Libvirt::new(&uri).with_shared_storage(h.shared_storage.clone()));
            Some((
                h.name.clone(),
                HostHypervisor {
                    hv,
                    uri,
                    migrate_uri: h.address.map(|a| format!("tcp://{a}")),
                    room: evacuation::Room {
                        memory_mib: h.guest_memory_mib,
                        vcpus: h.guest_vcpus,
                    },
                },
            ))
        })
        .collect()
}

/// `[scatter]` and each host's `exec` and `store`.
fn scatter_settings(config: &Config) -> evacuation::scatter::ScatterSettings {
    let c = &config.scatter;
    evacuation::scatter::ScatterSettings {
        hosts: config
            .hosts
            .iter()
            .map(|h| {
                let hs = evacuation::scatter::HostScatter {
                    exec: h.exec.clone(),
                    store: h.store.clone(),
                };
                (h.name.clone(), hs)
            })
            .collect(),
        solive: c
            .solive
            .clone()
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| "solive".into()),
        batch: c.batch,
        chunk_kib: c.chunk_kib,
        shortfall_pct: c.shortfall_pct,
        relay_port: c.relay_port,
    }
}

/// Starts everything in the background and returns at once; fails only if
/// the API's tokens file cannot be used.
pub fn start(
    config: Config,
    openflow: TcpListener,
    api: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    let hvs = hypervisors(&config);
    start_with(config, hvs, openflow, api, shutdown)
}

/// How the controller hears from its switches.
pub enum Switches {
    /// It accepts their connections itself.
    Listen(TcpListener),
    /// A cluster replica's sessions, running since before it led (their
    /// `Connected` events replayed first).
    Events(mpsc::UnboundedReceiver<switch::SwitchEvent>),
}

/// The records the controller starts from, and where it keeps new ones.
pub struct Persisted {
    pub store: Option<Store>,
    pub loaded: Loaded,
    /// A takeover: active reservations stay in force (see
    /// `Controller::with_store`).
    pub adopt: bool,
    /// A cluster's leader: who it is (its health answer says so).
    pub leader: Option<crate::api::health::Leader>,
}

impl Persisted {
    /// `[state] dir`'s SQLite store, or nothing.
    pub fn from_config(config: &Config) -> Result<Persisted, StoreError> {
        let (store, loaded) = match &config.state {
            Some(st) => {
                let (store, loaded) = Store::open(&st.dir)?;
                tracing::info!(path = %store.path().display(), reservations = loaded.reservations.len(),
                    evacuations = loaded.evacuations.len(), caches = loaded.caches.len(), "state database opened");
                (Some(store), loaded)
            }
            None => (None, Loaded::default()),
        };
        Ok(Persisted {
            store,
            loaded,
            adopt: false,
            leader: None,
        })
    }
}

/// The API's tokens, from `[api] tokens_file`.
pub fn tokens(config: &Config) -> Result<crate::api::auth::Auth, StartError> {
    Ok(crate::api::auth::Auth(match &config.api.tokens_file {
        Some(path) => Some(std::sync::Arc::new(crate::api::auth::Tokens::load(path)?)),
        None => {
            tracing::warn!(
                "no [api] tokens_file: the REST API runs without authentication (loopback only)"
            );
            None
        }
    }))
}

/// `[tls]`'s certificates, loaded once for both channels (OpenFlow's
/// listener and the OVSDB clients).
pub fn pki(config: &Config) -> Result<Option<crate::pki::Pki>, StartError> {
    Ok(config.tls.as_ref().map(crate::pki::Pki::load).transpose()?)
}

/// The switch sessions' timers from `[controller]`, and their TLS (`[tls]`).
pub fn session_config(
    config: &Config,
    tls: Option<Arc<crate::switch::TlsServerConfig>>,
) -> SessionConfig {
    SessionConfig {
        echo_interval: Duration::from_millis(config.controller.echo_interval_ms),
        request_timeout: Duration::from_millis(config.controller.request_timeout_ms),
        tls,
        ..SessionConfig::default()
    }
}

/// The API's HTTPS configuration from `[api]`, if it has a certificate.
pub fn api_tls(
    config: &Config,
) -> Result<Option<Arc<tokio_rustls::rustls::ServerConfig>>, StartError> {
    match (&config.api.tls_cert, &config.api.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(crate::api::tls::server_config(cert, key)?)),
        _ => Ok(None),
    }
}

/// Serves `app` on `api` (TLS with `tls`) until `stop`.
pub async fn serve_api(
    api: TcpListener,
    app: axum::Router,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    crate::api::tls::serve(api, app, tls, stop).await;
}

/// [`start`] with the hosts' hypervisors given (tests pass fakes).
pub fn start_with(
    config: Config,
    hypervisors: BTreeMap<String, HostHypervisor>,
    openflow: TcpListener,
    api: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    let persisted = Persisted::from_config(&config)?;
    start_from(
        config,
        hypervisors,
        Switches::Listen(openflow),
        api,
        persisted,
        shutdown,
    )
}

/// Starts the controller, the evacuations and the API from what is given.
pub fn start_from(
    config: Config,
    hypervisors: BTreeMap<String, HostHypervisor>,
    switches: Switches,
    api: TcpListener,
    persisted: Persisted,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    let auth = tokens(&config)?;
    // Certificates are loaded (and checked) before anything starts.
    let api_tls = api_tls(&config)?;
    let pki = pki(&config)?;
    let settings = evacuation::Settings {
        period: Duration::from_millis(config.controller.period_ms),
        scatter: scatter_settings(&config),
        cache: config.cache.settings().map_err(StartError::Config)?,
        ..evacuation::Settings::default()
    };
    let Persisted {
        store,
        loaded,
        adopt,
        leader,
    } = persisted;
    let session = session_config(&config, pki.as_ref().map(|p| p.server.clone()));
    let (mut controller, handle) = Controller::new(config);
    controller = controller.with_ovsdb_tls(pki.map(|p| p.client));
    if let Some(s) = &store {
        controller = controller.with_store(s.clone(), loaded.reservations, adopt);
    }
    let evacuations = Evacuations::new(handle.clone(), hypervisors, settings, store.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let listener = match switches {
        Switches::Listen(openflow) => {
            let (events_tx, events_rx) = mpsc::unbounded_channel();
            controller.forward_switch_events(events_rx);
            Some(tokio::spawn(switch::listen(
                openflow,
                session,
                events_tx,
                stopped(stop_rx.clone()),
            )))
        }
        Switches::Events(events_rx) => {
            controller.forward_switch_events(events_rx);
            None
        }
    };
    let mut app = crate::api::router(
        handle.clone(),
        evacuations.clone(),
        auth,
        Idempotency::new(store.clone(), loaded.idempotent),
    );
    if let Some(l) = leader {
        app = app.layer(axum::Extension(l));
    }
    let api_stop = stopped(stop_rx.clone());
    let restoring = evacuations.clone();
    let stored_evacuations = loaded.evacuations;
    let stored_caches = loaded.caches;
    let stored_learned = loaded.learned;
    let api_task = tokio::spawn(async move {
        // The history is back before the first request is answered; after
        // a takeover, what the previous leader was running goes on.
        restoring.caches().resume(stored_caches);
        restoring.relearn(stored_learned);
        if adopt {
            restoring.take_over(stored_evacuations).await;
        } else {
            restoring.restore(stored_evacuations).await;
        }
        serve_api(api, app, api_tls, api_stop).await;
    });
    let ctl = tokio::spawn(controller.run());
    let h = handle.clone();
    let evac = evacuations.clone();
    let task = tokio::spawn(async move {
        shutdown.await;
        // Running pre-copy migrations are aborted (their VMs stay on the
        // source) before the reservations go.
        tracing::info!("shutting down: stopping evacuations");
        evac.shutdown(Duration::from_secs(30)).await;
        tracing::info!("shutting down: removing reservations");
        h.shutdown().await;
        let _ = stop_tx.send(true);
        let _ = ctl.await;
        if let Some(l) = listener {
            let _ = l.await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), api_task).await;
    });
    Ok(Running {
        controller: handle,
        evacuations,
        task,
    })
}

/// Runs until `shutdown` resolves, then cleans up and returns.
pub async fn run(
    config: Config,
    openflow: TcpListener,
    api: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let running = start(config, openflow, api, shutdown)?;
    let _ = running.task.await;
    Ok(())
}
