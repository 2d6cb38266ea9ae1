#!/usr/bin/env bash
# Installs OpenSSH's server binary for the transfer benchmark's baselines, without letting
# the package start a system sshd (policy-rc.d 101 = "do not start services"): the
# benchmark runs its own sshd on 127.0.0.1 and stops it by PID.
set -euo pipefail
[[ -x /usr/sbin/sshd ]] && exit 0
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
policy=/usr/sbin/policy-rc.d
added=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  added=1
fi
trap '((added)) && $sudo rm -f "$policy"' EXIT
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
