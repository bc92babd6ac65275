"""Inference: radiograph -> per-bone depth maps and masks -> camera-frame surfaces -> shape-model completion.

Pipeline pieces (each usable alone):

1. :func:`scripts.model.checkpoints.load_network` - checkpoint (state dict, ``torch.load(weights_only=True)``; TorchScript only when asked);
2. :meth:`Reconstructor.predict` - the network at its trained size (image area-resized, geometry
   :meth:`Geometry.resized`, same preprocessing as training) -> :class:`DepthPrediction` with
   relative (shift-free) depths, mask probabilities and the centre-depth estimate;
3. :meth:`DepthPrediction.absolute` - one depth shift per image so that the weighted mean masked
   depth equals a centre depth (the network's estimate, a fixed-geometry prior or the oracle);
4. :func:`surface_meshes` (dual-face or front-only) and :func:`complete_surfaces` (shape models);
5. :func:`write_reconstruction` - ``OUT/<name>/`` written atomically.

Everything is in the camera frame (mm): origin at the focal spot, +z toward the detector.
:class:`ReconstructionRunner` is the batch workflow of ``configs/inference.yaml``;
:func:`reconstruct_image` the one-call API used by the deploy app and the demo.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import trimesh
from monai.bundle import ConfigParser
from tqdm import tqdm

from scripts import BUNDLE_ROOT
from scripts.model.checkpoints import load_network
from scripts.config_flags import as_count, as_device, as_shard
from scripts.io.files import (InputFileError, PathLike, atomic_dir, check_output_dir, check_own_output, check_replaceable, find_partials, refuse_models_dir, remove_partials,
                               write_depth_and_mask, write_json, write_ply)
from scripts.geometry import BONES, Geometry, GeometryError
from scripts.reconstruction.hips import MEDIAL_X, femoral_head_vertices, head_spheres, hip_plane
from scripts.reconstruction.meshing import dual_face_mesh, front_face_mesh, masked_points
from scripts.model.networks import absolute_depth, split_output
from scripts.reconstruction.plausibility import plausibility
from scripts.io.radiograph_io import RadiographFile, RadiographInputs, error_line
from scripts.io.report import save_reconstruction_report
from scripts.reconstruction.ssm import ShapeFit, ShapeModel, fit_shape_model, load_shape_models
from scripts.model.transforms import flip_bone_maps_lr

INFERENCE_CONFIG = BUNDLE_ROOT / "configs" / "inference.yaml"
RESULT_KIND = "reconstruction"  # the scripts.io.files marker of output folders
FRAME = "camera (mm): origin at the X-ray focal spot, +x image columns, +y image rows, +z toward the detector"


# ---------------------------------------------------------------------- predictions
@dataclass
class DepthPrediction:
    """Per-bone maps of one radiograph, in ``geometry`` (indexed ``[..., v, u]``).

    Attributes:
        depth: (faces*B, H, W) mm from the source, bone-major [front, back] (front only when faces=1);
            relative (shift-free) for CASI-trained networks.
        mask_prob: (B, H, W) bone probabilities in [0, 1].
        centre_mm: the network's centre-depth estimate (mean masked depth), mm.
        geometry: geometry of the maps.
    """

    depth: np.ndarray
    mask_prob: np.ndarray
    centre_mm: float
    geometry: Geometry

    @property
    def faces(self) -> int:
        """Depth channels per bone: 2 (front and back) or 1 (front only)."""
        return self.depth.shape[0] // self.mask_prob.shape[0]

    @property
    def mask(self) -> np.ndarray:
        """(B, H, W) bool: probability above 0.5."""
        return self.mask_prob > 0.5

    def absolute(self, centre_mm: float | None = None, weights: np.ndarray | None = None, masked: bool = True) -> np.ndarray:
        """Depths (faces*B, H, W) mm shifted so that their ``weights``-mean equals ``centre_mm``.

        Defaults: the network's own centre estimate and the mask probabilities (per face) as weights,
        as in training validation (:class:`scripts.model.metrics.DepthMAE`). ``masked``: 0 outside the mask.
        """
        centre = self.centre_mm if centre_mm is None else float(centre_mm)
        w = np.repeat(self.mask_prob, self.faces, axis=0) if weights is None else np.asarray(weights)
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))[None]  # noqa: E731
        shifted = absolute_depth(t(self.depth), t(w), torch.tensor([centre], dtype=torch.float64))[0].numpy()
        return (np.where(np.repeat(self.mask, self.faces, axis=0), shifted, 0.0) if masked else shifted).astype(np.float32)


def true_face_mask(depth: np.ndarray, mask: np.ndarray, faces: int) -> np.ndarray:
    """(faces*B, H, W) validity of true depth (2B, H, W) channels given masks (B, H, W) (front only when faces=1)."""
    depth = depth if faces == 2 else depth[0::2]
    return np.repeat(mask, faces, axis=0) & (depth > 0)


def mean_masked_depth(depth: np.ndarray, valid: np.ndarray) -> float:
    """Mean depth (mm) over valid pixels (NaN when none)."""
    return float(depth[valid].mean()) if valid.any() else float("nan")


def oracle_prediction(depth: np.ndarray, mask: np.ndarray, geometry: Geometry, faces: int = 2) -> DepthPrediction:
    """A 'perfect network': true depth (2B, H, W) mm and mask (B, H, W); centre = the true mean masked depth
    (NaN when the masks are empty)."""
    depth = np.asarray(depth, dtype=np.float32)
    valid = true_face_mask(depth, np.asarray(mask, dtype=bool), faces)
    depth = np.where(valid, depth if faces == 2 else depth[0::2], np.float32(0.0))
    return DepthPrediction(depth, np.asarray(mask, dtype=np.float32), mean_masked_depth(depth, valid), geometry)


# ---------------------------------------------------------------------- surfaces
def surface_meshes(depth: np.ndarray, mask: np.ndarray, geometry: Geometry, max_depth_jump_mm: float = 20.0) -> dict[str, trimesh.Trimesh]:
    """Per-bone surfaces (camera frame, mm) from absolute depth (faces*B, H, W) and mask (B, H, W); empty masks skipped."""
    faces = depth.shape[0] // mask.shape[0]
    out = {}
    for b, bone in enumerate(geometry.bones):
        if not mask[b].any():
            continue
        front = depth[faces * b]
        if faces == 2:
            out[bone] = dual_face_mesh(front, depth[2 * b + 1], mask[b], geometry, max_depth_jump_mm=max_depth_jump_mm)
        else:
            out[bone] = front_face_mesh(front, mask[b], geometry, max_depth_jump_mm)
    return out


def bone_points(depth: np.ndarray, mask: np.ndarray, geometry: Geometry) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-bone back-projected points (N, 3) camera frame mm (front then back faces) and their facing
    (N,): +1 front face (toward the source), -1 back face; empty masks skipped."""
    faces = depth.shape[0] // mask.shape[0]
    points, facing = {}, {}
    for b, bone in enumerate(geometry.bones):
        if mask[b].any():
            front = depth[faces * b]
            pts = masked_points(front, depth[2 * b + 1] if faces == 2 else front, mask[b], geometry)
            n = len(pts) // 2
            points[bone] = pts if faces == 2 else pts[:n]
            facing[bone] = np.repeat([1, -1], n) if faces == 2 else np.ones(n, dtype=np.int64)
    return points, facing


