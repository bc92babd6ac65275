"""Training-sample simulator: CT + bone labels -> radiograph (DRR), dual-face depth maps and masks.

For every case and pose k it writes ``OUT/<case>_p<k>/`` atomically (see docs/architecture.md)
and rebuilds ``OUT/datalist.json`` (MONAI datalist, split by case) from all complete samples; a datalist
the simulator did not write, or a case name that holds another CT's samples, is refused before any rendering.

CLI::

    python -m scripts.simulate --ct CT --labels LABELS --out DIR --poses K --seed S
    python -m scripts.simulate --cases COHORT_DIR --out DIR --poses K [--shard i/n] [--workers N] [--split LIST]

A case's datalist list is decided when its samples are rendered and recorded in their
``sample.json`` (``split``): ``--split`` names it (e.g. an extra training-only cohort), otherwise
the configured fractions assign it. Rebuilding the datalist never moves a rendered sample, and new poses
of a case join its rendered samples' list (a ``--split`` naming another is refused; a case with all its poses
rendered is skipped and keeps its list).

Pose k: the standard AP pose (bones' bounding-box centre on the central ray at
``source_to_object_mm`` from the geometry JSON) perturbed by rotations (degrees, camera axes,
about that centre) and translations (mm, camera frame) drawn uniformly within the configured
ranges from a stable hash of (seed, case, k), so reruns, shards and machines agree. With
``pose.table_mm`` set, the pose then moves along the central ray until the patient's posterior
skin touches the table top (:func:`table_shift_mm`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from scripts import BUNDLE_ROOT  # noqa: E402
from scripts.config_flags import argument, as_count, as_device, as_shard, path_argument  # noqa: E402
from scripts.data.depth_maps import BoneGrid, bone_grids, depth_maps  # noqa: E402
from scripts.data.drr import areal_densities, material_volumes  # noqa: E402
from scripts.data.radiograph_style import style_radiograph  # noqa: E402
from scripts.data.volumes import (  # noqa: E402
    BONE_LABELS,
    LABEL_MAP_CHOICES,
    Volume,
    bones_center,
    crop_along,
    load_label_map,
    read_ct,
    read_labels,
    remove_couch,
)
from scripts.geometry import (  # noqa: E402
    Geometry,
    apply_transform,
    camera_to_world_directions,
    read_standard_geometry,
    standard_ap_pose,
)
from scripts.io.files import (  # noqa: E402
    OUTPUT_MARKER,
    InputFileError,
    OneLineParser,
    atomic_dir,
    check_output_dir,
    exits_on_input_error,
    in_folder,
    read_json,
    sha256,
    write_depth_and_mask,
    write_json,
    write_nifti,
    written_by_bundle,
)
from scripts.io.progress import progress  # noqa: E402
from scripts.io.radiograph_io import input_key  # noqa: E402
from scripts.io.report import bone_colour, front_back_extent, save_figure  # noqa: E402

DEFAULT_CONFIG_FILE = BUNDLE_ROOT / "configs" / "simulate.yaml"
SPLITS = ("training", "validation", "test")
SAMPLE_FILES = (
    "image.nii.gz",
    "fov.nii.gz",
    "depth.nii.gz",
    "mask.nii.gz",
    "geometry.json",
    "sample.json",
    "preview.png",
)
SAMPLE_KIND = "simulator sample"  # output marker kind of a sample folder
DATASET_KIND = (
    "simulated data set"  # output marker kind of --out: records the SHA-256 of the datalist.json the simulator wrote
)
ENTRY_FILES = {
    "image": "image.nii.gz",
    "fov": "fov.nii.gz",
    "depth": "depth.nii.gz",
    "mask": "mask.nii.gz",
    "geometry": "geometry.json",
}  # datalist entry keys
DATALIST_LOCK = ".datalist.lock"  # in --out: serialises datalist checks and rebuilds (:func:`datalist_lock`)


@dataclass
class Case:
    """One CT with its labels; ``meshes`` maps bone name -> surface mesh file (world RAS mm)."""

    name: str
    ct: Path
    labels: Path
    meshes: dict[str, Path] = field(default_factory=dict)


# ---------------------------------------------------------------------- configuration and cases
def load_config(path: str | Path | None = None) -> dict:
    """The simulation config (YAML) merged over configs/simulate.yaml.

    Raises:
        InputFileError: unreadable file, not a mapping, or a key (one level deep) that configs/simulate.yaml
            does not have: a misspelt setting would otherwise be ignored without a word.
    """
    cfg = yaml.safe_load(DEFAULT_CONFIG_FILE.read_text())
    if path is not None and Path(path).resolve() != DEFAULT_CONFIG_FILE:
        try:
            user = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise InputFileError(path, f"unreadable config ({e})") from None
        if not isinstance(user, dict):
            raise InputFileError(path, "not a mapping of simulator settings (see configs/simulate.yaml)")
        for key, value in user.items():
            if key not in cfg:
                raise InputFileError(path, f"unknown setting {key!r} (configs/simulate.yaml has {', '.join(cfg)})")
            if not isinstance(cfg[key], dict):
                cfg[key] = value
                continue
            if not isinstance(value, dict):
                raise InputFileError(path, f"{key}: must be a mapping like configs/simulate.yaml's")
            unknown = sorted(set(value) - set(cfg[key]))
            if unknown:
                raise InputFileError(path, f"{key}: unknown key(s) {unknown}")
            cfg[key] = {**cfg[key], **value}
    return cfg


# Image files read_volume reads (a DICOM series is a folder).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def case_name_of(path: str | Path) -> str:
    """Case name of a single CT: the file name without image suffixes, or the DICOM folder name
    (two CTs of one name cannot share an output folder: :func:`check_case_sources`)."""
    name = Path(path).name
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def case_source(ct: str | Path, out_dir: str | Path) -> str:
    """Where a case came from, recorded in its samples' ``sample.json`` (``source``): the CT's path relative to the
    data set folder ``out_dir``, as ``meshes`` are; it stays true when the data set moves or is renamed with its
    cohort (``make demo`` builds both under a temporary name)."""
    return os.path.relpath(os.path.abspath(ct), os.path.abspath(out_dir))


def is_case_source(recorded: str, ct: str | Path, out_dir: str | Path) -> bool:
    """Whether a sample's recorded ``source`` names the CT ``ct``: its :func:`case_source` (symbolic links resolved),
    or, as bundle 0.10.6 recorded it, the SHA-256 of the CT's resolved path (:func:`scripts.io.radiograph_io.input_key`).
    """
    return names_path(recorded, ct, out_dir) or recorded == input_key(ct)


def names_path(recorded: str, path: str | Path, out_dir: str | Path) -> bool:
    """Whether ``recorded``, a path relative to the data set folder ``out_dir`` (:func:`case_source`), names ``path``
    (symbolic links resolved)."""
    return in_folder(recorded, out_dir).resolve() == Path(path).resolve()


def sample_name(case: str, pose: int) -> str:
    """Folder name of sample ``pose`` of ``case`` in a data set: ``<case>_p<pose>``."""
    return f"{case}_p{pose}"


def sample_case(name: str) -> str | None:
    """The case of a :func:`sample_name` (``<case>_p<pose>``); None when ``name`` is no sample's."""
    case, sep, pose = name.rpartition("_p")
    return case if sep and pose.isdigit() else None


