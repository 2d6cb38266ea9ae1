#!/usr/bin/env bash
# `make demo`: the whole vmresize story on one machine, with plain kubectl.
#
# A local control plane (etcd + kube-apiserver + kube-controller-manager), the operator,
# and three agents that each play one hypervisor host: their own embedded QEMU root
# (qemu:///embed), storage root and migration address (127.0.0.2-4). The VM really boots
# (hack/guest.py: Debian's kernel and a busybox initramfs, `make guest`): an admin's domain
# on hv-1 with a root disk, a data disk and one user-mode NIC, adopted by an Instance. It
# is resized and confirmed (an ACPI power-off the guest answers; it boots on the new host
# with its MAC), then resized again and reverted.
# With KUBECONFIG set to a reachable cluster, the local control plane is skipped.
# Everything started here is stopped, by PID, on exit or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=$REPO/.venv/bin/python
NS=vmresize-system
MAC=52:54:00:de:00:01  # the admin's VM's NIC
TIMEOUT=${DEMO_TIMEOUT:-600}

work=$(mktemp -d -t vmresize-demo.XXXXXX)
pids=()
own_cluster=0
stop_pids() {
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "$@"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null
  done
}
cleanup() {
  local rc=$?
  trap '' INT TERM PIPE  # neither a second Ctrl-C nor a closed pipe may cut it short
  set +e
  if ((rc != 0)); then
    kubectl get hosttasks -A -o yaml >"$work/hosttasks.dump.log" 2>&1
    kubectl get vmresize -A -o yaml >"$work/vmresize.dump.log" 2>&1
    [[ -n ${DEMO_DUMP:-} ]] && cp "$work"/*.log "$DEMO_DUMP"/
    for log in "$work"/*.log; do
      [[ -f $log ]] && { echo "--- last lines of $(basename "$log")"; tail -n 25 "$log"; }
    done
  fi
  stop_pids "${pids[@]}"
  # An agent leaves its VMs running when it stops (a DaemonSet restart must not kill
  # guests), so the VMs the demo's agents started are stopped here, by their pid files.
  local vms=() f
  for f in "$work"/hv-*/libvirt/run/qemu/*.pid; do
    [[ -f $f ]] && vms+=("$(cat "$f")")
  done
  stop_pids "${vms[@]}"
  ((own_cluster)) && python3 -m hack.localcluster down --dir "$work/cluster"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[36m$ %s\033[0m\n' "$*"; "$@"; }
started=$SECONDS
elapsed() { echo "$((SECONDS - started))s"; }

if [[ -n ${KUBECONFIG:-} ]] && kubectl version --request-timeout=5s >/dev/null 2>&1; then
  bold "using the cluster in KUBECONFIG=$KUBECONFIG"
else
  bold "starting a local control plane (etcd + kube-apiserver + kube-controller-manager)"
  own_cluster=1
  export KUBECONFIG
  KUBECONFIG=$(python3 -m hack.localcluster up --dir "$work/cluster")
  kubectl version
fi

bold "installing the CRDs and the operator namespace"
run kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
run kubectl wait --for=condition=Established -f crds/ --timeout=60s
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null

# The migration key is one keypair that every agent shares (in a cluster, a Secret).
ssh-keygen -q -t ed25519 -N '' -C vmresize-migration -f "$work/migration_key"

bold "starting the operator"
# Free ports, picked here: fixed ones would collide with a second demo on the machine.
free_port() {  # free_port ADDRESS
  python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"
}
metrics_port=$(free_port 127.0.0.1)
# The guest answers an ACPI power-off in a few seconds; it is forced only after 30 s.
VMRESIZE_NAMESPACE=$NS VMRESIZE_METRICS_PORT=$metrics_port VMRESIZE_POWER_OFF_TIMEOUT_SECONDS=30 \
  "$PY" -m vmresize.operator --standalone >"$work/operator.log" 2>&1 &
pids+=($!)

bold "an admin's VM on hv-1, defined outside vmresize: the booting guest, one NIC ($MAC)"
# Defined and started before hv-1's agent opens the same embedded root; QEMU outlives the
# helper, as a VM outlives an agent restart.
run "$PY" -m hack.demo_guest create --uri "qemu:///embed?root=$work/hv-1/libvirt" \
  --storage-root "$work/hv-1/storage" --name web-1 --mac "$MAC" 2>>"$work/guest.log"

bold "starting three agents, each one hypervisor with its own embedded QEMU"
agent_metrics=()
for i in 1 2 3; do
  host=hv-$i
  mkdir -p "$work/$host"
  agent_metrics[i]=127.0.0.$((i + 1)):$(free_port "127.0.0.$((i + 1))")
  "$PY" -m vmresize.agent --host-name "$host" \
    --libvirt-uri "qemu:///embed?root=$work/$host/libvirt" \
    --storage-root "$work/$host/storage" --state-dir "$work/$host/state" \
    --migration-address "127.0.0.$((i + 1))" --migration-port "$(free_port "127.0.0.$((i + 1))")" \
    --metrics-address "127.0.0.$((i + 1))" --metrics-port "${agent_metrics[i]#*:}" \
    --migration-key-file "$work/migration_key" --namespace "$NS" \
    >"$work/agent-$host.log" 2>&1 &
  pids+=($!)
done
exists() {  # kubectl wait fails at once on an object that does not exist yet
  local deadline=$((SECONDS + 120))
  until kubectl get "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "timed out waiting for $*" >&2; return 1; }
    sleep 0.5
  done
}
for i in 1 2 3; do
  exists host/hv-$i
  run kubectl wait host/hv-$i --for=jsonpath='{.status.ready}'=true --timeout=120s
done
run kubectl get hosts -o wide

# What the guest disk holds: the first sector of the instance's qcow2 on its current host,
# read with force-share while QEMU has it open.
show_disk() {
  local host disk
  host=$(kubectl get instance web-1 -o jsonpath='{.status.host}')
  disk=$work/$host/storage/$(kubectl get instance web-1 -o jsonpath='{.status.diskPath}')
  qemu-img dd -U -f qcow2 -O raw bs=512 count=1 if="$disk" of="$work/sector.raw"
  printf '  disk on %s: %s, virtual size %s, first sector says: "%s"\n' "$host" \
    "${disk#"$work"/}" "$(qemu-img info -U -f qcow2 --output=json "$disk" | python3 -c \
      'import json,sys; print(json.load(sys.stdin)["virtual-size"] // 2**30, "GiB")')" \
    "$(tr -d '\0' <"$work/sector.raw")"
  kubectl get instance web-1 --no-headers -o \
    custom-columns=VCPUS:.status.vcpus,MEMORY:.status.memoryMiB,DISK:.status.diskGiB |
    awk '{printf "  instance runs with %s vCPU, %s MiB RAM, %s GiB disk\n", $1, $2, $3}'
}

# The instance's NIC: the QEMU process running it on its current host has the admin's MAC.
show_nic() {
  local host dom pid
  host=$(kubectl get instance web-1 -o jsonpath='{.status.host}')
  dom=$(kubectl get instance web-1 -o jsonpath='{.status.domainName}')
  pid=$(cat "$work/$host/libvirt/run/qemu/$dom.pid" 2>/dev/null || true)
  if [[ -n $pid ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "\"mac\":\"$MAC\""; then
    printf '  NIC %s (user-mode, virtio): QEMU on %s runs it with that MAC\n' "$MAC" "$host"
  else
    printf '  NIC %s: NOT found on the QEMU process on %s\n' "$MAC" "$host"
  fi
}

# What the guest itself reports on its serial console (next to its root disk) once it has
# booted for the Nth time: its NIC's MAC and address, its disks.
serial_of() { echo "$work/$1/storage/$(dirname "$2")/serial.log"; }
show_guest() {  # boot-number
  local host disk
  host=$(kubectl get instance web-1 -o jsonpath='{.status.host}')
  disk=$(kubectl get instance web-1 -o jsonpath='{.status.diskPath}')
  "$PY" -m hack.demo_guest booted --serial "$(serial_of "$host" "$disk")" --boot "$1" \
    --host "$host" --timeout "$TIMEOUT"
}

# How the source went off: the guest's console, and the agent's record in its MigrateDisk
# task (status.result.powerOff: Graceful, or Forced after the timeout).
show_power_off() {  # resize source-host source-serial-log
  "$PY" -m hack.demo_guest stopped --serial "$3" --host "$2"
  kubectl get hosttasks -n "$NS" -o jsonpath="{range .items[?(@.spec.action==\"MigrateDisk\")]}{.spec.owner}{' '}{.status.result.powerOff}{' '}{.status.message}{'\n'}{end}" |
    awk -v owner="default/$1" '$1 == owner {printf "  agent on %s: powerOff=%s, \"", src, $2;
      $1 = $2 = ""; sub(/^ +/, ""); print $0 "\""}' src="$2"
}

# Every copy of the instance's disks on the three hosts, as the agents left them.
copies() {
  local h d
  for h in hv-1 hv-2 hv-3; do
    while IFS= read -r d; do
      [[ -n $d ]] && printf '  %s holds %s\n' "$h" "${d#"$work/$h/storage/"}"
    done < <(find "$work/$h/storage" \( -name '*.qcow2' -o -name '*.raw' \) 2>/dev/null | sort)
  done
}

watch_resize() {
  local name=$1 until=$2 last="" line
  local deadline=$((SECONDS + TIMEOUT))
  while ((SECONDS < deadline)); do
    line=$(kubectl get vmresize "$name" --no-headers \
      -o custom-columns=PHASE:.status.phase,FROM:.status.sourceHost,TO:.status.destHost,PROGRESS:.status.progress.display,MESSAGE:.status.message)
    [[ $line != "$last" && $line != "<none>"* ]] && printf '  [%s] %s\n' "$(elapsed)" "$line" && last=$line
    case $line in
      "$until"*|Failed*|RolledBack*|RollbackFailed*) break ;;
    esac
    sleep 0.5
  done
  [[ $line == "$until"* ]] || { echo "resize $name ended in: $line" >&2; return 1; }
}

bold "flavors, and an Instance that adopts the admin's VM"
cat >"$work/instance.yaml" <<YAML
apiVersion: vmresize.io/v1alpha1
kind: Instance
metadata:
  name: web-1
spec:
  flavor: m1.tiny
  host: hv-1          # adopting is an admin's act: the host and the domain are named
  adopt:
    domainName: web-1
YAML
run kubectl apply -f examples/flavors.yaml
run cat "$work/instance.yaml"
run kubectl apply -f "$work/instance.yaml"
run kubectl wait instance/web-1 --for=jsonpath='{.status.phase}'=Active --timeout=${TIMEOUT}s
run kubectl get flavors
run kubectl get instance web-1 -o wide
show_guest 1  # it boots while the agents start; a resize asks a booted guest to power off
show_disk
show_nic

bold "resize web-1 to m1.small"
src_serial=$(serial_of hv-1 "$(kubectl get instance web-1 -o jsonpath='{.status.diskPath}')")
run cat examples/resize.yaml
run kubectl apply -f examples/resize.yaml
watch_resize web-1-resize VerifyResize
run kubectl get vmresize web-1-resize -o wide
show_power_off web-1-resize hv-1 "$src_serial"
bold "the VM runs on the new host; the old copy is kept until you confirm"
copies
run kubectl patch vmresize web-1-resize --type merge -p '{"spec":{"confirm":true}}'
watch_resize web-1-resize Confirmed
run kubectl get instance web-1 -o wide
show_guest 2
show_disk
show_nic
echo "  after confirm, only the new copy is left:"
copies

bold "a second resize, to m1.medium, that is reverted"
cat >"$work/resize2.yaml" <<EOF
apiVersion: vmresize.io/v1alpha1
kind: VMResize
metadata:
  name: web-1-grow
spec:
  instanceName: web-1
  flavor: m1.medium
EOF
run kubectl apply -f "$work/resize2.yaml"
watch_resize web-1-grow VerifyResize
copies
run kubectl patch vmresize web-1-grow --type merge -p '{"spec":{"revert":true}}'
watch_resize web-1-grow Reverted
run kubectl get instance web-1 -o wide
show_guest 3
show_disk
show_nic
copies
run kubectl get vmresize -o wide
run kubectl get hosttasks -n "$NS"
bold "the whole story of the first resize, as kubectl describe tells it"
run kubectl describe vmresize web-1-resize

bold "done in $(elapsed)"
cat <<EOF
Explore further (while this demo runs, in another shell):
  export KUBECONFIG=$KUBECONFIG
  kubectl describe vmresize web-1-resize
  export PATH=$REPO/.venv/bin:\$PATH; kubectl vmresize list   # the plugin (kubectl-vmresize)
  kubectl get hosts -o yaml          # capacity, heartbeat, host keys, allocations
  kubectl get events --sort-by=.lastTimestamp
  curl -s http://127.0.0.1:$metrics_port/metrics          # the operator's metrics
  curl -s http://${agent_metrics[1]}/metrics        # hv-1's agent (hv-2: ${agent_metrics[2]}, hv-3: ${agent_metrics[3]})
  logs: $work/*.log
EOF
if [[ -t 0 && ${DEMO_KEEP:-1} != 0 ]]; then
  read -r -p "Press Enter to stop everything and clean up. " _ || true
fi
