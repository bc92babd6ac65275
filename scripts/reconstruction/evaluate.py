"""Evaluation on a simulated data set's test split: surfaces and depth maps against the ground truth.

For every test sample and bone, each reconstruction variant is compared with the true surface
(the entry's world-RAS mesh moved into the camera frame by the sample's ``world_to_camera``, or a
marching-cubes surface of the CT labels when no mesh is listed), both clipped to the X-ray cone
and to the box of the CT the sample was simulated from (``ct_extent`` of its sample.json):

- variants: ``single_face`` (front-face-only network, its front surface), ``single_face_ssm`` (its
  shape-model completion), ``dual_face`` (stitched dual-face surface), ``dual_face_ssm`` (completion);
- shifts (absolute depth of the relative maps): ``centre`` (the network's centre-depth head),
  ``prior`` (fixed-geometry prior: mean centre depth of the training split), ``oracle`` (the true
  mean masked depth);
- metrics: ASSD, HD95, HD, Chamfer (mm, :mod:`scripts.reconstruction.surface_metrics`), depth MAE (mm, over true
  masked pixels of the network's shifted maps; network variants only) and mask Dice.

Outputs in ``output_dir``, written as one folder when the run completes (an existing ``output_dir``
is replaced only when it is an earlier evaluation of this bundle; anything else is refused before any
work): metrics.json, metrics.csv, summary.md, assd_by_variant.png and error_map_<sample>.png. ``oracle_inputs`` replaces
the networks by the true maps (an upper bound that isolates meshing, shape model and metrics). The variant and shift
the targets are stated for (``HEADLINE``) is also summarised per subject, with a bootstrap interval over subjects
(:func:`subject_summary`: metrics.json ``subjects`` and a second table in summary.md).
"""

from __future__ import annotations

import concurrent.futures
import csv
import functools
import io
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import trimesh
from scripts.config_flags import as_count, as_path, as_positive, is_null
from scripts.geometry import Geometry, GeometryError, match_bone_channels, read_geometry
from scripts.io.files import (
    InputFileError,
    PathLike,
    atomic_dir,
    atomic_path,
    check_replaceable,
    read_depth_and_mask,
    read_json,
    read_nifti,
    write_json,
)
from scripts.io.progress import progress
from scripts.io.report import metric_bars_figure, save_error_map, save_figure
from scripts.model.training import dataset_dirs, load_datalist, recorded_path
from scripts.model.transforms import ResizeDepthd
from scripts.reconstruction.reconstruct import (
    DepthPrediction,
    Reconstructor,
    face_depths,
    mean_masked_depth,
    oracle_prediction,
    true_face_mask,
)
from scripts.reconstruction.runner import die_with_parent
from scripts.reconstruction.ssm import label_surfaces, read_mesh
from scripts.reconstruction.surface_metrics import ReferenceSurface, vertex_errors, volume_extent_planes

VARIANTS = ("single_face", "single_face_ssm", "dual_face", "dual_face_ssm")
SHIFTS = ("centre", "prior", "oracle")
# how each shift sets the depth maps' centre depth, as the figures name it
SHIFT_TITLES = {
    "centre": "centre depth: estimated (network)",
    "prior": "centre depth: training prior",
    "oracle": "centre depth: true (oracle)",
}
RESULT_KIND = "evaluation"  # output-folder marker kind (scripts.io.files.atomic_dir)
SURFACE_KEYS = ("assd_mm", "hd95_mm", "hd_mm", "chamfer_mm")
METRIC_KEYS = SURFACE_KEYS + ("depth_mae_mm", "dice")
HEADLINE = (
    "dual_face_ssm",
    "centre",
)  # the variant and shift the accuracy targets are stated for: summarised per subject


@dataclass
class Sample:
    """One test sample: image (H, W), true depth (2B, H, W) mm and mask (B, H, W), true camera-frame meshes,
    the radiograph's own area (H, W) (None: all of the image) and ``field``, the geometry of the exposed
    pixel box (``sample.json: field_px``) whose cone truth and prediction are clipped to (None: the whole image).
    ``case``: the subject (datalist ``case``; the sample's own name when not listed)."""

    name: str
    case: str
    image: np.ndarray
    geometry: Geometry
    depth: np.ndarray
    mask: np.ndarray
    meshes: dict[str, trimesh.Trimesh]
    extent_planes: list | None = None  # camera-frame planes of the simulated CT's box (None: not recorded)
    fov: np.ndarray | None = None
    field: Geometry | None = None


# ---------------------------------------------------------------------- ground truth
# the poses of one subject share its true surfaces: each file is read (or marched) once per process
_world_mesh = functools.lru_cache(maxsize=16)(read_mesh)


@functools.lru_cache(maxsize=4)
def _label_surfaces(labels: str, bones: tuple[str, ...], label_map_json: str | None) -> dict[str, trimesh.Trimesh]:
    return label_surfaces(labels, bones, None if label_map_json is None else json.loads(label_map_json))