def sample_notes(folder: Path) -> dict | None:
    """The parsed ``sample.json`` of the sample folder ``folder``; None when it is missing, unreadable or not a
    sample's notes (a JSON object with its ``case`` name and ``pose`` number): the sample is incomplete and is
    rendered again (through :func:`scripts.io.files.atomic_dir`, which replaces only the simulator's own sample
    folders)."""
    try:
        notes = read_json(folder / "sample.json")
    except InputFileError:
        return None
    sample = isinstance(notes, dict) and isinstance(notes.get("case"), str) and isinstance(notes.get("pose"), int)
    return notes if sample else None


def check_case_sources(out_dir: Path, cases: Sequence[Case]) -> dict[str, str]:
    """Refuse, before any rendering, a case whose name already holds samples of another CT in ``out_dir``; returns the
    datalist list (``split``) the samples of each case already there record (cases without such samples left out).

    A sample's source is its ``sample.json`` ``source`` (:func:`is_case_source`); samples of versions that did not
    record it count as coming from their recorded ``ct`` path (resolved from the current folder, as it was given then).
    Only folders with the simulator-sample marker are looked at.

    Raises:
        InputFileError: naming the CT, the other CT and the way out (another --out, or a renamed CT).
    """
    wanted = {c.name: c for c in cases}
    splits: dict[str, str] = {}
    for d in sorted(out_dir.iterdir() if out_dir.is_dir() else ()):
        case = sample_case(d.name)
        if case not in wanted or (written_by_bundle(d) or {}).get("kind") != SAMPLE_KIND:
            continue
        notes = sample_notes(d)
        if notes is None:
            continue  # an incomplete sample: redone, never listed
        ct = wanted[case].ct
        if isinstance(notes.get("source"), str):
            same = is_case_source(notes["source"], ct, out_dir)
        elif isinstance(notes.get("ct"), str):
            same = Path(notes["ct"]).resolve() == Path(ct).resolve()
        else:
            continue
        if not same:
            raise InputFileError(
                ct,
                f"case name {case!r} is taken in {out_dir} by the samples of another CT "
                f"({in_folder(str(notes.get('ct')), out_dir)}); "
                "choose another --out or rename this CT (its file or folder name is the case name)",
            )
        if notes.get("split") in SPLITS:
            splits[case] = notes["split"]
    return splits


def sample_inputs(
    case: Case,
    pose: int,
    out_dir: Path,
    seed: int,
    cfg: dict,
    geometry: Geometry,
    label_map: dict[int, int] | str | None,
    center_ras: Sequence[float] | None,
) -> dict:
    """What sample ``pose`` of ``case`` is rendered from besides its CT (``source``) and its list (``split``), as JSON:
    recorded in its ``sample.json`` (``inputs``) and compared on a rerun (:func:`rendered_samples`). The labels (path
    relative to ``out_dir``), the label map as given (a preset name or source id -> bone id), seed, pose index, the
    settings (``cfg`` without the split fractions, with ``source_to_object_mm``), the detector geometry and the
    centre (RAS mm; None: the bones')."""
    record = {
        "labels": case_source(case.labels, out_dir),
        "label_map": label_map,
        "seed": seed,
        "pose": pose,
        "config": {k: v for k, v in cfg.items() if k != "split"},
        "geometry": geometry.to_dict(),
        "center_ras": center_ras,
    }
    return json.loads(json.dumps(record, default=lambda o: o.tolist()))


def input_differences(recorded: Any, wanted: Any, name: str = "inputs") -> list[str]:
    """What differs between two :func:`sample_inputs` records: dotted keys (``seed``, ``config.style.kvp``), each with
    the recorded and the wanted value when both are short."""
    if recorded == wanted:
        return []
    if isinstance(recorded, dict) and isinstance(wanted, dict) and name != "label_map":
        keys = dict.fromkeys([*wanted, *recorded])
        return [
            d
            for k in keys
            for d in input_differences(recorded.get(k), wanted.get(k), k if name == "inputs" else f"{name}.{k}")
        ]
    old, new = json.dumps(recorded), json.dumps(wanted)
    return [f"{name} {old} -> {new}" if len(old) + len(new) <= 60 else name]


def with_later_settings(recorded: dict, wanted: dict) -> dict:
    """The settings a sample recorded (``inputs.config``), with the settings of ``wanted`` it has no key for (nested
    dicts too) taken from ``wanted``: a setting the simulator gained after the sample was rendered does not make it
    "rendered from other inputs" (its default is meant to render as before)."""
    return {
        **wanted,
        **{
            k: with_later_settings(v, wanted[k]) if isinstance(v, dict) and isinstance(wanted.get(k), dict) else v
            for k, v in recorded.items()
        },
    }


