"""``python -m scripts.release``: the command of :mod:`scripts.model.release`."""

import sys

from scripts.model.release import main

if __name__ == "__main__":
    sys.exit(main())
