"""File I/O shared by every workflow: one error type for bad input, and atomic writes.

Every writer here writes to a temporary name beside the target and renames it when complete, so
an interrupted or failed run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import types
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, NoReturn, Union

import nibabel as nib
import numpy as np
from scripts import BUNDLE_ROOT

PathLike = Union[str, Path]
MODELS_DIR = BUNDLE_ROOT / "models"  # the shipped files: written only by the release step (scripts.model.release)
METADATA = (
    BUNDLE_ROOT / "configs" / "metadata.json"
)  # the bundle's metadata: version, changelog, shipped files' SHA-256


def shared_data_dir() -> Path | None:
    """The project's shared data folder ``shared/data`` beside the bundle's root folder or beside one of
    its ancestors (a git worktree nested deeper); None when there is none (tests then skip)."""
    for parent in BUNDLE_ROOT.parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return None


def current_umask() -> int:
    """The process's file-mode creation mask (what new files' permissions leave out)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def in_folder(recorded: PathLike, folder: PathLike) -> Path:
    """The absolute path that ``recorded``, a path relative to ``folder`` (``os.path.relpath``), names: joined and
    normalised lexically, the exact inverse of ``os.path.relpath`` (``..`` is not taken through a linked ``folder``);
    an absolute ``recorded`` is itself."""
    return Path(os.path.normpath(os.path.join(os.path.abspath(folder), recorded)))


def sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class InputFileError(RuntimeError):
    """Bad input: names the offending file (or command-line option) and the problem, in one line.

    Its ``args`` are ``(path, problem)``, so it pickles: a worker process's error reaches the parent (else a Pool
    waits forever).
    """

    def __init__(self, path: PathLike, problem: str):
        super().__init__(path, problem)
        self.path = str(path)
        self.problem = problem

    def __str__(self) -> str:
        return f"{shown_path(self.path)}: {self.problem}"


def shown_path(path: PathLike) -> str:
    """``path`` as a line names it: control characters of a file name (a newline, a carriage return, a terminal escape)
    and its bytes that are not UTF-8 written as Python escapes (``\\n``, ``\\x1b``, ``\\xe9``), so that the line stays
    one line, prints on any terminal and cannot drive it."""
    text = os.fsencode(str(path)).decode("utf-8", "backslashreplace")
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text)


