#!/usr/bin/env bash
# Installs everything Energy Flow Studio needs on a fresh Debian/Ubuntu machine, idempotently:
# the system libraries Qt and OpenGL need under a (virtual) display, and a virtual environment
# in .venv with torch pinned (an unpinned torch pulls a multi-GB CUDA build; see docs/architecture.md, "Installing").
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(xvfb xauth libgl1 libgl1-mesa-dri libegl1 libglib2.0-0 libdbus-1-3 libfontconfig1
  libxkbcommon0 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0
  libxcb-randr0 libxcb-render-util0 libxcb-image0 libxcb-xinerama0 libxcb-xkb1
  wordnet-base)  # wordnet-base: WordNet 3.0 database files, the `--data wordnet` dataset

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, at constraints.txt's pin: on CPU-only machines this is the CPU wheel, on GPU
# machines the CUDA one (a resolver left to choose within pyproject's range fetches a CUDA build).
.venv/bin/python -m pip install -q -c constraints.txt torch
# the library, the app, the teacher and the tests, at the versions in constraints.txt
.venv/bin/python -m pip install -q -c constraints.txt -e ".[app,teacher,test]"
echo "install.sh: environment ready in .venv"
