"""Phantom cohorts: CT (HU), bone labels and corresponding surface meshes, of real or procedural anatomy.

Every case lives in RAS+ world mm (+x patient Right, +y Anterior, +z Superior): the patient's
right femur is at +x, the left femur at -x, so in the standard AP radiograph (image columns toward
the patient's LEFT) femur_left appears at larger u than femur_right. Labels are the exact
voxelisation (ray parity along z through voxel centres) of the meshes. Bones come from
:mod:`scripts.data.real_anatomy` (``llp26``, the default: real adult pelvis and femur shapes of the
LLP26 model) or :mod:`scripts.data.phantom_anatomy` (``procedural``: one template per bone); either way a
bone has the same vertices and faces in every subject. The body (soft tissue, gas, bladder,
vertebrae) and the CT are made here, by one piece of code for both.

CLI::

    python -m scripts.phantom [--anatomy llp26|procedural] --n N --out DIR --seed S [--start K] [--spacing MM] [--workers W]
    python -m scripts.phantom --anatomy llp26 --subjects test|validation [--n CASES_PER_SUBJECT] --out DIR --seed S

``--start K`` writes cases ``K .. K+N-1`` of the seed's cohort (``case_{K:04d}`` ...): the same
subjects a cohort of ``K+N`` would hold, so a cohort can be extended without touching its cases.
``--subjects`` writes LLP26's real validation (17-19) or test (20-25) subjects themselves as
``subject_JJ_KK`` (subject JJ, case KK: its own pose and body); a cohort without it draws its
subjects from a PCA of the training subjects (0-16) only.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import trimesh  # noqa: E402
from scipy import ndimage  # noqa: E402
from scripts.config_flags import argument, as_count, as_positive, path_argument  # noqa: E402
from scripts.data import phantom_anatomy as anatomy  # noqa: E402
from scripts.data.llp26 import NOTICE as LLP26_NOTICE  # noqa: E402
from scripts.data.volumes import BONE_LABELS, VERTEBRAE_LABEL  # noqa: E402
from scripts.geometry import BONES  # noqa: E402
from scripts.io.files import (  # noqa: E402
    InputFileError,
    OneLineParser,
    atomic_dir,
    check_replaceable,
    exits_on_input_error,
    make_output_dir,
    remove_partials,
    write_json,
    write_nifti,
)
from scripts.io.progress import progress  # noqa: E402
from scripts.io.report import bone_colour, save_figure  # noqa: E402
from scripts.rasterise import rasterise_triangles  # noqa: E402
from scripts.shape_maths import smoothstep  # noqa: E402

HU_AIR, HU_FAT, HU_GAS = -1000, -100, -950
ANATOMIES = ("llp26", "procedural")
DEFAULT_ANATOMY = "llp26"
POSTERIOR_TISSUE_MM = (30.0, 55.0)  # soft tissue behind the pelvis, mm, leanest .. heaviest body build
OSTEOPOROSIS = (
    0.0,
    0.0,
)  # range of the bone-loss factor (0: the young-adult bone of the draws, 1: severe), drawn per subject
# what bone loss 1 leaves of each bone draw (trabecular bone loses most, the cortex thins and loses less density)
BONE_LOSS_AT_1 = {"trabecular_hu": 0.35, "cortical_hu": 0.65, "cortex_mm": 0.6, "shaft_cortex_mm": 0.6}
# a case's peak memory at 1 mm, GiB (the heaviest builds' grids, about 76 L, at some 15 bytes a voxel, and the process);
# it grows as (1 mm / spacing)^3. Simulating a phantom peaks about as high (docs/simulation.md: 1.95 GiB at 1 mm).
PEAK_GIB_AT_1MM = 2.0
MAX_CASES = 10**6  # case indices of a cohort (--start + --n): far beyond any cohort, a seed (4 bytes) drawn for each


def physical_memory() -> int | None:
    """This machine's physical memory, bytes; None where the system does not say (no ``os.sysconf``)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_spacing(value: float | str, name: str = "spacing", memory: int | None = None) -> float:
    """``value`` as a phantom's voxel spacing, mm: positive, and coarse enough for a case, about
    :data:`PEAK_GIB_AT_1MM` x (1 mm / spacing)^3 GiB, to fit in ``memory`` bytes (default: :func:`physical_memory`;
    16 GiB: 0.5 mm or coarser); else InputFileError naming ``--name`` (it would run out of memory part-way)."""
    spacing = as_positive(value, name)
    memory = physical_memory() if memory is None else memory
    need = PEAK_GIB_AT_1MM * 2**30 / spacing**3
    if memory is not None and need > memory:
        finest = math.ceil(round(100 * (PEAK_GIB_AT_1MM * 2**30 / memory) ** (1 / 3), 6)) / 100  # 0.01 mm up
        raise InputFileError(
            f"--{name}",
            f"{spacing:g} mm needs about {need / 2**30:.3g} GiB of memory per case ({PEAK_GIB_AT_1MM:g} GiB at 1 mm, "
            f"x (1 mm / spacing)^3); this machine has {memory / 2**30:.3g} GiB: use {finest:g} mm or coarser",
        )
    return spacing


