"""Statistical shape model (PCA point-distribution model) per bone: build, register, fit.

Model (per bone), in the model frame (mm; the frame of the training meshes after generalized
Procrustes alignment to the first one, i.e. RAS world for CT-derived meshes):

    Y(b) = mean + sum_k b_k * sqrt(variance_k) * mode_k            (V, 3)

with ``b`` in standard deviations, ``mode_k`` orthonormal (flattened over V * 3) and ``variance_k``
in mm^2. A pose (4x4, model -> camera frame; rigid, or similarity when scale is fitted) places an
instance: X = s R Y(b) + t.

CLI::

    python -m scripts.ssm build --cases DIR --out runs/ssm/ssm.npz [--variance 0.98] [--scale]
                                [--register [--template DIR|models/ssm.npz]] [--bones pelvis femur_left ...]
    python -m scripts.ssm meshes --labels LABELS [--label-map totalsegmentator] --out DIR/CASE

``build`` reads ``DIR/<case>/meshes/<bone>.ply`` (every subfolder holding a ``meshes/`` folder, any name) and
writes one ``.npz`` (loadable with ``np.load(allow_pickle=False)``) plus a PNG of the explained variance beside
it; ``meshes`` writes a case's ``meshes/<bone>.ply`` from its CT label map (marching cubes, world RAS mm).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Mapping, Sequence

import numpy as np
import trimesh
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation
from scripts.config_flags import as_count, as_fraction, as_keywords, as_positive, path_argument
from scripts.data.llp26 import NOTICE as LLP26_NOTICE
from scripts.data.volumes import BONE_LABELS, LABEL_MAP_CHOICES, load_label_map, read_labels
from scripts.geometry import BONES, STANDARD_AP_ROTATION, Geometry, apply_transform
from scripts.io.files import (
    InputFileError,
    OneLineParser,
    PathLike,
    atomic_dir,
    atomic_path,
    exits_on_input_error,
    output_dir_problem,
    read_json,
    refuse_existing,
    refuse_models_dir,
    write_ply,
)
from scripts.io.progress import progress
from scripts.model.release import verify_shipped
from scripts.reconstruction.surface_metrics import point_to_surface
from scripts.shape_maths import generalized_procrustes
from skimage.measure import marching_cubes

MODEL_KEYS = ("mean", "faces", "modes", "variances")
MESHES_KIND = "label meshes"  # output-folder marker kind of ``meshes`` (scripts.io.files.atomic_dir)
MIN_FIT_POINTS = 10  # the fewest points fit_shape_model fits to


@dataclass(frozen=True)
class ShapeModel:
    """PCA shape model of one bone.

    Attributes:
        mean: (V, 3) mean vertices, model frame, mm.
        faces: (F, 3) triangle vertex indices shared by every instance.
        modes: (K, V, 3) principal directions, orthonormal when flattened to (K, V * 3).
        variances: (K,) variance of each mode, mm^2 (descending).
    """

    mean: np.ndarray
    faces: np.ndarray
    modes: np.ndarray
    variances: np.ndarray

    @property
    def n_modes(self) -> int:
        """Number K of kept modes."""
        return len(self.variances)

    def shape(self, coeffs: np.ndarray | None = None) -> np.ndarray:
        """Model-frame vertices (V, 3) in mm for coefficients ``coeffs`` (K,) in standard deviations (None: mean)."""
        if coeffs is None:
            return self.mean.copy()
        b = np.asarray(coeffs, dtype=np.float64) * np.sqrt(self.variances)
        return self.mean + np.tensordot(b, self.modes, axes=1)

    def instance(
        self, coeffs: np.ndarray | None = None, pose: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Vertices (V, 3) mm (posed by the 4x4 ``pose``, model -> target frame, when given) and faces (F, 3)."""
        v = self.shape(coeffs)
        return (v if pose is None else apply_transform(pose, v)), self.faces

    def mesh(self, coeffs: np.ndarray | None = None, pose: np.ndarray | None = None) -> trimesh.Trimesh:
        """:meth:`instance` as a mesh (mm)."""
        return trimesh.Trimesh(*self.instance(coeffs, pose), process=False)

    @functools.cached_property
    def outward(self) -> float:
        """+1 when the faces wind outward (the mean's signed volume is positive), -1 when inward; every instance shares it."""
        return 1.0 if self.mesh().volume >= 0 else -1.0

    @classmethod
    def load(cls, path: PathLike, bone: str) -> "ShapeModel":
        """The model of ``bone`` from a :func:`save_shape_models` file; raises :class:`InputFileError` when absent."""
        models, _ = load_shape_models(path)
        if bone not in models:
            raise InputFileError(path, f"no shape model for bone {bone!r} (has {sorted(models)})")
        return models[bone]


