"""Femoral head centres and the hip plane of a reconstruction (camera frame, mm).

Hip templating calibrates an AP radiograph at the hip plane: the plane parallel to the detector
through the femoral head centres. In the camera frame (scripts/geometry.py: origin at the focal spot,
+z along the central ray) a plane at depth ``z`` mm is magnified ``SID / z`` on the detector. The head
centres come from the shape-model completions: the head's vertices are chosen once on the model's mean
(:func:`femoral_head_vertices`) and a sphere is fitted to the same vertices of each completion
(:func:`head_spheres`). Accuracy: docs/inference.md, "Hip centres and the hip plane".
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from scripts.geometry import magnification
from scripts.shape_maths import fit_sphere, refit_sphere_shell

MEDIAL_X = {"femur_left": 1.0, "femur_right": -1.0}  # sign of RAS x toward the body's midline (+x: patient right)
HEAD_SEED_RADIUS_MM = 30.0  # first sphere: the femur's vertices this near its superomedial extreme
HEAD_SHELL_MM = 2.5  # head vertices: within this of the fitted sphere


def femoral_head_vertices(vertices_ras: np.ndarray, bone: str, iterations: int = 8) -> np.ndarray:
    """Indices of the femoral head's spherical surface on a femur mesh (V, 3) in a RAS frame (mm; +x patient
    right, +z superior; any origin), ``bone`` 'femur_left' or 'femur_right'.

    The head is the femur's superomedial end: a sphere is fitted to the vertices within
    :data:`HEAD_SEED_RADIUS_MM` of the vertex furthest up and toward the midline, then refitted to the
    vertices within :data:`HEAD_SHELL_MM` of it until the set settles."""
    v = np.asarray(vertices_ras, dtype=np.float64)
    seed = v[np.argmax(v[:, 2] + MEDIAL_X[bone] * v[:, 0])]
    return refit_sphere_shell(
        v, np.flatnonzero(np.linalg.norm(v - seed, axis=1) < HEAD_SEED_RADIUS_MM), HEAD_SHELL_MM, iterations
    )[0]


def head_spheres(
    vertices: Mapping[str, np.ndarray], head_vertices: Mapping[str, np.ndarray]
) -> dict[str, tuple[np.ndarray, float]]:
    """{femur: (centre (3,), radius)} mm of each femur mesh in ``vertices`` ({bone: (V, 3)}, any one frame)
    that has a head vertex set (``head_vertices``: {bone: indices}, e.g. from the shape model's mean)."""
    return {b: fit_sphere(np.asarray(v)[head_vertices[b]]) for b, v in vertices.items() if b in head_vertices}


def hip_plane(head_centres: Mapping[str, np.ndarray], sid_mm: float) -> dict | None:
    """The hip plane of camera-frame head centres (mm): its depth (mean camera z of the centres, mm from the
    source along the central ray), its magnification ``SID / depth`` and the femurs it rests on; None without one."""
    if not head_centres:
        return None
    depth = float(np.mean([np.asarray(c)[2] for c in head_centres.values()]))
    return {"depth_mm": depth, "magnification": magnification(float(sid_mm), depth), "femurs": sorted(head_centres)}
