"""CT and bone-label volumes: reading (NIfTI/NRRD/MHA/DICOM series), grid and HU checks, label mapping, couch removal.

Every volume is returned as an array indexed ``[i, j, k]`` plus a 4x4 ``affine`` mapping voxel
indices to NIfTI RAS+ world coordinates (mm). SimpleITK reads NRRD/MHA/DICOM in the DICOM/ITK LPS
convention (:func:`read_volume` converts to RAS by negating the first two world axes), except
NIfTI, read with nibabel in its native RAS (SimpleITK zero-fills truncated NIfTI without error).

Label IDs after mapping: 0 background, 1 pelvis, 2 femur_left, 3 femur_right (``BONE_LABELS``).
Labels come as one multi-label volume (ids mapped by a label map) or as a TotalSegmentator output
folder of one binary mask per structure (``hip_left.nii.gz``, ``sacrum.nii.gz``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import SimpleITK as sitk  # noqa: N813
from scipy import ndimage
from scripts.geometry import BONES, LPS_TO_RAS, apply_transform, voxel_spacing
from scripts.io.files import InputFileError, PathLike, read_json, read_nifti_with_affine

BONE_LABELS: dict[str, int] = {bone: i + 1 for i, bone in enumerate(BONES)}
# lumbar vertebrae in phantom label maps: rendered in the radiograph, never reconstructed (not in any label map preset)
VERTEBRAE_LABEL = 4

# TotalSegmentator structures that make up the bundle's bones. The pelvis is both hip bones and the
# sacrum; v2 segments the first sacral vertebra apart from the rest of the sacrum (vertebrae_S1).
TOTALSEGMENTATOR_BONES: dict[str, str] = {
    "hip_left": "pelvis",
    "hip_right": "pelvis",
    "sacrum": "pelvis",
    "vertebrae_S1": "pelvis",
    "femur_left": "femur_left",
    "femur_right": "femur_right",
}
# Their class ids in TotalSegmentator's multi-label output of the ``total`` task, from its own class
# map: wasserth/TotalSegmentator, totalsegmentator/map_to_binary.py, ``class_map["total"]`` (v2)
# and ``class_map["total_v1"]`` (v1) (read at commit 0275d30; docs/simulation.md).
TOTALSEGMENTATOR_IDS: dict[str, dict[str, int]] = {
    "v2": {"sacrum": 25, "vertebrae_S1": 26, "femur_left": 75, "femur_right": 76, "hip_left": 77, "hip_right": 78},
    "v1": {"femur_left": 88, "femur_right": 89, "hip_left": 90, "hip_right": 91, "sacrum": 92},
}
# ``--label-map totalsegmentator``: v1 or v2 ids, told from the labels (:func:`totalsegmentator_version`).
TOTALSEGMENTATOR_AUTO = "totalsegmentator"
# TotalSegmentator preset name -> the id table it names (None: told from the labels). The only presets a folder takes.
TOTALSEGMENTATOR_PRESETS: dict[str, str | None] = {
    TOTALSEGMENTATOR_AUTO: None,
    **{f"totalsegmentator_{v}": v for v in TOTALSEGMENTATOR_IDS},
}
# Ids of the bundle's own label volumes (the phantoms'): background, the bones, lumbar vertebrae.
BUNDLE_LABEL_IDS = (0, *BONE_LABELS.values(), VERTEBRAE_LABEL)


def _totalsegmentator_map(version: str) -> dict[int, int]:
    return {i: BONE_LABELS[TOTALSEGMENTATOR_BONES[name]] for name, i in TOTALSEGMENTATOR_IDS[version].items()}


# Source label id -> bone label id.
LABEL_MAP_PRESETS: dict[str, dict[int, int]] = {
    "default": {1: 1, 2: 2, 3: 3},
    "totalsegmentator_v2": _totalsegmentator_map("v2"),
    "totalsegmentator_v1": _totalsegmentator_map("v1"),
}
LABEL_MAP_CHOICES = ("default", *TOTALSEGMENTATOR_PRESETS)


@dataclass
class Volume:
    """A voxel array ``[i, j, k]`` and its voxel-to-RAS-world affine (mm)."""

    array: np.ndarray
    affine: np.ndarray
    path: str = ""
    label_map: dict[int, int] | None = (
        None  # labels only: the source-id -> bone-id map they were read with (None: folder or bone ids)
    )

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along i, j, k in mm."""
        return voxel_spacing(self.affine)

    def corners_world(self) -> np.ndarray:
        """World (RAS mm) positions of the 8 corner voxel centres, (8, 3)."""
        n = np.asarray(self.array.shape[:3]) - 1
        idx = np.array([[a, b, c] for a in (0, n[0]) for b in (0, n[1]) for c in (0, n[2])], dtype=np.float64)
        return apply_transform(self.affine, idx)


