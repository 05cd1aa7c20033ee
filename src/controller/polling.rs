//! The controller's period: Algorithm 1 stepped on every link, the
//! enforcement recomputed, every switch polled for its counters (ports,
//! meters, migration flows) and, every `resync_periods` or when the desired
//! state changed, reconciled. The polls and reconciles run in spawned tasks
//! that report back with a [`Command`]; the owner only folds their results in.

use super::*;

impl Controller {
    pub(super) fn on_period(&mut self) {
        self.periods += 1;
        self.step_reservations();
        self.enforce_all();
        // Each host is resynced once every `resync_periods`, the hosts
        // spread over those periods (by their place in the host table) so
        // that a thousand switches are not all read back in one period.
        let every = self.config.controller.resync_periods.max(1);
        let names: Vec<String> = self.hosts.keys().cloned().collect();
        for (i, name) in names.iter().enumerate() {
            self.poll(name);
            if (self.periods + i as u64).is_multiple_of(every) {
                self.reconcile(name);
            }
        }
    }

    /// Starts a port-statistics poll of a host's switch unless one is running.
    pub(super) fn poll(&mut self, name: &str) {
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        let Some(sw) = h.switch.clone() else { return };
        if h.polling {
            return;
        }
        h.polling = true;
        // Meter and migration-flow counters only matter while a reservation
        // touches the host.
        let enforcing = !h.plan.flows.is_empty() || !h.plan.meters.is_empty();
        let handle = self.handle.clone();
        let host = name.to_string();
        tokio::spawn(async move {
            let result = poll_switch(&sw, enforcing).await;
            handle.send(Command::Polled {
                host,
                session: sw.session,
                result,
            });
        });
    }

    pub(super) fn on_polled(
        &mut self,
        name: &str,
        session: u64,
        result: Result<Polled, SwitchError>,
    ) {
        let started = self.started;
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        h.polling = false;
        if h.switch.as_ref().map(|s| s.session) != Some(session) {
            return;
        }
        let Polled {
            ports: stats,
            meters,
            flows,
        } = match result {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(host = name, error = %e, "port statistics poll failed");
                h.last_error = Some(e.to_string());
                return;
            }
        };
        let now = started.elapsed();
        for s in stats {
            let p = h.ports.entry(s.port_no).or_default();
            // The port's own age (duration_sec/nsec) is the better clock: it is
            // taken by the switch when it read the counters, so controller-side
            // scheduling jitter does not distort the rate, and it restarts when
            // the port is re-created.
            let at = if s.duration_sec != u32::MAX && (s.duration_sec, s.duration_nsec) != (0, 0) {
                Duration::new(u64::from(s.duration_sec), s.duration_nsec.min(999_999_999))
            } else {
                now
            };
            p.tx.update(Sample {
                bytes: s.tx_bytes,
                at,
            });
            p.rx.update(Sample {
                bytes: s.rx_bytes,
                at,
            });
            p.tx_bytes = s.tx_bytes;
            p.rx_bytes = s.rx_bytes;
            p.tx_packets = s.tx_packets;
            p.rx_packets = s.rx_packets;
            p.tx_dropped = s.tx_dropped;
            p.rx_dropped = s.rx_dropped;
            let mean = s.rx_bytes.checked_div(s.rx_packets).unwrap_or(0);
            p.rx_drop.update(Sample {
                bytes: s.rx_dropped.saturating_mul(mean),
                at,
            });
        }
        // Meters and flows are replaced on refresh, so their own durations are
        // no clock: the controller's time of the reply is.
        for m in meters {
            let dropped: u64 = m.bands.iter().map(|b| b.byte_band_count).sum();
            let e = h.meter_drops.entry(m.meter_id).or_default();
            e.update(Sample {
                bytes: dropped,
                at: now,
            });
        }
        for f in flows {
            // Open vSwitch pushes datapath counters into its flow table in
            // batches (revalidator passes, ~0.5 s), so one period's delta can
            // hold half or one and a half periods of traffic: smooth it.
            let e = h
                .flow_rates
                .entry(f.cookie)
                .or_insert_with(|| RateEstimator::new(FLOW_RATE_ALPHA));
            e.update(Sample {
                bytes: f.byte_count,
                at: now,
            });
        }
    }

    /// Starts a reconcile of a host's switch, or marks one as wanted if one runs.
    pub(super) fn reconcile(&mut self, name: &str) {
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        let Some(sw) = h.switch.clone() else { return };
        if h.reconciling {
            h.again = true;
            return;
        }
        h.reconciling = true;
        h.again = false;
        let desired = h.desired.clone();
        let generation = h.generation;
        let handle = self.handle.clone();
        let host = name.to_string();
        tokio::spawn(async move {
            let result = reconcile_switch(&sw, &desired).await;
            handle.send(Command::Reconciled {
                host,
                session: sw.session,
                generation,
                result,
            });
        });
    }

    pub(super) fn on_reconciled(
        &mut self,
        name: &str,
        session: u64,
        generation: u64,
        result: Result<usize, SwitchError>,
    ) {
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        h.reconciling = false;
        let current = h.switch.as_ref().map(|s| s.session) == Some(session);
        match result {
            Ok(n) if current => {
                if n > 0 {
                    tracing::info!(host = name, changes = n, "switch state reconciled");
                }
                h.applied = h.applied.max(generation);
                h.last_error = None;
                let (done, waiting): (Vec<_>, Vec<_>) =
                    h.waiters.drain(..).partition(|(g, _)| *g <= generation);
                h.waiters = waiting;
                for (_, r) in done {
                    let _ = r.send(Ok(Applied::Now));
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(host = name, error = %e, "reconcile failed");
                h.last_error = Some(e.to_string());
                // A switch that rejected the change will reject it again: tell
                // the waiters now rather than let them hang until it reconnects.
                if matches!(e, SwitchError::Rejected { .. }) {
                    for (_, r) in h.waiters.drain(..) {
                        let _ = r.send(Err(ControllerError::Switch {
                            host: name.to_string(),
                            source: e.clone(),
                        }));
                    }
                }
            }
        }
        if h.again || (current && h.applied < h.generation && !h.waiters.is_empty()) {
            self.reconcile(name);
        }
    }
}

