#!/usr/bin/env bash
# The demo (the README's "run the main job" command): builds a small testbed of
# two hosts in network namespaces on a real Open vSwitch bridge (userspace
# datapath), starts `solive serve` on it, drives real iperf3 traffic and prints
# what solive measured per port, then stops solive cleanly and tears the
# testbed down. Needs root; installs what it needs.
#
# Evacuating VMs (ordering, reservations, libvirt migrations) arrives with the
# testbed and evacuation work; this demo shows the controller core that all of
# it stands on: OVSDB configuration, OpenFlow 1.3 session, port rates, REST.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state=${SOLIVE_DEMO_DIR:-/tmp/solive-demo}

bash ovs/install.sh
cargo build --release --quiet
bin=$root/target/release/solive

cleanup() {
  set +e
  [[ -n ${solive_pid:-} ]] && kill "$solive_pid" 2>/dev/null && wait "$solive_pid" 2>/dev/null
  ip netns del demo-h1 2>/dev/null; ip netns del demo-h2 2>/dev/null
  bash ovs/sandbox.sh stop "$state/ovs" >/dev/null 2>&1
}
trap cleanup EXIT
cleanup; unset solive_pid
rm -rf "$state"; mkdir -p "$state"

echo "== starting Open vSwitch sandbox in $state/ovs"
db=$(bash ovs/sandbox.sh start "$state/ovs" 2>/dev/null | head -1)
vsctl() { ovs-vsctl --db="$db" "$@"; }
vsctl add-br br0 -- set bridge br0 datapath_type=netdev
for i in 1 2; do
  ip netns add demo-h$i
  ip link add demo-p$i type veth peer name eth0 netns demo-h$i
  ip link set demo-p$i up
  ip -n demo-h$i addr add 10.198.0.$i/24 dev eth0
  ip -n demo-h$i link set eth0 up
  ip -n demo-h$i link set lo up
  ip netns exec demo-h$i ethtool -K eth0 tx off >/dev/null
done
# demo-p1 plays a VM's port (external_ids as libvirt writes them); demo-p2 the uplink.
vsctl add-port br0 demo-p1 -- set interface demo-p1 external_ids:vm-id=vm1 \
  external_ids:iface-id=vm1-eth0 external_ids:attached-mac=52:54:00:00:00:01
vsctl add-port br0 demo-p2

cat > "$state/solive.toml" <<TOML
[controller]
openflow_listen = "127.0.0.1:16653"
period_ms = 1000
[api]
listen = "127.0.0.1:18080"
[[hosts]]
name = "h1"
ovsdb = "$db"
bridge = "br0"
uplink = "demo-p2"
capacity_mbps = 100
TOML

echo "== starting solive serve (log: $state/solive.log)"
"$bin" serve --config "$state/solive.toml" >"$state/solive.log" 2>&1 &
solive_pid=$!
api=http://127.0.0.1:18080
for _ in $(seq 100); do
  curl -sf $api/v1/hosts/h1 2>/dev/null | grep -q '"connected":true' && break
  sleep 0.2
done
curl -sf $api/v1/hosts/h1 | grep -q '"connected":true' || { echo "solive did not connect"; cat "$state/solive.log"; exit 1; }
echo "   connected; bridge now: fail_mode=$(vsctl get bridge br0 fail_mode) controller=$(vsctl get-controller br0)"

echo "== 8 s of iperf3 from the VM (h1) to the far side (h2)"
ip netns exec demo-h2 iperf3 -s -1 -B 10.198.0.2 >/dev/null &
sleep 0.5
ip netns exec demo-h1 iperf3 -c 10.198.0.2 -t 8 -b 80M >"$state/iperf3.txt" &
iperf=$!
sleep 5
echo "== what solive measures (GET /v1/hosts/h1, mid-transfer)"
curl -sf $api/v1/hosts/h1 > "$state/h1.json"
/usr/bin/python3 - "$state/h1.json" <<'PY'
import json, sys
h = json.load(open(sys.argv[1]))
print("host %s: connected=%s dpid=%s datapath=%s" % (h["name"], h["connected"], h["dpid"], h["datapath_type"]))
print("%5s %-10s %-6s %-5s %10s %10s" % ("port", "name", "uplink", "vm", "rx Mbit/s", "tx Mbit/s"))
for p in h["ports"]:
    r = lambda v: "-" if v is None else "%.1f" % (v / 1e6)
    vm = (p["vm"] or {}).get("vm_id") or ""
    print("%5s %-10s %-6s %-5s %10s %10s" % (p["port_no"], p["name"], p["uplink"], vm, r(p["rx_bps"]), r(p["tx_bps"])))
PY
wait $iperf
echo "== iperf3 says:"; grep -E "sender|receiver" "$state/iperf3.txt"

echo "== stopping solive (SIGTERM): reservations removed, bridge keeps forwarding"
kill "$solive_pid"; wait "$solive_pid" || true; unset solive_pid
OVS_RUNDIR=$state/ovs ovs-ofctl -O OpenFlow13 dump-flows br0
ip netns exec demo-h1 ping -c 1 -W 2 10.198.0.2 | tail -2
echo "== demo done"
