//! Running a migration through intermediaries (paper section V-B): the
//! `solive scatter push` relay on the source host, `solive scatter gather` on
//! the destination host, each started with the host's `exec` prefix (ssh in
//! a datacenter, `ip netns exec` on the testbed), and libvirt pointed at the
//! push relay (see `crate::scatter` for the data path and its limits).
//!
//! The relays are child processes killed on drop: a runner that fails or is
//! cancelled leaves none behind, and a killed push closes the source QEMU's
//! connection, which fails the migration with the VM still on the source.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Child;

/// How one host is reached for scatter-gather.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostScatter {
    /// Command prefix that runs a program on the host (empty: here).
    pub exec: Vec<String>,
    /// The host's store, `redis://IP:PORT`, if it can be an intermediary.
    pub store: Option<String>,
}

/// `[scatter]` and the hosts' part of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterSettings {
    pub hosts: BTreeMap<String, HostScatter>,
    /// The solive binary on the hosts.
    pub solive: PathBuf,
    pub batch: usize,
    pub chunk_kib: usize,
    /// Automatic choice: go through the stores when the destination's
    /// shortfall exceeds this share of the source's reservation, percent.
    pub shortfall_pct: f64,
    pub relay_port: u16,
}

impl Default for ScatterSettings {
    fn default() -> Self {
        ScatterSettings {
            hosts: BTreeMap::new(),
            solive: PathBuf::from("solive"),
            batch: 10,
            chunk_kib: 256,
            shortfall_pct: 20.0,
            relay_port: 49300,
        }
    }
}

impl ScatterSettings {
    /// The hosts that can be intermediaries between `source` and
    /// `destination`, by name.
    pub fn candidates(&self, source: &str, destination: &str) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|(n, h)| h.store.is_some() && *n != source && *n != destination)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The store URLs of `intermediaries` (all known to have one).
    pub fn stores(&self, intermediaries: &[String]) -> Vec<String> {
        intermediaries
            .iter()
            .filter_map(|i| self.hosts.get(i).and_then(|h| h.store.clone()))
            .collect()
    }

    /// The port of the stores (the first one's; they are expected alike).
    pub fn store_port(&self, stores: &[String]) -> Option<u16> {
        stores
            .first()
            .and_then(|s| s.rsplit(':').next())
            .and_then(|p| p.trim_end_matches('/').parse().ok())
    }
}

/// The two relay command lines of one VM's migration (pure).
#[derive(Debug, Clone, PartialEq)]
pub struct RelayPlan {
    pub push: Vec<String>,
    pub gather: Vec<String>,
    /// Where the source QEMU connects and the destination QEMU listens.
    pub port: u16,
}

pub fn relay_plan(
    s: &ScatterSettings,
    vm: &str,
    source: &str,
    destination: &str,
    stores: &[String],
    port: u16,
) -> RelayPlan {
    let addr = format!("127.0.0.1:{port}");
    let common = |mut v: Vec<String>| {
        v.extend(["--vm".into(), vm.to_string()]);
        for st in stores {
            v.extend(["--store".into(), st.clone()]);
        }
        v.extend(["--batch".into(), s.batch.to_string()]);
        v
    };
    let exec = |host: &str| {
        s.hosts
            .get(host)
            .map(|h| h.exec.clone())
            .unwrap_or_default()
    };
    let solive = s.solive.display().to_string();
    let mut push = exec(source);
    push.extend([solive.clone(), "scatter".into(), "push".into()]);
    let mut push = common(push);
    push.extend([
        "--listen".into(),
        addr.clone(),
        "--chunk-kib".into(),
        s.chunk_kib.to_string(),
    ]);
    let mut gather = exec(destination);
    gather.extend([solive, "scatter".into(), "gather".into()]);
    let mut gather = common(gather);
    gather.extend(["--connect".into(), addr]);
    RelayPlan { push, gather, port }
}

/// The running relays of one migration.
#[derive(Debug)]
pub struct Relays {
    push: Child,
    gather: Child,
}

