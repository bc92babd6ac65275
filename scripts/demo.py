"""``python -m scripts.demo``: the command of :mod:`scripts.io.demo`."""

import sys

from scripts.io.demo import main

if __name__ == "__main__":
    sys.exit(main())