def rendered_samples(out_dir: Path, wanted: dict[str, tuple[Case, dict]]) -> list[str]:
    """Names of the samples of ``wanted`` (sample name -> (case, :func:`sample_inputs`)) complete in ``out_dir``
    and rendered from these inputs: a rerun skips them. Samples that recorded no inputs (bundle 0.10.6 and
    earlier) count as rendered from them, and settings added after a sample was rendered as its own
    (:func:`with_later_settings`); one whose sample.json is unreadable is not done (:func:`sample_notes`).

    Raises:
        InputFileError: a complete sample rendered from other inputs, naming it and what differs, before any rendering.
    """
    done, other = [], []
    for name, (case, inputs) in wanted.items():
        folder = out_dir / name
        notes = sample_notes(folder) if all((folder / f).exists() for f in SAMPLE_FILES) else None
        if notes is None:
            continue
        recorded = notes.get("inputs", inputs)
        if (
            isinstance(recorded, dict)
            and isinstance(recorded.get("labels"), str)
            and names_path(recorded["labels"], case.labels, out_dir)
        ):
            recorded = {**recorded, "labels": inputs["labels"]}  # the same labels, the data set moved with its cohort
        if isinstance(recorded, dict) and isinstance(recorded.get("config"), dict):
            recorded = {**recorded, "config": with_later_settings(recorded["config"], inputs["config"])}
        if recorded == inputs:
            done.append(name)
        else:
            other.append((folder, input_differences(recorded, inputs)))
    if other:
        folder, differs = other[0]
        more = f" (and {len(other) - 1} more samples)" if len(other) > 1 else ""
        raise InputFileError(
            folder,
            f"was rendered from other inputs ({'; '.join(differs)}){more}; left untouched: choose another --out, "
            "or pass --overwrite to render it again",
        )
    return done


def holds_anything(out_dir: Path) -> bool:
    """Whether the folder ``out_dir`` exists and holds anything but the simulator's :data:`DATALIST_LOCK`."""
    return out_dir.is_dir() and any(p.name != DATALIST_LOCK for p in out_dir.iterdir())


def check_out_folder(out_dir: Path) -> None:
    """Refuse, before anything is written, an ``out_dir`` no output can be written into
    (:func:`scripts.io.files.check_output_dir`) or that holds anything but a simulated data set. A folder missing or
    empty is fine; one is a data set when it carries the marker of kind "simulated data set" or, without a marker
    (versions up to 0.10.5, or a first run stopped before its datalist), holds a datalist.json or a sample folder
    (marker kind "simulator sample"); its datalist.json must be the simulator's (:func:`check_datalist`).
    Writes nothing; only a folder with the data-set marker is checked under its :func:`datalist_lock`."""
    check_output_dir(out_dir, "--out")
    if not holds_anything(out_dir):
        return
    marker, datalist = written_by_bundle(out_dir), out_dir / "datalist.json"
    samples = (p for p in out_dir.iterdir() if p.is_dir() and (written_by_bundle(p) or {}).get("kind") == SAMPLE_KIND)
    if marker is None and not datalist.exists() and not datalist.is_symlink() and next(samples, None) is None:
        raise InputFileError(
            out_dir,
            f"holds files that are not a simulated data set (no {OUTPUT_MARKER} of kind {DATASET_KIND!r}); "
            "left untouched: choose another --out (a new or empty folder)",
        )
    if marker is not None and marker["kind"] == DATASET_KIND:
        with datalist_lock(out_dir):
            check_datalist(out_dir)
    else:
        check_datalist(out_dir)  # another kind of bundle output, or no marker: nothing a shard rewrites under the lock


def _case_file(folder: Path, stem: str, series_folder: bool) -> Path | None:
    """``folder``'s ``<stem><suffix>`` image (any of VOLUME_SUFFIXES; with ``series_folder`` also a folder ``<stem>/``,
    a DICOM series), None when there is none; two of them are refused naming both."""
    found = [folder / f"{stem}{suffix}" for suffix in VOLUME_SUFFIXES if (folder / f"{stem}{suffix}").is_file()]
    if series_folder and (folder / stem).is_dir():
        found.append(folder / stem)
    if len(found) > 1:
        raise InputFileError(
            folder, f"holds {' and '.join(p.name for p in found)}: a case folder holds one {stem} image"
        )
    return found[0] if found else None


def find_cases(cases_dir: str | Path) -> list[Case]:
    """Cases of a cohort folder: ``<case>/{ct.nii.gz, labels.nii.gz, meshes/<bone>.ply}``, sorted by name.

    The CT may be any image :func:`scripts.data.volumes.read_volume` reads (``ct.nii``, ``ct.nrrd``, ``ct.mha``,
    ``ct.mhd``) or a DICOM series folder ``ct/``, and so may the label file; a case without a label file but with a
    ``labels/`` folder (a TotalSegmentator output folder as it comes, :func:`scripts.data.volumes.read_labels`) has
    that as its labels. Subfolders without a CT are named in one line on stderr and left out.
    """
    root = Path(cases_dir)
    if not root.is_dir():
        raise InputFileError(root, "cohort folder not found")
    cases, left_out = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        ct = _case_file(d, "ct", series_folder=True)
        if ct is None:
            left_out.append(d.name)
            continue
        meshes = {b: d / "meshes" / f"{b}.ply" for b in BONE_LABELS if (d / "meshes" / f"{b}.ply").exists()}
        labels = _case_file(d, "labels", series_folder=False)
        labels = labels or (d / "labels" if (d / "labels").is_dir() else d / "labels.nii.gz")
        cases.append(Case(d.name, ct, labels, meshes))
    what = "ct.nii.gz (or ct.nii, ct.nrrd, ct.mha, ct.mhd, a DICOM series folder ct/)"
    if not cases:
        raise InputFileError(root, f"no case folders with {what}")
    if left_out:
        print(f"{root}: warning: left out {', '.join(left_out)}: no {what}", file=sys.stderr)
    return cases


