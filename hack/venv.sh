#!/usr/bin/env bash
# Makes (or brings up to date) a venv from the lock: `bash hack/venv.sh [VENV] [LOCK]`
# (defaults .venv and requirements.lock). Every package is installed with
# --require-hashes; setuptools and wheel first (requirements-build.lock), then the rest and
# vmresize itself without build isolation and without dependencies, so nothing is fetched
# that the lock does not name and hash. A venv made from another lock (or another
# version of it) is made afresh, so no package outlives the lock that brought it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
lock="${2:-requirements.lock}"
python="${PYTHON:-python3}"
log="$venv/pip.log"
pip() { "$venv/bin/python" -m pip --disable-pip-version-check "$@" >>"$log" 2>&1 \
          || { cat "$log"; echo "venv: pip $* failed (log: $log)" >&2; exit 1; }; }
stamp="$(cat requirements-build.lock "$lock" | sha256sum | cut -c1-16)"
if [[ -x "$venv/bin/python" && "$(cat "$venv/.lock-sha" 2>/dev/null)" != "$stamp" ]]; then
  echo "venv: $venv was not made from this lock; making it afresh" >&2
  rm -rf "$venv"
fi
test -x "$venv/bin/python" || "$python" -m venv "$venv"
: > "$log"
pip install -q --require-hashes -r requirements-build.lock
pip install -q --require-hashes --no-build-isolation -r "$lock"
pip install -q --no-deps --no-build-isolation -e .
pip check
echo "$stamp" > "$venv/.lock-sha"
