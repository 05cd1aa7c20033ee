//! QEMU's own management protocol (QMP), for testbeds without libvirt, and
//! the typed parsers of the QMP replies that the libvirt driver also reads
//! (through `virDomainQemuMonitorCommand`, for what the `virt` crate lacks:
//! dirty-rate measurement, the post-copy switch, cancelling).
//!
//! * [`reply`], [`DirtyRate`], [`MigrationInfo`]: pure parsers of QMP
//!   replies, tested on replies captured from QEMU 7.2.
//! * [`QmpClient`]: a small async client over a unix socket (greeting,
//!   `qmp_capabilities`, commands with an `id`, asynchronous events set aside).
//! * [`Qmp`]: the [`Hypervisor`] for bare QEMU. Its VMs are the QMP sockets in
//!   one directory, one per VM, named after the file (`vm1.qmp` or `vm1.sock`
//!   is VM `vm1`; a file without either suffix is named as it is).
//!
//! What the QMP driver does not do: start the destination QEMU. Whatever runs
//! the QEMU processes must start it with `-incoming tcp:IP:PORT` (matching
//! `MigrateOptions::migrate_uri`, which for QEMU reads `tcp:IP:PORT`), and must
//! quit the source QEMU after a migration completed (QEMU leaves it paused in
//! `postmigrate`). `MigrateOptions::dest_uri` is not a libvirt URI here: it is
//! either empty or `unix:PATH` of the destination QEMU's QMP socket. Post-copy
//! needs the `postcopy-ram` capability on both ends, so with `postcopy: true`
//! the destination's socket is required; without it, the driver still turns
//! the capability off on the destination when it is given (a capability stays
//! set in QEMU, and a mismatch makes the migration fail at once).
//!
//! A QMP socket started as `-qmp unix:PATH,server=on,wait=off` serves one
//! client at a time (others wait in the listen backlog), so every operation
//! opens its own connection and closes it at once; a running `migrate` polls
//! `query-migrate` on a fresh connection each time, which lets `progress`,
//! `set_max_speed`, `start_postcopy` and `abort` in between.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio_util::codec::{FramedRead, FramedWrite, LinesCodec};

use super::{
    Hypervisor, HypervisorError, MigrateOptions, MigrationProgress, MigrationStats, VmInfo,
    VmMeasurement,
};

/// Errors of the QMP layer.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum QmpError {
    #[error("QMP socket: {0}")]
    Io(String),
    #[error("QMP protocol: {0}")]
    Protocol(String),
    /// QEMU answered with an error object.
    #[error("QEMU refused {command}: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QEMU did not answer {0} in time")]
    Timeout(String),
}

/// The `return` value of one QMP reply (`{"return": ...}`), or its error
/// (`{"error": {"class", "desc"}}`) as [`QmpError::Command`].
pub fn reply(command: &str, text: &str) -> Result<Value, QmpError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| QmpError::Protocol(format!("reply to {command} is not JSON: {e}")))?;
    reply_value(command, v)
}

fn reply_value(command: &str, mut v: Value) -> Result<Value, QmpError> {
    if let Some(e) = v.get("error") {
        let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        return Err(QmpError::Command {
            command: command.to_string(),
            class: field("class"),
            desc: field("desc"),
        });
    }
    match v.get_mut("return") {
        Some(r) => Ok(r.take()),
        None => Err(QmpError::Protocol(format!(
            "reply to {command} has neither return nor error"
        ))),
    }
}

/// The QMP command text for `command` with optional arguments (what
/// `virDomainQemuMonitorCommand` takes).
pub fn command_text(command: &str, arguments: Option<Value>) -> String {
    match arguments {
        Some(a) => json!({"execute": command, "arguments": a}).to_string(),
        None => json!({"execute": command}).to_string(),
    }
}

/// Pages QEMU samples per GiB when measuring the dirty rate: its maximum.
/// With the default (512) a 128 MiB guest is judged on 64 pages, and a guest
/// rewriting 16 MiB measured 6 MiB/s; with 4096 it measured 13-14 MiB/s.
pub const DIRTY_SAMPLE_PAGES: u64 = 4096;

/// The `calc-dirty-rate` arguments solive uses: page sampling (the default
/// mode). The `dirty-bitmap` mode crashes QEMU 7.2 under TCG (segfault,
/// measured on the testbed), and `dirty-ring` needs KVM's dirty ring.
pub fn calc_dirty_rate_args(window: Duration) -> Value {
    json!({"calc-time": calc_secs(window), "sample-pages": DIRTY_SAMPLE_PAGES})
}

/// QEMU 7.2 measures over whole seconds (`calc-time`); at least one.
pub fn calc_secs(window: Duration) -> u64 {
    window.as_secs_f64().round().max(1.0) as u64
}

