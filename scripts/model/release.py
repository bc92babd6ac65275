"""The shipped files in ``models/``: SHA-256 sums in configs/metadata.json, checked on load, and the release step.

Runs never write into ``models/`` (training, ``ssm build`` and exports write under ``runs/`` or the
folder given); the shipped files change only through this deliberate step::

    python -m scripts.release [--model runs/train/model.pt] [--single_face runs/single/model.pt]
        [--ssm runs/ssm/ssm.npz] [--torchscript runs/export/model.ts]

It checks each file before it copies any (state dicts load with ``weights_only=True`` and strictly into the
configured network, and the network keys in a training record beside one are the shipped configs', the shape model
reads, a TorchScript archive computes what the state dict does), stages
every copy and the new ``configs/metadata.json`` as temporaries, then renames them over the shipped names and
records their SHA-256 (``shipped_files_sha256``), the metadata last: all or nothing. Loading a listed file whose
sum differs is refused with one line.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from scripts import BUNDLE_ROOT
from scripts.config_flags import path_argument
from scripts.io.files import (
    METADATA,
    MODELS_DIR,
    InputFileError,
    OneLineParser,
    PathLike,
    current_umask,
    exits_on_input_error,
    first_line,
    read_json,
    sha256,
)

if TYPE_CHECKING:  # torch loads only when a check needs it
    import torch

SHA_KEY = "shipped_files_sha256"
NETWORK_FORMAT_KEY = "network_data_format"
SHIPPED = {"model": "model.pt", "single_face": "model_single_face.pt", "ssm": "ssm.npz", "torchscript": "model.ts"}
# where the shipped configs set the network keys of each network file (run_record.option_text's config form)
KEYS_SET_IN = {
    "model": "configs/inference.yaml",
    "torchscript": "configs/inference.yaml",
    "single_face": "configs/evaluate.yaml#single_face_overrides",
}


@functools.lru_cache(maxsize=32)
def _sum_of(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a resolved ``path``, cached per file version: ``size`` and ``mtime_ns`` are only the cache's key."""
    return sha256(path)


def shipped_name(path: PathLike) -> str | None:
    """``models/<name>`` when ``path`` is a file in this bundle's models/ folder, else None."""
    p = Path(path).resolve()
    return f"models/{p.name}" if p.parent == MODELS_DIR.resolve() else None


def shipped_network_settings(path: PathLike) -> dict | None:
    """The network settings the shipped dual-face model (models/model.pt) and its export (models/model.ts) were trained
    under, as configs/metadata.json states them: ``image_size`` (px), its input's ``spatial_shape``; None for any other
    file (a run's files have their training record, :mod:`scripts.model.run_record`)."""
    if shipped_name(path) not in {f"models/{SHIPPED[k]}" for k in ("model", "torchscript")}:
        return None
    shape = read_json(METADATA)[NETWORK_FORMAT_KEY]["inputs"]["image"]["spatial_shape"]
    return {"image_size": int(shape[0])}


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


def _overrides(kind: str) -> dict:
    """The configs/inference.yaml keys a shipped ``kind`` runs under, besides the file's: none for the dual-face network
    (inference; its export the Deploy app's), for the single-face baseline ``faces`` 1 and configs/evaluate.yaml's
    ``inference_overrides`` and ``single_face_overrides`` (as evaluation builds it)."""
    if kind != "single_face":
        return {}
    from scripts.reconstruction.reconstruct import bundle_config

    evaluate = bundle_config(BUNDLE_ROOT / "configs" / "evaluate.yaml")
    return {"faces": 1, **evaluate.get_parsed_content(KEYS_SET_IN[kind].partition("#")[2])}


def _network(kind: str) -> tuple["torch.nn.Module", tuple[int, int, int]]:
    """The network a shipped state dict must fit and its input shape (C, H, W): configs/inference.yaml ``network_def``
    under :func:`_overrides`."""
    from scripts.model.export_onnx import network_from_config

    return network_from_config(overrides=_overrides(kind))


