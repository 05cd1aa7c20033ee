"""solive's topologies (topologies/*.toml) for stock Mininet users.

As a Mininet custom topology:

  sudo mn --custom mininet/solive_topo.py --topo solive,two-hosts \\
          --switch ovs,datapath=user,protocols=OpenFlow13 --link tc \\
          --controller remote,ip=127.0.0.1,port=6653

and the matching controller configuration (the ovsdb socket Mininet's
Open vSwitch uses; the default is the system one):

  /usr/bin/python3 mininet/solive_topo.py config two-hosts [--ovsdb unix:PATH] > solive.toml
  /usr/bin/python3 mininet/solive_topo.py vm-ports two-hosts > vm-ports.mn   # for mn --pre vm-ports.mn
  solive serve --config solive.toml

Each host of the topology becomes a Mininet host at its fabric address (the
hypervisor host's presence on the network) behind a switch named as the
topology's bridge; each bridge's uplink, named as in the topology, goes to one
core switch and is shaped to the host's capacity (`--link tc`, HTB). A VM
with an address (the network workloads) becomes a Mininet host too, on its
hypervisor host's bridge through the port `HOST-VM`, which solive counts as
the VM's once it carries `external_ids:vm-id` (libvirt's hook sets it on the
QEMU testbed; here `mininet/solive_topo.py vm-ports NAME` prints the
`ovs-vsctl` commands, and `mn --pre` can run them). Mininet hosts are plain
network namespaces: no guest runs (`mininet/testbed` runs guests on
libvirt). Every host turns TX checksum offload off on its interfaces,
without which TCP stalls through the userspace datapath.

Run with Debian's Python (/usr/bin/python3), where Mininet is installed.
"""

import argparse
import ipaddress
import os
import sys
import tomllib

from mininet.node import Host, OVSSwitch
from mininet.topo import Topo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name):
    """A topology by name (topologies/NAME.toml) or path."""
    path = name if name.endswith(".toml") else os.path.join(REPO, "topologies", name + ".toml")
    with open(path, "rb") as f:
        return tomllib.load(f)


class SoliveHost(Host):
    """A Mininet host whose interfaces do not offload TX checksums."""

    def config(self, **params):
        r = super().config(**params)
        for intf in self.intfList():
            if intf.name != "lo":
                self.cmd("ethtool -K", intf.name, "tx off >/dev/null 2>&1")
        return r


class CoreSwitch(OVSSwitch):
    """The fabric's core: plain learning (standalone), no controller. solive
    controls the hosts' bridges only; a core under it would get no flows
    and drop everything (as `mininet/testbed`'s core, it is not a host's)."""

    def __init__(self, name, **params):
        params.update(failMode="standalone", datapath="user")
        super().__init__(name, **params)

    def start(self, controllers):
        return super().start([])


class SoliveTopo(Topo):
    """topologies/NAME.toml as switches, hosts and shaped uplinks."""

    def build(self, name="two-hosts"):
        t = load(name)
        prefix = ipaddress.ip_network(t.get("fabric", {}).get("subnet", "10.0.0.0/24")).prefixlen
        # Mininet takes a datapath id from digits in a switch's name; these
        # names have none that are unique, so each gets its own.
        core = self.addSwitch("core", dpid="%016x" % 1, cls=CoreSwitch)
        for i, h in enumerate(t["hosts"], start=2):
            sw = self.addSwitch(h["bridge"], dpid="%016x" % i)
            host = self.addHost(h["name"], ip=f"{h['address']}/{prefix}", cls=SoliveHost)
            self.addLink(host, sw)
            self.addLink(sw, core, intfName1=h["uplink"], bw=h["capacity_mbps"])
            for vm in h.get("vms", []):
                if vm.get("address"):
                    v = self.addHost(vm["name"], ip=f"{vm['address']}/{prefix}", cls=SoliveHost)
                    self.addLink(v, sw, intfName2=vm_port(h, vm))


topos = {"solive": SoliveTopo}


def vm_port(host, vm):
    """The bridge's port of a VM (as on the QEMU testbed)."""
    return f"{host['name']}-{vm['name']}"


def vm_port_commands(name):
    """`ovs-vsctl` commands that mark each VM's port as the VM's."""
    return [f"ovs-vsctl set interface {vm_port(h, vm)} external_ids:vm-id={vm['name']} "
            f"external_ids:iface-id={vm['name']}-eth0"
            for h in load(name)["hosts"] for vm in h.get("vms", []) if vm.get("address")]


def config(name, ovsdb, openflow, api):
    """solive.toml for the Mininet network of topology `name`."""
    t = load(name)
    out = ["# For Mininet with mininet/solive_topo.py: `solive serve --config THIS`.",
           "[controller]", f'openflow_listen = "{openflow}"', "", "[api]", f'listen = "{api}"']
    for h in t["hosts"]:
        out += ["", "[[hosts]]", f'name = "{h["name"]}"', f'ovsdb = "{ovsdb}"',
                f'bridge = "{h["bridge"]}"', f'uplink = "{h["uplink"]}"',
                f'capacity_mbps = {h["capacity_mbps"]}', f'address = "{h["address"]}"']
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description="solive's topologies for Mininet")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("config", help="print the solive.toml for a topology run in Mininet")
    c.add_argument("topology")
    c.add_argument("--ovsdb", default="unix:/var/run/openvswitch/db.sock")
    c.add_argument("--openflow", default="127.0.0.1:6653")
    c.add_argument("--api", default="127.0.0.1:8080")
    v = sub.add_parser("vm-ports", help="print the `mn --pre` lines that mark the VMs' ports")
    v.add_argument("topology")
    args = ap.parse_args()
    if args.cmd == "config":
        sys.stdout.write(config(args.topology, args.ovsdb, args.openflow, args.api))
    else:
        sys.stdout.write("".join(f"sh {c}\n" for c in vm_port_commands(args.topology)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
