#!/usr/bin/env bash
# Installs what the QEMU + libvirt testbed (mininet/testbed) and solive's build
# need on a Debian 12 machine, on top of ovs/install.sh. Idempotent: packages
# already present are not touched, and apt-get update runs only when something
# is missing. Needs root. No systemd is needed: the testbed starts its own
# virtlogd/libvirtd per emulated host; a policy-rc.d stops the packages' init
# scripts from starting system-wide daemons during the install.
#
# QEMU and libvirt come from Debian's bookworm-backports (QEMU 10.0, libvirt
# 11.3), not from bookworm itself (QEMU 7.2, libvirt 9.0): on 7.2 guests died
# after migrations that QEMU and libvirt reported complete, with plain
# `virsh migrate` as with solive; on 10.0 none did (README, "Guest deaths";
# experiments/guest-deaths/). Only those packages move: an apt preferences
# file pins them (and what they need from backports) to the suite, and
# everything else keeps Debian 12's versions. SOLIVE_QEMU=debian keeps
# Debian 12's own QEMU and libvirt (how the 7.2 figures were measured).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  mininet                  # system Python (run with /usr/bin/python3)
  linux-image-cloud-amd64  # the guests' kernel (/boot/vmlinuz-*-cloud-amd64)
  busybox-static           # the guests' userland
  cpio                     # packing the guests' initramfs
  gcc libc6-dev            # the guests' static memory-dirtying program
  redis-server             # the intermediaries' scatter-gather store
  iperf3 ethtool iproute2 util-linux
  python3
)
# From bookworm-backports unless SOLIVE_QEMU=debian.
VIRT=(
  qemu-system-x86          # guests run under -accel tcg
  qemu-utils
  libvirt-daemon-system    # libvirtd, virtlogd
  libvirt-daemon-driver-qemu
  libvirt-clients          # virsh
  libvirt-dev              # the virt crate links libvirt
)

if [[ ${SOLIVE_QEMU:-backports} == debian ]]; then
  bash ovs/install.sh "${PACKAGES[@]}" "${VIRT[@]}"
else
  bash ovs/install.sh "${PACKAGES[@]}"
  from_backports() { dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null | grep -q '^install ok installed .*~bpo12'; }
  missing=()
  for p in "${VIRT[@]}"; do from_backports "$p" || missing+=("$p"); done
  if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || { echo "mininet/install.sh: need root to install: ${missing[*]}" >&2; exit 1; }
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      # The suite on the mirror this machine already uses for Debian.
      mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
      [[ -n $mirror ]] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
      [[ -n $mirror ]] || { echo "mininet/install.sh: no Debian mirror found in /etc/apt" >&2; exit 1; }
      cat > /etc/apt/sources.list.d/solive-bookworm-backports.sources <<EOF
# Added by solive's mininet/install.sh: QEMU and libvirt for the testbed.
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    # Backports stay at their default priority (100: never chosen unless
    # asked), so an upgrade moves nothing else; the virtualisation stack is
    # held at the backports versions once installed.
    cat > /etc/apt/preferences.d/solive-backports <<'EOF'
# Added by solive's mininet/install.sh.
Package: qemu-* libvirt* libvirt0 ovmf seabios ipxe-qemu
Pin: release n=bookworm-backports
Pin-Priority: 990
EOF
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -qq --no-install-recommends -t bookworm-backports "${VIRT[@]}"
  fi
fi

# Linux-image postinst may not have run update-initramfs usefully without an
# init; the testbed only needs the kernel image itself.
ls /boot/vmlinuz-*cloud-amd64 >/dev/null
echo "mininet/install.sh: ok ($(libvirtd --version | head -1); $(qemu-system-x86_64 --version | head -1))"
