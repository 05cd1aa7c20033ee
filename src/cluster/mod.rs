//! Replicas of solive sharing one etcd: one leader at a time acts, the
//! others wait to take over.
//!
//! - **Election** ([`Member::campaign`]): etcd's own election API on a lease
//!   of `[cluster] lease_ms`. The leader key's creation revision grows with
//!   every new leader, so it is the **generation** the leader claims on every
//!   switch (OpenFlow ROLE_REQUEST MASTER): a switch refuses a claim older
//!   than one it has seen, and a deposed leader's writes after a newer one
//!   claimed the switch (see `switch::session`).
//! - **Fail-stop** ([`Member::lost`]): a leader that cannot renew its lease
//!   within the lease's time, or whose fenced write etcd refuses, stops the
//!   process at once and touches nothing on its way out (no reservation
//!   removed, no migration aborted): a standby is taking over and will
//!   re-apply what is in force. A supervisor restarts it as a standby.
//! - **State** ([`state`]): the records `[state]` keeps in SQLite, kept in
//!   etcd under `[cluster] prefix`, every write fenced by the leader key.
//!
//! Standbys keep their switch connections (claiming SLAVE with the current
//! leader's generation), so a takeover does not wait for switches to
//! reconnect. A standby has acted on nothing, so losing etcd does not stop
//! it: it campaigns again, with a new lease once its old one is lost (see
//! `replica::elect`); without an etcd quorum nobody is elected, so nobody
//! acts.

pub mod replica;
pub mod state;

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, LeaderKey, ResignOptions};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("etcd at {endpoints}: {source}")]
    Connect {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd {what}: {source}")]
    Etcd {
        what: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd did not answer {what} within {timeout:?}")]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("etcd {0}")]
    Protocol(String),
}

/// How often the etcd connections are pinged: above etcd's default
/// `--grpc-keepalive-min-time` (5 s), which it enforces.
const KEEP_ALIVE_PING: Duration = Duration::from_secs(10);

/// One replica's membership: its etcd client and its lease.
pub struct Member {
    client: Client,
    config: crate::config::ClusterConfig,
    lease: i64,
    /// Set once the lease is known to be gone (not renewed in time) or a
    /// fenced write was refused.
    lost: watch::Receiver<bool>,
    lose: std::sync::Arc<watch::Sender<bool>>,
    /// When the lease was last renewed (the keep-alive's last answer): the
    /// one record both the keep-alive and [`Member::acting`] judge by.
    renewed: std::sync::Arc<std::sync::Mutex<std::time::Instant>>,
}

/// Whether a replica may still act: its lease not known lost, and renewed
/// less than a lease period ago. The keep-alive marks the lease lost on the
/// same rule, but only when its task next runs: a leader resumed after a
/// pause (SIGSTOP, a stalled VM) runs its other tasks in no set order, and
/// one about to start a migration or a disk commit asks this first, from
/// the clock, not from a task that may not have run yet.
pub fn may_act(lost: bool, since_renewal: Duration, lease: Duration) -> bool {
    !lost && since_renewal < lease
}

/// How long ago the lease was last renewed (a poisoned lock: as if never).
fn since_renewal(renewed: &std::sync::Mutex<std::time::Instant>) -> Duration {
    renewed
        .lock()
        .map(|at| at.elapsed())
        .unwrap_or(Duration::MAX)
}

/// Won leadership: the leader key, whose creation revision is the generation.
#[derive(Debug, Clone)]
pub struct Leadership {
    pub key: Vec<u8>,
    pub generation: u64,
    /// etcd's own handle on it, to resign.
    leader: LeaderKey,
}

impl Member {
    /// Connects to etcd and takes a lease kept alive in the background.
    pub async fn join(config: &crate::config::ClusterConfig) -> Result<Member, ClusterError> {
        let lease_ttl = config.lease_ms.div_ceil(1000) as i64;
        let timeout = Duration::from_millis(config.lease_ms);
        // Calls are bounded one by one (a campaign waits as long as another
        // replica leads, so no client-wide timeout); the HTTP/2 keep-alive
        // notices a dead etcd, and a lease not renewed in time is lost. etcd
        // closes a connection that pings more often than its
        // --grpc-keepalive-min-time (5 s by default; GOAWAY too_many_pings):
        // with several endpoints a campaign alone on its connection was cut
        // every few seconds when this pinged every lease_ms / 2.
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_keep_alive(KEEP_ALIVE_PING, timeout);
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|source| ClusterError::Connect {
                endpoints: config.endpoints.join(","),
                source,
            })?;
        let grant = bounded(
            "lease grant",
            timeout,
            client.lease_client().grant(lease_ttl, None),
        )
        .await?;
        let lease = grant.id();
        if grant.ttl() != lease_ttl {
            // etcd grants at least 1.5 election timeouts (2 s with its
            // defaults): takeovers take that long whatever lease_ms says.
            tracing::warn!(
                asked_s = lease_ttl,
                granted_s = grant.ttl(),
                "etcd granted another lease time than asked"
            );
        }
        let (lost_tx, lost) = watch::channel(false);
        let lose = std::sync::Arc::new(lost_tx);
        let renewed = std::sync::Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
        tokio::spawn(keep_alive(
            client.clone(),
            lease,
            Duration::from_millis(config.lease_ms),
            lose.clone(),
            renewed.clone(),
        ));
        tracing::info!(name = %config.name, lease = format!("{lease:x}"), ttl_s = grant.ttl(), "joined the cluster");
        Ok(Member {
            client,
            config: config.clone(),
            lease,
            lost,
            lose,
            renewed,
        })
    }

    /// [`may_act`] now, for this replica (see [`crate::store::Store::fenced`]).
    pub fn acting(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let (lost, renewed) = (self.lost.clone(), self.renewed.clone());
        let lease = Duration::from_millis(self.config.lease_ms);
        move || may_act(*lost.borrow(), since_renewal(&renewed), lease)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }

    fn election(&self) -> String {
        format!("{}/leader", self.config.prefix)
    }

    /// Waits to become the leader. While it waits, `leader` follows the
    /// current leader (name and generation), for the standby's SLAVE claim
    /// and its health answer.
    pub async fn campaign(
        &self,
        leader: watch::Sender<Option<(String, u64)>>,
    ) -> Result<Leadership, ClusterError> {
        let observer = tokio::spawn(observe(self.client.clone(), self.election(), leader));
        let mut election = self.client.election_client();
        let campaign = election.campaign(self.election(), self.config.name.clone(), self.lease);
        // Waits as long as another replica leads; a lost lease ends the wait.
        let won = tokio::select! {
            won = campaign => won,
            _ = self.lost() => {
                observer.abort();
                return Err(ClusterError::Protocol("lease lost while campaigning".into()));
            }
        };
        observer.abort();
        let won = won.map_err(|source| ClusterError::Etcd {
            what: "campaign",
            source,
        })?;
        let key: &LeaderKey = won.leader().ok_or_else(|| {
            ClusterError::Protocol("campaign answered without a leader key".into())
        })?;
        Ok(Leadership {
            key: key.key().to_vec(),
            generation: key.rev() as u64,
            leader: key.clone(),
        })
    }

    /// Gives leadership up (deletes the leader key), so the next replica in
    /// line takes over now rather than when the lease expires.
    pub async fn resign(&self, lead: &Leadership) -> Result<(), ClusterError> {
        let timeout = Duration::from_millis(self.config.lease_ms);
        let options = ResignOptions::new().with_leader(lead.leader.clone());
        let mut election = self.client.election_client();
        bounded("resign", timeout, election.resign(Some(options))).await?;
        Ok(())
    }

    /// Marks leadership lost: etcd refused a write fenced by the leader key.
    pub fn deposed(&self) -> impl Fn() + Send + Sync + 'static {
        let lose = self.lose.clone();
        move || {
            let _ = lose.send(true);
        }
    }

    /// Whether the lease is known to be lost.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when the lease is lost (this replica must stop acting).
    pub async fn lost(&self) {
        let mut rx = self.lost.clone();
        let _ = rx.wait_for(|l| *l).await;
    }
}