def _check_trained_settings(kind: str, path: Path) -> None:
    """Refuse a file whose training run's record (``training.json`` beside it) gives other network keys than the
    shipped configs run ``kind`` with (:func:`_overrides`): the shapes may fit (e.g. ``image_size``) and the shipped
    model would run silently wrong; the line names the keys to set in the config (:data:`KEYS_SET_IN`)."""
    from scripts.model.run_record import check_trained_settings
    from scripts.reconstruction.reconstruct import bundle_config

    configured = bundle_config(overrides=_overrides(kind)).get_parsed_content("network_settings")
    check_trained_settings(path, configured, KEYS_SET_IN[kind])


def _check(kind: str, path: Path, model: Path) -> None:
    """The file is what its shipped name says: a state dict that loads (strictly) into the configured network, a shape
    model, or a TorchScript archive whose outputs on a fixed input are those of ``model`` (the state dict released with
    it, else the shipped one) in that network, within 1e-4 plus 1e-6 relative (float32 rounding of ~950 mm depths).
    A network file with a training record beside it must agree with the shipped configs (:func:`_check_trained_settings`).
    State dicts load with ``weights_only=True``; the TorchScript archive's code runs (a trusted file being shipped)."""
    if not path.is_file():
        raise InputFileError(path, "is a folder; give the file to release" if path.is_dir() else "file not found")
    if kind in ("model", "single_face"):
        import torch
        from scripts.model.checkpoints import load_problem, load_weights

        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # pickle/zip errors of foreign files
            raise InputFileError(path, f"not a state-dict checkpoint ({load_problem(e)})") from None
        if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise InputFileError(
                path,
                "not a network state dict (parameter name -> tensor); release the best model (model.pt), not a training checkpoint",
            )
        _check_trained_settings(kind, path)
        try:
            load_weights(path, _network(kind)[0])
        except InputFileError as e:
            faces = " with faces 1 (the single-face baseline)" if kind == "single_face" else ""
            raise InputFileError(path, f"does not fit configs/inference.yaml network_def{faces}: {e.problem}") from None
    elif kind == "ssm":
        from scripts.reconstruction.ssm import load_shape_models

        load_shape_models(path)
    elif kind == "torchscript":
        import torch
        from scripts.model.checkpoints import is_torchscript, load_network

        if not is_torchscript(path):
            raise InputFileError(path, "not a TorchScript archive")
        _check_trained_settings(kind, path)
        network, shape = _network("model")
        x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0))
        scripted = load_network(path, None, torchscript=True)
        with torch.inference_mode():
            want = load_network(model, network)(x)
            try:
                got = scripted(x)
            except Exception as e:  # whatever the archive's code raises
                raise InputFileError(path, f"fails on the network's input {tuple(x.shape)} ({first_line(e)})") from None
        same_shape = isinstance(got, torch.Tensor) and got.shape == want.shape
        if not same_shape or not bool(((got - want).abs() <= 1e-4 + 1e-6 * want.abs()).all()):
            diff = f"up to {float((got - want).abs().max()):.3g}" if same_shape else "in shape"
            raise InputFileError(
                path,
                f"its outputs differ from {model}'s in configs/inference.yaml network_def ({diff}): not an export of that "
                "model; export it with monai.bundle ckpt_export (docs/deployment.md)",
            )


def _unwritten(path: Path, error: OSError) -> InputFileError:
    return InputFileError(
        path,
        f"cannot be written ({type(error).__name__}: {error.strerror or error}); nothing released: "
        "models/ and the metadata are as they were",
    )


def _stage(content: Path | str, dst: Path, made: list[Path]) -> tuple[Path, Path, Path | None]:
    """(temporary, ``dst``, backup): a temporary beside ``dst`` holding a copy of the file ``content`` (or the text
    ``content``) and, when ``dst`` exists, its old file hard-linked (or copied) aside; both listed in ``made``."""
    fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent)
    os.close(fd)
    tmp = Path(name)
    made.append(tmp)
    if isinstance(content, Path):
        shutil.copyfile(content, tmp)
    else:
        tmp.write_text(content)
    tmp.chmod(0o666 & ~current_umask())  # mkstemp creates 0600
    if not dst.exists():
        return tmp, dst, None
    backup = Path(f"{tmp}.old")
    made.append(backup)
    try:
        os.link(dst, backup)
    except OSError:  # a file system without hard links
        shutil.copy2(dst, backup)
    return tmp, dst, backup


