//! Persistence: reservations, evacuations, idempotent answers, disk caches
//! and what the model learned survive a restart, kept in one
//! SQLite file (`[state] dir`/solive.db). SQLite because it is embedded (no
//! server to run beside the controller), crash-safe with its journal, and
//! enough for records written about once a second. A cluster keeps the same
//! records in etcd instead (`crate::cluster::state`), behind the same
//! [`Store`] handle: the [`Backing`] is the one thing that differs.
//!
//! Records are JSON documents keyed by kind and id: the API's own shapes,
//! so what a client read before a restart reads the same after it.
//! Writes go through one writer thread fed by a channel, so the controller's
//! and runners' async tasks never wait on the disk; reads happen once, at
//! start-up, before anything writes.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rusqlite::{params, Connection};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {dir}: {source}")]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// Kinds of record.
pub const RESERVATION: &str = "reservation";
pub const EVACUATION: &str = "evacuation";
/// A disk cache (`crate::cache`), keyed by its VM's name's hash.
pub const CACHE: &str = "cache";
/// What the migration-time model learned (`crate::predict::learn`): one
/// record, id 0.
pub const LEARNED: &str = "learned";

enum Op {
    Put {
        kind: &'static str,
        id: u64,
        body: String,
    },
    Idempotent(Idempotent),
    Flush(std::sync::mpsc::Sender<()>),
}

/// Where the writer thread puts records. Errors are logged by the writer,
/// never returned to the controller: a full disk or a refused write must not
/// stop migrations.
pub trait Backing: Send + 'static {
    /// Stores (or replaces) a record.
    fn put(&mut self, kind: &str, id: u64, body: &str) -> Result<(), String>;
    /// Stores an idempotent answer unless one is stored under its key.
    fn put_idempotent(&mut self, i: &Idempotent) -> Result<(), String>;
}

/// A handle to the store (cheap to clone). Writes are queued; `flush` waits
/// for them.
#[derive(Debug, Clone)]
pub struct Store {
    tx: mpsc::Sender<Op>,
    path: PathBuf,
    fence: Fence,
}

/// Whether the controller holding the store may still act ([`Store::fenced`]).
#[derive(Clone, Default)]
struct Fence(Option<std::sync::Arc<dyn Fn() -> bool + Send + Sync>>);

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "fenced"
        } else {
            "unfenced"
        })
    }
}

/// What was stored when the controller last ran.
#[derive(Debug, Default)]
pub struct Loaded {
    pub reservations: Vec<serde_json::Value>,
    pub evacuations: Vec<serde_json::Value>,
    pub caches: Vec<serde_json::Value>,
    pub learned: Option<serde_json::Value>,
    pub idempotent: Vec<Idempotent>,
}

/// The first answer to a request made with an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq)]
pub struct Idempotent {
    pub key: String,
    /// Method, path and body of the request, so a key reused for another
    /// request is refused rather than answered with the wrong result.
    pub request: String,
    pub status: u16,
    pub body: String,
}

impl Store {
    /// Opens (creating if needed) `dir/solive.db`, loads what it holds and
    /// starts the writer thread.
    pub fn open(dir: &Path) -> Result<(Store, Loaded), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("solive.db");
        let db = |source| StoreError::Db {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(db)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS records (
                 kind TEXT NOT NULL, id INTEGER NOT NULL, body TEXT NOT NULL,
                 updated_unix_ms INTEGER NOT NULL, PRIMARY KEY (kind, id));
             CREATE TABLE IF NOT EXISTS idempotency (
                 key TEXT PRIMARY KEY, request TEXT NOT NULL, status INTEGER NOT NULL, body TEXT NOT NULL,
                 created_unix_ms INTEGER NOT NULL);",
        )
        .map_err(db)?;
        let loaded = load(&conn).map_err(db)?;
        let store = Store::with_backing(conn, path).map_err(|source| StoreError::Dir {
            dir: dir.to_path_buf(),
            source,
        })?;
        Ok((store, loaded))
    }

    /// Starts the writer thread over `backing`; `path` names it in logs.
    pub fn with_backing(backing: impl Backing, path: PathBuf) -> std::io::Result<Store> {
        let (tx, rx) = mpsc::channel();
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("solive-store".into())
            .spawn(move || writer(backing, rx, thread_path))?;
        Ok(Store {
            tx,
            path,
            fence: Fence::default(),
        })
    }

    /// The store of a controller that may stop leading (a cluster's
    /// leader): `acting` says whether it still may act. etcd refuses a
    /// deposed leader's writes by itself; what it cannot refuse is an
    /// action on a host (a migration started, a disk committed), so those
    /// ask [`Store::may_act`] first.
    pub fn fenced(mut self, acting: impl Fn() -> bool + Send + Sync + 'static) -> Store {
        self.fence = Fence(Some(std::sync::Arc::new(acting)));
        self
    }

    /// Whether the controller may act on its hosts now (always, outside a
    /// cluster).
    pub fn may_act(&self) -> bool {
        self.fence.0.as_ref().is_none_or(|f| f())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores (or replaces) a record.
    pub fn put(&self, kind: &'static str, id: u64, value: &impl serde::Serialize) {
        match serde_json::to_string(value) {
            Ok(body) => {
                let _ = self.tx.send(Op::Put { kind, id, body });
            }
            Err(e) => tracing::error!(kind, id, error = %e, "cannot serialise a record"),
        }
    }

    /// Remembers the answer to a request with an `Idempotency-Key`.
    pub fn put_idempotent(&self, i: &Idempotent) {
        let _ = self.tx.send(Op::Idempotent(i.clone()));
    }

    /// Waits until every queued write is on disk.
    pub async fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Op::Flush(tx)).is_ok() {
            let _ = tokio::task::spawn_blocking(move || rx.recv()).await;
        }
    }
}

