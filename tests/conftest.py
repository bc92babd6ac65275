"""Test isolation: each test leaves the root logger's own handlers and level as it found them.

A bundle workflow run in-process (``monai.bundle run``, ``ConfigWorkflow``) applies configs/logging.conf: the root
logger at INFO with a handler on the ``sys.stdout`` of that moment, the test's capture. A later test's INFO record (the
Deploy app's 'reconstructing NAME (k of N)') went to that closed stream, and logging printed its 'Logging error'
traceback into the later test's stderr. pytest's own capture handlers come and go with each test phase: left to it.
"""

from __future__ import annotations

import logging

import pytest


def _own(handler: logging.Handler) -> bool:
    """Whether ``handler`` is not one of pytest's capture handlers."""
    return not type(handler).__module__.startswith("_pytest")


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    before, level = [h for h in root.handlers if _own(h)], root.level
    yield
    for handler in [h for h in root.handlers if _own(h) and h not in before]:
        root.removeHandler(handler)
    root.setLevel(level)
