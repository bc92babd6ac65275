"""Bone templates and subject deformations of the procedural pelvis/femur phantom.

Each bone has ONE template surface mesh (an implicit model of smooth-unioned primitives, meshed
once with marching cubes and cached in-process). Subjects are made by smooth deformations of the
template vertices, so every subject's mesh of a bone has the same vertices (count and order) and
faces: the meshes are in correspondence.

Frames (mm):

- pelvis template: RAS+ world (+x patient Right, +y Anterior, +z Superior), origin midway between
  the two hip (acetabulum) centres; the pelvis is modelled on ``q = (|x|, y, z)`` so it is symmetric.
- femur template: local ``(l, a, s)`` = (lateral, anterior, superior), origin at the femoral head
  centre. The RIGHT femur maps to world with ``x = +l``, the LEFT femur with ``x = -l`` (mirror,
  faces flipped so normals stay outward). RAS: patient's right femur at +x, left femur at -x.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import trimesh
from scripts.shape_maths import rotate_points_about, rotation_about, smoothstep
from skimage.measure import marching_cubes

# ---------------------------------------------------------------------- template constants (mm, degrees)
HEAD_RADIUS = 24.0  # template femoral head radius
JOINT_GAP = 2.5  # template hip joint space (cavity radius - head radius)
HIP_HALF_WIDTH = 85.0  # template |x| of the hip centres
NECK_SHAFT_ANGLE = 130.0
ANTEVERSION = 15.0
NECK_LENGTH = 55.0  # head centre to neck base on the shaft axis
LESSER_TROCHANTER_LEVEL = -75.0  # template s of the shaft's upper end (below: shaft length scaling)
FEMUR_LENGTH = 278.0  # template femur length below the head centre
CUP_AXIS = np.array([0.72, 0.05, -0.69]) / np.linalg.norm([0.72, 0.05, -0.69])  # acetabular opening, q frame


# ---------------------------------------------------------------------- signed-distance primitives
def _sphere(p: np.ndarray, c, r: float) -> np.ndarray:
    return np.linalg.norm(p - np.asarray(c, dtype=np.float64), axis=-1) - r


def _round_cone(p: np.ndarray, a, b, ra: float, rb: float) -> np.ndarray:
    """Capsule from a to b whose radius varies linearly from ra to rb (approximate SDF)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ab = b - a
    t = np.clip((p - a) @ ab / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=-1) - (ra + (rb - ra) * t)


