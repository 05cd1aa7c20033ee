//! `solive serve` with `[cluster]`: a replica's life.
//!
//! ```text
//! join (lease) ── standby ──campaign won──▶ leader ──lease lost──▶ exit(75)
//!                 │ switch sessions run, claiming SLAVE at the leader's generation
//!                 │ API: 503 "standby" (health: 200 with the leader's name)
//!                 │ etcd lost (no quorum): campaign again, with a new lease
//!                 │ once the old one is lost; stays a standby meanwhile
//!                 ▼
//!   on winning: claim MASTER at our generation on every session (before the
//!   controller sends anything), read the state from etcd (if etcd does not
//!   answer in time: resign and stand by again), start the controller on
//!   the live sessions with the reservations in force adopted.
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::state::{self, EtcdBacking};
use super::{ClusterError, Member};
use crate::config::Config;
use crate::openflow::{ControllerRole, Role};
use crate::server::{self, Persisted, StartError, Switches};
use crate::store::Store;
use crate::switch::{self, SwitchEvent, SwitchHandle};

/// Exit status of a replica that lost its leadership (EX_TEMPFAIL: its
/// supervisor restarts it, as a standby).
pub const DEPOSED_EXIT: i32 = 75;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Who leads, as this replica last saw it: (name, generation).
type Leader = Option<(String, u64)>;

/// Runs a replica until `shutdown` (or until it is deposed: then the process
/// exits with [`DEPOSED_EXIT`] without touching anything).
pub async fn run(
    config: Config,
    openflow: TcpListener,
    api: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReplicaError> {
    let cluster = config
        .cluster
        .clone()
        .expect("replica::run is called with [cluster]");
    let member = Member::join(&cluster).await?;
    let (leader_tx, leader_rx) = watch::channel::<Leader>(None);
    // Before any leader is known a standby claims nothing (NOCHANGE is not
    // checked against the switch's generation).
    let (role_tx, role_rx) = watch::channel(Role {
        role: ControllerRole::NoChange,
        generation_id: 0,
    });
    let mut following = tokio::spawn(follow(leader_rx.clone(), role_tx.clone()));
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let pki = server::pki(&config)?;
    let mut session = server::session_config(&config, pki.map(|p| p.server));
    session.role = Some(role_rx);
    let listener = tokio::spawn(switch::listen(openflow, session, events_tx, {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }));
    let (release_tx, release_rx) = oneshot::channel();
    let held = tokio::spawn(hold_sessions(events_rx, release_rx));
    // The standby's API answers until this replica leads. A duplicate of the
    // listening socket serves it, so the leader's API takes over the same
    // port without a gap in which connections are refused.
    let (standby_stop_tx, standby_stop_rx) = oneshot::channel::<()>();
    let api = api.into_std()?;
    let standby_api = {
        let listener = TcpListener::from_std(api.try_clone()?)?;
        let app = standby_router(leader_rx.clone(), cluster.name.clone());
        let tls = server::api_tls(&config)?;
        tokio::spawn(async move {
            let stop = async {
                let _ = standby_stop_rx.await;
            };
            server::serve_api(listener, app, tls, stop).await
        })
    };
    let mut shutdown = Box::pin(shutdown);
    let timeout = Duration::from_millis(cluster.lease_ms);
    let mut member = member;
    let (member, lead, loaded) = loop {
        let (won, lead) = tokio::select! {
            won = elect(&cluster, member, &leader_tx) => won,
            _ = &mut shutdown => {
                tracing::info!("standby stopping");
                let _ = standby_stop_tx.send(());
                let _ = stop_tx.send(true);
                return Ok(());
            }
        };
        following.abort();
        tracing::info!(
            generation = lead.generation,
            "won the election: reading the state"
        );
        // MASTER on every session before the controller sends anything
        // through them (the sessions pick a new claim up before any
        // outgoing message), and before anything else: it fences off a
        // deposed leader's writes at once.
        let _ = role_tx.send(Role {
            role: ControllerRole::Master,
            generation_id: lead.generation,
        });
        match state::load(won.client(), won.prefix(), timeout).await {
            Ok(loaded) => break (won, lead, loaded),
            Err(e) => {
                // Nothing has acted yet. etcd just back from a lost quorum
                // can elect before it answers reads in time (a CI run's
                // replica exited here, and the cluster was one short): hand
                // leadership on and stand by again. If the resign does not
                // get through either, the next campaign (same lease) wins
                // at once and the read is tried again.
                tracing::warn!(error = %e, "elected, but the state could not be read: resigning, standing by again");
                if let Err(e) = won.resign(&lead).await {
                    tracing::warn!(error = %e, "resign failed");
                }
                // SLAVE again, at the generation of whoever leads next (the
                // next leader's MASTER claim demotes this one meanwhile).
                leader_tx.send_replace(None);
                following = tokio::spawn(follow(leader_rx.clone(), role_tx.clone()));
                tokio::time::sleep(timeout / 4).await;
                member = won;
            }
        }
    };
    tracing::info!(
        reservations = loaded.reservations.len(),
        evacuations = loaded.evacuations.len(),
        "state read from etcd"
    );
    tracing::info!(name = %cluster.name, generation = lead.generation, "elected leader");
    let backing = EtcdBacking::new(
        member.client().clone(),
        member.prefix(),
        lead.clone(),
        timeout,
        member.deposed(),
    )?;
    let store = Store::with_backing(backing, format!("etcd:{}", member.prefix()).into())?
        .fenced(member.acting());
    let _ = standby_stop_tx.send(());
    let _ = standby_api.await;
    let _ = release_tx.send(());
    let events = held.await.map_err(std::io::Error::other)?;
    let running = server::start_from(
        config.clone(),
        server::hypervisors(&config),
        Switches::Events(events),
        TcpListener::from_std(api)?,
        Persisted {
            store: Some(store),
            loaded,
            adopt: true,
            leader: Some(crate::api::health::Leader {
                name: cluster.name.clone(),
                generation: lead.generation,
            }),
        },
        shutdown,
    )?;
    tokio::select! {
        _ = running.task => {}
        _ = member.lost() => {
            // Fail-stop: nothing is removed or aborted on the way out. The
            // next leader re-applies the reservations in force, and the
            // switches refuse our writes once it has claimed them.
            tracing::error!("leadership lost: stopping at once; a standby takes over");
            std::process::exit(DEPOSED_EXIT);
        }
    }
    let _ = stop_tx.send(true);
    let _ = listener.await;
    Ok(())
}

/// Stands by until elected. A standby has acted on nothing, so losing etcd
/// (the member it talks to gone, or no quorum) does not stop it: a broken
/// campaign is started again, and once its lease is lost (not renewed for a
/// whole lease) it takes a new one as soon as etcd grants it. Without a
/// quorum nobody can be elected, so nobody acts.
async fn elect(
    cluster: &crate::config::ClusterConfig,
    mut member: Member,
    leader: &watch::Sender<Leader>,
) -> (Member, super::Leadership) {
    let pause = Duration::from_millis(500);
    loop {
        match member.campaign(leader.clone()).await {
            Ok(lead) => return (member, lead),
            Err(e) => tracing::warn!(error = %e, "campaign interrupted; still standing by"),
        }
        tokio::time::sleep(pause).await;
        if member.is_lost() {
            // Who leads is unknown until etcd answers again.
            leader.send_replace(None);
            member = loop {
                match Member::join(cluster).await {
                    Ok(m) => break m,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot join the cluster again yet");
                        tokio::time::sleep(pause).await;
                    }
                }
            };
        }
    }
}

