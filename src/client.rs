//! The operator's side of the REST API: the `solive hosts`, `solive
//! reservations`, `solive status`, `solive evacuate` and `solive
//! evacuations` commands. Errors from the server are
//! shown as their message (`{"error": {"message": ...}}`), not as a stack.

use std::fmt::Write as _;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach solive at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("solive answered {status}: {message}")]
    Server { status: u16, message: String },
    #[error("solive's answer was cut off")]
    Body(#[source] reqwest::Error),
    #[error("solive sent something that is not JSON")]
    NotJson,
    #[error("the CA certificate cannot be used: {0}")]
    Ca(#[source] reqwest::Error),
}

/// A client of one solive API.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::new(),
        }
    }

    /// A client of an HTTPS API whose certificate is signed by the CA in
    /// `ca_pem` (e.g. a self-signed one), besides the public roots.
    pub fn with_ca(
        base: &str,
        token: Option<String>,
        ca_pem: &[u8],
    ) -> Result<Client, ClientError> {
        let ca = reqwest::Certificate::from_pem(ca_pem).map_err(ClientError::Ca)?;
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .map_err(ClientError::Ca)?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let r = req
            .send()
            .await
            .map_err(|source| ClientError::Connect { url, source })?;
        let status = r.status();
        // 204 has no body.
        let text = r.text().await.map_err(ClientError::Body)?;
        let v: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|_| ClientError::NotJson)?
        };
        if !status.is_success() {
            let message = v["error"]["message"]
                .as_str()
                .unwrap_or("(no message)")
                .to_string();
            return Err(ClientError::Server {
                status: status.as_u16(),
                message,
            });
        }
        Ok(v)
    }
}

fn mbps(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |b| format!("{:.1}", b / 1e6))
}

/// `solive hosts`: one line per host, then its ports.
pub fn hosts_table(hosts: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<9} {:<16} {:<8} {:<6} {:>10} {:>10}",
        "HOST", "CONNECTED", "DPID", "DATAPATH", "MODE", "UP TX Mb/s", "UP RX Mb/s"
    );
    for h in hosts.as_array().into_iter().flatten() {
        let uplink = h["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["uplink"] == true);
        let _ = writeln!(
            out,
            "{:<10} {:<9} {:<16} {:<8} {:<6} {:>10} {:>10}",
            h["name"].as_str().unwrap_or("?"),
            if h["connected"] == true { "yes" } else { "no" },
            h["dpid"].as_str().unwrap_or("-"),
            h["datapath_type"].as_str().unwrap_or("-"),
            h["enforcement"]["mode"].as_str().unwrap_or("-"),
            uplink.map_or("-".into(), |p| mbps(&p["tx_bps"])),
            uplink.map_or("-".into(), |p| mbps(&p["rx_bps"])),
        );
        if let Some(e) = h["error"].as_str() {
            let _ = writeln!(out, "    error: {e}");
        }
        for p in h["ports"].as_array().into_iter().flatten() {
            let vm = p["vm"]["vm_id"]
                .as_str()
                .map(|v| format!(" vm={v}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    port {:>10} {:<12} tx {:>7} rx {:>7} Mb/s{}{}",
                p["port_no"].to_string(),
                p["name"].as_str().unwrap_or(""),
                mbps(&p["tx_bps"]),
                mbps(&p["rx_bps"]),
                if p["uplink"] == true { " uplink" } else { "" },
                vm
            );
        }
    }
    out
}

/// `solive reservations`.
pub fn reservations_table(rs: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<4} {:<10} {:<10} {:>7} {:>9} {:<8} {:>13}",
        "ID", "SOURCE", "DEST", "URGENCY", "RESERVE %", "STARTED", "SHORTFALL Mb/s"
    );
    for r in rs.as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<4} {:<10} {:<10} {:>7} {:>9} {:<8} {:>13}",
            // serde_json's Display ignores widths: format as strings first.
            r["id"].to_string(),
            r["source"].as_str().unwrap_or("?"),
            r["destination"].as_str().unwrap_or("?"),
            r["urgency"].to_string(),
            r["reserve_pct"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.1}")),
            if r["started"] == true { "yes" } else { "no" },
            mbps(&r["destination_shortfall_bps"]),
        );
    }
    out
}

fn ms(v: &Value) -> String {
    v.as_u64()
        .map_or("-".into(), |ms| format!("{:.1}", ms as f64 / 1000.0))
}

