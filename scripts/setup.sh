#!/usr/bin/env bash
# One-time set-up of a development environment in .venv (idempotent, quick when done).
# Installs the Debian packages headless napari needs (Xvfb and the xcb/GL libraries) and
# SExtractor (the `sextractor` method), and the package with its test extras and the
# optional `scarlet2` method.  Used by `make demo` and `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(xvfb xauth libgl1 libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1
      libxcb-image0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libdbus-1-3
      libfontconfig1 source-extractor)
missing=()
for deb in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "install ok installed" || missing+=("$deb")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
stamp=.venv/.blendphot-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  echo "setup: installing napari-blendphot and its test dependencies into .venv (about 2 minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch 2.13.0 (CPU) is pinned first so the backend extra does not pull a CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[test,backends,scarlet2]"
  touch "$stamp"
fi