def bone_field(geometry: Geometry, mask: np.ndarray, bone: str, margin_mm: float) -> Geometry:
    """The cut-aware field of ``bone`` for its shape-model fit: the X-ray cone cut ``margin_mm`` (detector
    mm) beyond the inferior and lateral edges of its ``mask`` (H, W), as a cropped geometry.

    An AP field cuts bones on known sides: collimation, the detector or a CT's end cut the femurs
    distally and their trochanters laterally, and the iliac wings at either side (hence both lateral
    edges for the pelvis). Past those edges the bone is unseen rather than absent. The superior and
    medial sides stay the cone's: the femoral head and the iliac crest end there by themselves. Standard
    AP frame (:data:`scripts.geometry.STANDARD_AP_ROTATION`): +u toward the patient's left, +v inferior.
    """
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not rows.size:
        return geometry
    w, h = geometry.image_size
    mu, mv = (int(round(margin_mm / s)) for s in geometry.pixel_spacing_mm)
    u0 = 0 if bone == "femur_left" else max(int(cols[0]) - mu, 0)  # the patient's right side: femur_left's medial one
    u1 = w - 1 if bone == "femur_right" else min(int(cols[-1]) + mu, w - 1)  # the left side: femur_right's medial one
    return geometry.cropped((u0, u1, 0, min(int(rows[-1]) + mv, h - 1)))


def complete_surfaces(
    points: Mapping[str, np.ndarray], shape_models: Mapping[str, ShapeModel], geometry: Geometry, masks: Mapping[str, np.ndarray] | None = None,
    field_margin_mm: float | None = 10.0, min_points: int = 10, facing: Mapping[str, np.ndarray] | None = None, **fit_kwargs,
) -> dict[str, ShapeFit]:
    """Shape-model fit per bone with a model and at least ``min_points`` points (camera frame, cone-aware).

    With ``masks`` ({bone: (H, W) bool}) and ``field_margin_mm``, each bone is fitted in its
    :func:`bone_field` (the cone cut where the image cuts the bone); otherwise in the whole cone.
    ``facing`` ({bone: (N,) +1 front / -1 back face}, :func:`bone_points`) lets each fit match front
    and back faces to the model's own (:func:`scripts.reconstruction.ssm.fit_shape_model`).
    The bones are fitted in parallel threads (the KD-tree queries and most NumPy work release the GIL);
    each fit is deterministic, so the result equals fitting them one after another.
    """
    bones = [b for b, pts in points.items() if b in shape_models and len(pts) >= max(min_points, 10)]
    if not bones:
        return {}
    fields = {b: bone_field(geometry, masks[b], b, field_margin_mm) if masks is not None and field_margin_mm is not None else geometry for b in bones}
    with concurrent.futures.ThreadPoolExecutor(len(bones)) as pool:
        fits = {b: pool.submit(fit_shape_model, shape_models[b], points[b], geometry=fields[b], facing=None if facing is None else facing[b], **fit_kwargs) for b in bones}
        return {b: f.result() for b, f in fits.items()}


