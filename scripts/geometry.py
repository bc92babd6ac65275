"""Radiography geometry: the one module that knows how pixels, rays and poses relate.

Frames (docs/architecture.md, "Geometry conventions"):

- camera frame, mm: origin at the X-ray focal spot, +z along the central ray toward the detector,
  +x along image columns (u), +y along image rows (v, downward); right-handed;
- detector plane z = SID; the centre of pixel (u, v) sits at ((u - cu) * su, (v - cv) * sv, SID);
- depth d(u, v): Euclidean distance (mm) from the source to a point along that pixel's ray;
- world frame: NIfTI RAS+ (mm). ``world_to_camera`` is a 4x4 homogeneous matrix.

Images and depth maps are indexed ``[..., v, u]`` (row, column). Angles are in degrees where the
argument name says ``_deg``, otherwise radians.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence, TypeVar

import numpy as np
import torch
from scripts import BUNDLE_ROOT
from scripts.io.files import InputFileError, PathLike, read_json, write_json

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)

STANDARD_GEOMETRY_FILE = BUNDLE_ROOT / "configs" / "geometry.json"
BONES: tuple[str, ...] = ("pelvis", "femur_left", "femur_right")
GEOMETRY_KEYS = ("sid_mm", "pixel_spacing_mm", "image_size", "principal_point_px", "world_to_camera", "bones")

# Rows are the camera axes expressed in RAS world coordinates: x_cam -> patient left,
# y_cam -> inferior, z_cam -> posterior (source anterior, detector posterior).
STANDARD_AP_ROTATION = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]])
# DICOM/ITK patient coordinates (LPS: +x patient left, +y posterior, +z superior) to NIfTI RAS+, homogeneous 4x4
# (its own inverse)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
LPS_TO_RAS.setflags(write=False)

# What radiography rooms use (docs/real_radiographs.md, "Geometry bounds"): geometry files and the
# geometry of every input radiograph must lie inside these, or the input is refused.
SID_RANGE_MM = (700.0, 2000.0)  # table/Bucky 1000-1200, mobile ~1000, chest stand 1800
PIXEL_PITCH_RANGE_MM = (0.025, 10.0)  # detectors 0.1-0.2; coarser only for downsampled exports
DETECTOR_FIELD_RANGE_MM = (50.0, 1500.0)  # pitch x pixels per side: cassettes 180-430, stitched long-length up to ~1300
IMAGE_SIZE_RANGE_PX = (64, 8000)  # per side
MAGNIFICATION_RANGE = (1.0, 2.0)  # SID / source-to-object distance


class GeometryError(ValueError):
    """Raised when a geometry description is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class Geometry:
    """Fixed cone-beam radiography geometry.

    Args:
        sid_mm: source-to-image (detector) distance, mm.
        pixel_spacing_mm: (su, sv) pixel pitch at the detector, mm.
        image_size: (W, H) in pixels.
        principal_point_px: (cu, cv), where the central ray meets the detector, in pixel indices
            (pixel centres at integers); ``None`` means the image centre ((W - 1) / 2, (H - 1) / 2).
        world_to_camera: 4x4 RAS-world-mm to camera-mm transform; identity when unknown.
        bones: names of the bone channels, in channel order.
    """

    sid_mm: float
    pixel_spacing_mm: tuple[float, float]
    image_size: tuple[int, int]
    principal_point_px: tuple[float, float] | None = None
    world_to_camera: tuple[tuple[float, ...], ...] = field(default_factory=lambda: tuple(map(tuple, np.eye(4))))
    bones: tuple[str, ...] = BONES

    def __post_init__(self) -> None:
        _check_numbers("sid_mm", self.sid_mm)
        _check_numbers("pixel_spacing_mm", self.pixel_spacing_mm)
        _check_numbers("image_size", self.image_size, integer=True)
        if self.principal_point_px is not None:
            _check_numbers("principal_point_px", self.principal_point_px)
        object.__setattr__(self, "pixel_spacing_mm", tuple(float(s) for s in self.pixel_spacing_mm))
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        if self.principal_point_px is None:
            w, h = self.image_size
            object.__setattr__(self, "principal_point_px", ((w - 1) / 2.0, (h - 1) / 2.0))
        object.__setattr__(self, "principal_point_px", tuple(float(c) for c in self.principal_point_px))
        object.__setattr__(
            self, "world_to_camera", tuple(tuple(float(x) for x in row) for row in np.asarray(self.world_to_camera))
        )
        object.__setattr__(self, "bones", tuple(self.bones))
        object.__setattr__(self, "sid_mm", float(self.sid_mm))
        if not (math.isfinite(self.sid_mm) and self.sid_mm > 0):
            raise GeometryError(f"sid_mm must be a positive finite number, got {self.sid_mm}")
        if len(self.pixel_spacing_mm) != 2 or not all(math.isfinite(s) and s > 0 for s in self.pixel_spacing_mm):
            raise GeometryError(f"pixel_spacing_mm must be two positive numbers, got {self.pixel_spacing_mm}")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise GeometryError(f"image_size must be two positive integers (W, H), got {self.image_size}")
        if len(self.principal_point_px) != 2 or not all(math.isfinite(c) for c in self.principal_point_px):
            raise GeometryError(f"principal_point_px must be two finite numbers, got {self.principal_point_px}")
        if np.asarray(self.world_to_camera).shape != (4, 4):
            raise GeometryError("world_to_camera must be a 4x4 matrix")

    # ------------------------------------------------------------------ construction and I/O
    @property
    def width(self) -> int:
        """Image width W (pixels, along u)."""
        return self.image_size[0]

    @property
    def height(self) -> int:
        """Image height H (pixels, along v)."""
        return self.image_size[1]

    @property
    def matrix(self) -> np.ndarray:
        """world_to_camera as a (4, 4) float64 array."""
        return np.asarray(self.world_to_camera, dtype=np.float64)

    @property
    def image_affine(self) -> np.ndarray:
        """NIfTI affine (4, 4) of the 2D image, depth and mask files (arrays indexed ``[v, u]``): ``diag(sv, su, 1, 1)``."""
        su, sv = self.pixel_spacing_mm
        return np.diag([sv, su, 1.0, 1.0])

    def with_pose(self, world_to_camera: np.ndarray) -> "Geometry":
        """The same detector with another 4x4 world(RAS mm)-to-camera(mm) transform."""
        return replace(self, world_to_camera=tuple(map(tuple, np.asarray(world_to_camera, dtype=np.float64))))

    def to_dict(self) -> dict:
        """JSON-able dict with the keys of ``GEOMETRY_KEYS`` (lengths mm, sizes and principal point in pixels)."""
        d = asdict(self)
        d["pixel_spacing_mm"] = list(self.pixel_spacing_mm)
        d["image_size"] = list(self.image_size)
        d["principal_point_px"] = list(self.principal_point_px)
        d["world_to_camera"] = [list(r) for r in self.world_to_camera]
        d["bones"] = list(self.bones)
        return {k: d[k] for k in GEOMETRY_KEYS}

    @classmethod
    def from_dict(cls, d: dict, source: str = "geometry", check_range: bool = False) -> "Geometry":
        """Build from a dict; ``world_to_camera`` and ``bones`` are optional, the rest required.

        ``bones``, when given, must name at least one channel, each once. ``check_range``: also
        refuse values outside what radiography rooms use (:meth:`check_radiography_range`).
        """
        missing = [k for k in ("sid_mm", "pixel_spacing_mm", "image_size") if k not in d]
        if missing:
            raise GeometryError(f"{source}: missing geometry key(s) {missing}")
        kwargs = {k: d[k] for k in GEOMETRY_KEYS if k in d and d[k] is not None}
        bones = kwargs.get("bones", BONES)
        if (
            isinstance(bones, str)
            or not isinstance(bones, (list, tuple))
            or not all(isinstance(b, str) and b for b in bones)
        ):
            raise GeometryError(f"{source}: bones must be a list of bone names (channel order), got {bones!r}")
        if not bones:
            raise GeometryError(
                f"{source}: bones is empty; it must name the bone channels in order, e.g. {list(BONES)}"
            )
        if len(set(bones)) != len(bones):
            raise GeometryError(f"{source}: bones names a channel twice: {list(bones)}")
        try:
            geometry = cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise GeometryError(f"{source}: {e}") from e
        if check_range:
            try:
                geometry.check_radiography_range()
            except GeometryError as e:
                raise GeometryError(f"{source}: {e}") from None
        return geometry

    def check_radiography_range(self) -> "Geometry":
        """Raise :class:`GeometryError` unless SID, pitch, detector field, size and principal point lie
        within what radiography rooms use (``SID_RANGE_MM`` ... ``IMAGE_SIZE_RANGE_PX``); returns self."""
        w, h = self.image_size
        check_room_range("sid_mm", [self.sid_mm], SID_RANGE_MM, "mm")
        check_room_range("pixel_spacing_mm", self.pixel_spacing_mm, PIXEL_PITCH_RANGE_MM, "mm")
        check_room_range("image_size", self.image_size, IMAGE_SIZE_RANGE_PX, "px")
        field_mm = [s * n for s, n in zip(self.pixel_spacing_mm, self.image_size, strict=True)]
        check_room_range("detector field (pixel_spacing_mm x image_size)", field_mm, DETECTOR_FIELD_RANGE_MM, "mm")
        cu, cv = self.principal_point_px
        if not (-0.5 <= cu <= w - 0.5 and -0.5 <= cv <= h - 0.5):
            raise GeometryError(
                f"principal_point_px {[round(cu, 3), round(cv, 3)]} lies off the {w}x{h} px detector (the central ray must meet it)"
            )
        return self

    @classmethod
    def load(cls, path: PathLike, check_range: bool = False) -> "Geometry":
        """Read a geometry JSON; raises :class:`GeometryError` (message starting with the path) when missing or invalid,
        or (``check_range``) outside what radiography rooms use (:meth:`check_radiography_range`)."""
        path = Path(path)
        return cls.from_dict(_geometry_json(path), source=str(path), check_range=check_range)

    def save(self, path: PathLike) -> None:
        """Write geometry.json atomically (temporary name, then rename)."""
        write_json(path, self.to_dict())

    @classmethod
    def standard(cls, path: PathLike | None = None, check_range: bool = False, **overrides) -> "Geometry":
        """The standard geometry from configs/geometry.json (or ``path``), with optional overrides (``check_range`` as
        :meth:`load`).

        Raises:
            InputFileError: the file is missing or not JSON; GeometryError: invalid values.
        """
        d = read_json(path or STANDARD_GEOMETRY_FILE)  # missing or not JSON: InputFileError naming the file
        if not isinstance(d, dict):
            raise InputFileError(
                path or STANDARD_GEOMETRY_FILE, f"not a geometry (a JSON object with keys {list(GEOMETRY_KEYS)})"
            )
        d.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(d, source=str(path or STANDARD_GEOMETRY_FILE), check_range=check_range)

    # ------------------------------------------------------------------ rays
    def pixel_grid(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, v) pixel index grids, each (H, W)."""
        v, u = torch.meshgrid(
            torch.arange(self.height, device=device, dtype=dtype),
            torch.arange(self.width, device=device, dtype=dtype),
            indexing="ij",
        )
        return u, v

    def detector_points(self, u: ArrayLike, v: ArrayLike) -> ArrayLike:
        """Camera-frame position (mm) on the detector of (possibly fractional) pixel (u, v), shape (..., 3)."""
        cu, cv = self.principal_point_px
        su, sv = self.pixel_spacing_mm
        lib = torch if isinstance(u, torch.Tensor) else np
        x = (u - cu) * su
        y = (v - cv) * sv
        return lib.stack([x, y, lib.full_like(x, self.sid_mm)], -1)

    def ray_directions(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Unit ray direction of every pixel centre in the camera frame, (H, W, 3)."""
        u, v = self.pixel_grid(device=device, dtype=torch.float64)
        d = self.detector_points(u, v)
        return (d / torch.linalg.norm(d, dim=-1, keepdim=True)).to(dtype)

    def ray_obliquity(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """How obliquely every pixel's ray runs, each (H, W), computed in ``dtype``: the cosine of its angle to the
        central ray (the z component of :meth:`ray_directions`) and its angle (radians) from the central ray along v
        (rows; tan = y / SID), e.g. the heel effect's take-off angle when the anode-cathode axis runs along the rows."""
        x, y, z = self.detector_points(*self.pixel_grid(device=device, dtype=dtype)).unbind(-1)
        return self.sid_mm / torch.sqrt(x * x + y * y + z * z), torch.atan(y / z)

    def backproject(self, depth: ArrayLike) -> ArrayLike:
        """Camera-frame points (mm) of depth maps ``(..., H, W)`` -> ``(..., H, W, 3)``; same type as input.

        NumPy input is computed in float64 with the rays cached per detector geometry (the pose does
        not change them), so repeated calls on one geometry cost one multiplication.
        """
        if isinstance(depth, np.ndarray):
            return np.asarray(depth, dtype=np.float64)[..., None] * _cached_rays(
                replace(self, world_to_camera=np.eye(4), bones=())
            )
        dirs = self.ray_directions(
            device=depth.device, dtype=depth.dtype if depth.is_floating_point() else torch.float32
        )
        return depth[..., None] * dirs

    def project(self, points_cam: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
        """Project camera-frame points (..., 3) to pixel coordinates (..., 2) [u, v] and their depth (...,) in mm."""
        lib = torch if isinstance(points_cam, torch.Tensor) else np
        x, y, z = points_cam[..., 0], points_cam[..., 1], points_cam[..., 2]
        cu, cv = self.principal_point_px
        su, sv = self.pixel_spacing_mm
        u = cu + x * self.sid_mm / (z * su)
        v = cv + y * self.sid_mm / (z * sv)
        depth = lib.sqrt(x * x + y * y + z * z)
        return lib.stack([u, v], -1), depth

    def in_field_of_view(self, points_cam: ArrayLike, margin_px: float = 0.0) -> ArrayLike:
        """(...,) True for camera-frame points (..., 3) mm inside the X-ray cone: z > 0 and projecting onto the detector,
        at least ``margin_px`` pixels inside its outer pixel edges."""
        uv, _ = self.project(points_cam)
        w, h = self.image_size
        z = points_cam[..., 2]
        return (
            (z > 0)
            & (uv[..., 0] >= -0.5 + margin_px)
            & (uv[..., 0] <= w - 0.5 - margin_px)
            & (uv[..., 1] >= -0.5 + margin_px)
            & (uv[..., 1] <= h - 0.5 - margin_px)
        )

    def field_of_view_planes(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(origin, inward unit normal) of the planes bounding the X-ray cone, camera frame (mm).

        The four side planes pass through the source and the detector's outer pixel edges (u = -0.5,
        W - 0.5; v = -0.5, H - 0.5), as :meth:`in_field_of_view` tests; a fifth keeps z > 0.
        """
        w, h = self.image_size
        (x0, y0, sid), (x1, y1, _) = self.detector_points(np.array([-0.5, w - 0.5]), np.array([-0.5, h - 0.5]))
        origin = np.zeros(3)
        normals = [(sid, 0.0, -x0), (-sid, 0.0, x1), (0.0, sid, -y0), (0.0, -sid, y1), (0.0, 0.0, 1.0)]
        return [(origin, np.asarray(n) / np.linalg.norm(n)) for n in normals]

    def length_px(self, length_mm: float) -> tuple[float, float]:
        """(along u, along v) how many pixels a length of ``length_mm`` mm on the detector spans."""
        su, sv = self.pixel_spacing_mm
        return length_mm / su, length_mm / sv

    def pixel_spacing_at(self, sid_mm: float) -> tuple[float, float]:
        """(su, sv) mm: the pitch of these pixels' rays on a detector at ``sid_mm`` from the source (same focal spot and
        central ray)."""
        return tuple(s * sid_mm / self.sid_mm for s in self.pixel_spacing_mm)

    def pixel_scale_in(self, other: "Geometry") -> np.ndarray:
        """(along u, along v) size of one pixel of ``self`` measured in pixels of ``other`` on the same rays.

        Both geometries share the focal spot and central-ray axis (as :meth:`sample_from`): the pitch of
        ``self`` at ``other``'s detector distance over ``other``'s pitch.
        """
        return np.array(self.pixel_spacing_at(other.sid_mm)) / np.array(other.pixel_spacing_mm)

    def world_rays(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Source position (3,) and unit pixel ray directions (H, W, 3) in the world (RAS mm) frame."""
        origin = torch.as_tensor(np.linalg.inv(self.matrix)[:3, 3], device=device, dtype=torch.float64)
        dirs = camera_to_world_directions(self.matrix, self.ray_directions(device=device, dtype=torch.float64))
        return origin.to(dtype), dirs.to(dtype)

    # ------------------------------------------------------------------ frames
    def world_to_camera_points(self, points_world: ArrayLike) -> ArrayLike:
        """RAS world points (..., 3) mm -> camera frame (..., 3) mm."""
        return apply_transform(self.matrix, points_world)

    def camera_to_world_points(self, points_cam: ArrayLike) -> ArrayLike:
        """Camera-frame points (..., 3) mm -> RAS world (..., 3) mm."""
        return apply_transform(np.linalg.inv(self.matrix), points_cam)

    def sample_from(self, other: "Geometry") -> np.ndarray:
        """Pixel coordinates (H, W, 2) [u, v] in ``other`` that see the same ray as each pixel of ``self``.

        Both geometries share the focal spot and central-ray axis; this resamples a radiograph taken
        with ``other`` into ``self`` (e.g. a DICOM's native SID and pitch into the standard geometry).
        """
        u, v = self.pixel_grid()
        uv, _ = other.project(self.detector_points(u, v))
        return uv.numpy()

    def flipped_lr(self) -> "Geometry":
        """Geometry of the image mirrored along u (columns): cu -> W - 1 - cu, camera x negated.

        The mirrored pose is a reflection (det -1): it describes the mirror-image patient, whose
        left and right femurs swap roles.
        """
        cu, cv = self.principal_point_px
        mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
        return replace(self, principal_point_px=(self.width - 1 - cu, cv)).with_pose(mirror @ self.matrix)

    def cropped(self, box_px: Sequence[int]) -> "Geometry":
        """Pixels ``u0..u1``, ``v0..v1`` (inclusive, ``box_px = (u0, u1, v0, v1)``) as a detector of their own: same
        rays and pitch, principal point shifted."""
        u0, u1, v0, v1 = (int(b) for b in box_px)
        cu, cv = self.principal_point_px
        return replace(self, image_size=(u1 - u0 + 1, v1 - v0 + 1), principal_point_px=(cu - u0, cv - v0))

    def resized(self, image_size: Sequence[int]) -> "Geometry":
        """Same detector field of view sampled at ``image_size`` (W, H) px: pitch (mm) and principal point (px) rescaled."""
        w, h = int(image_size[0]), int(image_size[1])
        sx, sy = self.width / w, self.height / h
        cu, cv = self.principal_point_px
        return replace(
            self,
            image_size=(w, h),
            pixel_spacing_mm=(self.pixel_spacing_mm[0] * sx, self.pixel_spacing_mm[1] * sy),
            principal_point_px=((cu + 0.5) / sx - 0.5, (cv + 0.5) / sy - 0.5),
        )


def read_geometry(path: PathLike, check_range: bool = False) -> Geometry:
    """:meth:`Geometry.load` for input files: a missing or invalid geometry JSON raises :class:`InputFileError` naming it."""
    try:
        return Geometry.load(path, check_range)
    except GeometryError as e:
        raise InputFileError(path, str(e).removeprefix(f"{Path(path)}: ")) from None


def read_standard_geometry(path: PathLike | None = None) -> tuple[Geometry, float]:
    """The standard geometry and source-to-object distance (mm from the source to the patient's centre along the
    central ray) from one geometry JSON (default configs/geometry.json; a file without ``source_to_object_mm``
    takes the default file's).

    Raises:
        InputFileError: naming the file; missing, not JSON, an invalid geometry, or a distance that is not a
            number giving a magnification (SID / distance) within ``MAGNIFICATION_RANGE``.
    """
    path = Path(path or STANDARD_GEOMETRY_FILE)
    try:
        d = _geometry_json(path)
        geometry = Geometry.from_dict(d, source=str(path))
    except GeometryError as e:
        raise InputFileError(path, str(e).removeprefix(f"{path}: ")) from None
    if "source_to_object_mm" not in d and path != STANDARD_GEOMETRY_FILE:
        return geometry, read_standard_geometry()[1]
    distance = d.get("source_to_object_mm")
    try:
        _check_numbers("source_to_object_mm", distance)
        if not distance > 0:
            raise GeometryError("source_to_object_mm is not a positive distance")
        check_magnification(magnification(geometry.sid_mm, distance), "SID / source_to_object_mm")
    except GeometryError:
        lo, hi = MAGNIFICATION_RANGE
        raise InputFileError(
            path,
            f"source_to_object_mm must be a distance (mm) giving a magnification SID / distance "
            f"of {lo:g}..{hi:g} (SID {geometry.sid_mm:g} mm), got {distance!r}",
        ) from None
    return geometry, float(distance)


def magnification(sid_mm: float, distance_mm: ArrayLike | float) -> ArrayLike | float:
    """How much a length in the plane normal to the central ray at ``distance_mm`` from the source grows on a
    detector at ``sid_mm`` (SID / distance; e.g. 1100 / 950 for the standard patient, or the standard detector's
    view of a real detector at another SID). Same type as ``distance_mm``."""
    return sid_mm / distance_mm


def check_magnification(factor: float, source: str) -> float:
    """``factor`` if it lies within ``MAGNIFICATION_RANGE`` (what radiography rooms give), else :class:`GeometryError`
    naming where it came from (``source``, e.g. a DICOM tag)."""
    lo, hi = MAGNIFICATION_RANGE
    if not lo <= factor <= hi:
        raise GeometryError(f"magnification {factor:g} from {source} outside {lo:g}..{hi:g}")
    return factor


def channel_order(bones: Sequence[str], wanted: Sequence[str]) -> list[int]:
    """Indices into ``bones`` (a file's channel names) that give the channels of ``wanted`` (e.g. the
    network's), matched by name; raises :class:`GeometryError` when a wanted bone is missing."""
    missing = [b for b in wanted if b not in bones]
    if missing:
        raise GeometryError(f"bones {list(bones)} lack {missing} (channels are matched by name to {list(wanted)})")
    return [list(bones).index(b) for b in wanted]


def match_bone_channels(
    geometry: Geometry, wanted: Sequence[str], depth: ArrayLike | None = None, mask: ArrayLike | None = None
) -> tuple[Geometry, ArrayLike | None, ArrayLike | None]:
    """A sample's depth (2B, H, W) mm and mask (B, H, W) channels (NumPy or torch; None passes through)
    reordered by name from ``geometry.bones`` to ``wanted`` (:func:`channel_order`), and the geometry
    naming them; raises :class:`GeometryError` when a wanted bone is missing."""
    if geometry.bones == tuple(wanted):
        return geometry, depth, mask
    order = channel_order(geometry.bones, wanted)
    depth = None if depth is None else depth[[2 * i + f for i in order for f in (0, 1)]]
    return replace(geometry, bones=tuple(wanted)), depth, None if mask is None else mask[order]


def _check_numbers(name: str, values, integer: bool = False) -> None:
    """Refuse non-numbers, booleans included (JSON ``true`` is not 1 mm)."""
    several = isinstance(values, (list, tuple, np.ndarray))
    kind = numbers.Integral if integer else numbers.Real
    for v in values if several else [values]:
        if (
            isinstance(v, (bool, np.bool_))
            or not isinstance(v, kind)
            and not (integer and isinstance(v, numbers.Real) and float(v).is_integer())
        ):
            what = ("integers" if integer else "numbers") if several else ("an integer" if integer else "a number")
            raise GeometryError(f"{name} must be {what}, got {v!r}")


def _geometry_json(path: Path) -> dict:
    """The object in a geometry JSON; :class:`GeometryError` (message starting with the path) when missing or unreadable."""
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise GeometryError(f"{path}: geometry file not found") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GeometryError(f"{path}: unreadable geometry JSON ({e})") from None
    if not isinstance(d, dict):
        raise GeometryError(f"{path}: geometry JSON must be an object")
    return d


def check_room_range(name: str, values: Sequence[float], bounds: tuple[float, float], unit: str) -> None:
    """Raise :class:`GeometryError` naming ``name`` unless every value (``unit``) lies in ``bounds``, what radiography
    rooms use (e.g. :data:`SID_RANGE_MM`; NaN never does)."""
    lo, hi = bounds
    for v in values:
        if not lo <= v <= hi:
            raise GeometryError(f"{name} {v:g} {unit} outside {lo:g}..{hi:g} {unit} (what radiography rooms use)")


@functools.lru_cache(maxsize=8)
def _cached_rays(detector: Geometry) -> np.ndarray:
    """Read-only float64 unit ray directions (H, W, 3) of a pose-free geometry."""
    rays = detector.ray_directions(dtype=torch.float64).numpy()
    rays.flags.writeable = False
    return rays


# ---------------------------------------------------------------------- transforms and poses
def apply_transform(matrix: np.ndarray, points: ArrayLike) -> ArrayLike:
    """Points (..., 3) under a 4x4 homogeneous transform (e.g. RAS world mm -> camera mm); NumPy in float64 or torch
    in the points' dtype and device."""
    if isinstance(points, torch.Tensor):
        m = torch.as_tensor(matrix, dtype=points.dtype, device=points.device)
        return points @ m[:3, :3].T + m[:3, 3]
    m = np.asarray(matrix, dtype=np.float64)
    return np.asarray(points) @ m[:3, :3].T + m[:3, 3]


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size (3,) mm along i, j, k of a 4x4 voxel-to-world affine (the lengths of its first three columns)."""
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def camera_to_world_directions(world_to_camera: np.ndarray, directions_cam: ArrayLike) -> ArrayLike:
    """Camera-frame directions (..., 3) -> RAS world directions (..., 3) under the 4x4 world-to-camera
    transform (its inverse's rotation, no translation); e.g. ``(0, 0, 1)``: the central ray's direction."""
    r = np.linalg.inv(np.asarray(world_to_camera, dtype=np.float64))[:3, :3]
    if isinstance(directions_cam, torch.Tensor):
        return directions_cam @ torch.as_tensor(r, dtype=directions_cam.dtype, device=directions_cam.device).T
    return np.asarray(directions_cam) @ r.T


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation (3, 3) from angles in degrees about camera x, then y, then z: R = Rz @ Ry @ Rx."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def camera_to_patient_lps() -> np.ndarray:
    """Camera frame (mm, origin at the focal spot) to the patient's DICOM coordinates (LPS, mm), homogeneous 4x4, for
    a patient supine and square to the beam of the standard AP view (:data:`STANDARD_AP_ROTATION`): +x_cam (image
    columns) -> patient left, +y_cam (rows) -> inferior, +z_cam (toward the detector) -> posterior. Nominal: a real
    patient's tilt and rotation on the table are not in it; the origin stays at the focal spot."""
    m = np.eye(4)
    m[:3, :3] = LPS_TO_RAS[:3, :3] @ STANDARD_AP_ROTATION.T
    return m


def standard_ap_pose(
    center_ras: Sequence[float],
    source_to_object_mm: float,
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
    translation_mm: Sequence[float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """World(RAS)-to-camera 4x4 of the standard AP pose, optionally perturbed.

    The object centre ``center_ras`` (mm) lands on the central ray at ``source_to_object_mm``; the
    perturbation rotates the patient about that centre by ``rotation_deg`` (camera x, y, z axes,
    degrees) and then shifts it by ``translation_mm`` (camera frame, mm).
    """
    r = rotation_matrix(rotation_deg) @ STANDARD_AP_ROTATION
    c = np.asarray(center_ras, dtype=np.float64)
    t = np.array([0.0, 0.0, float(source_to_object_mm)]) + np.asarray(translation_mm, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = t - r @ c
    return m
