"""A training run's record, ``training.json`` beside its checkpoints (``ckpt_dir`` and ``output_dir``).

A fresh run writes it as training starts (:class:`scripts.model.training.RunRecordWriter`): the bundle version, the
settings its weights mean something under (:func:`network_settings`: keys that inference must be configured with,
several of which leave the weights' shapes alone, e.g. ``image_size``), ``epochs``, the ``pretrained`` file it started
from (path, SHA-256) and its data sets. A resume checks the run's settings and ``--pretrained`` against it
(:func:`scripts.model.training.resume_checkpoint`); inference, evaluation, the Deploy app, the exports and the release
step check their network settings against the record in a checkpoint's folder before loading it
(:func:`check_trained_settings`; ``ckpt_export``: :func:`check_exported_checkpoint`). The shipped dual-face model
has no record: metadata.json states its size. Other checkpoints without a record (runs of earlier bundles, a model.pt
copied elsewhere) are not checked. No ignite here: the
Deploy app imports this module through :mod:`scripts.reconstruction.reconstruct`.
"""

from __future__ import annotations

import inspect
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from monai.bundle import ConfigParser
from scripts.config_flags import as_count, as_flag, as_number, as_positive, is_null
from scripts.io.dicom_export import bundle_version
from scripts.io.files import InputFileError, PathLike, ckpt_export_arguments, sha256, write_json
from scripts.model.checkpoints import embedded_configs
from scripts.model.release import NETWORK_FORMAT_KEY, shipped_network_settings

RECORD_NAME = "training.json"
RECORD_KIND = "3ddx training run"  # the record's "kind": a training.json without it is not this bundle's


def network_settings(
    image_size: int | str,
    bones: Sequence[str],
    faces: int | str,
    features: Sequence[int],
    depth_prior_mm: Sequence[float],
    centre_prior_mm: Sequence[float],
    fov_channel: bool | str,
    fov_fill: float | str,
) -> dict:
    """The config keys of training and inference that must agree for a network's weights (configs/train.yaml,
    configs/inference.yaml), as plain JSON values: ``image_size`` (px), ``bones`` (channel order), ``faces``,
    ``features``, the depth affines ``depth_prior_mm`` and ``centre_prior_mm`` (mean, scale; mm), ``fov_channel``
    and ``fov_fill`` (the image value outside the radiograph after normalisation). A value of another kind raises
    InputFileError naming its option (``--bones``)."""
    return {
        "image_size": as_count(image_size, "image_size", 16, multiple=16),  # the network halves it four times
        "bones": _listed(
            bones, "bones", "a list of distinct bone names, e.g. [pelvis, femur_left, femur_right]", _names
        ),
        "faces": as_count(faces, "faces", 1, maximum=2),  # front (and back) faces
        "features": [
            as_count(f, "features", 1)
            for f in _listed(features, "features", "six channel counts (BasicUNet's levels)", lambda v: len(v) == 6)
        ],
        **{
            name: [
                as_positive(v, name)
                for v in _listed(prior, name, "two numbers, mean and scale (mm)", lambda v: len(v) == 2)
            ]
            for name, prior in (("depth_prior_mm", depth_prior_mm), ("centre_prior_mm", centre_prior_mm))
        },
        "fov_channel": as_flag(fov_channel, "fov_channel"),
        "fov_fill": as_number(fov_fill, "fov_fill", "normalised image value"),
    }


NETWORK_KEYS = tuple(inspect.signature(network_settings).parameters)  # config keys of the same names (inference.yaml)


def stated_network_settings(configs: Sequence[Mapping[str, Any]]) -> dict | None:
    """The network settings that ``configs`` (raw config dicts, as files hold them) state as plain values at their top
    level; None when one of :data:`NETWORK_KEYS` is missing, an expression or reference (``$``, ``@``, ``%``: nothing
    of a config is evaluated here), given differently by two of them, or not a valid value."""
    values: dict[str, Any] = {}
    for config in configs:
        for key in NETWORK_KEYS:
            if key in config and values.setdefault(key, config[key]) != config[key]:
                return None
    if set(values) != set(NETWORK_KEYS) or any(isinstance(v, str) and v[:1] in "$@%" for v in values.values()):
        return None
    try:
        return network_settings(**values)
    except InputFileError:
        return None


def _names(items: list) -> bool:
    """Whether ``items`` are distinct non-empty texts."""
    return all(isinstance(b, str) and b for b in items) and len(set(items)) == len(items)


