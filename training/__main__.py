"""``python -m training`` (from a checkout) or ``python -m napari_blendphot.training``: see :mod:`.cli`."""

import sys

from .cli import main

sys.exit(main())
