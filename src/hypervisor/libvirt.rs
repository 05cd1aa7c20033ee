//! libvirt through the `virt` crate. Each call opens its own connection:
//! libvirt connections are cheap over a unix socket, and a per-call
//! connection cannot be left half-broken by an earlier failure.
//!
//! `virt` 0.5 lacks virDomainStartDirtyRateCalc, a readable
//! virConnectGetAllDomainStats record, virDomainMigrateStartPostCopy and
//! virDomainAbortJob. The last two are libvirt calls that matter (an abort
//! libvirt holds until its migration starts; a post-copy switch libvirt
//! knows of), so they are made on `virt-sys` in [`super::libvirt_ffi`], the
//! crate's only `unsafe`. The measurements go to QEMU through libvirt's
//! monitor passthrough (`virDomainQemuMonitorCommand`, the crate's `qemu`
//! feature): QMP `calc-dirty-rate`/`query-dirty-rate` and `query-migrate`,
//! parsed by [`super::qmp`]. libvirt marks a domain driven this way as
//! tainted (`custom-monitor`) in its log; nothing else changes.
//!
//! Every call but the migration runs under a time limit
//! ([`CALL_TIMEOUT`]): a libvirtd that hangs makes the call fail with
//! [`HypervisorError::Timeout`] instead of holding its caller.

use virt::connect::Connect;
use virt::domain::{Domain, DomainState, DomainStateEnum, MigrateParameters};
use virt::enumutil::Enum;
use virt::sys;

use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::disks::{self, Disk};
use super::libvirt_ffi;
use super::qmp::{self, DirtyRate, MigrationInfo};
use super::{
    Hypervisor, HypervisorError, MigrateOptions, MigrationProgress, MigrationStats, VmInfo,
    VmMeasurement,
};

/// How long one libvirt call may take (a measurement: its windows on top,
/// [`super::measuring_time`]).
/// libvirtd answers in milliseconds when it is well; a call still pending
/// after this long means it hangs.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// How often a migration's own figures are read while it runs (see
/// `watch_migration`): often enough to catch a post-copy migration's last
/// answer, which only the source has.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// A completed migration job as libvirt reports it
/// (`VIR_DOMAIN_JOB_STATS_COMPLETED`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CompletedJob {
    pub stats: MigrationStats,
    /// Pages sent in full (re-sent pages count again).
    pub mem_normal_pages: Option<u64>,
    /// Zero pages, sent as a flag.
    pub mem_zero_pages: Option<u64>,
    pub mem_iterations: Option<u64>,
    pub postcopy_requests: Option<u64>,
    /// Whether the job was a migration into this host (false: out of it;
    /// None: libvirt did not say).
    pub incoming: Option<bool>,
}

/// What the migration watcher saw last (see `Libvirt::watch_migration`).
#[derive(Debug, Default)]
struct Watched {
    migration: Option<MigrationInfo>,
    /// The most disk bytes the copy had sent.
    disk_copied: Option<u64>,
}

/// One host's libvirt daemon, by URI (e.g. `qemu+unix:///system?socket=...`).
#[derive(Debug, Clone)]
pub struct Libvirt {
    pub uri: String,
    /// Paths on storage every host sees: disks under them are not copied
    /// when a VM migrates (see [`disks::decide`]).
    pub shared_storage: Vec<String>,
}

impl Libvirt {
    pub fn new(uri: &str) -> Libvirt {
        Libvirt {
            uri: uri.to_string(),
            shared_storage: Vec::new(),
        }
    }

    pub fn with_shared_storage(mut self, paths: Vec<String>) -> Libvirt {
        self.shared_storage = paths;
        self
    }

    /// The VM's disks (blocking): its live XML's disks, sized by QEMU
    /// (`query-block`), each with the copy decision.
    pub fn disks_blocking(&self, vm: &str) -> Result<Vec<Disk>, HypervisorError> {
        let xml = self.with_domain(vm, |d| d.xml_desc(0))?;
        let specs = disks::parse(&xml).map_err(|e| self.vm_err(vm, e))?;
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let images = disks::block_images(&self.qmp_blocking(vm, "query-block", None)?);
        Ok(disks::describe(&specs, &images, &self.shared_storage))
    }

    /// Bytes written so far to the disks a migration would copy.
    fn written_bytes(dom: &Domain, copied: &[Disk]) -> u64 {
        copied
            .iter()
            .filter_map(|d| dom.block_stats(&d.target).ok())
            .map(|s| s.wr_bytes.max(0) as u64)
            .sum()
    }