def _listed(value: Sequence, name: str, expected: str, valid: Callable[[list], bool] = bool) -> list:
    """``value`` as a list: a non-empty list or tuple that is ``valid``; else InputFileError naming ``--name``."""
    items = list(value) if isinstance(value, (list, tuple)) else []
    if not (items and valid(items)):
        raise InputFileError(f"--{name}", f"must be {expected}, got {value!r}")
    return items


def run_record(
    network: Mapping[str, Any],
    epochs: int | str,
    pretrained: PathLike | None,
    pretrained_widen: bool | str,
    dataset_dir: PathLike | Sequence[PathLike],
) -> dict:
    """A fresh run's ``training.json``: ``network`` (:func:`network_settings`), ``epochs``, ``pretrained`` (None, or
    ``{"path": absolute path, "sha256": ...}``), ``pretrained_widen`` and ``dataset_dir`` (absolute paths).

    Raises:
        InputFileError: ``pretrained`` is not a file (``checkpoint not found``, as loading it would say).
    """
    if is_null(pretrained) or pretrained == "":  # none (null, as the command line passes it)
        started = None
    elif not Path(pretrained).is_file():
        raise InputFileError(pretrained, "checkpoint not found")
    else:
        started = {"path": os.path.abspath(pretrained), "sha256": sha256(pretrained)}
    folders = [dataset_dir] if isinstance(dataset_dir, (str, Path)) else list(dataset_dir)
    return {
        "kind": RECORD_KIND,
        "bundle_version": bundle_version(),
        "network": dict(network),
        "epochs": as_count(epochs, "epochs", 1),
        "pretrained": started,
        "pretrained_widen": as_flag(pretrained_widen, "pretrained_widen"),
        "dataset_dir": [os.path.abspath(d) for d in folders],
    }


def read_run_record(folder: PathLike) -> dict | None:
    """The record ``folder/training.json`` of a training run, or None: no such file, or a file that is not one (a
    user's own ``training.json``, unreadable JSON)."""
    path = Path(folder) / RECORD_NAME
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, unreadable, not UTF-8 or not JSON
        return None
    ok = isinstance(record, dict) and record.get("kind") == RECORD_KIND and isinstance(record.get("network"), dict)
    return record if ok else None


