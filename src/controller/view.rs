//! What the controller shows of a host (the REST API serialises these).

use std::collections::BTreeMap;

use serde::Serialize;

use super::host::HostInfo;
use super::PortState;
use crate::config::HostConfig;
use crate::switch::SwitchHandle;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostView {
    pub name: String,
    /// True when both the host's ovsdb-server and its switch are connected.
    pub connected: bool,
    pub ovsdb_connected: bool,
    pub switch_connected: bool,
    /// The bridge's datapath id, 16 hex digits.
    pub dpid: Option<String>,
    pub datapath_type: Option<String>,
    pub bridge: String,
    pub uplink: String,
    pub capacity_mbps: u64,
    pub ports: Vec<PortView>,
    pub error: Option<String>,
}

/// A bridge port. `tx` and `rx` are from the switch's side: `tx_bps` is what
/// the switch sends out of the port (towards a VM: what the VM receives),
/// `rx_bps` what it receives on it (from a VM: what the VM sends).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PortView {
    pub port_no: u32,
    pub name: String,
    pub uplink: bool,
    pub tx_bps: Option<f64>,
    pub rx_bps: Option<f64>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub tx_dropped: u64,
    pub rx_dropped: u64,
    /// The VM behind the port, from the interface's external_ids (as libvirt
    /// writes them).
    pub vm: Option<VmInterface>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VmInterface {
    pub vm_id: Option<String>,
    pub iface_id: Option<String>,
    pub attached_mac: Option<String>,
}

pub(super) fn host_view(
    config: &HostConfig,
    ovsdb_connected: bool,
    info: Option<&HostInfo>,
    switch: Option<&SwitchHandle>,
    ports: &BTreeMap<u32, PortState>,
    error: Option<&str>,
) -> HostView {
    let ifaces = info.map(|i| i.interfaces.as_slice()).unwrap_or_default();
    let ports = ports
        .iter()
        .map(|(no, p)| {
            let iface = ifaces.iter().find(|i| {
                i.ofport == Some(i64::from(*no)) || (!p.name.is_empty() && i.name == p.name)
            });
            let name = if p.name.is_empty() {
                iface.map(|i| i.name.clone()).unwrap_or_default()
            } else {
                p.name.clone()
            };
            let vm = iface.and_then(|i| {
                let get = |k: &str| i.external_ids.get(k).cloned();
                let vm = VmInterface {
                    vm_id: get("vm-id"),
                    iface_id: get("iface-id"),
                    attached_mac: get("attached-mac"),
                };
                (vm.vm_id.is_some() || vm.iface_id.is_some()).then_some(vm)
            });
            PortView {
                port_no: *no,
                uplink: name == config.uplink,
                name,
                tx_bps: p.tx.rate(),
                rx_bps: p.rx.rate(),
                tx_bytes: p.tx_bytes,
                rx_bytes: p.rx_bytes,
                tx_packets: p.tx_packets,
                rx_packets: p.rx_packets,
                tx_dropped: p.tx_dropped,
                rx_dropped: p.rx_dropped,
                vm,
            }
        })
        .collect();
    HostView {
        name: config.name.clone(),
        connected: ovsdb_connected && switch.is_some(),
        ovsdb_connected,
        switch_connected: switch.is_some(),
        dpid: info
            .and_then(|i| i.datapath_id)
            .map(|d| format!("{d:016x}")),
        datapath_type: info.map(|i| i.datapath_type.clone()),
        bridge: config.bridge.clone(),
        uplink: config.uplink.clone(),
        capacity_mbps: config.capacity_mbps,
        ports,
        error: error.map(str::to_string),
    }
}
