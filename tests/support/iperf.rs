//! iperf3 between namespace hosts: a client's per-interval rates, and
//! their mean over a window.

use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use super::NsHost;

pub struct Iperf {
    pub child: std::process::Child,
    pub started: Instant,
}

impl Iperf {
    /// iperf3 client in `from` to `to:port`, JSON output with 0.5 s intervals.
    pub fn start(from: &NsHost, to: &str, port: u16, secs: u32, rate: Option<&str>) -> Iperf {
        let mut args = vec![
            "iperf3".to_string(),
            "-c".into(),
            to.into(),
            "-p".into(),
            port.to_string(),
            "-t".into(),
            secs.to_string(),
            "-i".into(),
            "0.5".into(),
            "-J".into(),
        ];
        if let Some(r) = rate {
            args.extend(["-b".into(), r.into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = from
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Iperf {
            child,
            started: Instant::now(),
        }
    }

    /// (interval end in seconds, Mbit/s) for every interval.
    pub fn finish(self) -> Vec<(f64, f64)> {
        let out = self.child.wait_with_output().unwrap();
        intervals(&out.stdout)
    }

    pub fn stop(mut self) -> Vec<(f64, f64)> {
        // SIGINT makes iperf3 print its JSON report before exiting.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = &mut self.child;
        self.finish()
    }
}

/// (interval end in seconds, Mbit/s) for every interval of iperf3's JSON
/// report (`-J`); none if it is not one.
pub fn intervals(json: &[u8]) -> Vec<(f64, f64)> {
    let v: Value = serde_json::from_slice(json).unwrap_or(Value::Null);
    v["intervals"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    let s = &i["sum"];
                    (
                        s["end"].as_f64().unwrap_or(0.0),
                        s["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Mean Mbit/s of the intervals ending within [from, to] seconds.
pub fn mean(iv: &[(f64, f64)], from: f64, to: f64) -> f64 {
    let sel: Vec<f64> = iv
        .iter()
        .filter(|(t, _)| *t > from && *t <= to)
        .map(|(_, r)| *r)
        .collect();
    assert!(!sel.is_empty(), "no intervals in ({from}, {to}]: {iv:?}");
    sel.iter().sum::<f64>() / sel.len() as f64
}

/// The applications' mean share (percent of the link) under reservation
/// `view` (`GET /v1/reservations/ID`) from `from` to `to` seconds after it
/// was created: 100 less each period's `reserve_pct` in that window (a point
/// holds until the next period; Algorithm 1 moves it, releasing what the
/// migration leaves unused for a period, then taking it back). Panics with
/// fewer than 5 periods in the window.
pub fn app_share_pct(view: &Value, from: f64, to: f64) -> f64 {
    let in_force: Vec<f64> = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            let t = p["t_ms"].as_f64().unwrap() / 1000.0;
            t >= from && t < to
        })
        .map(|p| p["reserve_pct"].as_f64().unwrap())
        .collect();
    assert!(
        in_force.len() >= 5,
        "too few periods in [{from}, {to}): {view}"
    );
    in_force.iter().map(|r| 100.0 - r).sum::<f64>() / in_force.len() as f64
}
