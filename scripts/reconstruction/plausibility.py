"""Plausibility of one prediction: does it look like the AP pelvis radiograph the model knows?

An input that is not an AP pelvis radiograph (noise, an inverted image, a chest film, a lateral
view) still gets masks and depths from the network; this scores what came out, from the masks'
shape and layout and the shape-model fits, so that such an answer carries a warning.

Checks (each passes or fails; thresholds are the ``plausibility`` keys of configs/inference.yaml):

- ``<bone> found``: the bone has a mask;
- ``<bone> one part``: its largest 8-connected mask part holds at least ``min_largest_component``
  of its mask pixels (real bones are one blob; masks on noise are scattered);
- ``<bone> width``: the left-right extent (mm, camera x) of the largest part's front-face points
  lies within ``width_mm[bone]``;
- ``<bone> shape-model fit``: the shape model's RMS residual is at most ``max_ssm_rms_mm``;
- ``<bone> size``: the isotropic scale of a similarity shape-model fit (1: the model's own size) lies within
  ``scale_range[bone]``: a wrong detector pitch or SID draws the bones too small or too large, and the warning
  then says to check them;
- ``femur_left side`` / ``femur_right side``: at least ``min_side_fraction`` of the femur's mask
  lies on its side of the pelvis centre column (image columns run toward the patient's left);
- ``pelvis above the femurs`` (centroid rows) and ``pelvis between the femurs`` (centroid columns);
- ``femurs apart at the knees``: the completed femur_left's distal end (the mean camera x, mm, of its
  :data:`DISTAL_FRACTION` most inferior vertices) lies to the patient's left of femur_right's: completions that
  cross below the image are no patient's.

A check that cannot be evaluated (its bone is missing) is not counted, except ``found``. The score
is the fraction of counted checks that pass; below ``min_score`` the prediction is implausible.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage
from scripts.config_flags import as_fraction, as_keywords, as_mapping, as_positive, as_range
from scripts.geometry import Geometry

DEFAULT_WIDTH_MM = {"pelvis": (80.0, 330.0), "femur_left": (15.0, 120.0), "femur_right": (15.0, 120.0)}
WARNING = (
    "implausible prediction (score {score:.2f} < {min_score:g}; failed: {failed}): the input may not be an "
    "AP pelvis radiograph; do not trust these surfaces"
)
DISTAL_FRACTION = 0.05  # of a completed femur's vertices, the most inferior (camera y): its distal end
SIZE_HINT = " ({bone} at {scale:.2f} x the shape model's size: check the pixel spacing and SID the image was read with)"


def thresholds(settings: Mapping | None, given: Sequence[str] = ()) -> dict:
    """The ``plausibility`` keys of configs/inference.yaml as :func:`plausibility`'s keyword arguments (less those its
    caller ``given`` itself), checked: ``min_score`` and the ``min_`` fractions from 0 to 1, ``max_ssm_rms_mm`` a
    positive length, ``width_mm`` and ``scale_range`` per bone two positive numbers (low, high); else InputFileError
    naming the option (``--plausibility#min_score``)."""
    out = as_keywords(settings, "plausibility", plausibility, given)
    for key, value in out.items():
        name = f"plausibility#{key}"
        if key.startswith("min_"):
            out[key] = as_fraction(value, name)
        elif key == "max_ssm_rms_mm":
            out[key] = as_positive(value, name)
        else:  # width_mm, scale_range: {bone: (low, high)}
            unit = "mm" if key.endswith("_mm") else "scale"
            out[key] = {bone: as_range(v, f"{name}#{bone}", unit) for bone, v in as_mapping(value, name).items()}
    return out


def largest_part(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask (H, W) (all False when empty)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def side_fractions(mask: np.ndarray, bones: Sequence[str], midline_u: float) -> dict[str, float]:
    """Per found bone of a mask (B, H, W) (channels named by ``bones``), the fraction of its pixels on its side of
    the image column ``midline_u`` (px): femur_left at larger u (image columns run toward the patient's left),
    femur_right at smaller u; any other bone (the pelvis spans both) the smaller of its two fractions (0.5: balanced).
    """
    out = {}
    for b, bone in enumerate(bones):
        u = np.nonzero(mask[b])[1]
        if u.size:
            left, right = float(np.mean(u > midline_u)), float(np.mean(u < midline_u))
            out[bone] = left if bone == "femur_left" else right if bone == "femur_right" else min(left, right)
    return out


def distal_x(vertices: np.ndarray) -> float:
    """The camera x (mm; toward the patient's left) of a femur's distal end: the mean over its
    :data:`DISTAL_FRACTION` most inferior vertices (largest camera y; rows run toward inferior)."""
    v = np.asarray(vertices, dtype=np.float64)
    y = v[:, 1]
    return float(v[y >= np.quantile(y, 1.0 - DISTAL_FRACTION), 0].mean())


def plausibility(
    mask: np.ndarray,
    depth: np.ndarray,
    geometry: Geometry,
    fit_rms_mm: Mapping[str, float] | None = None,
    min_score: float = 0.85,
    min_largest_component: float = 0.9,
    min_side_fraction: float = 0.9,
    max_ssm_rms_mm: float = 3.0,
    width_mm: Mapping[str, Sequence[float]] | None = None,
    similarity_scale: Mapping[str, float] | None = None,
    scale_range: Mapping[str, Sequence[float]] | None = None,
    completed: Mapping[str, np.ndarray] | None = None,
) -> dict:
    """Score a prediction; returns ``{"score", "min_score", "plausible", "checks": [{name, value, expected, ok}], "warning"}``.

    Args:
        mask: (B, H, W) bool, channels named by ``geometry.bones``.
        depth: (faces*B, H, W) absolute depth (mm), front face first per bone.
        geometry: the maps' geometry (camera frame, mm).
        fit_rms_mm: per bone shape-model RMS residual (mm); bones without a fit are not checked.
        min_score: the fraction of passed checks below which the prediction is implausible (a warning).
        min_largest_component, min_side_fraction, max_ssm_rms_mm, width_mm: the checks' thresholds (module docstring).
        similarity_scale: per bone isotropic scale of a similarity shape-model fit (``ShapeFit.similarity_scale``).
        scale_range: per bone (low, high) accepted scale; bones without a range or a scale are not checked.
        completed: per bone the shape-model completion's vertices (V, 3), camera frame (mm); the knee check needs both
            femurs.
    """
    mask = np.asarray(mask, bool)
    faces = depth.shape[0] // mask.shape[0]
    widths = {**DEFAULT_WIDTH_MM, **{k: tuple(v) for k, v in (width_mm or {}).items()}}
    fit_rms_mm = dict(fit_rms_mm or {})
    scales = {b: float(v) for b, v in (similarity_scale or {}).items() if v is not None and b in (scale_range or {})}
    checks: list[dict] = []
    off_size: list[str] = []  # bones whose size check failed (the warning adds a hint for them)

    def check(name: str, value: float, expected: str, ok: bool) -> None:
        checks.append({"name": name, "value": round(float(value), 3), "expected": expected, "ok": bool(ok)})

    centroid = {}
    for b, bone in enumerate(geometry.bones):
        m = mask[b]
        check(f"{bone} found", int(m.sum()), "> 0 mask pixels", m.any())
        if not m.any():
            continue
        v, u = np.nonzero(m)
        centroid[bone] = (float(u.mean()), float(v.mean()))
        main = largest_part(m)
        check(
            f"{bone} one part",
            main.sum() / m.sum(),
            f">= {min_largest_component:g} of the mask in its largest part",
            main.sum() / m.sum() >= min_largest_component,
        )
        if bone in widths:
            x = geometry.backproject(np.asarray(depth[faces * b], dtype=np.float64))[main][:, 0]
            lo, hi = widths[bone]
            check(f"{bone} width", np.ptp(x), f"{lo:g}..{hi:g} mm", lo <= np.ptp(x) <= hi)
        if bone in fit_rms_mm:
            check(
                f"{bone} shape-model fit",
                fit_rms_mm[bone],
                f"<= {max_ssm_rms_mm:g} mm RMS",
                fit_rms_mm[bone] <= max_ssm_rms_mm,
            )
        if bone in scales:
            lo, hi = scale_range[bone]
            check(f"{bone} size", scales[bone], f"{lo:g}..{hi:g} x the shape model", lo <= scales[bone] <= hi)
            if not checks[-1]["ok"]:
                off_size.append(bone)
    sides = side_fractions(
        mask, geometry.bones, centroid["pelvis"][0] if "pelvis" in centroid else geometry.principal_point_px[0]
    )
    for bone in ("femur_left", "femur_right"):
        if bone in sides:
            check(
                f"{bone} side",
                sides[bone],
                f">= {min_side_fraction:g} of the mask on the patient's {bone.split('_')[1]} of the pelvis centre",
                sides[bone] >= min_side_fraction,
            )
    if {"pelvis", "femur_left", "femur_right"} <= set(centroid):
        (pu, pv), (lu, lv), (ru, rv) = centroid["pelvis"], centroid["femur_left"], centroid["femur_right"]
        check(
            "pelvis above the femurs",
            min(lv, rv) - pv,
            "> 0 px (pelvis centroid row above both femurs')",
            pv < min(lv, rv),
        )
        check(
            "pelvis between the femurs",
            min(pu - ru, lu - pu),
            "> 0 px (pelvis centroid column between the femurs')",
            ru < pu < lu,
        )
    knees = {b: distal_x(v) for b, v in (completed or {}).items() if b in ("femur_left", "femur_right")}
    if len(knees) == 2:
        apart = knees["femur_left"] - knees["femur_right"]
        check(
            "femurs apart at the knees",
            apart,
            "> 0 mm (femur_left's distal end to the patient's left of femur_right's, camera x)",
            apart > 0,
        )
    score = float(np.mean([c["ok"] for c in checks])) if checks else 0.0
    failed = [c["name"] for c in checks if not c["ok"]]
    plausible = score >= min_score
    warning = None
    if not plausible:
        warning = WARNING.format(score=score, min_score=min_score, failed=", ".join(failed)) + "".join(
            SIZE_HINT.format(bone=b, scale=scales[b]) for b in off_size
        )
    return {
        "score": round(score, 4),
        "min_score": float(min_score),
        "plausible": plausible,
        "checks": checks,
        "warning": warning,
    }
