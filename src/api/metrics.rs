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
