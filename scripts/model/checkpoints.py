"""Network weights from files: state-dict checkpoints (``torch.load(weights_only=True)``) and, only when asked, TorchScript.

A state dict is data; a TorchScript archive is code (``torch.jit.load`` runs what it holds), like a
bundle config: take it only from a trusted source. :func:`load_weights` puts a state dict into a
network (training from a pretrained model, inference); :func:`load_network` also accepts a
TorchScript archive when the caller says so (``torchscript=True``: the inference config's
``torchscript`` key, the Deploy app's ``.ts`` model path). Both refuse missing, empty, corrupt,
mismatched or (shipped files) altered files with one :class:`InputFileError` naming the file.
"""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from pathlib import Path
from typing import Mapping

import torch
from scripts.io.files import InputFileError, PathLike, first_line
from scripts.model.release import verify_shipped
from scripts.model.widening import widen_state_dict


def is_torchscript(path: PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding TorchScript code or constants)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def embedded_configs(path: PathLike) -> list[dict]:
    """The configs a TorchScript archive embeds as extra files (``ckpt_export``'s ``--config_file``, each as the file
    held it; not ``metadata.json``), read from the zip without running its code; [] for any other file."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [
                n for n in z.namelist() if "/extra/" in n and n.endswith(".json") and not n.endswith("/metadata.json")
            ]
            configs = [json.loads(z.read(n)) for n in names]
    except (zipfile.BadZipFile, OSError, ValueError):  # not a zip, unreadable, not JSON
        return []
    return [c for c in configs if isinstance(c, dict)]


def load_problem(error: Exception) -> str:
    """``Type: reason`` why ``torch.load(weights_only=True)`` refused a file, in one line: the unpickler's own reason
    (``Unsupported operand 110``, ``Unsupported global: GLOBAL builtins.set ...``), not PyTorch's first line, which
    advises retrying with ``weights_only=False`` (that would run whatever code the file holds)."""
    text = str(error)
    reason = (
        re.search(r"WeightsUnpickler error:\s*([^\n]+)", text) if text.startswith("Weights only load failed") else None
    )
    return f"{type(error).__name__}: {reason.group(1).split('. ')[0].strip()}" if reason else first_line(error)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise InputFileError(path, "checkpoint not found")
    if path.stat().st_size == 0:
        raise InputFileError(path, "checkpoint file is empty")
    verify_shipped(path)


def _load_state_dict_into(path: Path, network: torch.nn.Module, widen: bool = False) -> torch.nn.Module:
    """Load the state dict file ``path`` (already checked present, non-empty, not TorchScript) into ``network``
    (``widen``: a narrower network's weights, embedded by :func:`scripts.model.widening.widen_state_dict`)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. pickle-protocol notes on foreign files: the error below says it
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors of corrupt or foreign files
        raise InputFileError(path, f"unreadable checkpoint ({load_problem(e)})") from None
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputFileError(path, "not a network state dict (expected parameter name -> tensor)")
    if widen:
        try:
            state = widen_state_dict(state, network)
        except ValueError as e:
            raise InputFileError(path, f"cannot widen into network_def: {e}") from None
    check_fits(path, state, network)
    network.load_state_dict(state)
    return network


def check_fits(path: PathLike, state: Mapping[str, torch.Tensor], network: torch.nn.Module) -> None:
    """Refuse the state dict ``state`` (read from ``path``) unless its names and shapes are ``network``'s.

    Raises:
        InputFileError: naming ``path`` and up to three differing, missing and unexpected parameters.
    """
    own = network.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    differ = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or differ:
        parts = [
            f"{label} {names[:3]}{' ...' if len(names) > 3 else ''}"
            for label, names in (("shapes differ for", differ), ("missing", missing), ("unexpected", unexpected))
            if names
        ]
        raise InputFileError(
            path, "checkpoint from another bundle version or network configuration: " + "; ".join(parts)
        )


def load_weights(path: PathLike, network: torch.nn.Module, widen: bool = False) -> torch.nn.Module:
    """``network`` (same object, mode and device kept) with the state dict of ``path`` loaded into it.

    A ``{"model": state_dict}`` wrapper (e.g. a training ``checkpoint_epoch=N.pt``) is accepted. ``widen``: the
    file holds a network of the same layout with fewer channels (smaller ``features``), embedded so that
    ``network`` starts out computing what it did (:mod:`scripts.model.widening`).

    Raises:
        InputFileError: missing, empty, unreadable or TorchScript file, or weights that do not fit ``network``.
    """
    path = Path(path)
    _check_file(path)
    if is_torchscript(path):
        raise InputFileError(
            path,
            "a TorchScript archive holds no trainable weights for network_def: give a state-dict checkpoint (model.pt)",
        )
    return _load_state_dict_into(path, network, widen)


def load_network(
    path: PathLike, network: torch.nn.Module | None, device: torch.device | str = "cpu", torchscript: bool = False
) -> torch.nn.Module:
    """Network with the weights of ``path`` in eval mode on ``device``.

    ``path`` is a state dict loaded into ``network`` (as :func:`load_weights`), or, with ``torchscript``,
    also a TorchScript archive (``torch.jit.load``: its code runs; ``network`` unused).

    Raises:
        InputFileError: missing, empty or unreadable file, a TorchScript archive without ``torchscript``,
            or weights that do not fit ``network``.
    """
    path = Path(path)
    _check_file(path)
    if is_torchscript(path):
        if not torchscript:
            raise InputFileError(
                path,
                "is a TorchScript archive (code, not data): not loaded; give a state-dict checkpoint, or, for a TorchScript "
                "file from a trusted source, ask for it explicitly (--torchscript true; the Deploy app's .ts model path)",
            )
        try:
            return torch.jit.load(str(path), map_location=device).eval()
        except Exception as e:  # torch raises many types for corrupt archives
            raise InputFileError(path, f"unreadable TorchScript model ({type(e).__name__}: {e})") from None
    if network is None:
        raise InputFileError(path, "a state-dict checkpoint needs the network definition (network_def)")
    return _load_state_dict_into(path, network).to(device).eval()
