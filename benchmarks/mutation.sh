#!/usr/bin/env bash
# Mutation testing of the model's core with mutmut 3 (configured in pyproject.toml [tool.mutmut]:
# scope, the fast test subset, fork-server isolation for torch). Not part of CI.
#
#   bash benchmarks/mutation.sh                      # every module in scope
#   bash benchmarks/mutation.sh "energy_flow.core.carrier*" "energy_flow.core.collection*"
#
# Each argument is a mutant-name glob; results accumulate in mutants/ (git-ignored), so a scope
# can be run in pieces that each fit a time budget. Prints killed / total per module at the end.
# On a shared 2-core machine it runs niced, with one torch thread per worker.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
"$PY" -c "import mutmut" 2>/dev/null || "$PY" -m pip install -q -c constraints.txt -e ".[dev]"
MUTMUT="$(dirname "$PY")/mutmut"
export OMP_NUM_THREADS=1
nice -n 10 "$MUTMUT" run --max-children "${MUTMUT_CHILDREN:-2}" "$@" || true
"$PY" benchmarks/mutation_summary.py
