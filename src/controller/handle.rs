//! How the rest of solive talks to the controller task: a [`Command`] on its
//! channel, and for those that need an answer a `oneshot` to wait on. The
//! handle is cheap to clone; every method is bounded by the owner's answer
//! (which never awaits network I/O itself).

use super::*;

/// Everything the controller can be asked to do. One enum, handled in one place.
#[derive(Debug)]
pub enum Command {
    Hosts(Reply<Vec<HostView>>),
    Host(String, Reply<Option<HostView>>),
    Desired(String, Reply<Result<Desired, ControllerError>>),
    PutMeter(String, MeterSpec, Reply<Result<Applied, ControllerError>>),
    DeleteMeter(String, u32, Reply<Result<Applied, ControllerError>>),
    PutFlow(String, FlowSpec, Reply<Result<Applied, ControllerError>>),
    DeleteFlow(String, u64, Reply<Result<Applied, ControllerError>>),
    /// Gives the current OVSDB client of a host, for typed OVSDB work (QoS,
    /// policing) that does not belong in the owner's loop.
    Ovsdb(String, Reply<Result<Client, ControllerError>>),
    /// Removes every reservation solive made (meters, flows other than the
    /// baseline, owned QoS rows) and stops the controller.
    Shutdown(Reply<()>),
    // Reports from the controller's own tasks.
    Switch(SwitchEvent),
    OvsdbEvent(String, OvsdbEvent),
    Polled {
        host: String,
        session: u64,
        result: Result<Polled, SwitchError>,
    },
    CreateReservation(
        reservation::ReservationRequest,
        Reply<Result<ReservationView, ControllerError>>,
    ),
    Reservations(Reply<Vec<ReservationView>>),
    Metrics(Reply<view::MetricsSnapshot>),
    Reservation(u64, Reply<Option<ReservationView>>),
    DeleteReservation(u64, Reply<Result<(), ControllerError>>),
    /// A reservation, live or ended, with its `state`.
    ReservationRecord(u64, Reply<Option<serde_json::Value>>),
    /// The hypervisor's own measure of a reservation's migration rate.
    ReportMigration(u64, reservation::MigrationReport),
    /// A background transfer starts ([`background`]); answers it as held.
    StartBackground(
        background::BackgroundRequest,
        Reply<Result<background::Background, ControllerError>>,
    ),
    StopBackground(u32),
    Background(u32, Reply<Option<background::Background>>),
    /// The switch's meter support is known: decide the host's enforcement mode.
    MeterSupport {
        host: String,
        session: u64,
        support: Option<enforce::MeterSupport>,
    },
    /// An OVSDB enforcement (queue mode) was written, or failed.
    OvsdbApplied {
        host: String,
        applied: Option<(Vec<enforce::PortQos>, Vec<enforce::Policing>)>,
        error: Option<String>,
    },
    Reconciled {
        host: String,
        session: u64,
        generation: u64,
        result: Result<usize, SwitchError>,
    },
}

/// A cloneable handle to the controller task.
#[derive(Debug, Clone)]
pub struct ControllerHandle {
    pub(super) tx: mpsc::UnboundedSender<Command>,
}