def check_femur_variation(value: float | str, name: str = "femur_variation") -> float:
    """``value`` as ``--femur_variation`` S, in SD: from 0 up to where its version draws (+-MAX_SD x S x 8 degrees)
    reach 90 degrees, beyond which the femoral neck would point sideways (4.5); else InputFileError naming ``--name``.
    """
    from scripts.data.real_anatomy import FEMUR_VARIATION_SD, MAX_SD  # LLP26 is read only when asked for

    widest = 90.0 / (MAX_SD * FEMUR_VARIATION_SD["version_deg"])
    scale = as_positive(value, name, unit="SD", zero=True)
    if scale > widest:
        raise InputFileError(
            f"--{name}",
            f"must be at most {widest:g} SD (its version draws reach +-{MAX_SD:g} x {FEMUR_VARIATION_SD['version_deg']:g} "
            f"degrees x S: beyond 90 degrees the femoral neck would point sideways), got {value}",
        )
    return scale


@dataclass(frozen=True)
class TissueOptions:
    """What a cohort draws or renders beyond the default subjects (:func:`sample_tissue`, :func:`synthesize_ct`).

    ``posterior_tissue_mm``: (lean, heavy) range of the soft tissue behind the pelvis, mm (equal ends fix it);
    ``osteoporosis``: range of the bone-loss factor drawn per subject (0: young-adult bone, 1: severe);
    ``partial_volume_cortex``: a voxel holding part of the cortex gets the cortex's share of it (cortical and
    trabecular HU mixed) instead of a cortex thinner than a voxel being widened to a whole voxel at cortical HU.
    The defaults draw and render every subject as before.
    """

    posterior_tissue_mm: tuple[float, float] = POSTERIOR_TISSUE_MM
    osteoporosis: tuple[float, float] = OSTEOPOROSIS
    partial_volume_cortex: bool = False


DEFAULT_TISSUE = TissueOptions()


@dataclass
class PhantomCase:
    """One subject. ``ct`` int16 HU and ``labels`` uint8 indexed (X, Y, Z); ``affine`` voxel -> RAS mm."""

    ct: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    meshes: dict[str, trimesh.Trimesh]
    params: dict = field(default_factory=dict)


# ---------------------------------------------------------------------- subject parameters
def sample_params(seed: int, options: TissueOptions = DEFAULT_TISSUE) -> dict:
    """Shape and tissue parameters of one subject (lengths mm, angles degrees), from ``seed`` (``options``:
    :func:`sample_tissue`)."""
    rng = np.random.default_rng(seed)
    u = rng.uniform
    habitus = float(u(0.0, 1.0))  # body build, lean (0) to heavy (1): drives every soft-tissue depot

    nsa, av = u(122.0, 138.0), u(5.0, 25.0)
    length = u(200.0, 300.0)

    def side() -> dict:
        return {
            "neck_shaft_angle": float(np.clip(nsa + rng.normal(0, 1.5), 120.0, 140.0)),
            "anteversion": float(np.clip(av + rng.normal(0, 2.0), 5.0, 25.0)),
            "femur_length": float(length + rng.normal(0, 3.0)),
            "shaft_thickness": float(u(0.9, 1.1)),
            "adduction": float(u(5.0, 10.0)),
            "flexion": float(u(-5.0, 5.0)),
        }

    return {
        "seed": int(seed),
        "scale": float(u(0.95, 1.05)),
        "pelvis_width": float(u(0.97, 1.03)),
        "pelvis_depth": float(u(0.92, 1.08)),
        "pelvis_height": float(u(0.93, 1.07)),
        "iliac_flare": float(u(-0.03, 0.03)),
        "head_radius": float(u(21.5, 25.5)),
        "femur_left": side(),
        "femur_right": side(),
        "tissue": sample_tissue(rng, habitus, options),
    }