@dataclass
class Reconstruction:
    """Result of one radiograph: absolute maps, surfaces and completions (camera frame, mm), and notes."""

    geometry: Geometry
    depth: np.ndarray  # (faces*B, H, W) absolute mm, 0 outside the mask
    mask: np.ndarray  # (B, H, W) bool
    centre_mm: float
    surfaces: dict[str, trimesh.Trimesh]
    fits: dict[str, ShapeFit]
    timings_s: dict[str, float] = field(default_factory=dict)
    plausibility: dict = field(default_factory=dict)  # scripts.reconstruction.plausibility.plausibility of the masks and fits
    heads: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict)  # femoral head (centre (3,), radius) of each completed femur, camera mm

    @property
    def hip_plane(self) -> dict | None:
        """The hip plane through the completed femoral head centres (:func:`scripts.reconstruction.hips.hip_plane`)."""
        return hip_plane({b: c for b, (c, _) in self.heads.items()}, self.geometry.sid_mm)

    @property
    def warnings(self) -> list[str]:
        """Warnings about this result (an implausible prediction)."""
        return [self.plausibility["warning"]] if self.plausibility.get("warning") else []

    @property
    def completed(self) -> dict[str, trimesh.Trimesh]:
        """Shape-model completed surfaces per fitted bone (camera frame, mm)."""
        return {bone: fit.mesh() for bone, fit in self.fits.items()}

    def bone_summary(self) -> dict[str, dict]:
        """Per bone: found, pixels, points, mean masked depth (mm), wholly in view, surface and SSM fit notes."""
        faces = self.depth.shape[0] // self.mask.shape[0]
        out = {}
        for b, bone in enumerate(self.geometry.bones):
            m = self.mask[b]
            info: dict = {"found": bool(m.any()), "pixels": int(m.sum()), "points": int(m.sum()) * faces}
            if m.any():
                d = self.depth[faces * b : faces * (b + 1)][:, m]
                border = m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()
                info.update(centre_depth_mm=float(d.mean()), in_view=not border, surface=mesh_summary(self.surfaces[bone]))
            fit = self.fits.get(bone)
            info["ssm"] = None if fit is None else {
                "rms_mm": fit.rms_mm, "inlier_fraction": fit.inlier_fraction, "coeffs_sd": fit.coeffs.tolist(), "pose_model_to_camera": fit.pose.tolist()
            }
            if bone in self.heads:
                centre, radius = self.heads[bone]
                info["head"] = {"centre_mm": np.asarray(centre).tolist(), "radius_mm": float(radius)}
            if not m.any():
                info["note"] = "bone not found (empty mask): skipped"
            out[bone] = info
        return out


# ---------------------------------------------------------------------- the reconstructor
def _average_with_mirror(parts: Mapping[str, torch.Tensor], mirrored: Mapping[str, torch.Tensor], bones: Sequence[str], faces: int) -> dict[str, torch.Tensor]:
    """Mean of the network's maps of an image and (mirrored back) of its left-right mirror image.

    The mirror image shows the mirror patient, so its maps are flipped back and its left/right bone
    channels swapped (:func:`scripts.model.transforms.flip_bone_maps_lr`). The relative (CASI) depths'
    free offsets need no matching: :meth:`DepthPrediction.absolute` re-centres the mean anyway.
    """
    return {
        "depth": 0.5 * (parts["depth"] + flip_bone_maps_lr(mirrored["depth"], bones, faces)),
        "mask_logits": 0.5 * (parts["mask_logits"] + flip_bone_maps_lr(mirrored["mask_logits"], bones, 1)),
        "centre": 0.5 * (parts["centre"] + mirrored["centre"]),
    }


def network_input(
    image: np.ndarray, geometry: Geometry, preprocessing: Callable[[dict], dict], image_size: Sequence[int], bones: Sequence[str] = BONES,
    fov: np.ndarray | None = None,
) -> tuple[torch.Tensor, Geometry, torch.Tensor | None]:
    """Preprocessed network input (1, h, w) float32 of an (H, W) image, its geometry resized to ``image_size`` (W, H)
    (:meth:`Geometry.resized`, same field of view) with its maps labelled with the network's ``bones``, and the
    radiograph's own area at that size (1, h, w) when ``fov`` (H, W; 1 inside, 0 on padding) is given (else None).
    Raises ValueError when the preprocessing gives another size."""
    size = (int(image_size[0]), int(image_size[1]))
    net_geometry = replace(geometry if geometry.image_size == size else geometry.resized(size), bones=tuple(bones))
    data = {"image": torch.as_tensor(np.asarray(image, dtype=np.float32))[None]}
    if fov is not None:
        data["fov"] = torch.as_tensor(np.asarray(fov, dtype=np.float32))[None]
    data = preprocessing(data)
    x = torch.as_tensor(data["image"], dtype=torch.float32)
    if tuple(x.shape[-2:]) != (net_geometry.height, net_geometry.width):
        raise ValueError(f"preprocessing gave {tuple(x.shape[-2:])}, expected (H, W) = {(net_geometry.height, net_geometry.width)}")
    inside = data.get("fov")
    return x, net_geometry, None if inside is None else torch.as_tensor(inside, dtype=torch.float32).reshape(1, *x.shape[-2:])


