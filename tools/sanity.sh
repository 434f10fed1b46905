#!/bin/bash
# ansible-test sanity on a copy of the tracked tree laid out as
# ansible_collections/safedeploy/fleet (ansible-test needs that path).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# Outside the checkout: inside it, ansible-test would ask git and skip ignored build/.
DEST="${SANITY_DIR:-/var/tmp/safedeploy-sanity}/ansible_collections/safedeploy/fleet"
REQS="$("$ROOT/.venv/bin/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')/_internal/python_requirements.py"
PIP_VERSION="$(sed -n "s/^ *pip='\([0-9.]*\)',.*/\1/p" "$REQS" | head -1)"
CACHE="$HOME/.ansible/test/cache/get_pip_${PIP_VERSION//./_}.py"
if [ ! -s "$CACHE" ]; then
    mkdir -p "$(dirname "$CACHE")"
    cp "$ROOT/tools/get_pip_shim.py" "$CACHE"
fi
rm -rf "$DEST"
mkdir -p "$DEST"
cd "$ROOT"
git ls-files -co --exclude-standard -- galaxy.yml meta plugins roles playbooks tests/unit README.md \
    | rsync -a --files-from=- . "$DEST/"
cd "$DEST"
# Tests that need containers, network access or tools we do not ship are
# skipped explicitly, never silently.
exec "$ROOT/.venv/bin/ansible-test" sanity --python 3.11 --color no \
    --skip-test shellcheck --skip-test pslint "$@"
