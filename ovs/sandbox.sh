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
# --netns NS runs ovs-vswitchd inside network namespace NS. Two ovs-vswitchd
# processes in one namespace would both create the userspace datapath's
# "ovs-netdev" tap device, so the second and later sandboxes of a test should
# each get a namespace of their own.
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
    --pidfile="$dir/ovsdb-server.pid" --unixctl="$dir/ovsdb-server.ctl" \
    --log-file="$dir/ovsdb-server.log" --detach --no-chdir
  ovs-vsctl --db="$db" --no-wait init
  local pre=()
  [[ -n $netns ]] && pre=(ip netns exec "$netns")
  "${pre[@]}" env OVS_RUNDIR="$dir" OVS_LOGDIR="$dir" OVS_DBDIR="$dir" \
    ovs-vswitchd "$db" \
    --pidfile="$dir/ovs-vswitchd.pid" --unixctl="$dir/ovs-vswitchd.ctl" \
    --log-file="$dir/ovs-vswitchd.log" --detach --no-chdir -vconsole:off
  echo "$db"
}

stop() {
  local p
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
}

case $cmd in
  start) start "$@" ;;
  stop) stop ;;
  status) alive "$dir/ovsdb-server.pid" && alive "$dir/ovs-vswitchd.pid" ;;
  env) echo "export OVS_RUNDIR=$dir OVS_LOGDIR=$dir OVS_DBDIR=$dir OVS_SYSCONFDIR=$dir" ;;
  vsctl) exec ovs-vsctl --db="$db" "$@" ;;
  ofctl) exec ovs-ofctl "$@" ;;
  *) usage ;;
esac