def exits_on_input_error(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a CLI ``main``: an :class:`InputFileError`, raised or the cause of another error (MONAI wraps the
    errors of config expressions: :func:`input_error_of`), prints its one line to stderr and ``main`` returns 1."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return main(*args, **kwargs)
        except Exception as e:
            bad = input_error_of(e)
            if bad is None:
                raise
            print(bad, file=sys.stderr)
            return 1

    return wrapper


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line naming the option (``--sid_mm: invalid float value: 'abc'``),
    exit 2, as the bundle's other bad options are (no usage block); every command of the bundle parses with it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{message.removeprefix('argument ')}; see {self.prog} --help\n")


def first_line(error: BaseException) -> str:
    """``Type: first line of the message`` of an exception, for one-line reports."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def input_error_of(error: BaseException) -> InputFileError | None:
    """The :class:`InputFileError` in ``error``'s chain of causes (MONAI wraps errors of config expressions), or None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InputFileError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def ckpt_export_arguments(frame: types.FrameType) -> dict | None:
    """The locals of MONAI's ``ckpt_export`` when ``frame`` is its frame (its arguments as resolved: ``ckpt_file_``,
    ``filepath_``, ``config_file_``), else None."""
    local = frame.f_locals
    return local if frame.f_code.co_name == "ckpt_export" and "ckpt_file_" in local else None


def _ckpt_export_error(error: BaseException, tb: types.TracebackType | None) -> str | None:
    """One line for MONAI's ``ckpt_export``, from the failing frames: a checkpoint it could not load or fit
    (``--ckpt_file``), or an export it could not write (``--filepath``, e.g. its folder missing); else None."""
    ckpt = out = stage = None
    while tb is not None:
        code, args = tb.tb_frame.f_code, ckpt_export_arguments(tb.tb_frame)
        if args is not None:
            ckpt, out = args["ckpt_file_"], args.get("filepath_")
        elif ckpt is not None and code.co_name in ("load", "copy_model_state", "load_objects"):
            stage = stage or "load"
        elif ckpt is not None and code.co_name == "save_net_with_metadata":
            stage = stage or "save"
        tb = tb.tb_next
    if stage == "load":
        return f"{ckpt}: not a state-dict checkpoint of network_def ({first_line(error)})"
    if stage == "save":
        return f"{out}: the export could not be written ({first_line(error)})"
    return None


def one_line_excepthook(kind: type[BaseException], error: BaseException, tb: types.TracebackType | None) -> None:
    """``sys.excepthook`` of the bundle's commands (``monai.bundle run ...``): an uncaught error caused by an
    :class:`InputFileError` (or a ``ckpt_export`` checkpoint or output it could not use) prints its one line, without traceback;
    anything else gets Python's usual traceback. Exit status 1 either way."""
    bad = input_error_of(error)
    line = str(bad) if bad is not None else _ckpt_export_error(error, tb)
    if line is None:
        sys.__excepthook__(kind, error, tb)
    else:
        print(line, file=sys.stderr)


def refuse_models_dir(path: PathLike, option: str = "output") -> None:
    """Refuse an output ``path`` (a file or folder) inside models/: runs write under runs/, releases go through
    scripts.model.release."""
    p = Path(path).resolve()
    models = MODELS_DIR.resolve()
    if p == models or models in p.parents:
        raise InputFileError(
            path,
            f"{option} points into the shipped models/ folder; write under runs/ and ship with python -m scripts.release",
        )


def refuse_existing(path: PathLike, overwrite: bool = False) -> None:
    """Refuse an existing output file unless ``overwrite`` (a single-file output cannot tell a user's file from its own),
    and a folder (or a link to one) always: an output file is named, not the folder it goes into."""
    if Path(path).is_dir():
        raise InputFileError(path, "is a folder; give the output file's path (a new file's name inside it)")
    if not overwrite and (Path(path).exists() or Path(path).is_symlink()):
        raise InputFileError(path, "exists; pass --overwrite to replace it")


def _in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a folder (a file where a folder must be), else None."""
    ancestor = next((p for p in path.parents if p.exists() or p.is_symlink()), None)
    return None if ancestor is None or ancestor.is_dir() else ancestor


def output_error(path: PathLike, error: OSError) -> InputFileError:
    """The one line for an output ``path`` (file or folder) that could not be created or written (``error``)."""
    blocker = _in_the_way(Path(path))
    if blocker is not None:
        return InputFileError(path, f"cannot be written: {blocker} is a file, not a folder")
    return InputFileError(path, f"cannot be written ({type(error).__name__}: {error.strerror or error})")


@contextlib.contextmanager
def _output_errors(path: PathLike) -> Iterator[None]:
    """Turn an ``OSError`` of the block (creating or renaming the output ``path``) into :func:`output_error`'s one line."""
    try:
        yield
    except OSError as e:
        raise output_error(path, e) from None


def output_dir_problem(path: PathLike) -> str | None:
    """Why no output can be written into the folder ``path``, or None: it exists and is not a folder, it lies under a
    file, or it (or its nearest existing ancestor) has no write permission."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        return "exists and is not a folder"
    blocker = _in_the_way(path)
    if blocker is not None:
        return f"cannot be created: {blocker} is a file, not a folder"
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot be written (no write permission on {existing})"
    return None


def check_output_dir(path: PathLike, option: str = "output") -> None:
    """Refuse, before any work, an output root folder ``path`` in models/ (:func:`refuse_models_dir`) or one no output
    can be written into (:func:`output_dir_problem`); ``option`` names it in the line."""
    refuse_models_dir(path, option)
    problem = output_dir_problem(path)
    if problem is not None:
        raise InputFileError(path, f"{problem}; {option} names the output folder")


def make_output_dir(path: PathLike, option: str = "output") -> Path:
    """Create the output root folder ``path`` (and its parents) if missing, refused first as in :func:`check_output_dir`;
    a failure is :func:`output_error`'s one line."""
    path = Path(path)
    check_output_dir(path, option)
    with _output_errors(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: PathLike, release: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffixes); rename onto ``path`` on success, delete on error.

    A ``path`` inside models/ is refused (:func:`refuse_models_dir`) unless ``release`` (the release step).
    """
    path = Path(path)
    if not release:
        refuse_models_dir(path)
    with _output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name.split('.')[0]}.", suffix="".join(path.suffixes), dir=path.parent
        )
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with _output_errors(path):
            tmp.chmod(0o666 & ~current_umask())  # mkstemp creates 0600; finished files get the usual permissions
            tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


OUTPUT_MARKER = ".3ddx_output.json"
MAX_NAME_CHARS = 120  # output folder names; the temporary ``.<name>.XXXXXXXX.partial`` must stay under 255 bytes


def written_by_bundle(folder: PathLike) -> dict | None:
    """The marker :func:`atomic_dir` writes into every folder it completes (``{"kind", "source", "files"}``, and
    ``"origin"`` when given), or None."""
    try:
        marker = json.loads((Path(folder) / OUTPUT_MARKER).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) and "kind" in marker else None


def folder_entries(folder: PathLike) -> list[str]:
    """Relative paths (``/``-separated) of every file and folder under ``folder``, the marker left out; links are
    listed, not followed. What :func:`atomic_dir` records as written in a folder's marker (``files``)."""
    folder = Path(folder)
    entries = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        entries += [(rel / name).as_posix() for name in dirs + files]
    return sorted(set(entries) - {OUTPUT_MARKER})


def foreign_entries(folder: PathLike, written: Iterable[str]) -> list[str]:
    """What ``folder`` holds beyond the ``written`` entries (:func:`folder_entries`): files, and folders (ending in
    ``/``, their contents not listed) the bundle did not write there, e.g. a user's notes."""
    written = set(written)
    extra = [e for e in folder_entries(folder) if e not in written]
    folders = {e for e in extra if (Path(folder) / e).is_dir() and not (Path(folder) / e).is_symlink()}
    return [e + "/" if e in folders else e for e in extra if not any(e.startswith(f + "/") for f in folders)]


def check_own_output(path: PathLike, kind: str, source: str | None = None) -> bool:
    """Whether ``path`` exists as a folder this bundle wrote as ``kind`` for ``source``, or as an empty folder
    (nothing in it to lose, e.g. made with ``mkdir`` for the output); False when absent. What the folder holds
    besides is not looked at (a rerun may skip a finished folder the user added files to; replacing it is
    :func:`check_replaceable`'s question).

    Raises:
        InputFileError: ``path`` lies in models/ (:func:`refuse_models_dir`), or exists but is not such a
            folder (a user's file or folder, another
            kind of result, or the result of another input): it must be left untouched.
    """
    return _own_output_marker(path, kind, source) is not None


def _own_output_marker(path: PathLike, kind: str, source: str | None = None, origin: str | None = None) -> dict | None:
    """:func:`check_own_output` reading the marker once: the folder's marker, ``{}`` for an empty folder, None when absent;
    with ``origin``, a folder recorded with that origin and another ``source`` (an earlier version of the input) counts
    as its own too."""
    path = Path(path)
    refuse_models_dir(path)
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return {}
    marker = None if path.is_symlink() or not path.is_dir() else written_by_bundle(path)
    if marker is None:
        raise InputFileError(
            path,
            f"exists and was not written by this bundle (no {OUTPUT_MARKER}); left untouched: move it or "
            "choose another output folder",
        )
    if marker["kind"] != kind:
        raise InputFileError(
            path,
            f"holds a {marker['kind']} written by this bundle, not a {kind}; left untouched: choose another output folder",
        )
    if source is not None and marker.get("source") != source and (origin is None or marker.get("origin") != origin):
        raise InputFileError(
            path,
            f"holds the {kind} of another input (two inputs with one output name, or the input changed since); left "
            "untouched: rename one input or choose another output folder",
        )
    return marker


def check_replaceable(path: PathLike, kind: str, source: str | None = None, origin: str | None = None) -> bool:
    """Whether ``path`` exists and may be replaced: :func:`check_own_output` (or, with ``origin``, the folder records
    that origin: the result of an earlier version of the same input, :func:`atomic_dir`), and the folder holds nothing
    but the files and folders this bundle wrote there (the marker's ``files``); False when absent.

    Raises:
        InputFileError: :func:`check_own_output`'s cases, or the folder holds anything else (named in the line:
            a user's notes or segmentations added to a result), or its marker lists no files (written by an
            earlier version of the bundle), or it or a folder in it has no write permission (what it holds could not
            be deleted: a user may have made it read-only to keep it): it must be left untouched.
    """
    marker = _own_output_marker(path, kind, source, origin)
    if marker is None:
        return False
    locked = [d for d in (Path(path), *Path(path).rglob("*")) if d.is_dir() and not os.access(d, os.W_OK | os.X_OK)]
    if locked:
        raise InputFileError(
            path,
            f"cannot be replaced (no write permission on {locked[0]}); left untouched: make it writable or choose "
            "another output folder",
        )
    if not marker:  # an empty folder
        return True
    if not isinstance(marker.get("files"), list):
        raise InputFileError(
            path,
            f"was written by this bundle before it recorded its files in {OUTPUT_MARKER}; left untouched: "
            "move or delete it to redo it",
        )
    foreign = foreign_entries(path, marker["files"])
    if foreign:
        names = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise InputFileError(
            path,
            f"holds what this bundle did not write there ({names}); left untouched: move that out of it "
            "or choose another output folder",
        )
    return True


@contextlib.contextmanager
def atomic_dir(path: PathLike, kind: str, source: str | None = None, origin: str | None = None) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only when the block succeeds.

    The folder gets the marker :data:`OUTPUT_MARKER` (``kind``: what it holds, e.g. "reconstruction";
    ``source``: an identifier of the input it was made from, e.g. of its content; ``origin``, when given: one of where
    it was read from, e.g. of its path; ``files``: what the block wrote, :func:`folder_entries`).
    An existing ``path`` is replaced only when it carries the marker of the same ``kind`` (and ``source``, when
    given, or ``origin``: the result of an earlier version of the input read from the same place) and holds nothing
    else than the files that marker lists: anything else raises
    :class:`InputFileError` before any work and again before the rename (:func:`check_replaceable`), as does a
    folder that cannot be created (:func:`output_error`). The old folder is renamed aside (a ``.partial`` name, which
    a later run removes if this one is killed), the new one renamed into place, and only then the old one deleted: a
    failure leaves the old one as it was, never half deleted.
    """
    path = Path(path)
    check_replaceable(path, kind, source, origin)
    identity = {"kind": kind, "source": source, **({} if origin is None else {"origin": origin})}
    with _output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name[:MAX_NAME_CHARS]}.", suffix=".partial", dir=path.parent))
    try:
        (tmp / OUTPUT_MARKER).write_text(json.dumps(identity))
        yield tmp
        (tmp / OUTPUT_MARKER).write_text(json.dumps({**identity, "files": folder_entries(tmp)}))
        tmp.chmod(0o777 & ~current_umask())
        aside = (
            tmp.with_name(f"{tmp.name[: -len('.partial')]}-old.partial")
            if check_replaceable(path, kind, source, origin)
            else None
        )
        with _output_errors(path):
            if aside is not None:
                path.rename(aside)
            try:
                tmp.rename(path)
            except BaseException:
                if aside is not None:
                    aside.rename(path)  # the old folder back in place
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def find_partials(directory: PathLike) -> dict[str, list[Path]]:
    """The temporary ``.<name>.XXXXXXXX.partial`` folders of :func:`atomic_dir` left in ``directory`` by a killed run,
    by output name. Only folders holding the marker count, or nothing but the marker's name (a run killed while
    creating it; then it may be empty), or nothing at all: a user's folder of that name is not one."""
    directory = Path(directory)
    found: dict[str, list[Path]] = {}
    for p in sorted(directory.glob(".*.partial")) if directory.is_dir() else []:
        if (
            p.is_dir()
            and not p.is_symlink()
            and (written_by_bundle(p) is not None or {c.name for c in p.iterdir()} <= {OUTPUT_MARKER})
        ):
            found.setdefault(p.name[1 : -len(".partial")].rsplit(".", 1)[0], []).append(p)
    return found


