"""One ``monai.bundle run`` in a fresh process, as a user runs it, for the end-to-end benchmarks: its wall time and
its peak memory (the proportional set size of the process and all its descendants, e.g. DataLoader workers)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_INTERVAL_S = 0.05


class BundleRun(NamedTuple):
    """Wall seconds of a run and its peak memory, MiB (sum of PSS over the process tree, sampled every 50 ms;
    None where /proc has no smaps_rollup, i.e. not Linux)."""

    wall_s: float
    peak_memory_mib: float | None


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (Linux /proc; processes that end while being read are skipped)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return found


def tree_pss_mib(pid: int) -> float | None:
    """Proportional set size of ``pid`` and its descendants, MiB: shared pages (a forked worker's copy-on-write
    memory, shared libraries) count once in all, split among their sharers; None without /proc smaps_rollup."""
    total_kib, seen = 0, False
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total_kib += int(line.split()[1])
                        seen = True
                        break
        except OSError:
            continue
    return total_kib / 1024 if seen else None


def format_mib(mib: float | None) -> str:
    """A peak memory for a table: whole MiB, or "-" where it could not be measured."""
    return "-" if mib is None else f"{mib:.0f}"


def timed_bundle_run(args: list[str], threads: int) -> BundleRun:
    """``python -m monai.bundle run ARGS`` in the bundle root, with ``threads`` intra-op threads and
    ``OMP_WAIT_POLICY=PASSIVE``: wall seconds and peak memory; a failed run raises with the end of its stderr."""
    env = {
        **os.environ,
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    peak = None
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "monai.bundle", "run", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
        while proc.poll() is None:
            now = tree_pss_mib(proc.pid)
            if now is not None:
                peak = now if peak is None else max(peak, now)
            time.sleep(SAMPLE_INTERVAL_S)
        wall = time.perf_counter() - t0
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"monai.bundle run failed ({proc.returncode}):\n{err.read()[-3000:]}")
    return BundleRun(wall, peak)
