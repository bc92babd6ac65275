"""``python -m scripts.plot_training``: the command of :mod:`scripts.model.plot_training`."""

import sys

from scripts.model.plot_training import main

if __name__ == "__main__":
    sys.exit(main())
