"""Surface distances between meshes (mm), restricted to the X-ray cone of a radiograph.

Both surfaces are sampled uniformly by area (``spacing_mm`` apart on average) and each sample's
distance to the other surface (exact point-to-triangle, ``trimesh.proximity``) gives the two
directed distance sets D(A->B), D(B->A). With both meshes in the camera frame and a geometry given,
each mesh is first clipped to the cone (the pyramid from the source through the detector's edges):
a bone is judged only where the radiograph saw it.

- ASSD: mean over the union of both sample sets, (sum D(A->B) + sum D(B->A)) / (n_A + n_B), i.e.
  area-weighted;
- HD95: max(95th percentile of D(A->B), 95th percentile of D(B->A));
- HD: max of all distances;
- Chamfer: (mean D(A->B) + mean D(B->A)) / 2, the mean of the two directed means (unsquared, mm);
  some papers report the sum, which is twice this.
"""

from __future__ import annotations

import numpy as np
import trimesh

from .geometry import Geometry


def cone_planes(geometry: Geometry) -> list[tuple[np.ndarray, np.ndarray]]:
    """(origin, inward normal) of the planes bounding the X-ray cone, camera frame (mm).

    The four side planes pass through the source and the detector's outer pixel edges (u = -0.5,
    W - 0.5; v = -0.5, H - 0.5), as ``Geometry.in_field_of_view`` tests; a fifth keeps z > 0.
    """
    w, h = geometry.image_size
    corners = geometry.detector_points(np.array([-0.5, w - 0.5]), np.array([-0.5, h - 0.5]))
    (x0, y0, sid), (x1, y1, _) = corners
    origin = np.zeros(3)
    normals = [(sid, 0.0, -x0), (-sid, 0.0, x1), (0.0, sid, -y0), (0.0, -sid, y1), (0.0, 0.0, 1.0)]
    return [(origin, np.asarray(n) / np.linalg.norm(n)) for n in normals]


def clip_to_field_of_view(mesh: trimesh.Trimesh, geometry: Geometry) -> trimesh.Trimesh:
    """The part of a camera-frame mesh inside the X-ray cone (triangles cut at the cone's planes, no caps)."""
    vertices, faces = np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces)
    for origin, normal in cone_planes(geometry):
        if len(faces) == 0:
            break
        vertices, faces = trimesh.intersections.slice_faces_plane(vertices, faces, normal, origin)[:2]
    return trimesh.Trimesh(vertices, faces, process=False)


def sample_surface(mesh: trimesh.Trimesh, spacing_mm: float = 1.0, max_samples: int = 20000, seed: int = 0) -> np.ndarray:
    """Points (n, 3) spread uniformly by area, about one per ``spacing_mm``^2 (at least 100, at most ``max_samples``)."""
    if len(mesh.faces) == 0 or mesh.area <= 0:
        return np.zeros((0, 3))
    n = int(np.clip(mesh.area / spacing_mm**2, 100, max_samples))
    return trimesh.sample.sample_surface(mesh, n, seed=seed)[0]


def point_to_surface(points: np.ndarray, mesh: trimesh.Trimesh) -> np.ndarray:
    """Unsigned distance (n,) in mm from each point to the closest point of ``mesh``."""
    if len(points) == 0:
        return np.zeros(0)
    return trimesh.proximity.closest_point(mesh, points)[1]


def surface_metrics(
    pred: trimesh.Trimesh,
    ref: trimesh.Trimesh,
    geometry: Geometry | None = None,
    spacing_mm: float = 1.0,
    max_samples: int = 20000,
    seed: int = 0,
) -> dict[str, float]:
    """ASSD, HD95, HD and Chamfer (mm) between ``pred`` and ``ref`` (same frame, mm; see module doc).

    With ``geometry`` both meshes (camera frame) are clipped to its X-ray cone first. Returns NaN
    values when either surface has nothing left to sample.
    """
    if geometry is not None:
        pred, ref = clip_to_field_of_view(pred, geometry), clip_to_field_of_view(ref, geometry)
    pa = sample_surface(pred, spacing_mm, max_samples, seed)
    pb = sample_surface(ref, spacing_mm, max_samples, seed + 1)
    if len(pa) == 0 or len(pb) == 0:
        return {k: float("nan") for k in ("assd_mm", "hd95_mm", "hd_mm", "chamfer_mm")}
    da, db = point_to_surface(pa, ref), point_to_surface(pb, pred)
    return {
        "assd_mm": float((da.sum() + db.sum()) / (len(da) + len(db))),
        "hd95_mm": float(max(np.percentile(da, 95), np.percentile(db, 95))),
        "hd_mm": float(max(da.max(), db.max())),
        "chamfer_mm": float((da.mean() + db.mean()) / 2),
    }


def vertex_errors(mesh: trimesh.Trimesh, ref: trimesh.Trimesh, geometry: Geometry | None = None) -> np.ndarray:
    """Distance (V,) in mm from each vertex of ``mesh`` to the surface of ``ref``, for colour maps.

    With ``geometry``, ``ref`` is clipped to the X-ray cone and vertices outside it get NaN.
    """
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    err = np.full(len(verts), np.nan)
    inside = np.ones(len(verts), bool) if geometry is None else geometry.in_field_of_view(verts)
    if geometry is not None:
        ref = clip_to_field_of_view(ref, geometry)
    if inside.any() and len(ref.faces):
        err[inside] = point_to_surface(verts[inside], ref)
    return err


def error_colours(errors: np.ndarray, max_mm: float = 5.0, cmap: str = "viridis") -> np.ndarray:
    """RGBA (V, 4) uint8 vertex colours for errors in mm (0 .. ``max_mm``); NaN shows grey."""
    import matplotlib

    rgba = matplotlib.colormaps[cmap](np.clip(np.nan_to_num(errors, nan=0.0) / max_mm, 0, 1))
    rgba[np.isnan(errors)] = (0.6, 0.6, 0.6, 1.0)
    return (rgba * 255).round().astype(np.uint8)
