#!/usr/bin/env bash
# mypy --strict over the installed layout: core/ as a top-level package (its
# own relative imports), then routeledger.adapters and routeledger.projections
# through a temporary tree of symlinks named as installed, because mypy cannot
# follow setuptools' package-dir mapping of an editable install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=${PYTHON:-.venv/bin/python}
"$py" -m mypy
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree/routeledger"
for d in core adapters projections; do ln -s "$PWD/$d" "$tree/routeledger/$d"; done
(cd "$tree" && MYPYPATH="$tree" "$OLDPWD/$py" -m mypy --strict --namespace-packages \
  --explicit-package-bases --follow-imports=silent --no-incremental \
  -p routeledger.adapters -p routeledger.projections)