class Reconstructor:
    """Network + preprocessing + shape models: ``reconstructor(image, geometry) -> Reconstruction``.

    Args:
        network: the network definition (e.g. :class:`scripts.model.networks.DualFaceDepthNet`); weights from ``ckpt_path``.
        ckpt_path: state-dict checkpoint (TorchScript only with ``torchscript``); ``None`` only when predictions are always given.
        preprocessing: dictionary transform on ``{"image": (1, H, W)}`` at the network size (normalisation as in training).
        image_size: (W, H) the network was trained at; inputs are area-resized to it, the geometry with them.
        ssm_path: per-bone shape models (``scripts.ssm``); ``None`` disables completion.
        device: torch device (default CUDA when available); an unavailable one raises InputFileError naming ``--device``.
        min_pixels: a bone with fewer mask pixels counts as not found.
        max_depth_jump_mm: meshing depth-jump threshold (:func:`scripts.reconstruction.meshing.dual_face_mesh`).
        fit_kwargs: extra arguments of :func:`scripts.reconstruction.ssm.fit_shape_model`.
        field_margin_mm: each bone's fit sees the cone cut this far (detector mm) beyond its mask's
            inferior and lateral edges (:func:`bone_field`); ``None``: the whole cone.
        flip_tta: also run the network on the left-right mirror image and average (test-time
            augmentation; twice the network time). Exact for a centred principal point.
        bones: names of the network's bone channels, in order (configs: ``bones``). The maps are
            labelled with these, whatever order an input's geometry.json lists (that order only
            describes the input's own truth files).
        plausibility: thresholds of :func:`scripts.reconstruction.plausibility.plausibility` (configs: ``plausibility``).
        torchscript: accept a TorchScript ``ckpt_path`` (its code runs: trusted sources only).

    Weights and models load on first use (:meth:`load`), so a bad file surfaces as one
    :class:`InputFileError` before any output is written.
    """

    def __init__(
        self,
        network: torch.nn.Module | None,
        ckpt_path: PathLike | None,
        preprocessing: Callable[[dict], dict],
        image_size: Sequence[int] = (256, 256),
        ssm_path: PathLike | None = None,
        device: torch.device | str | None = None,
        min_pixels: int = 10,
        max_depth_jump_mm: float = 20.0,
        fit_kwargs: Mapping | None = None,
        field_margin_mm: float | None = 10.0,
        flip_tta: bool = False,
        bones: Sequence[str] = BONES,
        plausibility: Mapping | None = None,
        torchscript: bool = False,
    ):
        self.network_def, self.ckpt_path, self.ssm_path = network, ckpt_path, ssm_path
        self.bones = tuple(bones)
        self.plausibility_kwargs = dict(plausibility or {})
        self.preprocessing = preprocessing
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.device = as_device(device)
        self.torchscript = bool(torchscript)
        self.min_pixels, self.max_depth_jump_mm = int(min_pixels), float(max_depth_jump_mm)
        self.fit_kwargs = dict(fit_kwargs or {})
        self.field_margin_mm = None if field_margin_mm is None else float(field_margin_mm)
        self.flip_tta = bool(flip_tta)
        self.network: torch.nn.Module | None = None
        self.shape_models: dict[str, ShapeModel] | None = None
        self.head_vertices: dict[str, np.ndarray] = {}  # femur models' head vertex indices (hips.femoral_head_vertices of the mean)

    def load(self, network: bool = True) -> "Reconstructor":
        """Load shape models and (``network``) weights, once. Raises :class:`InputFileError` naming a bad file."""
        if network and self.network is None and self.ckpt_path is not None:
            self.network = load_network(self.ckpt_path, self.network_def, self.device, self.torchscript)
        if self.shape_models is None:
            self.shape_models = load_shape_models(self.ssm_path)[0] if self.ssm_path else {}
            self.head_vertices = {b: femoral_head_vertices(m.mean, b) for b, m in self.shape_models.items() if b in MEDIAL_X}
        return self

    def prepare(self, image: np.ndarray, geometry: Geometry, fov: np.ndarray | None = None) -> tuple[torch.Tensor, Geometry, torch.Tensor | None]:
        """The network input (1, h, w) of an (H, W) bone-bright image, its geometry and radiograph area at the network
        size (:func:`network_input`; light, so DataLoader workers run it ahead of the network)."""
        return network_input(image, geometry, self.preprocessing, self.image_size, self.bones, fov)

    def predict(self, image: np.ndarray, geometry: Geometry, fov: np.ndarray | None = None) -> DepthPrediction:
        """Network maps of an (H, W) bone-bright image at the network size, with the matching geometry.

        ``fov`` (H, W): the radiograph's own area in ``image`` (1; 0 on padding, e.g. where a smaller
        input was padded to the standard field); None: all of it. The preprocessing fills the image
        outside it as in training, and no bone is predicted there (mask probability 0).
        """
        x, net_geometry, inside = self.prepare(image, geometry, fov)
        return self.predict_batch(x[None], [net_geometry], [inside])[0]

    def predict_batch(self, inputs: torch.Tensor, geometries: Sequence[Geometry], fields: Sequence[torch.Tensor | None] | None = None) -> list[DepthPrediction]:
        """Network maps of a batch of prepared inputs (N, 1, h, w) (:meth:`prepare`), one network call (two with
        ``flip_tta``); ``geometries``: the N network-size geometries; ``fields``: each one's radiograph area
        (1, h, w) or None (no bone predicted outside it)."""
        self.load()
        if self.network is None:
            raise ValueError("no checkpoint: pass ckpt_path or a precomputed prediction")
        x = torch.as_tensor(inputs, dtype=torch.float32).to(self.device)
        bones = self.bones
        with torch.inference_mode():
            out = self.network(x).float()
            faces = (out.shape[1] - 1 - len(bones)) // len(bones)
            parts = split_output(out, len(bones), faces)
            if self.flip_tta:
                mirrored = split_output(self.network(torch.flip(x, dims=(-1,))).float(), len(bones), faces)
                parts = _average_with_mirror(parts, mirrored, bones, faces)
            depth, mask_prob, centre = parts["depth"].cpu().numpy(), torch.sigmoid(parts["mask_logits"]).cpu().numpy(), parts["centre"].reshape(len(x)).cpu().numpy()
        for k, inside in enumerate(fields or ()):
            if inside is not None:
                mask_prob[k] *= np.asarray(inside, dtype=np.float32).reshape(1, *mask_prob.shape[-2:]) > 0.5
        return [DepthPrediction(depth[k], mask_prob[k], float(centre[k]), g) for k, g in enumerate(geometries)]

    def reconstruct(self, prediction: DepthPrediction, centre_mm: float | None = None, weights: np.ndarray | None = None, complete: bool = True) -> Reconstruction:
        """Surfaces and completions from maps, shifted to ``centre_mm`` (default the prediction's estimate)."""
        self.load(network=False)
        t0 = time.perf_counter()
        geom = prediction.geometry
        depth = prediction.absolute(centre_mm, weights)
        mask = prediction.mask & (depth[:: prediction.faces] > 0)
        mask &= mask.sum(axis=(1, 2), keepdims=True) >= self.min_pixels
        depth = np.where(np.repeat(mask, prediction.faces, axis=0), depth, 0.0).astype(np.float32)
        surfaces = surface_meshes(depth, mask, geom, self.max_depth_jump_mm)
        t1 = time.perf_counter()
        masks = dict(zip(geom.bones, mask))
        points, facing = bone_points(depth, mask, geom)
        fits = complete_surfaces(points, self.shape_models, geom, masks, self.field_margin_mm, facing=facing, **self.fit_kwargs) if complete else {}
        t2 = time.perf_counter()
        centre = mean_masked_depth(depth, np.repeat(mask, prediction.faces, axis=0))
        score = plausibility(mask, depth, geom, {b: f.rms_mm for b, f in fits.items()}, **self.plausibility_kwargs)
        heads = head_spheres({b: f.vertices for b, f in fits.items()}, self.head_vertices)
        return Reconstruction(geom, depth, mask, centre, surfaces, fits, {"meshing": t1 - t0, "ssm": t2 - t1}, score, heads)

    def __call__(self, image: np.ndarray, geometry: Geometry, prediction: DepthPrediction | None = None, fov: np.ndarray | None = None) -> Reconstruction:
        """Predict (unless ``prediction`` is given, e.g. an oracle) and reconstruct with the estimated centre depth (``fov``: :meth:`predict`)."""
        t0 = time.perf_counter()
        prediction = prediction or self.predict(image, geometry, fov)
        t1 = time.perf_counter()
        rec = self.reconstruct(prediction)
        rec.timings_s = {"network": t1 - t0, **rec.timings_s}
        return rec


