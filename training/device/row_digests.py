"""Per-blend SHA-256 digests of a blend dataset's blends.npy (to find where two machines differ).

Usage: python training/device/row_digests.py DIR OUT.txt
Writes one hex digest (first 16 characters) per blend, in row order.
"""

import hashlib
import sys

import numpy as np

blends = np.load(f"{sys.argv[1]}/blends.npy", mmap_mode="r")
with open(sys.argv[2], "w") as handle:
    for start in range(0, len(blends), 1000):
        chunk = np.asarray(blends[start:start + 1000])
        for row in chunk:
            handle.write(hashlib.sha256(row.tobytes()).hexdigest()[:16] + "\n")