def remove_partials(
    directory: PathLike, names: Iterable[str] | None = None, found: Mapping[str, list[Path]] | None = None
) -> list[Path]:
    """Delete the :func:`find_partials` folders of ``directory`` (or the already ``found`` ones) of the output
    ``names`` (``None``: all, only for a directory no other process is writing into). Returns the removed paths."""
    found = find_partials(directory) if found is None else found
    stale = [p for name in (found if names is None else names) for p in found.get(name, ())]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def write_json(path: PathLike, data: Any) -> None:
    """Write ``data`` as indented, strict JSON atomically: NumPy scalars/arrays and paths converted, NaN and
    infinities written as null (standard JSON has no NaN; jq and JavaScript refuse it)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_plain_json(data), indent=2, allow_nan=False))


def _plain_json(o: Any) -> Any:
    if isinstance(o, Mapping):
        return {k: _plain_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain_json(v) for v in o]
    if isinstance(o, np.ndarray):
        return _plain_json(o.tolist())
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, Path):
        return str(o)
    if o is None or isinstance(o, (str, int, float)):
        return o
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: PathLike) -> Any:
    """Parsed JSON of ``path``; a missing or unreadable file raises :class:`InputFileError`."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputFileError(path, f"unreadable JSON ({e})") from None


def write_nifti(path: PathLike, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    """Write an array as NIfTI (identity affine unless given) atomically; dtype is kept, the array is not copied."""
    array = np.asarray(array)
    img = nib.Nifti1Image(array, np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64))
    img.header.set_data_dtype(array.dtype)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def read_nifti(path: PathLike, dtype: type = np.float32) -> np.ndarray:
    """Read a NIfTI array, refusing unreadable files and non-finite values with an :class:`InputFileError`."""
    return read_nifti_with_affine(path, dtype)[0]


