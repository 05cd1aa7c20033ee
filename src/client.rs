//! The operator's side of the REST API: the `solive hosts`, `solive
//! reservations` and `solive status` commands. Errors from the server are
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
    #[error("solive sent something that is not JSON")]
    Body(#[source] reqwest::Error),
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

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let r = req
            .send()
            .await
            .map_err(|source| ClientError::Connect { url, source })?;
        let status = r.status();
        let v: Value = r.json().await.map_err(ClientError::Body)?;
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
}
