"""File I/O shared by every workflow: one error type for bad input, and atomic writes.

Every writer here writes to a temporary name beside the target and renames it when complete, so
an interrupted or failed run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import nibabel as nib
import numpy as np

PathLike = Union[str, Path]


def shared_data_dir() -> Path | None:
    """The project's shared data folder ``shared/data`` beside the bundle's root folder or beside one of
    its ancestors (a git worktree nested deeper); None when there is none (tests then skip)."""
    for parent in Path(__file__).resolve().parents[1].parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class InputFileError(RuntimeError):
    """Bad input: names the offending file and the problem, in one line."""

    def __init__(self, path: PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def exits_on_input_error(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a CLI ``main``: an :class:`InputFileError` prints its one line to stderr and ``main`` returns 1."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return main(*args, **kwargs)
        except InputFileError as e:
            print(e, file=sys.stderr)
            return 1

    return wrapper


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffixes); rename onto ``path`` on success, delete on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        tmp.chmod(0o666 & ~_umask())  # mkstemp creates 0600; finished files get the usual permissions
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_partials(directory: PathLike) -> list[Path]:
    """Delete the temporary ``.<name>.*.partial`` folders of :func:`atomic_dir` left in ``directory`` by a killed run.

    Only for a directory no other process is writing into. Returns the removed paths.
    """
    directory = Path(directory)
    stale = sorted(p for p in directory.glob(".*.partial") if p.is_dir()) if directory.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def write_json(path: PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON atomically (NumPy scalars/arrays and paths converted)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
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
    """Write an array as NIfTI (identity affine unless given) atomically; dtype is kept."""
    img = nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64))
    img.header.set_data_dtype(np.asarray(array).dtype)
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
    write_nifti(Path(folder) / "depth.nii.gz", np.moveaxis(depth, 0, -1).astype(np.float32), affine)
    write_nifti(Path(folder) / "mask.nii.gz", np.moveaxis(mask, 0, -1).astype(np.uint8), affine)


def read_depth_and_mask(depth_path: PathLike, mask_path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Channel-first depth (2B, H, W) float32 mm and boolean mask (B, H, W) from the sample layout files."""
    return np.moveaxis(read_nifti(depth_path), -1, 0), np.moveaxis(read_nifti(mask_path), -1, 0) > 0
