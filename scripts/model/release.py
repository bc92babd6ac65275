"""The shipped files in ``models/``: SHA-256 sums in configs/metadata.json, checked on load, and the release step.

Runs never write into ``models/`` (training, ``ssm build`` and exports write under ``runs/`` or the
folder given); the shipped files change only through this deliberate step::

    python -m scripts.release [--model runs/train/model.pt] [--single_face runs/single/model.pt]
        [--ssm runs/ssm/ssm.npz] [--torchscript runs/export/model.ts]

It checks each file (state dicts load with ``weights_only=True``, the shape model reads), copies it
atomically over its shipped name and records its SHA-256 in ``configs/metadata.json``
(``shipped_files_sha256``). Loading a listed file whose sum differs is refused with one line.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import shutil
from pathlib import Path
from typing import Sequence

from scripts.io.files import METADATA, MODELS_DIR, InputFileError, PathLike, atomic_path, exits_on_input_error, first_line, read_json

SHA_KEY = "shipped_files_sha256"
SHIPPED = {"model": "model.pt", "single_face": "model_single_face.pt", "ssm": "ssm.npz", "torchscript": "model.ts"}


def sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=32)
def _sum_of(path: str, size: int, mtime_ns: int) -> str:
    return sha256(path)


def shipped_name(path: PathLike) -> str | None:
    """``models/<name>`` when ``path`` is a file in this bundle's models/ folder, else None."""
    p = Path(path).resolve()
    return f"models/{p.name}" if p.parent == MODELS_DIR.resolve() else None


def verify_shipped(path: PathLike) -> None:
    """Refuse a shipped file (listed in metadata ``shipped_files_sha256``) whose SHA-256 differs from the listed one.

    Files outside models/, or not listed, are not checked. Raises :class:`InputFileError` naming the file.
    """
    name = shipped_name(path)
    if name is None or not Path(path).is_file():
        return
    expected = (read_json(METADATA).get(SHA_KEY) or {}).get(name)
    if expected is None:
        return
    st = Path(path).stat()
    if _sum_of(str(Path(path).resolve()), st.st_size, st.st_mtime_ns) != expected:
        raise InputFileError(
            path,
            f"SHA-256 differs from configs/metadata.json {SHA_KEY}: the shipped file was changed; restore it "
            "(git checkout models/) or ship a new one with python -m scripts.release",
        )


def _check(kind: str, path: Path) -> None:
    """The file is what its shipped name says (state dict, shape model, TorchScript archive), without running code."""
    if not path.is_file():
        raise InputFileError(path, "file not found")
    if kind in ("model", "single_face"):
        import torch

        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # pickle/zip errors of foreign files
            raise InputFileError(path, f"not a state-dict checkpoint ({first_line(e)})") from None
        if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise InputFileError(path, "not a network state dict (parameter name -> tensor); release the best model (model.pt), not a training checkpoint")
    elif kind == "ssm":
        from scripts.reconstruction.ssm import load_shape_models

        load_shape_models(path)
    elif kind == "torchscript":
        from scripts.model.checkpoints import is_torchscript

        if not is_torchscript(path):
            raise InputFileError(path, "not a TorchScript archive")


def release(files: dict[str, PathLike], metadata: PathLike = METADATA, models_dir: PathLike = MODELS_DIR) -> dict[str, str]:
    """Copy ``{kind: file}`` (kinds of :data:`SHIPPED`) over the shipped names in ``models_dir`` and record
    their SHA-256 in ``metadata``; returns ``{models/<name>: sha256}``. Every file is checked before any is copied."""
    files = {k: Path(v) for k, v in files.items() if v is not None}
    for kind, path in files.items():
        _check(kind, path)
    meta = read_json(metadata)
    sums = dict(meta.get(SHA_KEY) or {})
    extra = {}
    for kind, path in files.items():
        targets = [(path, Path(models_dir) / SHIPPED[kind])]
        if kind == "ssm" and path.with_suffix(".png").is_file():  # the explained-variance plot beside it
            targets.append((path.with_suffix(".png"), Path(models_dir) / "ssm.png"))
        for src, dst in targets:
            with atomic_path(dst, release=True) as tmp:
                shutil.copyfile(src, tmp)
            extra[f"models/{dst.name}"] = sums[f"models/{dst.name}"] = sha256(dst)
    meta[SHA_KEY] = dict(sorted(sums.items()))
    with atomic_path(metadata) as tmp:
        tmp.write_text(json.dumps(meta, indent=4) + "\n")
    return extra


@exits_on_input_error
def main(argv: Sequence[str] | None = None) -> int:
    """CLI: release the given run files into models/; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m scripts.release", description=__doc__.split("\n")[0])
    for kind, name in SHIPPED.items():
        p.add_argument(f"--{kind}", default=None, help=f"file to ship as models/{name}")
    a = p.parse_args(argv)
    files = {k: getattr(a, k) for k in SHIPPED if getattr(a, k) is not None}
    if not files:
        p.error("give at least one file to release (--model, --single_face, --ssm, --torchscript)")
    for name, digest in release(files).items():
        print(f"released {name} (sha256 {digest[:16]}...)")
    return 0
