"""The batch runner's own mechanics (scripts/reconstruction/runner.py): its read-ahead workers die with a killed run,
and the skip check of an input reads the output folder's marker once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import scripts.io.files as files
from scripts.io.files import atomic_dir, write_json
from scripts.io.radiograph_io import RadiographFile
from scripts.reconstruction.reconstruct import RESULT_KIND
from scripts.reconstruction.runner import RadiographReader
from tests.helpers import ROOT, bundle_env

# A run reading ahead with two workers whose items (1 MiB each) are larger than a pipe holds; once it has an item from
# each worker it prints their pids and SIGKILLs itself, as `kill -9` of an inference run does, with the workers' next
# items unread in the pipe.
_KILLED_PARENT = """
import os, signal, sys
import numpy as np, torch
from scripts.reconstruction.runner import read_ahead

class Big(torch.utils.data.Dataset):
    def __len__(self):
        return 32
    def __getitem__(self, index):
        return os.getpid(), np.zeros(1 << 18, np.float32)

pids = set()
for batch in read_ahead(Big(), 1, 2):
    pids.add(batch[0][0])
    if len(pids) == 2:
        print(*pids, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_read_ahead_workers_die_with_a_killed_run(tmp_path):
    """SIGKILL of the process iterating :func:`read_ahead` takes its DataLoader workers with it. Without the parent-death
    signal they live on for ever: a worker's queue feeder blocks writing into the full pipe nobody reads."""
    log = tmp_path / "run.log"
    with log.open("wb") as sink:  # not a pipe: a surviving worker would hold it open
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_PARENT], cwd=ROOT, env={**bundle_env(), "OMP_NUM_THREADS": "1"},
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            assert proc.wait(timeout=300) == -signal.SIGKILL, log.read_text()[-2000:]
            pids = [int(p) for p in log.read_text().split()[:2]]
            deadline = time.monotonic() + 60  # a bound for a stuck worker, far beyond PyTorch's 5 s watchdog
            while any(_alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not [p for p in pids if _alive(p)], "DataLoader workers outlived the killed run"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the workers of a failed check
            proc.wait()


def _finished_output(folder: Path, key: str) -> None:
    """A finished reconstruction folder of input ``key``: marker and result.json."""
    with atomic_dir(folder, RESULT_KIND, key) as tmp:
        write_json(tmp / "result.json", {"name": folder.name})


@pytest.mark.parametrize("overwrite, result_json, to_load", [(False, True, False), (True, True, True), (False, False, True)])
def test_skip_check_reads_the_marker_once(tmp_path, monkeypatch, overwrite, result_json, to_load):
    """A finished output is skipped (redone under ``overwrite``; an output without result.json is redone) after one
    read of its marker, whichever way the check goes."""
    out = tmp_path / "out"
    _finished_output(out / "r1", "key-1")
    if not result_json:
        (out / "r1" / "result.json").unlink()
        marker = json.loads((out / "r1" / files.OUTPUT_MARKER).read_text())
        (out / "r1" / files.OUTPUT_MARKER).write_text(json.dumps({**marker, "files": []}))
    reads = []
    real = files.written_by_bundle
    monkeypatch.setattr(files, "written_by_bundle", lambda folder: reads.append(Path(folder)) or real(folder))
    reader = RadiographReader([], None, out, overwrite, lambda d: d, (64, 64), ("pelvis",))
    assert reader._to_load(RadiographFile(tmp_path / "r1.png", "r1", "key-1")) is to_load
    assert reads == [out / "r1"]