fn load(conn: &Connection) -> rusqlite::Result<Loaded> {
    let mut out = Loaded::default();
    let mut st = conn.prepare("SELECT kind, body FROM records ORDER BY kind, id")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (kind, body) = row?;
        let Ok(v) = serde_json::from_str(&body) else {
            tracing::warn!(kind, "skipping a stored record that is not JSON");
            continue;
        };
        match kind.as_str() {
            RESERVATION => out.reservations.push(v),
            EVACUATION => out.evacuations.push(v),
            CACHE => out.caches.push(v),
            LEARNED => out.learned = Some(v),
            _ => {}
        }
    }
    let mut st = conn.prepare("SELECT key, request, status, body FROM idempotency")?;
    let rows = st.query_map([], |r| {
        Ok(Idempotent {
            key: r.get(0)?,
            request: r.get(1)?,
            status: r.get(2)?,
            body: r.get(3)?,
        })
    })?;
    for row in rows {
        out.idempotent.push(row?);
    }
    Ok(out)
}

impl Backing for Connection {
    fn put(&mut self, kind: &str, id: u64, body: &str) -> Result<(), String> {
        self.execute(
            "INSERT INTO records (kind, id, body, updated_unix_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, id) DO UPDATE SET body = ?3, updated_unix_ms = ?4",
            params![kind, id as i64, body, crate::clock::unix_ms() as i64],
        )
        .map(drop)
        .map_err(|e| e.to_string())
    }

    fn put_idempotent(&mut self, i: &Idempotent) -> Result<(), String> {
        self.execute(
            "INSERT OR IGNORE INTO idempotency (key, request, status, body, created_unix_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                i.key,
                i.request,
                i.status,
                i.body,
                crate::clock::unix_ms() as i64
            ],
        )
        .map(drop)
        .map_err(|e| e.to_string())
    }
}

fn writer(mut backing: impl Backing, rx: mpsc::Receiver<Op>, path: PathBuf) {
    // Ends when every Store handle is gone.
    while let Ok(op) = rx.recv() {
        let r = match op {
            Op::Put { kind, id, body } => backing.put(kind, id, &body),
            Op::Idempotent(i) => backing.put_idempotent(&i),
            Op::Flush(done) => {
                let _ = done.send(());
                Ok(())
            }
        };
        if let Err(error) = r {
            // A full disk must not stop migrations; the log says what was lost.
            tracing::error!(path = %path.display(), %error, "cannot write to the state store");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, loaded) = Store::open(dir.path()).unwrap();
            assert!(loaded.evacuations.is_empty());
            store.put(
                EVACUATION,
                1,
                &serde_json::json!({"id": 1, "state": "migrating"}),
            );
            store.put(
                EVACUATION,
                1,
                &serde_json::json!({"id": 1, "state": "done"}),
            );
            store.put(RESERVATION, 4, &serde_json::json!({"id": 4}));
            store.put(CACHE, 7, &serde_json::json!({"status": {"vm": "disk"}}));
            store.put(LEARNED, 0, &serde_json::json!({"samples": 3}));
            let first = Idempotent {
                key: "k1".into(),
                request: "POST /v1/evacuations {}".into(),
                status: 201,
                body: "{\"id\":1}".into(),
            };
            store.put_idempotent(&first);
            store.put_idempotent(&Idempotent {
                status: 500,
                ..first.clone()
            });
            store.flush().await;
        }
        let (_, loaded) = Store::open(dir.path()).unwrap();
        assert_eq!(
            loaded.evacuations,
            vec![serde_json::json!({"id": 1, "state": "done"})]
        );
        assert_eq!(loaded.reservations.len(), 1);
        assert_eq!(loaded.caches.len(), 1);
        assert_eq!(loaded.learned, Some(serde_json::json!({"samples": 3})));
        assert_eq!(loaded.idempotent.len(), 1);
        assert_eq!(loaded.idempotent[0].status, 201, "the first answer stays");
    }

    #[test]
    fn an_unusable_directory_is_a_clear_error() {
        let e = Store::open(Path::new("/proc/solive-cannot-be-here")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("state directory /proc/solive-cannot-be-here"),
            "{e}"
        );
    }
}