    fn connect(&self) -> Result<Connect, HypervisorError> {
        Connect::open(Some(&self.uri)).map_err(|e| HypervisorError::Connect {
            uri: self.uri.clone(),
            message: e.to_string(),
        })
    }

    fn vm_err(&self, vm: &str, e: impl std::fmt::Display) -> HypervisorError {
        HypervisorError::Vm {
            uri: self.uri.clone(),
            vm: vm.to_string(),
            message: e.to_string(),
        }
    }

    fn with_domain<T>(
        &self,
        vm: &str,
        f: impl FnOnce(&Domain) -> Result<T, virt::error::Error>,
    ) -> Result<T, HypervisorError> {
        let conn = self.connect()?;
        let dom = conn
            .lookup_domain_by_name(vm)
            .map_err(|e| self.vm_err(vm, e))?;
        f(&dom).map_err(|e| self.vm_err(vm, e))
    }

    /// The running VMs (blocking).
    pub fn list_blocking(&self) -> Result<Vec<VmInfo>, HypervisorError> {
        let conn = self.connect()?;
        let doms = conn
            .list_all_domains(sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            .map_err(|e| HypervisorError::Connect {
                uri: self.uri.clone(),
                message: e.to_string(),
            })?;
        let mut out = Vec::new();
        for d in doms {
            let name = d.name().map_err(|e| self.vm_err("?", e))?;
            let info = d.info().map_err(|e| self.vm_err(&name, e))?;
            out.push(VmInfo {
                state: state_name(info.state),
                memory_kib: info.memory,
                vcpus: info.nr_virt_cpu,
                cpu_time_ns: info.cpu_time,
                name,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Live-migrates `vm` peer to peer and returns when it has finished
    /// (blocking; run it on a blocking thread), with the statistics of the
    /// completed job as the destination's libvirtd keeps them (the source's
    /// domain is gone by then; libvirt passes the statistics to the
    /// destination in its migration cookie). If the destination cannot be
    /// asked, the migration still succeeded: the statistics are empty.
    pub fn migrate_blocking(
        &self,
        vm: &str,
        opts: &MigrateOptions,
    ) -> Result<MigrationStats, HypervisorError> {
        let mut flags = sys::VIR_MIGRATE_LIVE | sys::VIR_MIGRATE_PEER2PEER;
        if opts.postcopy {
            flags |= sys::VIR_MIGRATE_POSTCOPY;
        }
        let mut params = MigrateParameters {
            bandwidth: Some(opts.bandwidth_mibs),
            uri: opts.migrate_uri.clone(),
            listen_address: opts.listen_address.clone(),
            ..MigrateParameters::default()
        };
        // One connection is libvirt's default; asking for parallel migration
        // with one channel would only change QEMU's stream format.
        if let Some(n) = opts.parallel_connections.filter(|n| *n > 1) {
            flags |= sys::VIR_MIGRATE_PARALLEL;
            params.parallel_connections = Some(n as i32);
        }
        // Local disks: libvirt has the destination's QEMU serve them over
        // NBD (pre-created in the destination's storage pool) and the source
        // QEMU mirror them there before the memory moves.
        if let Some(c) = opts.disk_copy.as_ref().filter(|c| !c.targets.is_empty()) {
            // Incremental: only the top image of each chain goes; the
            // destination has the rest (a pre-cached base).
            flags |= if c.incremental {
                sys::VIR_MIGRATE_NON_SHARED_INC
            } else {
                sys::VIR_MIGRATE_NON_SHARED_DISK
            };
            // A full copy of a disk with a backing chain (one solive cached,
            // say) makes one flat image on the destination: the chain is
            // left out of the destination's XML, or it would open the
            // source's backing files there too.
            if !c.incremental {
                let xml = self.with_domain(vm, |d| {
                    d.xml_desc(sys::VIR_DOMAIN_XML_MIGRATABLE | sys::VIR_DOMAIN_XML_SECURE)
                })?;
                params.dest_xml = disks::without_backing(&xml, &c.targets);
            }
            params.migrate_disks = c.targets.clone();
            params.disks_uri = c.uri.clone();
        }
        if let Some(a) = opts.auto_converge {
            flags |= sys::VIR_MIGRATE_AUTO_CONVERGE;
            params.auto_converge_initial = Some(a.initial_pct as i32);
            params.auto_converge_increment = Some(a.increment_pct as i32);
        }
        // The source QEMU's own figures, watched while the migration runs:
        // the fallback when libvirt holds no completed statistics.
        let copying = opts.disk_copy.is_some();
        let (stop, last, watcher) = self.watch_migration(vm, copying);
        let started = Instant::now();
        let done = self.with_domain(vm, |d| {
            d.migrate_to_uri3(Some(&opts.dest_uri), params, flags)
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = watcher.join();
        let watched = last
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        done?;
        // The copy's own count when libvirt's statistics lack it.
        let with_disk = |mut s: MigrationStats| {
            if copying && s.disk_bytes.is_none() {
                s.disk_bytes = watched.disk_copied;
            }
            s
        };
        // libvirt's completed statistics: the destination's (libvirt passes
        // the source's figures on in its migration cookie; a migration that
        // switched to post-copy leaves none there), else the source's own,
        // kept on its domain while it stays defined; else what was watched.
        // Each only of this migration's direction: a domain that went the
        // other way before keeps that job's figures (KEEP_COMPLETED).
        let completed = [(Libvirt::new(&opts.dest_uri), true), (self.clone(), false)]
            .iter()
            .find_map(|(l, incoming)| {
                let job = l.completed_job_blocking(vm).ok().flatten()?;
                (job.incoming != Some(!incoming)).then_some(job)
            });
        if let Some(job) = completed {
            return Ok(with_disk(job.stats));
        }
        Ok(with_disk(match watched.migration {
            Some(m) if m.status == "completed" => m.stats(),
            // Missed the last moment: what was sent until then.
            Some(m) => MigrationStats {
                downtime_ms: None,
                bytes: m.ram.map(|r| r.transferred),
                time_ms: Some(started.elapsed().as_millis() as u64),
                disk_bytes: None,
            },
            None => MigrationStats::default(),
        }))
    }

    /// Polls the source QEMU's `query-migrate` (and, while disks are being
    /// copied, `query-block-jobs`) every [`WATCH_EVERY`] on a thread of its
    /// own, over one connection for the whole migration (not one per poll),
    /// and keeps the last answers of this migration.
    fn watch_migration(
        &self,
        vm: &str,
        disks: bool,
    ) -> (
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::sync::Arc<std::sync::Mutex<Watched>>,
        std::thread::JoinHandle<()>,
    ) {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(Mutex::new(Watched::default()));
        let (me, vm) = (self.clone(), vm.to_string());
        let (s, l) = (stop.clone(), last.clone());
        let thread = std::thread::spawn(move || {
            let Ok(conn) = me.connect() else { return };
            let Ok(dom) = conn.lookup_domain_by_name(&vm) else {
                return;
            };
            let ask = |command: &str| {
                dom.qemu_monitor_command(&qmp::command_text(command, None), 0)
                    .ok()
                    .and_then(|out| qmp::reply(command, &out).ok())
            };
            while !s.load(Ordering::Relaxed) {
                let m = ask("query-migrate").and_then(|v| MigrationInfo::from_return(&v).ok());
                let copy = if disks {
                    ask("query-block-jobs").and_then(|v| disks::mirror_progress(&v))
                } else {
                    None
                };
                if let Ok(mut g) = l.lock() {
                    // Before this migration starts QEMU may still report the
                    // previous one (e.g. "cancelled"): only running or completed.
                    if let Some(m) = m.filter(|m| m.is_running() || m.status == "completed") {
                        g.migration = Some(m);
                    }
                    // The copy's jobs end with the migration: keep the most
                    // it had copied.
                    if let Some((done, _)) = copy {
                        g.disk_copied = Some(g.disk_copied.unwrap_or(0).max(done));
                    }
                }
                std::thread::sleep(WATCH_EVERY);
            }
        });
        (stop, last, thread)
    }

    /// The statistics of the last completed migration job of `vm` on this
    /// host (on the destination after an incoming migration), or None.
    ///
    /// Through [`libvirt_ffi::job_stats`], which takes libvirt's empty
    /// answer as None. KEEP_COMPLETED: libvirt forgets completed statistics
    /// once read otherwise, and a second reader would find none.
    pub fn completed_job_blocking(
        &self,
        vm: &str,
    ) -> Result<Option<CompletedJob>, HypervisorError> {
        let s = self.with_domain(vm, |d| {
            libvirt_ffi::job_stats(
                d,
                sys::VIR_DOMAIN_JOB_STATS_COMPLETED | sys::VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED,
            )
        })?;
        let Some(s) = s else { return Ok(None) };
        Ok(Some(CompletedJob {
            stats: MigrationStats {
                downtime_ms: s.downtime,
                bytes: s.data_processed,
                time_ms: s.time_elapsed,
                // libvirt counts a copy's bytes in its completed statistics
                // only where it has them (the source's, not always passed on).
                disk_bytes: s.disk_processed.filter(|b| *b > 0),
            },
            mem_normal_pages: s.mem_normal,
            mem_zero_pages: s.mem_constant,
            mem_iterations: s.mem_iteration,
            postcopy_requests: s.mem_postcopy_reqs,
            incoming: s.operation.and_then(|o| match o as u32 {
                sys::VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN => Some(true),
                sys::VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT => Some(false),
                _ => None,
            }),
        }))
    }

    /// Sends one QMP command to the VM's QEMU through libvirt and returns
    /// the `return` value.
    fn qmp_blocking(
        &self,
        vm: &str,
        command: &str,
        args: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, HypervisorError> {
        let text = qmp::command_text(command, args);
        let out = self.with_domain(vm, |d| d.qemu_monitor_command(&text, 0))?;
        qmp::reply(command, &out).map_err(|e| self.vm_err(vm, e))
    }

    /// Measures `vm` over `window` (blocking): QEMU's sampled dirty rate
    /// (`calc-dirty-rate`, whole seconds; a second window for the working
    /// set when it dirties at all, [`super::dirty_windows`]), the CPU time libvirt reports over
    /// the same time, and the non-zero estimate (see [`qmp::scan_guest_ram`]).
    pub fn measure_blocking(
        &self,
        vm: &str,
        window: Duration,
    ) -> Result<VmMeasurement, HypervisorError> {
        let conn = self.connect()?;
        let dom = conn
            .lookup_domain_by_name(vm)
            .map_err(|e| self.vm_err(vm, e))?;
        let copied: Vec<Disk> = self
            .disks_blocking(vm)?
            .into_iter()
            .filter(|d| d.copy)
            .collect();
        let written0 = Self::written_bytes(&dom, &copied);
        let info0 = dom.info().map_err(|e| self.vm_err(vm, e))?;
        let t0 = Instant::now();
        let windows = super::dirty_windows(window);
        let rate = self.dirty_rate_blocking(vm, windows.0)?;
        let longer = match rate > 0.0 {
            true => Some(self.dirty_rate_blocking(vm, windows.1)?),
            false => None,
        };
        tracing::debug!(vm, ?windows, rate, ?longer, "dirty-rate windows (pages/s)");
        let info1 = dom.info().map_err(|e| self.vm_err(vm, e))?;
        let secs = t0.elapsed().as_secs_f64();
        let written = Self::written_bytes(&dom, &copied).saturating_sub(written0);
        let memory_bytes = info1.memory * 1024;
        // Where libvirtd runs on this machine (the testbed; solive on the
        // host itself), the guest's RAM is read and its non-zero pages
        // counted; otherwise QEMU's resident set, which errs high.
        let cpus = self.qmp_blocking(vm, "query-cpus-fast", None)?;
        let scanned = qmp::local_qemu_pid(&cpus, Some(vm))
            .ok_or_else(|| "QEMU is not on this machine".to_string())
            .and_then(|pid| qmp::scan_guest_ram(pid, memory_bytes));
        let (non_zero_pages, non_zero_source) = match scanned {
            Ok(r) => r,
            Err(why) => {
                let rss_kib = dom
                    .memory_stats(0)
                    .map_err(|e| self.vm_err(vm, e))?
                    .iter()
                    .find(|s| s.tag == sys::VIR_DOMAIN_MEMORY_STAT_RSS)
                    .map(|s| s.val);
                match rss_kib {
                    Some(kib) => (
                        (kib / 4).min(info1.memory / 4),
                        format!("QEMU process RSS, capped at the memory size (libvirt memory stats; {why})"),
                    ),
                    None => (info1.memory / 4, format!("memory size ({why}; no RSS)")),
                }
            }
        };
        Ok(VmMeasurement {
            name: vm.to_string(),
            memory_kib: info1.memory,
            non_zero_pages,
            non_zero_source,
            dirty_pages_per_sec: rate,
            working_set_kib: super::working_set_kib(windows, rate, longer, info1.memory),
            cpu_pct: info1.cpu_time.saturating_sub(info0.cpu_time) as f64 / 1e9 / secs * 100.0,
            disk_bytes: disks::copy_bytes(&copied),
            disk_write_bps: written as f64 / secs,
        })
    }

    /// QEMU's sampled dirty rate over `secs` whole seconds, pages/s
    /// (`calc-dirty-rate`, then `query-dirty-rate` until it has finished).
    fn dirty_rate_blocking(&self, vm: &str, secs: u64) -> Result<f64, HypervisorError> {
        let window = Duration::from_secs(secs);
        self.qmp_blocking(
            vm,
            "calc-dirty-rate",
            Some(qmp::calc_dirty_rate_args(window)),
        )?;
        std::thread::sleep(window);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.qmp_blocking(vm, "query-dirty-rate", None)?;
            let r = DirtyRate::from_return(&v).map_err(|e| self.vm_err(vm, e))?;
            if let Some(pages) = r.pages_per_sec() {
                return Ok(pages);
            }
            if Instant::now() > deadline {
                return Err(self.vm_err(vm, "the dirty-rate measurement did not finish"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Switches a running migration started with `postcopy` to post-copy
    /// (virDomainMigrateStartPostCopy).
    /// See [`Hypervisor::snapshot_disks`] (blocking).
    pub fn snapshot_disks_blocking(
        &self,
        vm: &str,
        overlays: &[(String, String)],
    ) -> Result<(), HypervisorError> {
        let xml = self.with_domain(vm, |d| d.xml_desc(0))?;
        let targets: Vec<String> = disks::parse(&xml)
            .map_err(|e| self.vm_err(vm, e))?
            .into_iter()
            .map(|d| d.target)
            .collect();
        let name = format!("solive-{}", unique_stamp());
        let snap = disks::snapshot_xml(&name, &targets, overlays);
        // No metadata: libvirt keeps no snapshot object to revert to, only
        // the new overlays; atomic: all disks or none.
        let flags = sys::VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
            | sys::VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
            | sys::VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC;
        self.with_domain(vm, |d| libvirt_ffi::snapshot_create(d, &snap, flags))
    }

    /// See [`Hypervisor::commit_disk`] (blocking).
    pub fn commit_disk_blocking(
        &self,
        vm: &str,
        target: &str,
        base: &str,
        top: &str,
        limit: Duration,
    ) -> Result<(), HypervisorError> {
        let conn = self.connect()?;
        let dom = conn
            .lookup_domain_by_name(vm)
            .map_err(|e| self.vm_err(vm, e))?;
        let spec = || -> Result<Vec<disks::DiskSpec>, HypervisorError> {
            let xml = dom.xml_desc(0).map_err(|e| self.vm_err(vm, e))?;
            disks::parse(&xml).map_err(|e| self.vm_err(vm, e))
        };
        // `top` is the guest's own layer: an active commit, which mirrors
        // the guest's writes into `base` too and is pivoted once ready.
        let active = spec()?
            .iter()
            .any(|d| d.target == target && d.source.as_deref() == Some(top));
        libvirt_ffi::block_commit(&dom, target, base, top, active)
            .map_err(|e| self.vm_err(vm, e))?;
        // A commit of a layer below the active one ends by itself (libvirt
        // then drops `top` from the chain); an active one is pivoted once
        // ready.
        match finish_job(&dom, target, Instant::now(), limit) {
            Ok(_) => {}
            Err(JobWait::TimedOut { pivoted: false }) => {
                let _ = libvirt_ffi::block_job_abort(&dom, target);
                return Err(self.vm_err(
                    vm,
                    format!("the commit of {top} did not end within {limit:?}: aborted"),
                ));
            }
            Err(JobWait::TimedOut { pivoted: true }) => {
                return Err(self.vm_err(vm, format!("the pivot onto {base} did not end")));
            }
            Err(e) => return Err(self.vm_err(vm, e.describe(target))),
        }
        let spec = spec()?;
        let chain_has_top = spec
            .iter()
            .filter(|d| d.target == target)
            .any(|d| d.source.as_deref() == Some(top) || d.backing.iter().any(|b| b == top));
        if chain_has_top {
            return Err(self.vm_err(vm, format!("the commit of {top} into {base} failed")));
        }
        Ok(())
    }

    /// See [`Hypervisor::settle_disk_jobs`] (blocking).
    pub fn settle_disk_jobs_blocking(
        &self,
        vm: &str,
        limit: Duration,
    ) -> Result<Vec<String>, HypervisorError> {
        let conn = self.connect()?;
        let dom = conn
            .lookup_domain_by_name(vm)
            .map_err(|e| self.vm_err(vm, e))?;
        let xml = dom.xml_desc(0).map_err(|e| self.vm_err(vm, e))?;
        let started = Instant::now();
        let mut finished = Vec::new();
        for d in disks::parse(&xml).map_err(|e| self.vm_err(vm, e))? {
            let found = finish_job(&dom, &d.target, started, limit).map_err(|e| match e {
                JobWait::TimedOut { .. } => self.vm_err(
                    vm,
                    format!(
                        "the block job left on disk {} did not end within {limit:?}",
                        d.target
                    ),
                ),
                e => self.vm_err(vm, e.describe(&d.target)),
            })?;
            if let Some(kind) = found {
                finished.push(format!(
                    "disk {}: {} left by an earlier controller, finished",
                    d.target,
                    match kind {
                        disks::BlockJobKind::ActiveCommit => "an active commit (pivoted)",
                        _ => "a commit",
                    }
                ));
            }
        }
        Ok(finished)
    }

    pub fn start_postcopy_blocking(&self, vm: &str) -> Result<(), HypervisorError> {
        self.with_domain(vm, libvirt_ffi::start_post_copy)
    }

    /// Cancels the outgoing migration of `vm` (virDomainAbortJob). libvirt
    /// stops a migration QEMU runs, and one it is still preparing is
    /// stopped before QEMU starts it; either way the pending migrate call
    /// then fails and the VM keeps running here. libvirt refuses to abort a
    /// migration in post-copy (the destination runs the VM already), and
    /// answers an error when no job runs yet: the caller tries again.
    pub fn abort_blocking(&self, vm: &str) -> Result<(), HypervisorError> {
        self.with_domain(vm, libvirt_ffi::abort_job)
    }

    /// Changes the speed cap of a running migration, MiB/s.
    /// While disks are being copied their mirror jobs run at speeds of their
    /// own (libvirt sets them from the migration's bandwidth when it starts
    /// them and not again): they get the same cap, so the copy stays within
    /// the reservation too.
    pub fn set_max_speed_blocking(&self, vm: &str, mibs: u64) -> Result<(), HypervisorError> {
        self.with_domain(vm, |d| d.migrate_set_max_speed(mibs, 0))?;
        if let Ok(jobs) = self.qmp_blocking(vm, "query-block-jobs", None) {
            for id in disks::mirror_ids(&jobs) {
                let args = serde_json::json!({"device": id, "speed": mibs * 1_048_576});
                self.qmp_blocking(vm, "block-job-set-speed", Some(args))?;
            }
        }
        Ok(())
    }

    pub fn set_max_downtime_blocking(&self, vm: &str, ms: u64) -> Result<(), HypervisorError> {
        self.with_domain(vm, |d| d.migrate_set_max_downtime(ms, 0))
    }

    /// The migration's progress, or None when no job runs.
    ///
    /// Never through `virt` 0.5's `job_stats`, which aborts on libvirt's
    /// answer when no job runs ([`libvirt_ffi::job_stats`] says why).
    /// libvirt's fixed-size job info says whether a job runs, and QEMU's
    /// `query-migrate` (monitor passthrough) gives the figures, including
    /// the pass count that the post-copy switch waits for.
    pub fn progress_blocking(
        &self,
        vm: &str,
    ) -> Result<Option<MigrationProgress>, HypervisorError> {
        let job = self.with_domain(vm, |d| d.job_info())?;
        if job.r#type == sys::VIR_DOMAIN_JOB_NONE as i32 {
            return Ok(None);
        }
        let v = self.qmp_blocking(vm, "query-migrate", None)?;
        let m = MigrationInfo::from_return(&v).map_err(|e| self.vm_err(vm, e))?;
        // A storage copy runs before the memory moves (and its mirrors keep
        // up with the guest's writes until the switch-over).
        let (disk_processed, disk_total) = self
            .qmp_blocking(vm, "query-block-jobs", None)
            .ok()
            .and_then(|v| disks::mirror_progress(&v))
            .unwrap_or((0, 0));
        if m.is_running() {
            return Ok(Some(MigrationProgress {
                disk_processed,
                disk_total,
                ..m.progress()
            }));
        }
        // libvirt's job runs but QEMU's migration has not started (libvirt
        // is still preparing the destination, or copying disks) or has just
        // ended.
        Ok(Some(MigrationProgress {
            data_processed: job.data_processed.unwrap_or(0),
            data_remaining: job.data_remaining.unwrap_or(0),
            data_total: job.data_total.unwrap_or(0),
            disk_processed,
            disk_total,
            ..MigrationProgress::default()
        }))
    }
}

impl Hypervisor for Libvirt {
    fn list(&self) -> BoxFuture<'static, Result<Vec<VmInfo>, HypervisorError>> {
        let me = self.clone();
        Box::pin(bounded("the VM list", CALL_TIMEOUT, move || {
            me.list_blocking()
        }))
    }

    fn measure(
        &self,
        vm: &str,
        window: Duration,
    ) -> BoxFuture<'static, Result<VmMeasurement, HypervisorError>> {
        let (me, vm) = (self.clone(), vm.to_string());
        let limit = super::measuring_time(window) + CALL_TIMEOUT;
        Box::pin(bounded("a measurement", limit, move || {
            me.measure_blocking(&vm, window)
        }))
    }

    fn migrate(
        &self,
        vm: &str,
        opts: MigrateOptions,
    ) -> BoxFuture<'static, Result<MigrationStats, HypervisorError>> {
        // No time limit: a migration takes as long as it takes; the
        // evacuation bounds it by its cancel (see `evacuation::runner`).
        let (me, vm) = (self.clone(), vm.to_string());
        Box::pin(blocking(move || me.migrate_blocking(&vm, &opts)))
    }

    fn set_max_speed(
        &self,
        vm: &str,
        mibs: u64,
    ) -> BoxFuture<'static, Result<(), HypervisorError>> {
        let (me, vm) = (self.clone(), vm.to_string());
        Box::pin(bounded("the speed cap", CALL_TIMEOUT, move || {
            me.set_max_speed_blocking(&vm, mibs)
        }))
    }

    fn set_max_downtime(
        &self,
        vm: &str,
        ms: u64,
    ) -> BoxFuture<'static, Result<(), HypervisorError>> {
        let (me, vm) = (self.clone(), vm.to_string());
        Box::pin(bounded("the downtime limit", CALL_TIMEOUT, move || {
            me.set_max_downtime_blocking(&vm, ms)
        }))
    }

    fn progress(
        &self,
        vm: &str,
    ) -> BoxFuture<'static, Result<Option<MigrationProgress>, HypervisorError>> {
        let (me, vm) = (self.clone(), vm.to_string());
        Box::pin(bounded("a progress query", CALL_TIMEOUT, move || {
            me.progress_blocking(&vm)
        }))
    }

    fn start_postcopy(&self, vm: &str) -> BoxFuture<'static, Result<(), HypervisorError>> {
        let (me, vm) = (self.clone(), vm.to_string());
        Box::pin(bounded("the post-copy switch", CALL_TIMEOUT, move || {
            me.start_postcopy_blocking(&vm)
        }))
    }

    fn disks(&self, vm: &str) -> BoxFuture<'static, Result<Vec<Disk>, HypervisorError>> {
        let (me, vm) = (self.clone(), vm.to_string());
        Box::pin(bounded("the disk list", CALL_TIMEOUT, move || {
            me.disks_blocking(&vm)
        }))
    }

    fn snapshot_disks(
        &self,
        vm: &str,
        overlays: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<(), HypervisorError>> {
        let (this, vm) = (self.clone(), vm.to_string());
        Box::pin(bounded("disk snapshot", CALL_TIMEOUT, move || {
            this.snapshot_disks_blocking(&vm, &overlays)
        }))
    }

    fn settle_disk_jobs(
        &self,
        vm: &str,
        limit: Duration,
    ) -> BoxFuture<'static, Result<Vec<String>, HypervisorError>> {
        let (this, vm) = (self.clone(), vm.to_string());
        Box::pin(bounded(
            "the disks' block jobs",
            limit + CALL_TIMEOUT,
            move || this.settle_disk_jobs_blocking(&vm, limit),
        ))
    }

    fn commit_disk(
        &self,
        vm: &str,
        target: &str,
        base: &str,
        top: &str,
        limit: Duration,
    ) -> BoxFuture<'static, Result<(), HypervisorError>> {
        let this = self.clone();
        let (vm, target, base, top) = (
            vm.to_string(),
            target.to_string(),
            base.to_string(),
            top.to_string(),
        );
        Box::pin(bounded("block commit", limit + CALL_TIMEOUT, move || {
            this.commit_disk_blocking(&vm, &target, &base, &top, limit)
        }))
    }

    fn abort(&self, vm: &str) -> BoxFuture<'static, Result<(), HypervisorError>> {
        let (me, vm) = (self.clone(), vm.to_string());
        Box::pin(bounded("the abort", CALL_TIMEOUT, move || {
            me.abort_blocking(&vm)
        }))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HypervisorError> + Send + 'static,
) -> Result<T, HypervisorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HypervisorError::Join(e.to_string()))?
}