# ---------------------------------------------------------------------- storage
def save_shape_models(path: PathLike, models: Mapping[str, ShapeModel], metadata: Mapping | None = None) -> None:
    """Write per-bone models (keys ``<bone>/mean`` etc.) and JSON metadata to one ``.npz``, atomically."""
    arrays = {f"{bone}/{k}": getattr(m, k) for bone, m in models.items() for k in MODEL_KEYS}
    meta = dict(metadata or {}, bones=list(models))
    arrays["metadata"] = np.array(json.dumps(meta))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: NumPy appends .npz to a bare name
        np.savez_compressed(f, **arrays)


def load_shape_models(path: PathLike) -> tuple[dict[str, ShapeModel], dict]:
    """Read the models of :func:`save_shape_models` (no pickle) -> ({bone: ShapeModel}, metadata)."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "shape model file not found")
    verify_shipped(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(str(data["metadata"]))
        models = {}
        for bone in meta["bones"]:
            m = ShapeModel(*(data[f"{bone}/{k}"] for k in MODEL_KEYS))
            v = len(m.mean)
            if m.mean.shape != (v, 3) or m.modes.shape != (len(m.variances), v, 3) or m.faces.max(initial=-1) >= v:
                raise ValueError(f"inconsistent arrays for bone {bone!r}")
            if not all(np.isfinite(a).all() for a in (m.mean, m.modes, m.variances)):
                raise ValueError(f"non-finite values for bone {bone!r}")
            models[bone] = m
    except InputFileError:
        raise
    except Exception as e:  # zip, npy, JSON or key errors from a corrupt or foreign file
        raise InputFileError(path, f"not a readable shape model ({type(e).__name__}: {e})") from None
    return models, meta


# ---------------------------------------------------------------------- building
def build_shape_model(shapes: np.ndarray, faces: np.ndarray, variance: float = 0.98, scale: bool = False) -> ShapeModel:
    """PCA model from shapes (n, V, 3) in correspondence (mm) sharing ``faces``.

    Keeps the fewest modes whose variances sum to at least ``variance`` of the total (all non-zero
    modes when ``variance`` >= 1).
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    if shapes.ndim != 3 or shapes.shape[0] < 2 or shapes.shape[2] != 3:
        raise ValueError(f"need at least two shapes (n, V, 3) in correspondence, got {shapes.shape}")
    if not 0 < variance <= 1:
        raise ValueError(f"variance fraction must be in (0, 1], got {variance}")
    aligned = generalized_procrustes(shapes, scale=scale)
    n, v, _ = aligned.shape
    mean = aligned.mean(0)
    _, s, vt = np.linalg.svd((aligned - mean).reshape(n, -1), full_matrices=False)
    var = s**2 / (n - 1)
    var = var[var > 1e-12 * max(var.sum(), 1e-300)]
    if not var.size:
        raise ValueError(f"the {n} shapes are the same after alignment: nothing varies to model")
    k = len(var) if variance >= 1 else int(np.searchsorted(np.cumsum(var) / var.sum(), variance) + 1)
    return ShapeModel(mean, np.asarray(faces, dtype=np.int64), vt[:k].reshape(k, v, 3), var[:k])


def register_to_template(
    template: trimesh.Trimesh, target: trimesh.Trimesh, smoothness: Sequence[float] = (10.0, 2.0, 0.5, 0.1)
) -> np.ndarray:
    """Template vertices (V, 3) deformed onto ``target`` (same frame, mm), giving a shape in correspondence.

    Rigid ICP (template sample points -> target surface, started from the centroid offset), then
    non-rigid ICP (Amberg et al. 2007, ``trimesh.registration.nricp_amberg``) with stiffness
    decreasing through ``smoothness``.
    """
    initial = np.eye(4)
    initial[:3, 3] = target.centroid - template.centroid
    rigid, _, _ = trimesh.registration.icp(
        template.vertices, target, initial=initial, max_iterations=50, reflection=False, scale=False
    )
    moved = template.copy()
    moved.apply_transform(rigid)
    threshold = 10.0 * float(
        np.sqrt(target.area / max(len(target.vertices), 1)) + np.sqrt(moved.area / len(moved.vertices))
    )
    steps = [[ws, 0.0, 0.5, 10] for ws in smoothness]
    return np.asarray(
        trimesh.registration.nricp_amberg(moved, target, steps=steps, distance_threshold=threshold), dtype=np.float64
    )