/// While standing by: SLAVE at the current leader's generation.
async fn follow(mut leader: watch::Receiver<Leader>, role: watch::Sender<Role>) {
    loop {
        let seen = leader.borrow_and_update().clone();
        if let Some((_, generation)) = seen {
            let _ = role.send(Role {
                role: ControllerRole::Slave,
                generation_id: generation,
            });
        }
        if leader.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps the standby's sessions until released, then hands the controller
/// a channel that starts with a `Connected` for each live session and goes
/// on with whatever the sessions say next.
async fn hold_sessions(
    mut events: mpsc::UnboundedReceiver<SwitchEvent>,
    release: oneshot::Receiver<()>,
) -> mpsc::UnboundedReceiver<SwitchEvent> {
    let mut live: BTreeMap<u64, SwitchHandle> = BTreeMap::new();
    tokio::pin!(release);
    loop {
        tokio::select! {
            _ = &mut release => break,
            ev = events.recv() => match ev {
                Some(SwitchEvent::Connected(h)) => {
                    live.insert(h.session, h);
                }
                Some(SwitchEvent::Disconnected { session, .. }) => {
                    live.remove(&session);
                }
                Some(_) => {}
                None => break,
            }
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    for h in live.into_values() {
        let _ = tx.send(SwitchEvent::Connected(h));
    }
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    rx
}

/// The standby's API: health says who leads; everything else is a 503
/// naming the leader, so a client retries against it.
fn standby_router(leader: watch::Receiver<Leader>, name: String) -> axum::Router {
    let health = {
        let leader = leader.clone();
        let name = name.clone();
        move || async move {
            let l = leader.borrow().clone();
            axum::Json(serde_json::json!({
                "status": "standby",
                "name": name,
                "leader": l.as_ref().map(|(n, _)| n.clone()),
                "generation": l.map(|(_, g)| g),
                "version": env!("CARGO_PKG_VERSION"),
            }))
        }
    };
    let refuse = move || async move {
        let l = leader.borrow().clone();
        let who = l.map_or("not elected yet".to_string(), |(n, _)| format!("{n:?}"));
        let mut r = crate::api::error::ApiError::Unavailable(format!(
            "replica {name:?} is a standby; the leader is {who}"
        ))
        .into_response();
        r.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        r
    };
    axum::Router::new()
        .route("/v1/health", axum::routing::get(health))
        .fallback(refuse)
}
