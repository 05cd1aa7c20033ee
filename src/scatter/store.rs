//! One intermediary's store: a Redis server, through the `redis` crate's
//! multiplexed tokio connection.
//!
//! The crate is the maintained Redis client for Rust (pipelines, response
//! timeouts, tokio); nothing here needs a protocol feature it lacks, so solive
//! does not speak RESP itself. Every call has a deadline: a store that stops
//! answering (killed, frozen, unreachable) is an error within it, never a
//! hang. A small command gets `timeout`; a batch of chunks gets `timeout` plus
//! the time its bytes take at [`BULK_FLOOR_BPS`], because a batch is megabytes
//! and shares a slow link with other migrations' batches: a fixed few seconds
//! failed a healthy gather when two of them pulled through one 30 Mbit/s
//! link (CI, the two-evacuations test).

use std::future::Future;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use super::chunk::Keys;
use super::ScatterError;

/// The slowest a batch may move, bytes per second, before its store counts as
/// failed: 128 KiB/s, a 2.5 MiB batch in 20 s. Below that a migration through
/// intermediaries is slower than any direct one would be.
pub const BULK_FLOOR_BPS: u64 = 128 * 1024;

pub struct Store {
    pub url: String,
    /// Position of this store in the caller's list (reports, errors).
    pub index: usize,
    con: MultiplexedConnection,
    /// The deadline of a small command.
    timeout: Duration,
}

/// The deadline of a transfer of `bytes`: `base` plus their time at the floor.
pub fn bulk_deadline(base: Duration, bytes: u64) -> Duration {
    base + Duration::from_secs_f64(bytes as f64 / BULK_FLOOR_BPS as f64)
}

impl Store {
    pub async fn connect(
        url: &str,
        index: usize,
        timeout: Duration,
    ) -> Result<Store, ScatterError> {
        let err = |e: redis::RedisError| ScatterError::Store {
            store: url.to_string(),
            message: e.to_string(),
        };
        let client = redis::Client::open(url).map_err(err)?;
        // No response timeout on the connection: each call sets its own
        // deadline (see `within`), sized to what it moves.
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None);
        let con = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(err)?;
        Ok(Store {
            url: url.to_string(),
            index,
            con,
            timeout,
        })
    }

    /// Runs one small command within `timeout`. A command cut short leaves
    /// its reply to arrive later; the multiplexed connection drops it unread.
    async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ScatterError> {
        let mut con = self.con.clone();
        self.within(self.timeout, cmd.query_async(&mut con)).await
    }

    /// Runs one pipeline (a batch) within `deadline`.
    async fn pipe<T: redis::FromRedisValue>(
        &self,
        deadline: Duration,
        pipe: &redis::Pipeline,
    ) -> Result<T, ScatterError> {
        let mut con = self.con.clone();
        self.within(deadline, pipe.query_async(&mut con)).await
    }

    async fn within<T>(
        &self,
        deadline: Duration,
        call: impl Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, ScatterError> {
        match tokio::time::timeout(deadline, call).await {
            Ok(r) => r.map_err(|e| self.err(e)),
            Err(_) => Err(ScatterError::Store {
                store: self.url.clone(),
                message: format!("no answer within {:.1} s", deadline.as_secs_f64()),
            }),
        }
    }

    fn err(&self, e: redis::RedisError) -> ScatterError {
        ScatterError::Store {
            store: self.url.clone(),
            message: e.to_string(),
        }
    }

    /// Writes a batch of encoded chunks and appends their sequence numbers to
    /// the store's index, as one pipeline (one round trip). Returns only when
    /// Redis has answered every command: that answer is the acknowledgement.
    pub async fn write_batch(
        &mut self,
        keys: &Keys,
        batch: &[(u64, Vec<u8>)],
    ) -> Result<(), ScatterError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut p = redis::pipe();
        for (seq, value) in batch {
            p.set(keys.chunk(*seq), value.as_slice());
        }
        p.rpush(
            keys.index(),
            batch.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        );
        // SETs answer "OK" (decoded as ()), RPUSH the list's length.
        let bytes: usize = batch.iter().map(|(_, v)| v.len()).sum();
        let replies: Vec<redis::Value> = self
            .pipe(bulk_deadline(self.timeout, bytes as u64), &p)
            .await?;
        let ok = replies.len() == batch.len() + 1
            && replies[..batch.len()]
                .iter()
                .all(|v| matches!(v, redis::Value::Okay))
            && matches!(replies[batch.len()], redis::Value::Int(_));
        if !ok {
            return Err(ScatterError::Store {
                store: self.url.clone(),
                message: format!("unexpected replies to a batch: {replies:?}"),
            });
        }
        Ok(())
    }

    pub async fn set(&mut self, key: &str, value: &[u8]) -> Result<(), ScatterError> {
        self.cmd::<()>(redis::cmd("SET").arg(key).arg(value)).await
    }

    pub async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, ScatterError> {
        self.cmd(redis::cmd("GET").arg(key)).await
    }

    /// The sequence numbers this store's index holds from position `from` on.
    pub async fn index_from(&mut self, keys: &Keys, from: usize) -> Result<Vec<u64>, ScatterError> {
        self.cmd(redis::cmd("LRANGE").arg(keys.index()).arg(from).arg(-1))
            .await
    }

    /// The byte strings of list `key` from position `from` on.
    pub async fn list_bytes_from(
        &mut self,
        key: &str,
        from: usize,
    ) -> Result<Vec<Vec<u8>>, ScatterError> {
        self.cmd(redis::cmd("LRANGE").arg(key).arg(from).arg(-1))
            .await
    }

    pub async fn rpush_bytes(&mut self, key: &str, value: &[u8]) -> Result<(), ScatterError> {
        self.cmd::<i64>(redis::cmd("RPUSH").arg(key).arg(value))
            .await
            .map(|_| ())
    }

    /// Reads several chunks in one pipeline; a missing key is `None`.
    /// `deadline`: the reader knows how large the chunks are, the store does not.
    pub async fn get_batch(
        &mut self,
        keys: &Keys,
        seqs: &[u64],
        deadline: Duration,
    ) -> Result<Vec<Option<Vec<u8>>>, ScatterError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = redis::pipe();
        for s in seqs {
            p.get(keys.chunk(*s));
        }
        self.pipe(deadline, &p).await
    }

    /// Removes the VM's whole keyspace on this store (SCAN + UNLINK, in
    /// rounds, so a large keyspace never blocks Redis in one command).
    pub async fn clear(&mut self, keys: &Keys) -> Result<u64, ScatterError> {
        let mut cursor: u64 = 0;
        let mut removed = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(keys.pattern())
                .arg("COUNT")
                .arg(1000);
            let (next, found): (u64, Vec<String>) = self.cmd(&scan).await?;
            if !found.is_empty() {
                let n: u64 = self.cmd(redis::cmd("UNLINK").arg(&found)).await?;
                removed += n;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gets_its_bytes_time_at_the_floor_on_top_of_the_base() {
        let base = Duration::from_secs(5);
        assert_eq!(bulk_deadline(base, 0), base);
        // Ten 256 KiB chunks: 20 s at 128 KiB/s.
        assert_eq!(
            bulk_deadline(base, 10 * 256 * 1024),
            Duration::from_secs(25)
        );
    }
}
