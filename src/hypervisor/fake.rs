//! An in-memory cloud of hosts whose VMs migrate in simulated time, for unit
//! tests of the orchestration logic (the evacuation runner, the API). It is
//! not a stand-in for the integration tests: those run real libvirt.
//!
//! A migration sends `cap` MiB/s in 100 ms steps of tokio time (so paused-time
//! tests run instantly): first every non-zero page, then in pre-copy what was
//! dirtied meanwhile (at most the VM's non-zero pages: a guest dirties the
//! memory it uses), until what is left fits in the downtime limit (300 ms
//! unless `set_max_downtime` changed it). After `start_postcopy` nothing is
//! dirtied any more and it drains.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use super::{
    Hypervisor, HypervisorError, MigrateOptions, MigrationProgress, MigrationStats, VmInfo,
    VmMeasurement,
};

const PAGE: f64 = 4096.0;
const STEP: Duration = Duration::from_millis(100);
const DEFAULT_DOWNTIME_MS: u64 = 300;

/// One fake VM's load.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeVm {
    pub memory_kib: u64,
    pub non_zero_pages: u64,
    pub dirty_pages_per_sec: f64,
    pub cpu_pct: f64,
}

#[derive(Debug, Default)]
struct Job {
    cap_mibs: u64,
    downtime_ms: u64,
    sent: f64,
    remaining: f64,
    pass: f64,
    iteration: u64,
    postcopy_allowed: bool,
    postcopy: bool,
    cancel: bool,
    /// Where the destination listens (`tcp://ADDR:PORT`), when given.
    migrate_uri: Option<String>,
    /// The host it leaves.
    source: String,
    /// Steps before its first byte (libvirt preparing the destination).
    wait_steps: u32,
    /// What it sent in the last step, bytes/s.
    rate: f64,
}

#[derive(Debug, Default)]
struct Cloud {
    hosts: BTreeMap<String, BTreeMap<String, FakeVm>>,
    jobs: BTreeMap<String, Job>,
    /// VM -> the error its next migration fails with: half-way, or (true)
    /// right after the switch to post-copy.
    failures: BTreeMap<String, (String, bool)>,
    /// VMs left paused on their source by a failed post-copy migration, as
    /// libvirt leaves them.
    paused: BTreeSet<String>,
    /// VMs whose next migration completes but whose guest then dies on the
    /// destination.
    die_after: BTreeSet<String>,
    /// Hosts whose hypervisor does not answer.
    down: Vec<String>,
    /// VM -> how many more aborts are refused, as libvirt refuses one before
    /// its migration job has begun (or a hung libvirtd times out).
    refused_aborts: BTreeMap<String, u32>,
    /// VMs whose abort ends libvirt's job but whose migrate call then never
    /// returns (what a testbed run showed once after libvirtd had hung).
    lost_migrate_calls: BTreeSet<String>,
    /// Each VM's last migration's options, as asked.
    options: BTreeMap<String, MigrateOptions>,
    /// VM -> its disks (none unless set).
    disks: BTreeMap<String, Vec<super::disks::Disk>>,
    /// Hosts whose uplink carries at most this many bytes/s of migrations,
    /// split equally among those sending.
    links: BTreeMap<String, f64>,
    /// Steps of 100 ms before a migration's first byte.
    startup_steps: u32,
    /// Hosts whose migrations each send at most this many bytes/s, whatever
    /// their cap (as a CPU-bound QEMU does).
    speeds: BTreeMap<String, f64>,
}

/// The shared cloud; [`FakeCloud::host`] gives one host's hypervisor.
#[derive(Debug, Clone, Default)]
pub struct FakeCloud {
    inner: Arc<Mutex<Cloud>>,
}

