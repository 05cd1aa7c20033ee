//! Switches and OVSDB servers coming and going: a switch session is bound to
//! its host by datapath id (from the host's OVSDB), and a host whose switch
//! or OVSDB reconnects is read and reconciled afresh.

use super::*;

impl Controller {
    pub(super) fn on_switch_event(&mut self, ev: SwitchEvent) {
        match ev {
            SwitchEvent::Connected(sw) => {
                let dpid = sw.dpid;
                // A datapath id already connected is not swapped for the
                // newcomer: anyone who can reach the OpenFlow port could
                // otherwise take a host's switch over by claiming its id.
                // The newcomer's handle is dropped, which ends its session;
                // a switch that really reconnected is accepted once its old
                // session has ended (closed, or dead by the echo watch).
                if let Some(first) = self.session_of(dpid) {
                    tracing::warn!(
                        dpid = format!("{dpid:016x}"),
                        peer = %sw.peer,
                        connected = %first.peer,
                        "a second connection claims a datapath id already connected: refused"
                    );
                    return;
                }
                match self.host_by_dpid(dpid) {
                    Some(name) => self.attach(&name, sw),
                    // Over TLS a switch of no known datapath whose
                    // certificate is no configured host's is nobody's:
                    // refused now rather than held.
                    None if sw.certificate.as_ref().is_some_and(|names| {
                        !self.hosts.values().any(|h| {
                            h.config
                                .switch_certificate
                                .as_deref()
                                .is_some_and(|c| crate::pki::certifies(names, c))
                        })
                    }) =>
                    {
                        tracing::warn!(dpid = format!("{dpid:016x}"), peer = %sw.peer, certificate = ?sw.certificate,
                            "switch refused: unknown datapath id, and its certificate is no configured host's");
                    }
                    None => {
                        tracing::info!(
                            dpid = format!("{dpid:016x}"),
                            "switch not (yet) known from any host's OVSDB; holding it"
                        );
                        self.unclaimed.insert(dpid, sw);
                    }
                }
            }
            SwitchEvent::Disconnected {
                dpid,
                session,
                reason,
            } => {
                self.unclaimed.retain(|_, s| s.session != session);
                for (name, h) in self.hosts.iter_mut() {
                    if h.switch
                        .as_ref()
                        .is_some_and(|s| s.dpid == dpid && s.session == session)
                    {
                        tracing::warn!(host = %name, %reason, "switch of host disconnected");
                        h.switch = None;
                        h.polling = false;
                        h.reconciling = false;
                        h.applied = 0;
                        h.last_error = Some(reason.clone());
                        for p in h.ports.values_mut() {
                            p.tx = RateEstimator::default();
                            p.rx = RateEstimator::default();
                        }
                    }
                }
            }
            SwitchEvent::PortStatus { dpid, status } => {
                if let Some(name) = self.host_by_dpid(dpid) {
                    let h = self.hosts.get_mut(&name).expect("host exists");
                    let no = status.desc.port_no;
                    if status.reason == PortReason::Delete {
                        h.ports.remove(&no);
                    } else {
                        h.ports.entry(no).or_default().name = status.desc.name.clone();
                    }
                }
            }
            SwitchEvent::FlowRemoved { dpid, removed } => {
                // solive's flows have no timeouts; a removal means someone
                // deleted one: the next resync puts it back.
                tracing::debug!(
                    dpid = format!("{dpid:016x}"),
                    cookie = format!("{:#x}", removed.cookie),
                    "flow removed"
                );
            }
            SwitchEvent::Error { dpid, xid, error } => {
                tracing::warn!(dpid = format!("{dpid:016x}"), xid, error = %crate::switch::describe(&error), "switch reported an error");
            }
        }
    }

    /// The session that holds `dpid` now, attached to a host or held
    /// until a host claims it.
    fn session_of(&self, dpid: u64) -> Option<&SwitchHandle> {
        self.hosts
            .values()
            .filter_map(|h| h.switch.as_ref())
            .chain(self.unclaimed.values())
            .find(|s| s.dpid == dpid)
    }