def sample_tissue(rng: np.random.Generator, habitus: float, options: TissueOptions = DEFAULT_TISSUE) -> dict:
    """Bone HU, muscle HU and soft-tissue depots (mm) of one subject; every depot follows the ``habitus`` (0 lean .. 1 heavy).

    ``options.posterior_tissue_mm``: (lean, heavy) range of the soft tissue behind the pelvis (the patient lies on
    it on the table; an AP radiograph hardly shows it). Equal ends fix it; the draws do not depend on it.
    ``options.osteoporosis``: range of a bone-loss factor ``o`` drawn per subject (a child stream of ``rng``, so
    every other draw stays as it is): each bone draw is scaled by ``1 - o * (1 - BONE_LOSS_AT_1[key])``
    (trabecular HU to 35% at ``o = 1``, cortical HU to 65%, cortices to 60% of their thickness). The
    default (0, 0) draws nothing and changes nothing. ``options.partial_volume_cortex`` is recorded for
    :func:`synthesize_ct` (``partial_volume_cortex: true``; absent by default).
    """
    u = rng.uniform

    def depot(low: float, high: float) -> float:
        """A soft-tissue thickness (mm) following the habitus, with 10% of the range individual."""
        return float(low + (high - low) * np.clip(habitus + rng.normal(0.0, 0.1), 0.0, 1.0))

    tissue = {
        "cortical_hu": float(u(1300.0, 1700.0)),
        "trabecular_hu": float(u(180.0, 350.0)),
        "muscle_hu": float(u(30.0, 55.0)),
        "cortex_mm": float(u(1.5, 2.5)),
        "shaft_cortex_mm": float(u(4.0, 6.5)),
        "habitus": habitus,
        "fat_mm": depot(8.0, 35.0),
        "lateral_tissue_mm": depot(35.0, 75.0),
        "anterior_tissue_mm": depot(40.0, 110.0),
        "posterior_tissue_mm": depot(*options.posterior_tissue_mm),
        "thigh_radius_mm": depot(70.0, 95.0),
        "gas_pockets": int(rng.integers(0, 5)),
    }
    if options.osteoporosis[1] > 0.0:
        loss = float(rng.spawn(1)[0].uniform(*options.osteoporosis))
        tissue.update(
            {key: tissue[key] * (1.0 - loss * (1.0 - kept)) for key, kept in BONE_LOSS_AT_1.items()}, osteoporosis=loss
        )
    if options.partial_volume_cortex:
        tissue["partial_volume_cortex"] = True
    return tissue


def build_meshes(params: dict) -> dict[str, trimesh.Trimesh]:
    """Subject meshes (RAS mm, outward normals) in BONES order, and head centres added to ``params``."""
    pelvis = anatomy.pelvis_template()
    meshes = {"pelvis": trimesh.Trimesh(anatomy.deform_pelvis(pelvis.vertices, params), pelvis.faces, process=False)}
    for name in ("femur_left", "femur_right"):
        verts, faces, centre = anatomy.femur_world(name, params)
        meshes[name] = trimesh.Trimesh(verts, faces, process=False)
        params[name]["head_centre_mm"] = centre.tolist()
    return meshes


# ---------------------------------------------------------------------- voxelisation
def voxelize(mesh: trimesh.Trimesh, origin: np.ndarray, spacing: float, shape: tuple[int, int, int]) -> np.ndarray:
    """Boolean (X, Y, Z) occupancy of a closed mesh at voxel centres ``origin + spacing * index`` (mm).

    Ray parity along +z per (x, y) column: each triangle is rasterised in xy with a top-left fill
    rule (a column on a shared edge counts once) and toggles the voxels above its crossing.
    """
    v = (np.asarray(mesh.vertices) - origin) / spacing
    tri = v[np.asarray(mesh.faces)]
    pixel, z, _ = rasterise_triangles(tri[..., :2], tri[..., 2], (shape[1], shape[0]))
    py, px = np.divmod(pixel, shape[0])
    k = np.clip(np.ceil(z), 0, shape[2]).astype(np.int64)
    flat = (px * shape[1] + py) * (shape[2] + 1) + k
    toggles = (np.bincount(flat, minlength=shape[0] * shape[1] * (shape[2] + 1)) & 1).astype(np.uint8)
    toggles = toggles.reshape(shape[0], shape[1], shape[2] + 1)
    return np.bitwise_xor.accumulate(toggles, axis=2)[..., : shape[2]].astype(bool)


# ---------------------------------------------------------------------- CT synthesis
def _body_layout(meshes: dict[str, trimesh.Trimesh | trimesh.PointCloud], params: dict) -> dict:
    """Torso ellipse (centre y, half axes) and thigh circles following the femoral shafts, mm."""
    t = params["tissue"]
    pb = meshes["pelvis"].bounds
    half_width = max(abs(m.bounds[:, 0]).max() for m in meshes.values()) + t["lateral_tissue_mm"]
    y0, y1 = pb[0, 1] - t["posterior_tissue_mm"], pb[1, 1] + t["anterior_tissue_mm"]
    thighs = []
    for name in ("femur_left", "femur_right"):
        v = meshes[name].vertices
        top, bottom = v[v[:, 2] < np.percentile(v[:, 2], 45)], v[v[:, 2] < np.percentile(v[:, 2], 3)]
        medial = -np.sign(top[:, 0].mean()) * 12.0
        thighs.append(
            (
                top[:, :2].mean(0) + (medial, 8.0),
                bottom[:, :2].mean(0) + (medial, 8.0),
                top[:, 2].mean(),
                bottom[:, 2].mean(),
            )
        )
    return {"torso": (0.5 * (y0 + y1), half_width, 0.5 * (y1 - y0)), "crotch_z": pb[0, 2] + 10.0, "thighs": thighs}