# ---------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class ShapeFit:
    """Result of :func:`fit_shape_model`: completed surface in the points' frame (mm)."""

    vertices: np.ndarray  # (V, 3)
    faces: np.ndarray  # (F, 3)
    coeffs: np.ndarray  # (K,) standard deviations
    pose: np.ndarray  # (4, 4) model -> points' frame
    rms_mm: float  # RMS point-to-surface distance of the kept (non-trimmed) points
    inlier_fraction: float
    # isotropic scale (model -> points) that a similarity fit of the same points finds, 1 at the model's own size;
    # None unless asked for (scripts.reconstruction.reconstruct.complete_surfaces ``scale_bones``)
    similarity_scale: float | None = None

    def mesh(self) -> trimesh.Trimesh:
        """The completed surface as a mesh (points' frame, mm)."""
        return trimesh.Trimesh(self.vertices, self.faces, process=False)

    @property
    def scale(self) -> float:
        """The isotropic scale of :attr:`pose` (1 for a rigid fit; a similarity fit's, ``fit_scale``)."""
        return pose_scale(self.pose)


def pose_scale(pose: np.ndarray) -> float:
    """Isotropic scale of a 4x4 similarity pose (cube root of its 3x3 part's determinant)."""
    return float(np.cbrt(np.linalg.det(np.asarray(pose)[:3, :3])))


def _initial_pose(model: ShapeModel, points: np.ndarray, geometry: Geometry | None, rotation: np.ndarray) -> np.ndarray:
    """Rotation as given; translation puts the (in-view part of the) mean shape's centroid on the points' centroid."""
    pose = np.eye(4)
    pose[:3, :3] = rotation
    target = points.mean(0)
    pose[:3, 3] = target - rotation @ model.mean.mean(0)
    for _ in range(10 if geometry is not None else 0):
        v = apply_transform(pose, model.mean)
        inside = geometry.in_field_of_view(v)
        if not inside.any():
            break
        pose[:3, 3] += target - v[inside].mean(0)
    return pose


def _closest_vertices(
    x: np.ndarray, pts: np.ndarray, cand: np.ndarray, sides: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) and index of each point's closest candidate vertex of ``x``; with ``sides`` =
    (candidate faces the source, point faces the source), only among candidates facing its way."""
    if sides is None:
        dist, nn = cKDTree(x[cand]).query(pts)
        return dist, cand[nn]
    toward, point_toward = sides
    dist, v = np.empty(len(pts)), np.empty(len(pts), dtype=np.int64)
    for way in (True, False):
        sel = point_toward == way
        group = cand[toward == way]
        if not sel.any():
            continue
        dist[sel], v[sel] = _closest_vertices(x, pts[sel], group if len(group) >= 3 else cand, None)
    return dist, v


def fit_shape_model(
    model: ShapeModel,
    points: np.ndarray,
    geometry: Geometry | None = None,
    init_pose: np.ndarray | None = None,
    fit_scale: bool = False,
    n_iterations: int = 30,
    n_rigid_iterations: int = 5,
    max_points: int = 3000,
    regularisation_mm2: float = 0.05,
    trim_fraction: float = 0.1,
    max_sd: float = 3.0,
    tol_mm: float = 0.01,
    max_step_deg: float = 10.0,
    max_step_mm: float = 50.0,
    seed: int = 0,
    facing: np.ndarray | None = None,
    match_faces: bool = True,
) -> ShapeFit:
    """Fit pose and shape coefficients to partial surface points (N, 3) in mm (e.g. back-projected dual faces).

    Gauss-Newton on point-to-plane distances from each point to its closest model vertex (cKDTree;
    area-weighted vertex normals), minimising ``mean(e^2) + regularisation_mm2 * |b|^2`` (Mahalanobis
    prior, b in standard deviations, clipped to +-``max_sd``); the ``trim_fraction`` farthest points
    are dropped each iteration; up to ``n_rigid_iterations`` fit the pose only, then up to
    ``n_iterations - n_rigid_iterations`` pose and shape; each phase ends early once an update moves
    no model vertex by more than ``tol_mm``. With ``geometry`` the points are taken as camera-frame
    points seen through it and only model vertices inside its X-ray cone are matched (the rest of
    the bone is unseen, not absent).

    Args:
        init_pose: 4x4 model -> points' frame start; default the standard AP rotation (model in RAS)
            with the centroids matched.
        fit_scale: also fit an isotropic scale (similarity pose).
        max_points: random subsample of the points used (speed).
        tol_mm: convergence threshold (mm) on the largest vertex displacement of one update.
        max_step_deg, max_step_mm: trust region: an update that would rotate by more than
            ``max_step_deg`` or translate by more than ``max_step_mm`` is shortened (all of its
            parameters alike), so that points that fit the model badly cannot throw the pose away.
        facing: (N,) +1 for points of surfaces that face the X-ray source (front faces), -1 for those
            that face away (back faces). With ``geometry`` and ``match_faces``, each point is matched
            only to model vertices whose outward normal faces the same way (camera frame, source at
            the origin), so that a front-face point never pulls the model's back surface onto it
            (thin walls such as the iliac wing, or a bone seen from the front only).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) < MIN_FIT_POINTS or not np.isfinite(pts).all():
        raise ValueError(f"need at least {MIN_FIT_POINTS} finite points (N, 3), got shape {pts.shape}")
    rng = np.random.default_rng(seed)
    side = None
    if facing is not None and geometry is not None and match_faces:
        side = np.asarray(facing).reshape(-1) > 0
        if side.shape != (len(pts),):
            raise ValueError(f"facing needs one sign per point ({len(pts)}), got shape {np.shape(facing)}")
    if len(pts) > max_points:
        chosen = rng.choice(len(pts), max_points, replace=False)
        pts, side = pts[chosen], (side[chosen] if side is not None else None)
    pose = (
        np.asarray(init_pose, dtype=np.float64)
        if init_pose is not None
        else _initial_pose(model, pts, geometry, STANDARD_AP_ROTATION)
    )
    scale = pose_scale(pose)
    rot, t = pose[:3, :3] / scale, pose[:3, 3].copy()
    k = model.n_modes
    basis = model.modes.transpose(1, 2, 0) * np.sqrt(model.variances)  # (V, 3, K) mm per sd
    b = np.zeros(k)
    n_pose = 7 if fit_scale else 6
    incidence = trimesh.geometry.index_sparse(
        len(model.mean), model.faces
    ).tocsr()  # vertex-face, for area-weighted normals
    schedule = [False] * min(n_rigid_iterations, n_iterations) + [k > 0] * max(n_iterations - n_rigid_iterations, 0)
    it, previous = 0, None
    while it < len(schedule):
        shape_it = schedule[it]
        x = scale * model.shape(b) @ rot.T + t
        if previous is not None and np.abs(x - previous).max() < tol_mm:  # this phase has converged
            later = [i for i in range(it, len(schedule)) if schedule[i] != shape_it]
            if not later:
                break
            it, previous = later[0], None
            continue
        it, previous = it + 1, x
        tri = x[model.faces]
        face_areas = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # normals scaled by twice the area
        normals = trimesh.geometry.mean_vertex_normals(len(x), model.faces, face_areas, sparse=incidence)
        cand = np.flatnonzero(geometry.in_field_of_view(x)) if geometry is not None else np.arange(len(x))
        if len(cand) < 3:
            cand = np.arange(len(x))
        dist, v = _closest_vertices(
            x,
            pts,
            cand,
            None if side is None else (model.outward * np.einsum("ij,ij->i", normals[cand], x[cand]) < 0, side),
        )
        keep = dist <= np.quantile(dist, 1.0 - trim_fraction) + 1e-9
        v, p = v[keep], pts[keep]
        n = normals[v]
        q = x[v] - x.mean(0)
        e = np.einsum("ij,ij->i", n, p - x[v])
        cols = [np.cross(q, n), n] + ([np.einsum("ij,ij->i", n, q)[:, None]] if fit_scale else [])
        if shape_it:
            cols.append(np.einsum("ij,ijk->ik", scale * n @ rot, basis[v]))
        jac = np.concatenate(cols, 1)
        m = len(e)
        a = jac.T @ jac / m
        rhs = jac.T @ e / m
        a[np.diag_indices(n_pose)] += 1e-9
        if shape_it:
            a[n_pose:, n_pose:] += regularisation_mm2 * np.eye(k)
            rhs[n_pose:] -= regularisation_mm2 * b
        delta = np.linalg.solve(a, rhs)
        delta *= min(
            1.0,
            np.deg2rad(max_step_deg) / max(np.linalg.norm(delta[:3]), 1e-300),
            max_step_mm / max(np.linalg.norm(delta[3:6]), 1e-300),
        )
        c = x.mean(0)
        step_rot = Rotation.from_rotvec(delta[:3]).as_matrix()
        ds = 1.0 + (delta[6] if fit_scale else 0.0)
        rot, t, scale = step_rot @ rot, ds * step_rot @ (t - c) + c + delta[3:6], scale * ds
        if shape_it:
            b = np.clip(b + delta[n_pose:], -max_sd, max_sd)
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = scale * rot, t
    verts = apply_transform(pose, model.shape(b))
    dist, _ = cKDTree(verts).query(pts)
    keep = dist <= np.quantile(dist, 1.0 - trim_fraction) + 1e-9
    surf_dist = point_to_surface(pts[keep], trimesh.Trimesh(verts, model.faces, process=False))
    return ShapeFit(verts, model.faces, b, pose, float(np.sqrt(np.mean(surf_dist**2))), float(keep.mean()))


def _share_dropped(value: float | str, name: str) -> float:
    """``trim_fraction``: the share of points dropped, from 0 to below 1 (1 would drop them all)."""
    share = as_fraction(value, name)
    if share == 1:
        raise InputFileError(
            f"--{name}", f"must be a number from 0 to below 1 (the share of points dropped), got {value!r}"
        )
    return share


FIT_CHECKS = {  # fit_shape_model's settings by meaning (n_rigid_iterations: fit_settings)
    "n_iterations": functools.partial(as_count, minimum=1),
    "max_points": functools.partial(as_count, minimum=MIN_FIT_POINTS),
    "regularisation_mm2": functools.partial(as_positive, unit="mm^2", zero=True),
    "trim_fraction": _share_dropped,
    "max_sd": functools.partial(as_positive, unit="SD"),
    "tol_mm": functools.partial(as_positive, zero=True),
    "max_step_deg": functools.partial(as_positive, unit="degrees"),
    "max_step_mm": as_positive,
}


def fit_settings(settings: Mapping | None, given: Sequence[str] = ()) -> dict:
    """The ``ssm_fit`` keys of configs/inference.yaml as :func:`fit_shape_model`'s keyword arguments (less those its
    caller ``given`` itself), checked by meaning (:data:`FIT_CHECKS`): ``n_iterations`` at least 1,
    ``n_rigid_iterations`` from 0 to ``n_iterations``, ``max_points`` at least :data:`MIN_FIT_POINTS`,
    ``trim_fraction`` from 0 to below 1, ``max_sd`` (SD), ``max_step_deg`` and ``max_step_mm`` positive,
    ``regularisation_mm2`` and ``tol_mm`` (0: no early stop) at least 0, ``seed`` a whole number; else InputFileError
    naming the key (``--ssm_fit#n_iterations: must be a whole number of at least 1, got 0``)."""
    out = as_keywords(settings, "ssm_fit", fit_shape_model, given, FIT_CHECKS)
    if "n_rigid_iterations" in out:
        total = out.get("n_iterations", inspect.signature(fit_shape_model).parameters["n_iterations"].default)
        out["n_rigid_iterations"] = as_count(out["n_rigid_iterations"], "ssm_fit#n_rigid_iterations", maximum=total)
    return out


# ---------------------------------------------------------------------- CLI
def read_mesh(path: PathLike) -> trimesh.Trimesh:
    """Read a triangle mesh (PLY/STL/OBJ/...), refusing missing, unreadable or empty files."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "mesh file not found")
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as e:  # trimesh raises many types for corrupt files
        raise InputFileError(path, f"unreadable mesh ({type(e).__name__}: {e})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise InputFileError(path, "no triangles in mesh")
    if not np.isfinite(mesh.vertices).all():
        raise InputFileError(path, "mesh has NaN or Inf vertices")
    return mesh


def label_surfaces(
    labels_path: PathLike, bones: Sequence[str], label_map: Mapping | str | None = None, min_piece: float = 0.01
) -> dict[str, trimesh.Trimesh]:
    """World-RAS (mm) marching-cubes surfaces of bone labels read as the simulator reads them
    (:func:`scripts.data.volumes.read_labels`: a label volume with ``label_map``, or a TotalSegmentator folder);
    a bone without voxels is left out. The outer surface only: specks, pieces (face-connected) under ``min_piece`` of
    the bone's voxels (a segmentation's stray voxels), are left out and enclosed cavities filled (marrow voxels
    outside the mask); neither is the bone's shape, and in a registration template each small closed surface of
    them leaves the non-rigid ICP's system singular."""
    volume = read_labels(labels_path, None, label_map)
    labels, affine = volume.array, volume.affine
    out = {}
    for bone in bones:
        pieces, _ = ndimage.label(np.pad(labels == BONE_LABELS[bone], 1))
        sizes = np.bincount(pieces.ravel())[1:]
        occupied = ndimage.binary_fill_holes(np.isin(pieces, 1 + np.flatnonzero(sizes >= min_piece * sizes.sum())))
        if occupied.any():
            verts, faces, _, _ = marching_cubes(occupied.astype(np.float32), 0.5)
            out[bone] = trimesh.Trimesh(apply_transform(affine, verts - 1.0), faces[:, ::-1], process=False)
    return out