def truth_meshes(entry: Mapping, dataset_dir: Path, geometry: Geometry) -> dict[str, trimesh.Trimesh]:
    """True surfaces in the camera frame: the entry's meshes, else marching cubes of the labels named in sample.json."""
    meshes = entry.get("meshes")
    if meshes:
        world = {bone: _world_mesh(str(dataset_dir / p)) for bone, p in meshes.items() if bone in geometry.bones}
    else:
        notes = read_json(Path(entry["geometry"]).parent / "sample.json")
        labels = recorded_path(notes.get("labels") or "", dataset_dir)
        label_map = notes.get("label_map")
        world = _label_surfaces(
            str(labels), tuple(geometry.bones), None if label_map is None else json.dumps(label_map, sort_keys=True)
        )
    out = {}
    for bone, mesh in world.items():
        out[bone] = trimesh.Trimesh(
            geometry.world_to_camera_points(np.asarray(mesh.vertices)), mesh.faces, process=False
        )
    return out


def load_sample(
    entry: Mapping, dataset_dir: PathLike, image_size: Sequence[int] | None = None, bones: Sequence[str] | None = None
) -> Sample:
    """Read a datalist entry (absolute paths); truth maps area-resampled to ``image_size`` (W, H) as in training validation.

    ``bones``: the networks' channel names; the truth channels are matched to them by name (a sample
    listing its bones in another order is reordered, one lacking a bone refused).
    """
    dataset_dir = Path(dataset_dir)
    geometry = read_geometry(entry["geometry"])
    image = read_nifti(entry["image"])
    depth, mask = read_depth_and_mask(entry["depth"], entry["mask"])
    b = len(geometry.bones)
    if (
        image.shape != (geometry.height, geometry.width)
        or depth.shape != (2 * b, *image.shape)
        or mask.shape != (b, *image.shape)
    ):
        raise InputFileError(
            entry["image"],
            f"image {image.shape}, depth {depth.shape}, mask {mask.shape} disagree with geometry "
            f"{geometry.image_size} and {b} bones",
        )
    if bones is not None:
        try:
            geometry, depth, mask = match_bone_channels(geometry, bones, depth, mask)
        except GeometryError as e:
            raise InputFileError(entry["geometry"], str(e)) from None
    meshes = truth_meshes(entry, dataset_dir, geometry)
    notes_file = Path(entry["geometry"]).parent / "sample.json"
    notes = read_json(notes_file) if notes_file.exists() else {}
    extent = notes.get("ct_extent")
    planes = volume_extent_planes(extent["affine"], extent["shape"], geometry.matrix) if extent else None
    field = geometry.cropped(notes["field_px"]) if notes.get("field_px") else geometry
    if image_size is not None and tuple(image_size) != geometry.image_size:
        geometry = geometry.resized(image_size)
        depth, mask = resized_truth(depth, mask, geometry.image_size)
    fov = read_nifti(entry["fov"]) if entry.get("fov") else None
    name = Path(entry["image"]).parent.name
    return Sample(
        name, str(entry.get("case", name)), image, geometry, depth, mask.astype(bool), meshes, planes, fov, field
    )


