#!/bin/bash
# Run every Molecule scenario under molecule/ (`molecule test -s NAME` each),
# on the lab, and say which passed, failed or were skipped.
#
#   tools/molecule.sh [NAME...]     (default: every scenario)
#
# A scenario is a directory molecule/NAME/ with a molecule.yml; new ones are
# picked up by themselves. A file molecule/NAME/.skip skips that scenario and
# its text is printed as the reason. Exit status: 0 when every scenario that
# ran passed, 1 otherwise (also when none was found).
#
# The lab is chosen by the LAB_* variables (see tests/lab/lab.py); each
# scenario brings it up if needed and takes down only a lab it brought up
# itself (MOLECULE_KEEP_LAB=1: never). See docs/molecule.md.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
# Scenarios live in molecule/ (not extensions/molecule/) even though this is a collection.
export MOLECULE_GLOB="molecule/*/molecule.yml"
export ANSIBLE_FORCE_COLOR="${ANSIBLE_FORCE_COLOR:-0}"

if [ "$#" -gt 0 ]; then
    names=("$@")
else
    names=()
    for file in molecule/*/molecule.yml; do
        [ -e "$file" ] && names+=("$(basename "$(dirname "$file")")")
    done
fi
if [ "${#names[@]}" -eq 0 ]; then
    echo "molecule: no scenario found under molecule/*/molecule.yml" >&2
    exit 1
fi

passed=() failed=() skipped=()
started_all=$(date +%s)
for name in "${names[@]}"; do
    dir="molecule/$name"
    if [ ! -f "$dir/molecule.yml" ]; then
        echo "molecule: $name: no $dir/molecule.yml" >&2
        failed+=("$name (no such scenario)")
        continue
    fi
    if [ -f "$dir/.skip" ]; then
        reason="$(tr -s '\n' ' ' < "$dir/.skip" | sed 's/ *$//')"
        echo "=== molecule: SKIP $name: ${reason:-no reason given in $dir/.skip}"
        skipped+=("$name: ${reason:-no reason given}")
        continue
    fi
    echo "=== molecule: test -s $name"
    started=$(date +%s)
    molecule test -s "$name"
    rc=$?
    elapsed=$(( $(date +%s) - started ))
    if [ "$rc" -eq 0 ]; then
        passed+=("$name (${elapsed} s)")
    else
        failed+=("$name (exit $rc after ${elapsed} s)")
    fi
done

echo
echo "=== molecule summary ($(( $(date +%s) - started_all )) s)"
for item in ${passed[@]+"${passed[@]}"}; do echo "  passed   $item"; done
for item in ${skipped[@]+"${skipped[@]}"}; do echo "  skipped  $item"; done
for item in ${failed[@]+"${failed[@]}"}; do echo "  FAILED   $item"; done
if [ "${#failed[@]}" -gt 0 ]; then
    exit 1
fi
if [ "${#passed[@]}" -eq 0 ]; then
    echo "molecule: every scenario was skipped" >&2
fi
exit 0