def differing_settings(recorded: Mapping[str, Any], configured: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (recorded value, configured value)}`` of the recorded network settings that ``configured`` (both
    :func:`network_settings`) gives otherwise; keys only one of them has are not compared."""
    return {k: (v, configured[k]) for k, v in recorded.items() if k in configured and configured[k] != v}


CONFIG_SUFFIXES = (".yaml", ".yml", ".json")  # an ``option`` naming a config file (:func:`option_text`)


def _config_form(option: str | None) -> tuple[str, str] | None:
    """(file, dict-valued key or "") of an ``option`` that names a config file (``configs/inference.yaml``,
    ``configs/evaluate.yaml#single_face_overrides``), else None."""
    file, _, key = (option or "").partition("#")
    return (file, key) if file.lower().endswith(CONFIG_SUFFIXES) else None


def option_text(values: Mapping[str, Any], option: str | None = None) -> str:
    """How to set config keys to ``values``, as the entry point takes them. ``option``: None, each key its own
    option (``--image_size 64 --fov_channel true``); a dict-valued key (evaluate.yaml's ``inference_overrides``):
    ``--inference_overrides "{'image_size': 64}"``; ``NAME=``, a repeated KEY=VALUE option (export_onnx's
    ``override=``): ``--override image_size=64``; a config file, or ``FILE#KEY`` a dict-valued key of it, where no
    option reaches (the release step, the Deploy app): ``image_size: 64 in configs/inference.yaml``,
    ``single_face_overrides: {"image_size": 32} in configs/evaluate.yaml`` (values as YAML)."""
    config = _config_form(option)
    if config:
        file, key = config
        yaml_values = {key: dict(values)} if key else values
        return ", ".join(f"{k}: {json.dumps(v)}" for k, v in yaml_values.items()) + f" in {file}"
    if option and option.endswith("="):
        return " ".join(f"--{option[:-1]} {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in values.items())
    if option:
        return f'--{option} "{dict(values)!r}"'

    def cli(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        return f'"{v!r}"' if isinstance(v, (list, tuple)) else str(v)

    return " ".join(f"--{k} {cli(v)}" for k, v in values.items())


def check_trained_settings(
    ckpt_path: PathLike | None, configured: Mapping[str, Any], option: str | None = None
) -> None:
    """Refuse a checkpoint whose folder's training record (``training.json``) says it was trained under other network
    settings than ``configured`` (:func:`network_settings`); the shipped dual-face model and its export, which have no
    record, by the size metadata.json states (:func:`scripts.model.release.shipped_network_settings`); another
    TorchScript archive by the config it embeds (``ckpt_export``'s ``--config_file``, :func:`stated_network_settings`);
    none of these (or no file at ``ckpt_path``): nothing checked.

    Raises:
        InputFileError: naming ``ckpt_path``, each differing key with its trained and configured values, and how to
            configure the trained ones (:func:`option_text` with ``option``: pass the options, or set the config keys).
    """
    if ckpt_path in (None, "") or not Path(ckpt_path).is_file():
        return
    record, stated_in = read_run_record(Path(ckpt_path).parent), Path(ckpt_path).parent / RECORD_NAME
    if record is None and (shipped := shipped_network_settings(ckpt_path)) is not None:
        record, stated_in = {"network": shipped}, f"configs/metadata.json {NETWORK_FORMAT_KEY}"
    if record is None and (embedded := stated_network_settings(embedded_configs(ckpt_path))) is not None:
        record, stated_in = {"network": embedded}, "the config its TorchScript archive embeds"
    differ = {} if record is None else differing_settings(record["network"], configured)
    if differ:
        said = "; ".join(f"{k} {trained!r}, configured {given!r}" for k, (trained, given) in differ.items())
        config = _config_form(option)
        dict_valued = config[1] if config else option and not option.endswith("=")
        extra = " (beside any other keys given there)" if dict_valued else ""
        raise InputFileError(
            ckpt_path,
            f"trained with other network settings ({stated_in}): {said}; "
            f"{'set' if config else 'pass'} {option_text({k: trained for k, (trained, _) in differ.items()}, option)}"
            f"{extra}",
        )


def check_exported_checkpoint(configured: Mapping[str, Any]) -> bool:
    """Within MONAI's ``ckpt_export`` (configs/inference.yaml ``network_def#_requires_``), refuse its ``--ckpt_file``
    as :func:`check_trained_settings` does, naming the keys to set in its ``--config_file``; and refuse network keys
    given on the command line, because the archive embeds the config files as they are, and that is what the Deploy
    app checks the archive by. Called elsewhere (inference, ``verify_net_in_out``), nothing. Returns True.

    Raises:
        InputFileError: naming the checkpoint (trained otherwise) or the config file (network keys overridden).
    """
    frame = sys._getframe(1)
    while frame is not None and ckpt_export_arguments(frame) is None:
        frame = frame.f_back
    if frame is not None:
        args = ckpt_export_arguments(frame)
        config = args.get("config_file_")
        files = [config] if isinstance(config, (str, Path)) else list(config or ["configs/inference.yaml"])
        named = str(files[0])
        check_trained_settings(args["ckpt_file_"], configured, named)
        stated = stated_network_settings([ConfigParser.load_config_files(files)])
        if stated is not None and (differ := differing_settings(stated, configured)):
            said = "; ".join(f"{k} {given!r}, {named} {held!r}" for k, (held, given) in differ.items())
            raise InputFileError(
                named,
                f"ckpt_export embeds this file as it is, not the network keys given on its command line ({said}); "
                f"set {option_text({k: given for k, (_, given) in differ.items()}, named)} (a copy) instead",
            )
    return True


def check_record_free(record: Mapping[str, Any], *folders: PathLike) -> list[Path]:
    """The ``training.json`` paths of ``folders`` (each distinct folder once) that a fresh run writes ``record`` into.
    One already there may stay when it holds ``record`` (the same command, stopped before its first checkpoint).

    Raises:
        InputFileError: naming a ``training.json`` that holds something else (a user's file, another run's record).
    """
    paths = list(dict.fromkeys(Path(os.path.abspath(f)) / RECORD_NAME for f in folders))
    for path in paths:
        if (path.exists() or path.is_symlink()) and read_run_record(path.parent) != dict(record):
            raise InputFileError(
                path, "exists, and this run starts afresh: left untouched; give a new --output_dir (or --ckpt_dir)"
            )
    return paths


def write_run_record(record: Mapping[str, Any], *folders: PathLike) -> None:
    """Write ``record`` as ``training.json`` into each of ``folders`` (atomically), after :func:`check_record_free`."""
    for path in check_record_free(record, *folders):
        if not path.exists():
            write_json(path, record)