impl FakeCloud {
    pub fn new() -> FakeCloud {
        FakeCloud::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cloud> {
        // A test that panicked while holding the lock has failed already.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_host(&self, host: &str) {
        self.lock().hosts.entry(host.to_string()).or_default();
    }

    pub fn add_vm(&self, host: &str, name: &str, vm: FakeVm) {
        self.lock()
            .hosts
            .entry(host.to_string())
            .or_default()
            .insert(name.to_string(), vm);
    }

    /// The names of the VMs on `host`.
    pub fn vms_on(&self, host: &str) -> Vec<String> {
        self.lock()
            .hosts
            .get(host)
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Where the running migrations' destinations listen, by VM.
    pub fn migrate_uris(&self) -> BTreeMap<String, Option<String>> {
        self.lock()
            .jobs
            .iter()
            .map(|(vm, j)| (vm.clone(), j.migrate_uri.clone()))
            .collect()
    }

    /// Migrations leaving `host` share `mibs` MiB/s (without, each runs at
    /// its cap).
    pub fn set_link(&self, host: &str, mibs: f64) {
        self.lock()
            .links
            .insert(host.to_string(), mibs * 1_048_576.0);
    }

    /// Each migration leaving `host` sends at most `mibs` MiB/s, below its
    /// cap if need be (the testbed's TCG guests are CPU-bound so).
    pub fn set_migration_speed(&self, host: &str, mibs: f64) {
        self.lock()
            .speeds
            .insert(host.to_string(), mibs * 1_048_576.0);
    }

    /// Each migration sends its first byte `d` after it was started (to
    /// the nearest 100 ms), as libvirt first prepares the destination.
    pub fn set_startup(&self, d: Duration) {
        self.lock().startup_steps = (d.as_millis() / STEP.as_millis()) as u32;
    }

    /// Gives `vm` disks (which a migration copies is each one's `copy`).
    pub fn set_disks(&self, vm: &str, disks: Vec<super::disks::Disk>) {
        self.lock().disks.insert(vm.to_string(), disks);
    }

    /// The options `vm`'s last migration was started with.
    pub fn migrate_options(&self, vm: &str) -> Option<MigrateOptions> {
        self.lock().options.get(vm).cloned()
    }

    /// The next migration of `vm` fails half-way with `message`.
    pub fn fail_next_migration(&self, vm: &str, message: &str) {
        self.lock()
            .failures
            .insert(vm.to_string(), (message.to_string(), false));
    }

    /// The next migration of `vm` fails once it has switched to post-copy
    /// (the destination's copy dies): the source keeps it paused and the
    /// destination has nothing, as with libvirt.
    pub fn fail_in_postcopy(&self, vm: &str, message: &str) {
        self.lock()
            .failures
            .insert(vm.to_string(), (message.to_string(), true));
    }

    /// The next migration of `vm` completes, and then the guest dies on the
    /// destination (what the testbed showed after some post-copy migrations).
    pub fn die_after_migration(&self, vm: &str) {
        self.lock().die_after.insert(vm.to_string());
    }

    /// The next `n` aborts of `vm`'s migration fail (`u32::MAX`: all).
    pub fn refuse_aborts(&self, vm: &str, n: u32) {
        self.lock().refused_aborts.insert(vm.to_string(), n);
    }

    /// The next abort of `vm`'s migration ends its job, but its migrate call
    /// never returns.
    pub fn lose_migrate_call_on_abort(&self, vm: &str) {
        self.lock().lost_migrate_calls.insert(vm.to_string());
    }

    /// Makes `host`'s hypervisor unreachable (or reachable again).
    pub fn set_down(&self, host: &str, down: bool) {
        let mut c = self.lock();
        c.down.retain(|h| h != host);
        if down {
            c.down.push(host.to_string());
        }
    }

    /// The URI other hosts migrate to.
    pub fn uri(host: &str) -> String {
        format!("fake://{host}")
    }

    /// The evacuation service's view of `hosts`, each one of this cloud's
    /// (what `server::start_with` takes in tests).
    pub fn host_hypervisors(
        &self,
        hosts: &[&str],
    ) -> BTreeMap<String, crate::evacuation::HostHypervisor> {
        hosts
            .iter()
            .map(|h| {
                let hv: Arc<dyn Hypervisor> = Arc::new(self.host(h));
                let hh = crate::evacuation::HostHypervisor {
                    hv,
                    uri: FakeCloud::uri(h),
                    migrate_uri: None,
                    room: Default::default(),
                };
                (h.to_string(), hh)
            })
            .collect()
    }

    pub fn host(&self, host: &str) -> FakeHypervisor {
        self.add_host(host);
        FakeHypervisor {
            cloud: self.clone(),
            host: host.to_string(),
        }
    }
}

/// One host of a [`FakeCloud`].
#[derive(Debug, Clone)]
pub struct FakeHypervisor {
    cloud: FakeCloud,
    host: String,
}

impl FakeHypervisor {
    fn uri(&self) -> String {
        FakeCloud::uri(&self.host)
    }

    fn err(&self, vm: &str, message: impl Into<String>) -> HypervisorError {
        HypervisorError::Vm {
            uri: self.uri(),
            vm: vm.to_string(),
            message: message.into(),
        }
    }

    /// Runs `f` on `vm`'s running migration job, or says there is none.
    fn with_job(
        &self,
        vm: &str,
        f: impl FnOnce(&Self, &mut Job) -> Result<(), HypervisorError>,
    ) -> Result<(), HypervisorError> {
        let mut c = self.cloud.lock();
        match c.jobs.get_mut(vm) {
            Some(j) => f(self, j),
            None => Err(self.err(vm, "no migration job is running")),
        }
    }

    /// The VM's load, if it is here and the host answers.
    fn vm(&self, vm: &str) -> Result<FakeVm, HypervisorError> {
        let c = self.cloud.lock();
        if c.down.contains(&self.host) {
            return Err(HypervisorError::Connect {
                uri: self.uri(),
                message: "connection refused".into(),
            });
        }
        c.hosts
            .get(&self.host)
            .and_then(|h| h.get(vm))
            .cloned()
            .ok_or_else(|| self.err(vm, "Domain not found"))
    }

    /// One step of a running migration; Some(result) once it has ended.
    fn step(
        &self,
        vm: &str,
        dest: &str,
        load: &FakeVm,
    ) -> Option<Result<MigrationStats, HypervisorError>> {
        let mut c = self.cloud.lock();
        if c.down.iter().any(|h| h == dest) {
            c.jobs.remove(vm);
            return Some(Err(self.err(vm, format!("cannot reach {dest}"))));
        }
        let failure = c.failures.get(vm).cloned();
        let link = c.links.get(&self.host).copied();
        let speed = c.speeds.get(&self.host).copied();
        let sending = c
            .jobs
            .values()
            .filter(|j| j.source == self.host && j.wait_steps == 0)
            .count();
        let job = c.jobs.get_mut(vm)?;
        if job.cancel {
            c.jobs.remove(vm);
            return Some(Err(
                self.err(vm, "operation aborted: migration job canceled by client")
            ));
        }
        if job.wait_steps > 0 {
            job.wait_steps -= 1;
            return None;
        }
        let cap = job.cap_mibs as f64 * 1_048_576.0;
        let rate = link.map_or(cap, |l| cap.min(l / sending.max(1) as f64));
        let rate = speed.map_or(rate, |s| rate.min(s));
        job.rate = rate;
        let dt = STEP.as_secs_f64();
        let sent = (rate * dt).min(job.remaining);
        job.sent += sent;
        job.remaining -= sent;
        job.pass -= sent;
        let (postcopy, halfway) = (job.postcopy, job.sent * 2.0 >= job.sent + job.remaining);
        let fires = |(_, in_postcopy): &(String, bool)| {
            if *in_postcopy {
                postcopy
            } else {
                halfway
            }
        };
        if let Some((message, _)) = failure.filter(fires) {
            if postcopy {
                c.paused.insert(vm.to_string());
            }
            c.jobs.remove(vm);
            c.failures.remove(vm);
            return Some(Err(self.err(vm, message)));
        }
        if !job.postcopy {
            let dirtied = load.dirty_pages_per_sec * PAGE * dt;
            let used = (load.non_zero_pages as f64 * PAGE).min(load.memory_kib as f64 * 1024.0);
            job.remaining = (job.remaining + dirtied).min(used);
            if job.pass <= 0.0 {
                job.iteration += 1;
                job.pass = job.remaining;
            }
        }
        let done = if job.postcopy {
            job.remaining <= 0.0
        } else {
            job.iteration > 0 && job.remaining <= rate * job.downtime_ms as f64 / 1000.0
        };
        if !done {
            return None;
        }
        let downtime_ms = if job.postcopy {
            5
        } else {
            (job.remaining / rate.max(1.0) * 1000.0) as u64
        };
        let stats = MigrationStats {
            downtime_ms: Some(downtime_ms),
            bytes: Some((job.sent + job.remaining) as u64),
            time_ms: None,
            disk_bytes: None,
        };
        c.jobs.remove(vm);
        let moved = c.hosts.get_mut(&self.host).and_then(|h| h.remove(vm))?;
        if !c.die_after.remove(vm) {
            c.hosts
                .entry(dest.to_string())
                .or_default()
                .insert(vm.to_string(), moved);
        }
        Some(Ok(stats))
    }
}

fn ready<T: Send + 'static>(
    r: Result<T, HypervisorError>,
) -> BoxFuture<'static, Result<T, HypervisorError>> {
    Box::pin(async move { r })
}

