#!/bin/bash
# The lab tests of `make test` (and `make test-extended`), side by side:
#
#   tools/test-lab.sh MARKEXPR [--molecule]
#
# 1. pytest-xdist runs the tests/integration tests matching MARKEXPR on
#    LAB_WORKERS labs at once (default 3; each worker owns lab wN, see
#    tests/integration/conftest.py), longest first (tests/integration/durations.json);
# 2. with --molecule, every Molecule scenario runs at the same time on a lab
#    of its own (lab "mol"), its output kept in build/molecule.log and
#    printed after pytest;
# 3. then, alone, the tests marked quiet (a time bound that labs beside them
#    would break: the CPU is shared);
# 4. then, alone, tests/integration/test_zz_lab_down.py: every lab of the run
#    (lab.py recorded them in build/lab-records) left nothing behind.
#
# Exit status: non-zero when any of the three failed.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
MARK="${1:?usage: tools/test-lab.sh MARKEXPR [--molecule]}"
MOLECULE="${2:-}"
WORKERS="${LAB_WORKERS:-3}"
export LAB_RECORD_DIR="$ROOT/build/lab-records"
rm -rf "$LAB_RECORD_DIR"
mkdir -p build

# The Debian root, once, before labs start side by side.
"$PY" tests/lab/rootfs.py >/dev/null || exit 1

molecule_pid=""
if [ "$MOLECULE" = "--molecule" ]; then
    # shellcheck disable=SC2046 - the variables come from labconfig as KEY=VALUE words
    ( export $("$PY" -c 'import sys; sys.path.insert(0, "tests/lab"); import labconfig
print(" ".join(f"{k}={v}" for k, v in labconfig.MOLECULE_ENV.items()))')
      exec tools/molecule.sh ) >build/molecule.log 2>&1 &
    molecule_pid=$!
fi

started=$(date +%s)
"$PY" -m pytest -q -p no:cacheprovider -n "$WORKERS" --dist loadgroup --no-loadscope-reorder \
    -m "$MARK" tests/integration
pytest_rc=$?
echo "test-lab: pytest on $WORKERS labs exited $pytest_rc after $(( $(date +%s) - started )) s"

molecule_rc=0
if [ -n "$molecule_pid" ]; then
    wait "$molecule_pid"
    molecule_rc=$?
    echo "=== Molecule (ran beside pytest on lab mol; build/molecule.log)"
    cat build/molecule.log
fi

# The tests whose time bounds labs beside them would break (marker quiet), alone.
started=$(date +%s)
"$PY" -m pytest -q -p no:cacheprovider -m "quiet and ($MARK)" tests/integration
quiet_rc=$?
[ "$quiet_rc" -eq 5 ] && quiet_rc=0   # none selected by MARKEXPR
echo "test-lab: the quiet tests, alone, exited $quiet_rc after $(( $(date +%s) - started )) s"

LAB_RECORDS_PARALLEL=1 "$PY" -m pytest -q -p no:cacheprovider tests/integration/test_zz_lab_down.py
final_rc=$?

if [ "$pytest_rc" -ne 0 ] || [ "$molecule_rc" -ne 0 ] || [ "$quiet_rc" -ne 0 ] || [ "$final_rc" -ne 0 ]; then
    echo "test-lab: FAILED (pytest $pytest_rc, molecule $molecule_rc, quiet $quiet_rc, final lab check $final_rc)"
    exit 1
fi
