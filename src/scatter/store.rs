//! One intermediary's store: a Redis server, through the `redis` crate's
//! multiplexed tokio connection.
//!
//! The crate is the maintained Redis client for Rust (pipelines, response
//! timeouts, tokio); nothing here needs a protocol feature it lacks, so solive
//! does not speak RESP itself. Every call has a response timeout: a store that
//! stops answering (killed, frozen, unreachable) is an error within
//! `timeout`, never a hang.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use super::chunk::Keys;
use super::ScatterError;

pub struct Store {
    pub url: String,
    /// Position of this store in the caller's list (reports, errors).
    pub index: usize,
    con: MultiplexedConnection,
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
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let con = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(err)?;
        Ok(Store {
            url: url.to_string(),
            index,
            con,
        })
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
        let replies: Vec<redis::Value> = p
            .query_async(&mut self.con)
            .await
            .map_err(|e| self.err(e))?;
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
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async::<()>(&mut self.con)
            .await
            .map_err(|e| self.err(e))
    }

    pub async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, ScatterError> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.con)
            .await
            .map_err(|e| self.err(e))
    }

    /// The sequence numbers this store's index holds from position `from` on.
    pub async fn index_from(&mut self, keys: &Keys, from: usize) -> Result<Vec<u64>, ScatterError> {
        redis::cmd("LRANGE")
            .arg(keys.index())
            .arg(from)
            .arg(-1)
            .query_async(&mut self.con)
            .await
            .map_err(|e| self.err(e))
    }

    /// The byte strings of list `key` from position `from` on.
    pub async fn list_bytes_from(
        &mut self,
        key: &str,
        from: usize,
    ) -> Result<Vec<Vec<u8>>, ScatterError> {
        redis::cmd("LRANGE")
            .arg(key)
            .arg(from)
            .arg(-1)
            .query_async(&mut self.con)
            .await
            .map_err(|e| self.err(e))
    }

    pub async fn rpush_bytes(&mut self, key: &str, value: &[u8]) -> Result<(), ScatterError> {
        redis::cmd("RPUSH")
            .arg(key)
            .arg(value)
            .query_async::<i64>(&mut self.con)
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Reads several chunks in one pipeline; a missing key is `None`.
    pub async fn get_batch(
        &mut self,
        keys: &Keys,
        seqs: &[u64],
    ) -> Result<Vec<Option<Vec<u8>>>, ScatterError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = redis::pipe();
        for s in seqs {
            p.get(keys.chunk(*s));
        }
        p.query_async(&mut self.con).await.map_err(|e| self.err(e))
    }

    /// Removes the VM's whole keyspace on this store (SCAN + UNLINK, in
    /// rounds, so a large keyspace never blocks Redis in one command).
    pub async fn clear(&mut self, keys: &Keys) -> Result<u64, ScatterError> {
        let mut cursor: u64 = 0;
        let mut removed = 0u64;
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(keys.pattern())
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.con)
                .await
                .map_err(|e| self.err(e))?;
            if !found.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&found)
                    .query_async(&mut self.con)
                    .await
                    .map_err(|e| self.err(e))?;
                removed += n;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}
