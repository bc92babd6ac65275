"""The batch runner's own mechanics (scripts/reconstruction/runner.py): its read-ahead workers die with a killed run,
the skip check of an input reads the output folder's marker once, and a rerun skips only results of its own model."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scripts.io.files as files
from PIL import Image
from scripts.geometry import Geometry
from scripts.io.files import atomic_dir, write_json
from scripts.io.radiograph_io import RadiographFile
from scripts.reconstruction.reconstruct import RESULT_KIND, build_reconstructor
from scripts.reconstruction.runner import RadiographReader, ReconstructionRunner
from tests.helpers import (
    ROOT,
    bundle_env,
    error_lines,
    make_dicom,
    ramp,
    sphere_model_file,
    sphere_shape_model_file,
    tree,
)

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


# The evaluation's process pool (two workers as EvaluationRunner starts them) busy with a subject each (10 minutes
# here); its parent prints their pids and SIGKILLs itself, as `kill -9` does.
_KILLED_EVALUATION = """
import multiprocessing, os, signal, time
from scripts.reconstruction.evaluate import worker_pool

pool = worker_pool(2)
tasks = [pool.submit(time.sleep, 600) for _ in range(2)]
time.sleep(2)
print(*[worker.pid for worker in multiprocessing.active_children()], flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
@pytest.mark.parametrize("script", [_KILLED_PARENT, _KILLED_EVALUATION], ids=["inference read-ahead", "evaluation"])
def test_read_ahead_workers_die_with_a_killed_run(tmp_path, script):
    """SIGKILL of the process iterating :func:`read_ahead` takes its DataLoader workers with it. Without the parent-death
    signal they live on for ever: a worker's queue feeder blocks writing into the full pipe nobody reads. The
    evaluation's workers, too: they went on with their subjects (minutes of a shared machine's cores) before dying."""
    log = tmp_path / "run.log"
    with log.open("wb") as sink:  # not a pipe: a surviving worker would hold it open
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**bundle_env(), "OMP_NUM_THREADS": "1"},
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            assert proc.wait(timeout=300) == -signal.SIGKILL, log.read_text()[-2000:]
            pids = [int(p) for p in log.read_text().split()[:2]]
            deadline = time.monotonic() + 60  # a bound for a stuck worker, far beyond PyTorch's 5 s watchdog
            while any(_alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not [p for p in pids if _alive(p)], "workers outlived the killed run"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the workers of a failed check
            proc.wait()


def _finished_output(folder: Path, key: str) -> None:
    """A finished reconstruction folder of input ``key``: marker and result.json."""
    with atomic_dir(folder, RESULT_KIND, key) as tmp:
        write_json(tmp / "result.json", {"name": folder.name})


@pytest.mark.parametrize(
    "overwrite, result_json, to_load", [(False, True, False), (True, True, True), (False, False, True)]
)
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
    reader = RadiographReader(
        [], None, out, overwrite, lambda d: d, (64, 64), ("pelvis",), {"model": {}, "options": {}}
    )
    assert reader._to_load(RadiographFile(tmp_path / "r1.png", "r1", "key-1"), []) is to_load
    assert reads == [out / "r1"]


def _run(inputs: Path, out: Path, model: Path, ssm: Path, report: bool = False, **kw) -> dict:
    """The batch runner in this process with a TorchScript ``model`` and shape models ``ssm`` (no workers)."""
    reconstructor = build_reconstructor(ckpt_path=str(model), ssm_path=str(ssm), device="cpu", torchscript=True)
    return ReconstructionRunner(reconstructor, inputs, out, report=report, num_workers=0, writers=0, **kw).run()


def test_a_rerun_skips_only_results_of_its_own_model(tmp_path, capsys):
    """result.json records the files that made it (names, SHA-256 computed here from their bytes) and the options. A
    rerun with the same files (a copy of the network under another name included) skips it; one with other network
    weights, another shape model or another option refuses it in one line, counted as failed, and leaves the folder as
    it was; --overwrite true replaces it. A result of bundle 0.10.6 (no model recorded) is skipped with one note."""
    a, b, ssm, pelvis_only = tmp_path / "a.ts", tmp_path / "b.ts", tmp_path / "ssm.npz", tmp_path / "pelvis.npz"
    sphere_model_file(a, Geometry.standard(), (0.0, 0.0, 950.0), 40.0)
    sphere_model_file(b, Geometry.standard(), (0.0, 0.0, 950.0), 42.0)
    sphere_shape_model_file(ssm)
    sphere_shape_model_file(pelvis_only, ("pelvis",))
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    make_dicom(inputs / "hip_ap.dcm", ramp(), DistanceSourceToDetector=1100.0, ImagerPixelSpacing=[6.25, 6.25])
    case, done = out / "hip_ap", [str(inputs / "hip_ap.dcm")]
    assert _run(inputs, out, a, ssm)["done"] == done
    digest = lambda path: hashlib.sha256(path.read_bytes()).hexdigest()  # noqa: E731
    result = json.loads((case / "result.json").read_text())
    version = json.loads((ROOT / "configs" / "metadata.json").read_text())["version"]
    assert result["model"] == {
        "bundle_version": version,
        "network": {"file": "a.ts", "sha256": digest(a), "torchscript": True},
        "shape_model": {"file": "ssm.npz", "sha256": digest(ssm)},
    }
    assert (
        result["options"]["pixel_spacing_mm"] is None
        and result["options"]["image_size"] == [128, 128]
        and result["options"]["report"] is False
    )

    before = tree(out)
    shutil.copyfile(a, tmp_path / "a_copy.ts")
    geometry_file = tmp_path / "geometry.json"
    write_json(geometry_file, {**Geometry.standard().to_dict(), "sid_mm": 1000.0})
    for model in (a, tmp_path / "a_copy.ts"):
        assert _run(inputs, out, model, ssm)["skipped"] == done
    assert tree(out) == before and "record no model" not in capsys.readouterr().err
    for model, shape, kw, changed in (
        (b, ssm, {}, "network weights"),
        (a, pelvis_only, {}, "shape model"),
        (b, ssm, {"standard_geometry": geometry_file}, "network weights and option standard_geometry"),
        (
            b,
            pelvis_only,
            {"standard_geometry": geometry_file},
            "network weights, shape model and option standard_geometry",
        ),
    ):
        with pytest.raises(SystemExit) as e:
            _run(inputs, out, model, shape, **kw)
        err = capsys.readouterr().err
        assert e.value.code == 1 and "reconstructed 0, skipped 0 (already done), failed 1" in err
        assert error_lines(err, case) == [
            f"{case}: was not made with this run's {changed}; left untouched: pass --overwrite true "
            "to replace it with this run's result or choose another --output_dir"
        ]
        assert tree(out) == before
    assert _run(inputs, out, b, ssm, overwrite=True)["done"] == done
    result = json.loads((case / "result.json").read_text())
    assert result["model"]["network"] == {"file": "b.ts", "sha256": digest(b), "torchscript": True}

    del result["model"], result["options"]  # as bundle 0.10.6 wrote it
    (case / "result.json").write_text(json.dumps(result))
    capsys.readouterr()
    assert _run(inputs, out, a, ssm)["skipped"] == done
    assert error_lines(capsys.readouterr().err, "record no model") == [
        f"{out}: 1 finished output(s) record no model (written by bundle 0.10.6 or earlier), skipped as "
        "done; pass --overwrite true to redo them with this run's model"
    ]


def _refused(case: Path, changed: str) -> list[str]:
    """The one line refusing ``case`` not made with a rerun's ``changed``."""
    return [
        f"{case}: was not made with this run's {changed}; left untouched: pass --overwrite true "
        "to replace it with this run's result or choose another --output_dir"
    ]


def test_a_rerun_compares_only_options_that_made_the_result(tmp_path, capsys):
    """A rerun skips results whose making its options would not change: without report.png over results with one, a
    DICOM whose header gives SID and pitch with another --sid_mm, --pixel_spacing_mm 6.25 as [6.25, 6.25]. A fill-in
    that made a result (a PNG's SID and pitch, geometry_source "argument ...") refuses it when it changes, and a run
    asking for report.png refuses results made without one."""
    model, ssm = tmp_path / "a.ts", tmp_path / "ssm.npz"
    sphere_model_file(model, Geometry.standard(), (0.0, 0.0, 950.0), 40.0)
    sphere_shape_model_file(ssm)
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    make_dicom(inputs / "hip_ap.dcm", ramp(), DistanceSourceToDetector=1100.0, ImagerPixelSpacing=[6.25, 6.25])
    Image.fromarray((ramp() // 4).astype(np.uint8)).save(inputs / "hip_png.png")  # 64 x 64 px, no geometry
    dicom, png = out / "hip_ap", out / "hip_png"
    first = {"report": True, "sid_mm": 1100.0, "pixel_spacing_mm": 6.25}
    assert len(_run(inputs, out, model, ssm, **first)["done"]) == 2
    sources = {case.name: json.loads((case / "result.json").read_text())["geometry_source"] for case in (dicom, png)}
    assert sources == {
        "hip_ap": {
            "sid_mm": "DistanceSourceToDetector (0018,1110)",
            "pixel_spacing_mm": "ImagerPixelSpacing (0018,1164)",
        },
        "hip_png": {"sid_mm": "argument sid_mm", "pixel_spacing_mm": "argument pixel_spacing_mm"},
    }
    before = tree(out)
    assert (png / "report.png").exists() and (dicom / "report.png").exists()
    assert (
        len(_run(inputs, out, model, ssm, **{**first, "report": False, "pixel_spacing_mm": [6.25, 6.25]})["skipped"])
        == 2
    )
    assert len(_run(inputs, out, model, ssm, **{**first, "sid_mm": "1100"})["skipped"]) == 2  # text, as YAML may give
    for kw, changed in (
        ({"sid_mm": 1000.0}, "option sid_mm"),
        ({"pixel_spacing_mm": 6.0}, "option pixel_spacing_mm"),
        ({"sid_mm": 1000.0, "pixel_spacing_mm": 6.0}, "options pixel_spacing_mm, sid_mm"),
    ):
        with pytest.raises(SystemExit) as e:
            _run(inputs, out, model, ssm, **{**first, **kw})
        err = capsys.readouterr().err
        assert e.value.code == 1 and "reconstructed 0, skipped 1 (already done), failed 1" in err
        assert error_lines(err, "was not made with") == _refused(png, changed)
    assert tree(out) == before

    out = tmp_path / "no_reports"
    assert len(_run(inputs, out, model, ssm, **{**first, "report": False})["done"]) == 2
    before = tree(out)
    with pytest.raises(SystemExit) as e:
        _run(inputs, out, model, ssm, **first)
    err = capsys.readouterr().err
    assert e.value.code == 1 and "reconstructed 0, skipped 0 (already done), failed 2" in err
    assert error_lines(err, "was not made with") == _refused(out / "hip_ap", "option report") + _refused(
        out / "hip_png", "option report"
    )
    assert tree(out) == before


def test_a_rerun_with_a_pitch_refuses_a_result_of_the_files_stated_resolution(tmp_path, capsys):
    """A PNG read at the resolution its pHYs chunk states (geometry_source "PNG pHYs ...") was made by no argument, but
    a --pixel_spacing_mm would replace it: a rerun without one skips it, a rerun with one refuses it."""
    model, ssm = tmp_path / "a.ts", tmp_path / "ssm.npz"
    sphere_model_file(model, Geometry.standard(), (0.0, 0.0, 950.0), 40.0)
    sphere_shape_model_file(ssm)
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    Image.fromarray((ramp() // 4).astype(np.uint8)).save(inputs / "film.png", dpi=(4.064, 4.064))  # 160 /m: 6.25 mm
    assert len(_run(inputs, out, model, ssm)["done"]) == 1
    result = json.loads((out / "film" / "result.json").read_text())
    assert result["geometry_source"]["pixel_spacing_mm"] == "PNG pHYs (160 pixels/m = 4.064 dpi)"
    before = tree(out)
    assert len(_run(inputs, out, model, ssm)["skipped"]) == 1
    with pytest.raises(SystemExit) as e:
        _run(inputs, out, model, ssm, pixel_spacing_mm=6.25)
    err = capsys.readouterr().err
    assert e.value.code == 1 and error_lines(err, "was not made with") == _refused(
        out / "film", "option pixel_spacing_mm"
    )
    assert tree(out) == before


def test_a_file_changed_in_place_is_an_earlier_version_of_the_same_input(tmp_path, capsys):
    """x.jpg replaced under its name (a corrected re-export): a rerun refuses OUT/x in one line saying it holds the
    reconstruction of an earlier version of that file, left as it was (it said "another input", and not even
    --overwrite true could redo it); --overwrite true redoes it, recording the new content. The folder moved, the
    result is still found (skipped); another folder's x.jpg, or the file changed under a result that records no path
    (bundle 0.10.9), is another input's result: refused, even with --overwrite true."""
    model, ssm = tmp_path / "a.ts", tmp_path / "ssm.npz"
    sphere_model_file(model, Geometry.standard(), (0.0, 0.0, 950.0), 40.0)
    sphere_shape_model_file(ssm)
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    x, case, marker = inputs / "x.jpg", out / "x", out / "x" / files.OUTPUT_MARKER
    fill_ins = {"sid_mm": 1100.0, "pixel_spacing_mm": 6.25}
    Image.fromarray((ramp() // 4).astype(np.uint8)).save(x)
    assert _run(inputs, out, model, ssm, **fill_ins)["done"] == [str(x)]
    before = tree(out)
    Image.fromarray((ramp() // 4).astype(np.uint8).T).save(x)  # new content, same path
    content = hashlib.sha256(x.read_bytes()).hexdigest()[:16]
    assert json.loads(marker.read_text())["source"] != content
    with pytest.raises(SystemExit) as e:
        _run(inputs, out, model, ssm, **fill_ins)
    err = capsys.readouterr().err
    assert e.value.code == 1 and "reconstructed 0, skipped 0 (already done), failed 1" in err
    assert error_lines(err, f"{case}: holds") == [
        f"{case}: holds the reconstruction of an earlier version of {x} (the file changed since); left untouched: "
        "pass --overwrite true to redo it"
    ]
    assert tree(out) == before
    assert _run(inputs, out, model, ssm, overwrite=True, **fill_ins)["done"] == [str(x)]
    assert json.loads(marker.read_text())["source"] == content and sorted(p.name for p in out.iterdir()) == ["x"]
    assert _run(inputs, out, model, ssm, **fill_ins)["skipped"] == [str(x)]
    moved = tmp_path / "moved"
    inputs.rename(moved)
    assert _run(moved, out, model, ssm, **fill_ins)["skipped"] == [str(moved / "x.jpg")]

    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray((ramp() // 8).astype(np.uint8)).save(other / "x.jpg")
    before = tree(out)
    for folder, overwrite, stripped in ((other, False, False), (other, True, False), (moved, True, True)):
        if stripped:  # moved/x.jpg changed in place under a result of bundle 0.10.9, which records no origin
            shutil.copyfile(other / "x.jpg", moved / "x.jpg")
            marker.write_text(json.dumps({k: v for k, v in json.loads(marker.read_text()).items() if k != "origin"}))
            before = tree(out)
        with pytest.raises(SystemExit):
            _run(folder, out, model, ssm, overwrite=overwrite, **fill_ins)
        assert error_lines(capsys.readouterr().err, f"{case}: holds") == [
            f"{case}: holds the reconstruction of another input (two inputs with one output name, or the input "
            "changed since); left untouched: rename one input or choose another output folder"
        ]
        assert tree(out) == before
