"""The batch workflow of ``configs/inference.yaml``: every radiograph under an input folder -> ``OUT/<name>/``.

:class:`ReconstructionRunner` lists the inputs (:class:`scripts.io.radiograph_io.RadiographInputs`), reads them
ahead in DataLoader workers (:class:`RadiographReader`), runs the pipeline of :mod:`scripts.reconstruction.reconstruct`
(:class:`~scripts.reconstruction.reconstruct.Reconstructor`) on batches and writes each result in background threads
(:func:`~scripts.reconstruction.reconstruct.write_reconstruction`). Everything is in the camera frame (mm).
"""

from __future__ import annotations

import collections
import concurrent.futures
import ctypes
import functools
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from scripts.config_flags import as_count, as_path, as_shard
from scripts.geometry import Geometry, GeometryError
from scripts.io.files import (
    InputFileError,
    PathLike,
    check_output_dir,
    check_own_output,
    check_replaceable,
    find_partials,
    read_json,
    refuse_models_dir,
    remove_partials,
)
from scripts.io.progress import progress
from scripts.io.radiograph_io import RadiographFile, RadiographInputs, error_line
from scripts.reconstruction.reconstruct import (
    RESULT_KIND,
    Reconstruction,
    Reconstructor,
    made_with_changes,
    network_input,
    output_warnings,
    write_reconstruction,
)
from tqdm import tqdm


@dataclass
class RadiographInput(RadiographFile):
    """One input of the batch workflow as read ahead by :class:`RadiographReader`: the
    :class:`scripts.io.radiograph_io.RadiographFile` (name, key, image, geometry, info, error; its DICOM header left
    in the worker) with the network's input.

    ``status``: "ready" (image, geometry, info and the prepared network input set), "skipped" (this input's
    finished output exists, made with this run's model and options; ``unrecorded``: its result.json records no model,
    bundle 0.10.6 or earlier), "no image" (a DICOM object that holds no image, e.g. a structured report: ``error`` the
    line reporting it, ``no_image`` its kind; not a failure) or "failed" (``error``: the one line to report).
    """

    status: str = "ready"
    unrecorded: bool = False
    network_input: np.ndarray | None = None  # (1, h, w) float32; NumPy, so workers hand it over through a pipe
    network_geometry: Geometry | None = None
    network_field: np.ndarray | None = None  # (1, h, w) the radiograph's own area at the network size; None: all
    load_s: float = 0.0


