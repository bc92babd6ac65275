"""``python -m scripts.simulate``: the command of :mod:`scripts.data.simulate`."""

import sys

from scripts.data.simulate import main

if __name__ == "__main__":
    sys.exit(main())