# ---------------------------------------------------------------------- outputs
def write_reconstruction(
    out_dir: PathLike, rec: Reconstruction, image: np.ndarray, info: Mapping, name: str, source: str | None = None, report: bool = True
) -> Path:
    """Write ``out_dir`` atomically: depth/mask NIfTI (simulator layout), ``<bone>.ply``, ``<bone>_completed.ply``,
    result.json and (``report``) report.png. Safe to run in a background thread (no plotting library).

    ``source``: identifier of the input (:func:`scripts.io.radiograph_io.input_key`); an existing ``out_dir``
    is replaced only when it is this bundle's reconstruction of the same input (:func:`scripts.io.files.atomic_dir`).
    """
    geom = rec.geometry
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    warnings = output_warnings(rec, info)
    with atomic_dir(out_dir, RESULT_KIND, source) as tmp:
        write_depth_and_mask(tmp, rec.depth, rec.mask, geom.image_affine)
        for bone, mesh in rec.surfaces.items():
            write_ply(tmp / f"{bone}.ply", mesh.vertices, mesh.faces)
        for bone, fit in rec.fits.items():
            write_ply(tmp / f"{bone}_completed.ply", fit.vertices, fit.faces)
        faces = rec.depth.shape[0] // rec.mask.shape[0]
        t1 = time.perf_counter()
        if report:
            shown = None if info.get("burned_in_annotation") else _resize_image(image, geom)  # identifying text stays out of the report
            depth2 = np.moveaxis(rec.depth if faces == 2 else np.repeat(rec.depth, 2, axis=0), 0, -1)
            save_reconstruction_report(
                tmp / "report.png", shown, np.moveaxis(rec.mask, 0, -1), depth2, rec.completed or rec.surfaces, geom.bones, title=name, warnings=warnings,
                hip_plane=rec.hip_plane,
            )
        t2 = time.perf_counter()
        result = {
            "name": name,
            **result_summary(info, geom, rec.bone_summary(), rec.hip_plane, warnings),
            "faces": faces,
            "centre_depth_mm": rec.centre_mm,
            "plausibility": rec.plausibility,
            "timings_s": {**rec.timings_s, "write": t1 - t0 + time.perf_counter() - t2, **({"report": t2 - t1} if report else {})},
        }
        write_json(tmp / "result.json", result)
    return out_dir


def mesh_summary(mesh: trimesh.Trimesh) -> dict:
    """Size of a surface in result.json: vertices, faces, watertight."""
    return {"vertices": len(mesh.vertices), "faces": len(mesh.faces), "watertight": bool(mesh.is_watertight)}