/// A `query-dirty-rate` reply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DirtyRate {
    /// No measurement was started.
    Unstarted,
    Measuring,
    /// Dirtied memory, MiB/s (QEMU's unit, an integer: less than 1 MiB/s
    /// reads 0).
    Measured {
        mib_per_sec: u64,
    },
}

impl DirtyRate {
    pub fn from_return(v: &Value) -> Result<DirtyRate, QmpError> {
        let status = v
            .get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| QmpError::Protocol("query-dirty-rate: no status".into()))?;
        match status {
            "unstarted" => Ok(DirtyRate::Unstarted),
            "measuring" => Ok(DirtyRate::Measuring),
            "measured" => {
                let r = v.get("dirty-rate").and_then(Value::as_i64).ok_or_else(|| {
                    QmpError::Protocol("query-dirty-rate: measured without dirty-rate".into())
                })?;
                Ok(DirtyRate::Measured {
                    mib_per_sec: r.max(0) as u64,
                })
            }
            other => Err(QmpError::Protocol(format!(
                "query-dirty-rate: unknown status {other:?}"
            ))),
        }
    }

    /// 4 KiB pages per second.
    pub fn pages_per_sec(self) -> Option<f64> {
        match self {
            DirtyRate::Measured { mib_per_sec } => Some(mib_per_sec as f64 * 256.0),
            _ => None,
        }
    }
}

/// A `query-migrate` reply (the fields solive reads; others are ignored).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct MigrationInfo {
    /// Empty when no migration ever ran.
    pub status: String,
    pub error_desc: Option<String>,
    /// ms
    pub total_time: Option<u64>,
    /// ms, once completed
    pub downtime: Option<u64>,
    pub expected_downtime: Option<u64>,
    pub setup_time: Option<u64>,
    pub ram: Option<RamInfo>,
}

/// `query-migrate`'s `ram` object.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RamInfo {
    /// Bytes sent so far.
    pub transferred: u64,
    pub remaining: u64,
    pub total: u64,
    /// Zero pages (sent as a flag only).
    pub duplicate: u64,
    /// Pages sent in full (a page re-dirtied and sent again counts again).
    pub normal: u64,
    pub normal_bytes: u64,
    /// Mbit/s
    pub mbps: f64,
    /// Pages per second.
    pub dirty_pages_rate: u64,
    /// Passes over memory: 1 during the first, 2 once it is done.
    pub dirty_sync_count: u64,
    pub page_size: u64,
    pub postcopy_requests: u64,
}

impl MigrationInfo {
    pub fn from_return(v: &Value) -> Result<MigrationInfo, QmpError> {
        MigrationInfo::deserialize(v)
            .map_err(|e| QmpError::Protocol(format!("query-migrate reply: {e}")))
    }

    /// A migration runs (also while it is being cancelled).
    pub fn is_running(&self) -> bool {
        matches!(
            self.status.as_str(),
            "setup"
                | "active"
                | "pre-switchover"
                | "device"
                | "postcopy-active"
                | "postcopy-paused"
                | "postcopy-recover"
                | "cancelling"
                | "wait-unplug"
        )
    }

    pub fn progress(&self) -> MigrationProgress {
        let ram = self.ram.clone().unwrap_or_default();
        MigrationProgress {
            data_processed: ram.transferred,
            data_remaining: ram.remaining,
            data_total: ram.total,
            mem_bps: (ram.mbps * 1e6 / 8.0) as u64,
            mem_dirty_rate: ram.dirty_pages_rate,
            mem_iteration: ram.dirty_sync_count,
            ..MigrationProgress::default()
        }
    }

    pub fn stats(&self) -> MigrationStats {
        MigrationStats {
            downtime_ms: self.downtime,
            bytes: self.ram.as_ref().map(|r| r.transferred),
            time_ms: self.total_time,
            disk_bytes: None,
        }
    }
}

/// How long one QMP command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// A QMP line longer than this is a protocol error (replies are a few KiB).
const MAX_LINE: usize = 1 << 20;

/// One QMP connection.
pub struct QmpClient {
    rx: FramedRead<OwnedReadHalf, LinesCodec>,
    tx: FramedWrite<OwnedWriteHalf, LinesCodec>,
    next_id: u64,
    /// Asynchronous events received while waiting for replies (the last 64).
    pub events: VecDeque<Value>,
}

