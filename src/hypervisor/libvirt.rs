//! libvirt through the `virt` crate. Each call opens its own connection:
//! libvirt connections are cheap over a unix socket, and a per-call
//! connection cannot be left half-broken by an earlier failure.

use virt::connect::Connect;
use virt::domain::{Domain, DomainState, DomainStateEnum, MigrateParameters};
use virt::enumutil::Enum;
use virt::sys;

use std::time::Duration;

use futures::future::BoxFuture;

use super::{
    Hypervisor, HypervisorError, MigrateOptions, MigrationProgress, MigrationStats, VmInfo,
    VmMeasurement,
};

/// One host's libvirt daemon, by URI (e.g. `qemu+unix:///system?socket=...`).
#[derive(Debug, Clone)]
pub struct Libvirt {
    pub uri: String,
}

impl Libvirt {
    pub fn new(uri: &str) -> Libvirt {
        Libvirt {
            uri: uri.to_string(),
        }
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
    /// (blocking; run it on a blocking thread).
    pub fn migrate_blocking(&self, vm: &str, opts: &MigrateOptions) -> Result<(), HypervisorError> {
        let mut flags = sys::VIR_MIGRATE_LIVE | sys::VIR_MIGRATE_PEER2PEER;
        if opts.postcopy {
            flags |= sys::VIR_MIGRATE_POSTCOPY;
        }
        let params = MigrateParameters {
            bandwidth: Some(opts.bandwidth_mibs),
            uri: opts.migrate_uri.clone(),
            ..MigrateParameters::default()
        };
        self.with_domain(vm, |d| {
            d.migrate_to_uri3(Some(&opts.dest_uri), params, flags)
        })
    }

    /// Changes the speed cap of a running migration, MiB/s.
    pub fn set_max_speed_blocking(&self, vm: &str, mibs: u64) -> Result<(), HypervisorError> {
        self.with_domain(vm, |d| d.migrate_set_max_speed(mibs, 0))
    }

    /// The migration's progress, or None when no job runs.
    pub fn progress_blocking(
        &self,
        vm: &str,
    ) -> Result<Option<MigrationProgress>, HypervisorError> {
        let s = self.with_domain(vm, |d| d.job_stats(0))?;
        if s.r#type == sys::VIR_DOMAIN_JOB_NONE as i32 {
            return Ok(None);
        }
        Ok(Some(MigrationProgress {
            data_processed: s.data_processed.unwrap_or(0),
            data_remaining: s.data_remaining.unwrap_or(0),
            data_total: s.data_total.unwrap_or(0),
            mem_bps: s.mem_bps.unwrap_or(0),
            mem_dirty_rate: s.mem_dirty_rate.unwrap_or(0),
            mem_iteration: s.mem_iteration.unwrap_or(0),
        }))
    }
}

impl Hypervisor for Libvirt {
    fn list(&self) -> BoxFuture<'static, Result<Vec<VmInfo>, HypervisorError>> {
        let me = self.clone();
        Box::pin(blocking(move || me.list_blocking()))
    }

    fn measure(
        &self,
        _vm: &str,
        _window: Duration,
    ) -> BoxFuture<'static, Result<VmMeasurement, HypervisorError>> {
        Box::pin(async { Err(HypervisorError::Unsupported("measuring")) })
    }

    fn migrate(
        &self,
        vm: &str,
        opts: MigrateOptions,
    ) -> BoxFuture<'static, Result<MigrationStats, HypervisorError>> {
        let (me, vm) = (self.clone(), vm.to_string());
        Box::pin(blocking(move || {
            me.migrate_blocking(&vm, &opts)?;
            Ok(MigrationStats::default())
        }))
    }

    fn set_max_speed(
        &self,
        vm: &str,
        mibs: u64,
    ) -> BoxFuture<'static, Result<(), HypervisorError>> {
        let (me, vm) = (self.clone(), vm.to_string());
        Box::pin(blocking(move || me.set_max_speed_blocking(&vm, mibs)))
    }

    fn progress(
        &self,
        vm: &str,
    ) -> BoxFuture<'static, Result<Option<MigrationProgress>, HypervisorError>> {
        let (me, vm) = (self.clone(), vm.to_string());
        Box::pin(blocking(move || me.progress_blocking(&vm)))
    }

    fn start_postcopy(&self, _vm: &str) -> BoxFuture<'static, Result<(), HypervisorError>> {
        Box::pin(async { Err(HypervisorError::Unsupported("post-copy switch")) })
    }

    fn abort(&self, _vm: &str) -> BoxFuture<'static, Result<(), HypervisorError>> {
        Box::pin(async { Err(HypervisorError::Unsupported("abort")) })
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HypervisorError> + Send + 'static,
) -> Result<T, HypervisorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HypervisorError::Join(e.to_string()))?
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