def result_summary(info: Mapping, geometry: Geometry, bones: Mapping[str, dict], hip_plane: dict | None, warnings: Sequence[str]) -> dict:
    """The result.json fields the bundle's inference (:func:`write_reconstruction`) and the Deploy app
    (``deploy/app/pipeline.py``) share, built here for both so that they agree: the input's format, geometry
    source, coverage and laterality (``info`` of :func:`scripts.io.radiograph_io.load_radiograph_with_field`),
    the frame (:data:`FRAME`), ``geometry`` (the bundle's: its maps', at the network size; the app's: the standard one
    its image was resampled into), the per-bone summary ``bones`` (:meth:`Reconstruction.bone_summary`),
    the hip plane (camera frame, mm) and the warnings."""
    return {
        "input_format": info.get("format"),
        "geometry_source": info.get("geometry_source"),
        "coverage": info.get("coverage"),
        "laterality": info.get("laterality"),
        "frame": FRAME,
        "geometry": geometry.to_dict(),
        "hip_plane": hip_plane,
        "bones": dict(bones),
        "warnings": list(warnings),
    }


def output_warnings(rec: Reconstruction, info: Mapping) -> list[str]:
    """Warnings of one result: the input's (e.g. burned-in annotation) and the prediction's (implausible)."""
    return [*info.get("warnings", []), *rec.warnings]


def _resize_image(image: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The input image at the maps' size (area interpolation) for the report."""
    if image.shape == (geometry.height, geometry.width):
        return image
    t = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=(geometry.height, geometry.width), mode="area")[0, 0].numpy()


# ---------------------------------------------------------------------- batch workflow
@dataclass
class RadiographInput(RadiographFile):
    """One input of the batch workflow as read ahead by :class:`RadiographReader`: the
    :class:`scripts.io.radiograph_io.RadiographFile` (name, key, image, geometry, info, error; its DICOM header left
    in the worker) with the network's input.

    ``status``: "ready" (image, geometry, info and the prepared network input set), "skipped" (this input's
    finished output exists) or "failed" (``error``: the one line to report).
    """

    status: str = "ready"
    network_input: np.ndarray | None = None  # (1, h, w) float32; NumPy, so workers hand it over through a pipe
    network_geometry: Geometry | None = None
    network_field: np.ndarray | None = None  # (1, h, w) the radiograph's own area at the network size; None: all
    load_s: float = 0.0


class RadiographReader(torch.utils.data.Dataset):
    """Dataset of input files -> :class:`RadiographInput`: output name, skip check (an existing folder that is not
    this input's reconstruction, or one to be replaced holding files it did not write, fails the input:
    :func:`scripts.io.files.check_replaceable`), reading and resampling into the standard geometry
    (:meth:`scripts.io.radiograph_io.RadiographInputs.read`), the radiograph's own area and the network's
    preprocessing (:func:`network_input`). Bad input becomes a "failed" item, so DataLoader workers never raise."""

    def __init__(self, paths: Sequence[Path], inputs: RadiographInputs, output_dir: Path, overwrite: bool,
                 preprocessing: Callable[[dict], dict], image_size: Sequence[int], bones: Sequence[str]):
        self.paths, self.inputs, self.output_dir, self.overwrite = list(paths), inputs, Path(output_dir), overwrite
        self.preprocessing, self.image_size, self.bones = preprocessing, image_size, tuple(bones)

    def __len__(self) -> int:
        return len(self.paths)

    def _to_load(self, item: RadiographFile) -> bool:
        """False when ``item``'s finished reconstruction exists (skipped unless ``overwrite``); raises when its folder may not be replaced."""
        target = self.output_dir / item.name
        if check_own_output(target, RESULT_KIND, item.key) and not self.overwrite and (target / "result.json").exists():
            return False
        check_replaceable(target, RESULT_KIND, item.key)  # to be replaced: a user's file inside fails this input before any work
        return True

    def __getitem__(self, index: int) -> RadiographInput:
        path = self.paths[index]
        t0 = time.perf_counter()
        item = self.inputs.read(path, self._to_load)
        if item.error or item.image is None:
            return RadiographInput(path, item.name, item.key, error=item.error, status="failed" if item.error else "skipped")
        try:
            x, net_geometry, inside = network_input(item.image, item.geometry, self.preprocessing, self.image_size, self.bones, item.fov)
        except Exception as e:  # fails this input only
            return RadiographInput(path, item.name, item.key, error=error_line(path, e), status="failed")
        return RadiographInput(path, item.name, item.key, None, item.image, item.geometry, item.info, item.fov, network_input=x.numpy(),
                               network_geometry=net_geometry, network_field=None if inside is None else inside.numpy(), load_s=time.perf_counter() - t0)


def _as_list(batch: list) -> list:
    """DataLoader collate function keeping a batch as the list of its items."""
    return batch