impl QmpClient {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub async fn connect(path: &Path) -> Result<QmpClient, QmpError> {
        let s = tokio::time::timeout(COMMAND_TIMEOUT, UnixStream::connect(path))
            .await
            .map_err(|_| QmpError::Timeout("connect".into()))?
            .map_err(|e| QmpError::Io(format!("{}: {e}", path.display())))?;
        let (r, w) = s.into_split();
        let mut c = QmpClient {
            rx: FramedRead::new(r, LinesCodec::new_with_max_length(MAX_LINE)),
            tx: FramedWrite::new(w, LinesCodec::new()),
            next_id: 1,
            events: VecDeque::new(),
        };
        let greeting = c.read("the greeting").await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!("no QMP greeting: {greeting}")));
        }
        c.execute("qmp_capabilities", None).await?;
        Ok(c)
    }

    async fn read(&mut self, what: &str) -> Result<Value, QmpError> {
        let line = tokio::time::timeout(COMMAND_TIMEOUT, self.rx.next())
            .await
            .map_err(|_| QmpError::Timeout(what.to_string()))?
            .ok_or_else(|| QmpError::Io(format!("QEMU closed the socket before {what}")))?
            .map_err(|e| QmpError::Io(e.to_string()))?;
        serde_json::from_str(&line).map_err(|e| QmpError::Protocol(format!("{e}: {line}")))
    }

    /// Runs one command and returns its `return` value. Events that arrive
    /// first are kept in `events`; replies to other ids are dropped (there are
    /// none: one command is in flight at a time).
    pub async fn execute(&mut self, command: &str, args: Option<Value>) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"execute": command, "id": id});
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        self.tx
            .send(msg.to_string())
            .await
            .map_err(|e| QmpError::Io(e.to_string()))?;
        loop {
            let v = self.read(command).await?;
            if v.get("event").is_some() {
                if self.events.len() == 64 {
                    self.events.pop_front();
                }
                self.events.push_back(v);
                continue;
            }
            if v.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            return reply_value(command, v);
        }
    }
}

/// The QMP driver: one directory of QMP sockets, one per VM.
#[derive(Debug, Clone)]
pub struct Qmp {
    pub dir: PathBuf,
}

/// How often `migrate` polls `query-migrate`.
const POLL: Duration = Duration::from_millis(250);

impl Qmp {
    pub fn new(dir: impl Into<PathBuf>) -> Qmp {
        Qmp { dir: dir.into() }
    }

    fn err(&self, vm: &str, e: impl std::fmt::Display) -> HypervisorError {
        HypervisorError::Vm {
            uri: self.dir.display().to_string(),
            vm: vm.to_string(),
            message: e.to_string(),
        }
    }

    /// The socket of `vm`: `NAME.qmp`, `NAME.sock` or `NAME` in the directory.
    fn socket(&self, vm: &str) -> Result<PathBuf, HypervisorError> {
        if vm.is_empty() || vm.contains('/') || vm.starts_with('.') {
            return Err(self.err(vm, "not a VM name"));
        }
        for name in [format!("{vm}.qmp"), format!("{vm}.sock"), vm.to_string()] {
            let p = self.dir.join(name);
            if is_socket(&p) {
                return Ok(p);
            }
        }
        Err(self.err(vm, "no such VM (no QMP socket)"))
    }

    async fn client(&self, vm: &str) -> Result<QmpClient, HypervisorError> {
        let path = self.socket(vm)?;
        QmpClient::connect(&path).await.map_err(|e| self.err(vm, e))
    }

    /// One command on a connection of its own.
    async fn exec(
        &self,
        vm: &str,
        command: &str,
        args: Option<Value>,
    ) -> Result<Value, HypervisorError> {
        let mut c = self.client(vm).await?;
        c.execute(command, args).await.map_err(|e| self.err(vm, e))
    }

    async fn query_migrate(&self, vm: &str) -> Result<MigrationInfo, HypervisorError> {
        let v = self.exec(vm, "query-migrate", None).await?;
        MigrationInfo::from_return(&v).map_err(|e| self.err(vm, e))
    }

