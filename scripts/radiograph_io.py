"""``python -m scripts.radiograph_io``: the command of :mod:`scripts.io.radiograph_io`."""

import sys

from scripts.io.radiograph_io import main

if __name__ == "__main__":
    sys.exit(main())