/// A request with several sources, as one (`GET /v1/evacuation-groups/{id}`):
/// every VM's route and course beside the forecast of all sources together.
pub fn group_summary(g: &Value) -> String {
    let mut out = String::new();
    let secs = |v: &Value| v.as_f64().map_or("-".into(), |s| format!("{s:.1}"));
    let _ = writeln!(
        out,
        "group {}: {}, {}/{} VMs moved",
        g["group"],
        g["state"].as_str().unwrap_or("?"),
        g["vms_done"],
        g["vms_total"]
    );
    let _ = writeln!(
        out,
        "{:<12} {:<16} {:<9} {:>9} {:>9} {:>11} {:>9}",
        "VM", "ROUTE", "STATE", "START s", "END s", "FORECAST s", "NOW s"
    );
    for v in g["vms"].as_array().into_iter().flatten() {
        let route = format!(
            "{}->{}",
            v["source"].as_str().unwrap_or("?"),
            v["destination"].as_str().unwrap_or("?")
        );
        let _ = writeln!(
            out,
            "{:<12} {:<16} {:<9} {:>9} {:>9} {:>11} {:>9}",
            v["name"].as_str().unwrap_or("?"),
            route,
            v["state"].as_str().unwrap_or("?"),
            secs(&v["started_s"]),
            secs(&v["ended_s"]),
            format!(
                "{}..{}",
                secs(&v["predicted_start_s"]),
                secs(&v["predicted_end_s"])
            ),
            // Its end by the forecast re-made each period, until it ends.
            secs(&v["current_end_s"])
        );
    }
    let f = &g["forecast"];
    if f.is_object() {
        let _ = writeln!(
            out,
            "forecast of all sources together (made {} s after the request): last end at {} s",
            secs(&f["made_at_s"]),
            secs(&f["end_s"])
        );
        at_risk_lines(&mut out, "at risk", &f["at_risk"]);
    }
    let c = &g["current"];
    if c.is_object() && g["state"] == "running" {
        let _ = writeln!(
            out,
            "re-made at {} s from what has happened: last end at {} s",
            secs(&c["made_at_s"]),
            secs(&c["end_s"])
        );
        at_risk_lines(&mut out, "now at risk", &c["at_risk"]);
    }
    if let Some(a) = g["accuracy"].as_object() {
        let _ = writeln!(
            out,
            "migration times against the forecast: median error {}%, worst {}% ({} VMs)",
            secs(&a["median_pct"]),
            secs(&a["worst_pct"]),
            a["migrations"]
        );
    }
    if let Some(ms) = g["total_migration_ms"].as_u64() {
        let _ = writeln!(out, "total migration time {:.1} s", ms as f64 / 1000.0);
    }
    out
}

/// A forecast's VMs at risk (`list`: its `at_risk`), one line each.
fn at_risk_lines(out: &mut String, label: &str, list: &Value) {
    for r in list.as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {label}: {} ({})",
            r["name"].as_str().unwrap_or("?"),
            r["reason"].as_str().unwrap_or("")
        );
    }
}

/// `solive evacuations`: one line per evacuation.
pub fn evacuations_table(list: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<4} {:<10} {:<10} {:<12} {:>7} {:>9} {:>10}",
        "ID", "SOURCE", "DEST", "STATE", "VMS", "TOTAL s", "EVICTION s"
    );
    for r in list["evacuations"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<4} {:<10} {:<10} {:<12} {:>7} {:>9} {:>10}",
            r["id"].to_string(),
            r["source"].as_str().unwrap_or("?"),
            r["destination"].as_str().unwrap_or("?"),
            r["state"].as_str().unwrap_or("?"),
            format!("{}/{}", r["vms_done"], r["vms_total"]),
            ms(&r["total_migration_ms"]),
            ms(&r["eviction_ms"]),
        );
    }
    out
}

/// Progress of one VM as a bar of `width` cells.
fn bar(v: &Value, width: usize) -> String {
    let fraction = match v["state"].as_str() {
        Some("done") => 1.0,
        Some("migrating") | Some("postcopy") => {
            let p = &v["progress"];
            let (done, total) = (
                p["data_processed"].as_f64().unwrap_or(0.0),
                p["data_total"].as_f64().unwrap_or(0.0),
            );
            if total > 0.0 {
                (done / total).min(1.0)
            } else {
                0.0
            }
        }
        _ => 0.0,
    };
    let full = (fraction * width as f64).round() as usize;
    format!(
        "[{}{}] {:>3.0}%",
        "#".repeat(full),
        ".".repeat(width - full),
        fraction * 100.0
    )
}

