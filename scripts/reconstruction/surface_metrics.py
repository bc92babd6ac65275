"""Surface distances between meshes (mm), restricted to the X-ray cone of a radiograph.

Both surfaces are sampled uniformly by area (``spacing_mm`` apart on average) and each sample's
distance to the other surface (exact point-to-triangle, :func:`point_to_surface`, libigl's AABB tree) gives the two
directed distance sets D(A->B), D(B->A). With both meshes in the camera frame and a geometry given,
each mesh is first clipped to the cone (the pyramid from the source through the detector's edges):
a bone is judged only where the radiograph saw it. With the extent of the CT the radiograph was
simulated from (``extent_planes``, :func:`volume_extent_planes`) both are also clipped to that box: a
CT that ends inside the X-ray field (e.g. below the femoral heads) is judged on what it contains,
not on the stump its labels leave against a completed bone.

- ASSD: mean over the union of both sample sets, (sum D(A->B) + sum D(B->A)) / (n_A + n_B), i.e.
  area-weighted;
- HD95: max(95th percentile of D(A->B), 95th percentile of D(B->A));
- HD: max of all distances;
- Chamfer: (mean D(A->B) + mean D(B->A)) / 2, the mean of the two directed means (unsquared, mm);
  some papers report the sum, which is twice this.
"""

from __future__ import annotations

from typing import Sequence

import igl
import numpy as np
import trimesh
from scripts.geometry import Geometry, apply_transform

Planes = Sequence[tuple[np.ndarray, np.ndarray]]  # (origin, inward unit normal), camera frame mm


def clip_to_planes(mesh: trimesh.Trimesh, planes: Planes) -> trimesh.Trimesh:
    """The part of a mesh on the inner side of every plane (triangles cut, no caps)."""
    vertices, faces = np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces)
    for origin, normal in planes:
        if len(faces) == 0:
            break
        vertices, faces = trimesh.intersections.slice_faces_plane(vertices, faces, normal, origin)[:2]
    return trimesh.Trimesh(vertices, faces, process=False)


def clip_to_field_of_view(mesh: trimesh.Trimesh, geometry: Geometry) -> trimesh.Trimesh:
    """The part of a camera-frame mesh inside the X-ray cone (triangles cut at :meth:`Geometry.field_of_view_planes`, no caps)."""
    return clip_to_planes(mesh, geometry.field_of_view_planes())


