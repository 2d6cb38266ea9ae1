# syntax=docker/dockerfile:1
# vmresize images, one file with two targets:
#
#   docker build --target operator -t vmresize-operator .   # kopf operator, no libvirt
#   docker build --target agent    -t vmresize-agent .      # per-hypervisor agent
#
# The entry points are the console scripts of pyproject.toml, the same the Helm chart runs
# (deploy/helm/vmresize: operator-deployment.yaml, agent-daemonset.yaml).
#
# The base is pinned by digest: python:3.11-slim-bookworm as resolved in a public build
# log (linux/amd64 + arm64 index). Refresh with
# `docker buildx imagetools inspect python:3.11-slim-bookworm`.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:528257d48c1da0dcecc2e725d1ae34498d60c965f1241e39cd6a85a8859bdf84

# --- the vmresize wheel (pure Python: api + operator + agent code, no extras) ------------
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY operator ./operator
COPY agent ./agent
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- operator: the base dependencies only, so no libvirt and no asyncssh ----------------
FROM ${PYTHON_IMAGE} AS operator
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /wheels /tmp/wheels
RUN pip install /tmp/wheels/vmresize-*.whl \
    && rm -rf /tmp/wheels
# A fixed numeric non-root user (the chart's operator.podSecurityContext.runAsUser).
USER 65532:65532
EXPOSE 8080 8090
ENTRYPOINT ["vmresize-operator"]

# --- agent build: compiles libvirt-python against libvirt-dev ---------------------------
FROM ${PYTHON_IMAGE} AS agent-build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Debian's bookworm-security stream replaces package versions (and drops the old ones), so
# exact apt pins would break rebuilds; the pinned base digest fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libvirt-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheels /wheels
RUN whl="$(echo /wheels/vmresize-*.whl)" \
    && pip wheel --wheel-dir /wheels "${whl}[agent]"

# --- agent: runtime libraries only (libvirt0 for libvirt-python, qemu-img) ---------------
FROM ${PYTHON_IMAGE} AS agent
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libvirt0 qemu-utils \
    && rm -rf /var/lib/apt/lists/*
COPY --from=agent-build /wheels /tmp/wheels
# The wheel is the one built above (its file name carries the version), offline.
# hadolint ignore=DL3013
RUN whl="$(echo /tmp/wheels/vmresize-*.whl)" \
    && pip install --no-index --find-links=/tmp/wheels "${whl}[agent]" \
    && rm -rf /tmp/wheels
# The agent runs as root: libvirtd authorises qemu:///system by the socket peer's uid,
# and the agent manages disk files libvirt hands to the qemu user (see the chart's
# agent.securityContext, which drops all but the file capabilities).
# hadolint ignore=DL3002
USER 0:0
EXPOSE 2222
ENTRYPOINT ["vmresize-agent"]