/// What one poll of a switch brings back.
#[derive(Debug, Default)]
pub struct Polled {
    pub ports: Vec<PortStats>,
    pub meters: Vec<crate::openflow::multipart::MeterStats>,
    /// solive's enforcement flows (the migrations' and background transfers'
    /// byte counters give their rates).
    pub flows: Vec<crate::openflow::multipart::FlowStats>,
}

/// One period's counters from a switch: port statistics, and while it enforces a
/// reservation its meter statistics and migration-flow statistics.
pub async fn poll_switch(sw: &SwitchHandle, enforcing: bool) -> Result<Polled, SwitchError> {
    let mut out = Polled::default();
    match sw
        .multipart(
            "port statistics",
            MultipartRequest::port_stats(crate::openflow::port::ANY),
        )
        .await?
    {
        MultipartReplyBody::PortStats(s) => out.ports = s,
        other => return Err(unexpected(sw, "port statistics", &other)),
    }
    if enforcing {
        match sw
            .multipart(
                "meter statistics",
                MultipartRequest::meter_stats(meter::ALL),
            )
            .await?
        {
            MultipartReplyBody::Meter(s) => out.meters = s,
            other => return Err(unexpected(sw, "meter statistics", &other)),
        }
        // Every solive flow: the migrations' and the background transfers'
        // counters give their rates (the applications' few come along).
        let req = FlowStatsRequest {
            cookie: COOKIE_TAG,
            cookie_mask: COOKIE_TAG_MASK,
            ..FlowStatsRequest::new(TABLE_ALL, Match::new())
        };
        match sw
            .multipart("solive flow statistics", MultipartRequest::flow(req))
            .await?
        {
            MultipartReplyBody::Flow(s) => {
                out.flows = s
                    .into_iter()
                    .filter(|f| f.cookie != reconcile::BASELINE_COOKIE)
                    .collect()
            }
            other => return Err(unexpected(sw, "solive flow statistics", &other)),
        }
    }
    Ok(out)
}

/// Reads a switch's solive flows and meters and sends what differs from
/// `desired`, then a barrier. Returns how many of the messages sent were
/// changes (not refreshes of flows already there, [`reconcile::refreshes`]).
pub async fn reconcile_switch(sw: &SwitchHandle, desired: &Desired) -> Result<usize, SwitchError> {
    let observed = observe(sw).await?;
    let actions = reconcile::plan(desired, &observed);
    let upkeep = reconcile::refreshes(desired, &observed);
    let n = actions.len();
    if n > 0 {
        sw.send_all("reconcile", actions).await?;
    }
    Ok(n - upkeep)
}

async fn observe(sw: &SwitchHandle) -> Result<Observed, SwitchError> {
    let flows = match sw
        .multipart(
            "flow statistics",
            MultipartRequest::flow(FlowStatsRequest {
                cookie: COOKIE_TAG,
                cookie_mask: COOKIE_TAG_MASK,
                ..FlowStatsRequest::new(TABLE_ALL, Match::new())
            }),
        )
        .await?
    {
        MultipartReplyBody::Flow(stats) => stats
            .into_iter()
            .map(|f| ObservedFlow {
                cookie: f.cookie,
                table_id: f.table_id,
                priority: f.priority,
                hard_timeout: f.hard_timeout,
                matches: f.match_,
                instructions: f.instructions,
            })
            .collect(),
        other => return Err(unexpected(sw, "flow statistics", &other)),
    };
    let meters = match sw
        .multipart(
            "meter configuration",
            MultipartRequest::meter_config(meter::ALL),
        )
        .await?
    {
        MultipartReplyBody::MeterConfig(cfgs) => cfgs
            .into_iter()
            .map(|m| ObservedMeter {
                id: m.meter_id,
                flags: m.flags,
                bands: m.bands,
            })
            .collect(),
        other => return Err(unexpected(sw, "meter configuration", &other)),
    };
    Ok(Observed { flows, meters })
}

fn unexpected(sw: &SwitchHandle, what: &'static str, got: &MultipartReplyBody) -> SwitchError {
    SwitchError::UnexpectedReply {
        dpid: sw.dpid,
        what,
        got: format!("{got:?}").chars().take(40).collect(),
    }
}
