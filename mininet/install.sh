#!/usr/bin/env bash
# Installs what the Mininet + QEMU + libvirt testbed (mininet/testbed) needs on a
# Debian 12 machine, on top of ovs/install.sh. Idempotent: packages already
# present are not touched, and apt-get update runs only when something is
# missing. Needs root. No systemd is needed: the testbed starts its own
# virtlogd/libvirtd per emulated host; a policy-rc.d stops the packages' init
# scripts from starting system-wide daemons during the install.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  qemu-system-x86          # QEMU 7.2 (guests run under -accel tcg)
  qemu-utils
  libvirt-daemon-system    # libvirtd, virtlogd
  libvirt-daemon-driver-qemu
  libvirt-clients          # virsh
  libvirt-dev              # for the virt crate, later
  mininet                  # system Python (run with /usr/bin/python3)
  linux-image-cloud-amd64  # the guests' kernel (/boot/vmlinuz-*-cloud-amd64)
  busybox-static           # the guests' userland
  cpio                     # packing the guests' initramfs
  gcc libc6-dev            # the guests' static memory-dirtying program
  redis-server             # the intermediaries' scatter-gather store
  iperf3 ethtool iproute2 util-linux
  python3
)

# The same idempotent installer as Open vSwitch's, with these on top.
bash ovs/install.sh "${PACKAGES[@]}"

# Linux-image postinst may not have run update-initramfs usefully without an
# init; the testbed only needs the kernel image itself.
ls /boot/vmlinuz-*cloud-amd64 >/dev/null
echo "mininet/install.sh: ok ($(libvirtd --version | head -1); $(qemu-system-x86_64 --version | head -1))"