class ReconstructionRunner:
    """Reconstruct every radiograph under ``input_dir`` into ``output_dir/<name>/``.

    A pipeline: DataLoader workers read, resample and preprocess the next inputs; the main process
    runs the network on ``batch_size`` images at a time and the shape-model fits; a pool of
    ``writers`` threads writes each finished output (atomically) while the next is reconstructed.

    A bad file is reported on stderr (one line: file and problem) and skipped; finished outputs are
    skipped on a rerun unless ``overwrite``. After all inputs, exits with status 1
    (``SystemExit``) if any failed or a checkpoint/shape model is unusable. A killed run leaves at most
    ``.<name>.*.partial`` folders, which the next run (of the same shard) removes before redoing them.
    The output folder of an input is ``output_dir/<name>`` (:func:`scripts.io.radiograph_io.output_name`, unique
    per input); a name already used by another input of this run, or a folder that is not this input's
    reconstruction, is an error for that input and is left untouched.

    Args:
        reconstructor: a :class:`Reconstructor`.
        input_dir: a radiograph file or a folder (searched recursively, :func:`scripts.io.radiograph_io.iter_radiographs`).
        output_dir: output root.
        standard_geometry: geometry JSON for inputs without their own (PNG/TIFF/DICOM); default configs/geometry.json.
        sid_mm, pixel_spacing_mm: fill-ins for inputs lacking them (:func:`scripts.io.radiograph_io.load_radiograph`).
        overwrite: redo finished outputs.
        report: also write report.png.
        batch_size: images per network call.
        num_workers: DataLoader worker processes reading inputs ahead (0: in the main process).
        writers: threads writing outputs in the background (0: written in the main thread).
        shard: ``"i/n"``: only inputs i, i+n, ... of the sorted input list (a cluster array job's part of an
            archive; shards share ``output_dir`` and need no other coordination).
    """

    def __init__(
        self,
        reconstructor: Reconstructor,
        input_dir: PathLike,
        output_dir: PathLike,
        standard_geometry: PathLike | None = None,
        sid_mm: float | None = None,
        pixel_spacing_mm: float | Sequence[float] | None = None,
        overwrite: bool = False,
        report: bool = True,
        batch_size: int = 1,
        num_workers: int = 1,
        writers: int = 1,
        shard: str | Sequence[int] | None = None,
    ):
        self.reconstructor = reconstructor
        self.input_dir, self.output_dir = Path(input_dir), Path(output_dir)
        self.standard_geometry = standard_geometry
        self.sid_mm, self.pixel_spacing_mm, self.overwrite = sid_mm, pixel_spacing_mm, bool(overwrite)
        self.report, self.batch_size = bool(report), as_count(batch_size, "batch_size", 1)
        self.num_workers, self.writers = as_count(num_workers, "num_workers"), as_count(writers, "writers")
        self.shard = shard

    @functools.cached_property
    def standard(self) -> Geometry:
        """The standard geometry given to inputs without their own."""
        return Geometry.standard(self.standard_geometry, check_range=True)

    @functools.cached_property
    def radiographs(self) -> RadiographInputs:
        """The run's inputs and the output names they claimed (:class:`scripts.io.radiograph_io.RadiographInputs`)."""
        return RadiographInputs(self.input_dir, self.standard, self.sid_mm, self.pixel_spacing_mm, self.output_dir)

    def inputs(self) -> list[Path]:
        """This shard's input files (every n-th of the sorted list from the i-th)."""
        i, n = as_shard(self.shard)
        return self.radiographs.paths()[i::n]

    def reader(self, paths: Sequence[Path]) -> torch.utils.data.DataLoader:
        """DataLoader of :class:`RadiographReader` items in input order, lists of ``batch_size``."""
        dataset = RadiographReader(paths, self.radiographs, self.output_dir, self.overwrite,
                                   self.reconstructor.preprocessing, self.reconstructor.image_size, self.reconstructor.bones)
        workers = min(self.num_workers, len(paths))
        return torch.utils.data.DataLoader(dataset, batch_size=self.batch_size, num_workers=workers, collate_fn=_as_list,
                                           prefetch_factor=2 if workers else None, persistent_workers=False)

    def _reconstruct(self, batch: Sequence[RadiographInput]) -> list[tuple[RadiographInput, Reconstruction | str]]:
        """Network on the batch's ready items, then each one's surfaces and fits (or the error line)."""
        ready = [item for item in batch if item.status == "ready"]
        if not ready:
            return []
        t0 = time.perf_counter()
        try:
            inputs = torch.from_numpy(np.stack([item.network_input for item in ready]))
            predictions = self.reconstructor.predict_batch(inputs, [item.network_geometry for item in ready], [item.network_field for item in ready])
        except ValueError as e:
            return [(item, f"{item.path}: {e}") for item in ready]
        network_s = (time.perf_counter() - t0) / len(ready)
        out: list[tuple[RadiographInput, Reconstruction | str]] = []
        for item, prediction in zip(ready, predictions):
            try:
                rec = self.reconstructor.reconstruct(prediction)
            except (ValueError, GeometryError) as e:
                out.append((item, f"{item.path}: {e}"))
                continue
            except Exception as e:  # anything else fails this input only; KeyboardInterrupt still stops the batch
                out.append((item, f"{item.path}: failed ({type(e).__name__}: {e})"))
                continue
            rec.timings_s = {"load": item.load_s, "network": network_s, **rec.timings_s}
            out.append((item, rec))
        return out

    def run(self) -> dict[str, list[str]]:
        """Process all inputs; returns {"done", "skipped", "failed"} lists, or exits 1 after all if any failed."""
        try:
            refuse_models_dir(self.output_dir, "output_dir")
            check_output_dir(self.output_dir, "--output_dir")
            _ = self.standard
            self.reconstructor.load()
            inputs = self.inputs()
        except (InputFileError, GeometryError) as e:
            print(e, file=sys.stderr)
            raise SystemExit(1) from None
        status: dict[str, list[str]] = {"done": [], "skipped": [], "failed": []}
        if not inputs:
            print(f"{self.input_dir}: no radiographs found" + ("" if self.shard is None else f" for shard {self.shard}"), file=sys.stderr)
            raise SystemExit(1)

        def failed(path: Path, line: str) -> None:
            tqdm.write(line, file=sys.stderr)
            status["failed"].append(str(path))

        stale = find_partials(self.output_dir)  # unfinished outputs of a killed run: all, or (shards) each as its input comes
        if self.shard is None:
            remove_partials(self.output_dir, found=stale)
        pending: collections.deque = collections.deque()  # (input, its warnings, future) in submission order

        def collect(limit: int) -> None:
            while len(pending) > limit:
                item, warnings, future = pending.popleft()
                try:
                    target = future.result()
                    status["done"].append(str(item.path))
                    for warning in warnings:  # named by the output folder: free of patient identifiers
                        tqdm.write(f"{target}: warning: {warning}", file=sys.stderr)
                except Exception as e:
                    failed(item.path, f"{item.path}: writing failed ({type(e).__name__}: {e})")
                bar.update(1)

        pool = concurrent.futures.ThreadPoolExecutor(self.writers, thread_name_prefix="writer") if self.writers else None
        try:
            with tqdm(total=len(inputs), desc="reconstruct", unit="image") as bar:
                for batch in self.reader(inputs):
                    for item in batch:
                        if not self.radiographs.claim(item):  # one output name for two inputs: the later one is an error
                            item.status = "failed"
                        elif self.shard is not None and item.name in stale:
                            remove_partials(self.output_dir, [item.name], stale)  # this shard's, left by a killed run
                        if item.status == "skipped":
                            status["skipped"].append(str(item.path))
                        elif item.status == "failed":
                            failed(item.path, item.error)
                        bar.update(item.status != "ready")
                    for item, rec in self._reconstruct(batch):
                        if isinstance(rec, str):
                            failed(item.path, rec)
                            bar.update(1)
                            continue
                        args = (self.output_dir / item.name, rec, item.image, item.info, item.name, item.key, self.report)
                        future = pool.submit(write_reconstruction, *args) if pool else _done(write_reconstruction, *args)
                        pending.append((item, output_warnings(rec, item.info), future))
                        collect(2 * self.writers)  # bounded: at most twice the writers' outputs held in memory
                collect(0)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)  # an interrupted run finishes (atomically) what is being written
        print(f"reconstructed {len(status['done'])}, skipped {len(status['skipped'])} (already done), failed {len(status['failed'])}", file=sys.stderr)
        if status["failed"]:
            raise SystemExit(1)
        return status