class RadiographReader(torch.utils.data.Dataset):
    """Dataset of input files -> :class:`RadiographInput`: output name, skip check (an existing folder that is not
    this input's reconstruction, or one to be replaced holding files it did not write, fails the input:
    :func:`scripts.io.files.check_replaceable`; so does a finished one made with another model or options than
    ``made_with``, the run's result.json ``model`` and ``options``), reading and resampling into the standard geometry
    (:meth:`scripts.io.radiograph_io.RadiographInputs.read`), the radiograph's own area and the network's
    preprocessing (:func:`network_input`). Bad input becomes a "failed" item, so DataLoader workers never raise."""

    def __init__(
        self,
        paths: Sequence[Path],
        inputs: RadiographInputs,
        output_dir: Path,
        overwrite: bool,
        preprocessing: Callable[[dict], dict],
        image_size: Sequence[int],
        bones: Sequence[str],
        made_with: dict,
    ):
        self.paths, self.inputs, self.output_dir, self.overwrite = list(paths), inputs, Path(output_dir), overwrite
        self.preprocessing, self.image_size, self.bones, self.made_with = (
            preprocessing,
            image_size,
            tuple(bones),
            made_with,
        )

    def __len__(self) -> int:
        return len(self.paths)

    def _to_load(self, item: RadiographFile, unrecorded: list[str]) -> bool:
        """False when ``item``'s finished reconstruction exists (skipped unless ``overwrite``; its name appended to
        ``unrecorded`` when its result.json records no model); raises when it was made with another model or options
        than this run's or from an earlier version of the file (``item.changed``; both redone under ``overwrite``), or
        when its folder may not be replaced."""
        target = self.output_dir / item.name
        if item.changed and not self.overwrite:
            raise InputFileError(
                target,
                f"holds the reconstruction of an earlier version of {item.path} (the file changed since); left "
                "untouched: pass --overwrite true to redo it",
            )
        if not self.overwrite and (target / "result.json").exists() and check_own_output(target, RESULT_KIND, item.key):
            changes = made_with_changes(
                read_json(target / "result.json"), self.made_with
            )  # the marker read once, here or by check_replaceable
            if changes:
                listed = f"{', '.join(changes[:-1])} and {changes[-1]}" if len(changes) > 1 else changes[0]
                raise InputFileError(
                    target,
                    f"was not made with this run's {listed}; left untouched: pass --overwrite true to replace it with "
                    "this run's result or choose another --output_dir",
                )
            if changes is None:
                unrecorded.append(item.name)
            return False
        check_replaceable(
            target, RESULT_KIND, item.key, item.origin
        )  # to be replaced: a user's file inside fails this input before any work
        return True

    def __getitem__(self, index: int) -> RadiographInput:
        path = self.paths[index]
        t0 = time.perf_counter()
        unrecorded: list[str] = []
        item = self.inputs.read(path, functools.partial(self._to_load, unrecorded=unrecorded))
        if item.error or item.image is None:
            return RadiographInput(
                path,
                item.name,
                item.key,
                error=item.error,
                no_image=item.no_image,
                status="no image" if item.no_image else "failed" if item.error else "skipped",
                unrecorded=bool(unrecorded),
            )
        try:
            x, net_geometry, inside = network_input(
                item.image, item.geometry, self.preprocessing, self.image_size, self.bones, item.fov
            )
        except Exception as e:  # fails this input only
            return RadiographInput(path, item.name, item.key, error=error_line(path, e), status="failed")
        return RadiographInput(
            path,
            item.name,
            item.key,
            None,
            item.image,
            item.geometry,
            item.info,
            item.fov,
            network_input=x.numpy(),
            network_geometry=net_geometry,
            network_field=None if inside is None else inside.numpy(),
            load_s=time.perf_counter() - t0,
            origin=item.origin,
        )


def _as_list(batch: list) -> list:
    """DataLoader collate function keeping a batch as the list of its items."""
    return batch


PR_SET_PDEATHSIG = 1  # Linux prctl option: the signal a process gets when the thread that started it exits


