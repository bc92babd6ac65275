"""Surface distances between meshes (mm), restricted to the X-ray cone of a radiograph.

Both surfaces are sampled uniformly by area (``spacing_mm`` apart on average) and each sample's
distance to the other surface (exact point-to-triangle, :func:`point_to_surface`) gives the two
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

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from .geometry import Geometry, apply_transform

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


def volume_extent_planes(affine: np.ndarray, shape: Sequence[int], world_to_camera: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
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
    """(n,) True for points (n, 3) on the inner side of every plane."""
    inside = np.ones(len(points), bool)
    for origin, normal in planes:
        inside &= (np.asarray(points) - origin) @ normal >= 0
    return inside


def sample_surface(mesh: trimesh.Trimesh, spacing_mm: float = 1.0, max_samples: int = 20000, seed: int = 0) -> np.ndarray:
    """Points (n, 3) spread uniformly by area, about one per ``spacing_mm``^2 (at least 100, at most ``max_samples``)."""
    if len(mesh.faces) == 0 or mesh.area <= 0:
        return np.zeros((0, 3))
    n = int(np.clip(mesh.area / spacing_mm**2, 100, max_samples))
    return trimesh.sample.sample_surface(mesh, n, seed=seed)[0]


def triangle_proxies(triangles: np.ndarray, spacing_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Proxy points (P, 3) covering triangles (T, 3, 3): every point of a triangle lies within its proxies' radius of one of them.

    A triangle whose two edges at the vertex opposite its longest edge are at most ``spacing_mm``
    long gets its centroid; a larger one is cut into a parallelogram grid spanned from that vertex,
    with steps of at most ``spacing_mm`` along both edges (a long thin triangle gets a row of cells,
    not a square grid), and gets the centre of every cell that meets it. All proxies lie in their
    triangle's plane. Returns (proxies, owner (P,) triangle index, radius (P,) mm: the largest
    distance from the proxy to a corner of its triangle or cell).
    """
    tri = np.asarray(triangles, dtype=np.float64)
    opposite = np.linalg.norm(np.roll(tri, -1, axis=1) - np.roll(tri, -2, axis=1), axis=-1)  # edge opposite each vertex
    first = np.argmax(opposite, axis=1)
    a, b, c = np.moveaxis(tri[np.arange(len(tri))[:, None], (first[:, None] + np.arange(3)) % 3], 1, 0)
    n1 = np.maximum(np.ceil(np.linalg.norm(b - a, axis=1) / spacing_mm), 1).astype(np.int64)
    n2 = np.maximum(np.ceil(np.linalg.norm(c - a, axis=1) / spacing_mm), 1).astype(np.int64)
    small = np.flatnonzero((n1 == 1) & (n2 == 1))
    centroid = tri[small].mean(1)
    centroid_radius = np.linalg.norm(tri[small] - centroid[:, None], axis=-1).max(1, initial=0.0)
    # cells (i, j) of the large triangles: s in [i, i+1] / n1, t in [j, j+1] / n2, kept when i/n1 + j/n2 <= 1
    large = np.setdiff1d(np.arange(len(tri)), small)
    counts = n1[large] * n2[large]
    owner = np.repeat(large, counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    i, j = np.divmod(local, n2[owner])
    keep = i * n2[owner] + j * n1[owner] <= n1[owner] * n2[owner]
    owner, i, j = owner[keep], i[keep], j[keep]
    u, v = (b - a) / n1[:, None], (c - a) / n2[:, None]
    cells = a[owner] + (i + 0.5)[:, None] * u[owner] + (j + 0.5)[:, None] * v[owner]
    half_diagonal = np.maximum(np.linalg.norm(u + v, axis=1), np.linalg.norm(u - v, axis=1)) / 2
    return np.concatenate([centroid, cells]), np.concatenate([small, owner]), np.concatenate([centroid_radius, half_diagonal[owner]])


class _ProxyIndex:
    """cKDTree of the proxies of a triangle soup (T, 3, 3), with each proxy's radius and triangle normal."""

    def __init__(self, tri: np.ndarray):
        edges = np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=-1)
        self.tri = tri
        proxies, self.owner, self.radius = triangle_proxies(tri, max(float(np.median(edges)), 1e-9 * float(edges.max()), 1e-12))
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        length = np.linalg.norm(normal, axis=1, keepdims=True)
        self.normal = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)  # degenerate: no plane bound
        self.proxies = proxies
        self.tree = cKDTree(proxies)

    def nearest(self, points: np.ndarray, k: int, bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact distance (n,) to the closest triangle among those of the ``k`` nearest proxies (inf if none
        can beat ``bound`` (n,)), and the ``k``-th proxy distance (n,)."""
        near, idx = self.tree.query(points, k)
        near, idx = near.reshape(len(points), k), idx.reshape(len(points), k)
        face = self.owner[idx]
        # lower bounds of the point-triangle distance: proxy distance minus radius, and distance to the plane
        plane = np.abs(np.einsum("nkj,nkj->nk", points[:, None] - self.proxies[idx], self.normal[face]))
        test = np.maximum(near - self.radius[idx], plane) < bound[:, None]
        row = np.nonzero(test)[0]
        p = points[row]
        d = np.full((len(points), k), np.inf)
        d[test] = np.linalg.norm(trimesh.triangles.closest_point(self.tri[face[test]], p) - p, axis=1)
        return d.min(1), near[:, -1]


def point_to_surface(points: np.ndarray, mesh: trimesh.Trimesh | "_ProxyIndex", max_pairs: int = 1_000_000) -> np.ndarray:
    """Exact unsigned distance (n,) in mm from each point to the closest point of ``mesh``'s triangles.

    Candidate triangles come from a cKDTree of proxy points that cover every triangle within a
    radius (:func:`triangle_proxies`, cells about the median edge length): the triangles of a point's
    8 nearest proxies give an upper bound ``u`` on its distance; every triangle that can be closer
    has a proxy within ``u`` plus the largest radius, so those proxies' triangles are then measured
    exactly (``trimesh.triangles.closest_point``), skipping those whose lower bound (proxy distance
    minus its radius, or distance to the triangle's plane) is not below ``u``. ``max_pairs`` bounds
    the point-proxy pairs held in memory at once. ``mesh`` may be the proxy index of a mesh already
    built (:class:`ReferenceSurface` queries one surface many times).
    """
    points = np.asarray(points, dtype=np.float64)
    if len(points) == 0:
        return np.zeros(0)
    if isinstance(mesh, _ProxyIndex):
        index = mesh
    else:
        tri = np.asarray(mesh.triangles, dtype=np.float64)
        if len(tri) == 0:
            raise ValueError("distance to an empty surface")
        index = _ProxyIndex(tri)
    n_proxies, radius = len(index.proxies), float(index.radius.max())
    k0 = min(8, n_proxies)
    dist, kth = index.nearest(points, k0, np.full(len(points), np.inf))
    need = np.asarray(index.tree.query_ball_point(points, np.nextafter(dist + radius, np.inf), return_length=True))
    todo = np.flatnonzero((need > k0) & (kth - radius < dist))
    # the rest in groups by the next power of two >= their count of proxies within u + radius
    ks = np.minimum(2 ** np.ceil(np.log2(np.maximum(need[todo], 1))).astype(np.int64), n_proxies)
    for k in np.unique(ks):
        group = todo[ks == k]
        for chunk in np.array_split(group, -(-len(group) * int(k) // max_pairs)):
            dist[chunk] = np.minimum(dist[chunk], index.nearest(points[chunk], int(k), dist[chunk])[0])
    return dist


class ReferenceSurface:
    """A true surface prepared once for many :meth:`metrics` calls: clipped to the X-ray cone (with
    ``geometry``) and the CT's box (``extent_planes``), sampled (``spacing_mm``, ``max_samples``,
    ``seed``) and indexed for distance queries.

    ``ReferenceSurface(ref, geometry, spacing_mm, max_samples, seed + 1, extent_planes).metrics(pred, seed)``
    is :func:`surface_metrics` ``(pred, ref, geometry, spacing_mm, max_samples, seed, extent_planes)``,
    number for number.
    """

    def __init__(self, ref: trimesh.Trimesh, geometry: Geometry | None = None, spacing_mm: float = 1.0, max_samples: int = 20000, seed: int = 1,
                 extent_planes: Planes | None = None):
        self.spacing_mm, self.max_samples = spacing_mm, max_samples
        self.planes = [*(geometry.field_of_view_planes() if geometry is not None else ()), *(extent_planes or ())]
        self.mesh = clip_to_planes(ref, self.planes) if self.planes else ref
        self.samples = sample_surface(self.mesh, spacing_mm, max_samples, seed)
        self._index: _ProxyIndex | None = None

    @property
    def index(self) -> "_ProxyIndex":
        """Proxy index of the (clipped) surface, built on first use."""
        if self._index is None:
            self._index = _ProxyIndex(np.asarray(self.mesh.triangles, dtype=np.float64))
        return self._index

    def metrics(self, pred: trimesh.Trimesh, seed: int = 0) -> dict[str, float]:
        """ASSD, HD95, HD and Chamfer (mm) of ``pred`` (same frame; clipped like the reference) against this surface."""
        if self.planes:
            pred = clip_to_planes(pred, self.planes)
        pa = sample_surface(pred, self.spacing_mm, self.max_samples, seed)
        pb = self.samples
        if len(pa) == 0 or len(pb) == 0:
            return {k: float("nan") for k in ("assd_mm", "hd95_mm", "hd_mm", "chamfer_mm")}
        da, db = point_to_surface(pa, self.index), point_to_surface(pb, pred)
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


def vertex_errors(mesh: trimesh.Trimesh, ref: trimesh.Trimesh, geometry: Geometry | None = None, extent_planes: Planes | None = None) -> np.ndarray:
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