def _install(staged: list[tuple[Path, Path, Path | None]]) -> None:
    """Rename each staged temporary onto its target, in order; on an ``OSError`` put every replaced target's old
    file back (a new one is removed) and raise the one line naming the target."""
    done: list[tuple[Path, Path | None]] = []
    for tmp, dst, backup in staged:
        try:
            os.replace(tmp, dst)
        except OSError as e:
            for replaced, old in reversed(done):
                if old is None:
                    replaced.unlink(missing_ok=True)
                else:
                    os.replace(old, replaced)
            raise _unwritten(dst, e) from None
        done.append((dst, backup))


def release(
    files: dict[str, PathLike], metadata: PathLike = METADATA, models_dir: PathLike = MODELS_DIR
) -> dict[str, str]:
    """Copy ``{kind: file}`` (kinds of :data:`SHIPPED`) over the shipped names in ``models_dir`` and record
    their SHA-256 in ``metadata``; returns ``{models/<name>: sha256}``.

    A new ``model`` comes with its TorchScript export (``torchscript``) unless the shipped model.ts already computes
    what it computes (the same weights). All or nothing: every file is checked (:func:`_check`), and every copy and
    the new metadata are staged as temporaries beside their targets before any target changes; then they are renamed
    into place, the metadata last. A failure (e.g. a full disk) raises :class:`InputFileError` and leaves
    ``models_dir`` and ``metadata`` as they were.
    """
    files = {k: Path(v) for k, v in files.items() if v is not None}
    models_dir, metadata = Path(models_dir), Path(metadata)
    for kind, path in files.items():
        _check(kind, path, files.get("model", models_dir / SHIPPED["model"]))
    shipped_ts = models_dir / SHIPPED["torchscript"]
    if "model" in files and "torchscript" not in files and shipped_ts.is_file():
        try:  # the shipped model.ts must stay an export of the shipped model.pt: the Deploy app runs it
            _check("torchscript", shipped_ts, files["model"])
        except InputFileError:
            raise InputFileError(
                files["model"],
                f"{shipped_ts} (the Deploy app's network) is an export of other weights; export this model with "
                "monai.bundle ckpt_export and release both, --model with --torchscript (docs/deployment.md)",
            ) from None
    meta = read_json(metadata)
    sums = dict(meta.get(SHA_KEY) or {})
    targets = [(path, models_dir / SHIPPED[kind]) for kind, path in files.items()]
    if "ssm" in files and files["ssm"].with_suffix(".png").is_file():  # the explained-variance plot beside it
        targets.append((files["ssm"].with_suffix(".png"), models_dir / "ssm.png"))
    extra = {f"models/{dst.name}": sha256(src) for src, dst in targets}
    meta[SHA_KEY] = dict(sorted({**sums, **extra}.items()))
    made: list[Path] = []
    try:
        staged = []
        for content, dst in [*targets, (json.dumps(meta, indent=4) + "\n", metadata)]:
            try:
                staged.append(_stage(content, dst, made))
            except OSError as e:
                raise _unwritten(dst, e) from None
        _install(staged)
    finally:
        for p in made:
            p.unlink(missing_ok=True)
    return extra


@exits_on_input_error
def main(argv: Sequence[str] | None = None) -> int:
    """CLI: release the given run files into models/; returns the exit status."""
    p = OneLineParser(prog="python -m scripts.release", description=__doc__.split("\n")[0])
    for kind, name in SHIPPED.items():
        p.add_argument(f"--{kind}", default=None, type=path_argument, help=f"file to ship as models/{name}")
    a = p.parse_args(argv)
    files = {k: getattr(a, k) for k in SHIPPED if getattr(a, k) is not None}
    if not files:
        p.error("give at least one file to release (--model, --single_face, --ssm, --torchscript)")
    for name, digest in release(files).items():
        print(f"released {name} (sha256 {digest[:16]}...)")
    return 0
