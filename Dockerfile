# syntax=docker/dockerfile:1
# vmresize images, one file with two targets:
#
#   docker build --target operator -t vmresize-operator .   # kopf operator, no libvirt
#   docker build --target agent    -t vmresize-agent .      # per-hypervisor agent
#
# The entry points are the console scripts of pyproject.toml, the same the Helm chart runs
# (deploy/helm/vmresize: operator-deployment.yaml, agent-daemonset.yaml).
#
# The base is a build argument. Its default is pinned by digest: python:3.11-slim-bookworm
# as resolved in a public build log (linux/amd64 + arm64 index). Refresh with
# `docker buildx imagetools inspect python:3.11-slim-bookworm`.
# Any Debian bookworm image with python3 and python3-venv works too: hack/build-images.sh
# builds on a local mmdebstrap one (no registry needed), and the image test tier runs both
# targets built that way (tests/images).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:528257d48c1da0dcecc2e725d1ae34498d60c965f1241e39cd6a85a8859bdf84

# --- python: the base plus the one virtualenv every image installs into ----------------
# A venv, not the interpreter's site-packages: Debian's python3 refuses pip installs there
# (PEP 668), and the same layout then works on both kinds of base.
FROM ${PYTHON_IMAGE} AS python
# PATH is spelled out: a base imported from a root filesystem has no PATH to extend.
ENV VIRTUAL_ENV=/opt/vmresize \
    PATH=/opt/vmresize/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/vmresize

# --- deps: wheels of the operator's dependencies, from the lock ----------------------------
# Only the build stages reach the network; the images install offline from their wheels.
# Every wheel comes from requirements*.lock (made by `make lock`), pinned with hashes, so
# an image holds the very versions CI tested. The dependency wheels come first and from the
# lock only, so a change to the code re-uses these layers (and the compiled libvirt-python).
FROM python AS deps
WORKDIR /src
COPY requirements-operator.lock requirements-build.lock ./
# The optional build secret pip-cert is a CA bundle for builds behind a TLS-intercepting
# proxy (hack/build-images.sh passes the host pip's); it is mounted for this step only.
# Without it pip uses its own bundle.
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && pip install --require-hashes -r requirements-build.lock \
    && pip wheel --require-hashes --no-build-isolation --wheel-dir /wheels \
       -r requirements-operator.lock

# --- agent build: the agent extra's wheels; compiles libvirt-python against libvirt-dev ----
# libvirt-python ships no wheels, and Debian's python3-libvirt is built for Debian's
# interpreter only (the python image's /usr/local python cannot import it), so the agent
# compiles it from PyPI on either base. Python.h comes with the python image; Debian's
# python3 needs python3-dev for it.
FROM python AS agent-build
# Debian's bookworm-security stream replaces package versions (and drops the old ones), so
# exact apt pins would break rebuilds; the pinned base digest fixes the release.
# hadolint ignore=DL3008,SC2086
RUN pkgs="gcc libc6-dev libvirt-dev pkg-config" \
    && include="$(python3 -c 'import sysconfig; print(sysconfig.get_path("include"))')" \
    && if [ ! -e "${include}/Python.h" ]; then pkgs="${pkgs} python3-dev"; fi \
    && apt-get update \
    && apt-get install -y --no-install-recommends ${pkgs} \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements-agent.lock requirements-build.lock ./
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && pip install --require-hashes -r requirements-build.lock \
    && pip wheel --require-hashes --no-build-isolation --wheel-dir /wheels \
       -r requirements-agent.lock

# --- wheel: vmresize itself (pure Python: api + operator + agent code) ---------------------
FROM python AS wheel
WORKDIR /src
COPY requirements-build.lock ./
COPY pyproject.toml README.md ./
COPY api ./api
COPY operator ./operator
COPY agent ./agent
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && pip install --require-hashes -r requirements-build.lock \
    && pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

# --- operator: the base dependencies only, so no libvirt and no asyncssh ----------------
FROM python AS operator
# Dependencies first and vmresize on its own, so a code change re-installs only vmresize.
COPY --from=deps /wheels /tmp/deps
# The wheels were built from the lock's hashed files (libvirt-python's own wheel is built
# here, so it has no hash in the lock); pip check below sees that they fit together.
# hadolint ignore=DL3013
RUN pip install --no-index --no-deps /tmp/deps/*.whl \
    && rm -rf /tmp/deps
COPY --from=wheel /wheels /tmp/wheels
# hadolint ignore=DL3013
RUN pip install --no-index --no-deps /tmp/wheels/vmresize-*.whl \
    && pip check \
    && rm -rf /tmp/wheels
# A fixed numeric non-root user (the chart's operator.podSecurityContext.runAsUser).
USER 65532:65532
EXPOSE 8080 8090
ENTRYPOINT ["vmresize-operator"]

# --- agent: runtime libraries only (libvirt0 for libvirt-python, qemu-img) ---------------
FROM python AS agent
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libvirt0 qemu-utils \
    && rm -rf /var/lib/apt/lists/*
# Dependencies first and vmresize on its own, as in the operator, all offline.
COPY --from=agent-build /wheels /tmp/deps
# The wheels were built from the lock's hashed files (libvirt-python's own wheel is built
# here, so it has no hash in the lock); pip check below sees that they fit together.
# hadolint ignore=DL3013
RUN pip install --no-index --no-deps /tmp/deps/*.whl \
    && rm -rf /tmp/deps
COPY --from=wheel /wheels /tmp/wheels
# hadolint ignore=DL3013
RUN pip install --no-index --no-deps /tmp/wheels/vmresize-*.whl \
    && pip check \
    && rm -rf /tmp/wheels
# The agent runs as root: libvirtd authorises qemu:///system by the socket peer's uid,
# and the agent manages disk files libvirt hands to the qemu user (see the chart's
# agent.securityContext, which drops all but the file capabilities).
# hadolint ignore=DL3002
USER 0:0
EXPOSE 2222
ENTRYPOINT ["vmresize-agent"]