impl Hypervisor for FakeHypervisor {
    fn list(&self) -> BoxFuture<'static, Result<Vec<VmInfo>, HypervisorError>> {
        let c = self.cloud.lock();
        if c.down.contains(&self.host) {
            return ready(Err(HypervisorError::Connect {
                uri: self.uri(),
                message: "connection refused".into(),
            }));
        }
        let vms = c
            .hosts
            .get(&self.host)
            .map(|h| {
                h.iter()
                    .map(|(name, vm)| VmInfo {
                        name: name.clone(),
                        state: if c.paused.contains(name) {
                            "paused"
                        } else {
                            "running"
                        }
                        .into(),
                        memory_kib: vm.memory_kib,
                        vcpus: 1,
                        cpu_time_ns: 0,
                    })
                    .collect()
            })
            .unwrap_or_default();
        ready(Ok(vms))
    }

    fn measure(
        &self,
        vm: &str,
        window: Duration,
    ) -> BoxFuture<'static, Result<VmMeasurement, HypervisorError>> {
        let (me, name) = (self.clone(), vm.to_string());
        Box::pin(async move {
            me.vm(&name)?;
            tokio::time::sleep(window).await;
            let v = me.vm(&name)?;
            let disk_bytes = me
                .cloud
                .lock()
                .disks
                .get(&name)
                .map_or(0, |d| super::disks::copy_bytes(d));
            Ok(VmMeasurement {
                name,
                memory_kib: v.memory_kib,
                non_zero_pages: v.non_zero_pages,
                non_zero_source: "fake".into(),
                dirty_pages_per_sec: v.dirty_pages_per_sec,
                // It dirties all over its memory.
                working_set_kib: None,
                cpu_pct: v.cpu_pct,
                disk_bytes,
                disk_write_bps: 0.0,
            })
        })
    }

    fn migrate(
        &self,
        vm: &str,
        opts: MigrateOptions,
    ) -> BoxFuture<'static, Result<MigrationStats, HypervisorError>> {
        let (me, vm) = (self.clone(), vm.to_string());
        Box::pin(async move {
            let load = me.vm(&vm)?;
            let Some(dest) = opts.dest_uri.strip_prefix("fake://").map(str::to_string) else {
                return Err(me.err(&vm, format!("bad destination URI {:?}", opts.dest_uri)));
            };
            {
                let mut c = me.cloud.lock();
                if c.jobs.contains_key(&vm) {
                    return Err(me.err(&vm, "a migration job is already running"));
                }
                // As QEMU on one destination: one listener per address and port.
                if let Some(u) = opts
                    .migrate_uri
                    .as_ref()
                    .filter(|u| c.jobs.values().any(|j| j.migrate_uri.as_ref() == Some(*u)))
                {
                    return Err(me.err(
                        &vm,
                        format!("Failed to bind socket for {u}: Address already in use"),
                    ));
                }
                let first = load.non_zero_pages as f64 * PAGE;
                c.options.insert(vm.clone(), opts.clone());
                let wait_steps = c.startup_steps;
                c.jobs.insert(
                    vm.clone(),
                    Job {
                        cap_mibs: opts.bandwidth_mibs.max(1),
                        downtime_ms: DEFAULT_DOWNTIME_MS,
                        remaining: first,
                        pass: first,
                        postcopy_allowed: opts.postcopy,
                        migrate_uri: opts.migrate_uri.clone(),
                        source: me.host.clone(),
                        wait_steps,
                        ..Job::default()
                    },
                );
            }
            loop {
                tokio::time::sleep(STEP).await;
                if let Some(r) = me.step(&vm, &dest, &load) {
                    return r;
                }
            }
        })
    }

    fn set_max_speed(
        &self,
        vm: &str,
        mibs: u64,
    ) -> BoxFuture<'static, Result<(), HypervisorError>> {
        ready(self.with_job(vm, |_, j| {
            j.cap_mibs = mibs.max(1);
            Ok(())
        }))
    }

    fn set_max_downtime(
        &self,
        vm: &str,
        ms: u64,
    ) -> BoxFuture<'static, Result<(), HypervisorError>> {
        ready(self.with_job(vm, |_, j| {
            j.downtime_ms = ms;
            Ok(())
        }))
    }

    fn progress(
        &self,
        vm: &str,
    ) -> BoxFuture<'static, Result<Option<MigrationProgress>, HypervisorError>> {
        let c = self.cloud.lock();
        let p = c.jobs.get(vm).map(|j| MigrationProgress {
            data_processed: j.sent as u64,
            data_remaining: j.remaining as u64,
            data_total: (j.sent + j.remaining) as u64,
            mem_bps: match (j.wait_steps, j.rate) {
                (0, r) if r > 0.0 => r as u64,
                (0, _) => j.cap_mibs * 1_048_576,
                _ => 0,
            },
            mem_dirty_rate: 0,
            mem_iteration: j.iteration,
            ..MigrationProgress::default()
        });
        ready(Ok(p))
    }

    fn start_postcopy(&self, vm: &str) -> BoxFuture<'static, Result<(), HypervisorError>> {
        ready(self.with_job(vm, |me, j| {
            if !j.postcopy_allowed {
                return Err(me.err(vm, "the migration was not started with post-copy allowed"));
            }
            j.postcopy = true;
            Ok(())
        }))
    }

    fn disks(
        &self,
        vm: &str,
    ) -> BoxFuture<'static, Result<Vec<super::disks::Disk>, HypervisorError>> {
        ready(
            self.vm(vm)
                .map(|_| self.cloud.lock().disks.get(vm).cloned().unwrap_or_default()),
        )
    }

    fn abort(&self, vm: &str) -> BoxFuture<'static, Result<(), HypervisorError>> {
        if let Some(n) = self
            .cloud
            .lock()
            .refused_aborts
            .get_mut(vm)
            .filter(|n| **n > 0)
        {
            *n = n.saturating_sub(1);
            return ready(Err(self.err(vm, "no job is active on the domain")));
        }
        {
            let mut c = self.cloud.lock();
            if c.lost_migrate_calls.remove(vm) && c.jobs.remove(vm).is_some() {
                return ready(Ok(()));
            }
        }
        ready(self.with_job(vm, |me, j| {
            if j.postcopy {
                return Err(me.err(vm, "a post-copy migration cannot be aborted"));
            }
            j.cancel = true;
            Ok(())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(dirty: f64) -> FakeVm {
        FakeVm {
            memory_kib: 128 * 1024,
            non_zero_pages: 16 * 256, // 16 MiB
            dirty_pages_per_sec: dirty,
            cpu_pct: 10.0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn migration_moves_the_vm_at_the_cap() {
        let cloud = FakeCloud::new();
        cloud.add_vm("h1", "a", vm(0.0));
        let h1 = cloud.host("h1");
        let t0 = tokio::time::Instant::now();
        let s = h1
            .migrate("a", MigrateOptions::new(&FakeCloud::uri("h2"), 8))
            .await
            .unwrap();
        // 16 MiB at 8 MiB/s, the last 2.4 MiB moved in the downtime.
        let secs = t0.elapsed().as_secs_f64();
        assert!((1.6..=2.1).contains(&secs), "{secs}");
        assert!(s.bytes.unwrap() >= 16 << 20);
        assert_eq!(cloud.vms_on("h1"), Vec::<String>::new());
        assert_eq!(cloud.vms_on("h2"), vec!["a".to_string()]);
    }

    #[tokio::test(start_paused = true)]
    async fn abort_and_failure_leave_the_vm_on_the_source() {
        let cloud = FakeCloud::new();
        cloud.add_vm("h1", "a", vm(0.0));
        let h1 = cloud.host("h1");
        let m = tokio::spawn(h1.migrate("a", MigrateOptions::new("fake://h2", 1)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(h1.progress("a").await.unwrap().unwrap().data_processed > 0);
        h1.abort("a").await.unwrap();
        let e = m.await.unwrap().unwrap_err().to_string();
        assert!(e.contains("canceled"), "{e}");
        cloud.fail_next_migration("a", "destination went away");
        let e = h1
            .migrate("a", MigrateOptions::new("fake://h2", 8))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("destination went away") && e.contains("\"a\""),
            "{e}"
        );
        assert_eq!(cloud.vms_on("h1"), vec!["a".to_string()]);
    }

    #[tokio::test(start_paused = true)]
    async fn heavy_dirtier_needs_postcopy() {
        let cloud = FakeCloud::new();
        // Dirties 4 MiB/s with a 2 MiB/s cap: pre-copy never converges.
        cloud.add_vm("h1", "m", vm(1024.0));
        let h1 = cloud.host("h1");
        let mut opts = MigrateOptions::new("fake://h2", 2);
        opts.postcopy = true;
        let m = tokio::spawn(h1.migrate("m", opts));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!m.is_finished());
        h1.start_postcopy("m").await.unwrap();
        assert!(h1.abort("m").await.is_err(), "post-copy cannot be aborted");
        m.await.unwrap().unwrap();
        assert_eq!(cloud.vms_on("h2"), vec!["m".to_string()]);
    }
}