def _done(fn: Callable, *args) -> concurrent.futures.Future:
    """``fn(*args)`` run now, as a finished Future (its exception kept, KeyboardInterrupt raised)."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    try:
        future.set_result(fn(*args))
    except Exception as e:
        future.set_exception(e)
    return future


# ---------------------------------------------------------------------- one-call API
def bundle_config(config_file: PathLike = INFERENCE_CONFIG, overrides: Mapping | None = None) -> ConfigParser:
    """A bundle config (default configs/inference.yaml) read with ``bundle_root`` set to this bundle and config-key ``overrides``."""
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser.update({"bundle_root": str(BUNDLE_ROOT), **dict(overrides or {})})
    return parser


def build_reconstructor(config_file: PathLike = INFERENCE_CONFIG, **overrides) -> Reconstructor:
    """The ``reconstructor`` of an inference config (default configs/inference.yaml) with config-key overrides (None: config value)."""
    return bundle_config(config_file, {k: v for k, v in overrides.items() if v is not None}).get_parsed_content("reconstructor")


@functools.lru_cache(maxsize=4)
def _cached_reconstructor(model_path: str | None, ssm_path: str | None, device: str | None, torchscript: bool) -> Reconstructor:
    return build_reconstructor(ckpt_path=model_path, ssm_path=ssm_path, device=device, torchscript=torchscript).load()


class BoneMeshes(dict):
    """``{bone: trimesh.Trimesh}`` of one radiograph (camera frame, mm) carrying the result's ``warnings``
    (sentences, e.g. an implausible prediction: :attr:`Reconstruction.warnings`), ``hip_plane``
    (:attr:`Reconstruction.hip_plane`; None without a completed femur) and per-bone summary ``bones``
    (:meth:`Reconstruction.bone_summary`: result.json's)."""

    def __init__(self, meshes: Mapping[str, trimesh.Trimesh], warnings: Sequence[str] = (), hip_plane: dict | None = None,
                 bones: Mapping[str, dict] | None = None):
        super().__init__(meshes)
        self.warnings = list(warnings)
        self.hip_plane = hip_plane
        self.bones = dict(bones or {})


def reconstruct_image(
    image: np.ndarray,
    geometry: Geometry,
    model_path: PathLike | None = None,
    ssm_path: PathLike | None = None,
    device: str | None = None,
    completed: bool = True,
    torchscript: bool = False,
    fov: np.ndarray | None = None,
) -> BoneMeshes:
    """Bone surfaces (camera frame, mm) of one bone-bright radiograph (H, W) taken with ``geometry``.

    Uses configs/inference.yaml (checkpoint ``model_path``, default models/model.pt; shape models
    ``ssm_path``, default models/ssm.npz). Returns per found bone the shape-model completion
    (``completed``; the dual-face surface where no fit was possible) or the dual-face surface, with
    the result's warnings (``.warnings``: empty unless the prediction is implausible), hip plane (``.hip_plane``) and per-bone
    summary (``.bones``).
    ``torchscript``: accept a TorchScript ``model_path`` (its code runs: trusted sources only). ``fov`` (H, W): the
    radiograph's own area (:func:`scripts.io.radiograph_io.load_radiograph_with_field`; None: all of the image), normalised
    over and filled outside as in training, with no bone predicted outside it (:meth:`Reconstructor.predict`).
    """
    rec = _cached_reconstructor(None if model_path is None else str(model_path), None if ssm_path is None else str(ssm_path), device, bool(torchscript))(image, geometry, fov=fov)
    return BoneMeshes({**rec.surfaces, **(rec.completed if completed else {})}, rec.warnings, rec.hip_plane, rec.bone_summary())
