#!/usr/bin/env bash
# Runs pytest from the venv. Exit code 5 ("no tests collected") is a failure here: every
# path we pass holds tests, so collecting none means something is broken, never a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "pytest collected no tests from: $* — treating as a failure" >&2
  exit 1
fi
exit $rc