def _body_sdf(x: np.ndarray, y: np.ndarray, z: np.ndarray, layout: dict, thigh_r: float) -> np.ndarray:
    """Approximate signed distance (mm) to the body surface: torso above the crotch smoothly joined to two thighs."""
    yc, a, b = layout["torso"]
    torso = (np.hypot(x / a, (y - yc) / b) - 1.0) * min(a, b) + 2.5 * np.maximum(layout["crotch_z"] - z, 0.0)
    out = torso
    for c_top, c_bot, z_top, z_bot in layout["thighs"]:
        f = np.clip((z - z_bot) / (z_top - z_bot), None, 1.0)
        cx, cy = c_bot[0] + f * (c_top[0] - c_bot[0]), c_bot[1] + f * (c_top[1] - c_bot[1])
        out = anatomy.smooth_union(out, np.hypot(x - cx, y - cy) - thigh_r, 25.0)
    return out


def _bone_hu(
    mask: np.ndarray, spacing: float, cortex_mm: np.ndarray | float, params: dict, rng: np.random.Generator
) -> np.ndarray:
    """HU at the voxels of one bone mask (in ``mask[mask]`` order): cortical shell of thickness ``cortex_mm``
    (a number, or an array broadcast to the mask) over a trabecular interior, both with a smooth texture.

    A voxel whose centre lies ``d`` mm inside (distance to the nearest voxel outside the mask, ``spacing`` for the
    outermost) is cortex when ``d <= max(cortex_mm, spacing)``: a cortex thinner than a voxel takes the whole outer
    voxel. With ``tissue.partial_volume_cortex`` it holds the cortex's share ``clip((cortex_mm - d + spacing) /
    spacing, 0, 1)`` instead (the cortex laid from the surface half a voxel outside the outer centres), its HU and
    texture mixed by that share, so the cortex's mass along the normal is ``cortex_mm`` at any voxel size.

    The texture is a coarse N(0, 1) field (one value per 8 voxels) interpolated linearly, as
    ``scipy.ndimage.zoom(field, 8, order=1)`` edge-padded to the mask's shape would, at the mask's voxels only.
    """
    t = params["tissue"]
    depth = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    idx = np.nonzero(mask)
    thickness = np.broadcast_to(cortex_mm, mask.shape)[idx]
    coarse = rng.normal(0.0, 1.0, size=tuple(max(2, s // 8) for s in mask.shape))
    zoomed = [max(round(c * 8), 1) for c in coarse.shape]  # the shape zoom(coarse, 8) has
    coords = [
        np.minimum(i, z - 1) * ((c - 1) / (z - 1) if z > 1 else 0.0)
        for i, c, z in zip(idx, coarse.shape, zoomed, strict=True)
    ]
    texture = ndimage.map_coordinates(coarse, coords, order=1)
    if not t.get("partial_volume_cortex"):
        cortex = depth[idx] <= np.maximum(thickness, spacing)
        return np.where(cortex, t["cortical_hu"] + 80.0 * texture, t["trabecular_hu"] + 50.0 * texture)
    share = np.clip((thickness - depth[idx] + spacing) / spacing, 0.0, 1.0)
    return t["trabecular_hu"] + share * (t["cortical_hu"] - t["trabecular_hu"]) + (50.0 + 30.0 * share) * texture


def _volume_grid(
    meshes: Sequence[trimesh.Trimesh | trimesh.PointCloud],
    layout: dict,
    thigh_r: float,
    spacing: float,
    z_floor_mm: float | None = None,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Origin (first voxel centre, mm) and shape of a grid holding every mesh (above ``z_floor_mm``) and the body cross-section."""
    lo = np.min([m.bounds[0] for m in meshes], 0) - (0.0, 0.0, 6.0)
    hi = np.max([m.bounds[1] for m in meshes], 0) + (0.0, 0.0, 15.0)
    if z_floor_mm is not None:
        lo[2] = max(lo[2], z_floor_mm)
    yc, a, b = layout["torso"]
    body_lo = [-a, yc - b]
    body_hi = [a, yc + b]
    for c_top, c_bot, _, _ in layout["thighs"]:
        for c in (c_top, c_bot):
            body_lo = np.minimum(body_lo, c - thigh_r)
            body_hi = np.maximum(body_hi, c + thigh_r)
    lo[:2] = np.minimum(lo[:2], body_lo) - 8.0
    hi[:2] = np.maximum(hi[:2], body_hi) + 8.0
    shape = tuple(int(math.ceil((h - l) / spacing)) + 1 for l, h in zip(lo, hi, strict=True))
    return lo, shape


class BoneOverlapError(RuntimeError):
    """Two bones of a subject share a voxel (the subject's pose or shape is not physical)."""


def voxelize_closed_surfaces(
    mesh: trimesh.Trimesh, origin: np.ndarray, spacing: float, shape: tuple[int, int, int]
) -> np.ndarray:
    """:func:`voxelize` of each closed surface (connected component) of ``mesh``, joined: touching parts stay filled."""
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    if labels.max(initial=0) == 0:
        return voxelize(mesh, origin, spacing, shape)
    out = np.zeros(shape, dtype=bool)
    for c in np.unique(labels):
        out |= voxelize(trimesh.Trimesh(mesh.vertices, mesh.faces[labels == c], process=False), origin, spacing, shape)
    return out


def synthesize_ct(
    meshes: dict[str, trimesh.Trimesh],
    params: dict,
    spacing_mm: float,
    rng: np.random.Generator,
    shaft_top_z: dict[str, float],
    vertebrae: Sequence[trimesh.Trimesh] = (),
    z_floor_mm: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CT (int16 HU), labels (uint8) and affine (voxel -> RAS mm) of one subject's bone meshes (RAS mm).

    Serves every anatomy: body (torso and thighs following the habitus, subcutaneous fat, muscle),
    bones as the exact voxelisation of the meshes (cortex over trabecular bone; the femoral cortex
    thickens below ``shaft_top_z``), ``vertebrae`` as label ``VERTEBRAE_LABEL`` (rendered, never
    reconstructed), bowel gas and, when ``params["tissue"]["bladder"]`` is given, a urinary bladder.
    The grid holds every mesh above ``z_floor_mm`` (bones below it are cut by the volume's edge).
    Raises :class:`BoneOverlapError` when two bones of ``meshes`` share a voxel.
    """
    t = params["tissue"]
    if z_floor_mm is None:
        inside = meshes
    else:  # the body and the grid follow the bones' parts above the volume's floor
        inside = {name: trimesh.PointCloud(m.vertices[m.vertices[:, 2] >= z_floor_mm]) for name, m in meshes.items()}
    layout = _body_layout(inside, params)
    origin, shape = _volume_grid([*inside.values(), *vertebrae], layout, t["thigh_radius_mm"], spacing_mm, z_floor_mm)
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = origin

    # body: soft tissue with a subcutaneous fat layer, air outside
    xs, ys, zs = ((origin[i] + spacing_mm * np.arange(shape[i])).astype(np.float32) for i in range(3))
    ct = np.full(shape, HU_AIR, dtype=np.float32)
    muscle = np.zeros(shape, dtype=bool)
    for k in range(0, shape[2], 8):  # slabs of 8 slices: the same values, computed in cache
        body = _body_sdf(xs[:, None, None], ys[None, :, None], zs[None, None, k : k + 8], layout, t["thigh_radius_mm"])
        ct[:, :, k : k + 8][body < 0] = HU_FAT
        muscle[:, :, k : k + 8] = body < -t["fat_mm"]
    ct[muscle] = t["muscle_hu"]

    # bones: exact voxelisation of the meshes, each in its own bounding box
    labels = np.zeros(shape, dtype=np.uint8)
    bones = [(name, meshes[name], BONE_LABELS[name]) for name in BONES] + [
        ("vertebra", m, VERTEBRAE_LABEL) for m in vertebrae
    ]
    for name, mesh, label in bones:
        i0 = np.clip(np.floor((mesh.bounds[0] - origin) / spacing_mm).astype(int) - 1, 0, None)
        i1 = np.minimum(np.ceil((mesh.bounds[1] - origin) / spacing_mm).astype(int) + 2, shape)
        box = tuple(slice(a, b) for a, b in zip(i0, i1, strict=True))
        mask = voxelize_closed_surfaces(mesh, origin + i0 * spacing_mm, spacing_mm, tuple(i1 - i0))
        if label == VERTEBRAE_LABEL:
            mask &= labels[box] == 0  # a vertebra never takes a voxel of a reconstructed bone
        elif (labels[box][mask] != 0).any():
            raise BoneOverlapError(f"phantom seed {params.get('seed')}: {name} overlaps another bone")
        labels[box][mask] = label
        cortex = t["cortex_mm"]
        if name in shaft_top_z:
            z_box = zs[box[2]][None, None, :]
            cortex = t["cortex_mm"] + (t["shaft_cortex_mm"] - t["cortex_mm"]) * smoothstep(
                shaft_top_z[name] - z_box, 0.0, 40.0
            )
        ct[box][mask] = _bone_hu(mask, spacing_mm, cortex, params, rng)

    soft = (labels == 0) & muscle

    def fill_ellipsoid(centre: np.ndarray, radii: np.ndarray, hu: float) -> None:
        """Soft-tissue voxels inside an axis-aligned ellipsoid (mm) get ``hu`` (evaluated in its bounding box only)."""
        box = tuple(
            slice(int(np.searchsorted(a, c - r)), int(np.searchsorted(a, c + r, side="right")))
            for a, c, r in zip((xs, ys, zs), centre, radii, strict=True)
        )
        x, y, z = xs[box[0]][:, None, None], ys[box[1]][None, :, None], zs[box[2]][None, None, :]
        inside = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + (
            (z - centre[2]) / radii[2]
        ) ** 2 < 1
        ct[box][inside & soft[box]] = hu

    # bowel gas in the lower abdomen, in soft tissue only
    pb = meshes["pelvis"].bounds
    for _ in range(t["gas_pockets"]):
        c = rng.uniform((-0.4 * pb[1, 0], pb[0, 1] + 40.0, 0.5 * pb[1, 2]), (0.4 * pb[1, 0], pb[1, 1], pb[1, 2]))
        fill_ellipsoid(c, rng.uniform(8.0, 25.0, size=3), HU_GAS)
    bladder = t.get("bladder")
    if bladder:
        fill_ellipsoid(np.asarray(bladder["centre_mm"]), np.asarray(bladder["radii_mm"]), bladder["hu"])
    return np.round(ct).astype(np.int16), labels, affine


def generate_case(
    seed: int,
    spacing_mm: float = 1.0,
    anatomy_name: str = DEFAULT_ANATOMY,
    subject: int | None = None,
    femur_variation: float = 0.0,
    options: TissueOptions = DEFAULT_TISSUE,
) -> PhantomCase:
    """One phantom subject from ``seed`` on an isotropic ``spacing_mm`` grid (same seed -> same case).

    ``anatomy_name``: ``"procedural"`` (template bones, this module) or ``"llp26"`` (real anatomy,
    :mod:`scripts.data.real_anatomy`: a training-PCA draw, or LLP26 subject ``subject`` itself);
    ``femur_variation`` (llp26 draws) widens their femurs' version, neck-shaft angle and bow;
    ``options``: the ranges of the soft tissue behind the pelvis and of bone loss, and the cortex's rendering
    (:class:`TissueOptions`).
    """
    if not (math.isfinite(spacing_mm) and spacing_mm > 0):
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
    if anatomy_name == "llp26":
        from scripts.data.real_anatomy import generate_llp26_case  # LLP26 is read only when asked for

        return generate_llp26_case(seed, spacing_mm, subject, femur_variation, options)
    if anatomy_name != "procedural" or subject is not None or femur_variation:
        raise ValueError(
            f"unknown anatomy {anatomy_name!r} (or a subject index or femur variation for the procedural phantom)"
        )
    params = sample_params(seed, options)
    meshes = build_meshes(params)
    shaft_tops = {
        name: params[name]["head_centre_mm"][2] + anatomy.LESSER_TROCHANTER_LEVEL * params["scale"]
        for name in ("femur_left", "femur_right")
    }
    ct, labels, affine = synthesize_ct(meshes, params, spacing_mm, np.random.default_rng([seed, 1]), shaft_tops)
    params["spacing_mm"] = float(spacing_mm)
    params["inter_iliac_width_mm"] = float(np.ptp(meshes["pelvis"].vertices[:, 0]))
    params["volume_shape"] = list(ct.shape)
    return PhantomCase(ct, labels, affine, meshes, params)


# ---------------------------------------------------------------------- output
def save_preview(case: PhantomCase, path: Path) -> None:
    """PNG: AP and lateral mean-attenuation projections and a coronal slice with label colours."""
    mu = np.clip(case.ct.astype(np.float32) + 1000.0, 0.0, None)
    ap = mu.mean(1).T[::-1, ::-1]  # rows superior->inferior, columns toward patient's left
    lat = mu.mean(0).T[::-1]  # rows superior->inferior, columns posterior->anterior
    hips = np.mean([case.params[n]["head_centre_mm"] for n in ("femur_left", "femur_right")], 0)
    j = int(round((hips[1] - case.affine[1, 3]) / case.affine[1, 1]))
    cor_ct = case.ct[:, j, :].T[::-1, ::-1]
    cor_lab = case.labels[:, j, :].T[::-1, ::-1]
    fig, axes = plt.subplots(1, 3, figsize=(12, 5))
    axes[0].imshow(ap, cmap="gray")
    axes[0].set_title("AP projection (patient left on the right)", fontsize=9)
    axes[1].imshow(lat, cmap="gray")
    axes[1].set_title("lateral projection (anterior right)", fontsize=9)
    axes[2].imshow(cor_ct, cmap="gray", vmin=-300, vmax=1500)
    colours = np.zeros(cor_lab.shape + (4,))
    for name, value in BONE_LABELS.items():
        colours[cor_lab == value] = matplotlib.colors.to_rgba(bone_colour(name), 0.45)
    axes[2].imshow(colours)
    axes[2].set_title("coronal slice through the hip centres", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"phantom seed {case.params['seed']}, {case.params['spacing_mm']:g} mm", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def write_case(case: PhantomCase, out_dir: str | Path) -> None:
    """Write ct.nii.gz, labels.nii.gz, meshes/<bone>.ply, params.json and preview.png into ``out_dir`` atomically,
    and NOTICE.txt (the MPL-2.0 notice) for a case derived from LLP26."""
    with atomic_dir(out_dir, "phantom case") as tmp:
        if case.params.get("anatomy") == "llp26":
            (tmp / "NOTICE.txt").write_text(LLP26_NOTICE + "\n")
        write_nifti(tmp / "ct.nii.gz", case.ct, case.affine)
        write_nifti(tmp / "labels.nii.gz", case.labels, case.affine)
        (tmp / "meshes").mkdir()
        for name, mesh in case.meshes.items():
            mesh.export(tmp / "meshes" / f"{name}.ply")
        write_json(tmp / "params.json", case.params)
        save_preview(case, tmp / "preview.png")


def case_seeds(n: int, seed: int, start: int = 0) -> list[int]:
    """Seeds of cases ``start .. start+n-1`` of the cohort drawn from ``seed`` (a prefix never changes)."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(start + n, dtype=np.uint32)[start:]]


def _write_one(task: tuple[int, Path, float, str, int | None, float, TissueOptions]) -> Path:
    case_seed, folder, spacing_mm, anatomy_name, subject, femur_variation, options = task
    write_case(generate_case(case_seed, spacing_mm, anatomy_name, subject, femur_variation, options), folder)
    return folder


def cohort_tasks(
    n: int,
    out: Path,
    seed: int,
    spacing_mm: float,
    start: int,
    anatomy_name: str,
    subjects: str | None,
    femur_variation: float = 0.0,
    options: TissueOptions = DEFAULT_TISSUE,
) -> list[tuple]:
    """(case seed, folder, spacing, anatomy, subject, femur variation, :class:`TissueOptions`) of every case to write.

    Without ``subjects``: cases ``out/case_XXXX``, ``start .. start+n-1`` of the seed's cohort. With
    ``subjects`` ("validation" or "test", LLP26 only): for each of that split's real subjects ``j``,
    cases ``out/subject_JJ_KK``, ``k = start .. start+n-1``, each with its own seeded pose and body.
    """
    if subjects is None:
        return [
            (s, out / f"case_{start + i:04d}", spacing_mm, anatomy_name, None, femur_variation, options)
            for i, s in enumerate(case_seeds(n, seed, start))
        ]
    if anatomy_name != "llp26":
        raise ValueError("--subjects needs --anatomy llp26")
    from scripts.data.real_anatomy import subject_of_split

    if subjects == "training":
        raise ValueError("--subjects training: training cases are drawn from the training PCA (leave --subjects out)")
    return [
        (s, out / f"subject_{j:02d}_{start + i:02d}", spacing_mm, anatomy_name, j, 0.0, options)
        for j in subject_of_split(subjects)
        for i, s in enumerate(case_seeds(n, int(np.random.SeedSequence([seed, j]).generate_state(1)[0]), start))
    ]


def generate_cohort(
    n: int,
    out: str | Path,
    seed: int = 0,
    spacing_mm: float = 1.0,
    workers: int = 1,
    start: int = 0,
    anatomy_name: str = DEFAULT_ANATOMY,
    subjects: str | None = None,
    femur_variation: float = 0.0,
    options: TissueOptions = DEFAULT_TISSUE,
) -> list[Path]:
    """Write a cohort with ``workers`` processes (cases of :func:`cohort_tasks`); returns their folders."""
    tasks = cohort_tasks(n, Path(out), seed, spacing_mm, start, anatomy_name, subjects, femur_variation, options)
    make_output_dir(out, "--out")
    for task in tasks:  # a user's file or folder at a case's name: refused before any case is drawn
        check_replaceable(task[1], "phantom case")
    remove_partials(out, [task[1].name for task in tasks])  # this cohort's leftovers of a killed run
    shown = dict(total=len(tasks), desc=f"{anatomy_name} phantom cases", unit="case")
    if workers <= 1:
        return [_write_one(t) for t in progress(tasks, **shown)]
    with multiprocessing.get_context("spawn").Pool(min(workers, len(tasks))) as pool:  # no idle processes
        return list(progress(pool.imap(_write_one, tasks), **shown))


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    """CLI: write a phantom cohort; returns the exit status."""
    parser = OneLineParser(
        prog="python -m scripts.phantom",
        description="Generate a pelvis/femur phantom CT cohort (real LLP26 anatomy or procedural bones).",
    )
    parser.add_argument(
        "--anatomy",
        choices=ANATOMIES,
        default=DEFAULT_ANATOMY,
        help="llp26: real adult bones (default); procedural: template bones",
    )
    parser.add_argument(
        "--n",
        type=argument(as_count, minimum=1, maximum=MAX_CASES),
        default=None,
        help="number of cases (with --subjects: cases per subject, default 1)",
    )
    parser.add_argument(
        "--out", required=True, type=path_argument, help="output folder (case_XXXX/ or subject_JJ_KK/ inside)"
    )
    parser.add_argument("--seed", type=argument(as_count), default=0, help="cohort seed")
    parser.add_argument(
        "--subjects",
        choices=("validation", "test"),
        default=None,
        help="llp26: write the real validation (17-19) or test (20-25) subjects themselves",
    )
    parser.add_argument(
        "--start",
        type=argument(as_count),
        default=0,
        help="index of the first case (extends a cohort: --start 48 after --n 48)",
    )
    parser.add_argument(
        "--spacing",
        type=argument(check_spacing),
        default=1.0,
        help="isotropic voxel spacing, mm (finer than this machine's memory holds a case at: refused)",
    )
    parser.add_argument(
        "--workers",
        type=argument(as_count, minimum=1),
        default=1,
        help=f"parallel processes (each holds one case, up to about {PEAK_GIB_AT_1MM:g} GiB at 1 mm)",
    )
    parser.add_argument(
        "--femur_variation",
        type=argument(check_femur_variation),
        default=0.0,
        help="llp26 draws: femoral version, neck-shaft angle and shaft bow beyond the training span, in units "
        "of their SDs (8 deg, 4 deg, 3 mm); 0: off",
    )
    parser.add_argument(
        "--posterior_tissue_mm",
        type=float,
        nargs=2,
        default=list(POSTERIOR_TISSUE_MM),
        metavar=("LEAN", "HEAVY"),
        help="soft tissue behind the pelvis, mm, for the leanest and the heaviest body build (equal: fixed); default %(default)s",
    )
    parser.add_argument(
        "--osteoporosis",
        type=float,
        nargs=2,
        default=list(OSTEOPOROSIS),
        metavar=("LOW", "HIGH"),
        help="range of the bone-loss factor drawn per subject (0: young-adult bone, 1: trabecular HU to 35%%, cortical HU to 65%%, "
        "cortices to 60%%); default %(default)s: none drawn, the draws unchanged",
    )
    parser.add_argument(
        "--partial_volume_cortex",
        action="store_true",
        help="a voxel holding part of the cortex gets the cortex's share of it (HU mixed), instead of a "
        "cortex thinner than a voxel "
        "taking the whole outer voxel at cortical HU (docs/phantom.md, 'CT synthesis')",
    )
    args = parser.parse_args(argv)
    n = args.n if args.n is not None else (1 if args.subjects else None)
    if n is None:
        parser.error("--n: required (unless --subjects is given)")
    if args.start > MAX_CASES - n:  # case_seeds draws every seed up to start + n
        parser.error(f"--start: must be a whole number from 0 to {MAX_CASES - n} with --n {n}, got {args.start}")
    if args.femur_variation and (args.anatomy != "llp26" or args.subjects):
        parser.error("--femur_variation: widens llp26 training draws only (not --anatomy procedural or --subjects)")
    if args.subjects and args.anatomy != "llp26":
        parser.error("--subjects: needs --anatomy llp26")
    lean, heavy = args.posterior_tissue_mm
    if not (0.0 <= lean <= heavy <= 200.0):
        parser.error(f"--posterior_tissue_mm: needs 0 <= LEAN <= HEAVY <= 200 mm, got {lean:g} {heavy:g}")
    low, high = args.osteoporosis
    if not (0.0 <= low <= high <= 1.0):
        parser.error(f"--osteoporosis: needs 0 <= LOW <= HIGH <= 1, got {low:g} {high:g}")
    options = TissueOptions((lean, heavy), (low, high), args.partial_volume_cortex)
    cases = generate_cohort(
        n,
        args.out,
        args.seed,
        args.spacing,
        args.workers,
        args.start,
        args.anatomy,
        args.subjects,
        args.femur_variation,
        options,
    )
    print(f"wrote {len(cases)} phantom cases to {args.out}")  # the command said nothing when it was done
    return 0
