#!/usr/bin/env bash
# Installs the system packages vmresize's tests and demo need, idempotently.
#
# libvirt-dev + pkg-config build libvirt-python; the QEMU driver, qemu-system-x86 and
# qemu-utils run real VMs through the embedded driver (qemu:///embed); openssh-client and
# rsync are the baselines the transfer benchmarks compare against. The booting test guest
# (`make guest`, hack/guest.py) is not installed: its kernel and busybox-static are fetched
# with `apt-get download` and unpacked into the cache. hack/libvirtd.py runs libvirtd (from
# libvirt-daemon) in a private mount namespace with util-linux's unshare; libvirt-clients'
# virsh runs the runbook's commands in docs/operations.md (tests/e2e/test_real_libvirtd_runbook.py).
set -euo pipefail

pkgs=(libvirt-dev pkg-config gcc python3-dev libvirt-daemon libvirt-daemon-driver-qemu
      qemu-system-x86 qemu-utils openssh-client rsync openssl libvirt-clients)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The embedded QEMU driver looks this user up even when qemu.conf says user = "root".
if ! getent passwd libvirt-qemu >/dev/null; then
  $sudo useradd --system --no-create-home --shell /usr/sbin/nologin libvirt-qemu
fi