impl ControllerHandle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ControllerError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| ControllerError::Stopped)?;
        rx.await.map_err(|_| ControllerError::Stopped)
    }

    pub async fn create_reservation(
        &self,
        req: reservation::ReservationRequest,
    ) -> Result<ReservationView, ControllerError> {
        self.ask(|r| Command::CreateReservation(req, r)).await?
    }

    pub async fn reservations(&self) -> Result<Vec<ReservationView>, ControllerError> {
        self.ask(Command::Reservations).await
    }

    pub async fn reservation(&self, id: u64) -> Result<Option<ReservationView>, ControllerError> {
        self.ask(|r| Command::Reservation(id, r)).await
    }

    /// A reservation with its `state` (`active`, `released`, or
    /// `interrupted` when the controller stopped while it was active),
    /// including those of earlier runs when a state directory is configured.
    pub async fn reservation_record(
        &self,
        id: u64,
    ) -> Result<Option<serde_json::Value>, ControllerError> {
        self.ask(|r| Command::ReservationRecord(id, r)).await
    }

    /// Releases a reservation: its flows, meters, queues and policing go.
    pub async fn delete_reservation(&self, id: u64) -> Result<(), ControllerError> {
        self.ask(|r| Command::DeleteReservation(id, r)).await?
    }

    /// Reports the migration rate the hypervisor measured (libvirt job stats)
    /// for a reservation: Algorithm 1 uses it as `mig` while it is fresh,
    /// since the switch's flow counters lag behind (OVS updates them in
    /// revalidator batches) and miss migrations on unexpected ports.
    ///
    /// Its remaining bytes decide its part of a link it shares with other
    /// migrations, and its needed rate the floor of that part ([`link`]).
    pub fn report_migration(&self, id: u64, report: reservation::MigrationReport) {
        let _ = self.tx.send(Command::ReportMigration(id, report));
    }

    /// Starts a background transfer: each period it gets part of the room on
    /// its host's uplink, held by a meter where the host is in meter mode
    /// (`enforced` in the answer). Stopped by [`Self::stop_background`]
    /// (the [`BackgroundLease`] does it when dropped).
    pub async fn start_background(
        &self,
        req: background::BackgroundRequest,
    ) -> Result<BackgroundLease, ControllerError> {
        let b = self.ask(|r| Command::StartBackground(req, r)).await??;
        Ok(BackgroundLease {
            handle: self.clone(),
            held: b,
        })
    }

    pub fn stop_background(&self, id: u32) {
        let _ = self.tx.send(Command::StopBackground(id));
    }

    /// A background transfer with its share at the last period.
    pub async fn background(
        &self,
        id: u32,
    ) -> Result<Option<background::Background>, ControllerError> {
        self.ask(|r| Command::Background(id, r)).await
    }

    /// The figures `/metrics` exports.
    pub async fn metrics(&self) -> Result<view::MetricsSnapshot, ControllerError> {
        self.ask(Command::Metrics).await
    }

    pub async fn hosts(&self) -> Result<Vec<HostView>, ControllerError> {
        self.ask(Command::Hosts).await
    }

    pub async fn host(&self, name: &str) -> Result<Option<HostView>, ControllerError> {
        self.ask(|r| Command::Host(name.to_string(), r)).await
    }

    pub async fn desired(&self, host: &str) -> Result<Desired, ControllerError> {
        self.ask(|r| Command::Desired(host.to_string(), r)).await?
    }

    /// Creates or changes a meter on a host's bridge; returns once the switch
    /// applied it (or immediately if the switch is not connected).
    pub async fn put_meter(&self, host: &str, m: MeterSpec) -> Result<Applied, ControllerError> {
        self.ask(|r| Command::PutMeter(host.to_string(), m, r))
            .await?
    }

    pub async fn delete_meter(&self, host: &str, id: u32) -> Result<Applied, ControllerError> {
        self.ask(|r| Command::DeleteMeter(host.to_string(), id, r))
            .await?
    }

    /// Creates or changes a flow; its cookie must carry [`reconcile::COOKIE_TAG`].
    pub async fn put_flow(&self, host: &str, f: FlowSpec) -> Result<Applied, ControllerError> {
        self.ask(|r| Command::PutFlow(host.to_string(), f, r))
            .await?
    }

    pub async fn delete_flow(&self, host: &str, cookie: u64) -> Result<Applied, ControllerError> {
        self.ask(|r| Command::DeleteFlow(host.to_string(), cookie, r))
            .await?
    }

    pub async fn ovsdb(&self, host: &str) -> Result<Client, ControllerError> {
        self.ask(|r| Command::Ovsdb(host.to_string(), r)).await?
    }

    /// Installs a linux-htb QoS with the given queues on a port of a host's
    /// bridge (rows tagged as solive's, removed on shutdown).
    pub async fn set_port_qos(
        &self,
        host: &str,
        port: &str,
        max_rate_bps: u64,
        queues: &[(u32, vswitch::QueueConfig)],
    ) -> Result<(), ControllerError> {
        let client = self.ovsdb(host).await?;
        vswitch::set_htb_qos(&client, port, max_rate_bps, queues, OVSDB_OWNER)
            .await
            .map(|_| ())
            .map_err(|source| ControllerError::Ovsdb {
                host: host.to_string(),
                source,
            })
    }

    /// Cleans up and stops the controller. Safe to call more than once.
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
    }

    pub(crate) fn send(&self, cmd: Command) {
        let _ = self.tx.send(cmd);
    }
}

/// A background transfer in force; stopped when dropped.
#[derive(Debug)]
pub struct BackgroundLease {
    handle: ControllerHandle,
    /// As it was when it started.
    pub held: background::Background,
}

impl BackgroundLease {
    /// Its share now, bit/s (None until the first period, or if the
    /// controller has gone).
    pub async fn rate_bps(&self) -> Option<f64> {
        self.handle
            .background(self.held.id)
            .await
            .ok()
            .flatten()
            .and_then(|b| b.rate_bps)
    }
}

impl Drop for BackgroundLease {
    fn drop(&mut self) {
        self.handle.stop_background(self.held.id);
    }
}
