//! The cluster's records in etcd: what `[state]` keeps in SQLite (the API's
//! JSON documents of reservations and evacuations, and idempotent answers),
//! under `PREFIX/records/KIND/ID` and `PREFIX/idempotency/KEY`.
//!
//! Every write is a transaction that first checks the leader key still
//! exists with this leader's creation revision. A replica that lost its
//! lease (paused, cut off) and has not noticed yet therefore cannot
//! overwrite what the new leader writes: etcd refuses it, and the refusal
//! deposes the replica at once ([`super::Member::deposed`]).

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::{ClusterError, Leadership};
use crate::store::{Backing, Idempotent, Loaded, CACHE, EVACUATION, LEARNED, RESERVATION};

fn records(prefix: &str) -> String {
    format!("{prefix}/records/")
}

fn idempotency(prefix: &str) -> String {
    format!("{prefix}/idempotency/")
}

/// Ids are zero-padded so etcd's key order is the records' order.
fn record_key(prefix: &str, kind: &str, id: u64) -> String {
    format!("{}{kind}/{id:020}", records(prefix))
}

/// Reads every record, as [`crate::store::Store::open`] does from SQLite.
pub async fn load(
    client: &Client,
    prefix: &str,
    timeout: Duration,
) -> Result<Loaded, ClusterError> {
    let get = |key: String| {
        let mut kv = client.kv_client();
        async move {
            let options = GetOptions::new().with_prefix();
            super::bounded("reading the state", timeout, kv.get(key, Some(options))).await
        }
    };
    let mut out = Loaded::default();
    let base = records(prefix);
    for kv in get(base.clone()).await?.kvs() {
        let key = kv.key_str().unwrap_or_default();
        let kind = key.strip_prefix(&base).and_then(|k| k.split('/').next());
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(kv.value()) else {
            tracing::warn!(key, "skipping a stored record that is not JSON");
            continue;
        };
        match kind {
            Some(RESERVATION) => out.reservations.push(v),
            Some(EVACUATION) => out.evacuations.push(v),
            Some(CACHE) => out.caches.push(v),
            Some(LEARNED) => out.learned = Some(v),
            _ => {}
        }
    }
    let base = idempotency(prefix);
    for kv in get(base.clone()).await?.kvs() {
        let key = kv.key_str().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(kv.value()).unwrap_or_default();
        let (Some(request), Some(status), Some(body)) = (
            v["request"].as_str(),
            v["status"].as_u64(),
            v["body"].as_str(),
        ) else {
            tracing::warn!(key, "skipping a stored idempotent answer that is not one");
            continue;
        };
        out.idempotent.push(Idempotent {
            key: key.strip_prefix(&base).unwrap_or(key).to_string(),
            request: request.into(),
            status: status as u16,
            body: body.into(),
        });
    }
    Ok(out)
}

/// The store's writer over etcd (runs on the store's thread, with its own
/// small runtime so the controller's never waits on etcd).
pub struct EtcdBacking {
    rt: tokio::runtime::Runtime,
    client: Client,
    prefix: String,
    fence: Leadership,
    timeout: Duration,
    deposed: Box<dyn Fn() + Send>,
}

impl EtcdBacking {
    pub fn new(
        client: Client,
        prefix: &str,
        fence: Leadership,
        timeout: Duration,
        deposed: impl Fn() + Send + 'static,
    ) -> std::io::Result<EtcdBacking> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(EtcdBacking {
            rt,
            client,
            prefix: prefix.to_string(),
            fence,
            timeout,
            deposed: Box::new(deposed),
        })
    }

    /// Runs `ops` if this replica still leads.
    fn fenced(&mut self, ops: Vec<TxnOp>) -> Result<(), String> {
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                self.fence.key.clone(),
                CompareOp::Equal,
                self.fence.generation as i64,
            )])
            .and_then(ops);
        let mut kv = self.client.kv_client();
        let answer = self
            .rt
            .block_on(async { tokio::time::timeout(self.timeout, kv.txn(txn)).await });
        match answer {
            Err(_) => Err(format!("etcd did not answer within {:?}", self.timeout)),
            Ok(Err(e)) => Err(format!("etcd: {e}")),
            Ok(Ok(r)) if r.succeeded() => Ok(()),
            Ok(Ok(_)) => {
                (self.deposed)();
                Err("etcd refused the write: this replica no longer leads".into())
            }
        }
    }
}

impl Backing for EtcdBacking {
    fn put(&mut self, kind: &str, id: u64, body: &str) -> Result<(), String> {
        let key = record_key(&self.prefix, kind, id);
        self.fenced(vec![TxnOp::put(key, body, None)])
    }

    fn put_idempotent(&mut self, i: &Idempotent) -> Result<(), String> {
        let key = format!("{}{}", idempotency(&self.prefix), i.key);
        let value = serde_json::json!({"request": i.request, "status": i.status, "body": i.body});
        // The first answer stays, as in SQLite's INSERT OR IGNORE.
        let if_absent = Txn::new()
            .when(vec![Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(key, value.to_string(), None)]);
        self.fenced(vec![TxnOp::txn(if_absent)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_sort_as_ids() {
        let a = record_key("/s", RESERVATION, 9);
        let b = record_key("/s", RESERVATION, 10);
        assert!(a < b, "{a} {b}");
        assert!(a.starts_with("/s/records/reservation/"));
    }
}