/// [`blocking`] under a time limit. On time-out the call's thread is left to
/// finish (a blocked libvirt call cannot be interrupted); its caller goes on.
async fn bounded<T: Send + 'static>(
    what: &'static str,
    limit: Duration,
    f: impl FnOnce() -> Result<T, HypervisorError> + Send + 'static,
) -> Result<T, HypervisorError> {
    tokio::time::timeout(limit, blocking(f))
        .await
        .map_err(|_| HypervisorError::Timeout {
            what,
            secs: limit.as_secs(),
        })?
}

fn state_name(state: DomainStateEnum) -> String {
    match state {
        Enum::Known(DomainState::Running) => "running".into(),
        Enum::Known(DomainState::Blocked) => "blocked".into(),
        Enum::Known(DomainState::Paused) => "paused".into(),
        Enum::Known(DomainState::Shutdown) => "shutting down".into(),
        Enum::Known(DomainState::Shutoff) => "shutoff".into(),
        Enum::Known(DomainState::Crashed) => "crashed".into(),
        Enum::Known(DomainState::PMSuspended) => "suspended".into(),
        Enum::Known(DomainState::NoState) => "no state".into(),
        Enum::Unknown(n) => format!("state {n}"),
    }
}

/// Seconds and nanoseconds since the epoch: a snapshot name that no other
/// solive snapshot of the VM has (they keep no metadata, but libvirt still
/// wants a name).
fn unique_stamp() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-{:09}", t.as_secs(), t.subsec_nanos())
}

