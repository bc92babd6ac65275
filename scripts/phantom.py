"""``python -m scripts.phantom``: the command of :mod:`scripts.data.phantom`."""

import sys

from scripts.data.phantom import main

if __name__ == "__main__":
    sys.exit(main())
