# vmresize: the two commands are `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The control plane's version and cache (hack/build-control-plane.sh, hack/localcluster.py).
export K8S_VERSION ?= v1.33.13
export VMRESIZE_CACHE ?= $(HOME)/.cache/vmresize
# A system kubectl comes first; the one built with the control plane is the fallback.
export PATH := $(PATH):$(VMRESIZE_CACHE)/k8s-$(K8S_VERSION)/bin

.PHONY: all deps venv lock test-latest control-plane guest lint test test-unit test-integration test-e2e test-images demo bench crds clean

all: test

deps: venv control-plane guest

# System packages (libvirt, QEMU, qemu-utils, ...) and the venv, from the lock
# (requirements.lock, hashes required: hack/venv.sh); re-run when the lock changes.
$(STAMP): pyproject.toml requirements.lock requirements-build.lock hack/venv.sh hack/install-deps.sh
	bash hack/install-deps.sh
	PYTHON=$(PYTHON) bash hack/venv.sh $(VENV) requirements.lock
	touch $(STAMP)

venv: $(STAMP)

# Refresh the lock files from pyproject.toml's ranges (uv, pinned, in a tool venv under
# $(VMRESIZE_CACHE)); UPGRADE=1 takes the newest allowed versions, else pins are kept.
lock:
	bash hack/lock.sh

# The newest versions pyproject.toml's ranges allow, in a scratch venv (not the lock):
# the unit tests and the transfer tests. Not part of `make test`; run it before a release
# or a lock refresh to learn what a fresh unpinned install would meet.
test-latest: deps
	bash hack/test-latest.sh

# kube-apiserver, kube-controller-manager, etcd and helm, built once into ~/.cache/vmresize.
control-plane:
	bash hack/build-control-plane.sh

# The booting test guest (Debian cloud kernel + busybox initramfs), built once into
# $(VMRESIZE_CACHE)/guest from `apt-get download`ed packages; nothing is installed.
guest:
	$(PYTHON) -m hack.guest build

# CRDs from the API models; the chart's settings schema, values comments and docs/settings.md
# from the settings models; docs/reference.md and the lifecycle diagram in docs/concepts.md.
crds: venv
	$(PY) -m vmresize.api.crdgen
	$(PY) hack/settingsgen.py
	$(PY) hack/docsgen.py

lint: venv
	$(PY) -m vmresize.api.crdgen --check
	$(PY) hack/settingsgen.py --check
	$(PY) hack/docsgen.py --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	PYTHONPATH=api:operator:agent $(VENV)/bin/lint-imports

test-unit: venv
	bash hack/pytest.sh tests/unit

test-integration: deps
	bash hack/pytest.sh tests/integration

test-e2e: deps
	bash hack/pytest.sh tests/e2e

# Both images, built with buildah on a local Debian base (hack/build-images.sh), then run.
test-images: venv
	bash hack/pytest.sh tests/images

# Lint and type checks first, then all four tiers in one pytest session (one control plane);
# the 40 slowest tests are listed at the end, to see where the minutes go.
test: deps lint
	bash hack/pytest.sh tests --durations=40

demo: deps
	bash hack/demo.sh

# Benchmarks, on demand (never part of `make test`). The transfer benchmark needs OpenSSH's
# sshd binary for its scp/rsync baselines; it starts its own on 127.0.0.1. The fleet and
# end-to-end ones start their own control plane (and agents); results in bench/results/.
bench: deps
	bash hack/install-sshd.sh
	$(PY) -m bench.scheduler
	$(PY) bench/transfer.py
	$(PY) -m bench.fleet
	$(PY) -m bench.endtoend
	$(PY) -m bench.downtime   # real QEMU guests: offline vs pre-copy, 256 MiB to 4 GiB

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
