#!/usr/bin/env bash
# Stage the working tree for a `device` call, which carries tracked files, untracked files and the
# carried paths, 64 MiB in all: move aside what training does not read, and restore it afterwards.
#
#   bash training/device/stage_tree.sh on  [PATH ...]   # default: the figures, the sample FITS and the
#                                                        # shipped weights other than blend2flux_v8 / unet_v2
#   bash training/device/stage_tree.sh off              # put everything back (git status must be clean)
#
# Paths go to scratch/gpu_stash/ (ignored by git, so they do not travel); wheels that training does
# not import (astropy and its dependencies) go to scratch/gpu_stash/whl.  Write nothing to the
# repository while staged: `off` moves back exactly what `on` moved.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
STASH=scratch/gpu_stash
W=src/napari_blendphot/models/weights
case "${1:-}" in
  on)
    shift
    if [ $# -eq 0 ]; then
      set -- docs/img sample_data/candels_mock_sample.fits $W/blend2flux_ensemble_v5.keras $W/blend2mask2flux_v10.keras
    fi
    [ ! -e "$STASH/moved" ] || { echo "stage_tree: staged already ($STASH/moved); run 'off' first" >&2; exit 2; }
    mkdir -p "$STASH/whl"
    for path in "$@"; do
      mkdir -p "$STASH/$(dirname "$path")"
      mv "$path" "$STASH/$path"
      echo "$path" >> "$STASH/moved"
    done
    for wheel in .whl/astropy-* .whl/astropy_iers_data-* .whl/pyerfa-* .whl/pyyaml-*; do
      [ -e "$wheel" ] && mv "$wheel" "$STASH/whl/"
    done
    echo "staged: $(wc -l < "$STASH/moved") paths moved aside" ;;
  off)
    [ -e "$STASH/moved" ] || { echo "stage_tree: nothing staged" >&2; exit 2; }
    while read -r path; do mv "$STASH/$path" "$path"; done < "$STASH/moved"
    rm "$STASH/moved"
    if compgen -G "$STASH/whl/*" > /dev/null; then mv "$STASH"/whl/* .whl/; fi
    git status --short ;;
  *) echo "usage: stage_tree.sh on [PATH ...] | off" >&2; exit 2 ;;
esac