def _stable_unit(*keys: Any) -> float:
    """A number in [0, 1) from a stable (process- and machine-independent) hash of ``keys``."""
    digest = hashlib.sha256("/".join(map(str, keys)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(case: str, seed: int, fractions: dict[str, float]) -> str:
    """Data split of a case: a deterministic function of (case name, seed) and the split fractions."""
    total = sum(float(fractions.get(s, 0.0)) for s in SPLITS)
    u, edge = _stable_unit("split", seed, case) * total, 0.0
    for s in SPLITS:
        edge += float(fractions.get(s, 0.0))
        if u < edge:
            return s
    return SPLITS[-1]


def split_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Cases per split for ``n`` cases: largest-remainder rounding of the fractions, then every split
    with a positive fraction gets at least one case when ``n`` allows (taken from the largest split)."""
    weights = {s: max(0.0, float(fractions.get(s, 0.0))) for s in SPLITS}
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"split fractions must have a positive sum, got {fractions}")
    raw = {s: n * w / total for s, w in weights.items()}
    counts = {s: int(np.floor(r)) for s, r in raw.items()}
    for s in sorted(SPLITS, key=lambda s: (counts[s] - raw[s], SPLITS.index(s)))[: n - sum(counts.values())]:
        counts[s] += 1
    active = [s for s in SPLITS if weights[s] > 0]
    if n >= len(active):
        for s in active:
            if counts[s] == 0:
                donor = max(SPLITS, key=lambda d: (counts[d], -SPLITS.index(d)))
                counts[donor] -= 1
                counts[s] = 1
    return counts


def assign_splits(cases: Sequence[str], seed: int, fractions: dict[str, float]) -> dict[str, str]:
    """Split of every case of a known cohort: cases ranked by ``sha256("split/<seed>/<case>")`` fill
    training, validation, test in that order with :func:`split_counts` cases each. Depends only on the
    set of names, the seed and the fractions, so every shard that knows the cohort agrees."""
    names = sorted(set(cases), key=lambda c: (_stable_unit("split", seed, c), c))
    counts = split_counts(len(names), fractions)
    bounds = np.cumsum([counts[s] for s in SPLITS])
    return {c: SPLITS[int(np.searchsorted(bounds, rank, side="right"))] for rank, c in enumerate(names)}


def pose_parameters(case: str, pose: int, seed: int, pose_cfg: dict) -> tuple[list[float], list[float]]:
    """Seeded (rotation_deg, translation_mm) of pose ``pose`` of ``case``: uniform within the configured ranges,
    the rotation added to ``view_rotation_deg`` (default none; e.g. [0, 90, 0] for lateral views)."""
    rng = np.random.default_rng(int(_stable_unit("pose", seed, case, pose) * 2**63))
    rot = rng.uniform(-1.0, 1.0, 3) * np.asarray(pose_cfg["rotation_deg"], dtype=np.float64) + np.asarray(
        pose_cfg.get("view_rotation_deg", (0.0, 0.0, 0.0)), dtype=np.float64
    )
    trans = rng.uniform(-1.0, 1.0, 3) * np.asarray(pose_cfg["translation_mm"], dtype=np.float64)
    return rot.tolist(), trans.tolist()


# ---------------------------------------------------------------------- one sample
@dataclass
class LoadedCase:
    """A case read once for all its poses: CT (couch removed) and labels (RAS mm), water and bone densities
    (2, I, J, K) g/cm^3 on a possibly coarsened grid with its voxel-to-RAS affine, the object centre (RAS mm),
    per-bone depth grids and the CT voxels set to air as couch."""

    case: Case
    ct: Volume
    labels: Volume
    mu: torch.Tensor
    mu_affine: np.ndarray
    center: np.ndarray
    bones: dict[str, BoneGrid | None]
    couch_voxels: int = 0

    @functools.cached_property
    def femur_ras(self) -> np.ndarray:
        """RAS positions (N, 3) mm of both femurs' label voxels (found once per case, for the CT cuts of its poses)."""
        return label_positions(self.labels, ("femur_left", "femur_right"))

    @functools.cached_property
    def pelvis_ras(self) -> np.ndarray:
        """RAS positions (N, 3) mm of the pelvis label voxels (found once per case, for its poses' table clearance)."""
        return label_positions(self.labels, ("pelvis",))


def label_positions(labels: Volume, bones: Sequence[str]) -> np.ndarray:
    """RAS positions (N, 3) mm of the voxel centres of ``bones`` in a bone label volume."""
    ijk = np.argwhere(np.isin(labels.array, [BONE_LABELS[b] for b in bones]))
    return apply_transform(labels.affine, ijk)


def table_clearance_mm(points_ras: np.ndarray, world_to_camera: np.ndarray, table_mm: float) -> float | None:
    """Distance (mm, along the central ray) from the deepest of ``points_ras`` (RAS mm; e.g. the pelvis's
    label voxels) to the table top at ``table_mm`` from the source: for the pelvis, the posterior soft
    tissue that sets the bones' depth on the table and that an AP radiograph hardly shows. None without points."""
    if not len(points_ras):
        return None
    return float(table_mm - np.max(apply_transform(world_to_camera, points_ras)[:, 2]))


def load_case(
    case: Case,
    label_map: dict[int, int] | str,
    cfg: dict,
    device: torch.device | str,
    center_ras: Sequence[float] | None = None,
) -> LoadedCase:
    """Read and check a case, remove a CT couch (``couch.remove``, :func:`scripts.data.volumes.remove_couch`);
    material density volumes and per-bone depth grids (reused by every pose) on ``device``.

    ``center_ras``: the point (RAS mm) the poses centre on; default :func:`scripts.data.volumes.bones_center`
    of the labels, which refuses labels without a bone (give it for a CT of another body part).
    """
    ct = read_ct(case.ct)
    labels = read_labels(case.labels, ct, label_map)
    couch = cfg.get("couch", {})
    removed = 0
    if couch.get("remove", True):
        ct, removed = remove_couch(
            ct, cfg["pose"].get("body_hu", -500.0), couch.get("opening_mm", 6.0), couch.get("grid_mm", 3.0)
        )
    center = bones_center(labels) if center_ras is None else np.asarray(center_ras, dtype=np.float64)
    return prepare_case(case, ct, labels, center, removed, cfg, device)


def prepare_case(
    case: Case, ct: Volume, labels: Volume, center: np.ndarray, couch_voxels: int, cfg: dict, device: torch.device | str
) -> LoadedCase:
    """A :class:`LoadedCase` of this CT and labels, posed about ``center`` (RAS mm): their material density volumes and
    per-bone depth grids (the per-case preparation every pose reuses; ``benchmarks/bench_simulate.py`` times it)."""
    drr = cfg["drr"]
    mu, mu_affine = material_volumes(ct.array, ct.affine, drr["ct_kev"], drr["min_voxel_mm"], device)
    grids = bone_grids(labels.array, tuple(BONE_LABELS), device=device)
    return LoadedCase(case, ct, labels, mu, mu_affine, center, grids, couch_voxels)


def _drawn_cut(
    lc: LoadedCase, cfg: dict, key: str, seed: int, pose: int
) -> tuple[np.random.Generator, dict, np.ndarray] | None:
    """(generator, spec, :attr:`LoadedCase.femur_ras`) when the config knob ``key`` cuts this sample's CT
    (drawn with its ``probability``, seeded by key, case and pose), else None."""
    spec = cfg.get(key) or {}
    rng = np.random.default_rng(int(_stable_unit(key, seed, lc.case.name, pose) * 2**63))
    if rng.uniform() >= float(spec.get("probability", 0.0)):
        return None
    return (rng, spec, lc.femur_ras) if lc.femur_ras.size else None


def ct_end_mm(lc: LoadedCase, cfg: dict, seed: int, pose: int) -> float | None:
    """RAS z (mm) where this sample's CT is cut short, or None (``ct_end``: drawn per sample with
    ``probability``, ``below_femur_top_mm`` below the highest femur voxel), as in a pelvis CT that
    ends inside the X-ray field."""
    drawn = _drawn_cut(lc, cfg, "ct_end", seed, pose)
    if drawn is None:
        return None
    rng, spec, femur = drawn
    low, high = spec.get("below_femur_top_mm", (40.0, 200.0))
    return float(femur[:, 2].max()) - float(rng.uniform(low, high))


def ct_sides_mm(lc: LoadedCase, cfg: dict, seed: int, pose: int) -> tuple[float, float] | None:
    """RAS x range (mm) this sample's CT keeps, or None (``ct_sides``: drawn per sample with
    ``probability``; each side ``into_femur_mm`` inside the outermost femur voxel, negative: beyond it),
    as in a CT whose reconstruction field is narrower than the hips."""
    drawn = _drawn_cut(lc, cfg, "ct_sides", seed, pose)
    if drawn is None:
        return None
    rng, spec, femur = drawn
    low, high = spec.get("into_femur_mm", (-30.0, 20.0))
    return float(femur[:, 0].min()) + float(rng.uniform(low, high)), float(femur[:, 0].max()) - float(
        rng.uniform(low, high)
    )


def table_shift_mm(
    ct: Volume,
    world_to_camera: np.ndarray,
    center_ras: np.ndarray,
    table_mm: float,
    body_hu: float,
    reach_mm: float = 400.0,
) -> float:
    """Shift (mm, along camera +z) that lays the posed patient on the table top at ``table_mm`` from the source.

    The table is a plane normal to the central ray. The patient rests on it where the line along
    camera +z (anterior -> posterior) through the object centre leaves the body (last CT voxel
    above ``body_hu``, sampled every 1 mm over +-``reach_mm``). A CT couch above ``body_hu`` would
    count as body: :func:`load_case` removes it first.
    """
    centre = np.asarray(center_ras, dtype=np.float64)
    offsets = np.arange(-reach_mm, reach_mm + 1.0, 1.0)
    central_ray = camera_to_world_directions(world_to_camera, np.array([0.0, 0.0, 1.0]))  # camera +z in the world
    ijk = np.rint(apply_transform(np.linalg.inv(ct.affine), centre + offsets[:, None] * central_ray)).astype(np.int64)
    inside = np.all((ijk >= 0) & (ijk < ct.array.shape), axis=1)
    body = np.zeros(len(offsets), dtype=bool)
    body[inside] = ct.array[tuple(ijk[inside].T)] > body_hu
    if not body.any():
        raise InputFileError(
            ct.path,
            f"no body (HU > {body_hu:g}) on the central line through the bones' centre: cannot lay the patient on the table",
        )
    skin_z = apply_transform(world_to_camera, centre)[2] + offsets[np.flatnonzero(body)[-1]]
    return float(table_mm - skin_z)


def render_sample(
    lc: LoadedCase, geometry: Geometry, cfg: dict, seed: int, pose: int, device: torch.device | str, split: str
) -> dict:
    """Image (H, W), field of view (H, W), depth (2B, H, W), mask (B, H, W) and sample notes (``split``: its datalist
    list) for one pose.

    Masks and depths are kept only where the radiograph shows the patient: inside the detector area
    and the collimation (``exposed`` >= 0.5 of :func:`scripts.data.radiograph_style.style_radiograph`).
    """
    name = lc.case.name
    cut_mm, sides_mm = ct_end_mm(lc, cfg, seed, pose), ct_sides_mm(lc, cfg, seed, pose)
    crops = ([(2, cut_mm, np.inf)] if cut_mm is not None else []) + ([(0, *sides_mm)] if sides_mm is not None else [])
    if crops:
        ct, labels = lc.ct, lc.labels
        for axis, low, high in crops:
            ct, labels = crop_along(ct, axis, low, high), crop_along(labels, axis, low, high)
            if ct is None or labels is None:  # nothing left, or an oblique CT: rendered uncut
                cut_mm = sides_mm = None
                break
        else:
            lc = prepare_case(lc.case, ct, labels, lc.center, lc.couch_voxels, cfg, device)
    pose_cfg = cfg["pose"]
    rot, trans = pose_parameters(name, pose, seed, pose_cfg)
    world_to_camera = standard_ap_pose(lc.center, cfg["source_to_object_mm"], rot, trans)
    if pose_cfg.get("table_mm") is not None:
        trans[2] += table_shift_mm(
            lc.ct, world_to_camera, lc.center, pose_cfg["table_mm"], pose_cfg.get("body_hu", -500.0)
        )
        world_to_camera = standard_ap_pose(lc.center, cfg["source_to_object_mm"], rot, trans)
    geom = geometry.with_pose(world_to_camera)
    areal = areal_densities(lc.mu, lc.mu_affine, geom, cfg["drr"]["step_voxels"])
    depth, mask = depth_maps(
        lc.labels.array, lc.ct.affine, geom, geom.bones, cfg["depth"]["step_voxels"], device, lc.bones
    )
    gen = torch.Generator().manual_seed(int(_stable_unit("style", seed, name, pose) * 2**62))
    image, fov, exposed, style = style_radiograph(
        areal, geom, mask, cfg["style"], gen, float(geom.world_to_camera_points(lc.center)[2])
    )
    shown = (exposed >= 0.5).to(mask.dtype)
    mask = mask * shown
    depth = depth * shown.to(depth.dtype)
    present = {b: lc.bones.get(b) is not None for b in geom.bones}
    rows, cols = torch.nonzero(shown.any(1)).flatten(), torch.nonzero(shown.any(0)).flatten()
    field_px = [int(cols.min()), int(cols.max()), int(rows.min()), int(rows.max())] if rows.numel() else None
    notes = {
        "case": name,
        "pose": pose,
        "split": split,
        "rotation_deg": rot,
        "translation_mm": trans,
        "table_mm": pose_cfg.get("table_mm"),
        "pelvis_table_clearance_mm": (
            None
            if pose_cfg.get("table_mm") is None
            else table_clearance_mm(lc.pelvis_ras, world_to_camera, pose_cfg["table_mm"])
        ),
        "source_to_object_mm": cfg["source_to_object_mm"],
        "object_center_ras_mm": lc.center.tolist(),
        "absent_bones": [b for b in geom.bones if not present[b]],
        "bones_in_view": [b for i, b in enumerate(geom.bones) if bool(mask[i].any())],
        "bones_outside_view": [b for i, b in enumerate(geom.bones) if present[b] and not bool(mask[i].any())],
        "field_px": field_px,
        "style": style,
        "drr": dict(cfg["drr"]),
        "ct": str(lc.case.ct),
        "labels": str(lc.case.labels),
        "label_map": lc.labels.label_map,
        "ct_extent": {"shape": list(lc.ct.array.shape), "affine": lc.ct.affine.tolist()},
        "ct_end_z_mm": cut_mm,
        "ct_sides_x_mm": None if sides_mm is None else list(sides_mm),
        "couch_voxels_removed": lc.couch_voxels,
    }
    return {
        "image": image.cpu().numpy(),
        "fov": fov.cpu().numpy(),
        "depth": depth.cpu().numpy(),
        "mask": mask.cpu().numpy(),
        "geometry": geom,
        "notes": notes,
    }


def save_preview(path: Path, image: np.ndarray, depth: np.ndarray, mask: np.ndarray, bones: Sequence[str]) -> None:
    """PNG: radiograph with mask outlines, front and back depth (mm) of all bones side by side."""
    front, back = front_back_extent(depth, mask)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.3))
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    for b, bone in enumerate(bones):
        if mask[b].any():
            axes[0].contour(mask[b], levels=[0.5], colors=bone_colour(bone), linewidths=0.8)
            axes[0].plot([], [], color=bone_colour(bone), label=bone)
    if mask.any():  # a radiograph with no bone in view (e.g. a chest phantom) has nothing to label
        axes[0].legend(loc="lower right", fontsize=7)
    axes[0].set_title("radiograph + masks")
    finite = np.concatenate([front[np.isfinite(front)], back[np.isfinite(back)]])
    lim = (finite.min(), finite.max()) if finite.size else (0, 1)
    for ax, d, title in ((axes[1], front, "front depth (mm)"), (axes[2], back, "back depth (mm)")):
        im = ax.imshow(d, cmap="viridis", vmin=lim[0], vmax=lim[1])
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)


