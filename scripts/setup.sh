#!/usr/bin/env bash
# One-step setup for nvsynth on Debian/Ubuntu, then run the demo or the tests.
#   bash ./scripts/setup.sh demo   # install, then `nvsynth demo` end to end
#   bash ./scripts/setup.sh test   # install with test extras, then pytest
#   bash ./scripts/setup.sh        # install only
# System packages (Mesa EGL for headless OpenGL, python3-venv) are installed
# with apt-get only where missing; Python packages come from PyPI into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-install}"
shift || true

need=()
for pkg in libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing system packages: ${need[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
extras=""
[ "$mode" = "test" ] && extras="[test]"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"

case "$mode" in
  demo) exec .venv/bin/nvsynth demo "$@" ;;
  test) exec .venv/bin/python -m pytest -q "$@" ;;
  install) echo "setup: done; run .venv/bin/nvsynth --help" ;;
  *) echo "usage: bash ./scripts/setup.sh [install|demo|test]" >&2; exit 2 ;;
esac
