#!/usr/bin/env bash
# The demo (the README's "run the main job" command). Builds a small testbed:
# a source host and a destination host, each an Open vSwitch bridge (userspace
# datapath), joined by a 100 Mbit/s HTB-shaped uplink; on the source a VM's
# interface (a namespace whose port carries libvirt's external_ids) and the
# hypervisor's own address; on the destination a receiver. It starts
# `solive serve`, runs an application flow from the VM and a migration-like
# flow from the hypervisor into libvirt's migration port range, first without
# and then with a reservation at urgency 75, and prints what each got and what
# solive measured and reserved. Then it stops solive (SIGTERM: reservations
# removed) and tears everything down. Needs root; installs what it needs.
#
# Evacuating real VMs through libvirt arrives with the evacuation work; this
# shows the parts it stands on: measurement, reservation, enforcement.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state=${SOLIVE_DEMO_DIR:-/tmp/solive-demo}
api=http://127.0.0.1:18080

bash ovs/install.sh
cargo build --release --quiet
bin=$root/target/release/solive

cleanup() {
  set +e
  [[ -n ${solive_pid:-} ]] && kill "$solive_pid" 2>/dev/null && wait "$solive_pid" 2>/dev/null
  for f in "$state"/srv-*.pid; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null; done
  for n in demo-vm demo-hs demo-hd; do ip netns del $n 2>/dev/null; done
  ip link del demo-ups 2>/dev/null
  bash ovs/sandbox.sh stop "$state/ovs" >/dev/null 2>&1
}
trap cleanup EXIT
# The demo's sandbox runs in the root namespace, as the tests' do: wait for them.
exec 9>/tmp/solive-root-ovs.lock
flock 9
cleanup; unset solive_pid
rm -rf "$state"; mkdir -p "$state"

echo "== testbed: Open vSwitch sandbox in $state/ovs, two hosts, a 100 Mbit/s uplink"
db=$(bash ovs/sandbox.sh start "$state/ovs" 2>/dev/null | head -1)
vsctl() { ovs-vsctl --db="$db" "$@"; }
vsctl add-br brs -- set bridge brs datapath_type=netdev
vsctl add-br brd -- set bridge brd datapath_type=netdev
ip link add demo-ups type veth peer name demo-upd
ip link set demo-ups up; ip link set demo-upd up
vsctl add-port brs demo-ups -- add-port brd demo-upd
vsctl -- set port demo-ups qos=@q -- --id=@q create qos type=linux-htb \
  other_config:max-rate=100000000 queues:0=@q0 -- --id=@q0 create queue other_config:max-rate=100000000 >/dev/null
host() { # name bridge ip
  ip netns add "$1"
  ip link add "$1-p" type veth peer name eth0 netns "$1"
  ip link set "$1-p" up
  ip -n "$1" addr add "$3/24" dev eth0
  ip -n "$1" link set eth0 up
  ip -n "$1" link set lo up
  ip netns exec "$1" ethtool -K eth0 tx off >/dev/null
  vsctl add-port "$2" "$1-p"
}
host demo-vm brs 10.195.0.11   # a VM's interface on the source
host demo-hs brs 10.195.0.1    # the source hypervisor's own address
host demo-hd brd 10.195.0.2    # the destination
vsctl set interface demo-vm-p external_ids:vm-id=vm1 external_ids:iface-id=vm1-eth0 \
  external_ids:attached-mac=52:54:00:00:00:01
ip netns exec demo-vm ping -c1 -W3 10.195.0.2 >/dev/null

cat > "$state/solive.toml" <<TOML
[controller]
openflow_listen = "127.0.0.1:16653"
period_ms = 1000
[api]
listen = "127.0.0.1:18080"
[[hosts]]
name = "src"
ovsdb = "$db"
bridge = "brs"
uplink = "demo-ups"
capacity_mbps = 100
address = "10.195.0.1"
[[hosts]]
name = "dst"
ovsdb = "$db"
bridge = "brd"
uplink = "demo-upd"
capacity_mbps = 100
address = "10.195.0.2"
TOML

echo "== starting solive serve (log: $state/solive.log)"
"$bin" serve --config "$state/solive.toml" >"$state/solive.log" 2>&1 &
solive_pid=$!
for _ in $(seq 150); do
  [[ $("$bin" hosts --api $api 2>/dev/null | grep -c ' yes ') == 2 ]] && break
  sleep 0.2
done
"$bin" hosts --api $api

ip netns exec demo-hd iperf3 -s -p 5201 --logfile "$state/srv-app.log" -D -I "$state/srv-app.pid"
ip netns exec demo-hd iperf3 -s -p 49152 --logfile "$state/srv-mig.log" -D -I "$state/srv-mig.pid"
sleep 0.5
flows() { # seconds label
  ip netns exec demo-vm iperf3 -c 10.195.0.2 -p 5201 -t "$1" -J >"$state/app-$2.json" &
  local a=$!
  ip netns exec demo-hs iperf3 -c 10.195.0.2 -p 49152 -t "$1" -b 80M -J >"$state/mig-$2.json" &
  local m=$!
  wait $a $m
  /usr/bin/python3 - "$state/app-$2.json" "$state/mig-$2.json" <<'PY'
import json, sys
def mbps(f):
    return json.load(open(f))["end"]["sum_received"]["bits_per_second"] / 1e6
print("   application (VM -> destination): %5.1f Mbit/s" % mbps(sys.argv[1]))
print("   migration   (host -> 49152):     %5.1f Mbit/s" % mbps(sys.argv[2]))
PY
}

echo "== 8 s without a reservation: both flows on the 100 Mbit/s uplink"
flows 8 before

echo "== POST /v1/reservations {source: src, destination: dst, urgency: 75}"
curl -sf -X POST $api/v1/reservations -H 'content-type: application/json' \
  -d '{"source": "src", "destination": "dst", "urgency": 75, "threshold": 10}' >"$state/reservation.json"
sleep 1
echo "== 10 s with the reservation"
flows 10 during
"$bin" reservations --api $api
curl -sf $api/v1/reservations/1 | /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)
for h in r["hosts"]:
    lim = h["app_limit_bps"]
    print("   %-4s %-12s mode=%-5s reserves %5.1f Mbit/s, applications limited to %s" % (
        h["host"], h["role"], h["mode"], h["reserve_bps"] / 1e6, "-" if lim is None else "%.1f Mbit/s" % (lim / 1e6)))
print("   history (avail%/mig%/reserve%):", " ".join("%.0f/%.0f/%.0f" % (p["avail_pct"], p["mig_pct"], p["reserve_pct"]) for p in r["history"][-8:]))
'
echo "== what Prometheus would scrape"
curl -sf $api/metrics | grep -E '^solive_host_(reserved|used)_percent|^solive_reservations'

echo "== stopping solive (SIGTERM): reservations removed, bridges keep forwarding"
kill "$solive_pid"; wait "$solive_pid" || true; unset solive_pid
OVS_RUNDIR=$state/ovs ovs-ofctl -O OpenFlow13 dump-flows brs | sed 's/^/   /'
ip netns exec demo-vm ping -c 1 -W 2 10.195.0.2 | tail -1 | sed 's/^/   /'
echo "== demo done"