def read_nifti_with_affine(path: PathLike, dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_nifti` plus the file's (4, 4) voxel-to-world (RAS mm) affine."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "file not found")
    try:
        img = nib.load(str(path))
        arr = np.asanyarray(img.dataobj).astype(dtype)
    except Exception as e:  # nibabel raises many types for corrupt/truncated files
        raise InputFileError(path, f"unreadable or truncated NIfTI ({type(e).__name__}: {e})") from None
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise InputFileError(path, "contains NaN or Inf values")
    return arr, np.asarray(img.affine, dtype=np.float64)


def write_depth_and_mask(folder: PathLike, depth: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> None:
    """``folder/depth.nii.gz`` (H, W, 2B) float32 mm and ``folder/mask.nii.gz`` (H, W, B) uint8 from
    channel-first depth (2B, H, W) and mask (B, H, W): the simulator's sample layout."""
    write_nifti(
        Path(folder) / "depth.nii.gz", np.moveaxis(depth, 0, -1).astype(np.float32, copy=False), affine
    )  # views, no copy
    write_nifti(
        Path(folder) / "mask.nii.gz",
        (
            np.moveaxis(mask, 0, -1).view(np.uint8)
            if mask.dtype == bool
            else np.moveaxis(mask, 0, -1).astype(np.uint8, copy=False)
        ),
        affine,
    )


def write_ply(path: PathLike, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Binary little-endian PLY of a triangle mesh (vertices (V, 3) as float32 mm, faces (F, 3) as int32), atomically.

    Written straight from the arrays (one record array for the faces), without a mesh library's export pass.
    """
    vertices = np.ascontiguousarray(vertices, dtype="<f4")
    faces = np.asarray(faces)
    records = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    records["n"], records["v"] = 3, faces
    header = (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {len(vertices)}\nproperty float x\nproperty float y\n"
        f"property float z\nelement face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header.encode("ascii"))
        vertices.tofile(f)
        records.tofile(f)


def read_depth_and_mask(depth_path: PathLike, mask_path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Channel-first depth (2B, H, W) float32 mm and boolean mask (B, H, W) from the sample layout files."""
    return np.moveaxis(read_nifti(depth_path), -1, 0), np.moveaxis(read_nifti(mask_path), -1, 0) > 0
