//! `GET /metrics`: Prometheus (OpenMetrics text) figures, built from one
//! snapshot of the controller's state per scrape.

use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{ApiError, AppState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EvacuationLabel {
    id: String,
    source: String,
    destination: String,
}

/// Finished evacuations exported besides the running ones: enough for a
/// dashboard's recent history without growing the series without bound.
const RECENT_FINISHED: usize = 10;

type F64 = Gauge<f64, AtomicU64>;

pub async fn get(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let m = s.controller.metrics().await?;
    let mut reg = Registry::with_prefix("solive");
    let per_host = |reg: &mut Registry,
                    name: &str,
                    help: &str,
                    value: &dyn Fn(&crate::controller::HostMetrics) -> f64| {
        let fam = Family::<HostLabel, F64>::default();
        for h in &m.hosts {
            fam.get_or_create(&HostLabel {
                host: h.host.clone(),
            })
            .set(value(h));
        }
        reg.register(name, help, fam);
    };
    per_host(
        &mut reg,
        "host_connected",
        "1 when the host's ovsdb-server and switch are connected",
        &|h| f64::from(u8::from(h.connected)),
    );
    per_host(
        &mut reg,
        "host_reserved_percent",
        "Bandwidth reserved for migrations, percent of capacity",
        &|h| h.reserved_pct,
    );
    per_host(
        &mut reg,
        "host_used_percent",
        "Traffic leaving the uplink, percent of capacity",
        &|h| h.used_pct,
    );
    per_host(
        &mut reg,
        "host_migration_bits_per_second",
        "Migration traffic on the host",
        &|h| h.migration_bps,
    );
    per_host(
        &mut reg,
        "host_application_bits_per_second",
        "Application traffic leaving the uplink",
        &|h| h.application_bps,
    );
    let gauge = |reg: &mut Registry, name: &str, help: &str, v: f64| {
        let g = F64::default();
        g.set(v);
        reg.register(name, help, g);
    };
    gauge(
        &mut reg,
        "switches_connected",
        "Switches with an OpenFlow session",
        m.switches_connected as f64,
    );
    gauge(
        &mut reg,
        "reservations",
        "Reservations in force",
        m.reservations as f64,
    );
    gauge(
        &mut reg,
        "period_seconds",
        "The controller's own work in the last period",
        m.period_seconds,
    );
    evacuations(&mut reg, &s.evacuations.list());
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &reg)
        .map_err(|e| ApiError::Unavailable(format!("cannot encode metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    ))
}

fn evacuations(reg: &mut Registry, all: &[crate::evacuation::EvacuationRecord]) {
    let now_ms = crate::clock::unix_ms();
    let finished: Vec<_> = all.iter().filter(|r| r.state.finished()).collect();
    let shown = all
        .iter()
        .filter(|r| !r.state.finished())
        .chain(finished.iter().rev().take(RECENT_FINISHED).copied());
    let (total, done, running, elapsed) = (
        Family::<EvacuationLabel, F64>::default(),
        Family::<EvacuationLabel, F64>::default(),
        Family::<EvacuationLabel, F64>::default(),
        Family::<EvacuationLabel, F64>::default(),
    );
    for r in shown {
        let l = EvacuationLabel {
            id: r.id.to_string(),
            source: r.request.source.clone(),
            destination: r.request.destination.clone(),
        };
        total.get_or_create(&l).set(r.vms.len() as f64);
        done.get_or_create(&l).set(r.done() as f64);
        running
            .get_or_create(&l)
            .set(f64::from(u8::from(!r.state.finished())));
        let ms = r
            .ended_ms
            .unwrap_or_else(|| now_ms.saturating_sub(r.created_unix_ms));
        elapsed.get_or_create(&l).set(ms as f64 / 1000.0);
    }
    reg.register("evacuation_vms", "VMs the evacuation moves", total);
    reg.register("evacuation_vms_done", "VMs migrated so far", done);
    reg.register("evacuation_running", "1 while the evacuation runs", running);
    reg.register(
        "evacuation_elapsed_seconds",
        "Time since the evacuation started (to its end once finished)",
        elapsed,
    );
}
