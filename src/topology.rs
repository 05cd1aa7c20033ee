//! Topology files (`topologies/*.toml`): the hypervisor hosts, their fabric
//! addresses, bridges, uplinks and capacities, and the VMs on each host. The
//! testbed (`mininet/testbed`, Python's `tomllib`) and the controller read
//! the same files; this is the controller's reader, as strict as the
//! testbed's (unknown keys are errors). The format is described in
//! `topologies/README.md`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid topology: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid topology: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub name: String,
    #[serde(default)]
    pub fabric: Option<Fabric>,
    pub hosts: Vec<Host>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fabric {
    pub subnet: String,
    #[serde(default)]
    pub sink: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Source,
    Destination,
    Intermediary,
    #[default]
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub name: String,
    #[serde(default)]
    pub role: Role,
    pub address: Ipv4Addr,
    #[serde(default)]
    pub bridge: Option<String>,
    #[serde(default)]
    pub uplink: Option<String>,
    pub capacity_mbps: u64,
    #[serde(default)]
    pub vms: Vec<Vm>,
}

impl Host {
    /// The bridge name, `br-NAME` unless given.
    pub fn bridge(&self) -> String {
        self.bridge
            .clone()
            .unwrap_or_else(|| format!("br-{}", self.name))
    }
    /// The uplink port, `NAME-up` unless given.
    pub fn uplink(&self) -> String {
        self.uplink
            .clone()
            .unwrap_or_else(|| format!("{}-up", self.name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    Memory,
    Cpu,
    NetOut,
    NetIn,
    Idle,
    /// Writes `write_mibps` to its disk, steadily.
    DiskSteady,
    /// Writes the same on average, in bursts.
    DiskBurst,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    pub name: String,
    pub memory_mib: u64,
    pub workload: Workload,
    #[serde(default)]
    pub fill_mib: Option<u64>,
    #[serde(default)]
    pub working_set_mib: Option<u64>,
    #[serde(default)]
    pub rate_mbps: Option<f64>,
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// A qcow2 disk of this size (the testbed's `vda`), its first
    /// `disk_fill_mib` written before boot (default: half).
    #[serde(default)]
    pub disk_mib: Option<u64>,
    #[serde(default)]
    pub disk_fill_mib: Option<u64>,
    /// What the disk workloads write, MiB/s.
    #[serde(default)]
    pub write_mibps: Option<f64>,
    /// The disk is on storage every host sees (no copy when it moves).
    #[serde(default)]
    pub disk_shared: bool,
}

impl Topology {
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Topology::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Topology, TopologyError> {
        let t: Topology = toml::from_str(text)?;
        t.validate()?;
        Ok(t)
    }

    fn validate(&self) -> Result<(), TopologyError> {
        let bad = |m: String| Err(TopologyError::Invalid(m));
        if self.hosts.is_empty() {
            return bad("it has no hosts".into());
        }
        let mut names = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        let mut vms = BTreeSet::new();
        for h in &self.hosts {
            if !names.insert(h.name.as_str()) {
                return bad(format!("host {:?} is defined twice", h.name));
            }
            if !addrs.insert(h.address) {
                return bad(format!("address {} is used twice", h.address));
            }
            if h.capacity_mbps == 0 {
                return bad(format!("host {:?}: capacity_mbps must be positive", h.name));
            }
            for vm in &h.vms {
                if !vms.insert(vm.name.as_str()) {
                    return bad(format!("VM {:?} is defined twice", vm.name));
                }
                let net = matches!(vm.workload, Workload::NetOut | Workload::NetIn);
                if net && (vm.rate_mbps.is_none() || vm.address.is_none()) {
                    return bad(format!(
                        "VM {:?}: a network workload needs rate_mbps and address",
                        vm.name
                    ));
                }
                let disk = matches!(vm.workload, Workload::DiskSteady | Workload::DiskBurst);
                if disk && (vm.disk_mib.is_none() || vm.write_mibps.is_none()) {
                    return bad(format!(
                        "VM {:?}: a disk workload needs disk_mib and write_mibps",
                        vm.name
                    ));
                }
                if let (Some(size), Some(fill)) = (vm.disk_mib, vm.disk_fill_mib) {
                    if fill >= size {
                        return bad(format!(
                            "VM {:?}: disk_fill_mib must be below disk_mib",
                            vm.name
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The hosts with a given role.
    pub fn with_role(&self, role: Role) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(move |h| h.role == role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
        name = "t"
        [[hosts]]
        name = "h1"
        role = "source"
        address = "10.0.0.1"
        capacity_mbps = 100
        [[hosts.vms]]
        name = "vm1"
        memory_mib = 128
        workload = "net-out"
        rate_mbps = 30
        address = "10.0.0.11"
        [[hosts]]
        name = "h2"
        address = "10.0.0.2"
        capacity_mbps = 100
    "#;

    #[test]
    fn parses_with_defaults() {
        let t = Topology::parse(SMALL).unwrap();
        assert_eq!(t.hosts[0].bridge(), "br-h1");
        assert_eq!(t.hosts[1].uplink(), "h2-up");
        assert_eq!(t.hosts[1].role, Role::Other);
        assert_eq!(t.hosts[0].vms[0].workload, Workload::NetOut);
        assert_eq!(t.with_role(Role::Source).count(), 1);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        for (from, to, needle) in [
            (
                "capacity_mbps = 100\n        [[hosts.vms]]",
                "capacity = 1\n        [[hosts.vms]]",
                "unknown field",
            ),
            ("rate_mbps = 30", "", "rate_mbps"),
            (
                "address = \"10.0.0.2\"",
                "address = \"10.0.0.1\"",
                "used twice",
            ),
            (
                "workload = \"net-out\"",
                "workload = \"disk\"",
                "unknown variant",
            ),
            (
                "workload = \"net-out\"",
                "workload = \"disk-steady\"",
                "needs disk_mib and write_mibps",
            ),
            (
                "workload = \"net-out\"",
                "workload = \"idle\"\n        disk_mib = 64\n        disk_fill_mib = 64",
                "disk_fill_mib must be below disk_mib",
            ),
        ] {
            let text = SMALL.replacen(from, to, 1);
            let e = Topology::parse(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{from} -> {to}: {e}");
        }
    }
}
