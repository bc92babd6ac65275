"""Shape maths shared by the data engine and inference: spheres, mirror planes, rotations, blends, rigid alignment.

Points are (N, 3) arrays in mm in any one Cartesian frame (the callers' RAS world or camera frame);
angles are in radians. Nothing here knows about bones, images or rays (scripts/geometry.py owns those).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import trimesh
from scripts.geometry import apply_transform


# ---------------------------------------------------------------------- spheres
def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere (centre (3,), radius) through points (N, 3) mm (algebraic fit)."""
    p = np.asarray(points, dtype=np.float64)
    a = np.c_[2.0 * p, np.ones(len(p))]
    sol, *_ = np.linalg.lstsq(a, (p**2).sum(1), rcond=None)
    centre = sol[:3]
    return centre, float(np.sqrt(sol[3] + centre @ centre))


def refit_sphere_shell(
    points: np.ndarray,
    indices: np.ndarray,
    shell_mm: float,
    iterations: int,
    keep: Callable[[np.ndarray, np.ndarray, float], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """A sphere fitted to ``points[indices]`` (points (N, 3) mm), then refitted to the points within
    ``shell_mm`` of its surface until that set settles or ``iterations`` refits are done.

    ``keep(chosen_points, centre, radius)``: optional bool mask narrowing each chosen set (e.g. to one
    side of the sphere). Returns (the last chosen indices, the centre (3,) and radius (mm) fitted to them)."""
    p = np.asarray(points, dtype=np.float64)
    centre, radius = fit_sphere(p[indices])
    for _ in range(iterations):
        chosen = np.flatnonzero(np.abs(np.linalg.norm(p - centre, axis=1) - radius) < shell_mm)
        if keep is not None:
            chosen = chosen[keep(p[chosen], centre, radius)]
        if np.array_equal(chosen, indices):
            break
        indices = chosen
        centre, radius = fit_sphere(p[indices])
    return indices, centre, radius


# ---------------------------------------------------------------------- mirror planes and rotations
def reflect(points: np.ndarray, normal: np.ndarray, offset: float) -> np.ndarray:
    """Points (N, 3) reflected about the plane ``normal . x = offset`` (unit normal, mm)."""
    p = np.asarray(points, dtype=np.float64)
    return p - 2.0 * (p @ normal - offset)[:, None] * normal


def symmetry_plane(
    points: np.ndarray, guess_normal: np.ndarray | tuple[float, float, float] = (1.0, 0.0, 0.0), iterations: int = 30
) -> tuple[np.ndarray, float]:
    """Mirror-symmetry plane (unit normal, offset mm) of a point cloud (N, 3): ``normal . x = offset``.

    The cloud reflected about a first plane (through its centroid, normal ``guess_normal``) is
    registered rigidly onto itself (ICP); reflection then registration is the symmetry, an improper
    isometry whose -1 eigenvector is the plane normal (pointing like ``guess_normal``).
    """
    p = np.asarray(points, dtype=np.float64)
    g = np.asarray(guess_normal, dtype=np.float64)
    n0 = g / np.linalg.norm(g)
    c = p.mean(0)
    mirrored = reflect(p, n0, float(n0 @ c))
    matrix, _, _ = trimesh.registration.icp(
        mirrored, p, max_iterations=iterations, reflection=False, scale=False, threshold=1e-6
    )
    s = np.eye(4)
    s[:3, :3] = np.eye(3) - 2.0 * np.outer(n0, n0)
    s[:3, 3] = 2.0 * (n0 @ c) * n0
    sym = matrix @ s
    w, v = np.linalg.eig(sym[:3, :3])
    normal = np.real(v[:, np.argmin(np.abs(w + 1.0))])
    normal = normal / np.linalg.norm(normal) * np.sign(normal @ n0)
    midpoints = 0.5 * (p + apply_transform(sym, p))
    return normal, float(np.mean(midpoints @ normal))


def rotation_about(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotation matrix (3, 3) by ``angle_rad`` about the unit ``axis`` (right hand)."""
    a = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1 - math.cos(angle_rad)) * k @ k


def rotate_points_about(points: np.ndarray, centre: np.ndarray, axis: np.ndarray, angles_rad: np.ndarray) -> np.ndarray:
    """Points (N, 3) mm turned about the line through ``centre`` (3,) mm along the unit ``axis`` by per-point
    angles (N,) radians (right hand; Rodrigues), e.g. a rotation blended in along a bone."""
    r = points - centre
    c, s = np.cos(angles_rad)[:, None], np.sin(angles_rad)[:, None]
    return centre + r * c + np.cross(axis, r) * s + axis * (r @ axis)[:, None] * (1 - c)


def smoothstep(x: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """0 below ``lo``, 1 above ``hi``, cubic in between (e.g. a deformation faded in along a bone, mm)."""
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


# ---------------------------------------------------------------------- alignment
def kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation (3, 3) best mapping centred ``a`` onto centred ``b`` (N, 3)."""
    u, _, vt = np.linalg.svd((a - a.mean(0)).T @ (b - b.mean(0)))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def _align(a: np.ndarray, b: np.ndarray, scale: bool) -> np.ndarray:
    """``a`` (V, 3) moved onto ``b`` by the least-squares rigid (or similarity) transform."""
    return apply_transform(trimesh.registration.procrustes(a, b, reflection=False, scale=scale, return_cost=False), a)


def generalized_procrustes(
    shapes: np.ndarray, scale: bool = False, gauge: str = "first", max_iter: int = 50, tol_mm: float = 1e-6
) -> np.ndarray:
    """Align shapes (n, V, 3) in correspondence to their common mean (rigid, or similarity when ``scale``).

    The result is centred on the origin; its orientation (gauge) is that of the first shape
    (``gauge="first"``) or of the plain mean of the centred input shapes (``gauge="mean"``): the mean
    stays aligned to it. With ``scale`` the mean keeps the average centroid size of the input, so the
    result stays in mm. Returns the aligned (n, V, 3).
    """
    if gauge not in ("first", "mean"):
        raise ValueError(f"gauge must be 'first' or 'mean', got {gauge!r}")
    shapes = np.asarray(shapes, dtype=np.float64)
    aligned = shapes - shapes.mean(1, keepdims=True)
    size = np.linalg.norm(aligned, axis=(1, 2)).mean()
    reference = mean = aligned[0] if gauge == "first" else aligned.mean(0)
    for _ in range(max_iter):
        aligned = np.stack([_align(s, mean, scale) for s in aligned])
        new = _align(aligned.mean(0), reference, scale=False)
        if scale:
            new *= size / np.linalg.norm(new - new.mean(0))
        change = np.abs(new - mean).max()
        mean = new
        if change < tol_mm:
            break
    return aligned
