//! The hypervisor side: what solive asks of the hosts' VMM. One real
//! implementation here, libvirt ([`libvirt::Libvirt`], through the `virt`
//! crate); the evacuation work drives migrations through it.
//!
//! libvirt's API is blocking, so every call runs on tokio's blocking pool
//! (`spawn_blocking`): a slow or hung libvirtd never stalls the controller's
//! event loop.

pub mod libvirt;

/// Errors of hypervisor calls, with the host and the VM they were about.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HypervisorError {
    #[error("cannot reach the hypervisor at {uri}: {message}")]
    Connect { uri: String, message: String },
    #[error("VM {vm:?} on {uri}: {message}")]
    Vm {
        uri: String,
        vm: String,
        message: String,
    },
    #[error("the hypervisor call did not finish: {0}")]
    Join(String),
}

/// A VM as the hypervisor reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VmInfo {
    pub name: String,
    /// `running`, `paused`, `shutoff`, ...
    pub state: String,
    /// Current memory, KiB.
    pub memory_kib: u64,
    pub vcpus: u32,
    /// CPU time used so far, nanoseconds.
    pub cpu_time_ns: u64,
}

/// How a migration is going (libvirt job statistics).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct MigrationProgress {
    /// Bytes of memory (and device state) sent so far.
    pub data_processed: u64,
    pub data_remaining: u64,
    pub data_total: u64,
    /// The transfer rate QEMU measured, bytes/s.
    pub mem_bps: u64,
    /// Pages dirtied per second during the migration.
    pub mem_dirty_rate: u64,
    /// Pre-copy iterations so far.
    pub mem_iteration: u64,
}

/// How to migrate.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrateOptions {
    /// The destination's libvirt URI (peer to peer: the source's libvirtd
    /// connects to it).
    pub dest_uri: String,
    /// Where the migration data goes, e.g. `tcp://10.0.0.2` (the fabric).
    pub migrate_uri: Option<String>,
    /// Speed cap in MiB/s (libvirt's unit); kept in step with the reservation
    /// while the migration runs.
    pub bandwidth_mibs: u64,
    /// Start in pre-copy and allow switching to post-copy.
    pub postcopy: bool,
}

/// Converts a reservation in bit/s to libvirt's MiB/s, rounding up so the
/// cap never undercuts the reservation (and never 0, which means unlimited).
pub fn bps_to_mibs(bps: f64) -> u64 {
    ((bps / 8.0 / 1_048_576.0).ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reservation_to_libvirt_bandwidth() {
        assert_eq!(super::bps_to_mibs(100e6), 12); // 11.92 MiB/s, rounded up
        assert_eq!(super::bps_to_mibs(1.0), 1);
        assert_eq!(super::bps_to_mibs(8.0 * 1_048_576.0 * 3.0), 3);
    }
}
