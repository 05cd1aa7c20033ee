//! The OVSDB agent of one host: connects to its ovsdb-server, points the
//! bridge at the controller, and reports the bridge's datapath id and
//! interfaces to the controller. Reconnects with exponential backoff, so a host
//! whose ovsdb-server is down is shown disconnected while the others keep
//! working.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_rustls::rustls::ClientConfig;

use super::{Command, ControllerHandle};
use crate::config::HostConfig;
use crate::ovsdb::{self, vswitch, Client, OvsdbError};

/// What the controller learns about a host from its OVSDB.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub datapath_id: Option<u64>,
    pub datapath_type: String,
    pub interfaces: Vec<vswitch::Interface>,
}

#[derive(Debug)]
pub enum OvsdbEvent {
    Up { client: Client, info: HostInfo },
    Interfaces(Vec<vswitch::Interface>),
    Down { error: String },
}

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(15);

/// `targets`: the bridge's controllers (this solive, or every replica of a
/// cluster, so standbys keep their sessions).
pub fn spawn_agent(
    host: HostConfig,
    targets: Vec<String>,
    tls: Option<Arc<ClientConfig>>,
    ctl: ControllerHandle,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = BACKOFF_MIN;
        let mut first = true;
        loop {
            let started = tokio::time::Instant::now();
            let error = match session(&host, &targets, tls.clone(), &ctl, &mut first).await {
                Ok(()) => "connection closed".to_string(),
                Err(e) => e.to_string(),
            };
            ctl.send(Command::OvsdbEvent(
                host.name.clone(),
                OvsdbEvent::Down {
                    error: error.clone(),
                },
            ));
            // A session that lasted a while was healthy: start backing off anew.
            if started.elapsed() > Duration::from_secs(30) {
                backoff = BACKOFF_MIN;
            }
            tracing::debug!(host = %host.name, %error, retry_in = ?backoff, "ovsdb session ended");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    })
}

async fn session(
    host: &HostConfig,
    targets: &[String],
    tls: Option<Arc<ClientConfig>>,
    ctl: &ControllerHandle,
    first: &mut bool,
) -> Result<(), OvsdbError> {
    let client = Client::connect_tls(&host.ovsdb, tls).await?;
    // This controller manages the host now: the host's watchdog (if one
    // runs) waits for the lock and lifts the queue-mode throttling once we
    // are gone (crate::watchdog).
    client.steal(crate::watchdog::LOCK).await?;
    if *first {
        // QoS/Queue rows of an earlier solive that died without cleaning up
        // would keep shaping traffic: this solive starts from nothing. (Only on
        // the first session: after a reconnect the rows are this run's own.)
        let n = vswitch::cleanup_owned(&client, super::OVSDB_OWNER).await?;
        if n > 0 {
            tracing::info!(host = %host.name, rows = n, "removed stale QoS/Queue rows of an earlier run");
        }
        *first = false;
    }
    let br = &host.bridge;
    // OpenFlow 1.3 only; secure so that flows and meters survive a controller
    // restart (standalone would wipe them ~15 s after losing us and fall back to
    // learning); then the controller targets.
    vswitch::set_protocols(&client, br, &["OpenFlow13"]).await?;
    vswitch::set_fail_mode(&client, br, "secure").await?;
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    vswitch::set_controller(&client, br, &targets).await?;
    let bridge = wait_for_dpid(&client, br).await?;
    let interfaces = vswitch::interfaces(&client, br).await?;
    let info = HostInfo {
        datapath_id: bridge.datapath_id,
        datapath_type: bridge.datapath_type.clone(),
        interfaces,
    };
    // Watch the Interface table: a VM's interface appears, moves or goes away.
    let (_, mut updates) = client
        .monitor(
            "Open_vSwitch",
            &[(
                "Interface",
                ovsdb::MonitorRequest::columns(&["name", "ofport", "external_ids"]),
            )],
        )
        .await?;
    ctl.send(Command::OvsdbEvent(
        host.name.clone(),
        OvsdbEvent::Up {
            client: client.clone(),
            info,
        },
    ));
    while updates.recv().await.is_some() {
        let ifaces = vswitch::interfaces(&client, br).await?;
        ctl.send(Command::OvsdbEvent(
            host.name.clone(),
            OvsdbEvent::Interfaces(ifaces),
        ));
    }
    Ok(())
}

/// A new bridge gets its datapath id from ovs-vswitchd a moment after creation.
async fn wait_for_dpid(client: &Client, br: &str) -> Result<vswitch::Bridge, OvsdbError> {
    for _ in 0..50 {
        match vswitch::bridge(client, br).await? {
            None => {
                return Err(OvsdbError::Unexpected(format!(
                    "bridge {br:?} does not exist"
                )))
            }
            Some(b) if b.datapath_id.is_some() => return Ok(b),
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    vswitch::bridge(client, br)
        .await?
        .ok_or_else(|| OvsdbError::Unexpected(format!("bridge {br:?} does not exist")))
}
