import sys

from napari_blendphot.cli import main

sys.exit(main())
