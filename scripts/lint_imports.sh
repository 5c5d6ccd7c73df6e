#!/usr/bin/env bash
# Check the layers contract ([tool.importlinter] in pyproject.toml) with import-linter.
#
# import-linter finds a package's modules by walking its folder, but nvsynth.recon,
# nvsynth.render and nvsynth.supplementary live in the repository's top-level folders
# (setuptools package-dir). So the check runs on the package as it installs: a wheel
# is built and unpacked into a temporary folder, and lint-imports runs there.
#   bash scripts/lint_imports.sh            (uses .venv/bin if present)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
bin="$repo/.venv/bin"; [ -x "$bin/python" ] || bin="$(dirname "$(command -v python3)")"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
"$bin/python" -m pip wheel -q --no-deps -w "$tmp/wheel" "$repo" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log" >&2; exit 1; }
"$bin/python" -m zipfile -e "$tmp"/wheel/nvsynth-*.whl "$tmp/site"
cd "$tmp" && PYTHONPATH="$tmp/site" "$bin/lint-imports" "$repo/pyproject.toml" --no-cache
