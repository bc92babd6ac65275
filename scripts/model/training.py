"""Small helpers the training configs call: datalist loading, resume checkpoint lookup (and its checks against
``pretrained`` and the run's record), the bfloat16 autocast inferer, best-model memory, progress bar."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from ignite.engine import Engine, Events
from ignite.handlers.tqdm_logger import ProgressBar
from monai.engines import Workflow
from monai.handlers import CheckpointSaver, from_engine
from monai.inferers import SimpleInferer
from scripts.config_flags import as_device, as_flag, is_null
from scripts.io.files import InputFileError, PathLike, in_folder, read_json, sha256
from scripts.io.progress import is_terminal
from scripts.model.checkpoints import check_fits, load_problem
from scripts.model.run_record import (
    RECORD_NAME,
    check_record_free,
    differing_settings,
    option_text,
    read_run_record,
    write_run_record,
)

SAMPLE_FILE_KEYS = ("image", "depth", "mask", "geometry")
OPTIONAL_SAMPLE_FILE_KEYS = ("fov",)  # the radiograph's own area; data sets simulated before it have none
CHECKPOINT_PATTERN = re.compile(r"checkpoint_epoch=(\d+)\.pt$")


def load_datalist(dataset_dir: PathLike | Sequence[PathLike], key: str = "training", processes: int = 1) -> list[dict]:
    """Entries of ``dataset_dir/datalist.json[key]`` with the sample files made absolute.

    ``dataset_dir`` may be a list of folders (e.g. real-anatomy and procedural data sets): their lists
    are joined, and a folder without entries under ``key`` adds none. ``processes``: the processes that share the
    list, one entry each at least (multi-process validation: MONAI's ``DistributedSampler`` without padding).

    Raises :class:`InputFileError` naming the datalist (missing key, empty list, bad entry, fewer entries than
    ``processes``; for a list of folders: no entries in any, or ``--dataset_dir`` for fewer entries than
    ``processes``) or the missing sample file.
    """
    folders = dataset_dirs(dataset_dir)
    if isinstance(dataset_dir, (str, Path)):
        entries, source = _folder_entries(folders[0], key, required=True), folders[0] / "datalist.json"
    else:
        entries, source = [e for d in folders for e in _folder_entries(d, key, required=False)], "--dataset_dir"
    if not entries:
        raise InputFileError(
            folders[0] / "datalist.json",
            f"no entries under key {key!r} in any of {[str(d) for d in folders]}{_how_to_fill(key, folders)}",
        )
    if len(entries) < processes:
        raise InputFileError(
            source,
            f"{len(entries)} {key} entr{'y' if len(entries) == 1 else 'ies'} for {processes} processes; multi-process "
            f"training needs at least one {key} sample per process (docs/training.md)",
        )
    return entries


def dataset_dirs(dataset_dir: PathLike | Sequence[PathLike]) -> list[Path]:
    """``--dataset_dir`` as a list of data set folders: one folder, or a non-empty list of them, none twice.

    Raises :class:`InputFileError` naming ``--dataset_dir`` for anything else (a number, a dict, an empty list).
    """
    given = [dataset_dir] if isinstance(dataset_dir, (str, Path)) else dataset_dir
    if (
        not isinstance(given, (list, tuple))
        or not given
        or not all(isinstance(d, (str, Path)) and str(d) for d in given)
    ):
        raise InputFileError(
            "--dataset_dir",
            f"expected a data set folder or a list of them, e.g. \"['data/sim','data/sim_own']\"; got {dataset_dir!r}",
        )
    folders = [Path(d) for d in given]
    resolved = [d.resolve() for d in folders]
    twice = next((d for k, d in enumerate(folders) if resolved[k] in resolved[:k]), None)
    if twice is not None:
        raise InputFileError("--dataset_dir", f"{twice} is listed twice")
    return folders


def recorded_path(recorded: PathLike, dataset_dir: PathLike) -> Path:
    """A path a sample.json records (``ct``, ``labels``): relative to its data set folder ``dataset_dir`` (bundle
    0.10.7 and later), else as it was given to the simulator (earlier samples: absolute, or from that run's folder)."""
    in_dataset = in_folder(recorded, dataset_dir)
    return in_dataset if in_dataset.exists() else Path(recorded)


def _how_to_fill(key: str, folders: Sequence[Path]) -> str:
    """What gives data sets entries under one of the simulator's lists (e.g. own CTs all simulated into training, which
    leaves validation empty); nothing for another key."""
    if key not in ("training", "validation", "test"):
        return ""
    return (
        f": simulate a CT into it with python -m scripts.simulate --split {key}, or list a data set that has "
        f"{key} samples beside it, --dataset_dir \"['data/sim',{','.join(repr(str(d)) for d in folders)}]\""
    )


def _folder_entries(folder: Path, key: str, required: bool) -> list[dict]:
    """:func:`load_datalist` of one folder; a missing or empty list is an error only when ``required``."""
    path = folder / "datalist.json"
    datalist = read_json(path)
    listed = datalist.get(key) if isinstance(datalist, dict) else None
    if isinstance(datalist, dict) and not required and listed in (None, []):
        return []
    if not isinstance(listed, list) or not listed:
        raise InputFileError(path, f"no non-empty list under key {key!r}{_how_to_fill(key, [folder])}")
    entries = []
    for i, item in enumerate(listed):
        if not isinstance(item, dict) or any(k not in item for k in SAMPLE_FILE_KEYS):
            raise InputFileError(path, f"{key}[{i}] must be an object with keys {list(SAMPLE_FILE_KEYS)}")
        entry = dict(item)
        for k in SAMPLE_FILE_KEYS + tuple(k for k in OPTIONAL_SAMPLE_FILE_KEYS if k in item):
            f = folder / item[k]
            if not f.is_file():
                raise InputFileError(f, f"listed in {path} ({key}[{i}].{k}) but missing")
            entry[k] = str(f)
        entries.append(entry)
    return entries


def resume_checkpoint(
    output_dir: PathLike,
    resume: bool | str = True,
    pretrained: PathLike | None = None,
    network: torch.nn.Module | None = None,
    ckpt_dir: PathLike | None = None,
    epochs: int | str | None = None,
    record: Mapping | None = None,
) -> str | None:
    """The run's checkpoint to resume from (:func:`latest_checkpoint` when ``resume``), checked before training starts;
    a complete run (all ``epochs`` done) is said in one line on stderr: nothing to train. ``record``: this run's
    training record (:func:`scripts.model.run_record.run_record`), checked against the one in ``output_dir``.

    Raises:
        InputFileError: a checkpoint to resume and ``pretrained`` weights at once, unless ``output_dir``'s record says
            the run started from that file (same SHA-256; else the line says how to choose), or a checkpoint that is
            not a training checkpoint of this bundle (read with ``weights_only=True``; its ``model`` entry a state
            dict) or whose model does not fit ``network``, or whose record gives other network settings (e.g.
            ``image_size``) than ``record``, or whose cosine schedule (``lr_scheduler`` ``T_max``) is not ``epochs``
            long (resuming restores the checkpoint's schedule: epochs past its end would train at a learning rate near
            0, then rising); for a fresh run (``resume`` off, or nothing to resume), a ``checkpoint_epoch=N.pt`` of an
            earlier run in ``output_dir``, a ``model.pt`` in ``ckpt_dir`` (default ``output_dir``) or a
            ``training.json`` holding another record in either: the run would overwrite files it did not write, and
            a later resume would pick up the earlier run's epoch.
    """
    resume, latest = as_flag(resume, "resume"), latest_checkpoint(output_dir)
    ckpt_dir = output_dir if ckpt_dir in (None, "") else ckpt_dir
    if latest is not None and not resume:
        raise InputFileError(
            latest,
            "a checkpoint of an earlier run, and --resume false: left untouched; to start over give a new --output_dir",
        )
    if latest is None:
        best = Path(ckpt_dir) / "model.pt"
        if best.exists() or best.is_symlink():
            raise InputFileError(
                best,
                "exists, and this run starts afresh (no checkpoint_epoch=N.pt to resume in --output_dir): "
                "left untouched; give a new --output_dir (or --ckpt_dir)",
            )
        if record is not None:
            check_record_free(record, output_dir, ckpt_dir)
        return None
    recorded = read_run_record(output_dir)
    if not (is_null(pretrained) or pretrained == ""):
        _check_resumed_pretrained(latest, recorded, pretrained, Path(output_dir) / RECORD_NAME)
    state = _read_checkpoint(latest)
    model = state.get("model") if isinstance(state, Mapping) else None
    if not isinstance(model, Mapping) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise InputFileError(
            latest,
            "not a training checkpoint of this bundle (no 'model' state dict); move it out of "
            "--output_dir or give a new --output_dir",
        )
    if network is not None:
        check_fits(latest, model, network)
    differ = {} if recorded is None or record is None else differing_settings(recorded["network"], record["network"])
    if differ:
        said = "; ".join(f"{k} {trained!r}, resumed with {given!r}" for k, (trained, given) in differ.items())
        raise InputFileError(
            latest,
            f"a run trained with other network settings ({Path(output_dir) / RECORD_NAME}): {said}; resume with "
            f"{option_text({k: trained for k, (trained, _) in differ.items()})}",
        )
    schedule = state.get("lr_scheduler")
    scheduled = schedule.get("T_max") if isinstance(schedule, Mapping) else None
    if epochs is not None and scheduled is not None and int(scheduled) != int(epochs):
        raise InputFileError(
            latest,
            f"a run of --epochs {scheduled} (its cosine learning-rate schedule), resumed with --epochs {epochs}: resume "
            f"with --epochs {scheduled}; to train on, fine-tune from its model.pt with --pretrained in a new --output_dir",
        )
    done = _epochs_done(state)
    if epochs is not None and done >= int(epochs):
        print(
            f"{latest}: the run is complete ({done} of {epochs} epochs): nothing to train; to train on, fine-tune "
            "from its model.pt with --pretrained in a new --output_dir",
            file=sys.stderr,
        )
    return latest


def _check_resumed_pretrained(latest: str, recorded: Mapping | None, pretrained: PathLike, record_path: Path) -> None:
    """Refuse ``--pretrained`` beside the checkpoint ``latest`` to resume unless the run's record (``recorded``, None:
    none) says it started from that file (same SHA-256): then the rerun of the same command resumes."""
    started = None if recorded is None else recorded.get("pretrained")
    same = isinstance(started, Mapping) and Path(pretrained).is_file() and started.get("sha256") == sha256(pretrained)
    if same:
        return
    choose = f"to fine-tune from {pretrained} give a new --output_dir; to resume this run drop --pretrained"
    if recorded is None:
        raise InputFileError(latest, f"a checkpoint to resume, and --pretrained {pretrained} was given too: {choose}")
    if isinstance(started, Mapping):
        began, given = f"from {started.get('path')}", "is not that file (SHA-256 differs)"
    else:
        began, given = "without --pretrained", "was given"
    raise InputFileError(
        latest,
        f"a checkpoint to resume of a run that started {began} ({record_path}), and --pretrained {pretrained} {given}: "
        f"{choose}",
    )


def _read_checkpoint(path: PathLike) -> object:
    """``torch.load(path, weights_only=True)`` of a resume checkpoint; InputFileError naming it when unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors of corrupt or foreign files, code refused by weights_only
        raise InputFileError(path, f"unreadable resume checkpoint ({load_problem(e)})") from None


def _epochs_done(state: object) -> int:
    """Epochs a training checkpoint's ``trainer`` state has completed (0 when it has no such state)."""
    trainer = state.get("trainer") if isinstance(state, Mapping) else None
    if not isinstance(trainer, Mapping) or not trainer.get("epoch_length"):
        return 0
    return int(trainer.get("iteration", 0)) // int(trainer["epoch_length"])


def run_complete(checkpoint: PathLike | None, epochs: int | str) -> bool:
    """Whether the resume checkpoint ``checkpoint`` (:func:`resume_checkpoint`; None: a fresh run) has all ``epochs``
    done: the run trains nothing, and its TensorBoard handlers stay off (no empty event files)."""
    return checkpoint is not None and _epochs_done(_read_checkpoint(checkpoint)) >= int(epochs)


def latest_checkpoint(output_dir: PathLike) -> str | None:
    """Path of the highest-epoch ``checkpoint_epoch=N.pt`` in ``output_dir``, or None (fresh run)."""
    found = [
        (int(m.group(1)), p)
        for p in Path(output_dir).glob("checkpoint_epoch=*.pt")
        if (m := CHECKPOINT_PATTERN.search(p.name))
    ]
    return str(max(found)[1]) if found else None


def bfloat16_supported(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU of compute capability 8 or more (Ampere on), a CPU with
    AVX512-BF16 or AMX instructions. Elsewhere bfloat16 is emulated, slower than float32."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


class AutocastInferer(SimpleInferer):
    """The network called under bfloat16 autocast when ``enabled`` (training's ``amp``): convolutions and matrix
    products in bfloat16, 1.3-1.9x faster steps where :func:`bfloat16_supported` (2 CPU cores, 128-256 px); the
    network's output layers run in float32 (:class:`scripts.model.networks.DualFaceDepthNet`), so the loss sees float32
    depths. No gradient scaling: bfloat16 has float32's exponent range. Refuses (InputFileError naming
    ``--amp``) a device without native bfloat16."""

    def __init__(self, device: torch.device | str, enabled: bool | str = False):
        super().__init__()
        device = as_device(device)
        self.device_type = device.type
        self.enabled = as_flag(enabled, "amp")
        if self.enabled and not bfloat16_supported(device):
            raise InputFileError(
                "--amp",
                f"{device} has no native bfloat16 (CPU: AVX512-BF16 or AMX; CUDA: Ampere or newer), where "
                "autocast is slower than float32; leave amp false",
            )

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args, **kwargs) -> torch.Tensor:
        """``network(inputs)`` (SimpleInferer) under ``torch.autocast(device type, bfloat16)`` when enabled."""
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.enabled):
            return super().__call__(inputs, network, *args, **kwargs)


class LossProgressBar(ProgressBar):
    """ignite tqdm ProgressBar showing the iteration loss on a terminal; ``attach(engine)`` as MONAI handlers expect.
    Off when stderr is a log (a file or pipe: it would write a status per iteration there); the StatsHandler's loss
    lines (configs/train.yaml, at most every 30 s) show the progress there."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("disable", not is_terminal())
        super().__init__(*args, **kwargs)

    def attach(self, engine: Engine, *args, **kwargs) -> None:  # type: ignore[override]
        """Attach to ``engine``, showing the ``loss`` of each iteration unless an ``output_transform`` is given."""
        kwargs.setdefault("output_transform", lambda out: {"loss": from_engine(["loss"], first=True)(out)})
        super().attach(engine, *args, **kwargs)


class BestModelMemory:
    """Checkpointable memory of the best validation so far: the evaluator's ``best_metric`` and
    ``best_metric_epoch`` and the key-metric list of its best-model ``CheckpointSaver``.

    Saved in every ``checkpoint_epoch=N.pt`` and restored on resume, so the first validation after
    an interruption replaces the best model only when it beats the epochs before the interruption.
    """

    def __init__(self, evaluator: Workflow, saver: CheckpointSaver):
        self.evaluator, self.saver = evaluator, saver

    def state_dict(self) -> dict:
        """The best metric, its epoch and the saver's key-metric list (ignite ``Checkpoint`` state)."""
        tracked = self.saver._key_metric_checkpoint  # MONAI exposes loading it, not saving it
        return {
            "best_metric": self.evaluator.state.best_metric,
            "best_metric_epoch": self.evaluator.state.best_metric_epoch,
            "saver": tracked.state_dict() if tracked is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.evaluator.state.best_metric = state["best_metric"]
        self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]
        if state["saver"] is not None:
            self.saver.load_state_dict(state["saver"])


class RunRecordWriter:
    """Handler writing a fresh run's record (:func:`scripts.model.run_record.write_run_record`) into ``folders`` as
    its trainer starts (configs/train.yaml ``train#handlers``; disabled on resume and on DDP ranks above 0)."""

    def __init__(self, record: Mapping[str, Any], folders: Sequence[PathLike]):
        self.record, self.folders = dict(record), list(folders)

    def attach(self, engine: Engine) -> None:
        """Write the record when ``engine`` starts."""
        engine.add_event_handler(Events.STARTED, lambda _: write_run_record(self.record, *self.folders))
