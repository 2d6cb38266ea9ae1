#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl, etcd and helm from Go modules, once.
#
# The binaries are cached outside the repository, keyed by version, under
# ${VMRESIZE_CACHE:-~/.cache/vmresize}/k8s-<version>/bin. A second run finds them and exits.
# Why a wrapper module: k8s.io/kubernetes' go.mod replaces its staging modules with
# ./staging/src paths and requires them at v0.0.0, so `go install` cannot build it
# (golang/go#44840); pinning each staging module to v0.<minor>.<patch> makes it buildable.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.33.13}
HELM_VERSION=${HELM_VERSION:-v3.17.3}
CACHE=${VMRESIZE_CACHE:-$HOME/.cache/vmresize}
OUT=$CACHE/k8s-$K8S_VERSION
BIN=$OUT/bin

want=(kube-apiserver kube-controller-manager kubectl etcd helm)
missing=()
for b in "${want[@]}"; do [[ -x $BIN/$b ]] || missing+=("$b"); done
if ((${#missing[@]} == 0)); then
  echo "control plane $K8S_VERSION cached in $BIN"
  exit 0
fi

# Two builds at once (parallel checkouts, a test and `make deps`) would race on the .tmp
# files and the module cache; the second waits for the first, then finds the binaries.
mkdir -p "$CACHE"
exec 9>"$CACHE/.control-plane.lock"
flock 9
missing=()
for b in "${want[@]}"; do [[ -x $BIN/$b ]] || missing+=("$b"); done
if ((${#missing[@]} == 0)); then
  echo "control plane $K8S_VERSION cached in $BIN"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build the control plane" >&2; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$BIN" "$OUT/src"
cd "$OUT/src"

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
patch=${K8S_VERSION##*.}
staging=v0.$minor.$patch

gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')

{
  echo "module vmresize.local/controlplane"
  echo
  grep -E '^go [0-9]' "$gomod"
  grep -E '^godebug ' "$gomod" | sort -u
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  # The tag's own list of staging modules: every replace into ./staging/src/.
  grep -E '=> \./staging/src/' "$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
} >go.mod

cat >tools.go <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "go.etcd.io/etcd/server/v3"
)
EOF

echo "resolving modules for kubernetes $K8S_VERSION (staging $staging)"
go mod tidy -e >/dev/null 2>&1 || true
go get "k8s.io/kubernetes@$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" >/dev/null

ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

# kubectl too: the machines ship one, but a fresh one without it still gets a matching client.
for cmd in kube-apiserver kube-controller-manager kubectl; do
  if [[ ! -x $BIN/$cmd ]]; then
    echo "building $cmd"
    go build -trimpath -ldflags "-s -w $ldflags" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$BIN/$cmd.tmp" "$BIN/$cmd"
  fi
done

if [[ ! -x $BIN/etcd ]]; then
  echo "building etcd (the version kubernetes $K8S_VERSION pins)"
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$BIN/etcd.tmp" "$BIN/etcd"
fi

if [[ ! -x $BIN/helm ]]; then
  echo "building helm $HELM_VERSION"
  hdir=$OUT/helm-src
  mkdir -p "$hdir" && cd "$hdir"
  [[ -f go.mod ]] || go mod init vmresize.local/helm >/dev/null 2>&1
  go get "helm.sh/helm/v3@$HELM_VERSION" >/dev/null
  hl="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  hl+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  hl+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  go build -trimpath -ldflags "-s -w $hl" -o "$BIN/helm.tmp" helm.sh/helm/v3/cmd/helm
  mv "$BIN/helm.tmp" "$BIN/helm"
fi

echo "control plane $K8S_VERSION built into $BIN"
