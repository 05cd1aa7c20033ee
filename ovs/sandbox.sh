#!/usr/bin/env bash
# Starts and stops a private Open vSwitch (ovsdb-server + ovs-vswitchd with the
# userspace datapath) in a directory of its own, without systemd. Several
# sandboxes run side by side in different directories.
#
#   ovs/sandbox.sh start DIR [--netns NS]   start (DIR is created); prints the db socket
#   ovs/sandbox.sh stop DIR                 stop both daemons and remove their runtime files
#   ovs/sandbox.sh status DIR               exit 0 if both daemons run
#   ovs/sandbox.sh env DIR                  print the exports that make ovs-vsctl/ovs-ofctl use DIR
#   ovs/sandbox.sh vsctl DIR ARGS...        ovs-vsctl against this sandbox
#   ovs/sandbox.sh ofctl DIR ARGS...        ovs-ofctl against this sandbox (finds BR.mgmt in DIR)
#
#   ovs/sandbox.sh restart-switch DIR       kill ovs-vswitchd and start it again (its
#                                           flows and meters are lost, OVSDB stays)
#   ovs/sandbox.sh cleanup-stale ROOT       stop sandboxes under ROOT whose owner is gone
#
# --netns NS runs ovs-vswitchd inside network namespace NS (created if missing,
# deleted again by stop). Two ovs-vswitchd processes in one namespace would both
# create the userspace datapath's "ovs-netdev" tap device, so the second and
# later sandboxes on a machine each need a namespace of their own. So that such a
# switch can reach a controller in the root namespace, start also links NS to the
# root namespace with a veth pair (root side sbcN = 169.254.N.1/30, NS side ctl0 =
# 169.254.N.2/30) and prints a second line "controller_ip=169.254.N.1".
set -euo pipefail

usage() { sed -n '2,16p' "$0" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
cmd=$1; dir=$2; shift 2
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

export OVS_RUNDIR=$dir OVS_LOGDIR=$dir OVS_DBDIR=$dir OVS_SYSCONFDIR=$dir
db=unix:$dir/db.sock

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  local netns=""
  while [[ $# -gt 0 ]]; do
    case $1 in
      --netns) netns=$2; shift 2 ;;
      *) usage ;;
    esac
  done
  if alive "$dir/ovsdb-server.pid" || alive "$dir/ovs-vswitchd.pid"; then
    echo "sandbox.sh: a sandbox already runs in $dir (stop it first)" >&2
    exit 1
  fi
  rm -f "$dir"/*.pid "$dir"/*.ctl "$dir"/db.sock "$dir"/*.mgmt "$dir"/*.snoop
  [[ -f $dir/conf.db ]] || ovsdb-tool create "$dir/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  ovsdb-server "$dir/conf.db" \
    --remote=punix:"$dir/db.sock" \
    --remote=db:Open_vSwitch,Open_vSwitch,manager_options \
    --private-key=db:Open_vSwitch,SSL,private_key \
    --certificate=db:Open_vSwitch,SSL,certificate \
    --ca-cert=db:Open_vSwitch,SSL,ca_cert \
    --pidfile="$dir/ovsdb-server.pid" --unixctl="$dir/ovsdb-server.ctl" \
    --log-file="$dir/ovsdb-server.log" --detach --no-chdir
  ovs-vsctl --db="$db" --no-wait init
  local pre=() ctl_ip=""
  if [[ -n $netns ]]; then
    if ! ip netns list | grep -qw "^$netns"; then
      ip netns add "$netns"
      echo "$netns" > "$dir/netns"
    fi
    echo "$netns" > "$dir/netns-name"
    ip -n "$netns" link set lo up
    local n
    for n in $(seq 1 250); do ip link show "sbc$n" >/dev/null 2>&1 || break; done
    ip link add "sbc$n" type veth peer name ctl0 netns "$netns"
    ip addr add "169.254.$n.1/30" dev "sbc$n"
    ip link set "sbc$n" up
    ip -n "$netns" addr add "169.254.$n.2/30" dev ctl0
    ip -n "$netns" link set ctl0 up
    echo "sbc$n" > "$dir/ctl-link"
    ctl_ip=169.254.$n.1
    pre=(ip netns exec "$netns")
  fi
  start_vswitchd "${pre[@]}"
  echo "$db"
  [[ -z $ctl_ip ]] || echo "controller_ip=$ctl_ip"
}

start_vswitchd() {
  "$@" env OVS_RUNDIR="$dir" OVS_LOGDIR="$dir" OVS_DBDIR="$dir" \
    ovs-vswitchd "$db" \
    --pidfile="$dir/ovs-vswitchd.pid" --unixctl="$dir/ovs-vswitchd.ctl" \
    --log-file="$dir/ovs-vswitchd.log" --detach --no-chdir -vconsole:off
}

restart_switch() {
  local pid; pid=$(cat "$dir/ovs-vswitchd.pid")
  kill -9 "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$dir/ovs-vswitchd.pid" "$dir/ovs-vswitchd.ctl" "$dir"/*.mgmt "$dir"/*.snoop
  local pre=()
  [[ -f $dir/netns-name ]] && pre=(ip netns exec "$(cat "$dir/netns-name")")
  start_vswitchd "${pre[@]}"
}

stop() {
  local p
  # "exit --cleanup" makes ovs-vswitchd delete its datapath and the tap devices
  # of the userspace datapath (ovs-netdev, bridge internal ports), which a plain
  # kill leaves behind to break the next sandbox.
  if alive "$dir/ovs-vswitchd.pid"; then
    timeout 5 ovs-appctl -t "$dir/ovs-vswitchd.ctl" exit --cleanup >/dev/null 2>&1 || true
  fi
  for p in ovs-vswitchd ovsdb-server; do
    if alive "$dir/$p.pid"; then
      local pid; pid=$(cat "$dir/$p.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/$p.pid" "$dir/$p.ctl"
  done
  rm -f "$dir"/db.sock "$dir"/*.mgmt "$dir"/*.snoop
  if [[ -f $dir/ctl-link ]]; then
    ip link del "$(cat "$dir/ctl-link")" 2>/dev/null || true
    rm -f "$dir/ctl-link"
  fi
  if [[ -f $dir/netns ]]; then
    ip netns del "$(cat "$dir/netns")" 2>/dev/null || true
    rm -f "$dir/netns"
  fi
  rm -f "$dir/netns-name"
}

# Stops every sandbox below ROOT (one level deep, as the tests make them) whose
# ovsdb-server pid file is still there: left over from a killed test run.
cleanup_stale() {
  local d
  for d in "$dir"/solive-ovs-*/; do
    [[ -f $d/ovsdb-server.pid || -f $d/ovs-vswitchd.pid ]] || continue
    "$0" stop "$d" || true
  done
}

case $cmd in
  start) start "$@" ;;
  stop) stop ;;
  cleanup-stale) cleanup_stale ;;
  restart-switch) restart_switch ;;
  status) alive "$dir/ovsdb-server.pid" && alive "$dir/ovs-vswitchd.pid" ;;
  env) echo "export OVS_RUNDIR=$dir OVS_LOGDIR=$dir OVS_DBDIR=$dir OVS_SYSCONFDIR=$dir" ;;
  vsctl) exec ovs-vsctl --db="$db" "$@" ;;
  ofctl) exec ovs-ofctl "$@" ;;
  *) usage ;;
esac
