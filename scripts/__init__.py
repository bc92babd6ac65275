"""3DDX bone surface reconstruction bundle: the package that configs reach by ``_target_``.

Importing it (every bundle config does) makes an uncaught bad-input error print its one line
(``<file or option>: <problem>``) instead of a traceback: :func:`scripts.io.files.one_line_excepthook`.
"""

import sys
from pathlib import Path

# The bundle's root folder (configs/, models/, scripts/); set before the submodules that use it load.
BUNDLE_ROOT = Path(__file__).resolve().parent.parent

from scripts.io.files import one_line_excepthook  # noqa: E402

if sys.excepthook is sys.__excepthook__:
    sys.excepthook = one_line_excepthook
