"""Command-line config values: on/off keys, counts, lengths, paths, torch devices and shards.

``python -m monai.bundle run ... --key false`` hands the config the STRING ``"false"`` (Python
Fire parses only ``False``), which plain ``if @key`` would take as on. Configs read their flags
through :func:`as_flag`, so ``false``/``False``/``0``/``no`` all mean off; counts (``--batch_size``) through
:func:`as_count`; lengths (``--prior_centre_mm``) through :func:`as_positive`; fractions (``--cache_rate``) through
:func:`as_fraction` and (low, high) pairs (``--zoom_range``) through :func:`as_range`; paths through :func:`as_path`
(a command's path arguments: its argparse ``type=`` :func:`path_argument`; any check as one: :func:`argument`);
devices through :func:`as_device`, so ``--device cuda`` on a machine without CUDA is one clear line, not a traceback;
shards ``i/n`` (the simulator's and the inference workflow's ``--shard``) through :func:`as_shard`; a function's
keyword arguments (``--ssm_fit``) through :func:`as_keywords`, other mappings (``--inference_overrides``) through
:func:`as_mapping`, weights (``--loss_weights``) through :func:`as_weights`. A config's ``null`` given on the command
line arrives as the text ``null``: :func:`is_null` reads it (and ``none``) as None.
A bad value raises :class:`scripts.io.files.InputFileError` naming the option (``--<name>``).
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import torch
from scripts.io.files import InputFileError

_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def as_flag(value: bool | int | str, name: str = "flag") -> bool:
    """``value`` as a bool: bools, 0/1 and the words true/false, yes/no, on/off (any case); else InputFileError naming
    ``--name``."""
    if isinstance(value, bool):
        return value
    key = str(value).strip().lower()
    if key not in _WORDS:
        raise InputFileError(f"--{name}", f"must be true or false, got {value!r}")
    return _WORDS[key]


def as_count(value: int | str, name: str, minimum: int = 0, multiple: int = 1, maximum: int | None = None) -> int:
    """``value`` as a whole number from ``minimum`` to ``maximum`` (None: no limit), a multiple of ``multiple`` (ints and
    their decimal text; booleans refused), e.g. ``--batch_size``; else InputFileError naming ``--name``."""
    try:
        count = int(str(value).strip()) if not isinstance(value, (bool, float)) else None
    except ValueError:
        count = None
    if count is None or count < minimum or count % multiple or (maximum is not None and count > maximum):
        bounds = f"of at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        kind = f" and a multiple of {multiple}" if multiple > 1 else ""
        raise InputFileError(f"--{name}", f"must be a whole number {bounds}{kind}, got {value!r}")
    return count


def _number(value: float | str) -> float:
    """``value`` as a float (numbers and their decimal text); NaN for anything else, booleans too (``true`` is not 1)."""
    try:
        return float(str(value).strip()) if not isinstance(value, bool) else math.nan
    except ValueError:
        return math.nan


def as_number(value: float | str, name: str, unit: str = "") -> float:
    """``value`` as a finite number in ``unit`` (numbers and their decimal text; booleans refused), e.g. ``--fov_fill``;
    else InputFileError naming ``--name``."""
    number = _number(value)
    if not math.isfinite(number):
        raise InputFileError(f"--{name}", f"must be a number{f' ({unit})' if unit else ''}, got {value!r}")
    return number


def as_positive(value: float | str, name: str, unit: str = "mm", zero: bool = False) -> float:
    """``value`` as a finite number > 0 (``zero``: >= 0) in ``unit`` ('' for none; numbers and their decimal text;
    booleans refused: ``true`` is not 1 mm), e.g. ``--prior_centre_mm``; else InputFileError naming ``--name``."""
    number = _number(value)
    if not (math.isfinite(number) and (number >= 0 if zero else number > 0)):
        kind = "number of at least 0" if zero else "positive number"
        raise InputFileError(f"--{name}", f"must be a {kind}{f' ({unit})' if unit else ''}, got {value!r}")
    return number


def as_fraction(value: float | str, name: str) -> float:
    """``value`` as a number from 0 to 1 (a probability, ``--cache_rate``); else InputFileError naming ``--name``."""
    number = _number(value)
    if not 0 <= number <= 1:  # NaN too
        raise InputFileError(f"--{name}", f"must be a number from 0 to 1, got {value!r}")
    return number


def as_range(value: Sequence[float], name: str, unit: str) -> tuple[float, float]:
    """``value`` as (low, high): two positive numbers in ``unit``, low <= high (``--zoom_range``); else InputFileError
    naming ``--name``."""
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise InputFileError(f"--{name}", f"must be two positive numbers ({unit}), low and high, got {value!r}")
    low, high = (as_positive(v, name, unit) for v in value)
    if low > high:
        raise InputFileError(f"--{name}", f"must be two positive numbers ({unit}), low and high, got {value!r}")
    return low, high


def is_null(value: object) -> bool:
    """Whether ``value`` is None or the text ``null``/``none`` (any case): a config's ``null`` as the command line
    passes it (``--ssm_field_margin_mm null``)."""
    return value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none"))


def as_mapping(value: Mapping | None, name: str) -> dict:
    """``value`` as a dict (a mapping, e.g. ``--inference_overrides "{'image_size': 64}"``; None: empty); else
    InputFileError naming ``--name``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputFileError(f"--{name}", f"must be a mapping of names to values, e.g. \"{{'a': 1}}\", got {value!r}")
    return dict(value)