    async fn vm_names(&self) -> Result<Vec<String>, HypervisorError> {
        let mut rd =
            tokio::fs::read_dir(&self.dir)
                .await
                .map_err(|e| HypervisorError::Connect {
                    uri: self.dir.display().to_string(),
                    message: e.to_string(),
                })?;
        let mut names = Vec::new();
        while let Ok(Some(e)) = rd.next_entry().await {
            let p = e.path();
            if !is_socket(&p) {
                continue;
            }
            let Some(file) = p.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            let name = file
                .strip_suffix(".qmp")
                .or_else(|| file.strip_suffix(".sock"))
                .unwrap_or(file);
            if !name.is_empty() && !name.starts_with('.') {
                names.push(name.to_string());
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn info(&self, vm: &str) -> Result<VmInfo, HypervisorError> {
        let mut c = self.client(vm).await?;
        let e = |x| self.err(vm, x);
        let status = c.execute("query-status", None).await.map_err(e)?;
        let mem = c
            .execute("query-memory-size-summary", None)
            .await
            .map_err(e)?;
        let cpus = c.execute("query-cpus-fast", None).await.map_err(e)?;
        let threads = vcpu_threads(&cpus);
        Ok(VmInfo {
            name: vm.to_string(),
            state: status
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
            memory_kib: mem.get("base-memory").and_then(Value::as_u64).unwrap_or(0) / 1024,
            vcpus: threads.len() as u32,
            cpu_time_ns: threads_cpu_ns(&threads),
        })
    }

    async fn measure_vm(
        &self,
        vm: &str,
        window: Duration,
    ) -> Result<VmMeasurement, HypervisorError> {
        let mut c = self.client(vm).await?;
        let e = |x| self.err(vm, x);
        let mem = c
            .execute("query-memory-size-summary", None)
            .await
            .map_err(e)?;
        let memory_bytes = mem.get("base-memory").and_then(Value::as_u64).unwrap_or(0);
        let threads = vcpu_threads(&c.execute("query-cpus-fast", None).await.map_err(e)?);
        let cpu0 = threads_cpu_ns(&threads);
        let t0 = Instant::now();
        c.execute("calc-dirty-rate", Some(calc_dirty_rate_args(window)))
            .await
            .map_err(e)?;
        // Not holding the socket while QEMU measures: other calls may come.
        drop(c);
        let rate = self.wait_dirty_rate(vm, window).await?;
        let cpu1 = threads_cpu_ns(&threads);
        let secs = t0.elapsed().as_secs_f64();
        let (non_zero_pages, non_zero_source) = match threads.first().and_then(|t| tgid_of(*t)) {
            Some(pid) => non_zero_estimate(pid, memory_bytes),
            None => (
                memory_bytes / 4096,
                "memory size (QEMU's pid unknown)".into(),
            ),
        };
        Ok(VmMeasurement {
            name: vm.to_string(),
            memory_kib: memory_bytes / 1024,
            non_zero_pages,
            non_zero_source,
            dirty_pages_per_sec: rate.pages_per_sec().unwrap_or(0.0),
            cpu_pct: cpu1.saturating_sub(cpu0) as f64 / 1e9 / secs * 100.0,
            // Bare QEMU: its disks are whatever its command line opened;
            // this driver migrates memory only.
            disk_bytes: 0,
            disk_write_bps: 0.0,
        })
    }

    async fn wait_dirty_rate(
        &self,
        vm: &str,
        window: Duration,
    ) -> Result<DirtyRate, HypervisorError> {
        tokio::time::sleep(Duration::from_secs(calc_secs(window))).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.exec(vm, "query-dirty-rate", None).await?;
            let r = DirtyRate::from_return(&v).map_err(|e| self.err(vm, e))?;
            if let DirtyRate::Measured { .. } = r {
                return Ok(r);
            }
            if Instant::now() > deadline {
                return Err(self.err(vm, "the dirty-rate measurement did not finish"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn migrate_vm(
        &self,
        vm: &str,
        opts: MigrateOptions,
    ) -> Result<MigrationStats, HypervisorError> {
        let uri = opts
            .migrate_uri
            .clone()
            .ok_or_else(|| self.err(vm, "QMP migration needs migrate_uri (tcp:IP:PORT)"))?;
        let caps =
            json!({"capabilities": [{"capability": "postcopy-ram", "state": opts.postcopy}]});
        match opts.dest_uri.strip_prefix("unix:") {
            Some(path) => {
                let mut d = QmpClient::connect(Path::new(path))
                    .await
                    .map_err(|e| self.err(vm, format!("destination: {e}")))?;
                d.execute("migrate-set-capabilities", Some(caps.clone()))
                    .await
                    .map_err(|e| self.err(vm, format!("destination: {e}")))?;
            }
            None if opts.postcopy => {
                return Err(self.err(
                    vm,
                    "post-copy over QMP needs the destination's QMP socket as dest_uri (unix:PATH)",
                ))
            }
            None => {}
        }
        let mut c = self.client(vm).await?;
        let e = |x| self.err(vm, x);
        if c.execute("query-migrate", None)
            .await
            .and_then(|v| MigrationInfo::from_return(&v))
            .map_err(e)?
            .is_running()
        {
            return Err(self.err(vm, "a migration already runs"));
        }
        c.execute("migrate-set-capabilities", Some(caps))
            .await
            .map_err(e)?;
        c.execute(
            "migrate-set-parameters",
            Some(json!({"max-bandwidth": opts.bandwidth_mibs.saturating_mul(1 << 20)})),
        )
        .await
        .map_err(e)?;
        c.execute("migrate", Some(json!({"uri": uri})))
            .await
            .map_err(e)?;
        drop(c);
        loop {
            tokio::time::sleep(POLL).await;
            let m = self.query_migrate(vm).await?;
            match m.status.as_str() {
                "completed" => return Ok(m.stats()),
                "failed" => {
                    return Err(self.err(
                        vm,
                        format!(
                            "migration failed: {}",
                            m.error_desc.as_deref().unwrap_or("no reason given")
                        ),
                    ))
                }
                "cancelled" => return Err(self.err(vm, "migration cancelled")),
                _ if m.is_running() => {}
                other => return Err(self.err(vm, format!("migration in state {other:?}"))),
            }
        }
    }

    /// `migrate-set-parameters` on a running migration (speed cap,
    /// downtime limit).
    fn set_parameters(
        &self,
        vm: &str,
        args: Value,
    ) -> BoxFuture<'static, Result<(), HypervisorError>> {
        let (me, vm) = (self.clone(), vm.to_string());
        Box::pin(async move {
            me.exec(&vm, "migrate-set-parameters", Some(args)).await?;
            Ok(())
        })
    }

    async fn abort_vm(&self, vm: &str) -> Result<(), HypervisorError> {
        let m = self.query_migrate(vm).await?;
        if !m.is_running() {
            return Err(self.err(vm, "no migration runs"));
        }
        if m.status.starts_with("postcopy") {
            // The destination already runs the VM: cancelling would lose it.
            return Err(self.err(vm, "a post-copy migration cannot be cancelled"));
        }
        self.exec(vm, "migrate_cancel", None).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = self.query_migrate(vm).await?;
            match m.status.as_str() {
                "cancelled" | "failed" => return Ok(()),
                "completed" => {
                    return Err(self.err(vm, "the migration completed before the cancel"))
                }
                _ if Instant::now() > deadline => {
                    return Err(self.err(vm, format!("still {} after migrate_cancel", m.status)))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

impl Hypervisor for Qmp {
    fn list(&self) -> BoxFuture<'static, Result<Vec<VmInfo>, HypervisorError>> {
        let me = self.clone();
        Box::pin(async move {
            let mut out = Vec::new();
            for name in me.vm_names().await? {
                out.push(me.info(&name).await?);
            }
            Ok(out)
        })
    }

    fn measure(
        &self,
        vm: &str,
        window: Duration,
    ) -> BoxFuture<'static, Result<VmMeasurement, HypervisorError>> {
        let (me, vm) = (self.clone(), vm.to_string());
        Box::pin(async move { me.measure_vm(&vm, window).await })
    }

    fn migrate(
        &self,
        vm: &str,
        opts: MigrateOptions,
    ) -> BoxFuture<'static, Result<MigrationStats, HypervisorError>> {
        let (me, vm) = (self.clone(), vm.to_string());
        Box::pin(async move { me.migrate_vm(&vm, opts).await })
    }

    fn set_max_speed(
        &self,
        vm: &str,
        mibs: u64,
    ) -> BoxFuture<'static, Result<(), HypervisorError>> {
        self.set_parameters(vm, json!({"max-bandwidth": mibs.saturating_mul(1 << 20)}))
    }

    fn set_max_downtime(
        &self,
        vm: &str,
        ms: u64,
    ) -> BoxFuture<'static, Result<(), HypervisorError>> {
        self.set_parameters(vm, json!({"downtime-limit": ms}))
    }

    fn progress(
        &self,
        vm: &str,
    ) -> BoxFuture<'static, Result<Option<MigrationProgress>, HypervisorError>> {
        let (me, vm) = (self.clone(), vm.to_string());
        Box::pin(async move {
            let m = me.query_migrate(&vm).await?;
            Ok(m.is_running().then(|| m.progress()))
        })
    }

    fn start_postcopy(&self, vm: &str) -> BoxFuture<'static, Result<(), HypervisorError>> {
        let (me, vm) = (self.clone(), vm.to_string());
        Box::pin(async move {
            me.exec(&vm, "migrate-start-postcopy", None).await?;
            Ok(())
        })
    }

    fn abort(&self, vm: &str) -> BoxFuture<'static, Result<(), HypervisorError>> {
        let (me, vm) = (self.clone(), vm.to_string());
        Box::pin(async move { me.abort_vm(&vm).await })
    }
}

fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// The host thread ids of the VM's vCPUs (`query-cpus-fast`).
fn vcpu_threads(cpus: &Value) -> Vec<u32> {
    cpus.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("thread-id").and_then(Value::as_u64))
                .map(|t| t as u32)
                .collect()
        })
        .unwrap_or_default()
}