def _ellipsoid(p: np.ndarray, c, radii) -> np.ndarray:
    """Axis-aligned ellipsoid (approximate SDF, exact zero set)."""
    radii = np.asarray(radii, dtype=np.float64)
    return (np.linalg.norm((p - np.asarray(c, dtype=np.float64)) / radii, axis=-1) - 1.0) * radii.min()


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth union of two SDFs with blend radius k (mm)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth intersection."""
    return -smooth_union(-a, -b, k)


def _union(k: float, *sdfs: np.ndarray) -> np.ndarray:
    out = sdfs[0]
    for s in sdfs[1:]:
        out = smooth_union(out, s, k)
    return out


# ---------------------------------------------------------------------- implicit bone models
def pelvis_sdf(p: np.ndarray) -> np.ndarray:
    """Template pelvis SDF at RAS points (N, 3) mm: ilia, acetabula, pubis, ischia and sacrum."""
    q = np.stack([np.abs(p[:, 0]), p[:, 1], p[:, 2]], -1)
    h = np.array([HIP_HALF_WIDTH, 0.0, 0.0])
    y, z = q[:, 1], q[:, 2]
    # iliac wing: a shell of a bowl-shaped ellipsoid, cut to the wing outline, with a thicker crest
    bowl = _ellipsoid(q, (0, -5, 110), (127, 82, 122))
    outline = (np.hypot((y + 15) / 65.0, (z - 40) / 75.0) - 1.0) * 65.0
    wing = _smax(_smax(np.abs(bowl) - 4.0, outline, 6.0), 28.0 - z, 6.0)
    crest = _smax(_smax(np.abs(bowl) - 6.0, np.abs(outline) - 5.5, 3.0), 45.0 - z, 4.0)
    ilium = _union(
        8.0,
        wing,
        crest,
        _round_cone(q, h + (-2, -8, 18), (102, -18, 52), 19, 10),  # iliac body
        _round_cone(q, (0, -60, 55), (62, -68, 52), 15, 13),  # sacral ala / sacroiliac joint
    )
    # acetabulum: a thick cup around the hip centre, open along CUP_AXIS
    cup_r = HEAD_RADIUS + JOINT_GAP
    block = _sphere(q, h - 4.0 * CUP_AXIS, cup_r + 9.0)
    block = np.maximum(block, (q - h) @ CUP_AXIS)
    pubis_ischium = _union(
        6.0,
        _round_cone(q, h + (-24, 16, -8), (18, 42, -18), 12, 9),  # superior pubic ramus
        _ellipsoid(q, (13, 44, -28), (10, 11, 21)),  # pubic body (symphysis between the two)
        _round_cone(q, (17, 38, -44), (50, -12, -58), 8, 9),  # inferior pubic ramus
        _round_cone(q, h + (-22, -14, -22), (56, -22, -55), 14, 12),  # ischium
        _ellipsoid(q, (56, -22, -60), (12, 15, 16)),  # ischial tuberosity
    )
    hemi = _union(7.0, ilium, block, pubis_ischium)
    sacrum = _union(
        10.0,
        _ellipsoid(q, (0, -55, 55), (50, 22, 14)),
        _ellipsoid(q, (0, -68, 35), (42, 16, 12)),
        _ellipsoid(q, (0, -76, 15), (32, 13, 11)),
        _ellipsoid(q, (0, -79, -3), (22, 10, 10)),
        _ellipsoid(q, (0, -76, -20), (10, 8, 10)),
    )
    return np.maximum(smooth_union(hemi, sacrum, 8.0), -_sphere(q, h, cup_r))  # acetabular cavity


def _neck_frame() -> tuple[np.ndarray, np.ndarray]:
    """Template neck direction (neck base -> head, unit) and neck base point P, femur local frame."""
    nsa, av = math.radians(NECK_SHAFT_ANGLE), math.radians(ANTEVERSION)
    horiz = math.sin(math.pi - nsa)
    up = np.array([-horiz * math.cos(av), horiz * math.sin(av), -math.cos(nsa)])
    return up, -NECK_LENGTH * up


def femur_sdf(p: np.ndarray) -> np.ndarray:
    """Template proximal femur SDF at local (l, a, s) points (N, 3) mm: head, neck, trochanters, shaft."""
    _, base = _neck_frame()
    shaft_top = base + (2.0, 4.0, -5.0)
    shaft_bottom = np.array([shaft_top[0], shaft_top[1], -FEMUR_LENGTH + 13.0])
    return _union(
        8.0,
        _sphere(p, (0, 0, 0), HEAD_RADIUS),
        _round_cone(p, (0, 0, 0), base, 13.5, 18.0),  # neck
        _ellipsoid(p, base + (3, 0, -5), (20, 19, 28)),  # intertrochanteric mass
        _ellipsoid(p, base + (12, -6, 22), (13, 16, 20)),  # greater trochanter
        _ellipsoid(p, base + (-12, -12, -38), (9, 8, 12)),  # lesser trochanter
        _round_cone(p, shaft_top, shaft_bottom, 15.0, 13.0),  # shaft
    )


def _mesh_sdf(sdf, lo, hi, step: float) -> trimesh.Trimesh:
    """Marching-cubes mesh of the zero set of ``sdf`` over the box [lo, hi] (mm), outward normals."""
    axes = [np.arange(a, b + step, step) for a, b in zip(lo, hi, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    values = sdf(grid.reshape(-1, 3)).reshape(grid.shape[:3])
    values = np.pad(values, 1, constant_values=values.max())  # close the surface at the box
    verts, faces, _, _ = marching_cubes(values, 0.0, spacing=(step,) * 3)
    mesh = trimesh.Trimesh(verts + np.asarray(lo) - step, faces, process=True)
    mesh = max(mesh.split(only_watertight=False), key=lambda m: len(m.faces))
    trimesh.smoothing.filter_taubin(mesh, iterations=10)
    if mesh.volume < 0:
        mesh.invert()
    if not mesh.is_watertight:
        raise RuntimeError("phantom template mesh is not watertight")
    return mesh


@functools.lru_cache(maxsize=None)
def pelvis_template() -> trimesh.Trimesh:
    """Template pelvis mesh (RAS mm), built once per process."""
    return _mesh_sdf(pelvis_sdf, (-150, -112, -85), (150, 82, 136), 5.0)


@functools.lru_cache(maxsize=None)
def femur_template() -> trimesh.Trimesh:
    """Template right-side femur mesh in the local (l, a, s) frame (mm), built once per process."""
    return _mesh_sdf(femur_sdf, (-30, -48, -FEMUR_LENGTH - 4), (82, 36, 36), 3.5)


# ---------------------------------------------------------------------- deformations
def _softplus(x: np.ndarray, width: float) -> np.ndarray:
    """Smooth max(0, x) with a transition of about ``width`` mm."""
    return width * np.logaddexp(0.0, x / width)


def deform_pelvis(points: np.ndarray, prm: dict) -> np.ndarray:
    """Subject pelvis from template points (RAS mm).

    A smooth global map (scale ``scale * (width, depth, height)``, iliac flare growing with z) is
    blended near each acetabulum into a similarity (centre follows the global map, scale
    ``head_radius / HEAD_RADIUS``) so the cavity stays a sphere that fits the subject's head.
    """
    s = prm["scale"] * np.array([prm["pelvis_width"], prm["pelvis_depth"], prm["pelvis_height"]])

    def global_map(p: np.ndarray) -> np.ndarray:
        flare = 1.0 + prm["iliac_flare"] * smoothstep(p[:, 2], 20.0, 110.0)
        return np.stack([p[:, 0] * flare, p[:, 1], p[:, 2]], -1) * s

    out = global_map(points)
    k_cup = prm["head_radius"] / HEAD_RADIUS
    r0 = HEAD_RADIUS + JOINT_GAP + 14.0
    for side in (-1.0, 1.0):
        c = np.array([[side * HIP_HALF_WIDTH, 0.0, 0.0]])
        w = 1.0 - smoothstep(np.linalg.norm(points - c, axis=-1), r0, r0 + 50.0)
        similar = global_map(c) + k_cup * (points - c)
        out = out + w[:, None] * (similar - out)
    return out


def hip_centres(prm: dict) -> np.ndarray:
    """Subject hip (acetabulum) centres (2, 3), RAS mm, rows [right (+x), left (-x)]."""
    return deform_pelvis(np.array([[HIP_HALF_WIDTH, 0.0, 0.0], [-HIP_HALF_WIDTH, 0.0, 0.0]]), prm)


def deform_femur_local(points: np.ndarray, side: dict, prm: dict) -> np.ndarray:
    """Subject femur in the local (l, a, s) frame from template points (mm), origin kept at the head centre.

    Steps: head scaling about the head centre; neck-shaft angle and anteversion as blended rotations
    of the neck about the neck base; shaft length and thickness below the lesser trochanter; global
    scale about the head centre.
    """
    up, base = _neck_frame()
    p = points.astype(np.float64)
    # head size, blended out along the neck
    k_head = prm["head_radius"] / (HEAD_RADIUS * prm["scale"])
    w = 1.0 - smoothstep(np.linalg.norm(p, axis=-1), HEAD_RADIUS + 2.0, HEAD_RADIUS + 30.0)
    p = p * (1.0 + (k_head - 1.0) * w)[:, None]
    # neck: weight 0 at the trochanters, 1 on the head
    t = (p - base) @ up / NECK_LENGTH
    w = smoothstep(t, 0.15, 0.65)
    shaft_axis = np.array([0.0, 0.0, 1.0])
    bend_axis = np.cross(-shaft_axis, up)
    bend_axis /= np.linalg.norm(bend_axis)
    p = rotate_points_about(p, base, bend_axis, w * math.radians(side["neck_shaft_angle"] - NECK_SHAFT_ANGLE))
    p = rotate_points_about(p, base, shaft_axis, -w * math.radians(side["anteversion"] - ANTEVERSION))
    # shaft: thickness about the shaft axis and length below the lesser trochanter
    below = smoothstep(LESSER_TROCHANTER_LEVEL - p[:, 2], 0.0, 40.0)
    axis_la = base[:2] + (2.0, 4.0)
    p[:, :2] = axis_la + (p[:, :2] - axis_la) * (1.0 + (side["shaft_thickness"] - 1.0) * below)[:, None]
    k_len = (side["femur_length"] / prm["scale"] + LESSER_TROCHANTER_LEVEL) / (FEMUR_LENGTH + LESSER_TROCHANTER_LEVEL)
    p[:, 2] -= (k_len - 1.0) * _softplus(LESSER_TROCHANTER_LEVEL - p[:, 2], 5.0)
    return p * prm["scale"]


def femur_pose(side: dict) -> np.ndarray:
    """Rotation (3, 3) of the local femur about its head centre: adduction (distal shaft medial), then flexion."""
    r_ad = rotation_about(np.array([0.0, 1.0, 0.0]), math.radians(side["adduction"]))
    r_fl = rotation_about(np.array([1.0, 0.0, 0.0]), math.radians(side["flexion"]))
    return r_fl @ r_ad


def femur_world(side_name: str, prm: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subject femur vertices (N, 3) RAS mm, faces (F, 3) and head centre (3,) for 'femur_left'/'femur_right'.

    The head centre after the neck rotations is moved onto the subject's hip centre.
    """
    template = femur_template()
    side = prm[side_name]
    pts = np.vstack([template.vertices, np.zeros((1, 3))])
    local = deform_femur_local(pts, side, prm)
    local = (local - local[-1]) @ femur_pose(side).T
    sign = 1.0 if side_name == "femur_right" else -1.0
    world = local * np.array([sign, 1.0, 1.0])
    centre = hip_centres(prm)[0 if sign > 0 else 1]
    world = world + centre
    faces = template.faces if sign > 0 else template.faces[:, ::-1]
    return world[:-1], np.ascontiguousarray(faces), world[-1]