def as_keywords(
    value: Mapping | None,
    name: str,
    function: Callable,
    given: Iterable[str] = (),
    checks: Mapping[str, Callable[[object, str], object]] | None = None,
) -> dict:
    """``value`` as keyword arguments of ``function`` (a mapping; None: none), each key one of its parameters with a
    default other than those its caller ``given`` itself (e.g. ``--ssm_fit``), each value read by its ``checks``
    entry (called with the value and ``name#key``, e.g. a range by the key's meaning), else as its default's kind
    (a flag, a whole number, a number); else InputFileError naming ``--name`` (``--name#key``)."""
    value = as_mapping(value, name)
    defaults = {
        p.name: p.default
        for p in inspect.signature(function).parameters.values()
        if p.default is not inspect.Parameter.empty and p.name not in given
    }
    unknown = sorted(str(k) for k in value if k not in defaults)
    if unknown:
        accepted = ", ".join(sorted(defaults))
        raise InputFileError(f"--{name}", f"unknown argument(s) {', '.join(unknown)}; accepted: {accepted}")
    read = {bool: as_flag, int: as_count, float: as_number}
    checks = checks or {}
    return {
        k: (checks.get(k) or read.get(type(defaults[k]), lambda v, _: v))(v, f"{name}#{k}") for k, v in value.items()
    }


def as_weights(value: Mapping, name: str, keys: Sequence[str]) -> dict[str, float]:
    """``value`` as a mapping of exactly ``keys`` to numbers >= 0 (``--loss_weights``); else InputFileError naming
    ``--name`` (``--name#key`` for a value)."""
    value = as_mapping(value, name)
    if sorted(map(str, value)) != sorted(keys):
        raise InputFileError(f"--{name}", f"must map {', '.join(keys)} to numbers of at least 0, got {value!r}")
    return {k: as_positive(value[k], f"{name}#{k}", "", zero=True) for k in keys}


def as_path(value: str | os.PathLike, name: str) -> Path:
    """``value`` as a path: text or a path, not empty (``--output_dir ''`` would be the working folder, an option left
    without its value is ``True``); else InputFileError naming ``--name``."""
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise InputFileError(f"--{name}", f"must be a file or folder path, got {value!r}")
    return Path(value)


def argument(check: Callable[..., object], **options: object) -> Callable[[str], object]:
    """``check`` (one of this module's ``as_*``, with its keyword ``options``) as an argparse ``type=``: the checked
    value, else argparse's one line naming the argument in the check's words (``argument(as_count, minimum=1)``:
    ``--poses: must be a whole number of at least 1, got '0'``)."""

    def parse(text: str) -> object:
        try:
            return check(text, "", **options)
        except InputFileError as e:
            raise argparse.ArgumentTypeError(e.problem) from None

    return parse


def path_argument(text: str) -> str:
    """An argparse ``type=`` for a path argument: ``text`` as typed (a label map's preset name, a path's spelling as
    outputs record it) when :func:`as_path` takes it, else argparse's one line naming the argument (``--out: must be
    a file or folder path, got ''``: ``''`` would be the working folder)."""
    argument(as_path)(text)
    return text


def as_device(value: torch.device | str | None, name: str = "device") -> torch.device:
    """``value`` as a usable torch device (None: CUDA when available, else CPU); a malformed name or a CUDA
    device this machine does not have raises InputFileError naming ``--name``."""
    if value is None or str(value).strip() == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(value).strip())
    except (RuntimeError, ValueError) as e:
        raise InputFileError(
            f"--{name}", f"not a torch device ({value!r}: {str(e).splitlines()[0]}); e.g. cpu, cuda, cuda:0"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputFileError(
                f"--{name}", f"{value} requested but CUDA is not available on this machine; use --{name} cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputFileError(
                f"--{name}", f"{value} requested but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif device.type not in ("cpu",) and not getattr(torch.backends, device.type, None):
        raise InputFileError(f"--{name}", f"device type {device.type} is not supported here; use cpu or cuda")
    return device


def as_shard(value: str | tuple[int, int] | list[int] | None, name: str = "shard") -> tuple[int, int]:
    """``"i/n"`` (or (i, n); None or ``null``: the whole, (0, 1)) -> (i, n) with 0 <= i < n; else InputFileError naming
    ``--name``."""
    if is_null(value):
        return 0, 1
    try:
        i, n = (int(x) for x in (str(value).split("/") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise InputFileError(f"--{name}", f"must look like i/n, got {value!r}") from None
    if not 0 <= i < n:
        raise InputFileError(f"--{name}", f"index must satisfy 0 <= i < n, got {value!r}")
    return i, n