/// CPU time of the vCPU threads, ns, from `/proc/TID/stat` (utime + stime).
/// The QMP socket is local, so QEMU runs on this machine. Under TCG QEMU 7.2
/// `query-stats` returns nothing for vCPUs, hence /proc. Ticks are USER_HZ,
/// 100 on Linux's x86 and arm ABIs.
fn threads_cpu_ns(threads: &[u32]) -> u64 {
    threads
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{t}/stat")).ok())
        .filter_map(|s| stat_cpu_ticks(&s))
        .sum::<u64>()
        * 10_000_000
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command
/// name (field 2) may hold spaces and parentheses: fields are counted after
/// its last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state), so field N is f[N - 3].
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The process a thread belongs to.
fn tgid_of(tid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The non-zero estimate when QEMU runs on this machine: the guest's RAM
/// read from QEMU's address space (`/proc/PID/mem`, root) and its 4 KiB pages
/// counted if any byte is set; `(pages, source)`. QEMU's resident set is a
/// poor stand-in: the guest zeroes pages it frees or hands out (a 128 MiB idle
/// guest had 122 MiB resident but sent 40 MiB of non-zero pages), and under
/// TCG the code buffer alone can exceed the guest's memory. Guests above
/// 256 MiB are sampled (evenly spaced 1 MiB chunks, 256 MiB read in all).
pub fn scan_guest_ram(pid: u32, memory_bytes: u64) -> Result<(u64, String), String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("/proc/{pid}/maps: {e}"))?;
    let (start, len) = guest_ram_mapping(&maps, memory_bytes)
        .ok_or_else(|| format!("no guest-RAM mapping of {memory_bytes} bytes in QEMU {pid}"))?;
    let (pages, sampled) = count_non_zero_pages(&format!("/proc/{pid}/mem"), start, len)?;
    let how = if sampled { "sampled" } else { "all" };
    Ok((
        pages,
        format!("non-zero 4 KiB pages of the guest's RAM read from QEMU ({how}, /proc/PID/mem)"),
    ))
}

