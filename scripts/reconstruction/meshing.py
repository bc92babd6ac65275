"""Dual-face depth maps -> surface meshes in the camera frame (mm).

Every masked pixel's front and back depth back-project (:meth:`scripts.geometry.Geometry.backproject`: the
geometry's ``ray_directions``, computed once per geometry) to two points on its ray. Neighbouring masked
pixels are triangulated on the pixel grid (a 2x2 quad of masked pixels gives two triangles, three
masked pixels of a quad give one), separately kept per face where no triangle edge crosses a depth
jump. Front triangles face the source, back triangles face away, and the two faces are joined by a
wall of triangles along the silhouette (the boundary of the masked region), so a bone wholly in
view gives one closed, watertight, outward-oriented surface. Where the mask touches the image
border the surface stays open: the bone goes on outside the image.
"""

from __future__ import annotations

import numpy as np
import trimesh
from scripts.geometry import Geometry

# Triangles of one 2x2 pixel quad (corners a=(v,u), b=(v,u+1), c=(v+1,u), d=(v+1,u+1)), ordered
# counter-clockwise in the image so that their normal points along +z (away from the source).
_FULL_QUAD = ((0, 1, 3), (0, 3, 2))
_THREE_OF_FOUR = {0: (1, 3, 2), 1: (0, 3, 2), 2: (0, 1, 3), 3: (0, 1, 2)}  # missing corner -> triangle


def _check_inputs(front: np.ndarray, back: np.ndarray, mask: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, ...]:
    front = np.asarray(front, dtype=np.float64)
    back = np.asarray(back, dtype=np.float64)
    mask = np.asarray(mask).astype(bool)
    shape = (geometry.height, geometry.width)
    if front.shape != shape or back.shape != shape or mask.shape != shape:
        raise ValueError(f"front {front.shape}, back {back.shape} and mask {mask.shape} must all be (H, W) = {shape}")
    if not (np.isfinite(front[mask]).all() and np.isfinite(back[mask]).all()):
        raise ValueError("depth maps contain NaN or Inf inside the mask")
    if (front[mask] <= 0).any():
        raise ValueError("front depth must be positive inside the mask")
    return front, np.maximum(back, front), mask


