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
"$venv/bin/python" - <<'PY'
import re
import subprocess
import sys

def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()

locked = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", open("requirements.lock").read(), re.M))
locked = {canon(k): v for k, v in locked.items()}
frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude", "vmresize"],
                        capture_output=True, text=True, check=True).stdout.split()
print("test-latest: versions that differ from requirements.lock:")
for line in sorted(frozen):
    name, _, ver = line.partition("==")
    if locked.get(canon(name)) != ver:
        print(f"  {name} {ver}   (lock: {locked.get(canon(name), 'not in it')})")
PY
rc=0
"$venv/bin/python" -m pytest -p no:cacheprovider -q tests/unit \
  tests/integration/agent/test_transfer.py tests/integration/agent/test_transfer_faults.py \
  tests/integration/agent/test_fastpath_fallback.py || rc=$?
[[ $rc -eq 5 ]] && { echo "test-latest: no tests collected" >&2; exit 1; }
exit $rc