impl Relays {
    pub fn start(plan: &RelayPlan) -> Result<Relays, String> {
        let push = crate::child::spawn(&plan.push, "scatter push")?;
        let gather = crate::child::spawn(&plan.gather, "scatter gather")?;
        Ok(Relays { push, gather })
    }

    /// Waits for both to exit (at most `grace`; then they are killed) and
    /// returns their JSON reports, or what went wrong with each.
    pub async fn finish(
        self,
        grace: Duration,
    ) -> (
        Result<serde_json::Value, String>,
        Result<serde_json::Value, String>,
    ) {
        let collect = |c: Child, what: &'static str| async move {
            match tokio::time::timeout(grace, c.wait_with_output()).await {
                Err(_) => Err(format!("{what} did not end within {grace:?}")),
                Ok(Err(e)) => Err(format!("{what}: {e}")),
                Ok(Ok(out)) => {
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    let report = stdout
                        .lines()
                        .rev()
                        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
                    match (out.status.success(), report) {
                        (true, Some(r)) => Ok(r),
                        _ => {
                            let err = String::from_utf8_lossy(&out.stderr);
                            let last = err.lines().rev().find(|l| !l.trim().is_empty());
                            Err(format!(
                                "{what} failed ({}): {}",
                                out.status,
                                last.unwrap_or("no message")
                            ))
                        }
                    }
                }
            }
        };
        tokio::join!(
            collect(self.push, "scatter push"),
            collect(self.gather, "scatter gather")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ScatterSettings {
        let mut s = ScatterSettings {
            solive: "/opt/solive".into(),
            ..ScatterSettings::default()
        };
        for (h, store) in [
            ("src", None),
            ("dst", None),
            ("i1", Some("redis://10.0.0.3:6379")),
            ("i2", Some("redis://10.0.0.4:6379")),
        ] {
            s.hosts.insert(
                h.into(),
                HostScatter {
                    exec: vec!["ip".into(), "netns".into(), "exec".into(), h.into()],
                    store: store.map(String::from),
                },
            );
        }
        s
    }

    #[test]
    fn relays_run_on_their_hosts_with_every_store() {
        let s = settings();
        assert_eq!(s.candidates("src", "dst"), vec!["i1", "i2"]);
        assert_eq!(s.candidates("src", "i1"), vec!["i2"]);
        let stores = s.stores(&["i1".into(), "i2".into()]);
        assert_eq!(s.store_port(&stores), Some(6379));
        let p = relay_plan(&s, "vm1", "src", "dst", &stores, 49301);
        assert_eq!(
            p.push.join(" "),
            "ip netns exec src /opt/solive scatter push --vm vm1 --store redis://10.0.0.3:6379 \
             --store redis://10.0.0.4:6379 --batch 10 --listen 127.0.0.1:49301 --chunk-kib 256"
        );
        assert_eq!(
            p.gather.join(" "),
            "ip netns exec dst /opt/solive scatter gather --vm vm1 --store redis://10.0.0.3:6379 \
             --store redis://10.0.0.4:6379 --batch 10 --connect 127.0.0.1:49301"
        );
    }

    #[tokio::test]
    async fn a_relay_that_fails_reports_its_last_words() {
        let plan = RelayPlan {
            push: vec![
                "sh".into(),
                "-c".into(),
                "echo '{\"eviction_ms\": 5}'".into(),
            ],
            gather: vec![
                "sh".into(),
                "-c".into(),
                "echo oops >&2; echo boom >&2; exit 3".into(),
            ],
            port: 1,
        };
        let (push, gather) = Relays::start(&plan)
            .unwrap()
            .finish(Duration::from_secs(5))
            .await;
        assert_eq!(push.unwrap()["eviction_ms"], 5);
        let e = gather.unwrap_err();
        assert!(
            e.starts_with("scatter gather failed") && e.ends_with("boom"),
            "{e}"
        );
        let missing = RelayPlan {
            push: vec!["/nonexistent/solive".into()],
            ..plan
        };
        assert!(Relays::start(&missing)
            .unwrap_err()
            .contains("cannot run /nonexistent/solive"));
    }
}
