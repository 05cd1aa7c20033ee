//! QEMU's own management protocol (QMP), for testbeds without libvirt, and
//! the typed parsers of the QMP replies that the libvirt driver also reads
//! (through `virDomainQemuMonitorCommand`, for what the `virt` crate lacks:
//! dirty-rate measurement, the post-copy switch, cancelling).
//!
//! * `replies.rs`: [`reply`], [`DirtyRate`], [`MigrationInfo`]: pure parsers
//!   of QMP replies, tested on replies captured from QEMU 7.2.
//! * `client.rs`: [`QmpClient`], a small async client over a unix socket
//!   (greeting, `qmp_capabilities`, commands with an `id`, asynchronous
//!   events set aside).
//! * `procfs.rs`: what QEMU's process shows in `/proc` when it runs on this
//!   machine: its vCPU threads' CPU time, its pid, and the guest's non-zero
//!   pages read from its memory.
//! * this file: [`Qmp`], the [`Hypervisor`] for bare QEMU. Its VMs are the QMP sockets in
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

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::{
    Hypervisor, HypervisorError, MigrateOptions, MigrationProgress, MigrationStats, VmInfo,
    VmMeasurement,
};

mod client;
mod procfs;
mod replies;
#[cfg(test)]
mod tests;

pub use client::QmpClient;
pub use procfs::{guest_ram_mapping, local_qemu_pid, scan_guest_ram};
use procfs::{non_zero_estimate, tgid_of, threads_cpu_ns, vcpu_threads};
pub use replies::{
    calc_dirty_rate_args, calc_secs, command_text, reply, DirtyRate, MigrationInfo, QmpError,
    RamInfo, DIRTY_SAMPLE_PAGES,
};

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
        // Not holding the socket while QEMU measures: other calls may come.
        drop(c);
        let t0 = Instant::now();
        let windows = super::dirty_windows(window);
        let rate = self.dirty_rate(vm, windows.0).await?;
        let longer = match rate > 0.0 {
            true => Some(self.dirty_rate(vm, windows.1).await?),
            false => None,
        };
        tracing::debug!(vm, ?windows, rate, ?longer, "dirty-rate windows (pages/s)");
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
            dirty_pages_per_sec: rate,
            working_set_kib: super::working_set_kib(windows, rate, longer, memory_bytes / 1024),
            cpu_pct: cpu1.saturating_sub(cpu0) as f64 / 1e9 / secs * 100.0,
            // Bare QEMU: its disks are whatever its command line opened;
            // this driver migrates memory only.
            disk_bytes: 0,
            disk_write_bps: 0.0,
        })
    }

    /// QEMU's sampled dirty rate over `secs` whole seconds, pages/s.
    async fn dirty_rate(&self, vm: &str, secs: u64) -> Result<f64, HypervisorError> {
        let window = Duration::from_secs(secs);
        self.exec(vm, "calc-dirty-rate", Some(calc_dirty_rate_args(window)))
            .await?;
        tokio::time::sleep(window).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.exec(vm, "query-dirty-rate", None).await?;
            let r = DirtyRate::from_return(&v).map_err(|e| self.err(vm, e))?;
            if let Some(pages) = r.pages_per_sec() {
                return Ok(pages);
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