    pub(super) fn host_by_dpid(&self, dpid: u64) -> Option<String> {
        self.hosts
            .iter()
            .find(|(_, h)| h.info.as_ref().and_then(|i| i.datapath_id) == Some(dpid))
            .map(|(n, _)| n.clone())
    }

    /// Binds a switch session to a host: learn its ports, reinstall its state.
    /// Over TLS, only if the switch's certificate is the one configured for
    /// the host: otherwise the session is dropped (which closes it).
    pub(super) fn attach(&mut self, name: &str, sw: SwitchHandle) {
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        if let (Some(names), Some(expected)) = (&sw.certificate, &h.config.switch_certificate) {
            if !crate::pki::certifies(names, expected) {
                tracing::warn!(host = name, dpid = format!("{:016x}", sw.dpid), peer = %sw.peer,
                    certificate = ?names, expected = %expected,
                    "switch refused: its certificate is not the one configured for the host whose datapath id it claims");
                h.last_error = Some(format!(
                    "a switch at {} claimed this host's datapath id with a certificate for {names:?}, not {expected:?}: refused",
                    sw.peer
                ));
                return;
            }
        }
        tracing::info!(host = name, dpid = format!("{:016x}", sw.dpid), peer = %sw.peer, "switch attached to host");
        h.switch = Some(sw.clone());
        h.applied = 0;
        h.polling = false;
        h.reconciling = false;
        h.last_error = None;
        h.mode = None;
        h.meter_drops.clear();
        h.flow_rates.clear();
        // Port names: from PORT_DESC, merged into the port table as they come;
        // then the meter support, which decides the enforcement mode.
        let handle = self.handle.clone();
        let host = name.to_string();
        tokio::spawn(async move {
            if let Ok(MultipartReplyBody::PortDesc(ports)) = sw
                .multipart("port descriptions", MultipartRequest::port_desc())
                .await
            {
                for desc in ports {
                    let status = crate::openflow::PortStatus {
                        reason: PortReason::Add,
                        desc,
                    };
                    handle.send(Command::Switch(SwitchEvent::PortStatus {
                        dpid: sw.dpid,
                        status,
                    }));
                }
            }
            let support = match sw
                .multipart("meter features", MultipartRequest::meter_features())
                .await
            {
                Ok(MultipartReplyBody::MeterFeatures(f)) => Some(enforce::MeterSupport {
                    max_meter: f.max_meter,
                    drop_band: f.band_types & (1 << crate::openflow::meter::BAND_DROP) != 0,
                }),
                _ => None,
            };
            handle.send(Command::MeterSupport {
                host,
                session: sw.session,
                support,
            });
        });
        self.reconcile(name);
    }

    pub(super) fn on_ovsdb_event(&mut self, name: &str, ev: OvsdbEvent) {
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        match ev {
            OvsdbEvent::Up { client, info } => {
                tracing::info!(host = name, dpid = ?info.datapath_id.map(|d| format!("{d:016x}")), "ovsdb connected and bridge configured");
                h.ovsdb = Some(client);
                h.ovsdb_error = None;
                h.ovsdb_rewrite = true;
                let dpid = info.datapath_id;
                h.info = Some(info);
                if let Some(sw) = dpid.and_then(|d| self.unclaimed.remove(&d)) {
                    self.attach(name, sw);
                }
            }
            OvsdbEvent::Interfaces(ifaces) => {
                if let Some(info) = h.info.as_mut() {
                    info.interfaces = ifaces;
                }
            }
            OvsdbEvent::Down { error } => {
                if h.ovsdb.is_some() {
                    tracing::warn!(host = name, %error, "ovsdb connection lost");
                }
                h.ovsdb = None;
                h.ovsdb_error = Some(error);
            }
        }
    }
}
