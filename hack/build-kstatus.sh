#!/usr/bin/env bash
# Builds hack/kstatus (the kstatus library's verdict on objects, for the tests) once into
# $VMRESIZE_CACHE/kstatus/<hash of its sources>/kstatus, from the Go module proxy; prints
# the binary's path. A no-op when that path exists.
set -euo pipefail
cd "$(dirname "$0")/kstatus"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
key=$(cat go.mod go.sum main.go | sha256sum | cut -c1-12)
out="${VMRESIZE_CACHE:-$HOME/.cache/vmresize}/kstatus/$key"
if [[ ! -x "$out/kstatus" ]]; then
  mkdir -p "$out"
  go build -trimpath -ldflags "-s -w" -o "$out/kstatus.tmp" . >&2
  mv "$out/kstatus.tmp" "$out/kstatus"
fi
echo "$out/kstatus"
