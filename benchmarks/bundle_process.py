"""One ``monai.bundle run`` in a fresh process, as a user runs it, for the end-to-end benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed_bundle_run(args: list[str], threads: int) -> float:
    """Wall seconds of ``python -m monai.bundle run ARGS`` in the bundle root, with ``threads`` intra-op
    threads and ``OMP_WAIT_POLICY=PASSIVE``; a failed run raises with the end of its stderr."""
    env = {
        **os.environ,
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"monai.bundle run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall
