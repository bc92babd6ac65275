"""Real-anatomy subjects from LLP26: the subject split, a training-only PCA, and assembled, articulated hips.

A subject is a pelvis (both hemipelves and the sacrum) and a LEFT femur from LLP26
(:mod:`scripts.data.llp26`). It becomes a phantom subject in RAS+ world mm (+x patient right, +y anterior,
+z superior; origin midway between the two acetabulum centres), as the procedural phantom:

1. surfaces from the element nodes (fixed linear map), LLP26 frame turned into RAS;
2. the pelvis's own symmetry plane (mirror registration), its normal made world +x;
3. each acetabulum's sphere (fit to its lunate surface) and the femoral head's sphere;
4. the right femur is the left one reflected about the symmetry plane (faces reversed);
5. each femur is put in a neutral pose (mechanical axis, head centre to knee centre, vertical;
   transepicondylar axis along x), then articulated about its head centre (internal rotation,
   abduction, flexion; sides unequal) and seated: head centre on its acetabulum centre; the
   joint space (acetabulum radius minus head radius) is made at least ``MIN_JOINT_SPACE_MM`` and the
   bones at least ``MIN_CLEARANCE_MM`` apart: the heads shrink about their centres and the sockets
   grow about theirs, half each, blended out within 20 mm.

Subject split (indices of LLP26's ``projectedWeights`` columns), fixed here and in docs/phantom.md:
test 20-25, validation 17-19, training 0-16. Synthetic cohort subjects come from a PCA rebuilt from
the 17 training subjects alone (pelvis and femur in their own frames, so articulation is not a
shape mode); the test and validation subjects are written as they are with ``--subjects``.

Landmark vertex sets (acetabula, femoral head, knee, epicondyles, sacral base, pubic symphysis) are
chosen once on the training mean surface; the meshes are in correspondence, so the same vertex
indices serve every subject.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import trimesh
from scipy.spatial import cKDTree
from scripts.data import llp26
from scripts.shape_maths import (
    fit_sphere,
    generalized_procrustes,
    refit_sphere_shell,
    reflect,
    rotate_points_about,
    rotation_about,
    smoothstep,
    symmetry_plane,
)

if TYPE_CHECKING:  # scripts.data.phantom imports this module
    from scripts.data.phantom import PhantomCase, TissueOptions

TRAINING_SUBJECTS = tuple(range(0, 17))
VALIDATION_SUBJECTS = (17, 18, 19)
TEST_SUBJECTS = (20, 21, 22, 23, 24, 25)
SUBJECT_SPLITS = {"training": TRAINING_SUBJECTS, "validation": VALIDATION_SUBJECTS, "test": TEST_SUBJECTS}
MIN_JOINT_SPACE_MM = 4.0  # joint space of the seated hip: acetabulum radius - head radius (cartilage, about 4 mm)
MIN_CLEARANCE_MM = 1.0  # and the smallest bone-to-bone distance anywhere in the joint
MAX_SD = 2.5  # synthetic subjects: PCA coefficients clipped to +-MAX_SD standard deviations


# ---------------------------------------------------------------------- subjects and training PCA
def subject_nodes(j: int) -> tuple[np.ndarray, np.ndarray]:
    """Pelvis (1946, 3) and left-femur (634, 3) element nodes of LLP26 subject ``j``, RAS mm (LLP26 origin)."""
    nodes = llp26.llp26_to_ras(llp26.load_model().subject(j))
    return nodes[llp26.PELVIS_NODES], nodes[llp26.FEMUR_NODES]


@dataclass(frozen=True)
class TrainingPCA:
    """PCA of the training subjects' nodes: ``mean`` (N, 3) mm, ``modes`` (K, N, 3) orthonormal, ``sd`` (K,) mm;
    rows ``[:1946]`` pelvis, ``[1946:]`` left femur, each rigidly aligned within its own part."""

    mean: np.ndarray
    modes: np.ndarray
    sd: np.ndarray
    subjects: tuple[int, ...]

    def sample(self, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pelvis and femur nodes (RAS mm) for coefficients (K,) in standard deviations."""
        nodes = self.mean + np.tensordot(np.asarray(coeffs) * self.sd, self.modes, axes=1)
        return nodes[:1946], nodes[1946:]


@functools.lru_cache(maxsize=None)
def training_pca(subjects: tuple[int, ...] = TRAINING_SUBJECTS) -> TrainingPCA:
    """The PCA of :class:`TrainingPCA` rebuilt from ``subjects`` (default the 17 training subjects) only."""
    parts = [subject_nodes(j) for j in subjects]
    # each part rigidly aligned to its mean (orientation of the plain mean), placed at the first subject's centroid
    pelvis, femur = (
        generalized_procrustes(shapes, gauge="mean") + shapes[0].mean(0)
        for shapes in (np.stack([p for p, _ in parts]), np.stack([f for _, f in parts]))
    )
    x = np.concatenate([pelvis, femur], 1)
    mean = x.mean(0)
    _, s, vt = np.linalg.svd((x - mean).reshape(len(subjects), -1), full_matrices=False)
    keep = s > 1e-6 * s[0]
    k = int(keep.sum())
    return TrainingPCA(mean, vt[:k].reshape(k, *mean.shape), s[:k] / math.sqrt(len(subjects) - 1), tuple(subjects))


# ---------------------------------------------------------------------- landmark vertex sets (training mean)
@dataclass(frozen=True)
class Landmarks:
    """Vertex index sets of the pelvis and femur surfaces (see module docstring)."""

    acetabulum_left: np.ndarray
    acetabulum_right: np.ndarray
    head: np.ndarray
    knee: np.ndarray
    epicondyle_lateral: np.ndarray
    epicondyle_medial: np.ndarray
    sacral_base: np.ndarray
    symphysis: np.ndarray
    sacrum: np.ndarray  # every vertex of the sacrum surface
    hemipelves: np.ndarray  # every vertex of the two hemipelves
    hemipelvis_left: np.ndarray
    hemipelvis_right: np.ndarray


def _components(mesh: trimesh.Trimesh) -> list[np.ndarray]:
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    return [np.unique(mesh.faces[labels == c]) for c in np.unique(labels)]


@functools.lru_cache(maxsize=None)
def landmarks() -> Landmarks:
    """Landmark vertex sets chosen on the training mean (pelvis and femur as in the original CT frame)."""
    pca = training_pca()
    pelvis_nodes, femur_nodes = pca.sample(np.zeros(len(pca.sd)))
    pelvis = surface("pelvis", pelvis_nodes)
    femur = surface("femur", femur_nodes)
    parts = sorted(_components(pelvis), key=lambda v: pelvis.vertices[v, 0].mean())
    if len(parts) != 3:
        raise ValueError(f"LLP26 pelvis: expected 3 closed surfaces, found {len(parts)}")
    left, sacrum, right = parts  # RAS: patient left at -x
    fv = femur.vertices
    # femoral head: the femur vertices nearest the pelvis, refined by a sphere fit
    near = cKDTree(pelvis.vertices[left]).query(fv)[0]
    toward = pelvis.vertices[left].mean(0)  # the shell is kept on the side facing the hemipelvis
    head, centre, radius = refit_sphere_shell(
        fv,
        np.flatnonzero(near < np.quantile(near, 0.03)),
        2.5,
        5,
        keep=lambda p, c, r: (p - c) @ (toward - c) > -0.2 * r * np.linalg.norm(toward - c),
    )
    # acetabula: hemipelvis vertices on a sphere about the head centre (lunate surface), normals facing it
    pv, pn = pelvis.vertices, pelvis.vertex_normals

    def socket(verts: np.ndarray, c: np.ndarray) -> np.ndarray:
        r = radius + 2.0
        for tolerance in (8.0, 5.0, 3.0, 3.0):
            d = np.linalg.norm(pv[verts] - c, axis=1)
            facing = np.einsum("ij,ij->i", pn[verts], c - pv[verts]) > 0.7 * d
            chosen = verts[(np.abs(d - r) < tolerance) & facing]
            c, r = fit_sphere(pv[chosen])
        return chosen

    acet_left = socket(left, centre)
    normal, offset = symmetry_plane(pv)
    acet_right = socket(right, reflect(centre[None], normal, offset)[0])
    # knee and epicondyles: distal femur
    z = fv[:, 2]
    knee = np.flatnonzero(z < z.min() + 45.0)
    lateral_dir = -normal  # left femur: lateral is -x (RAS)
    lat = fv[knee] @ lateral_dir
    epi_l = knee[lat > np.quantile(lat, 0.97)]
    epi_m = knee[lat < np.quantile(lat, 0.03)]
    # sacral base: superior-facing sacrum vertices near the midline in its top 30 mm
    sv = pv[sacrum]
    mid = np.abs(sv @ normal - offset) < 18.0
    top = sv[:, 2] > sv[mid, 2].max() - 30.0
    up = pn[sacrum][:, 2] > 0.5
    sacral_base = sacrum[mid & top & up]
    # pubic symphysis: hemipelvis vertices nearest the symmetry plane below the hip centres
    hemi = np.concatenate([left, right])
    lowmid = hemi[(pv[hemi, 2] < centre[2]) & (np.abs(pv[hemi] @ normal - offset) < 20.0) & (pv[hemi, 1] > centre[1])]
    return Landmarks(acet_left, acet_right, head, knee, epi_l, epi_m, sacral_base, lowmid, sacrum, hemi, left, right)


@functools.lru_cache(maxsize=None)
def _surface_maps() -> dict[str, llp26.SurfaceMap]:
    return {"pelvis": llp26.bone_surface_map("pelvis"), "femur": llp26.bone_surface_map("femur")}


def surface(bone: str, nodes: np.ndarray) -> trimesh.Trimesh:
    """Surface mesh of ``"pelvis"`` (nodes (1946, 3)) or ``"femur"`` (nodes (634, 3)), same frame as the nodes."""
    smap = _surface_maps()[bone]
    part = llp26.PELVIS_NODES if bone == "pelvis" else llp26.FEMUR_NODES
    full = np.zeros((smap.weights.shape[1], 3))
    full[part] = nodes
    return smap.mesh(full)


# ---------------------------------------------------------------------- assembly: frame, mirror, pose, seat
@dataclass
class Subject:
    """An assembled subject in RAS mm: meshes (pelvis, femur_left, femur_right), landmarks and the sacral base frame."""

    meshes: dict[str, trimesh.Trimesh]
    params: dict


def femur_pose(side: str, flexion_deg: float, abduction_deg: float, internal_rotation_deg: float) -> np.ndarray:
    """Rotation (3, 3), RAS, of a femur about its head centre from the neutral pose (mechanical axis along z).

    Internal rotation (anterior surface turns medially) about z, then abduction (knee lateral) about
    y, then flexion (knee anterior) about x. ``side`` "femur_left" (at -x) or "femur_right" (at +x).
    """
    sign = 1.0 if side == "femur_right" else -1.0  # lateral is sign * x
    r_rot = rotation_about(np.array([0.0, 0.0, 1.0]), sign * math.radians(internal_rotation_deg))
    r_abd = rotation_about(np.array([0.0, 1.0, 0.0]), -sign * math.radians(abduction_deg))
    r_flex = rotation_about(np.array([1.0, 0.0, 0.0]), math.radians(flexion_deg))
    return r_flex @ r_abd @ r_rot


FEMUR_VARIATION_SD = {"version_deg": 8.0, "neck_shaft_deg": 4.0, "bow_mm": 3.0}  # per unit of ``femur_variation``
VARIATION_TOP_MM = 70.0  # below the head centre (lesser trochanter): the proximal block moves as one above it
VARIATION_KNEE_MM = 80.0  # above the knee centre: the condyles never move


def femur_neutral_frame(verts: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Head centre (3,) mm, head radius (mm) and rotation (3, 3) of a LEFT femur's neutral frame from its surface
    vertices (:func:`surface`): RAS axes, head at the origin, head-to-knee (mechanical) axis along -z,
    transepicondylar axis (lateral) along -x; ``local = (points - centre) @ rotation.T``.

    A right femur made by reflecting the left one (:func:`assemble`) has the mirror frame: its local
    coordinates are the left one's with x negated."""
    lm = landmarks()
    centre, radius = fit_sphere(verts[lm.head])
    up = centre - verts[lm.knee].mean(0)
    up /= np.linalg.norm(up)
    lat = verts[lm.epicondyle_lateral].mean(0) - verts[lm.epicondyle_medial].mean(0)
    lat -= (lat @ up) * up
    lat /= np.linalg.norm(lat)
    local_axes = np.stack([lat, np.cross(up, lat), up], 1)  # columns: lateral, its cross with up, up
    return centre, radius, np.diag([-1.0, -1.0, 1.0]) @ local_axes.T  # lateral -> -x, then +z x (-x) = -y


def section_centroid(mesh: trimesh.Trimesh, z_mm: float) -> np.ndarray:
    """Area centroid (3,) mm of a closed surface's cross-section by the plane z = ``z_mm`` (its largest loop,
    shoelace formula), in the mesh's frame: where a femur's shaft axis crosses that level in its neutral frame."""
    section = mesh.section(plane_origin=[0.0, 0.0, z_mm], plane_normal=[0.0, 0.0, 1.0])
    if section is None:
        raise ValueError(f"the surface does not reach z = {z_mm} mm")
    loop = max(section.discrete, key=len)
    x, y = loop[:, 0], loop[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    return np.array([((x + np.roll(x, -1)) * cross).sum(), ((y + np.roll(y, -1)) * cross).sum(), 0.0]) / (
        3.0 * cross.sum()
    ) + [0.0, 0.0, z_mm]


def _turn_neck(local: np.ndarray, neutral: trimesh.Trimesh, angle_rad: float) -> np.ndarray:
    """Neutral-frame points (N, 3) mm with head and neck turned by ``angle_rad`` (valgus positive)
    about the AP axis through the neck-shaft intersection; the shaft axis runs through the cross-section
    centroids of the ``neutral`` surface 80 and 140 mm below the head centre."""
    top, low = (section_centroid(neutral, -VARIATION_TOP_MM - dz) for dz in (10.0, 70.0))
    axis = (top - low) / np.linalg.norm(top - low)
    # where a neck of about 128 deg meets the shaft axis: about 0.8 x the offset below the head centre
    pivot = top + axis * (-0.8 * np.linalg.norm(top[:2]) - top[2]) / axis[2]
    neck = -pivot / np.linalg.norm(pivot)
    angle = -angle_rad * smoothstep(((local - pivot) @ neck / np.linalg.norm(pivot) - 0.45) / 0.3)
    # left femur, head medial (+x): valgus turns the neck toward +z, about +y by a negative angle
    return rotate_points_about(local, pivot, np.array([0.0, 1.0, 0.0]), angle)


def vary_femur(
    femur_nodes: np.ndarray, version_deg: float = 0.0, neck_shaft_deg: float = 0.0, bow_mm: float = 0.0
) -> np.ndarray:
    """LEFT-femur nodes (634, 3) RAS mm with femoral version, neck-shaft angle and anterior shaft bow changed.

    In the neutral frame (:func:`femur_neutral_frame`), with ``z_top`` ``VARIATION_TOP_MM`` below the
    head centre and ``z_knee`` ``VARIATION_KNEE_MM`` above the knee centre:

    - version: everything above ``z_top`` turns about the mechanical axis by ``version_deg``
      (positive: more anteversion, the head further anterior of the condyles), fading to 0 at ``z_knee``;
    - neck-shaft angle: head and neck turn by ``neck_shaft_deg`` (positive: valgus) about the AP axis
      through the neck-shaft intersection on the shaft axis, fading out along the neck toward the shaft;
    - bow: the shaft between ``z_top`` and ``z_knee`` moves anteriorly by ``bow_mm`` * 4t(1 - t).

    Smooth maps of the nodes, so vertex correspondence across subjects is kept.
    """
    mesh = surface("femur", femur_nodes)
    centre, _, rot = femur_neutral_frame(mesh.vertices)
    local = (np.asarray(femur_nodes, dtype=np.float64) - centre) @ rot.T
    neutral = trimesh.Trimesh((mesh.vertices - centre) @ rot.T, mesh.faces, process=False)
    z_top, z_knee = -VARIATION_TOP_MM, neutral.vertices[landmarks().knee, 2].mean() + VARIATION_KNEE_MM
    z = local[:, 2]
    if neck_shaft_deg:
        local = _turn_neck(local, neutral, math.radians(neck_shaft_deg))
    t = (z - z_knee) / (z_top - z_knee)  # 0 at the knee end, 1 at the top of the shaft
    if version_deg:
        local = rotate_points_about(
            local, np.zeros(3), np.array([0.0, 0.0, 1.0]), np.radians(version_deg) * smoothstep(t)
        )
    if bow_mm:
        tc = np.clip(t, 0.0, 1.0)
        local = local + np.c_[np.zeros_like(tc), bow_mm * 4.0 * tc * (1.0 - tc), np.zeros_like(tc)]
    return centre + local @ rot


def shrink_head(verts: np.ndarray, centre: np.ndarray, radius: float, delta_mm: float) -> np.ndarray:
    """Femur vertices with the head moved ``delta_mm`` toward its centre, blended out along the neck (monotone radial map)."""
    r = np.linalg.norm(verts - centre, axis=1)
    t = np.clip((r - radius - 1.0) / 19.0, 0.0, 1.0)
    w = 1.0 - t * t * (3 - 2 * t)
    return centre + (verts - centre) * (1.0 - delta_mm * w / np.maximum(r, 1e-9))[:, None]


def winding_number(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Generalised winding number (P,) of a closed, outward-oriented mesh at points (P, 3): 1 inside, 0 outside
    (sum of the triangles' signed solid angles, Van Oosterom and Strackee); robust near thin walls and edges."""
    out = np.zeros(len(points))
    tri = mesh.triangles
    for i in range(0, len(points), 64):
        r = tri[None, :, :, :] - points[i : i + 64, None, None, :]  # (p, F, 3, 3)
        n = np.linalg.norm(r, axis=3)
        det = np.einsum("pfi,pfi->pf", r[:, :, 0], np.cross(r[:, :, 1], r[:, :, 2]))
        dots = [np.einsum("pfi,pfi->pf", r[:, :, a], r[:, :, b]) for a, b in ((0, 1), (1, 2), (2, 0))]
        denom = (
            n[:, :, 0] * n[:, :, 1] * n[:, :, 2] + dots[0] * n[:, :, 2] + dots[1] * n[:, :, 0] + dots[2] * n[:, :, 1]
        )
        out[i : i + 64] = 2.0 * np.arctan2(det, denom).sum(1) / (4.0 * np.pi)
    return out


def _clearance(femur_verts: np.ndarray, hemipelvis: trimesh.Trimesh) -> float:
    """Smallest distance (mm) from femur vertices to a closed hemipelvis surface; negative when a vertex is inside the bone
    (femur vertices more than 10 mm from it count as outside: seating leaves the head within a few mm of its socket)."""
    _, distance, _ = trimesh.proximity.closest_point(hemipelvis, femur_verts)
    near = distance < 10.0
    inside = np.zeros(len(distance), dtype=bool)
    if near.any():
        inside[near] = winding_number(hemipelvis, femur_verts[near]) > 0.5
    return float(np.min(np.where(inside, -distance, distance)))


def assemble(
    pelvis_nodes: np.ndarray,
    femur_nodes: np.ndarray,
    pose: dict,
    pelvic_tilt_deg: float = 0.0,
    sacral_slope_deg: float = 38.0,
) -> Subject:
    """Subject meshes in RAS mm from pelvis and left-femur nodes (any rigid frame of RAS orientation).

    ``pose`` holds per side ``{"flexion_deg", "abduction_deg", "internal_rotation_deg"}``; the pelvis
    is turned so its symmetry plane is x = 0, then tilted by ``pelvic_tilt_deg`` about x (positive:
    anterior tilt, the pubis moves down). World origin: midway between the acetabulum centres.
    ``sacral_slope_deg`` (before the tilt) orients the S1 endplate on which the lumbar spine stands.
    """
    lm = landmarks()
    pelvis = surface("pelvis", pelvis_nodes)
    femur = surface("femur", femur_nodes)
    normal, _ = symmetry_plane(pelvis.vertices)
    # the pelvis frame: symmetry normal -> +x (smallest rotation), then tilt; origin between the acetabula
    axis = np.cross(normal, [1.0, 0.0, 0.0])
    angle = math.asin(min(1.0, np.linalg.norm(axis)))
    rot = rotation_about(axis, angle) if angle > 1e-9 else np.eye(3)
    rot = rotation_about(np.array([1.0, 0.0, 0.0]), -math.radians(pelvic_tilt_deg)) @ rot
    acet = {s: fit_sphere(pelvis.vertices[getattr(lm, f"acetabulum_{s}")]) for s in ("left", "right")}
    origin = 0.5 * (acet["left"][0] + acet["right"][0])
    to_world = lambda p: (np.asarray(p) - origin) @ rot.T  # noqa: E731
    pelvis_world = trimesh.Trimesh(to_world(pelvis.vertices), pelvis.faces, process=False)
    hemi_faces = {
        s: pelvis.faces[np.all(np.isin(pelvis.faces, getattr(lm, f"hemipelvis_{s}")), 1)] for s in ("left", "right")
    }
    # the right femur: the left one reflected (faces reversed), i.e. its neutral frame with x negated
    head_c, head_r, neutral_rot = femur_neutral_frame(femur.vertices)
    neutral_left = (femur.vertices - head_c) @ neutral_rot.T
    params: dict = {"symmetry_plane_normal_llp26_ras": normal.tolist(), "pelvic_tilt_deg": float(pelvic_tilt_deg)}
    placed = {}
    for side, neutral, faces in (
        ("femur_left", neutral_left, femur.faces),
        ("femur_right", neutral_left * [-1.0, 1.0, 1.0], femur.faces[:, ::-1]),
    ):
        prm = pose[side]
        local = neutral @ femur_pose(side, prm["flexion_deg"], prm["abduction_deg"], prm["internal_rotation_deg"]).T
        a_c, a_r = acet[side.split("_")[1]]
        placed[side] = (local, np.ascontiguousarray(faces), to_world(a_c[None])[0], a_r)
    # joint space: the heads shrink and the sockets grow by half of it each (one shrink: the femurs stay mirror images)
    pelvis_verts = pelvis_world.vertices
    delta = max(0.0, max(MIN_JOINT_SPACE_MM - (a_r - head_r) for _, _, _, a_r in placed.values()))
    for _ in range(6):
        grown = pelvis_verts
        for _, _, a_c, a_r in placed.values():
            grown = shrink_head(grown, a_c, a_r, -0.5 * delta)
        clear = min(
            _clearance(
                shrink_head(loc, np.zeros(3), head_r, 0.5 * delta)[lm.head] + a_c,
                trimesh.Trimesh(grown, hemi_faces[side.split("_")[1]], process=False),
            )
            for side, (loc, _, a_c, _) in placed.items()
        )
        if clear >= MIN_CLEARANCE_MM:
            break
        delta += MIN_CLEARANCE_MM - clear + 0.2
    meshes = {"pelvis": trimesh.Trimesh(grown, pelvis.faces, process=False)}
    for side, (local, faces, a_c, a_r) in placed.items():
        verts = shrink_head(local, np.zeros(3), head_r, 0.5 * delta) + a_c
        meshes[side] = trimesh.Trimesh(verts, faces, process=False)
        params[side] = dict(
            pose[side],
            head_centre_mm=a_c.tolist(),
            acetabulum_radius_mm=float(a_r + 0.5 * delta),
            head_radius_mm=float(head_r - 0.5 * delta),
            joint_space_mm=float(a_r - head_r + delta),
        )
    pelvis_world = meshes["pelvis"]
    params["joint_space_added_mm"] = float(delta)
    params["sacral_base"] = _sacral_base(pelvis_world, lm, sacral_slope_deg + pelvic_tilt_deg)
    params["symphysis_mm"] = pelvis_world.vertices[lm.symphysis].mean(0).tolist()
    return Subject({b: meshes[b] for b in ("pelvis", "femur_left", "femur_right")}, params)


def _sacral_base(pelvis: trimesh.Trimesh, lm: Landmarks, slope_deg: float) -> dict:
    """Centre (mm) of the S1 endplate (centroid of the sacral-base vertices) and its unit normal, facing
    superiorly and anteriorly at ``slope_deg`` from the vertical (the sacral slope)."""
    slope = math.radians(slope_deg)
    return {
        "centre_mm": pelvis.vertices[lm.sacral_base].mean(0).tolist(),
        "normal": [0.0, math.sin(slope), math.cos(slope)],
        "slope_deg": float(slope_deg),
    }


# ---------------------------------------------------------------------- sampling
def sample_pose(rng: np.random.Generator) -> dict:
    """Hip articulation of a supine AP pelvis radiograph (degrees): per side flexion, abduction, internal rotation.

    Internal rotation: 60% of subjects are positioned for a standard AP hip view (feet turned in,
    12-22 deg), the rest lie as they are (-15 external .. 10 internal); sides differ by N(0, 4).
    Flexion -5..12 and abduction -3..10 (negative: adduction; the knees stay apart), each side with
    its own part.
    """
    standard_view = rng.uniform() < 0.6
    rotation = rng.uniform(12.0, 22.0) if standard_view else rng.uniform(-15.0, 10.0)
    flexion, abduction = rng.uniform(-5.0, 12.0), rng.uniform(-3.0, 10.0)
    return {
        side: {
            "flexion_deg": float(np.clip(flexion + rng.normal(0.0, 3.0), -8.0, 15.0)),
            "abduction_deg": float(np.clip(abduction + rng.normal(0.0, 2.0), -4.0, 12.0)),
            "internal_rotation_deg": float(np.clip(rotation + rng.normal(0.0, 4.0), -20.0, 27.0)),
        }
        for side in ("femur_left", "femur_right")
    } | {"standard_ap_hip_view": bool(standard_view)}


def subject_shape(subject: int | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """Pelvis and femur nodes: LLP26 subject ``subject`` as it is, or (None) a draw of the training PCA."""
    if subject is not None:
        pelvis, femur = subject_nodes(subject)
        return pelvis, femur, {"llp26_subject": int(subject)}
    pca = training_pca()
    coeffs = np.clip(rng.normal(0.0, 1.0, len(pca.sd)), -MAX_SD, MAX_SD)
    pelvis, femur = pca.sample(coeffs)
    return pelvis, femur, {"pca_coefficients_sd": coeffs.tolist(), "pca_subjects": list(pca.subjects)}


def femur_variation_draw(scale: float, rng: np.random.Generator) -> dict:
    """Arguments of :func:`vary_femur`: normal draws of ``scale`` x ``FEMUR_VARIATION_SD``, clipped to +-``MAX_SD`` of it."""
    return {
        k: float(np.clip(rng.normal(0.0, scale * sd), -MAX_SD * scale * sd, MAX_SD * scale * sd))
        for k, sd in FEMUR_VARIATION_SD.items()
    }


def sample_subject(seed: int, subject: int | None = None, attempt: int = 0, femur_variation: float = 0.0) -> Subject:
    """One articulated subject from ``seed``: a training-PCA draw, or LLP26 subject ``subject``, with a seeded pose.

    The shape depends on ``seed`` (and ``femur_variation``) only; ``attempt`` > 0 redraws the pose (hip
    articulation, pelvic tilt, sacral slope) of the same shape. ``femur_variation`` > 0 widens a PCA
    draw's femur beyond the training subjects' span (:func:`vary_femur`, SDs ``femur_variation`` x
    ``FEMUR_VARIATION_SD``); real subjects stay as they are.
    """
    pelvis, femur, shape = subject_shape(subject, np.random.default_rng([seed, 26]))
    if femur_variation > 0.0 and subject is None:
        variation = femur_variation_draw(femur_variation, np.random.default_rng([seed, 28]))
        femur = vary_femur(femur, **variation)
        shape["femur_variation"] = variation
    rng = np.random.default_rng([seed, 27, attempt])
    pose = sample_pose(rng)
    tilt, slope = float(rng.uniform(-5.0, 5.0)), float(rng.uniform(30.0, 45.0))
    out = assemble(pelvis, femur, pose, tilt, slope)
    out.params.update(shape, standard_ap_hip_view=pose["standard_ap_hip_view"])
    return out


# ---------------------------------------------------------------------- a phantom case (CT, labels, meshes)
FEMUR_CROP_MM = 250.0  # the CT ends this far below the lower hip centre (an AP pelvis view sees about 150 mm)
LESSER_TROCHANTER_DROP_MM = 70.0  # below the head centre, about; the femoral cortex thickens below it
POSE_ATTEMPTS = 5


def generate_llp26_case(
    seed: int,
    spacing_mm: float = 1.0,
    subject: int | None = None,
    femur_variation: float = 0.0,
    options: "TissueOptions | None" = None,
) -> "PhantomCase":
    """A real-anatomy phantom case (:class:`scripts.data.phantom.PhantomCase`) from ``seed``.

    ``subject`` None: a subject drawn from the training PCA; otherwise LLP26 subject ``subject``
    itself (validation or test). The seed also draws the hip pose, pelvic tilt, body habitus and
    tissues, the lumbar lordosis and the bladder. A pose whose bones would share a voxel is redrawn
    (same shape: the meshes depend on the spacing only through such a redraw), and so is one whose
    femurs would cross the midline. ``femur_variation``: see :func:`sample_subject`; ``options``:
    :class:`scripts.data.phantom.TissueOptions` (None: its defaults).
    """
    from scripts.data.phantom import BoneOverlapError, PhantomCase, TissueOptions, sample_tissue, synthesize_ct
    from scripts.data.phantom_anatomy import lumbar_spine

    if subject is not None and subject not in VALIDATION_SUBJECTS + TEST_SUBJECTS + TRAINING_SUBJECTS:
        raise ValueError(f"LLP26 subject {subject} out of range 0..{llp26.N_SUBJECTS - 1}")
    for attempt in range(POSE_ATTEMPTS):
        rng = np.random.default_rng([seed, attempt])
        sub = sample_subject(seed, subject, attempt, femur_variation)
        left, right = sub.meshes["femur_left"].vertices, sub.meshes["femur_right"].vertices
        if left[:, 0].max() > -2.0 or right[:, 0].min() < 2.0:  # the legs would cross
            continue
        params = {"seed": int(seed), "anatomy": "llp26", "pose_attempt": attempt, **sub.params}
        habitus = float(rng.uniform(0.0, 1.0))
        tissue = sample_tissue(rng, habitus, options or TissueOptions())
        sym = np.asarray(params["symphysis_mm"])
        volume_ml = float(rng.uniform(60.0, 400.0))
        r = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi * 1.4 * 1.0 * 0.9)) ** (1.0 / 3.0)
        radii = np.array([1.4 * r, 0.9 * r, r])  # wider than deep, about as tall
        tissue["bladder"] = {
            "centre_mm": (sym + (0.0, -12.0 - radii[1], 0.6 * radii[2])).tolist(),
            "radii_mm": radii.tolist(),
            "hu": float(rng.uniform(5.0, 20.0)),
            "volume_ml": volume_ml,
        }
        params["tissue"] = tissue
        width = float(np.ptp(sub.meshes["pelvis"].vertices[:, 0]))
        base = params["sacral_base"]
        lordosis = float(rng.uniform(8.0, 14.0))
        params["lumbar"] = {"levels": ["L5", "L4", "L3"], "lordosis_deg_per_level": lordosis, "scale": width / 270.0}
        vertebrae = lumbar_spine(np.asarray(base["centre_mm"]), np.asarray(base["normal"]), width / 270.0, lordosis)
        hips_z = min(params[s]["head_centre_mm"][2] for s in ("femur_left", "femur_right"))
        shaft_tops = {
            s: params[s]["head_centre_mm"][2] - LESSER_TROCHANTER_DROP_MM * width / 270.0
            for s in ("femur_left", "femur_right")
        }
        try:
            ct, labels, affine = synthesize_ct(
                sub.meshes, params, spacing_mm, rng, shaft_tops, vertebrae, hips_z - FEMUR_CROP_MM
            )
        except BoneOverlapError:
            continue
        params.update(
            spacing_mm=float(spacing_mm),
            inter_iliac_width_mm=width,
            volume_shape=list(ct.shape),
            femur_crop_mm=FEMUR_CROP_MM,
        )
        return PhantomCase(ct, labels, affine, sub.meshes, params)
    raise BoneOverlapError(f"LLP26 phantom seed {seed}: bones overlap in {POSE_ATTEMPTS} poses")


def subject_of_split(split: str) -> tuple[int, ...]:
    """LLP26 subject indices of ``split`` ("training", "validation" or "test")."""
    if split not in SUBJECT_SPLITS:
        raise ValueError(f"unknown subject split {split!r} (one of {', '.join(SUBJECT_SPLITS)})")
    return SUBJECT_SPLITS[split]