def write_sample(out_dir: Path, name: str, sample: dict, meshes: dict[str, str], source: str, inputs: dict) -> None:
    """Write one sample folder atomically (temporary folder, then rename); ``source``: its CT's :func:`case_source`,
    ``inputs``: its :func:`sample_inputs`. sample.json's ``ct`` and ``labels`` are relative to ``out_dir``, as
    ``source``, ``inputs.labels`` and ``meshes`` (:func:`scripts.model.training.recorded_path` reads them back)."""
    geom: Geometry = sample["geometry"]
    affine = geom.image_affine
    with atomic_dir(out_dir / name, SAMPLE_KIND) as tmp:
        write_nifti(tmp / "image.nii.gz", sample["image"].astype(np.float32), affine)
        write_nifti(tmp / "fov.nii.gz", sample["fov"].astype(np.uint8), affine)
        write_depth_and_mask(tmp, sample["depth"], sample["mask"], affine)
        geom.save(tmp / "geometry.json")
        save_preview(tmp / "preview.png", sample["image"], sample["depth"], sample["mask"], geom.bones)
        write_json(
            tmp / "sample.json",
            {
                **sample["notes"],
                "ct": source,
                "labels": inputs["labels"],
                "meshes": meshes or None,
                "source": source,
                "inputs": inputs,
            },
        )