def die_with_parent(parent_pid: int, worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn`` (also the evaluation's process pool's): have Linux SIGKILL this worker when its
    parent ``parent_pid`` dies.

    Without it a worker outlives a killed run: its queue's feeder thread blocks for ever writing read-ahead inputs
    into the full pipe to the dead parent (the workers hold that pipe's read end too), and the worker waits for the
    feeder at exit, past PyTorch's parent watchdog (an evaluation worker finishes its subject first). The signal
    follows the parent's thread that started the workers (the one iterating the DataLoader). Elsewhere than Linux:
    nothing (the watchdog alone)."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def read_ahead(dataset: torch.utils.data.Dataset, batch_size: int, num_workers: int) -> torch.utils.data.DataLoader:
    """DataLoader of ``dataset``'s items in order, lists of ``batch_size``, read ahead by ``num_workers`` processes
    (0: in the calling process) that die with the calling process (:func:`die_with_parent`)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_as_list,
        prefetch_factor=2 if num_workers else None,
        persistent_workers=False,
        worker_init_fn=functools.partial(die_with_parent, os.getpid()) if num_workers else None,
    )


class ReconstructionRunner:
    """Reconstruct every radiograph under ``input_dir`` into ``output_dir/<name>/``.

    A pipeline: DataLoader workers read, resample and preprocess the next inputs; the main process
    runs the network on ``batch_size`` images at a time and the shape-model fits; a pool of
    ``writers`` threads writes each finished output (atomically) while the next is reconstructed.

    A bad file is reported on stderr (one line: file and problem) and skipped; finished outputs are
    skipped on a rerun unless ``overwrite`` when their result.json records this run's model files (SHA-256) and
    options (:attr:`made_with`), refused (one line each, counted as failed) when it records others, and skipped with
    one note for the run when it records none (bundle 0.10.6 or earlier); a file replaced under its path since is an
    earlier version of the same input: refused (one line) unless ``overwrite``, which redoes it. A DICOM object that
    holds no image (a structured report, presentation state, ...: :class:`scripts.io.radiograph_io.NoImageError`) and a
    second copy of a DICOM instance are not radiographs: one line each, counted apart in the summary, not failures.
    After all inputs, exits with status 1 (``SystemExit``) if any failed, none was a radiograph, or a checkpoint/shape
    model is unusable. A killed run leaves at most ``.<name>.*.partial`` folders, which the next run (of the same shard)
    removes before redoing them.
    The output folder of an input is ``output_dir/<name>`` (:func:`scripts.io.radiograph_io.output_name`, unique
    per input); a name already used by another input of this run, or a folder that is not this input's
    reconstruction, is an error for that input and is left untouched.

    Args:
        reconstructor: a :class:`Reconstructor`.
        input_dir: a radiograph file or a folder (searched recursively, :func:`scripts.io.radiograph_io.iter_radiographs`).
        output_dir: output root.
        standard_geometry: geometry JSON for inputs without their own (PNG/TIFF/DICOM); default configs/geometry.json.
        sid_mm, pixel_spacing_mm: fill-ins for inputs lacking them (:func:`scripts.io.radiograph_io.load_radiograph`).
        overwrite: redo finished outputs.
        report: also write report.png.
        batch_size: images per network call.
        num_workers: DataLoader worker processes reading inputs ahead (0: in the main process).
        writers: threads writing outputs in the background (0: written in the main thread).
        shard: ``"i/n"``: only inputs i, i+n, ... of the sorted input list (a cluster array job's part of an
            archive; shards share ``output_dir`` and need no other coordination).
    """

    def __init__(
        self,
        reconstructor: Reconstructor,
        input_dir: PathLike,
        output_dir: PathLike,
        standard_geometry: PathLike | None = None,
        sid_mm: float | None = None,
        pixel_spacing_mm: float | Sequence[float] | None = None,
        overwrite: bool = False,
        report: bool = True,
        batch_size: int = 1,
        num_workers: int = 1,
        writers: int = 1,
        shard: str | Sequence[int] | None = None,
    ):
        self.reconstructor = reconstructor
        self.input_dir, self.output_dir = as_path(input_dir, "input_dir"), as_path(output_dir, "output_dir")
        self.standard_geometry = standard_geometry
        self.sid_mm, self.pixel_spacing_mm, self.overwrite = sid_mm, pixel_spacing_mm, bool(overwrite)
        self.report, self.batch_size = bool(report), as_count(batch_size, "batch_size", 1)
        self.num_workers, self.writers = as_count(num_workers, "num_workers"), as_count(writers, "writers")
        self.shard = shard

    @functools.cached_property
    def standard(self) -> Geometry:
        """The standard geometry given to inputs without their own."""
        return Geometry.standard(self.standard_geometry, check_range=True)

    @functools.cached_property
    def radiographs(self) -> RadiographInputs:
        """The run's inputs and the output names they claimed (:class:`scripts.io.radiograph_io.RadiographInputs`)."""
        return RadiographInputs(self.input_dir, self.standard, self.sid_mm, self.pixel_spacing_mm, self.output_dir)

    @functools.cached_property
    def made_with(self) -> dict:
        """result.json's ``model`` (:attr:`Reconstructor.model`: the files' SHA-256, read once per run) and ``options`` (the
        reconstructor's settings, the standard geometry, the ``sid_mm`` and ``pixel_spacing_mm`` fill-ins, ``report``)
        of this run, as JSON values: what a rerun into the same folder compares (:func:`made_with_changes`: the fill-ins
        only where a result's geometry came from them, ``report`` only when this run asks for a report a result lacks).
        """
        options = {
            **self.reconstructor.settings,
            "standard_geometry": self.standard.to_dict(),
            "sid_mm": self.radiographs.sid_mm,  # as checked and used (numbers): 1100 given as text is 1100 as well
            "pixel_spacing_mm": self.radiographs.pixel_spacing_mm,
            "report": self.report,
        }
        return json.loads(json.dumps({"model": self.reconstructor.model, "options": options}))

    def inputs(self) -> list[Path]:
        """This shard's input files (every n-th of the sorted list from the i-th)."""
        i, n = as_shard(self.shard)
        return self.radiographs.paths()[i::n]

    def reader(self, paths: Sequence[Path]) -> torch.utils.data.DataLoader:
        """DataLoader of :class:`RadiographReader` items in input order, lists of ``batch_size`` (:func:`read_ahead`)."""
        dataset = RadiographReader(
            paths,
            self.radiographs,
            self.output_dir,
            self.overwrite,
            self.reconstructor.preprocessing,
            self.reconstructor.image_size,
            self.reconstructor.bones,
            self.made_with,
        )
        return read_ahead(dataset, self.batch_size, min(self.num_workers, len(paths)))

    def _reconstruct(self, batch: Sequence[RadiographInput]) -> list[tuple[RadiographInput, Reconstruction | str]]:
        """Network on the batch's ready items, then each one's surfaces and fits (or the error line)."""
        ready = [item for item in batch if item.status == "ready"]
        if not ready:
            return []
        t0 = time.perf_counter()
        try:
            inputs = torch.from_numpy(np.stack([item.network_input for item in ready]))
            predictions = self.reconstructor.predict_batch(
                inputs, [item.network_geometry for item in ready], [item.network_field for item in ready]
            )
        except ValueError as e:
            return [(item, f"{item.path}: {e}") for item in ready]
        network_s = (time.perf_counter() - t0) / len(ready)
        out: list[tuple[RadiographInput, Reconstruction | str]] = []
        for item, prediction in zip(ready, predictions, strict=True):
            try:
                rec = self.reconstructor.reconstruct(prediction)
            except (ValueError, GeometryError) as e:
                out.append((item, f"{item.path}: {e}"))
                continue
            except Exception as e:  # anything else fails this input only; KeyboardInterrupt still stops the batch
                out.append((item, f"{item.path}: failed ({type(e).__name__}: {e})"))
                continue
            rec.timings_s = {"load": item.load_s, "network": network_s, **rec.timings_s}
            out.append((item, rec))
        return out

    def run(self) -> dict[str, list[str]]:
        """Process all inputs; returns {"done", "skipped", "failed"} lists, or exits 1 after all if any failed."""
        try:
            refuse_models_dir(self.output_dir, "output_dir")
            check_output_dir(self.output_dir, "--output_dir")
            _ = self.standard
            _ = self.radiographs  # the --sid_mm / --pixel_spacing_mm fill-ins checked once, before the model loads
            self.reconstructor.load()
            _ = self.made_with
            inputs = self.inputs()
        except (InputFileError, GeometryError) as e:
            print(e, file=sys.stderr)
            raise SystemExit(1) from None
        status: dict[str, list[str]] = {"done": [], "skipped": [], "failed": []}
        no_image: collections.Counter = collections.Counter()  # kind (modality) -> inputs that hold no image

        def none_found() -> None:
            print(
                f"{self.input_dir}: no radiographs found" + ("" if self.shard is None else f" for shard {self.shard}"),
                file=sys.stderr,
            )
            raise SystemExit(1)

        if not inputs:
            none_found()

        copies = self.radiographs.copy_lines() if as_shard(self.shard)[0] == 0 else []  # reported by the first shard
        for line in copies:
            print(line, file=sys.stderr)

        def failed(path: Path, line: str) -> None:
            tqdm.write(line, file=sys.stderr)
            status["failed"].append(str(path))

        stale = find_partials(
            self.output_dir
        )  # unfinished outputs of a killed run: all, or (shards) each as its input comes
        if self.shard is None:
            remove_partials(self.output_dir, found=stale)
        pending: collections.deque = collections.deque()  # (input, its warnings, future) in submission order
        unrecorded = 0  # skipped outputs whose result.json records no model (bundle 0.10.6 or earlier)

        def collect(limit: int) -> None:
            while len(pending) > limit:
                item, warnings, future = pending.popleft()
                try:
                    target = future.result()
                    status["done"].append(str(item.path))
                    for warning in warnings:  # named by the output folder: free of patient identifiers
                        tqdm.write(f"{target}: warning: {warning}", file=sys.stderr)
                except Exception as e:
                    failed(item.path, f"{item.path}: writing failed ({type(e).__name__}: {e})")
                bar.update(1)

        pool = (
            concurrent.futures.ThreadPoolExecutor(self.writers, thread_name_prefix="writer") if self.writers else None
        )
        interrupted = False
        try:
            with progress(total=len(inputs), desc="reconstruct", unit="image") as bar:
                for batch in self.reader(inputs):
                    for item in batch:
                        if not self.radiographs.claim(
                            item
                        ):  # one output name for two inputs: the later one is an error
                            item.status = "failed"
                        elif self.shard is not None and item.name in stale:
                            remove_partials(self.output_dir, [item.name], stale)  # this shard's, left by a killed run
                        if item.status == "skipped":
                            status["skipped"].append(str(item.path))
                            unrecorded += item.unrecorded
                        elif item.status == "no image":
                            tqdm.write(item.error, file=sys.stderr)
                            no_image[item.no_image] += 1
                        elif item.status == "failed":
                            failed(item.path, item.error)
                        bar.update(item.status != "ready")
                    for item, rec in self._reconstruct(batch):
                        if isinstance(rec, str):
                            failed(item.path, rec)
                            bar.update(1)
                            continue
                        args = (
                            self.output_dir / item.name,
                            rec,
                            item.image,
                            item.info,
                            item.name,
                            self.made_with,
                            item.key,
                            self.report,
                            item.origin,
                        )
                        future = (
                            pool.submit(write_reconstruction, *args) if pool else _done(write_reconstruction, *args)
                        )
                        pending.append((item, output_warnings(rec, item.info), future))
                        collect(2 * self.writers)  # bounded: at most twice the writers' outputs held in memory
                collect(0)
            if unrecorded:
                tqdm.write(
                    f"{self.output_dir}: {unrecorded} finished output(s) record no model (written by "
                    "bundle 0.10.6 or earlier), skipped as done; "
                    "pass --overwrite true to redo them with this run's model",
                    file=sys.stderr,
                )
        except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback through MONAI's and fire's frames
            interrupted = True
        finally:
            if pool is not None:
                pool.shutdown(
                    wait=True, cancel_futures=True
                )  # an interrupted run finishes (atomically) what is being written
        if interrupted:
            print(
                f"{self.output_dir}: interrupted; finished outputs are kept and unfinished ones removed: the same "
                "command again goes on from there",
                file=sys.stderr,
            )
            raise SystemExit(130)  # the shell's status for a run stopped by SIGINT
        not_inputs = []
        if no_image:
            kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(no_image.items()))
            not_inputs.append(f"{sum(no_image.values())} without an image ({kinds})")
        if copies:
            not_inputs.append(f"{len(copies)} duplicate(s) (a DICOM instance stored twice)")
        print(
            f"reconstructed {len(status['done'])}, skipped {len(status['skipped'])} (already done), failed {len(status['failed'])}"
            + (f"; not radiographs, skipped: {', '.join(not_inputs)}" if not_inputs else ""),
            file=sys.stderr,
        )
        if status["failed"]:
            raise SystemExit(1)
        if not any(status.values()):
            none_found()
        return status


def _done(fn: Callable, *args) -> concurrent.futures.Future:
    """``fn(*args)`` run now, as a finished Future (its exception kept, KeyboardInterrupt raised)."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    try:
        future.set_result(fn(*args))
    except Exception as e:
        future.set_exception(e)
    return future