def resized_truth(depth: np.ndarray, mask: np.ndarray, image_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """True depth (2B, H, W) mm and masks (B, H, W) area-resampled to ``image_size`` (W, H) as in training
    validation (:class:`scripts.model.transforms.ResizeDepthd`); returned as they are at their own size."""
    if tuple(image_size) == (depth.shape[-1], depth.shape[-2]):
        return depth, mask
    r = ResizeDepthd(spatial_size=(image_size[1], image_size[0]))(
        {"depth": torch.as_tensor(depth), "mask": torch.as_tensor(mask)}
    )
    return r["depth"].numpy(), r["mask"].numpy().astype(bool)


def sample_mean_depths(entry: Mapping) -> dict[int, float]:
    """A datalist entry's mean masked true depth (mm), both faces (key 2) and front faces only (key 1)."""
    depth, mask = read_depth_and_mask(entry["depth"], entry["mask"])
    return {faces: mean_masked_depth(face_depths(depth, faces), true_face_mask(depth, mask, faces)) for faces in (2, 1)}


NO_DATALIST = (
    "not found: evaluation's --dataset_dir is a simulated data set with truth (made by python -m scripts.simulate "
    "--out DIR: docs/simulation.md); radiographs without truth are reconstructed by configs/inference.yaml"
)


def dataset_folders(dataset_dir: PathLike | Sequence[PathLike]) -> dict[str, Path]:
    """``--dataset_dir`` as {name prefix: data set folder}: one folder (or a list of one) gets the prefix "";
    several get ``<folder name>.`` (``<position>_<folder name>.``, 1-based, for all of them when two share a
    name), so that their samples and subjects never share a name. Bad values: :func:`scripts.model.training.dataset_dirs`.
    """
    folders = dataset_dirs(dataset_dir)
    if len(folders) == 1:
        return {"": folders[0]}
    names = [d.resolve().name for d in folders]
    unique = len(set(names)) == len(names)
    return {
        (f"{name}." if unique else f"{k + 1}_{name}."): d
        for k, (name, d) in enumerate(zip(names, folders, strict=True))
    }


def datalist_sizes(folder: PathLike) -> dict[str, int]:
    """Samples per list of ``folder/datalist.json`` ({list name: entries}); no such file (a folder of radiographs:
    evaluation needs truth, :data:`NO_DATALIST`) or one that is no object of lists raises :class:`InputFileError`."""
    path = Path(folder) / "datalist.json"
    if not path.is_file():
        raise InputFileError(path, NO_DATALIST)
    data = read_json(path)
    sizes = (
        {key: len(value) for key, value in data.items() if isinstance(value, list)} if isinstance(data, dict) else {}
    )
    if not sizes:
        raise InputFileError(path, "not a MONAI datalist (a JSON object of lists of samples)")
    return sizes


def split_entries(dataset_dir: PathLike | Sequence[PathLike], split: str, remedy: str) -> dict[str, list[dict]]:
    """Entries (absolute paths) of list ``split`` per name prefix of :func:`dataset_folders`; folders with no sample
    in it are left out. When no folder has any, :class:`InputFileError` names every datalist's lists with their
    sample counts, and ``remedy`` (what to pass instead)."""
    folders = dataset_folders(dataset_dir)
    sizes = {prefix: datalist_sizes(folder) for prefix, folder in folders.items()}
    found = {prefix: load_datalist(folders[prefix], split) for prefix, size in sizes.items() if size.get(split)}
    if not found:
        counts = {prefix: ", ".join(f"{key} {n}" for key, n in size.items()) for prefix, size in sizes.items()}
        if len(folders) == 1:
            raise InputFileError(
                folders[""] / "datalist.json", f"no samples in its {split!r} list (its lists: {counts['']}); {remedy}"
            )
        listed = "; ".join(f"{folders[p] / 'datalist.json'}: {c}" for p, c in counts.items())
        raise InputFileError("--dataset_dir", f"no samples in the {split!r} list of any data set ({listed}); {remedy}")
    return found


def prior_centre_depth(
    dataset_dir: PathLike | Sequence[PathLike], split: str = "training", map_fn: Callable = map
) -> dict[int, float]:
    """Fixed-geometry priors (mm) per face count: mean over the split's samples (of every data set given, see
    :func:`dataset_folders`) of each sample's mean masked depth, both faces (key 2) and front faces only (key 1),
    as the centre heads are trained. ``map_fn``: an ordered map (e.g. a process pool's ``imap``) over the entries
    (:func:`sample_mean_depths`). No sample in ``split``: :class:`InputFileError` saying to pass ``--prior_centre_mm``.
    """
    values: dict[int, list[float]] = {1: [], 2: []}
    remedy = (
        "the prior centre depth is their mean depth: pass --prior_centre_mm MM (the mean centre depth of the "
        "network's training data; 948.7 for the shipped model)"
    )
    found = split_entries(dataset_dir, split, remedy)
    entries = [e for listed in found.values() for e in listed]
    for means in progress(
        map_fn(sample_mean_depths, entries), total=len(entries), desc=f"prior depth ({split})", unit="sample"
    ):
        for faces, value in means.items():
            if math.isfinite(value):
                values[faces].append(value)
    if not values[2]:
        raise InputFileError(
            dataset_folders(dataset_dir)[next(iter(found))] / "datalist.json",
            f"no bone pixels in the {split!r} split to compute the prior depth",
        )
    return {faces: float(np.mean(v)) for faces, v in values.items()}


# ---------------------------------------------------------------------- scoring
def depth_mae(pred: np.ndarray, true_depth: np.ndarray, valid: np.ndarray, bones: Sequence[str]) -> dict[str, float]:
    """Per bone MAE (mm) of shifted predicted depth (faces*B, H, W) against the true depth of the same channels
    over their ``valid`` pixels (:func:`true_face_mask`)."""
    faces = pred.shape[0] // len(bones)
    err = np.abs(pred - true_depth)
    return {
        bone: (
            float(err[faces * b : faces * (b + 1)][valid[faces * b : faces * (b + 1)]].mean())
            if valid[faces * b : faces * (b + 1)].any()
            else float("nan")
        )
        for b, bone in enumerate(bones)
    }


def mask_dice(pred: np.ndarray, truth: np.ndarray, bones: Sequence[str]) -> dict[str, float]:
    """Per bone Dice of boolean masks (B, H, W); 1 when both are empty."""
    out = {}
    for b, bone in enumerate(bones):
        total = pred[b].sum() + truth[b].sum()
        out[bone] = float(2.0 * (pred[b] & truth[b]).sum() / total) if total else 1.0
    return out


def mask_top_edge_px(pred: np.ndarray, truth: np.ndarray, bones: Sequence[str]) -> dict[str, float]:
    """Per bone, the median over the image columns that both boolean masks (B, H, W) reach of the prediction's
    topmost row minus the truth's (pixels; negative: the prediction reaches higher, toward row 0); NaN
    without such a column. A mask sitting too high or too low on its bone shows here, where Dice only falls."""
    out = {}
    for b, bone in enumerate(bones):
        columns = np.flatnonzero(pred[b].any(0) & truth[b].any(0))
        out[bone] = (
            float(np.median(pred[b][:, columns].argmax(0) - truth[b][:, columns].argmax(0)))
            if columns.size
            else float("nan")
        )
    return out


def _surface_scores(mesh: trimesh.Trimesh | None, truth: ReferenceSurface | None) -> dict[str, float]:
    if mesh is None or truth is None or len(mesh.faces) == 0:
        return {k: float("nan") for k in SURFACE_KEYS}
    return truth.metrics(mesh)


def evaluate_sample(
    sample: Sample,
    predictions: Mapping[str, DepthPrediction],
    reconstructors: Mapping[str, Reconstructor],
    prior_mm: Mapping[int, float],
    spacing_mm: float = 1.0,
    max_samples: int = 20000,
    timings: dict[str, float] | None = None,
) -> tuple[list[dict], dict]:
    """Rows (one per variant, shift and bone) for one sample; and the dual-face (or single-face) centre-shift
    completions with their true meshes, for the error map. Each network's prediction is meshed and fitted by
    its own entry of ``reconstructors`` (the single-face baseline's overrides apply to it). ``timings``: seconds spent
    reconstructing (meshing and shape-model fits) and measuring surfaces are added under "reconstruct" and "metrics"."""
    timings = {} if timings is None else timings
    rows, shown = [], {}
    bones = sample.geometry.bones
    # each true surface is clipped, sampled and indexed once for all variants and shifts (as surface_metrics would each time)
    field = sample.field or sample.geometry  # same rays as the network's geometry: its cone is the exposed part
    references = {
        bone: ReferenceSurface(mesh, field, spacing_mm, max_samples, seed=1, extent_planes=sample.extent_planes)
        for bone, mesh in sample.meshes.items()
    }
    truth_at: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = (
        {}
    )  # truth maps at each network's size, resampled once
    for network, pred in predictions.items():
        faces = pred.faces
        size = pred.geometry.image_size
        if size not in truth_at:
            truth_at[size] = resized_truth(sample.depth, sample.mask, size)
        depth, mask = truth_at[size]
        valid = true_face_mask(depth, mask, faces)
        true_depth = face_depths(depth, faces)
        shifts = {
            "centre": (pred.centre_mm, None),
            "prior": (prior_mm[faces], None),
            "oracle": (mean_masked_depth(true_depth, valid), valid),
        }
        dice = mask_dice(pred.mask, mask, bones)
        for shift, (centre, weights) in shifts.items():
            t0 = time.perf_counter()
            rec = reconstructors[network].reconstruct(pred, centre, weights)
            t1 = time.perf_counter()
            timings["reconstruct"] = timings.get("reconstruct", 0.0) + t1 - t0
            mae = depth_mae(pred.absolute(centre, weights, masked=False), true_depth, valid, bones)
            completed = rec.completed
            if shift == "centre" and completed:
                shown = {"meshes": completed, "truth": sample.meshes, "variant": f"{network}_ssm"}
            for bone in bones:
                truth = references.get(bone)
                base = {"sample": sample.name, "case": sample.case, "bone": bone, "shift": shift}
                rows.append(
                    {
                        **base,
                        "variant": network,
                        **_surface_scores(rec.surfaces.get(bone), truth),
                        "depth_mae_mm": mae[bone],
                        "dice": dice[bone],
                    }
                )
                rows.append(
                    {
                        **base,
                        "variant": f"{network}_ssm",
                        **_surface_scores(completed.get(bone), truth),
                        "depth_mae_mm": float("nan"),
                        "dice": dice[bone],
                    }
                )
            timings["metrics"] = timings.get("metrics", 0.0) + time.perf_counter() - t1
    return rows, shown


def summarise(rows: Sequence[Mapping]) -> list[dict]:
    """Mean, std and count of each metric per (variant, shift, bone), plus bone "all"; NaNs (bone not found) skipped."""
    out = []
    keys = sorted({(r["variant"], r["shift"]) for r in rows}, key=lambda k: (VARIANTS.index(k[0]), SHIFTS.index(k[1])))
    bones = list(dict.fromkeys(r["bone"] for r in rows))
    for variant, shift in keys:
        for bone in bones + ["all"]:
            group = [
                r
                for r in rows
                if r["variant"] == variant and r["shift"] == shift and (bone == "all" or r["bone"] == bone)
            ]
            row: dict = {"variant": variant, "shift": shift, "bone": bone, "n": len(group)}
            for k in METRIC_KEYS:
                v = np.array([r[k] for r in group], dtype=np.float64)
                v = v[np.isfinite(v)]
                row[k] = float(v.mean()) if v.size else float("nan")
                row[f"{k}_std"] = float(v.std()) if v.size else float("nan")
                row[f"{k}_n"] = int(v.size)
            out.append(row)
    return out


def bootstrap_interval(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> list[float]:
    """95% percentile-bootstrap interval of the mean of ``values`` (one per subject, drawn with replacement)."""
    boot = values[rng.integers(0, values.size, size=(int(n_boot), values.size))].mean(axis=1)
    return [float(x) for x in np.percentile(boot, [2.5, 97.5])]


def subject_summary(
    rows: Sequence[Mapping],
    variant: str = HEADLINE[0],
    shift: str = HEADLINE[1],
    metric: str = "assd_mm",
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """``metric`` of one variant and shift per subject (each row's ``case``; mean over its poses) and bone, plus "all"
    (all its bones and poses), and the mean over subjects with a 95% percentile-bootstrap interval (subjects drawn with
    replacement, ``n_boot`` draws): the uncertainty that a handful of test subjects leaves. NaNs (bone not found) skipped.
    """
    by_subject: dict[str, list[Mapping]] = {}
    for r in rows:
        if r["variant"] == variant and r["shift"] == shift:
            by_subject.setdefault(str(r["case"]), []).append(r)
    bones = list(dict.fromkeys(r["bone"] for group in by_subject.values() for r in group)) + ["all"]
    rng = np.random.default_rng(seed)
    per_subject: dict[str, dict[str, float]] = {}
    for s, group in by_subject.items():
        values = np.array([r[metric] for r in group], dtype=np.float64)
        found = np.isfinite(values)
        of_bone = {bone: found & np.array([bone in ("all", r["bone"]) for r in group]) for bone in bones}
        per_subject[s] = {bone: float(values[k].mean()) if k.any() else float("nan") for bone, k in of_bone.items()}
    mean: dict[str, float] = {}
    ci95: dict[str, list[float]] = {}
    for bone in bones:
        col = np.array([per_subject[s][bone] for s in per_subject])
        col = col[np.isfinite(col)]
        if not col.size:
            mean[bone], ci95[bone] = float("nan"), [float("nan"), float("nan")]
            continue
        mean[bone], ci95[bone] = float(col.mean()), bootstrap_interval(col, n_boot, rng)
    poses = {s: len({r["sample"] for r in group}) for s, group in by_subject.items()}
    return {
        "variant": variant,
        "shift": shift,
        "metric": metric,
        "bones": bones,
        "poses": poses,
        "per_subject": per_subject,
        "mean": mean,
        "ci95": ci95,
        "n_boot": int(n_boot),
        "interval": "percentile bootstrap over subjects",
    }


# ---------------------------------------------------------------------- outputs
def _fmt(v: float) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.2f}"


def summary_markdown(
    means: Sequence[Mapping],
    notes: Sequence[str],
    prior_mm: Mapping[int, float],
    n_samples: int,
    oracle_inputs: bool,
    subjects: Mapping | None = None,
    split: str = "test",
) -> str:
    """The means table (variant x shift x bone) and, given, the per-subject table of :func:`subject_summary`, as Markdown."""
    lines = [
        "# Evaluation summary",
        "",
        f"{n_samples} {split} samples; prior centre depth {prior_mm[2]:.1f} mm (front faces "
        f"{prior_mm[1]:.1f} mm); inputs: "
        f"{'ORACLE (true depth and masks)' if oracle_inputs else 'network predictions'}.",
        "Surfaces clipped to the X-ray cone; distances in mm (mean over samples; std in metrics.json). "
        "Depth MAE: network variants only.",
        "",
        "| variant | shift | bone | ASSD | HD95 | Chamfer | depth MAE | Dice | n |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in means:
        lines.append(
            f"| {r['variant']} | {r['shift']} | {r['bone']} | {_fmt(r['assd_mm'])} | {_fmt(r['hd95_mm'])} "
            f"| {_fmt(r['chamfer_mm'])} | {_fmt(r['depth_mae_mm'])} | {_fmt(r['dice'])} | "
            f"{r['assd_mm_n']} |"
        )
    if subjects and subjects["per_subject"]:
        bones, n = subjects["bones"], len(subjects["per_subject"])
        lines += [
            "",
            f"## Per subject: {subjects['variant']}, {subjects['shift']} shift, "
            f"{subjects['metric'].removesuffix('_mm').upper()} (mm)",
            "",
            f"Mean over each subject's poses; last row: the mean over the {n} subjects and its 95% "
            f"interval ({subjects['interval']}, "
            f"{subjects['n_boot']} draws), the uncertainty that {n} subjects leave.",
            "",
            "| subject | poses | " + " | ".join(bones) + " |",
            "|---|---|" + "---|" * len(bones),
        ]
        for s, values in subjects["per_subject"].items():
            lines.append(f"| {s} | {subjects['poses'][s]} | " + " | ".join(_fmt(values[b]) for b in bones) + " |")
        lines.append(
            f"| mean (95% interval) | {sum(subjects['poses'].values())} | "
            + " | ".join(
                f"{_fmt(subjects['mean'][b])} ({_fmt(subjects['ci95'][b][0])}-{_fmt(subjects['ci95'][b][1])})"
                for b in bones
            )
            + " |"
        )
    if notes:
        lines += ["", "Notes:", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def write_csv(path: PathLike, rows: Sequence[Mapping], means: Sequence[Mapping]) -> None:
    """Per-sample rows then mean rows (sample = "mean")."""
    fields = ["sample", "case", "variant", "shift", "bone", *METRIC_KEYS]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    writer.writerows({**m, "sample": "mean"} for m in means)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


class EvaluationSamples(Sequence):
    """What an evaluation evaluates, in order: (name prefix of its data set, datalist entry with absolute paths) of
    list ``split`` of every data set of ``datasets`` (:func:`dataset_folders`, :func:`split_entries`), the first
    ``poses_per_case`` poses of each subject (``None``: all). Read on first use (MONAI's ``dataset`` of
    configs/evaluate.yaml); then :class:`InputFileError` for no sample in any set, or a true mesh an entry lists that
    is missing (told before any work, not when its subject is reached)."""

    def __init__(self, datasets: Mapping[str, Path], split: str, poses_per_case: int | None = None):
        poses_per_case = None if is_null(poses_per_case) else poses_per_case
        if poses_per_case is not None and (type(poses_per_case) is not int or poses_per_case < 1):
            raise InputFileError(
                "--poses_per_case", f"expected a whole number of poses, at least 1, got {poses_per_case!r}"
            )
        self.datasets, self.split, self.poses_per_case = dict(datasets), split, poses_per_case

    @functools.cached_property
    def _entries(self) -> list[tuple[str, dict]]:
        found = split_entries(
            list(self.datasets.values()),
            self.split,
            "choose the list to evaluate with --split (e.g. --split training for a CT simulated into training)",
        )
        entries = [(prefix, e) for prefix, listed in found.items() for e in listed]
        if self.poses_per_case is not None:
            entries = [(p, e) for p, e in entries if int(e.get("pose", 0)) < self.poses_per_case]
        for prefix, e in entries:
            for bone, mesh in (e.get("meshes") or {}).items():
                if not (self.datasets[prefix] / mesh).is_file():
                    raise InputFileError(
                        self.datasets[prefix] / mesh,
                        f"listed in {self.datasets[prefix] / 'datalist.json'} (the {bone} mesh of "
                        f"{Path(e['image']).parent.name}) but missing",
                    )
        return entries

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, k):
        return self._entries[k]


class EvaluationRunner:
    """Evaluate the test split of ``dataset_dir`` into ``output_dir`` (see module doc).

    Args:
        dual_face: reconstructor of the dual-face network (its shape models complete both variants).
        single_face: reconstructor of the front-face-only network; skipped (with a note) when its checkpoint is missing.
        dataset_dir: simulator output with datalist.json, or a list of them evaluated together (samples and
            subjects named ``<folder name>.<name>``: :func:`dataset_folders`; a folder with no sample in
            ``split`` is noted and left out).
        output_dir: where metrics and plots go.
        split: datalist key evaluated.
        prior_centre_mm: fixed-geometry prior (mm), both networks; ``None``: from the training split of every
            data set (:func:`prior_centre_depth`, front faces only for the single-face network).
        oracle_inputs: use the true maps instead of the networks.
        error_map_max_mm: colour scale of the error map.
        surface_spacing_mm, max_samples: surface sampling of :func:`scripts.reconstruction.surface_metrics.surface_metrics`.
        poses_per_case: evaluate only poses ``0 .. poses_per_case - 1`` of each case (``None``: all; at least 1).
        workers: processes evaluating subjects (all poses of one subject in one process) and reading the
            training split for the prior in parallel; the numbers do not depend on it.

    A length that is no positive number or a count below 1 raises InputFileError naming its option (``--workers``)
    before any work.
    """

    def __init__(
        self,
        dual_face: Reconstructor,
        single_face: Reconstructor | None,
        dataset_dir: PathLike | Sequence[PathLike],
        output_dir: PathLike,
        split: str = "test",
        prior_centre_mm: float | None = None,
        oracle_inputs: bool = False,
        error_map_max_mm: float = 5.0,
        surface_spacing_mm: float = 1.0,
        max_samples: int = 20000,
        poses_per_case: int | None = None,
        workers: int = 1,
    ):
        self.dual_face, self.single_face = dual_face, single_face
        self.datasets, self.output_dir = dataset_folders(dataset_dir), as_path(output_dir, "output_dir")
        if not isinstance(split, str) or not split:
            raise InputFileError(
                "--split", f"expected the name of a datalist list (training, validation, test), got {split!r}"
            )
        self.samples = EvaluationSamples(self.datasets, split, poses_per_case)
        self.split, self.oracle_inputs = split, bool(oracle_inputs)
        self.prior_centre_mm = None if is_null(prior_centre_mm) else as_positive(prior_centre_mm, "prior_centre_mm")
        self.error_map_max_mm = as_positive(error_map_max_mm, "error_map_max_mm")
        self.metric_kwargs = {
            "spacing_mm": as_positive(surface_spacing_mm, "surface_spacing_mm"),
            "max_samples": as_count(max_samples, "surface_max_samples", 1),
        }
        self.workers = as_count(workers, "workers", 1)

    def _networks(self, notes: list[str]) -> dict[str, Reconstructor | None]:
        """Loaded reconstructors per network variant (None for oracle inputs); a missing single-face checkpoint is a note."""
        if self.oracle_inputs:
            self.dual_face.load(network=False)
            return {"single_face": None, "dual_face": None}
        nets: dict[str, Reconstructor | None] = {}
        if self.single_face is not None:
            ckpt = Path(self.single_face.ckpt_path or "")
            if ckpt.is_file():
                nets["single_face"] = self.single_face.load()
            else:
                notes.append(f"single_face: checkpoint {ckpt} not found; variant skipped")
                print(notes[-1], file=sys.stderr)
        nets["dual_face"] = self.dual_face.load()
        return nets

    def _predict(self, network: str, rec: Reconstructor | None, sample: Sample) -> DepthPrediction:
        if rec is None:
            return oracle_prediction(
                sample.depth, sample.mask, sample.geometry, faces=1 if network == "single_face" else 2
            )
        return rec.predict(sample.image, sample.geometry, sample.fov)

    def evaluate_entries(
        self,
        entries: Sequence[tuple[str, Mapping]],
        nets: Mapping[str, Reconstructor | None],
        prior: Mapping[int, float],
        done: Callable[[], None] | None = None,
    ) -> list[tuple[list[dict], dict, dict]]:
        """Rows, error-map candidate (:func:`evaluate_sample`) and stage seconds (load, predict, reconstruct,
        metrics) of each (name prefix of its data set, datalist entry), in order, calling ``done()`` as each is
        finished (progress); raises InputFileError."""
        out = []
        recs = {name: rec or self.dual_face for name, rec in nets.items()}  # oracle inputs: the dual-face settings
        for prefix, entry in entries:
            t0 = time.perf_counter()
            sample = load_sample(
                entry, self.datasets[prefix], None, self.dual_face.bones
            )  # truth at each network's size: evaluate_sample
            sample.name, sample.case = prefix + sample.name, prefix + sample.case
            t1 = time.perf_counter()
            preds = {name: self._predict(name, rec, sample) for name, rec in nets.items()}
            timings = {"load": t1 - t0, "predict": time.perf_counter() - t1}
            rows, shown = evaluate_sample(sample, preds, recs, prior, **self.metric_kwargs, timings=timings)
            out.append(
                (
                    rows,
                    (
                        {
                            **shown,
                            "sample": sample.name,
                            "geometry": sample.field or sample.geometry,
                            "extent_planes": sample.extent_planes,
                        }
                        if shown
                        else {}
                    ),
                    timings,
                )
            )
            if done is not None:
                done()
        return out

    def _subject_results(
        self, tasks: Sequence[tuple], nets: Mapping[str, Reconstructor | None], pool, done: Callable[[], None]
    ) -> Iterator[list | str]:
        """:meth:`evaluate_entries` of each task (subject, entries, prior) in order, in this process or (``pool``, a
        :class:`concurrent.futures.ProcessPoolExecutor`) in the workers; ``done()`` as each sample is finished: the
        workers report theirs on :data:`_WORKER`'s progress queue, read here while waiting for the next task (a
        subject's poses take minutes), and before a task's result is given, so that its samples are all counted by then
        (a worker reports each before it returns the task). A worker that dies (killed, e.g. for memory) raises
        InputFileError naming ``--workers`` and the subjects under way (a worker reports each as it starts it)."""
        if pool is None:
            for _, entries, prior in tasks:
                yield self.evaluate_entries(entries, nets, prior, done)
            return
        progress, started = _WORKER["progress"], set()

        def report() -> None:
            while not progress.empty():
                message = progress.get()
                if message is None:
                    done()
                else:
                    started.add(message)

        futures = [pool.submit(_evaluate_task, task) for task in tasks]
        for (subject, _, _), future in zip(tasks, futures, strict=True):
            while True:
                report()
                try:
                    result = future.result(timeout=PROGRESS_POLL_S)
                except concurrent.futures.TimeoutError:
                    continue
                except BrokenProcessPool:
                    report()
                    raise worker_died([t[0] for t in tasks if t[0] in started]) from None
                report()
                started.discard(subject)
                yield result
                break

    def run(self) -> dict:
        """Evaluate and write outputs; exits 1 with one line on bad input."""
        started = time.perf_counter()
        check_replaceable(
            self.output_dir, RESULT_KIND
        )  # models/ or a folder this bundle did not write as an evaluation: refused before any work
        notes: list[str] = []
        pool = None
        try:
            entries = list(self.samples)
            for prefix, folder in self.datasets.items():
                if prefix not in {p for p, _ in entries}:
                    notes.append(f"{folder}: no samples in its {self.split!r} list; not evaluated")
                    print(notes[-1], file=sys.stderr)
            nets = self._networks(notes)  # after the datalists: a bad one is told before the networks load
            given = self.prior_centre_mm
            if self.workers > 1:  # forked after loading: workers share the networks and shape models
                _WORKER.update(state=(self, nets), progress=multiprocessing.get_context("fork").SimpleQueue())
                others = set(multiprocessing.active_children())  # processes not the pool's (ended with it: finally)
                pool = worker_pool(self.workers)
            try:
                prior = (
                    {1: float(given), 2: float(given)}
                    if given is not None
                    else prior_centre_depth(
                        list(self.datasets.values()),
                        "training",
                        functools.partial(pool.map, chunksize=16) if pool else map,
                    )
                )
            except BrokenProcessPool:
                raise worker_died([]) from None
            # one task per subject (its poses share the true surfaces), results in datalist order
            groups: dict[str, list[int]] = {}
            for k, (prefix, entry) in enumerate(entries):
                groups.setdefault(prefix + str(entry.get("case", k)), []).append(k)
            tasks = [(subject, [entries[k] for k in ks], prior) for subject, ks in groups.items()]
            results: list = [None] * len(entries)
            with progress(total=len(entries), desc=f"evaluate ({self.split})", unit="sample") as bar:
                for ks, done in zip(
                    groups.values(),
                    self._subject_results(tasks, nets, pool, functools.partial(bar.update, 1)),
                    strict=True,
                ):  # the bar counts each sample as it is finished, not each subject
                    if isinstance(done, str):  # a worker's InputFileError line
                        print(done, file=sys.stderr)
                        raise SystemExit(1)
                    for k, result in zip(ks, done, strict=True):
                        results[k] = result
        except InputFileError as e:
            print(e, file=sys.stderr)
            raise SystemExit(1) from None
        finally:
            if pool is not None:  # its workers stopped, whatever they were doing (a failed run's go on for minutes)
                for worker in set(multiprocessing.active_children()) - others:
                    worker.terminate()
                pool.shutdown(cancel_futures=True)
                _WORKER.pop("progress").close()
                _WORKER.clear()
        rows = [row for sample_rows, _, _ in results for row in sample_rows]
        shown = next((s for _, s, _ in results if s), {})
        stages = {
            k: float(np.median([t.get(k, 0.0) for _, _, t in results]))
            for k in ("load", "predict", "reconstruct", "metrics")
        }
        means = summarise(rows)
        subjects = subject_summary(rows)
        result = {
            "split": self.split,
            "dataset_dirs": {prefix.removesuffix("."): str(folder) for prefix, folder in self.datasets.items()},
            "n_samples": len(entries),
            "prior_centre_mm": {"dual_face": prior[2], "single_face": prior[1]},
            "oracle_inputs": self.oracle_inputs,
            "variants": sorted({r["variant"] for r in rows}, key=VARIANTS.index),
            "shifts": list(SHIFTS),
            "units": {k: ("mm" if k.endswith("_mm") else "fraction") for k in METRIC_KEYS},
            "notes": notes,
            "timings_s": {"total": time.perf_counter() - started, "workers": self.workers, "per_sample_median": stages},
            "means": means,
            "subjects": subjects,
            "per_sample": rows,
        }
        self._write_outputs(result, prior, shown)
        return result

    def _write_outputs(self, result: dict, prior: Mapping[int, float], shown: Mapping) -> None:
        """``output_dir`` as one folder: metrics.json (``result``), metrics.csv, summary.md, assd_by_variant.png and the
        error map of the sample ``shown`` (:func:`evaluate_sample`'s completions and truth; none when empty)."""
        rows, means, subjects = result["per_sample"], result["means"], result["subjects"]
        with atomic_dir(self.output_dir, RESULT_KIND) as out:
            write_json(out / "metrics.json", result)
            write_csv(out / "metrics.csv", rows, means)
            with atomic_path(out / "summary.md") as tmp:
                tmp.write_text(
                    summary_markdown(
                        means, result["notes"], prior, result["n_samples"], self.oracle_inputs, subjects, self.split
                    )
                )
            bones = [b for b in dict.fromkeys(r["bone"] for r in means) if b != "all"]
            inputs = ", true maps as inputs (oracle)" if self.oracle_inputs else ""
            bars = metric_bars_figure(
                means,
                "assd_mm",
                SHIFTS,
                result["variants"],
                bones,
                "ASSD (mm)",
                f"ASSD per bone, mean and SD over {result['n_samples']} radiographs ({self.split} split{inputs})",
                SHIFT_TITLES,
            )
            save_figure(bars, out / "assd_by_variant.png")
            if shown:
                errors = {
                    b: vertex_errors(m, shown["truth"][b], shown["geometry"], shown["extent_planes"])
                    for b, m in shown["meshes"].items()
                    if b in shown["truth"]
                }
                meshes = {b: m for b, m in shown["meshes"].items() if b in errors}
                save_error_map(
                    out / f"error_map_{shown['sample']}.png",
                    meshes,
                    errors,
                    self.error_map_max_mm,
                    f"{shown['sample']}: {shown['variant']} (centre shift), distance to truth",
                )


# ---------------------------------------------------------------------- worker processes
_WORKER: dict = {}  # the runner and its loaded networks ("state") and the progress queue, set before the pool forks
PROGRESS_POLL_S = 0.5  # how often the parent reads the workers' progress while it waits for a subject


def worker_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """``workers`` processes forked from this one (sharing what it loaded, e.g. :data:`_WORKER`), one thread each,
    killed with it (:func:`_init_worker`). A worker that dies breaks the pool: its futures raise BrokenProcessPool
    (``multiprocessing.Pool`` replaced the worker and waited for ever for its task)."""
    return concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("fork"), initializer=_init_worker, initargs=(os.getpid(),)
    )


def _init_worker(parent_pid: int) -> None:
    """A pool worker: one thread (one process per core; also keeps OpenMP out of forked children), killed with its
    parent ``parent_pid`` (:func:`scripts.reconstruction.runner.die_with_parent`; else a killed evaluation's workers
    go on with their subjects)."""
    torch.set_num_threads(1)
    die_with_parent(parent_pid)


def worker_died(subjects: Sequence[str]) -> InputFileError:
    """The one line of an evaluation whose worker process died (the system kills one that takes too much memory)
    while evaluating one of ``subjects`` (none: reading the training split's depths for the prior)."""
    where = (
        f"subject {subjects[0]}"
        if len(subjects) == 1
        else f"one of subjects {', '.join(subjects)}" if subjects else "the training split's depths (the prior)"
    )
    return InputFileError(
        "--workers",
        f"a worker process died (killed, e.g. out of memory) while evaluating {where}; nothing was written: "
        "rerun with fewer --workers",
    )


def _evaluate_task(task: tuple) -> list | str:
    """:meth:`EvaluationRunner.evaluate_entries` of (subject, entries, prior) in a worker, reporting on the progress
    queue the subject as it starts and each finished sample (None); bad input comes back as its one line."""
    runner, nets = _WORKER["state"]
    subject, entries, prior = task
    progress = _WORKER["progress"]
    progress.put(subject)
    try:
        return runner.evaluate_entries(entries, nets, prior, functools.partial(progress.put, None))
    except InputFileError as e:
        return str(e)