def write_label_meshes(
    labels_path: PathLike, case_dir: PathLike, bones: Sequence[str] = BONES, label_map: Mapping | str | None = None
) -> dict[str, int]:
    """A case's ``case_dir/meshes/<bone>.ply`` (the layout ``build`` reads) from its CT labels: :func:`label_surfaces`,
    world RAS mm, written as one folder (marker kind :data:`MESHES_KIND`; a rerun from the same labels replaces it,
    anything else there is refused). Returns vertices per bone; a bone without voxels raises :class:`InputFileError`."""
    surfaces = label_surfaces(labels_path, bones, label_map)
    missing = [bone for bone in bones if bone not in surfaces]
    if missing:
        raise InputFileError(labels_path, f"no voxels of {', '.join(missing)} (is --label-map right for these labels?)")
    with atomic_dir(Path(case_dir) / "meshes", MESHES_KIND, str(Path(labels_path).resolve())) as tmp:
        for bone, mesh in surfaces.items():
            write_ply(tmp / f"{bone}.ply", mesh.vertices, mesh.faces)
    return {bone: len(mesh.vertices) for bone, mesh in surfaces.items()}


def _plot_variance(path: Path, models: Mapping[str, ShapeModel]) -> None:
    import matplotlib.pyplot as plt
    from scripts.io.report import bone_colour, save_figure  # matplotlib (Agg) only when a model is built

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for k, (bone, m) in enumerate(models.items()):  # each bone its report colour, marker and line: equal curves show
        ax.plot(
            np.arange(1, m.n_modes + 1),
            np.cumsum(m.variances) / m.variances.sum() * 100,
            marker="os^Dv"[k % 5],
            linestyle=("-", "--", ":")[k % 3],
            fillstyle="none" if k % 2 else "full",
            color=bone_colour(bone),
            label=f"{bone} ({m.n_modes} modes)",
        )
    ax.set_xlabel("mode")
    ax.set_ylabel("cumulative variance kept (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def build_from_cases(
    cases_dir: PathLike,
    bones: Sequence[str] = BONES,
    variance: float = 0.98,
    scale: bool = False,
    register: bool = False,
    template_dir: PathLike | None = None,
    case_names: Sequence[str] | None = None,
    selection: str = "the case names given",
) -> tuple[dict[str, ShapeModel], dict]:
    """Models from ``cases_dir/<case>/meshes/<bone>.ply`` (:func:`case_folders`; only ``case_names`` when given,
    ``selection`` saying where they came from); ``register`` brings meshes into correspondence first.

    Raises:
        InputFileError: two cases holding the same surface of a bone (:func:`surface_fingerprint`: one CT meshed
            twice, e.g. from its TotalSegmentator folder and its multi-label file, or from its NIfTI and its DICOM
            series, or a copied case folder: it would count twice), before any registration.
    """
    cases = case_folders(cases_dir, case_names, selection)
    for bone in bones:
        first: dict[str, Path] = {}
        for case in cases:
            path = case / "meshes" / f"{bone}.ply"
            other = first.setdefault(surface_fingerprint(path), case) if path.is_file() else case
            if other != case:
                raise InputFileError(
                    path,
                    f"the same surface as {other.name}'s (one CT meshed twice, or a copied case folder): a shape model "
                    "counts each subject once; leave one of them out",
                )
    models = {}
    for bone in bones:
        template, template_path = registration_template(template_dir or cases[0] / "meshes", bone)
        shapes = []
        for case in progress(cases, desc=f"{bone} meshes", unit="case"):
            path = case / "meshes" / f"{bone}.ply"
            mesh = read_mesh(path)
            if register:
                try:
                    shapes.append(register_to_template(template, mesh))
                except (RuntimeError, np.linalg.LinAlgError) as e:  # scipy's splu: "Factor is exactly singular"
                    raise InputFileError(
                        path,
                        f"registering {template_path} onto it failed ({e}): take a template of one clean surface per "
                        "bone (--template models/ssm.npz)",
                    ) from None
            elif mesh.vertices.shape != template.vertices.shape or not np.array_equal(mesh.faces, template.faces):
                raise InputFileError(
                    path,
                    f"mesh topology differs from {template_path} ({len(mesh.vertices)} vs "
                    f"{len(template.vertices)} vertices); use --register",
                )
            else:
                shapes.append(np.asarray(mesh.vertices, dtype=np.float64))
        try:
            models[bone] = build_shape_model(np.stack(shapes), template.faces, variance=variance, scale=scale)
        except ValueError as e:
            raise InputFileError(cases_dir, f"{bone}: {e}") from None
    meta = {
        "cases": [c.name for c in cases],
        "n_training": len(cases),
        "variance_kept": variance,
        "similarity_procrustes": scale,
        "registered": register,
        **cohort_provenance(cases),
        "frame": "training mesh frame (RAS mm), Procrustes-aligned to the first case",
        "units": {"vertices": "mm", "variances": "mm^2", "coeffs": "standard deviations"},
    }
    return models, meta


