"""``python -m scripts.ssm``: the command of :mod:`scripts.reconstruction.ssm`."""

import sys

from scripts.reconstruction.ssm import main

if __name__ == "__main__":
    sys.exit(main())