# ---------------------------------------------------------------------- datalist
def build_datalist(
    out_dir: str | Path, seed: int, fractions: dict[str, float], cases: Sequence[str] | None = None
) -> dict:
    """Rebuild ``out_dir/datalist.json`` from every complete sample folder; split by case.

    A sample goes to the list recorded in its ``sample.json`` (``split``). Samples without one
    (rendered before it was recorded) follow :func:`case_splits`. A sample whose ``sample.json`` is unreadable
    (:func:`sample_notes`) is left out with one warning line on stderr naming its folder.
    Concurrent rebuilds (shards finishing together) are serialised by an exclusive ``fcntl.flock``
    on ``out_dir/.datalist.lock``; the file itself is written atomically, and only over a datalist the
    simulator wrote (:func:`check_datalist`), whose SHA-256 goes into ``out_dir``'s output marker.
    """
    out_dir = Path(out_dir)
    with datalist_lock(out_dir):
        check_datalist(out_dir)
        lists = _rebuild_datalist(out_dir, seed, fractions, cases)
        write_json(
            out_dir / OUTPUT_MARKER,
            {"kind": DATASET_KIND, "source": None, "datalist_sha256": sha256(out_dir / "datalist.json")},
        )
        return lists


@contextlib.contextmanager
def datalist_lock(out_dir: Path) -> Iterator[None]:
    """Hold the exclusive ``fcntl.flock`` on ``out_dir/.datalist.lock`` (shards checking or rebuilding the datalist)."""
    with open(out_dir / DATALIST_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def is_simulator_datalist(data: Any) -> bool:
    """Whether ``data`` (parsed JSON) has exactly the form :func:`_rebuild_datalist` writes: the lists of
    :data:`SPLITS`, each entry naming its sample folder's files (:data:`ENTRY_FILES`; early versions had no
    ``fov``), ``case``, ``pose`` and optionally ``meshes``. How datalists of simulator versions that wrote no
    ``datalist_sha256`` are told from a user's."""
    if not isinstance(data, dict) or set(data) != set(SPLITS) or not all(isinstance(v, list) for v in data.values()):
        return False
    required, allowed = set(ENTRY_FILES) - {"fov"} | {"case", "pose"}, set(ENTRY_FILES) | {"case", "pose", "meshes"}
    for entry in (e for v in data.values() for e in v):
        if not isinstance(entry, dict) or not required <= set(entry) <= allowed or not isinstance(entry["image"], str):
            return False
        folder = entry["image"].split("/")[0]
        if folder in ("", ".", "..") or any(
            entry[k] != f"{folder}/{name}" for k, name in ENTRY_FILES.items() if k in entry
        ):
            return False
    return True


def check_datalist(out_dir: Path) -> None:
    """Refuse to rebuild ``out_dir/datalist.json`` unless the simulator wrote it: its SHA-256 is the one in
    ``out_dir``'s output marker (kind "simulated data set"), or, without a marker (simulator versions up to
    bundle 0.10.5 wrote none), it has exactly the simulator's form (:func:`is_simulator_datalist`). Call under
    :func:`datalist_lock`.

    Raises:
        InputFileError: ``out_dir`` holds another kind of bundle output, or its datalist.json is a user's
            (or was changed since the simulator wrote it): left untouched.
    """
    marker, path = written_by_bundle(out_dir), out_dir / "datalist.json"
    if marker is not None and marker["kind"] != DATASET_KIND:
        raise InputFileError(
            out_dir, f"holds a {marker['kind']} written by this bundle, not a simulated data set; choose another --out"
        )
    if not path.exists() and not path.is_symlink():
        return
    if path.is_file() and not path.is_symlink():
        if marker is not None and marker.get("datalist_sha256") == sha256(path):
            return
        try:
            if marker is None and is_simulator_datalist(read_json(path)):
                return
        except InputFileError:  # unreadable JSON: not the simulator's either
            pass
    raise InputFileError(
        path,
        "was not written by the simulator (or was changed since); left untouched: move it out of "
        "the way (the simulator rebuilds its datalist from the samples) or choose another --out",
    )


def case_splits(
    names: Sequence[str], seed: int, fractions: dict[str, float], cohort: Sequence[str] | None = None
) -> dict[str, str]:
    """List of each case in ``names``: :func:`assign_splits` over the ``cohort`` when it holds the
    case (every list with a positive fraction gets a case when there are enough), else :func:`split_of`."""
    known = assign_splits(cohort, seed, fractions) if cohort else {}
    return {c: known.get(c) or split_of(c, seed, fractions) for c in names}


def _rebuild_datalist(out_dir: Path, seed: int, fractions: dict[str, float], cases: Sequence[str] | None) -> dict:
    lists: dict[str, list] = {s: [] for s in SPLITS}
    samples = []
    for d in sorted(p for p in out_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not all((d / f).exists() for f in SAMPLE_FILES):
            continue
        notes = sample_notes(d)
        if notes is None:  # not done (:func:`rendered_samples`): a run over its case renders it again
            print(
                f"{d}: warning: sample.json is unreadable or not a sample's notes; left out of the datalist: "
                f"rerun the simulator with case {sample_case(d.name) or d.name!r} to render it again",
                file=sys.stderr,
            )
            continue
        samples.append((d, notes))
    fallback = case_splits([n["case"] for _, n in samples if not n.get("split")], seed, fractions, cases)
    for d, notes in samples:
        split = notes.get("split") or fallback[notes["case"]]
        if split not in SPLITS:
            raise InputFileError(d / "sample.json", f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
        entry = {
            **{k: f"{d.name}/{name}" for k, name in ENTRY_FILES.items()},
            "case": notes["case"],
            "pose": notes["pose"],
        }
        if notes.get("meshes"):
            entry["meshes"] = notes["meshes"]
        lists[split].append(entry)
    for entries in lists.values():
        entries.sort(key=lambda e: (e["case"], e["pose"]))
    write_json(out_dir / "datalist.json", lists)
    return lists


# ---------------------------------------------------------------------- workers
_LOADED: dict[str, LoadedCase] = {}  # the last case a worker loaded, under its :func:`_load_key`


def _load_key(
    case: Case,
    label_map: dict[int, int] | str,
    cfg: dict,
    device: torch.device | str,
    center_ras: Sequence[float] | None,
) -> str:
    """What :func:`load_case` depends on: the files (path and modification time), label map, DRR and couch settings,
    device and centre."""
    files = [(str(f.resolve()), f.stat().st_mtime_ns) for f in (case.ct, case.labels) if f.exists()]
    lut = sorted(label_map.items()) if isinstance(label_map, dict) else label_map
    centre = None if center_ras is None else [float(c) for c in center_ras]
    return repr((files, lut, cfg["drr"], cfg.get("couch"), str(torch.device(device)), centre))


def _run(task: tuple) -> tuple[str, str | None]:
    """Worker: render and write one (case, pose); returns (sample name, error line or None)."""
    case, split, pose, out_dir, seed, cfg, geometry, label_map, device, center_ras, inputs = task
    name = sample_name(case.name, pose)
    try:
        key = _load_key(case, label_map, cfg, device, center_ras)
        if key not in _LOADED:
            _LOADED.clear()
            _LOADED[key] = load_case(case, label_map, cfg, device, center_ras)
        sample = render_sample(_LOADED[key], geometry, cfg, seed, pose, device, split)
        meshes = {b: os.path.relpath(p, out_dir) for b, p in case.meshes.items()}
        write_sample(out_dir, name, sample, meshes, case_source(case.ct, out_dir), inputs)
    except InputFileError as e:
        return name, str(e)
    return name, None


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def simulate(
    cases: Sequence[Case],
    out_dir: str | Path,
    poses: int,
    seed: int = 0,
    cfg: dict | None = None,
    geometry: Geometry | None = None,
    source_to_object_mm: float | None = None,
    label_map: dict[int, int] | str | None = None,
    workers: int = 1,
    device: str | None = None,
    overwrite: bool = False,
    cohort: Sequence[str] | None = None,
    split: str | None = None,
    center_ras: Sequence[float] | None = None,
) -> tuple[dict, list[str]]:
    """Simulate ``poses`` samples per case into ``out_dir``; returns (datalist, error lines) and prints the count of
    samples rendered, skipped (already rendered from the same inputs: :func:`rendered_samples`) and failed.

    ``split``: the datalist list of every case of this run; without it :func:`case_splits` over the
    ``cohort`` (names of all cases of the cohort, all shards) assigns them. ``center_ras``: see :func:`load_case`.
    Refused before anything is written: an ``out_dir`` that is not a simulated data set or whose datalist.json the
    simulator did not write (:func:`check_out_folder`), a case name that holds another CT's samples
    (:func:`check_case_sources`), a ``split`` other than the one a case's samples there have when the case has
    poses to render (new poses of a case join that list; a case fully rendered is skipped and keeps it), a sample
    rendered from other inputs unless ``overwrite``, a ``device`` that is no torch device or absent here
    (:func:`scripts.config_flags.as_device`). ``out_dir`` is created
    with the first sample written, so a run whose cases all fail (e.g. unreadable labels) leaves none.
    ``geometry``, ``source_to_object_mm`` (mm): None takes configs/geometry.json's
    (:func:`scripts.geometry.read_standard_geometry`).
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    device = str(as_device(device))  # None: CUDA when available; one that is no device or absent here: one line
    out_dir = Path(out_dir)
    check_out_folder(out_dir)
    kept = check_case_sources(out_dir, cases)
    if geometry is None or source_to_object_mm is None:
        standard, standard_distance = read_standard_geometry()
        geometry = standard if geometry is None else geometry
        source_to_object_mm = standard_distance if source_to_object_mm is None else source_to_object_mm
    cfg = {**(cfg or load_config()), "source_to_object_mm": float(source_to_object_mm)}
    splits = (
        {c.name: split for c in cases} if split else case_splits([c.name for c in cases], seed, cfg["split"], cohort)
    )
    wanted = {
        sample_name(c.name, k): (c, sample_inputs(c, k, out_dir, seed, cfg, geometry, label_map, center_ras))
        for c in cases
        for k in range(poses)
    }
    done = set() if overwrite else set(rendered_samples(out_dir, wanted))
    todo = {c.name for name, (c, _) in wanted.items() if name not in done}  # cases fully rendered keep their list
    moved = next((c for c in cases if c.name in todo and kept.get(c.name, splits[c.name]) != splits[c.name]), None)
    if moved is not None and split:
        raise InputFileError(
            moved.ct,
            f"has samples in the {kept[moved.name]} list of {out_dir}, not {split}: a CT belongs to one list "
            f"(its radiographs in both would be alike); leave --split out to add poses to {kept[moved.name]}",
        )
    splits.update(kept)  # new poses of a case join its samples' list
    tasks = [
        (c, splits[c.name], inputs["pose"], out_dir, seed, cfg, geometry, label_map, device, center_ras, inputs)
        for name, (c, inputs) in wanted.items()
        if name not in done
    ]
    errors: list[str] = []
    failed_cases: set[str] = set()
    failed = 0
    workers = min(workers, len(tasks))  # no idle processes (--workers 1000 for one case spawned 1000)
    with progress(total=len(tasks), desc="simulate", unit="sample") as bar:
        if workers <= 1:
            results = map(_run, tasks)
            pool = None
        else:
            pool = multiprocessing.get_context("spawn").Pool(
                workers, _init_worker, (max(1, (os.cpu_count() or 1) // workers),)
            )
            results = pool.imap_unordered(_run, tasks, chunksize=max(1, poses))
        for name, error in results:
            case = sample_case(name)
            if error:
                failed += 1
                bar.set_postfix(failed=failed)
            if error and case not in failed_cases:
                failed_cases.add(case)
                errors.append(error)
            bar.update(1)
        if pool is not None:
            pool.close()
            pool.join()
    print(f"rendered {len(tasks) - failed}, skipped {len(done)} (already done), failed {failed}", file=sys.stderr)
    lists = build_datalist(out_dir, seed, cfg["split"], cohort) if holds_anything(out_dir) else {s: [] for s in SPLITS}
    return lists, errors


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    """CLI: simulate samples and rebuild the datalist; returns the exit status (1 if any case failed)."""
    parser = OneLineParser(
        prog="python -m scripts.simulate", description="Simulate radiographs, dual-face depth maps and masks from CT."
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--ct", type=path_argument, help="CT file (NIfTI/NRRD/MHA) or DICOM series folder, in HU")
    src.add_argument(
        "--cases",
        type=path_argument,
        help="cohort folder: <case>/{ct.nii.gz (or .nii, .nrrd, .mha, .mhd, a DICOM series folder ct/), labels.nii.gz "
        "(the same formats) or labels/ (TotalSegmentator output folder), meshes/<bone>.ply}",
    )
    parser.add_argument(
        "--labels",
        type=path_argument,
        help="for --ct: a label volume (ids mapped by --label-map) or a TotalSegmentator output folder of "
        "per-structure masks (hip_left.nii.gz, ...)",
    )
    parser.add_argument("--out", required=True, type=path_argument, help="output folder (samples + datalist.json)")
    parser.add_argument(
        "--poses",
        type=argument(as_count, minimum=1),
        default=1,
        help="poses per case (at least 1; 0 would write nothing)",
    )
    parser.add_argument("--seed", type=argument(as_count), default=0)
    parser.add_argument(
        "--label-map",
        default=None,
        type=path_argument,
        help=f"JSON file {{source_id: bone id or name}} or preset: {', '.join(LABEL_MAP_CHOICES)} "
        "(totalsegmentator: v1 or v2 ids, told from the labels)",
    )
    parser.add_argument(
        "--geometry", default=None, type=path_argument, help="geometry JSON (default configs/geometry.json)"
    )
    parser.add_argument(
        "--config", default=None, type=path_argument, help="simulation YAML (default configs/simulate.yaml)"
    )
    parser.add_argument(
        "--shard",
        type=argument(as_shard),
        default=(0, 1),
        help="i/n: this run simulates cases i, i+n, ... (sorted by name)",
    )
    parser.add_argument("--workers", type=argument(as_count, minimum=1), default=1)
    parser.add_argument("--device", default=None, help="torch device (default cuda when available)")
    parser.add_argument("--overwrite", action="store_true", help="re-render samples that already exist")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default=None,
        help="datalist list of every sample this run renders, e.g. extra training-only subjects; cases with all "
        "their poses rendered are skipped and keep their list, a case with poses to render whose samples are in "
        "another list is refused; default: the configured fractions",
    )
    args = parser.parse_args(argv)
    if args.ct is not None and args.labels is None:
        parser.error("--ct: needs --labels")
    if args.device is not None:
        as_device(args.device)
    cfg = load_config(args.config)
    geometry, s2o = read_standard_geometry(args.geometry)
    label_map = load_label_map(args.label_map)
    cases = [Case(case_name_of(args.ct), Path(args.ct), Path(args.labels))] if args.ct else find_cases(args.cases)
    i, n = args.shard
    cohort = [c.name for c in cases] if args.cases else None
    _, errors = simulate(
        cases[i::n],
        args.out,
        args.poses,
        args.seed,
        cfg,
        geometry,
        s2o,
        label_map,
        args.workers,
        args.device,
        args.overwrite,
        cohort,
        args.split,
    )
    for e in errors:
        print(e, file=sys.stderr)
    return 1 if errors else 0