def _series_files(folder: Path) -> list[str]:
    """The files of the one DICOM series in ``folder`` (a folder with several, e.g. a localizer beside the axial
    series or two reconstructions, is refused naming them: GDCM would silently read the first)."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM's "No Series were found" lines: the error below says it
    try:
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    if not series:
        raise InputFileError(folder, "folder holds no DICOM series")
    if len(series) > 1:
        listed = ", ".join(uid or "one without a series UID" for uid in series)
        raise InputFileError(folder, f"holds {len(series)} DICOM series ({listed}): give a folder holding one series")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))


def _read_sitk(path: Path) -> sitk.Image:
    if not path.exists():
        raise InputFileError(path, "file not found")
    files = _series_files(path) if path.is_dir() else None
    try:
        if files is not None:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        problem = str(e).strip().splitlines()
        raise InputFileError(
            path, f"unreadable or truncated image ({problem[-1] if problem else 'SimpleITK error'})"
        ) from None


def _read_nifti(path: Path, dtype: type) -> Volume:
    """NIfTI through nibabel (native RAS affine; SimpleITK silently zero-fills truncated files)."""
    array, affine = read_nifti_with_affine(path, dtype)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputFileError(path, f"expected a scalar 3D volume, got shape {array.shape}")
    return Volume(np.ascontiguousarray(array), affine, str(path))


def read_volume(path: PathLike, dtype: type = np.float32) -> Volume:
    """Read a NIfTI/NRRD/MHA file or DICOM series folder into a :class:`Volume` (RAS affine, mm)."""
    path = Path(path)
    if path.name.endswith((".nii", ".nii.gz")):
        vol = _read_nifti(path, dtype)
    else:
        img = _read_sitk(path)
        if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
            raise InputFileError(
                path,
                f"expected a scalar 3D volume, got {img.GetDimension()}D with {img.GetNumberOfComponentsPerPixel()} component(s)",
            )
        array = np.ascontiguousarray(sitk.GetArrayFromImage(img).transpose(2, 1, 0)).astype(dtype, copy=False)
        lps = np.eye(4)
        lps[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())
        lps[:3, 3] = img.GetOrigin()
        vol = Volume(array, LPS_TO_RAS @ lps, str(path))
    if np.issubdtype(vol.array.dtype, np.floating) and not np.isfinite(vol.array).all():
        raise InputFileError(path, "contains NaN or Inf values")
    return vol


def read_ct(path: PathLike, min_air_fraction: float = 0.005) -> Volume:
    """Read a CT in Hounsfield units; refuse NaNs and volumes that are not in HU.

    A CT in HU holds air near -1000 (outside the body, bowel gas). A volume with less than
    ``min_air_fraction`` of its voxels below -500 (e.g. raw unsigned detector values) is refused.
    """
    ct = read_volume(path, np.float32)
    if ct.array.size == 0:
        raise InputFileError(path, "empty volume")
    air = float(np.mean(ct.array < -500))
    if air < min_air_fraction:
        raise InputFileError(
            path,
            f"does not look like a CT in Hounsfield units: only {100 * air:.2f}% of voxels below -500 HU "
            f"(range {ct.array.min():.0f}..{ct.array.max():.0f}); rescale raw values to HU first",
        )
    return ct


LabelMapSpec = str | PathLike | Mapping | None


def load_label_map(spec: LabelMapSpec) -> dict[int, int] | str | None:
    """Source-label -> bone-label map from a JSON file or a dict; a preset's name; None (no map given).

    JSON/dict values may be bone label ids (1..3) or bone names (``"pelvis"``, ...). Preset names
    and None are returned as they are: they are checked against the labels when those are read
    (:func:`resolve_label_map`; a TotalSegmentator folder takes only None or a TotalSegmentator preset).
    """
    if spec is None or (not isinstance(spec, Mapping) and str(spec) in LABEL_MAP_CHOICES):
        return None if spec is None else str(spec)
    if isinstance(spec, Mapping):
        raw, source = spec, "label map"
    else:
        path = Path(spec)
        if not path.exists():
            raise InputFileError(path, f"label map is neither a file nor a preset ({', '.join(LABEL_MAP_CHOICES)})")
        raw, source = read_json(path), str(path)
    out = {}
    try:
        for k, v in dict(raw).items():
            target = BONE_LABELS[v] if isinstance(v, str) else int(v)
            if target not in BONE_LABELS.values():
                raise ValueError(f"target {v!r} is not a bone label")
            out[int(k)] = target
    except (KeyError, ValueError, TypeError) as e:
        raise InputFileError(source, f"bad label map entry ({e})") from None
    return out


def totalsegmentator_version(
    array: np.ndarray, affine: np.ndarray, path: PathLike, version: str | None = None, min_separation_mm: float = 30.0
) -> str:
    """``"v1"`` or ``"v2"``: which TotalSegmentator id table a multi-label volume uses.

    The two tables give the hip and femur ids to different structures (v2's hip ids 77/78 are v1's
    right ribs 8/9; v1's 90/91 are v2's brain and skull). A version fits when, for its hip or its
    femur ids, both sides are present and the left one lies at least ``min_separation_mm`` to the
    patient's left (RAS -x) of the right one. Without ``version`` exactly one must fit; with it (an
    explicit preset) that one must fit; else the file is refused, saying which fits, or, when none fits but a
    version's left ids lie that far to the patient's right, that left and right are swapped (a flipped grid).
    """
    ids = np.unique(array)
    fits, mirrored = [], []
    for v, table in TOTALSEGMENTATOR_IDS.items():
        for pair in (("hip_left", "hip_right"), ("femur_left", "femur_right")):
            left, right = table[pair[0]], table[pair[1]]
            if left in ids and right in ids:
                x = [apply_transform(affine, np.argwhere(array == i).mean(0))[0] for i in (left, right)]
                if x[0] < x[1] - min_separation_mm:
                    fits.append(v)
                    break
                if x[1] < x[0] - min_separation_mm and v not in mirrored:
                    mirrored.append(v)
    if version is None and len(fits) == 1:
        return fits[0]
    if version in fits:
        return version
    rule = f"its left hip or femur at least {min_separation_mm:g} mm to the patient's left of the right one"
    if not fits and mirrored:  # a version's ids lie on the wrong sides: no label map mends a flipped grid
        raise InputFileError(
            path,
            f"TotalSegmentator {mirrored[0]} hip or femur ids lie mirrored (left at least {min_separation_mm:g} mm to "
            "the patient's right, RAS +x, of right): left and right swapped (labels, or CT and labels, flipped "
            "without their affine?); fix the file's orientation",
        )
    if version is None:
        problem = f"cannot tell TotalSegmentator v1 from v2 class ids ({'both' if fits else 'neither'} fit: {rule})"
    else:
        problem = f"does not fit TotalSegmentator {version} class ids ({rule})" + (
            f" but fits {fits[0]}'s" if fits else ", nor the other version's"
        )
    remedy = " or ".join(f"--label-map totalsegmentator_{v}" for v in fits) or "a JSON label map of its ids"
    raise InputFileError(path, f"{problem}; pass {remedy}")


def resolve_label_map(
    spec: LabelMapSpec | dict[int, int], array: np.ndarray, affine: np.ndarray, path: PathLike
) -> dict[int, int]:
    """The source-id -> bone-id map for a multi-label volume: :func:`load_label_map`'s (a dict too, e.g. one read back from
    sample.json with string ids, is checked and given integer ids), with the presets checked against the labels.

    No map (or ``"default"``): the bundle's ids; a volume holding other ids (:data:`BUNDLE_LABEL_IDS`; e.g. a
    TotalSegmentator file, whose ids 1..3 are spleen and kidneys) is refused. A TotalSegmentator preset: the id
    table that fits the labels' hips or femurs (:func:`totalsegmentator_version`); an explicit version must fit.
    """
    spec = load_label_map(spec)
    if spec is None or spec == "default":
        if array.size and (array.min() < 0 or array.max() > max(BUNDLE_LABEL_IDS)):  # the ids are 0..4: a range
            unknown = np.setdiff1d(np.unique(array), BUNDLE_LABEL_IDS).tolist()
            listed = ", ".join(map(str, unknown[:8])) + (f", ... ({len(unknown)} ids)" if len(unknown) > 8 else "")
            raise InputFileError(
                path,
                f"holds label ids {listed} that the bundle's label map (0 background, "
                f"{', '.join(f'{i} {n}' for n, i in BONE_LABELS.items())}, "
                f"{VERTEBRAE_LABEL} vertebrae) does not know; TotalSegmentator labels: pass --label-map "
                "totalsegmentator (else a JSON label map of its ids)",
            )
        return dict(LABEL_MAP_PRESETS["default"])
    if isinstance(spec, str):
        version = totalsegmentator_version(array, affine, path, TOTALSEGMENTATOR_PRESETS[spec])
        return dict(LABEL_MAP_PRESETS[f"totalsegmentator_{version}"])
    return spec


def _read_structure_folder(folder: Path) -> Volume:
    """A TotalSegmentator output folder (one binary mask ``<structure>.nii[.gz]`` per structure) as bone labels on the masks' grid.

    Every structure of :data:`TOTALSEGMENTATOR_BONES` that both versions segment must have its file (an
    empty mask is fine: a bone outside the CT); a folder made with ``--roi_subset`` that lacks one would
    label that bone absent where the image shows it. v2's vertebrae_S1 is read when present.
    """
    files = {
        name: next((f for f in (folder / f"{name}.nii.gz", folder / f"{name}.nii") if f.exists()), None)
        for name in TOTALSEGMENTATOR_BONES
    }
    missing = [
        f"{name}.nii.gz"
        for name, f in files.items()
        if f is None and all(name in table for table in TOTALSEGMENTATOR_IDS.values())
    ]
    if missing:
        raise InputFileError(
            folder,
            f"label folder lacks {', '.join(missing)} (TotalSegmentator masks of the model's bones; a missing one would label "
            "its bone absent): run TotalSegmentator without --roi_subset or with these structures in it",
        )
    out: Volume | None = None
    for name, file in files.items():
        if file is None:
            continue
        mask = read_volume(file, np.float32)
        if out is None:
            out = Volume(np.zeros(mask.array.shape, np.int32), mask.affine, str(folder))
        elif mask.array.shape != out.array.shape or not np.allclose(mask.affine, out.affine, atol=1e-3):
            raise InputFileError(file, "mask is not on the grid of the folder's other masks")
        out.array[mask.array > 0.5] = BONE_LABELS[TOTALSEGMENTATOR_BONES[name]]
    return out


def read_labels(
    path: PathLike, ct: Volume | None, label_map: LabelMapSpec | dict[int, int] = None, atol_mm: float = 1e-3
) -> Volume:
    """Read bone labels (0 background, 1..3 bones) onto the CT grid (its own grid when ``ct`` is None).

    ``path`` is a multi-label volume, mapped with ``label_map`` (:func:`resolve_label_map`; the map
    used is kept in the result's ``label_map``), or a TotalSegmentator output folder of per-structure
    masks, read by file name (:data:`TOTALSEGMENTATOR_BONES`; ``label_map`` must be None or a
    TotalSegmentator preset: a map of ids cannot apply to it).
    Labels on another grid are resampled with nearest neighbour when they cover the CT's physical
    extent (corners within one voxel); otherwise they are refused, and so are femurs on the wrong sides
    (:func:`check_sides`).
    """
    path = Path(path)
    if path.is_dir():
        spec = load_label_map(label_map)
        if spec is not None and not (isinstance(spec, str) and spec in TOTALSEGMENTATOR_PRESETS):
            given = f"--label-map {spec}" if isinstance(spec, str) else "a label map of ids"
            raise InputFileError(
                path,
                "a TotalSegmentator folder is read by structure file names (hip_left.nii.gz, ...): "
                f"{given} does not apply; pass no --label-map (or totalsegmentator)",
            )
        lab, lut = _read_structure_folder(path), None
    else:
        lab = read_volume(path, np.float32)
        rounded = np.rint(lab.array)
        off = np.subtract(lab.array, rounded, out=lab.array)  # in place: one full-size temporary, not four
        if np.abs(off, out=off).max(initial=0.0) > 1e-3:
            raise InputFileError(path, "label volume holds non-integer values")
        lab.array = rounded.astype(np.int32)
        lut = resolve_label_map(label_map, lab.array, lab.affine, path)
    ct = ct if ct is not None else Volume(lab.array, lab.affine, lab.path)
    if lab.array.shape != ct.array.shape or not np.allclose(lab.affine, ct.affine, atol=atol_mm):
        tol = float(max(lab.spacing.max(), ct.spacing.max()))
        lab_lo, lab_hi = lab.corners_world().min(0), lab.corners_world().max(0)
        ct_lo, ct_hi = ct.corners_world().min(0), ct.corners_world().max(0)
        if np.abs(lab_lo - ct_lo).max() > tol or np.abs(lab_hi - ct_hi).max() > tol:
            raise InputFileError(
                path,
                f"labels cover {np.round(lab_lo, 1).tolist()}..{np.round(lab_hi, 1).tolist()} mm but the CT "
                f"{np.round(ct_lo, 1).tolist()}..{np.round(ct_hi, 1).tolist()} mm (RAS): not the same physical space",
            )
        idx = np.indices(ct.array.shape, dtype=np.float64).reshape(3, -1)
        to_lab = np.linalg.inv(lab.affine) @ ct.affine
        coords = to_lab[:3, :3] @ idx + to_lab[:3, 3:4]
        lab.array = ndimage.map_coordinates(lab.array, coords, order=0, mode="nearest").reshape(ct.array.shape)
    if lut is None:
        mapped = lab.array.astype(np.uint8)
    else:
        mapped = np.zeros(ct.array.shape, np.uint8)
        for src, dst in lut.items():
            mapped[lab.array == src] = dst
    check_sides(mapped, ct.affine, path)
    return Volume(mapped, ct.affine.copy(), str(path), lut)


def check_sides(labels: np.ndarray, affine: np.ndarray, path: PathLike) -> None:
    """Refuse bone labels whose femur_left centroid does not lie to the patient's left (RAS -x, world mm through
    ``affine``) of femur_right's, when both are present: left and right swapped (masks named from the viewer's side,
    a label map with the ids crossed) would teach the network each femur as the other (the heads lie ~170 mm apart)."""
    ids = [BONE_LABELS["femur_left"], BONE_LABELS["femur_right"]]
    centres = np.asarray(ndimage.center_of_mass(labels > 0, labels, ids), dtype=np.float64)
    if np.isnan(centres).any():
        return
    x_left, x_right = apply_transform(affine, centres)[:, 0]
    if x_left >= x_right:
        raise InputFileError(
            path,
            f"femur_left lies at RAS x {x_left:.0f} mm, to the patient's right of femur_right ({x_right:.0f} mm; the "
            "patient's left is RAS -x): left and right swapped (masks named from the viewer's side, a label map's ids "
            "crossed)?",
        )


def bones_center(labels: Volume, inferior_shift: float = 0.1) -> np.ndarray:
    """World (RAS mm) point that an AP hip radiograph centres on.

    The centre of the pelvis label's bounding box moved inferiorly by ``inferior_shift`` times the
    pelvis height (the clinical centring between the iliac crests and the symphysis, which keeps
    the proximal femurs in view); the centre of all bone labels when there is no pelvis label.
    """
    pelvis = np.argwhere(labels.array == BONE_LABELS["pelvis"])
    idx = pelvis if pelvis.size else np.argwhere(labels.array > 0)
    if idx.size == 0:
        raise InputFileError(labels.path, "no bone labels (1 pelvis, 2 femur_left, 3 femur_right) present")
    lo, hi = idx.min(0), idx.max(0)
    centre = apply_transform(labels.affine, (lo + hi) / 2.0)
    if pelvis.size:
        corners = apply_transform(
            labels.affine, np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        )
        centre[2] -= inferior_shift * (corners[:, 2].max() - corners[:, 2].min())
    return centre


def crop_along(
    volume: Volume, world_axis: int, low_mm: float = -np.inf, high_mm: float = np.inf, max_tilt: float = 1e-3
) -> Volume | None:
    """The volume without its slices across RAS axis ``world_axis`` (0 x, 1 y, 2 z) whose centres lie
    outside [``low_mm``, ``high_mm``] (a CT that ends there), the affine moved with the first kept slice.

    None when no voxel axis runs along that world axis (within ``max_tilt``, as a fraction of its step)
    or no slice would be kept.
    """
    a = volume.affine[:3, :3]
    axis = int(np.argmax(np.abs(a[world_axis])))
    if np.abs(np.delete(a[world_axis], axis)).max() > max_tilt * abs(a[world_axis, axis]):
        return None
    w = a[world_axis, axis] * np.arange(volume.array.shape[axis]) + volume.affine[world_axis, 3]
    kept = np.flatnonzero((w >= low_mm) & (w <= high_mm))
    if kept.size == 0:
        return None
    lo, hi = int(kept.min()), int(kept.max()) + 1
    index = [slice(None)] * volume.array.ndim
    index[axis] = slice(lo, hi)
    affine = volume.affine.copy()
    affine[:3, 3] += a[:, axis] * lo
    return Volume(volume.array[tuple(index)], affine, volume.path, volume.label_map)


def remove_couch(
    ct: Volume, body_hu: float = -500.0, opening_mm: float = 6.0, grid_mm: float = 3.0
) -> tuple[Volume, int]:
    """The CT with what lies outside the patient (the CT couch, its rails and pads) set to air (-1000 HU).

    On a grid of about ``grid_mm`` (blocks of voxels, any voxel above ``body_hu`` marks its block),
    the body mask is opened with a ball of radius ``opening_mm``: plates and rails thinner than about
    twice that come loose from the patient, whose largest connected component is kept, with the holes
    of each axial slice filled (bowel gas). Loose pieces that reach farther than ``opening_mm`` from
    it are the couch (its voxels above ``body_hu`` become air); skin corners the ball rounded off stay.
    A couch top touching the skin with nothing (no pad: air in HU) between stays where it touches.
    Returns (CT, voxels set to air); the input is not modified. The simulator's table model
    (:func:`scripts.data.simulate.table_shift_mm`) needs the couch gone: it lays the last body voxel behind the hips on
    the radiography table.
    """
    body = ct.array > body_hu
    factor = np.maximum(1, np.round(grid_mm / ct.spacing)).astype(int)
    padded = np.pad(body, [(0, (-n) % f) for n, f in zip(body.shape, factor, strict=True)])
    coarse = padded.reshape(
        padded.shape[0] // factor[0],
        factor[0],
        padded.shape[1] // factor[1],
        factor[1],
        padded.shape[2] // factor[2],
        factor[2],
    ).any(axis=(1, 3, 5))
    radius = np.maximum(1, np.round(opening_mm / (ct.spacing * factor))).astype(int)
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    ball = sum((g / r) ** 2 for g, r in zip(grid, radius, strict=True)) <= 1.0
    edge = [(r, r) for r in radius]  # a body cut by the CT's field continues beyond it
    opened = ndimage.binary_opening(np.pad(coarse, edge, mode="edge"), ball)[tuple(slice(r, -r) for r in radius)]
    components, n = ndimage.label(opened)
    if n == 0:
        return ct, 0
    sizes = ndimage.sum_labels(np.ones(components.shape, np.int32), components, index=np.arange(1, n + 1))
    keep = components == 1 + int(np.argmax(sizes))
    axial = int(np.argmax(np.abs(ct.affine[2, :3])))  # the voxel axis nearest to superior-inferior
    keep = ndimage.binary_fill_holes(
        keep, _in_slice_structure(axial)
    )  # bowel gas and the tissue between its pockets stay body
    # what the opening took off is couch only where a loose piece reaches beyond the opening radius
    # from the patient: skin corners and thin folds the ball rounded off stay
    pieces, _ = ndimage.label(coarse & ~keep)
    far = ndimage.distance_transform_edt(~keep, sampling=ct.spacing * factor) > opening_mm
    couch_blocks = np.isin(pieces, np.unique(pieces[far & (pieces > 0)]))
    if not couch_blocks.any():
        return ct, 0
    couch = (
        body
        & np.repeat(np.repeat(np.repeat(couch_blocks, factor[0], 0), factor[1], 1), factor[2], 2)[
            : body.shape[0], : body.shape[1], : body.shape[2]
        ]
    )
    removed = int(couch.sum())
    if removed == 0:
        return ct, 0
    array = ct.array.copy()
    array[couch] = -1000.0
    return Volume(array, ct.affine, ct.path), removed


def _in_slice_structure(axis: int) -> np.ndarray:
    """3x3x3 face connectivity within the slices normal to voxel ``axis`` (no link across slices)."""
    structure = ndimage.generate_binary_structure(3, 1)
    for k in (0, 2):
        index = [1, 1, 1]
        index[axis] = k
        structure[tuple(index)] = False
    return structure