/// `solive evacuate --watch`: one line per VM with its bar; also the shape of
/// `solive evacuations ID`.
pub fn evacuation_progress(r: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "evacuation {} {} -> {}: {}",
        r["id"],
        r["request"]["source"].as_str().unwrap_or("?"),
        r["request"]["destination"].as_str().unwrap_or("?"),
        r["state"].as_str().unwrap_or("?"),
    );
    for v in r["vms"].as_array().into_iter().flatten() {
        let cap = v["cap_mibs"]
            .as_u64()
            .map(|c| format!(" cap {c} MiB/s"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<12} {:<9} {}{}",
            v["name"].as_str().unwrap_or("?"),
            v["state"].as_str().unwrap_or("?"),
            bar(v, 30),
            cap
        );
    }
    out
}

/// The table an evacuation ends with.
pub fn evacuation_summary(r: &Value) -> String {
    let mut out = String::new();
    if let Some(plan) = r["plan"]["vms"].as_array() {
        let _ = writeln!(out, "order (solive's plan):");
        for p in plan {
            let _ = writeln!(
                out,
                "  {:<12} {:<9} {}",
                p["name"].as_str().unwrap_or("?"),
                p["group"].as_str().unwrap_or("?"),
                p["reason"].as_str().unwrap_or("")
            );
        }
    }
    let _ = writeln!(
        out,
        "{:<12} {:<9} {:>8} {:>8} {:>11} {:>10} {:>9}",
        "VM", "STATE", "START s", "TIME s", "DOWNTIME ms", "MiB", "AVG Mb/s"
    );
    for v in r["vms"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<12} {:<9} {:>8} {:>8} {:>11} {:>10} {:>9}",
            v["name"].as_str().unwrap_or("?"),
            v["state"].as_str().unwrap_or("?"),
            ms(&v["started_ms"]),
            ms(&v["duration_ms"]),
            v["downtime_ms"]
                .as_u64()
                .map_or("-".into(), |d| d.to_string()),
            v["bytes"]
                .as_f64()
                .map_or("-".into(), |b| format!("{:.1}", b / 1_048_576.0)),
            mbps(&v["avg_bps"]),
        );
        for st in v["stalls"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "    {}", stall_line(st));
        }
        if let Some(e) = v["error"].as_str() {
            let _ = writeln!(out, "    error: {e}");
        }
    }
    let _ = writeln!(
        out,
        "state {}; total migration time {} s; eviction time {} s",
        r["state"].as_str().unwrap_or("?"),
        ms(&r["total_migration_ms"]),
        ms(&r["eviction_ms"]),
    );
    if let Some(left) = r["left_on_source"].as_array().filter(|l| !l.is_empty()) {
        let names: Vec<&str> = left.iter().filter_map(Value::as_str).collect();
        let _ = writeln!(out, "still on the source: {}", names.join(", "));
    }
    out
}