def surface_fingerprint(path: PathLike) -> str:
    """SHA-256 of a mesh's vertex set (mm, rounded to 0.001, sorted): one surface's whatever its vertex order, e.g. one
    CT's labels meshed from its NIfTI and from its DICOM series (another storage order of the voxels)."""
    vertices = np.round(np.asarray(read_mesh(path).vertices, dtype=np.float64), 3) + 0.0  # + 0.0: -0.0 is 0.0
    return hashlib.sha256(np.unique(vertices, axis=0).tobytes()).hexdigest()


def registration_template(template: PathLike, bone: str) -> tuple[trimesh.Trimesh, Path]:
    """The template of ``bone`` and its path: a shape-model file's (``.npz``, e.g. the shipped models/ssm.npz) mean
    surface, its model frame, or ``template/<bone>.ply`` of a folder."""
    template = Path(template)
    if template.suffix == ".npz":
        return ShapeModel.load(template, bone).mesh(), template
    return read_mesh(template / f"{bone}.ply"), template / f"{bone}.ply"


def case_folders(
    cases_dir: PathLike, case_names: Collection[str] | None = None, selection: str = "the case names given"
) -> list[Path]:
    """The cases of a cohort of meshes: every subfolder of ``cases_dir`` (any name; hidden ones skipped) that holds
    a ``meshes/`` folder, in name order; with ``case_names`` only those (``selection``: where the names came from).

    Raises:
        InputFileError: fewer than two cases: what was looked for, where, and why each subfolder was left out.
    """
    cases_dir = Path(cases_dir)
    if not cases_dir.is_dir():
        raise InputFileError(cases_dir, "cases folder not found")
    cases, left_out = [], {}
    for d in sorted(p for p in cases_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        why = (
            "no meshes/ folder (python -m scripts.ssm meshes writes one from the case's labels)"
            if not (d / "meshes").is_dir()
            else f"not among {selection}" if case_names is not None and d.name not in case_names else None
        )
        if why is None:
            cases.append(d)
        else:
            left_out.setdefault(why, []).append(d.name)
    if len(cases) < 2:
        found = f"found {len(cases)}" + (f" ({cases[0].name})" if cases else "")
        why = "; ".join(
            f"{', '.join(names[:5])}{f' and {len(names) - 5} more' if len(names) > 5 else ''}: {reason}"
            for reason, names in left_out.items()
        )
        raise InputFileError(
            cases_dir,
            f"need at least two case folders (subfolders of any name holding meshes/<bone>.ply), {found}; "
            + (f"left out: {why}" if why else "it has no subfolders"),
        )
    return cases


def cohort_provenance(cases: Sequence[Path]) -> dict:
    """Anatomy and LLP26 subjects behind the cases (their phantom ``params.json``; empty for other meshes).

    ``llp26_subjects``: every LLP26 subject whose shape reached a case (a real subject itself, or the
    subjects of the PCA it was drawn from), so a model's metadata shows which subjects it has seen;
    ``notice``: LLP26's MPL-2.0 notice when any case derives from it.
    """
    anatomies, subjects = set(), set()
    for case in cases:
        path = case / "params.json"
        if not path.exists():
            continue
        params = read_json(path)
        anatomies.add(params.get("anatomy", "procedural") if "tissue" in params else "unknown")
        subjects.update(params.get("pca_subjects", []))
        if params.get("llp26_subject") is not None:
            subjects.add(int(params["llp26_subject"]))
    out: dict = {"anatomy": sorted(anatomies)} if anatomies else {}
    if subjects:
        out["llp26_subjects"] = sorted(subjects)
    if "llp26" in anatomies:
        out["notice"] = LLP26_NOTICE  # the MPL-2.0 notice travels with the model
    return out


def split_cases(datalist: PathLike, split: str) -> set[str]:
    """Case names (entries' "case") of one list of a simulator datalist."""
    entries = read_json(datalist).get(split)
    if not entries:
        raise InputFileError(datalist, f"no {split!r} entries")
    return {e["case"] for e in entries}


@exits_on_input_error
def main(argv: Sequence[str] | None = None) -> int:
    """CLI (``build``, ``meshes``); returns the exit status."""
    parser = OneLineParser(prog="python -m scripts.ssm", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build per-bone PCA shape models from a cohort of meshes")
    b.add_argument(
        "--cases",
        required=True,
        type=path_argument,
        help="folder with <case>/meshes/<bone>.ply (subfolders of any name)",
    )
    b.add_argument(
        "--out",
        required=True,
        type=path_argument,
        help="output .npz (a PNG of explained variance is written beside it); refused if either exists, unless --overwrite",
    )
    b.add_argument("--overwrite", action="store_true", help="replace an existing --out and its PNG")
    b.add_argument("--bones", nargs="+", default=list(BONES), choices=BONES, help="bones to model")
    b.add_argument(
        "--variance",
        type=float,
        default=0.98,
        help="fraction of variance the kept modes explain (default 0.98; the shipped models: 0.999)",
    )
    b.add_argument("--scale", action="store_true", help="similarity (not rigid) Procrustes alignment")
    b.add_argument("--register", action="store_true", help="bring meshes not in correspondence onto a template first")
    b.add_argument(
        "--template",
        default=None,
        type=path_argument,
        help="for --register: a folder with <bone>.ply templates, or a shape model .npz whose mean is the template "
        "(models/ssm.npz: the shipped models' vertices; default: the first case's meshes)",
    )
    b.add_argument(
        "--datalist",
        default=None,
        type=path_argument,
        help="simulator datalist.json: use only the cases of --split (keeps test subjects out)",
    )
    b.add_argument("--split", default="training", help="datalist list whose cases build the model (with --datalist)")
    m = sub.add_parser("meshes", help="write a case's meshes/<bone>.ply (world RAS mm) from its CT labels, for build")
    m.add_argument(
        "--labels",
        required=True,
        type=path_argument,
        help="label volume (ids mapped by --label-map) or TotalSegmentator output folder (hip_left.nii.gz, ...)",
    )
    m.add_argument(
        "--label-map",
        default=None,
        type=path_argument,
        help=f"JSON file {{source_id: bone id or name}} or preset: {', '.join(LABEL_MAP_CHOICES)}, as for scripts.simulate",
    )
    m.add_argument("--out", required=True, type=path_argument, help="the case folder: meshes/ is written in it")
    m.add_argument("--bones", nargs="+", default=list(BONES), choices=BONES, help="bones to mesh")
    args = parser.parse_args(argv)
    if args.command == "meshes":
        counts = write_label_meshes(args.labels, args.out, args.bones, load_label_map(args.label_map))
        for bone, n in counts.items():
            print(f"{Path(args.out) / 'meshes' / bone}.ply: {n} vertices")
        return 0
    out = Path(args.out)
    if out.suffix != ".npz":
        b.error(f"--out: must name a .npz file (the variance plot is written beside it as .png), got {out}")
    if not 0.0 < args.variance <= 1.0:
        b.error(f"--variance: must be a fraction in (0, 1], got {args.variance}")
    if args.datalist is None and args.split != "training":
        b.error("--split: selects a list of --datalist; give --datalist too")
    refuse_models_dir(out, "--out")
    problem = output_dir_problem(out.parent)  # before the build, which takes minutes
    if problem is not None:
        raise InputFileError(out, f"cannot be written: its folder {out.parent} {problem}")
    for path in (out, out.with_suffix(".png")):
        refuse_existing(path, args.overwrite)
    names, listed = None, ""
    if args.datalist:
        names = split_cases(args.datalist, args.split)
        listed = (
            f"the {args.split!r} cases of --datalist {args.datalist} "
            f"({', '.join(sorted(names)[:5])}{', ...' if len(names) > 5 else ''})"
        )
    models, meta = build_from_cases(
        args.cases, args.bones, args.variance, args.scale, args.register, args.template, names, listed
    )
    save_shape_models(out, models, meta)
    _plot_variance(out.with_suffix(".png"), models)
    for bone, m in models.items():
        print(f"{bone}: {len(m.mean)} vertices, {m.n_modes} modes, {np.sqrt(m.variances.sum()):.1f} mm total SD")
    return 0
