"""benchmarks/bundle_process.py: the peak-memory measure of the end-to-end benchmarks counts a process and its
descendants, each page once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.bundle_process import tree_pss_mib

pytestmark = pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc smaps_rollup")

# a child that fills 300 MiB, starts a grandchild that fills 200 MiB, says "ready" once both hold it, and waits for stdin
GRANDCHILD = "b = b'\\x01' * (200 << 20); print('ready', flush=True); input()"
CHILD = (
    "import subprocess, sys\n"
    "b = b'\\x02' * (300 << 20)\n"
    f"g = subprocess.Popen([sys.executable, '-c', {GRANDCHILD!r}], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)\n"
    "g.stdout.readline()\n"
    "print('ready', flush=True)\n"
    "input()\n"
    "g.stdin.close()\n"
    "g.wait()\n"
)


def test_tree_pss_counts_descendants():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        both = tree_pss_mib(child.pid)
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    # 300 + 200 MiB of written pages, plus two interpreters (each some MiB, shared library pages split)
    assert 500 <= both < 500 + 120, both
    assert tree_pss_mib(child.pid) is None  # an ended process: nothing to read