/// One stall of a pre-copy migration, as the summary shows it.
fn stall_line(st: &Value) -> String {
    let what = match (st["action"].as_str(), st["downtime_limit_ms"].as_u64()) {
        (Some("downtime"), Some(ms)) => format!("downtime limit raised to {ms} ms"),
        (Some("postcopy"), _) => "switched to post-copy".into(),
        (Some("abort"), _) => "aborted".into(),
        _ => "left as it was".into(),
    };
    let failed = st["error"]
        .as_str()
        .map_or(String::new(), |e| format!(" (failed: {e})"));
    format!(
        "stalled at {} s, pass {} ({:.1} MiB dirtied per pass at {} Mb/s): {what}{failed}",
        ms(&st["at_ms"]),
        st["iteration"].as_u64().unwrap_or(0),
        st["dirty_set"].as_f64().unwrap_or(0.0) / 1_048_576.0,
        mbps(&serde_json::json!(st["rate_bps"].as_f64().map(|b| b * 8.0))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_render_what_the_api_returns() {
        let hosts = serde_json::json!([{"name": "h1", "connected": true, "dpid": "00000000000000aa", "datapath_type": "netdev",
            "enforcement": {"mode": "meter"}, "error": null,
            "ports": [{"port_no": 1, "name": "up0", "uplink": true, "tx_bps": 5e7, "rx_bps": null, "vm": null},
                      {"port_no": 2, "name": "vm1p", "uplink": false, "tx_bps": 1e6, "rx_bps": 2e6, "vm": {"vm_id": "vm1"}}]}]);
        let t = hosts_table(&hosts);
        assert!(
            t.contains("h1") && t.contains("yes") && t.contains("meter") && t.contains("50.0"),
            "{t}"
        );
        assert!(t.contains("vm=vm1") && t.contains(" uplink"), "{t}");
        let rs = serde_json::json!([{"id": 3, "source": "a", "destination": "b", "urgency": 75.0, "reserve_pct": 80.5,
            "started": false, "destination_shortfall_bps": 0.0}]);
        let t = reservations_table(&rs);
        assert!(t.contains("80.5") && t.contains("75"), "{t}");
    }

    #[test]
    fn evacuation_views() {
        let r = serde_json::json!({"id": 2, "state": "migrating", "request": {"source": "h1", "destination": "h2"},
            "plan": {"vms": [{"name": "a", "group": "outgoing", "reason": "sends more"}]},
            "vms": [{"name": "a", "state": "migrating", "cap_mibs": 9,
                     "progress": {"data_processed": 50, "data_total": 100}, "started_ms": 1500,
                     "stalls": [{"at_ms": 30500, "iteration": 7, "dirty_set": 16777216, "remaining": 16777216,
                                 "rate_bps": 3145728, "action": "downtime", "downtime_limit_ms": 6667}]},
                    {"name": "b", "state": "failed", "error": "libvirt: boom", "downtime_ms": null}],
            "total_migration_ms": null, "eviction_ms": null, "left_on_source": ["b"]});
        let p = evacuation_progress(&r);
        assert!(p.contains("h1 -> h2: migrating"), "{p}");
        assert!(
            p.contains("###############...............]  50%") && p.contains("cap 9 MiB/s"),
            "{p}"
        );
        let s = evacuation_summary(&r);
        assert!(
            s.contains("sends more") && s.contains("error: libvirt: boom"),
            "{s}"
        );
        assert!(
            s.contains("stalled at 30.5 s, pass 7 (16.0 MiB dirtied per pass at 25.2 Mb/s): downtime limit raised to 6667 ms"),
            "{s}"
        );
        assert!(
            s.contains("still on the source: b") && s.contains("1.5"),
            "{s}"
        );
        let l = serde_json::json!({"evacuations": [{"id": 1, "source": "h1", "destination": "h2", "state": "done",
            "vms_done": 2, "vms_total": 2, "total_migration_ms": 12345, "eviction_ms": 12345}]});
        let t = evacuations_table(&l);
        assert!(t.contains("2/2") && t.contains("12.3"), "{t}");
        let g = serde_json::json!({"group": 4, "state": "done", "vms_total": 2, "vms_done": 2,
            "total_migration_ms": 96100,
            "vms": [{"name": "a1", "source": "s1", "destination": "d1", "state": "done",
                     "started_s": 1.5, "ended_s": 48.0, "predicted_start_s": 1.4, "predicted_end_s": 46.3}],
            "forecast": {"made_at_s": 1.4, "end_s": 92.6,
                         "at_risk": [{"name": "b2", "reason": "predicted to end at 93 s, after the deadline (70 s)"}]},
            "accuracy": {"migrations": 2, "median_pct": 4.25, "worst_pct": 6.0}});
        let t = group_summary(&g);
        for needle in [
            "group 4: done, 2/2 VMs moved",
            "s1->d1",
            "1.4..46.3",
            "last end at 92.6 s",
            "at risk: b2 (predicted to end at 93 s",
            "median error 4.2%, worst 6.0% (2 VMs)",
            "total migration time 96.1 s",
        ] {
            assert!(t.contains(needle), "{needle}: {t}");
        }
        assert!(!t.contains("re-made"), "{t}");
        // While it runs: the re-made forecast beside the up-front one.
        let g = serde_json::json!({"group": 4, "state": "running", "vms_total": 2, "vms_done": 1,
            "vms": [{"name": "b2", "source": "s2", "destination": "d1", "state": "migrating",
                     "started_s": 50.0, "predicted_start_s": 46.3, "predicted_end_s": 70.1,
                     "current_end_s": 88.4}],
            "forecast": {"made_at_s": 1.4, "end_s": 70.1},
            "current": {"made_at_s": 61.0, "end_s": 88.4,
                        "at_risk": [{"name": "b2", "reason": "predicted to end at 88 s, after the deadline (80 s)"}]}});
        let t = group_summary(&g);
        for needle in [
            "46.3..70.1      88.4",
            "re-made at 61.0 s from what has happened: last end at 88.4 s",
            "now at risk: b2 (predicted to end at 88 s",
        ] {
            assert!(t.contains(needle), "{needle}: {t}");
        }
    }
}