def volume_extent_planes(
    affine: np.ndarray, shape: Sequence[int], world_to_camera: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The six planes (camera frame mm, inward normals) of the box spanned by a volume's outermost voxel centres.

    ``affine``: voxel index -> RAS world mm; ``shape``: voxels along i, j, k; ``world_to_camera``:
    RAS world mm -> camera mm. Label surfaces (marching cubes) close the bone half a voxel outside
    this box, so clipping to it removes the cut caps where a CT ends.
    """
    to_camera = np.asarray(world_to_camera, dtype=np.float64) @ np.asarray(affine, dtype=np.float64)
    planes = []
    for axis in range(3):
        edge = to_camera[:3, :3] @ np.eye(3)[axis]
        normal = edge / np.linalg.norm(edge)
        for index, sign in ((0.0, 1.0), (float(shape[axis] - 1), -1.0)):
            ijk = np.zeros(3)
            ijk[axis] = index
            planes.append((apply_transform(to_camera, ijk), sign * normal))
    return planes


def inside_planes(points: np.ndarray, planes: Planes) -> np.ndarray:
    """(n,) True for points (n, 3) mm on the inner side of every plane (the planes' frame, e.g. camera mm)."""
    inside = np.ones(len(points), bool)
    for origin, normal in planes:
        inside &= (np.asarray(points) - origin) @ normal >= 0
    return inside


def sample_surface(
    mesh: trimesh.Trimesh, spacing_mm: float = 1.0, max_samples: int = 20000, seed: int = 0
) -> np.ndarray:
    """Points (n, 3) spread uniformly by area, about one per ``spacing_mm``^2 (at least 100, at most ``max_samples``)."""
    if len(mesh.faces) == 0 or mesh.area <= 0:
        return np.zeros((0, 3))
    n = int(np.clip(mesh.area / spacing_mm**2, 100, max_samples))
    return trimesh.sample.sample_surface(mesh, n, seed=seed)[0]


class MeshDistance:
    """Exact unsigned point-to-surface distances (mm) to one triangle mesh: libigl's AABB tree of the
    triangles, built once, answers every query (closest point on the closest triangle)."""

    def __init__(self, mesh: trimesh.Trimesh):
        self.vertices = np.ascontiguousarray(mesh.vertices, dtype=np.float64)
        self.faces = np.ascontiguousarray(mesh.faces, dtype=np.int64)
        if len(self.faces) == 0:
            raise ValueError("distance to an empty surface")
        self.tree = igl.AABB()
        self.tree.init(self.vertices, self.faces)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Distance (n,) mm from each point (n, 3) to the closest point of the surface."""
        points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
        if len(points) == 0:
            return np.zeros(0)
        return np.sqrt(self.tree.squared_distance(self.vertices, self.faces, points)[0])


def point_to_surface(points: np.ndarray, mesh: trimesh.Trimesh) -> np.ndarray:
    """Exact unsigned distance (n,) in mm from each point to the closest point of ``mesh``'s triangles
    (:class:`MeshDistance`; many queries against one mesh: keep its ``MeshDistance``)."""
    return MeshDistance(mesh)(points)


class ReferenceSurface:
    """A true surface prepared once for many :meth:`metrics` calls: clipped to the X-ray cone (with
    ``geometry``) and the CT's box (``extent_planes``), sampled (``spacing_mm``, ``max_samples``,
    ``seed``) and indexed for distance queries.

    ``ReferenceSurface(ref, geometry, spacing_mm, max_samples, seed + 1, extent_planes).metrics(pred, seed)``
    is :func:`surface_metrics` ``(pred, ref, geometry, spacing_mm, max_samples, seed, extent_planes)``,
    number for number.
    """

    def __init__(
        self,
        ref: trimesh.Trimesh,
        geometry: Geometry | None = None,
        spacing_mm: float = 1.0,
        max_samples: int = 20000,
        seed: int = 1,
        extent_planes: Planes | None = None,
    ):
        self.spacing_mm, self.max_samples = spacing_mm, max_samples
        self.planes = [*(geometry.field_of_view_planes() if geometry is not None else ()), *(extent_planes or ())]
        self.mesh = clip_to_planes(ref, self.planes) if self.planes else ref
        self.samples = sample_surface(self.mesh, spacing_mm, max_samples, seed)
        self._distance: MeshDistance | None = None

    @property
    def distance(self) -> MeshDistance:
        """Distances to the (clipped) surface, its tree built on first use."""
        if self._distance is None:
            self._distance = MeshDistance(self.mesh)
        return self._distance

    def metrics(self, pred: trimesh.Trimesh, seed: int = 0) -> dict[str, float]:
        """ASSD, HD95, HD and Chamfer (mm) of ``pred`` (same frame; clipped like the reference) against this surface."""
        if self.planes:
            pred = clip_to_planes(pred, self.planes)
        pa = sample_surface(pred, self.spacing_mm, self.max_samples, seed)
        pb = self.samples
        if len(pa) == 0 or len(pb) == 0:
            return {k: float("nan") for k in ("assd_mm", "hd95_mm", "hd_mm", "chamfer_mm")}
        da, db = self.distance(pa), point_to_surface(pb, pred)
        return {
            "assd_mm": float((da.sum() + db.sum()) / (len(da) + len(db))),
            "hd95_mm": float(max(np.percentile(da, 95), np.percentile(db, 95))),
            "hd_mm": float(max(da.max(), db.max())),
            "chamfer_mm": float((da.mean() + db.mean()) / 2),
        }


def surface_metrics(
    pred: trimesh.Trimesh,
    ref: trimesh.Trimesh,
    geometry: Geometry | None = None,
    spacing_mm: float = 1.0,
    max_samples: int = 20000,
    seed: int = 0,
    extent_planes: Planes | None = None,
) -> dict[str, float]:
    """ASSD, HD95, HD and Chamfer (mm) between ``pred`` and ``ref`` (same frame, mm; see module doc).

    With ``geometry`` both meshes (camera frame) are clipped to its X-ray cone first, with
    ``extent_planes`` to the CT's box too. Returns NaN values when either surface has nothing left to sample.
    Comparing many surfaces with one reference: :class:`ReferenceSurface`.
    """
    return ReferenceSurface(ref, geometry, spacing_mm, max_samples, seed + 1, extent_planes).metrics(pred, seed)


def vertex_errors(
    mesh: trimesh.Trimesh, ref: trimesh.Trimesh, geometry: Geometry | None = None, extent_planes: Planes | None = None
) -> np.ndarray:
    """Distance (V,) in mm from each vertex of ``mesh`` to the surface of ``ref``, for colour maps.

    With ``geometry`` (and ``extent_planes``), ``ref`` is clipped to the X-ray cone (and the CT's
    box) and vertices outside get NaN.
    """
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    err = np.full(len(verts), np.nan)
    inside = np.ones(len(verts), bool) if geometry is None else geometry.in_field_of_view(verts)
    if geometry is not None:
        ref = clip_to_field_of_view(ref, geometry)
    if extent_planes:
        inside &= inside_planes(verts, extent_planes)
        ref = clip_to_planes(ref, extent_planes)
    if inside.any() and len(ref.faces):
        err[inside] = point_to_surface(verts[inside], ref)
    return err