/// The guest's RAM in a `/proc/PID/maps` text: the private anonymous
/// read-write mapping (`rw-p`, no inode) as large as the guest's memory (QEMU
/// maps it exactly; up to 4 MiB more is allowed for alignment). TCG's code
/// buffer is `rwxp`, so it never matches. Returns (start address, length).
pub fn guest_ram_mapping(maps: &str, memory_bytes: u64) -> Option<(u64, u64)> {
    maps.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let range = f.next()?;
        let perms = f.next()?;
        let _offset = f.next()?;
        let _dev = f.next()?;
        let inode = f.next()?;
        let (a, b) = range.split_once('-')?;
        let (a, b) = (
            u64::from_str_radix(a, 16).ok()?,
            u64::from_str_radix(b, 16).ok()?,
        );
        let len = b.checked_sub(a)?;
        (perms == "rw-p"
            && inode == "0"
            && f.next().is_none()
            && len >= memory_bytes
            && len <= memory_bytes + (4 << 20)
            && memory_bytes > 0)
            .then_some((a, memory_bytes))
    })
}

/// Non-zero pages in `len` bytes at `start` of the file `mem` (a
/// `/proc/PID/mem`), scaled up when sampled; (pages, sampled).
fn count_non_zero_pages(mem: &str, start: u64, len: u64) -> Result<(u64, bool), String> {
    use std::io::{Read, Seek, SeekFrom};
    const CHUNK: u64 = 1 << 20;
    const MAX_READ: u64 = 256 << 20;
    let mut f = std::fs::File::open(mem).map_err(|e| format!("{mem}: {e}"))?;
    let chunks = len.div_ceil(CHUNK);
    let stride = chunks.div_ceil(MAX_READ / CHUNK).max(1);
    let mut buf = vec![0u8; CHUNK as usize];
    let (mut non_zero, mut read_pages) = (0u64, 0u64);
    for i in (0..chunks).step_by(stride as usize) {
        let off = i * CHUNK;
        let n = CHUNK.min(len - off) as usize;
        f.seek(SeekFrom::Start(start + off))
            .and_then(|_| f.read_exact(&mut buf[..n]))
            .map_err(|e| format!("{mem} at {:#x}: {e}", start + off))?;
        for page in buf[..n].chunks(4096) {
            read_pages += 1;
            // 16 bytes at a time: fast enough in a debug build too.
            if page
                .chunks(16)
                .any(|w| w.iter().fold(0u8, |acc, b| acc | b) != 0)
            {
                non_zero += 1;
            }
        }
    }
    let total_pages = len.div_ceil(4096);
    if stride == 1 {
        Ok((non_zero, false))
    } else {
        let scaled = (non_zero as f64 * total_pages as f64 / read_pages.max(1) as f64) as u64;
        Ok((scaled, true))
    }
}

/// `scan_guest_ram`, or QEMU's resident set when the scan is impossible.
fn non_zero_estimate(pid: u32, memory_bytes: u64) -> (u64, String) {
    match scan_guest_ram(pid, memory_bytes) {
        Ok(r) => r,
        Err(why) => {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let rss = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            match rss {
                Some(kib) => (
                    (kib / 4).min(memory_bytes / 4096),
                    format!("QEMU process RSS, capped at the memory size ({why})"),
                ),
                None => (memory_bytes / 4096, format!("memory size ({why})")),
            }
        }
    }
}

