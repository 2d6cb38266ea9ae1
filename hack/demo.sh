#!/usr/bin/env bash
# `make demo`: a local control plane, the CRDs and the examples, shown with plain kubectl.
# Everything it starts is stopped on exit or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d -t vmresize-demo.XXXXXX)
cleanup() { python3 hack/localcluster.py down --dir "$work" || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say "starting a local control plane (etcd + kube-apiserver + kube-controller-manager)"
export KUBECONFIG
KUBECONFIG=$(python3 hack/localcluster.py up --dir "$work")
kubectl version
say "installing the CRDs"
kubectl apply -f crds/
kubectl wait --for=condition=Established -f crds/ --timeout=60s
say "flavors, hosts and an instance"
kubectl apply -f examples/flavors.yaml -f examples/hosts.yaml -f examples/instance.yaml
kubectl get flavors
kubectl get hosts
kubectl get instances
say "a resize"
kubectl apply -f examples/resize.yaml
kubectl get vmresize -o wide
