"""3DDX bone surface reconstruction bundle: the package that configs reach by ``_target_``.

Importing it (every bundle config does) makes an uncaught bad-input error print its one line
(``<file or option>: <problem>``) instead of a traceback: :func:`scripts.files.one_line_excepthook`.
"""

import sys

from scripts.files import one_line_excepthook

if sys.excepthook is sys.__excepthook__:
    sys.excepthook = one_line_excepthook
