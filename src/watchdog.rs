//! `solive watchdog`: lifts solive's queue-mode throttling on a host once no
//! controller is there to keep it.
//!
//! Meters and flows lapse on their own (hard timeouts), but what queue mode
//! writes into OVSDB (HTB QoS and queues on the uplink, ingress policing on
//! the VMs' interfaces) has no timeout: a controller that dies would leave
//! the VMs throttled. The watchdog runs beside each host's ovsdb-server and
//! uses OVSDB's own locks (RFC 7047 4.1.8):
//!
//! - the controller (the cluster's leader) **steals** the lock
//!   [`LOCK`] on every host it manages as soon as it connects;
//! - the watchdog asks for the same lock and waits. The server hands it over
//!   when the controller's connection ends (the process died, or was cut
//!   off long enough for ovsdb-server's inactivity probe), and the watchdog
//!   then removes every row and policing value tagged as solive's
//!   (`vswitch::cleanup_owned`), and keeps the lock;
//! - a controller that comes back steals it again (the watchdog is told
//!   and queues again) and re-applies what is in force.
//!
//! No clock is compared anywhere: the lock moves only when the server sees
//! the controller's connection go.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_rustls::rustls::ClientConfig;

use crate::ovsdb::{vswitch, Client, LockNotice, OvsdbError};

/// The OVSDB lock a managing controller holds on each host.
pub const LOCK: &str = "solive_controller";

const BACKOFF: Duration = Duration::from_secs(1);

/// Watches one ovsdb-server until `shutdown`; reconnects when it goes away.
pub async fn run(
    target: String,
    tls: Option<Arc<ClientConfig>>,
    owner: &str,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            r = watch(&target, tls.clone(), owner) => {
                let e = r.err().map_or("connection closed".to_string(), |e| e.to_string());
                tracing::warn!(%target, error = %e, "watchdog: ovsdb session ended; reconnecting");
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(BACKOFF) => {}
        }
    }
}

async fn watch(
    target: &str,
    tls: Option<Arc<ClientConfig>>,
    owner: &str,
) -> Result<(), OvsdbError> {
    let client = Client::connect_tls(target, tls).await?;
    let mut notices = client.lock_notices();
    if client.lock(LOCK).await? {
        lift(&client, target, owner).await?;
    } else {
        tracing::info!(%target, "watchdog: a controller holds the lock; waiting");
    }
    loop {
        let notice = tokio::select! {
            n = notices.recv() => n,
            // The connection's end is noticed here too (no notice comes).
            _ = closed(&client) => return Ok(()),
        };
        match notice {
            Ok(LockNotice::Locked(l)) if l == LOCK => lift(&client, target, owner).await?,
            Ok(LockNotice::Stolen(l)) if l == LOCK => {
                tracing::info!(%target, "watchdog: a controller took the lock; waiting");
                if client.lock(LOCK).await? {
                    lift(&client, target, owner).await?;
                }
            }
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return Ok(()),
        }
    }
}

async fn closed(client: &Client) {
    while !client.is_closed() {
        // Echo doubles as a liveness probe of the server.
        if client.echo().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn lift(client: &Client, target: &str, owner: &str) -> Result<(), OvsdbError> {
    let rows = vswitch::cleanup_owned(client, owner).await?;
    tracing::warn!(%target, qos_and_queue_rows = rows,
        "watchdog: no controller holds the lock: solive's queues and policing lifted");
    Ok(())
}
