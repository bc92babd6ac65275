"""CT and bone-label volumes: reading (NIfTI/NRRD/MHA/DICOM series), grid and HU checks, label mapping.

Every volume is returned as an array indexed ``[i, j, k]`` plus a 4x4 ``affine`` mapping voxel
indices to NIfTI RAS+ world coordinates (mm). SimpleITK reads NRRD/MHA/DICOM in the DICOM/ITK LPS
convention (:func:`read_volume` converts to RAS by negating the first two world axes), except
NIfTI, read with nibabel in its native RAS (SimpleITK zero-fills truncated NIfTI without error).

Label IDs after mapping: 0 background, 1 pelvis, 2 femur_left, 3 femur_right (``BONE_LABELS``).

CLI (approximate bone labels for an unlabeled CT, see :func:`threshold_labels`)::

    python -m scripts.volumes threshold --ct CT --out LABELS.nii.gz [--threshold-hu 200]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from scripts.files import InputFileError, PathLike, atomic_path, exits_on_input_error, read_json, read_nifti_with_affine
from scripts.geometry import BONES


BONE_LABELS: dict[str, int] = {bone: i + 1 for i, bone in enumerate(BONES)}
VERTEBRAE_LABEL = 4  # lumbar vertebrae in phantom label maps: rendered in the radiograph, never reconstructed (not in any label map preset)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# Source label id -> bone label id. TotalSegmentator class ids from its ``map_to_binary.class_map``:
# v2 "total": sacrum 25, femur_left 75, femur_right 76, hip_left 77, hip_right 78;
# v1 "total_v1": femur_left 88, femur_right 89, hip_left 90, hip_right 91, sacrum 92.
LABEL_MAP_PRESETS: dict[str, dict[int, int]] = {
    "default": {1: 1, 2: 2, 3: 3},
    "totalsegmentator": {25: 1, 77: 1, 78: 1, 75: 2, 76: 3},
    "totalsegmentator_v1": {92: 1, 90: 1, 91: 1, 88: 2, 89: 3},
}


@dataclass
class Volume:
    """A voxel array ``[i, j, k]`` and its voxel-to-RAS-world affine (mm)."""

    array: np.ndarray
    affine: np.ndarray
    path: str = ""

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along i, j, k in mm."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def corners_world(self) -> np.ndarray:
        """World (RAS mm) positions of the 8 corner voxel centres, (8, 3)."""
        n = np.asarray(self.array.shape[:3]) - 1
        idx = np.array([[a, b, c] for a in (0, n[0]) for b in (0, n[1]) for c in (0, n[2])], dtype=np.float64)
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]


def _read_sitk(path: Path) -> sitk.Image:
    if not path.exists():
        raise InputFileError(path, "file not found")
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            files = reader.GetGDCMSeriesFileNames(str(path))
            if not files:
                raise InputFileError(path, "folder holds no DICOM series")
            reader.SetFileNames(files)
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        problem = str(e).strip().splitlines()
        raise InputFileError(path, f"unreadable or truncated image ({problem[-1] if problem else 'SimpleITK error'})") from None


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
            raise InputFileError(path, f"expected a scalar 3D volume, got {img.GetDimension()}D with {img.GetNumberOfComponentsPerPixel()} component(s)")
        array = np.ascontiguousarray(sitk.GetArrayFromImage(img).transpose(2, 1, 0)).astype(dtype, copy=False)
        lps = np.eye(4)
        lps[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())
        lps[:3, 3] = img.GetOrigin()
        vol = Volume(array, LPS_TO_RAS @ lps, str(path))
    if np.issubdtype(vol.array.dtype, np.floating) and not np.isfinite(vol.array).all():
        raise InputFileError(path, "contains NaN or Inf values")
    return vol


def write_volume(path: PathLike, array: np.ndarray, affine: np.ndarray) -> None:
    """Write ``array[i, j, k]`` with a RAS affine atomically in the format given by the suffix (SimpleITK)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing(spacing.tolist())
    img.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), True)


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


