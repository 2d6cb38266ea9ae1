#!/usr/bin/env bash
# Builds both Dockerfile targets (operator, agent) with buildah, without any registry:
# the base is a Debian bookworm root filesystem made by mmdebstrap from the machine's own
# apt sources, imported as a local image and passed as the Dockerfile's PYTHON_IMAGE.
#
#   bash hack/build-images.sh                  # build (or reuse) the base and both images
#   bash hack/build-images.sh --storage-flags  # print the buildah flags of the image store
#
# Idempotent and cached under $VMRESIZE_CACHE/images (default ~/.cache/vmresize/images):
# the root filesystem tarball and a private containers store (not the system's
# /var/lib/containers, so nothing here meets other images). The base is rebuilt only when
# its recipe or the apt sources change; the images are built with --layers, so an unchanged
# tree re-uses every layer. Remove the directory to start over.
#
# Needs root (mmdebstrap's root mode, buildah's chroot isolation) and the packages
# buildah and mmdebstrap (installed here when missing). Images:
#   localhost/vmresize-operator:$VMRESIZE_IMAGE_TAG, localhost/vmresize-agent:...  (tag: dev)
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${VMRESIZE_CACHE:-$HOME/.cache/vmresize}/images"
# The run root holds locks and mount state only; it belongs on a tmpfs-like place.
runroot="${TMPDIR:-/tmp}/vmresize-images-run-$(id -u)"
store=(--root "$cache/storage" --runroot "$runroot")
tag="${VMRESIZE_IMAGE_TAG:-dev}"

if [[ "${1:-}" == "--storage-flags" ]]; then
  printf '%s\n' "${store[@]}"
  exit 0
fi

# The apt sources of the machine (Debian 12's deb822 file), so the base and the apt-get
# steps in the Dockerfile use the mirror the host uses; mmdebstrap's default otherwise.
sources="${VMRESIZE_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}"
suite=bookworm
variant=minbase
include=python3,python3-venv

missing=()
for tool in buildah mmdebstrap; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

mkdir -p "$cache" "$runroot"
# One build at a time per cache (tests and a developer may both call this).
exec 9>"$cache/lock"
flock 9

# --- the base: a root filesystem, keyed by its recipe and the apt sources ------------------
mirror=()
[[ -f "$sources" ]] && mirror=("$sources")
key="$( { echo "$suite $variant $include"; [[ -f "$sources" ]] && cat "$sources"; } \
        | sha256sum | cut -c1-12)"
rootfs="$cache/rootfs-$suite-$key.tar"
base="localhost/vmresize-base:$suite-$key"

start=$SECONDS
if ! buildah "${store[@]}" inspect --type image "$base" >/dev/null 2>&1; then
  if [[ ! -f "$rootfs" ]]; then
    echo "build-images: mmdebstrap $suite ($include) -> $rootfs" >&2
    mmdebstrap --quiet --format=tar --variant="$variant" --include="$include" "$suite" \
      "$rootfs.part" "${mirror[@]}"
    mv "$rootfs.part" "$rootfs"
  fi
  echo "build-images: importing $rootfs as $base" >&2
  importer="vmresize-base-import-$$"
  trap 'buildah "${store[@]}" rm "$importer" >/dev/null 2>&1 || true' EXIT
  buildah "${store[@]}" from --name "$importer" scratch >/dev/null
  buildah "${store[@]}" add "$importer" "$rootfs" / >/dev/null
  buildah "${store[@]}" config --cmd /bin/bash \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$importer"
  buildah "${store[@]}" commit --quiet --rm "$importer" "$base" >/dev/null
  trap - EXIT
fi
echo "build-images: base $base ready in $((SECONDS - start)) s" >&2

# --- the two targets -------------------------------------------------------------------------
# Behind a TLS-intercepting proxy the host's pip names a CA bundle (PIP_CERT, else pip's own
# config, else the system bundle); the build stages that run pip get it as the build secret
# pip-cert (never stored in a layer).
cert=()
pip_cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
[[ -n "$pip_cert" && -f "$pip_cert" ]] || pip_cert=/etc/ssl/certs/ca-certificates.crt
if [[ -f "$pip_cert" ]]; then
  cert=(--secret "id=pip-cert,src=$pip_cert")
fi
for target in operator agent; do
  start=$SECONDS
  buildah "${store[@]}" bud --quiet --isolation chroot --layers --target "$target" \
    --build-arg "PYTHON_IMAGE=$base" "${cert[@]}" \
    --tag "localhost/vmresize-$target:$tag" --file Dockerfile . >/dev/null
  echo "build-images: localhost/vmresize-$target:$tag built in $((SECONDS - start)) s" >&2
done
