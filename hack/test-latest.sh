#!/usr/bin/env bash
# `make test-latest`: the newest versions pyproject.toml's ranges allow, resolved afresh
# (no lock), in a scratch venv under $VMRESIZE_CACHE; runs the unit tests and the transfer
# tests (real asyncssh on 127.0.0.1, no API server). Prints the versions that differ from
# the lock first, so a failure can be traced to a release. Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VMRESIZE_CACHE:-$HOME/.cache/vmresize}/latest-venv"
rm -rf "$venv"
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade '.[agent,dev]'
echo "test-latest: versions that differ from requirements/dev.txt:"
"$venv/bin/python" -m pip freeze --exclude vmresize | sort | while IFS= read -r pin; do
  name="${pin%%==*}"
  locked="$(grep -i -m1 "^${name}==" requirements/dev.txt | cut -d' ' -f1 || true)"
  [[ "$locked" == "$pin" ]] || echo "  ${pin}   (lock: ${locked:-not in it})"
done
rc=0
"$venv/bin/python" -m pytest -p no:cacheprovider -q tests/unit \
  tests/integration/agent/test_transfer.py tests/integration/agent/test_transfer_faults.py \
  tests/integration/agent/test_fastpath_fallback.py || rc=$?
[[ $rc -eq 5 ]] && { echo "test-latest: no tests collected" >&2; exit 1; }
exit $rc
