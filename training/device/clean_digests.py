"""Per-galaxy digests of a sample before and after neighbour cleaning (cross-machine comparison).

Usage: python training/device/clean_digests.py SAMPLE SEED OUT_PREFIX
Writes OUT_PREFIX.txt (one line per galaxy: raw digest, cleaned digest) and
OUT_PREFIX.npz (the first 8 cleaned stamps) so that differences can be sized.
"""

import hashlib
import sys

import numpy as np

from napari_blendphot.clean.neighbours import clean_sample
from napari_blendphot.sample.io import load_sample

sample = load_sample(sys.argv[1])
cleaned = clean_sample(sample, int(sys.argv[2]))
with open(sys.argv[3] + ".txt", "w") as handle:
    for raw, clean in zip(sample.images, cleaned.images):
        handle.write(f"{hashlib.sha256(raw.tobytes()).hexdigest()[:16]} "
                     f"{hashlib.sha256(np.ascontiguousarray(clean).tobytes()).hexdigest()[:16]}\n")
np.savez_compressed(sys.argv[3] + ".npz", cleaned=np.asarray(cleaned.images[:8]), raw=np.asarray(sample.images[:8]))