/// QEMU's pid from its vCPU thread ids (`query-cpus-fast`), if that QEMU
/// runs on this machine and, when `guest` is given, is the one libvirt
/// started for that guest (`-name guest=NAME,...` on its command line): a
/// thread id from a remote host's QEMU could name an unrelated local process.
pub fn local_qemu_pid(cpus: &Value, guest: Option<&str>) -> Option<u32> {
    let pid = tgid_of(*vcpu_threads(cpus).first()?)?;
    if let Some(g) = guest {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let want = format!("guest={g},");
        let args = cmdline.split(|b| *b == 0);
        if !args
            .map(String::from_utf8_lossy)
            .any(|a| a.starts_with(&want) || a == format!("guest={g}"))
        {
            return None;
        }
    }
    Some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Replies captured from QEMU 7.2 (Debian 1:7.2+dfsg-7+deb12u18) running
    // the testbed's guest under TCG.
    const MEASURING: &str = r#"{"return": {"status": "measuring", "sample-pages": 512, "mode": "page-sampling", "start-time": 9419, "calc-time": 1}, "id": 1}"#;
    const MEASURED: &str = r#"{"return": {"status": "measured", "sample-pages": 4096, "dirty-rate": 14, "mode": "page-sampling", "start-time": 9448, "calc-time": 1}, "id": 1}"#;
    const ACTIVE: &str = r#"{"return": {"expected-downtime": 300, "status": "active", "setup-time": 2, "total-time": 1002, "ram": {"total": 151855104, "postcopy-requests": 0, "dirty-sync-count": 1, "multifd-bytes": 0, "pages-per-second": 1030, "downtime-bytes": 0, "page-size": 4096, "remaining": 146706432, "postcopy-bytes": 0, "mbps": 33.818400000000004, "transferred": 4225155, "dirty-sync-missed-zero-copy": 0, "precopy-bytes": 4225155, "duplicate": 228, "dirty-pages-rate": 0, "skipped": 0, "normal-bytes": 4214784, "normal": 1029}}, "id": 1}"#;
    const COMPLETED: &str = r#"{"return": {"status": "completed", "setup-time": 2, "downtime": 4, "total-time": 21113, "ram": {"total": 151855104, "postcopy-requests": 161, "dirty-sync-count": 2, "multifd-bytes": 0, "pages-per-second": 1030, "downtime-bytes": 0, "page-size": 4096, "remaining": 0, "postcopy-bytes": 36014827, "mbps": 47.364274927762779, "transferred": 124770860, "dirty-sync-missed-zero-copy": 0, "precopy-bytes": 88756033, "duplicate": 10855, "dirty-pages-rate": 0, "skipped": 0, "normal-bytes": 124428288, "normal": 30378}}, "id": 1}"#;
    const FAILED: &str = r#"{"return": {"status": "failed", "error-desc": "Unable to write to socket: Bad file descriptor"}, "id": 1}"#;
    const NEVER: &str = r#"{"return": {}, "id": 1}"#;
    const UNKNOWN_COMMAND: &str = r#"{"id": 1, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#;

    #[test]
    fn dirty_rate_replies() {
        let m = reply("query-dirty-rate", MEASURING).unwrap();
        assert_eq!(DirtyRate::from_return(&m).unwrap(), DirtyRate::Measuring);
        let m = reply("query-dirty-rate", MEASURED).unwrap();
        let r = DirtyRate::from_return(&m).unwrap();
        assert_eq!(r, DirtyRate::Measured { mib_per_sec: 14 });
        assert_eq!(r.pages_per_sec(), Some(14.0 * 256.0));
        assert_eq!(DirtyRate::Measuring.pages_per_sec(), None);
        // Bad input is an error, not a panic.
        for bad in [
            json!({}),
            json!({"status": "measured"}),
            json!({"status": 3}),
            json!([1]),
        ] {
            assert!(DirtyRate::from_return(&bad).is_err(), "{bad}");
        }
        assert!(DirtyRate::from_return(&json!({"status": "weird"})).is_err());
    }

    #[test]
    fn query_migrate_replies() {
        let a = MigrationInfo::from_return(&reply("query-migrate", ACTIVE).unwrap()).unwrap();
        assert!(a.is_running());
        let p = a.progress();
        assert_eq!(p.data_processed, 4225155);
        assert_eq!(p.data_remaining, 146706432);
        assert_eq!(p.data_total, 151855104);
        assert_eq!(p.mem_bps, 4227300); // 33.8184 Mbit/s
        assert_eq!(p.mem_iteration, 1);

        let c = MigrationInfo::from_return(&reply("query-migrate", COMPLETED).unwrap()).unwrap();
        assert!(!c.is_running());
        assert_eq!(
            c.stats(),
            MigrationStats {
                downtime_ms: Some(4),
                bytes: Some(124770860),
                time_ms: Some(21113),
                disk_bytes: None,
            }
        );
        let ram = c.ram.unwrap();
        assert_eq!(
            (ram.normal, ram.duplicate, ram.postcopy_requests),
            (30378, 10855, 161)
        );

        let f = MigrationInfo::from_return(&reply("query-migrate", FAILED).unwrap()).unwrap();
        assert_eq!(f.status, "failed");
        assert_eq!(
            f.error_desc.as_deref(),
            Some("Unable to write to socket: Bad file descriptor")
        );
        assert_eq!(f.stats(), MigrationStats::default());

        let n = MigrationInfo::from_return(&reply("query-migrate", NEVER).unwrap()).unwrap();
        assert_eq!(n.status, "");
        assert!(!n.is_running());

        assert!(MigrationInfo::from_return(&json!({"status": 5})).is_err());
        assert!(MigrationInfo::from_return(&json!("x")).is_err());
    }

    #[test]
    fn errors_and_bad_replies() {
        assert_eq!(
            reply("nope", UNKNOWN_COMMAND).unwrap_err(),
            QmpError::Command {
                command: "nope".into(),
                class: "CommandNotFound".into(),
                desc: "The command nope has not been found".into()
            }
        );
        assert!(matches!(reply("x", "{"), Err(QmpError::Protocol(_))));
        assert!(matches!(
            reply("x", r#"{"id": 1}"#),
            Err(QmpError::Protocol(_))
        ));
        assert!(matches!(reply("x", "[]"), Err(QmpError::Protocol(_))));
    }

    #[test]
    fn command_texts_and_windows() {
        assert_eq!(
            command_text("query-migrate", None),
            r#"{"execute":"query-migrate"}"#
        );
        let t = command_text(
            "calc-dirty-rate",
            Some(calc_dirty_rate_args(Duration::from_millis(2400))),
        );
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["arguments"]["calc-time"], 2);
        assert_eq!(v["arguments"]["sample-pages"], 4096);
        assert_eq!(calc_secs(Duration::ZERO), 1);
        assert_eq!(calc_secs(Duration::from_millis(1600)), 2);
    }

    #[test]
    fn proc_parsing() {
        // A real /proc/TID/stat line of a QEMU 7.2 TCG vCPU thread (utime
        // 180, stime 11 ticks).
        let stat = "13210 (qemu-system-x86) R 13205 13205 20961 0 -1 138412224 4024 0 0 0 180 11 0 0 20 0 3 0 1234247 1402617856 25082 18446744073709551615 94071399145472 94071405005909 140726263550928 0 0 0 2147220087 4100 16451 0 0 0 -1 1 0 0 0 0 0 94071408118008 94071413322160 94071896096768 140726263552533 140726263552721 140726263552721 140726263554012 0";
        assert_eq!(stat_cpu_ticks(stat), Some(191));
        // A name with spaces and parentheses (threads named by QEMU's
        // debug-threads option look like this).
        assert_eq!(
            stat_cpu_ticks("7 (CPU 0/TCG) (x) R 1 2 3 4 5 6 7 8 9 10 5 6 0"),
            Some(11)
        );
        assert_eq!(stat_cpu_ticks("garbage"), None);
        assert_eq!(stat_cpu_ticks("1 (x) S 1"), None);
        // Lines of a real /proc/PID/maps of QEMU 7.2 running a 128 MiB guest
        // under TCG: the guest's RAM, then TCG's code buffer.
        let maps = "7f8127e00000-7f812fe00000 rw-p 00000000 00:00 0 \n\
                    7f8138000000-7f8177fff000 rwxp 00000000 00:00 0 \n\
                    55d0c0a00000-55d0c0b00000 r--p 00000000 fe:01 1234   /usr/bin/qemu-system-x86_64\n";
        assert_eq!(
            guest_ram_mapping(maps, 128 << 20),
            Some((0x7f8127e00000, 128 << 20))
        );
        // A 1 GiB guest does not take the (1 GiB - 4 KiB, rwx) code buffer.
        assert_eq!(guest_ram_mapping(maps, 1 << 30), None);
        assert_eq!(guest_ram_mapping("x", 1), None);
        assert_eq!(guest_ram_mapping("zz-10 rw-p 0 00:00 0", 16), None);
    }

    #[test]
    fn counting_non_zero_pages() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("mem");
        // 8 pages: 0 and 5 have one byte set (at the start, at the end).
        let mut m = vec![0u8; 8 * 4096];
        m[0] = 1;
        m[5 * 4096 + 4095] = 0x80;
        std::fs::write(&f, &m).unwrap();
        let p = f.to_str().unwrap();
        assert_eq!(count_non_zero_pages(p, 0, 8 * 4096), Ok((2, false)));
        assert_eq!(count_non_zero_pages(p, 4096, 4 * 4096), Ok((0, false)));
        // Past the end: an error, not a panic.
        assert!(count_non_zero_pages(p, 0, 9 * 4096).is_err());
        assert!(count_non_zero_pages("/nonexistent", 0, 4096).is_err());
    }

    #[test]
    fn vm_names_are_not_paths() {
        let q = Qmp::new("/nonexistent");
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(q.socket(bad).is_err(), "{bad}");
        }
        let e = q.socket("vm9").unwrap_err().to_string();
        assert!(e.contains("vm9"), "{e}");
    }
}