def masked_points(front: np.ndarray, back: np.ndarray, mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Camera-frame points (N, 3) in mm of the masked pixels: all front-face points, then all back-face points."""
    front, back, mask = _check_inputs(front, back, mask, geometry)
    pts = geometry.backproject(np.stack([front, back]))  # (2, H, W, 3)
    return np.concatenate([pts[0][mask], pts[1][mask]])


def grid_triangles(mask: np.ndarray) -> np.ndarray:
    """Triangles (T, 3) of pixel indices (flat ``v * W + u``) over neighbouring masked pixels.

    Each 2x2 quad with four masked pixels gives two triangles (split along the a-d diagonal), a quad
    with three gives one; all are counter-clockwise in the image (normal along +z in the camera frame).
    """
    h, w = mask.shape
    flat = np.arange(h * w).reshape(h, w)
    corners = np.stack([flat[:-1, :-1], flat[:-1, 1:], flat[1:, :-1], flat[1:, 1:]], -1).reshape(-1, 4)
    inside = mask.reshape(-1)[corners]
    count = inside.sum(1)
    tris = [corners[count == 4][:, list(t)] for t in _FULL_QUAD]
    three = count == 3
    missing = np.argmin(inside, axis=1)
    for corner, tri in _THREE_OF_FOUR.items():
        tris.append(corners[three & (missing == corner)][:, list(tri)])
    return np.concatenate(tris).astype(np.int64)


def _edge_jumps(depth: np.ndarray, tris: np.ndarray, max_jump_mm: float) -> np.ndarray:
    """True for triangles (T,) with an edge whose two depths (mm) differ by more than ``max_jump_mm``."""
    d = depth.reshape(-1)[tris]  # (T, 3)
    return (np.abs(d - np.roll(d, -1, axis=1)) > max_jump_mm).any(1)


def _boundary_half_edges(tris: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Oriented half-edges (E, 2) used by one triangle only, and the index (E,) of that triangle."""
    half = np.stack([tris, np.roll(tris, -1, axis=1)], -1).reshape(-1, 2)
    owner = np.repeat(np.arange(len(tris)), 3)
    key = half[:, 0] * n + half[:, 1]
    rev = half[:, 1] * n + half[:, 0]
    lone = ~np.isin(rev, key)
    return half[lone], owner[lone]


def dual_face_mesh(
    front: np.ndarray, back: np.ndarray, mask: np.ndarray, geometry: Geometry, max_depth_jump_mm: float = 20.0
) -> trimesh.Trimesh:
    """Surface mesh (camera frame, mm) of one bone from its front/back depth maps (H, W) in mm and mask (H, W).

    Args:
        front, back: depth along each pixel's ray from the source to the first / last bone surface, mm
            (back depths below the front are raised to the front).
        mask: the bone's pixels.
        geometry: the radiograph's geometry (rays come from ``Geometry.backproject``).
        max_depth_jump_mm: a triangle edge whose two depths differ by more is a depth jump: triangles
            with such an edge are dropped on that face and no wall is built across it.

    Returns:
        The mesh; vertices are front points then back points of the used pixels. It is closed and
        watertight where the bone is wholly in view, with outward normals (front faces the source).
    """
    front, back, mask = _check_inputs(front, back, mask, geometry)
    h, w = mask.shape
    n = h * w
    pts = geometry.backproject(np.stack([front, back])).reshape(2 * n, 3)
    tris = grid_triangles(mask)
    empty = trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), process=False)
    if len(tris) == 0:
        return empty
    ok_front = ~_edge_jumps(front, tris, max_depth_jump_mm)
    ok_back = ~_edge_jumps(back, tris, max_depth_jump_mm)

    # silhouette: boundary of the whole masked triangulation, except along the image border
    edges, owner = _boundary_half_edges(tris, n)
    ev, eu = np.divmod(edges, w)
    on_border = ((ev[:, 0] == ev[:, 1]) & np.isin(ev[:, 0], (0, h - 1))) | (
        (eu[:, 0] == eu[:, 1]) & np.isin(eu[:, 0], (0, w - 1))
    )
    walls = edges[~on_border & ok_front[owner] & ok_back[owner]]
    i, j = walls[:, 0], walls[:, 1]
    faces = np.concatenate(
        [
            tris[ok_front][:, ::-1],  # front: clockwise in the image -> normal toward the source
            tris[ok_back] + n,
            np.stack([j + n, i + n, i], -1),  # wall quad B_j, B_i, F_i, F_j
            np.stack([j + n, i, j], -1),
        ]
    )
    if len(faces) == 0:
        return empty
    mesh = trimesh.Trimesh(pts, faces, process=False)
    mesh.remove_unreferenced_vertices()
    return mesh


def front_face_mesh(
    front: np.ndarray, mask: np.ndarray, geometry: Geometry, max_depth_jump_mm: float = 20.0
) -> trimesh.Trimesh:
    """Open surface (camera frame, mm) of the front face only (single-face baseline): the grid triangles of
    the masked pixels with a front depth, facing the source, less those with an edge crossing a depth jump
    (two depths more than ``max_depth_jump_mm`` apart)."""
    front = np.asarray(front, dtype=np.float64)
    tris = grid_triangles(np.asarray(mask, bool) & (front > 0))
    if len(tris):
        tris = tris[~_edge_jumps(front, tris, max_depth_jump_mm)]
    mesh = trimesh.Trimesh(geometry.backproject(front).reshape(-1, 3), tris[:, ::-1], process=False)
    mesh.remove_unreferenced_vertices()
    return mesh