def load_label_map(spec: str | PathLike | Mapping | None) -> dict[int, int]:
    """Source-label -> bone-label map from a preset name, a JSON file or a dict.

    JSON/dict values may be bone label ids (1..3) or bone names (``"pelvis"``, ...).
    """
    if spec is None:
        return dict(LABEL_MAP_PRESETS["default"])
    if isinstance(spec, Mapping):
        raw, source = spec, "label map"
    elif str(spec) in LABEL_MAP_PRESETS:
        return dict(LABEL_MAP_PRESETS[str(spec)])
    else:
        path = Path(spec)
        if not path.exists():
            raise InputFileError(path, f"label map is neither a file nor a preset ({', '.join(LABEL_MAP_PRESETS)})")
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


def read_labels(path: PathLike, ct: Volume, label_map: Mapping[int, int] | None = None, atol_mm: float = 1e-3) -> Volume:
    """Read a label volume onto the CT grid and map it to bone labels (0 background, 1..3 bones).

    Labels on another grid are resampled with nearest neighbour when they cover the CT's physical
    extent (corners within one voxel); otherwise they are refused.
    """
    path = Path(path)
    lab = read_volume(path, np.float32)
    rounded = np.rint(lab.array)
    off = np.subtract(lab.array, rounded, out=lab.array)  # in place: one full-size temporary, not four
    if np.abs(off, out=off).max(initial=0.0) > 1e-3:
        raise InputFileError(path, "label volume holds non-integer values")
    lab.array = rounded.astype(np.int32)
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
    lut = label_map if label_map is not None else LABEL_MAP_PRESETS["default"]
    mapped = np.zeros(ct.array.shape, np.uint8)
    for src, dst in lut.items():
        mapped[lab.array == src] = dst
    return Volume(mapped, ct.affine.copy(), str(path))


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
    to_world = lambda ijk: labels.affine[:3, :3] @ ijk + labels.affine[:3, 3]  # noqa: E731
    centre = to_world((lo + hi) / 2.0)
    if pelvis.size:
        corners = np.array([to_world(np.array([a, b, c])) for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        centre[2] -= inferior_shift * (corners[:, 2].max() - corners[:, 2].min())
    return centre


def threshold_labels(ct: Volume, threshold_hu: float = 200.0, min_component_ml: float = 2.0) -> np.ndarray:
    """Approximate pelvis/femur labels of an unlabeled CT by threshold, connected components and side.

    Steps (RAS: +x patient right, +z superior): bone = HU > ``threshold_hu``, closed and hole-filled,
    components under ``min_component_ml`` dropped. Femurs: on each side of the body's mid-sagittal
    line the 2D bone blob of the most inferior slice is followed upward slice by slice while the
    overlapping blob does not suddenly grow (it merges with the acetabulum at the femoral head).
    Pelvis: the largest remaining component crossing the mid-sagittal line, without the slices
    superior to the iliac crests that are narrower than 60% of the widest pelvis slice (spine).
    Approximate by design (fails e.g. when the CT ends above the lesser trochanters): inspect it.
    """
    bone = ndimage.binary_fill_holes(ndimage.binary_closing(ct.array > threshold_hu, iterations=1))
    comp, n = ndimage.label(bone)
    voxel_ml = float(np.prod(ct.spacing)) / 1000.0
    sizes = ndimage.sum_labels(np.ones_like(comp), comp, index=np.arange(1, n + 1)) * voxel_ml
    bone = np.isin(comp, 1 + np.flatnonzero(sizes >= min_component_ml))
    out = np.zeros(bone.shape, np.uint8)
    if not bone.any():
        return out
    ras = _index_to_ras_axes(ct)
    bone_ras = _to_ras_view(bone, ras)
    out_ras = _to_ras_view(out, ras)
    body = _to_ras_view(ct.array > -300, ras)
    mid_x = float(np.median(np.nonzero(body.any(axis=(1, 2)))[0])) if body.any() else bone_ras.shape[0] / 2
    x_is_right = ras["sign"][0] > 0
    for side_right in (False, True):
        half = np.zeros(bone_ras.shape[0], bool)
        on_high_x = side_right == x_is_right
        half[int(mid_x) + 1 :] = on_high_x
        half[: int(mid_x)] = not on_high_x
        side_mask = bone_ras & half[:, None, None]
        _grow_femur(side_mask, out_ras, BONE_LABELS["femur_right" if side_right else "femur_left"], ras["sign"][2] > 0)
    rest, n = ndimage.label(bone_ras & (out_ras == 0))
    if n:
        x_ranges = ndimage.find_objects(rest)
        crossing = [c + 1 for c, sl in enumerate(x_ranges) if sl[0].start < mid_x < sl[0].stop]
        if crossing:
            largest = max(crossing, key=lambda c: int((rest == c).sum()))
            out_ras[rest == largest] = BONE_LABELS["pelvis"]
            _trim_spine(out_ras, ras["sign"][2] > 0)
    return out


def _index_to_ras_axes(ct: Volume) -> dict:
    """Which voxel axis runs along each RAS axis (nearest), and in which direction."""
    m = ct.affine[:3, :3]
    order = [int(np.argmax(np.abs(m[r]))) for r in range(3)]
    if sorted(order) != [0, 1, 2]:
        raise InputFileError(ct.path, "oblique CT orientation is not supported by the threshold labeller")
    return {"order": order, "sign": [float(np.sign(m[r, order[r]])) for r in range(3)]}


def _to_ras_view(a: np.ndarray, ras: dict) -> np.ndarray:
    """View of ``a`` with axes ordered (x, y, z) of RAS (voxel directions as stored)."""
    return a.transpose(ras["order"])


def _grow_femur(side_mask: np.ndarray, out: np.ndarray, label: int, z_up: bool, max_growth: float = 1.8) -> None:
    """Follow one femur's 2D blob from the most inferior slice upward (in place on ``out``)."""
    zs = range(side_mask.shape[2]) if z_up else range(side_mask.shape[2] - 1, -1, -1)
    prev = None
    for z in zs:
        blobs, n = ndimage.label(side_mask[:, :, z])
        if n == 0:
            if prev is not None:
                return
            continue
        if prev is None:
            areas = ndimage.sum_labels(np.ones_like(blobs), blobs, index=np.arange(1, n + 1))
            cur = blobs == 1 + int(np.argmax(areas))
        else:
            hit = np.unique(blobs[prev & (blobs > 0)])
            if hit.size == 0:
                return
            cur = np.isin(blobs, hit)
            if cur.sum() > max_growth * max(prev.sum(), 1):
                return
        out[:, :, z][cur] = label
        prev = cur


def _trim_spine(labels: np.ndarray, z_up: bool) -> None:
    """Drop pelvis voxels above the iliac crests (narrow slices superior to the widest), in place; RAS view."""
    pel = labels == BONE_LABELS["pelvis"]
    xs = [np.nonzero(pel[:, :, z].any(1))[0] for z in range(pel.shape[2])]
    width = np.array([np.ptp(x) if x.size else 0 for x in xs], dtype=float)
    order = np.arange(pel.shape[2]) if z_up else np.arange(pel.shape[2])[::-1]
    widest = int(np.argmax(width[order]))
    above = order[widest + 1 :]
    narrow = above[width[above] < 0.6 * width.max()]
    if narrow.size:
        cut = int(np.nonzero(np.isin(order, narrow))[0].min())
        for z in order[cut:]:
            labels[:, :, z][pel[:, :, z]] = 0


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    """CLI (``threshold``); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m scripts.volumes", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    th = sub.add_parser("threshold", help="approximate bone labels of an unlabeled CT (threshold + components)")
    th.add_argument("--ct", required=True, help="CT file or DICOM series folder (HU)")
    th.add_argument("--out", required=True, help="output label NIfTI (1 pelvis, 2 femur_left, 3 femur_right)")
    th.add_argument("--threshold-hu", type=float, default=200.0)
    args = parser.parse_args(argv)
    ct = read_ct(args.ct)
    labels = threshold_labels(ct, args.threshold_hu)
    write_volume(args.out, labels.astype(np.uint8), ct.affine)
    counts = {bone: int((labels == i).sum()) for bone, i in BONE_LABELS.items()}
    print(f"wrote {args.out}: voxels per bone {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