# ---------------------------------------------------------------------- lumbar vertebrae (label 4: rendered, never reconstructed)
def vertebra_sdf(p: np.ndarray) -> np.ndarray:
    """Template lumbar vertebra SDF at local points (N, 3) mm: x lateral, y anterior, z along the spine,
    origin at the centre of the vertebral body (height 26 mm): body, pedicles, laminae, spinous,
    transverse and articular processes around the spinal canal."""
    q = np.stack([np.abs(p[:, 0]), p[:, 1], p[:, 2]], -1)
    body = _smax(_ellipsoid(q, (0, 0, 0), (25, 17, 40)), np.abs(q[:, 2]) - 13.0, 2.5)
    return _union(
        3.0,
        body,
        _round_cone(q, (11, -12, 3), (12, -27, 3), 4.5, 4.0),  # pedicle
        _round_cone(q, (12, -27, 2), (0, -36, 0), 4.0, 4.5),  # lamina
        _round_cone(q, (0, -36, 0), (0, -60, -6), 4.5, 4.0),  # spinous process
        _round_cone(q, (13, -26, 4), (36, -28, 8), 4.0, 3.0),  # transverse process
        _ellipsoid(q, (14, -31, 12), (5, 6, 7)),  # superior articular process
        _ellipsoid(q, (12, -33, -11), (5, 6, 7)),  # inferior articular process
    )