/// Why the block job on a disk did not end as solive's own commits end.
enum JobWait {
    /// Not gone within the limit; whether it had been pivoted.
    TimedOut {
        pivoted: bool,
    },
    /// A job of another kind (libvirt's type number): not solive's.
    Refused(u32),
    Libvirt(virt::error::Error),
}

impl JobWait {
    fn describe(&self, target: &str) -> String {
        match self {
            JobWait::TimedOut { .. } => format!("the block job on disk {target} did not end"),
            JobWait::Refused(kind) => format!(
                "disk {target} runs a block job solive did not start (libvirt type {kind}): left as it is"
            ),
            JobWait::Libvirt(e) => e.to_string(),
        }
    }
}

/// Drives the block job on `target` to its end the way solive's commits
/// end ([`disks::settle`]): waits for a commit, pivots an active commit
/// once it is ready and then waits for it to go (the pivot returns at once;
/// the chain changes when QEMU's job has completed). The commits solive
/// starts and the ones a killed controller left both go through here.
/// `limit` counts from `started`. The kind of job there was, if any.
fn finish_job(
    dom: &Domain,
    target: &str,
    started: Instant,
    limit: Duration,
) -> Result<Option<disks::BlockJobKind>, JobWait> {
    use disks::Settle;
    let mut found = None;
    let mut pivoted = false;
    loop {
        let job = libvirt_ffi::block_job(dom, target).map_err(JobWait::Libvirt)?;
        found = found.or(job.map(|j| j.kind));
        match disks::settle(job) {
            Settle::Clear => return Ok(found),
            Settle::Refuse(kind) => return Err(JobWait::Refused(kind)),
            // A pivot refused (not ready after all) is tried again.
            Settle::Pivot if !pivoted => {
                pivoted = libvirt_ffi::block_job_pivot(dom, target).is_ok();
            }
            Settle::Pivot | Settle::Wait => {}
        }
        if started.elapsed() > limit {
            return Err(JobWait::TimedOut { pivoted });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
