#!/usr/bin/env bash
# Installs what solive's tests, benchmarks and demo need on a Debian 12 machine,
# plus any packages named as arguments (mininet/install.sh passes the
# testbed's). Idempotent: packages already present are not touched, and
# apt-get update runs only when something is missing. Needs root.
set -euo pipefail

PACKAGES=(
  openvswitch-switch   # ovsdb-server, ovs-vswitchd, ovs-vsctl, ovs-ofctl
  redis-server         # the scatter-gather stores (tests/scatter_gather.rs, testbed intermediaries)
  iproute2             # ip netns, veth pairs, tc
  ethtool              # turning off TX checksum offload (TCP through the userspace datapath)
  iperf3               # real traffic for the rate tests
  iputils-ping
  procps               # pkill/pgrep used by the sandbox script
  libvirt-dev pkg-config  # building solive: the virt crate links libvirt
  protobuf-compiler    # building solive: etcd-client generates its gRPC code with protoc
  libprotobuf-dev      # ... and protoc needs the well-known types (google/protobuf/*.proto), only a Recommends of protobuf-compiler
  etcd-server          # [cluster] tests: a real etcd, started by tests/cluster.rs
  "$@"
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "ovs/install.sh: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps the install small; policy-rc.d stops the
  # package's init scripts from starting a system-wide OVS we do not use.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Debian package may have started a system ovsdb-server/ovs-vswitchd through
# its init script on machines with an init; solive's sandboxes run their own.
echo "ovs/install.sh: ok ($(ovs-vswitchd --version | head -1))"