@functools.lru_cache(maxsize=None)
def vertebra_template() -> trimesh.Trimesh:
    """Template lumbar vertebra mesh in its local frame (mm), built once per process."""
    return _mesh_sdf(vertebra_sdf, (-44, -68, -24), (44, 22, 24), 2.0)


def lumbar_spine(
    base_centre: np.ndarray, base_normal: np.ndarray, scale: float, lordosis_deg: float, levels: int = 3
) -> list[trimesh.Trimesh]:
    """Vertebrae L5, L4, ... (``levels`` of them) stacked on the sacral base (S1 endplate centre and unit normal, RAS mm).

    Each level sits on a ``9 * scale`` mm disc along the current spine axis; the axis turns back
    (posteriorly, about x) by ``lordosis_deg`` per level, as the lumbar lordosis does.
    """
    template = vertebra_template()
    axis = np.asarray(base_normal, dtype=np.float64) / np.linalg.norm(base_normal)
    top = np.asarray(base_centre, dtype=np.float64)
    height, disc = 26.0 * scale, 9.0 * scale
    out = []
    for _ in range(levels):
        tilt = math.atan2(-axis[1], axis[2]) + math.radians(lordosis_deg)  # back toward the vertical, and beyond
        axis = np.array([0.0, -math.sin(tilt), math.cos(tilt)])
        centre = top + (disc + 0.5 * height) * axis
        rot = np.stack(
            [[1.0, 0.0, 0.0], np.cross(axis, [1.0, 0.0, 0.0]), axis], 1
        )  # columns: lateral, anterior, spine axis
        out.append(trimesh.Trimesh(template.vertices * scale @ rot.T + centre, template.faces, process=False))
        top = centre + 0.5 * height * axis
    return out
