"""``python -m scripts.export_onnx``: the command of :mod:`scripts.model.export_onnx`."""

import sys

from scripts.model.export_onnx import main

if __name__ == "__main__":
    sys.exit(main())