/// One etcd call, given at most `timeout` (etcd without a quorum does not
/// answer at all).
pub(crate) async fn bounded<T>(
    what: &'static str,
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ClusterError> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| ClusterError::Timeout { what, timeout })?
        .map_err(|source| ClusterError::Etcd { what, source })
}

/// Renews the lease three times per lease period; marks it lost when etcd
/// says it expired or no renewal succeeded for a whole lease period (it may
/// have expired without our hearing: assume the worst).
async fn keep_alive(
    client: Client,
    lease: i64,
    period: Duration,
    lost: std::sync::Arc<watch::Sender<bool>>,
    renewed: std::sync::Arc<std::sync::Mutex<std::time::Instant>>,
) {
    let every = period / 3;
    let mut stream = None;
    loop {
        if !may_act(false, since_renewal(&renewed), period) {
            tracing::error!(
                lease = format!("{lease:x}"),
                ?period,
                "cluster lease not renewed in time: lost"
            );
            let _ = lost.send(true);
            return;
        }
        if stream.is_none() {
            stream = tokio::time::timeout(every, client.lease_client().keep_alive(lease))
                .await
                .ok()
                .and_then(Result::ok);
        }
        if let Some((keeper, answers)) = stream.as_mut() {
            let answer = tokio::time::timeout(every, async {
                keeper.keep_alive().await?;
                answers.message().await
            })
            .await;
            match answer {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {
                    if let Ok(mut at) = renewed.lock() {
                        *at = std::time::Instant::now();
                    }
                }
                Ok(Ok(Some(_))) => {
                    tracing::error!(
                        lease = format!("{lease:x}"),
                        "etcd says the cluster lease expired: lost"
                    );
                    let _ = lost.send(true);
                    return;
                }
                // A broken stream is opened again on the next round.
                _ => stream = None,
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Follows the election's leader until aborted.
async fn observe(client: Client, election: String, leader: watch::Sender<Option<(String, u64)>>) {
    loop {
        if let Ok(mut stream) = client.election_client().observe(election.clone()).await {
            while let Ok(Some(r)) = stream.message().await {
                if let Some(kv) = r.kv() {
                    let name = kv.value_str().unwrap_or("?").to_string();
                    let generation = kv.create_revision() as u64;
                    leader.send_if_modified(|l| {
                        let new = Some((name.clone(), generation));
                        let changed = *l != new;
                        *l = new;
                        changed
                    });
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_acts_only_within_a_lease_of_its_last_renewal() {
        let lease = Duration::from_secs(2);
        assert!(may_act(false, Duration::from_millis(500), lease));
        // Paused past its lease: the keep-alive has not run yet to say so,
        // the clock does.
        assert!(!may_act(false, Duration::from_secs(5), lease));
        assert!(!may_act(false, lease, lease));
        assert!(!may_act(true, Duration::ZERO, lease));
    }
}
