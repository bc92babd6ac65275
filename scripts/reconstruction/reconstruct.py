"""Inference: radiograph -> per-bone depth maps and masks -> camera-frame surfaces -> shape-model completion.

Pipeline pieces (each usable alone):

1. :func:`scripts.model.checkpoints.load_network` - checkpoint (state dict, ``torch.load(weights_only=True)``;
   TorchScript only when asked);
2. :meth:`Reconstructor.predict` - the network at its trained size (image area-resized, geometry
   :meth:`Geometry.resized`, same preprocessing as training), called through :class:`MirrorAveragingInferer`
   (mirror-image averaging) -> :class:`DepthPrediction` with relative (shift-free) depths, mask probabilities
   and the centre-depth estimate;
3. :meth:`DepthPrediction.absolute` - one depth shift per image so that the weighted mean masked
   depth equals a centre depth (the network's estimate, a fixed-geometry prior or the oracle);
4. :func:`surface_meshes` (dual-face or front-only) and :func:`complete_surfaces` (shape models);
5. :func:`write_reconstruction` - ``OUT/<name>/`` written atomically.

Everything is in the camera frame (mm): origin at the focal spot, +z toward the detector.
The batch workflow of ``configs/inference.yaml`` is :class:`scripts.reconstruction.runner.ReconstructionRunner`;
:func:`reconstruct_image` the one-call API used by the deploy app and the demo.
"""

from __future__ import annotations

import concurrent.futures
import functools
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import trimesh
import yaml
from monai.bundle import ConfigParser
from monai.inferers import Inferer
from scripts import BUNDLE_ROOT
from scripts.config_flags import as_count, as_device, as_path, as_positive, is_null
from scripts.geometry import BONES, Geometry, camera_to_patient_lps
from scripts.io.dicom_export import bundle_version
from scripts.io.files import (
    InputFileError,
    PathLike,
    atomic_dir,
    first_line,
    sha256,
    write_depth_and_mask,
    write_json,
    write_ply,
)
from scripts.io.radiograph_io import REPLACEABLE_SOURCES
from scripts.io.report import save_reconstruction_report
from scripts.model.checkpoints import load_network
from scripts.model.networks import absolute_depth, split_output
from scripts.model.run_record import check_trained_settings
from scripts.model.transforms import flip_bone_maps_lr
from scripts.reconstruction.hips import MEDIAL_X, femoral_head_vertices, head_spheres, hip_plane
from scripts.reconstruction.meshing import dual_face_mesh, front_face_mesh, masked_points
from scripts.reconstruction.plausibility import plausibility as score_plausibility
from scripts.reconstruction.plausibility import thresholds
from scripts.reconstruction.ssm import (
    MIN_FIT_POINTS,
    ShapeFit,
    ShapeModel,
    fit_settings,
    fit_shape_model,
    load_shape_models,
)

INFERENCE_CONFIG = BUNDLE_ROOT / "configs" / "inference.yaml"
# the similarity fit that measures a bone's size (plausibility): 500 points and 12 iterations give the scale of 1500
# points and 30 iterations within 0.006 at 40% of a pelvis fit's time (docs/inference.md, "Plausibility")
SCALE_FIT = {"fit_scale": True, "max_points": 500, "n_iterations": 12, "n_rigid_iterations": 3}
FITTED = ("geometry", "facing", "init_pose")  # fit_shape_model's arguments that complete_surfaces gives, not ssm_fit
# plausibility's arguments that the reconstruction gives, not its thresholds (configs: plausibility)
SCORED = ("fit_rms_mm", "similarity_scale", "completed")
RESULT_KIND = "reconstruction"  # the scripts.io.files marker of output folders
FRAME = "camera (mm): origin at the X-ray focal spot, +x image columns, +y image rows, +z toward the detector"
# result.json "patient_frame": how to show the camera-frame outputs in a patient's coordinates (a viewer, a CT)
PATIENT_FRAME = {
    "axes": "LPS, DICOM patient coordinates (mm): +x patient left, +y posterior, +z superior; origin at the focal spot",
    "camera_to_patient": camera_to_patient_lps().tolist(),
    "assumes": "the patient supine and square to the AP beam (tilt and rotation on the table are not in it); "
    "left and right as 'laterality' says",
}


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

    def absolute(
        self, centre_mm: float | None = None, weights: np.ndarray | None = None, masked: bool = True
    ) -> np.ndarray:
        """Depths (faces*B, H, W) mm shifted so that their ``weights``-mean equals ``centre_mm``.

        Defaults: the network's own centre estimate and the mask probabilities (per face) as weights,
        as in training validation (:class:`scripts.model.metrics.DepthMAE`). ``masked``: 0 outside the mask.
        """
        centre = self.centre_mm if centre_mm is None else float(centre_mm)
        w = np.repeat(self.mask_prob, self.faces, axis=0) if weights is None else np.asarray(weights)
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))[None]  # noqa: E731
        shifted = absolute_depth(t(self.depth), t(w), torch.tensor([centre], dtype=torch.float64))[0].numpy()
        return (np.where(np.repeat(self.mask, self.faces, axis=0), shifted, 0.0) if masked else shifted).astype(
            np.float32
        )


def face_depths(depth: np.ndarray, faces: int) -> np.ndarray:
    """The channels (faces*B, H, W) of true depth (2B, H, W) mm that a network with ``faces`` predicts: all of them,
    or the front faces when faces=1."""
    return depth if faces == 2 else depth[0::2]


def true_face_mask(depth: np.ndarray, mask: np.ndarray, faces: int) -> np.ndarray:
    """(faces*B, H, W) validity of true depth (2B, H, W) mm channels given masks (B, H, W): in the mask and depth > 0
    (front faces only when faces=1: :func:`face_depths`)."""
    return np.repeat(mask, faces, axis=0) & (face_depths(depth, faces) > 0)


def mean_masked_depth(depth: np.ndarray, valid: np.ndarray) -> float:
    """Mean depth (mm) over valid pixels (NaN when none)."""
    return float(depth[valid].mean()) if valid.any() else float("nan")


def oracle_prediction(depth: np.ndarray, mask: np.ndarray, geometry: Geometry, faces: int = 2) -> DepthPrediction:
    """A 'perfect network': true depth (2B, H, W) mm and mask (B, H, W); centre = the true mean masked depth
    (NaN when the masks are empty)."""
    depth = np.asarray(depth, dtype=np.float32)
    valid = true_face_mask(depth, np.asarray(mask, dtype=bool), faces)
    depth = np.where(valid, face_depths(depth, faces), np.float32(0.0))
    return DepthPrediction(depth, np.asarray(mask, dtype=np.float32), mean_masked_depth(depth, valid), geometry)


# ---------------------------------------------------------------------- surfaces
def surface_meshes(
    depth: np.ndarray, mask: np.ndarray, geometry: Geometry, max_depth_jump_mm: float = 20.0
) -> dict[str, trimesh.Trimesh]:
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


def bone_points(
    depth: np.ndarray, mask: np.ndarray, geometry: Geometry
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
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
    mu, mv = (int(round(n)) for n in geometry.length_px(margin_mm))
    u0 = 0 if bone == "femur_left" else max(int(cols[0]) - mu, 0)  # the patient's right side: femur_left's medial one
    u1 = w - 1 if bone == "femur_right" else min(int(cols[-1]) + mu, w - 1)  # the left side: femur_right's medial one
    return geometry.cropped((u0, u1, 0, min(int(rows[-1]) + mv, h - 1)))


def complete_surfaces(
    points: Mapping[str, np.ndarray],
    shape_models: Mapping[str, ShapeModel],
    geometry: Geometry,
    masks: Mapping[str, np.ndarray] | None = None,
    field_margin_mm: float | None = 10.0,
    facing: Mapping[str, np.ndarray] | None = None,
    scale_bones: Sequence[str] = (),
    **fit_kwargs,
) -> dict[str, ShapeFit]:
    """Shape-model fit per bone with a model and at least :data:`~scripts.reconstruction.ssm.MIN_FIT_POINTS` points
    (camera frame, cone-aware).

    With ``masks`` ({bone: (H, W) bool}) and ``field_margin_mm``, each bone is fitted in its
    :func:`bone_field` (the cone cut where the image cuts the bone); otherwise in the whole cone.
    ``facing`` ({bone: (N,) +1 front / -1 back face}, :func:`bone_points`) lets each fit match front
    and back faces to the model's own (:func:`scripts.reconstruction.ssm.fit_shape_model`).
    Each bone of ``scale_bones`` is also fitted with a similarity pose (:data:`SCALE_FIT`), whose isotropic scale
    its fit carries as ``similarity_scale`` (the completion stays the rigid fit's):
    bones drawn at the wrong size, e.g. from a wrong pixel spacing, show there (:mod:`scripts.reconstruction.plausibility`).
    The fits run in parallel threads (the KD-tree queries and most NumPy work release the GIL);
    each fit is deterministic, so the result equals fitting them one after another.
    """
    bones = [b for b, pts in points.items() if b in shape_models and len(pts) >= MIN_FIT_POINTS]
    if not bones:
        return {}
    fields = {
        b: (
            bone_field(geometry, masks[b], b, field_margin_mm)
            if masks is not None and field_margin_mm is not None
            else geometry
        )
        for b in bones
    }
    scaled = [b for b in bones if b in scale_bones]
    with concurrent.futures.ThreadPoolExecutor(len(bones) + len(scaled)) as pool:

        def submit(bone: str, **kwargs) -> concurrent.futures.Future:
            return pool.submit(
                fit_shape_model,
                shape_models[bone],
                points[bone],
                geometry=fields[bone],
                facing=None if facing is None else facing[bone],
                **{**fit_kwargs, **kwargs},
            )

        fits = {b: submit(b) for b in bones}
        similar = {b: submit(b, **SCALE_FIT) for b in scaled}
        return {
            b: (replace(f.result(), similarity_scale=similar[b].result().scale) if b in similar else f.result())
            for b, f in fits.items()
        }


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
    plausibility: dict = field(
        default_factory=dict
    )  # scripts.reconstruction.plausibility.plausibility of the masks and fits
    heads: dict[str, tuple[np.ndarray, float]] = field(
        default_factory=dict
    )  # femoral head (centre (3,), radius) of each completed femur, camera mm
    completion_warnings: list[str] = field(default_factory=list)  # found bones the shape-model file has no model of

    @property
    def hip_plane(self) -> dict | None:
        """The hip plane through the completed femoral head centres (:func:`scripts.reconstruction.hips.hip_plane`)."""
        return hip_plane({b: c for b, (c, _) in self.heads.items()}, self.geometry.sid_mm)

    @property
    def warnings(self) -> list[str]:
        """Warnings about this result: found bones left without completion (no shape model of them), an implausible prediction."""
        return [
            *self.completion_warnings,
            *([self.plausibility["warning"]] if self.plausibility.get("warning") else []),
        ]

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
                info.update(
                    centre_depth_mm=float(d.mean()), in_view=not border, surface=mesh_summary(self.surfaces[bone])
                )
            fit = self.fits.get(bone)
            info["ssm"] = (
                None
                if fit is None
                else {
                    "rms_mm": fit.rms_mm,
                    "inlier_fraction": fit.inlier_fraction,
                    "coeffs_sd": fit.coeffs.tolist(),
                    "pose_model_to_camera": fit.pose.tolist(),
                }
            )
            if bone in self.heads:
                centre, radius = self.heads[bone]
                info["head"] = {"centre_mm": np.asarray(centre).tolist(), "radius_mm": float(radius)}
            if not m.any():
                info["note"] = "bone not found (empty mask): skipped"
            out[bone] = info
        return out


# ---------------------------------------------------------------------- the reconstructor
class MirrorAveragingInferer(Inferer):
    """The network call of inference (configs/inference.yaml ``inferer``): ``network(inputs)`` (N, 1, H, W) in float32
    and, with ``flip_tta``, averaged with the network's maps of the left-right mirror image mirrored back (twice the
    network time). Returns the network's layout (N, faces*B + B + 1, H, W) (:func:`scripts.model.networks.split_output`).

    The mirror image shows the mirror patient, so its maps are flipped back and its left/right bone channels swapped
    (:func:`scripts.model.transforms.flip_bone_maps_lr`, ``bones`` the network's channels in order). The relative
    (CASI) depths' free offsets need no matching: :meth:`DepthPrediction.absolute` re-centres the mean anyway. Exact
    for a centred principal point.
    """

    def __init__(self, bones: Sequence[str] = BONES, flip_tta: bool = True):
        super().__init__()
        self.bones, self.flip_tta = tuple(bones), bool(flip_tta)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        """The network's maps of ``inputs`` (mirror-averaged with ``flip_tta``), float32."""
        out = network(inputs, *args, **kwargs).float()
        if not self.flip_tta:
            return out
        mirrored = network(torch.flip(inputs, dims=(-1,)), *args, **kwargs).float()
        b = len(self.bones)
        faces = (out.shape[1] - 1 - b) // b
        parts, back = split_output(out, b, faces), split_output(mirrored, b, faces)
        return torch.cat(
            [
                0.5 * (parts["depth"] + flip_bone_maps_lr(back["depth"], self.bones, faces)),
                0.5 * (parts["mask_logits"] + flip_bone_maps_lr(back["mask_logits"], self.bones, 1)),
                0.5 * (out[:, -1:] + torch.flip(mirrored[:, -1:], dims=(-1,))),  # the centre depth (mm) map
            ],
            dim=1,
        )


def network_input(
    image: np.ndarray,
    geometry: Geometry,
    preprocessing: Callable[[dict], dict],
    image_size: Sequence[int],
    bones: Sequence[str] = BONES,
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
        raise ValueError(
            f"preprocessing gave {tuple(x.shape[-2:])}, expected (H, W) = {(net_geometry.height, net_geometry.width)}"
        )
    inside = data.get("fov")
    return (
        x,
        net_geometry,
        None if inside is None else torch.as_tensor(inside, dtype=torch.float32).reshape(1, *x.shape[-2:]),
    )


class Reconstructor:
    """Network + preprocessing + shape models: ``reconstructor(image, geometry) -> Reconstruction``.

    Args:
        network: the network definition (e.g. :class:`scripts.model.networks.DualFaceDepthNet`); weights from ``ckpt_path``.
        ckpt_path: state-dict checkpoint (TorchScript only with ``torchscript``); ``None`` only when predictions are always given.
        preprocessing: dictionary transform on ``{"image": (1, H, W)}`` at the network size (normalisation as in training).
        image_size: (W, H) the network was trained at; inputs are area-resized to it, the geometry with them.
        ssm_path: per-bone shape models (``scripts.ssm``); ``None``, ``''`` or the text ``null`` disables completion.
        device: torch device (default CUDA when available); an unavailable one raises InputFileError naming ``--device``.
        min_pixels: a bone with fewer mask pixels counts as not found.
        max_depth_jump_mm: meshing depth-jump threshold (:func:`scripts.reconstruction.meshing.dual_face_mesh`).
        fit_kwargs: extra arguments of :func:`scripts.reconstruction.ssm.fit_shape_model`.
        field_margin_mm: each bone's fit sees the cone cut this far (detector mm) beyond its mask's
            inferior and lateral edges (:func:`bone_field`); ``None``: the whole cone.
        inferer: the network call (configs: ``inferer``), a :class:`MirrorAveragingInferer` of these ``bones``
            (``flip_tta``: mirror-image averaging) or another MONAI ``Inferer`` giving the network's layout (one
            plain call, e.g. ``SimpleInferer``); default: the plain call.
        bones: names of the network's bone channels, in order (configs: ``bones``). The maps are
            labelled with these, whatever order an input's geometry.json lists (that order only
            describes the input's own truth files).
        plausibility: thresholds of :func:`scripts.reconstruction.plausibility.plausibility` (configs: ``plausibility``).
        torchscript: accept a TorchScript ``ckpt_path`` (its code runs: trusted sources only).
        network_settings: the configured network keys (:func:`scripts.model.run_record.network_settings`; configs:
            ``network_settings``): a ``ckpt_path`` whose folder holds a training record (``training.json``) saying
            otherwise is refused as it loads (:func:`scripts.model.run_record.check_trained_settings`); None: unchecked.
        settings_option: how the entry point sets inference keys, for the refusal's advice
            (:func:`scripts.model.run_record.option_text`): None, each key its own option (``--image_size 64``); a
            dict-valued option (evaluate.yaml: ``inference_overrides``, ``single_face_overrides``); a config file (the
            Deploy app: ``configs/inference.yaml``).

    A bad setting (``min_pixels`` below 1, a length no positive number, an unknown ``fit_kwargs`` or ``plausibility``
    key) raises InputFileError naming its configs option (``--min_pixels``) as it is built, before any work.
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
        inferer: Inferer | None = None,
        bones: Sequence[str] = BONES,
        plausibility: Mapping | None = None,
        torchscript: bool = False,
        network_settings: Mapping | None = None,
        settings_option: str | None = None,
    ):
        self.network_def = network
        self.ckpt_path = (
            None if ckpt_path is None else as_path(ckpt_path, "ckpt_path")
        )  # '': one line, not '.: checkpoint not found'
        self.ssm_path = None if is_null(ssm_path) or ssm_path == "" else as_path(ssm_path, "ssm_path")
        self.network_settings, self.settings_option = network_settings, settings_option
        self.bones = tuple(bones)
        self.plausibility_kwargs = thresholds(plausibility, SCORED)
        self.preprocessing = preprocessing
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.device = as_device(device)
        self.torchscript = bool(torchscript)
        self.min_pixels = as_count(min_pixels, "min_pixels", 1)
        self.max_depth_jump_mm = as_positive(max_depth_jump_mm, "max_depth_jump_mm")
        self.fit_kwargs = fit_settings(fit_kwargs, FITTED)
        self.field_margin_mm = (
            None if is_null(field_margin_mm) else as_positive(field_margin_mm, "ssm_field_margin_mm", zero=True)
        )
        self.inferer = MirrorAveragingInferer(self.bones, flip_tta=False) if inferer is None else inferer
        if tuple(getattr(self.inferer, "bones", self.bones)) != self.bones:
            raise ValueError(f"the inferer's bones {self.inferer.bones} are not the network's {self.bones}")
        self.network: torch.nn.Module | None = None
        self.shape_models: dict[str, ShapeModel] | None = None
        self.head_vertices: dict[str, np.ndarray] = (
            {}
        )  # femur models' head vertex indices (hips.femoral_head_vertices of the mean)

    def load(self, network: bool = True) -> "Reconstructor":
        """Load shape models and (``network``) weights, once. Raises :class:`InputFileError` naming a bad file."""
        if network and self.network is None and self.ckpt_path is not None:
            if self.network_settings is not None:
                check_trained_settings(self.ckpt_path, self.network_settings, self.settings_option)
            self.network = load_network(self.ckpt_path, self.network_def, self.device, self.torchscript)
        if self.shape_models is None:
            if self.ssm_path is not None and not self.ssm_path.exists():
                raise InputFileError(
                    self.ssm_path, "shape model file not found; --ssm_path '' (or null) reconstructs without completion"
                )
            self.shape_models = load_shape_models(self.ssm_path)[0] if self.ssm_path else {}
            self.head_vertices = {
                b: femoral_head_vertices(m.mean, b) for b, m in self.shape_models.items() if b in MEDIAL_X
            }
        return self

    @functools.cached_property
    def model(self) -> dict:
        """result.json's ``model`` block, the files a result was made with, their SHA-256 read once: ``bundle_version``
        (configs/metadata.json), ``network`` (``file`` name, ``sha256``, ``torchscript``; None without ``ckpt_path``) and
        ``shape_model`` (``file``, ``sha256``; None without ``ssm_path``)."""
        network = None if self.ckpt_path is None else {**file_identity(self.ckpt_path), "torchscript": self.torchscript}
        return {
            "bundle_version": bundle_version(),
            "network": network,
            "shape_model": None if not self.ssm_path else file_identity(self.ssm_path),
        }

    @property
    def settings(self) -> dict:
        """The reconstruction settings a result depends on besides its model files (configs/inference.yaml keys):
        network size (W, H), bones, mirror averaging, meshing, shape-model fit and plausibility thresholds."""
        return {
            "image_size": list(self.image_size),
            "bones": list(self.bones),
            "flip_tta": bool(getattr(self.inferer, "flip_tta", False)),  # another Inferer calls the network once
            "min_pixels": self.min_pixels,
            "max_depth_jump_mm": self.max_depth_jump_mm,
            "ssm_fit": self.fit_kwargs,
            "ssm_field_margin_mm": self.field_margin_mm,
            "plausibility": self.plausibility_kwargs,
        }

    def prepare(
        self, image: np.ndarray, geometry: Geometry, fov: np.ndarray | None = None
    ) -> tuple[torch.Tensor, Geometry, torch.Tensor | None]:
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

    def predict_batch(
        self, inputs: torch.Tensor, geometries: Sequence[Geometry], fields: Sequence[torch.Tensor | None] | None = None
    ) -> list[DepthPrediction]:
        """Network maps of a batch of prepared inputs (N, 1, h, w) (:meth:`prepare`) through :attr:`inferer` (one
        network call, two with mirror-image averaging); ``geometries``: the N network-size geometries; ``fields``: each
        one's radiograph area (1, h, w) or None (no bone predicted outside it)."""
        self.load()
        if self.network is None:
            raise ValueError("no checkpoint: pass ckpt_path or a precomputed prediction")
        x = torch.as_tensor(inputs, dtype=torch.float32).to(self.device)
        b = len(self.bones)
        with torch.inference_mode():
            out = self.inferer(x, self.network).float()
            parts = split_output(out, b, (out.shape[1] - 1 - b) // b)
            depth, mask_prob, centre = (
                parts["depth"].cpu().numpy(),
                torch.sigmoid(parts["mask_logits"]).cpu().numpy(),
                parts["centre"].reshape(len(x)).cpu().numpy(),
            )
        for k, inside in enumerate(fields or ()):
            if inside is not None:
                mask_prob[k] *= np.asarray(inside, dtype=np.float32).reshape(1, *mask_prob.shape[-2:]) > 0.5
        return [DepthPrediction(depth[k], mask_prob[k], float(centre[k]), g) for k, g in enumerate(geometries)]

    def reconstruct(
        self,
        prediction: DepthPrediction,
        centre_mm: float | None = None,
        weights: np.ndarray | None = None,
        complete: bool = True,
    ) -> Reconstruction:
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
        masks = dict(zip(geom.bones, mask, strict=True))
        points, facing = bone_points(depth, mask, geom)
        fits = (
            complete_surfaces(
                points,
                self.shape_models,
                geom,
                masks,
                self.field_margin_mm,
                facing=facing,
                scale_bones=tuple(self.plausibility_kwargs.get("scale_range") or ()),
                **self.fit_kwargs,
            )
            if complete
            else {}
        )
        t2 = time.perf_counter()
        centre = mean_masked_depth(depth, np.repeat(mask, prediction.faces, axis=0))
        completed = {b: f.vertices for b, f in fits.items()}
        score = score_plausibility(
            mask,
            depth,
            geom,
            {b: f.rms_mm for b, f in fits.items()},
            similarity_scale={b: f.similarity_scale for b, f in fits.items()},
            completed=completed,
            **self.plausibility_kwargs,
        )
        heads = head_spheres(completed, self.head_vertices)
        unmodelled = (
            [b for b in points if b not in self.shape_models] if complete and self.shape_models else []
        )  # a file without that bone
        notes = [
            f"{b}: the shape model file {self.ssm_path} has no {b} model; no completion ({b}_completed.ply)"
            for b in unmodelled
        ]
        return Reconstruction(
            geom, depth, mask, centre, surfaces, fits, {"meshing": t1 - t0, "ssm": t2 - t1}, score, heads, notes
        )

    def __call__(
        self,
        image: np.ndarray,
        geometry: Geometry,
        prediction: DepthPrediction | None = None,
        fov: np.ndarray | None = None,
    ) -> Reconstruction:
        """Predict (unless ``prediction`` is given, e.g. an oracle) and reconstruct with the estimated centre depth
        (``fov``: :meth:`predict`)."""
        t0 = time.perf_counter()
        prediction = prediction or self.predict(image, geometry, fov)
        t1 = time.perf_counter()
        rec = self.reconstruct(prediction)
        rec.timings_s = {"network": t1 - t0, **rec.timings_s}
        return rec


# ---------------------------------------------------------------------- outputs
def write_reconstruction(
    out_dir: PathLike,
    rec: Reconstruction,
    image: np.ndarray,
    info: Mapping,
    name: str,
    made_with: Mapping,
    source: str | None = None,
    report: bool = True,
    origin: str | None = None,
) -> Path:
    """Write ``out_dir`` atomically: depth/mask NIfTI (simulator layout), ``<bone>.ply``, ``<bone>_completed.ply``,
    result.json and (``report``) report.png. Safe to run in a background thread (no plotting library).

    ``made_with``: the run's ``{"model": Reconstructor.model, "options": ...}``, recorded in result.json (what a rerun
    compares, :func:`made_with_changes`).

    ``source``: identifier of the input (:func:`scripts.io.radiograph_io.input_key`), ``origin`` of its path (a file
    keyed by content); an existing ``out_dir`` is replaced only when it is this bundle's reconstruction of the same
    input or of an earlier version of it read from the same path (:func:`scripts.io.files.atomic_dir`).
    """
    geom = rec.geometry
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    warnings = output_warnings(rec, info)
    with atomic_dir(out_dir, RESULT_KIND, source, origin) as tmp:
        write_depth_and_mask(tmp, rec.depth, rec.mask, geom.image_affine)
        for bone, mesh in rec.surfaces.items():
            write_ply(tmp / f"{bone}.ply", mesh.vertices, mesh.faces)
        for bone, fit in rec.fits.items():
            write_ply(tmp / f"{bone}_completed.ply", fit.vertices, fit.faces)
        faces = rec.depth.shape[0] // rec.mask.shape[0]
        t1 = time.perf_counter()
        if report:
            shown = (
                None if info.get("burned_in_annotation") else _resize_image(image, geom)
            )  # identifying text stays out of the report
            depth2 = np.moveaxis(rec.depth if faces == 2 else np.repeat(rec.depth, 2, axis=0), 0, -1)
            save_reconstruction_report(
                tmp / "report.png",
                shown,
                np.moveaxis(rec.mask, 0, -1),
                depth2,
                rec.completed or rec.surfaces,
                geom.bones,
                title=name,
                warnings=warnings,
                hip_plane=rec.hip_plane,
                **report_notes(info, rec),
                pixel_spacing_mm=float(geom.pixel_spacing_mm[0]),
            )
        t2 = time.perf_counter()
        result = {
            "name": name,
            **result_summary(info, geom, rec.bone_summary(), rec.hip_plane, warnings, made_with["model"]),
            "options": made_with["options"],
            "faces": faces,
            "centre_depth_mm": rec.centre_mm,
            "plausibility": rec.plausibility,
            "timings_s": {
                **rec.timings_s,
                "write": t1 - t0 + time.perf_counter() - t2,
                **({"report": t2 - t1} if report else {}),
            },
        }
        write_json(tmp / "result.json", result)
    return out_dir


def file_identity(path: PathLike) -> dict:
    """``{"file": name, "sha256": hex digest}`` of a file a result was made with (result.json ``model``)."""
    return {"file": Path(path).name, "sha256": sha256(path)}


FILL_INS = ("sid_mm", "pixel_spacing_mm")  # the options that fill in geometry an input lacks


def _option(key: str, value):
    """An option as a rerun compares it: a ``pixel_spacing_mm`` of one number as that number in both directions."""
    if key == "pixel_spacing_mm" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value, value]
    if key == "pixel_spacing_mm" and isinstance(value, list) and len(value) == 1:
        return value * 2
    return value


def _filled_in(result: Mapping, key: str) -> bool:
    """Whether the fill-in ``key`` (:data:`FILL_INS`) may have made ``result``: its ``geometry_source`` records that
    value as one an argument would replace (an argument's, the standard geometry's, a PNG/TIFF's stated resolution:
    :data:`~scripts.io.radiograph_io.REPLACEABLE_SOURCES`), or records no source for it; False when the input carried
    it (a DICOM tag, the simulator's geometry.json)."""
    sources = result.get("geometry_source")
    source = sources.get(key, sources.get("all")) if isinstance(sources, Mapping) else None
    return not isinstance(source, str) or source.startswith(REPLACEABLE_SOURCES)


def made_with_changes(result: Mapping, made_with: Mapping) -> list[str] | None:
    """What differs between the ``model`` and ``options`` a result.json records and ``made_with`` (this run's, as JSON
    values), as phrases for one line: "network weights" and "shape model" (their SHA-256; file names and the bundle
    version are not compared), then "option <name>" or "options <name>, <name>"; [] when none. None when the result
    records no model (bundle 0.10.6 or earlier).
    The ``sid_mm`` / ``pixel_spacing_mm`` fill-ins count only where the result's geometry came from them
    (:func:`_filled_in`); ``report`` only when this run asks for report.png and the result was made without one.
    """
    if not isinstance(result.get("model"), Mapping):
        return None

    def digest(block: object) -> str | None:
        return block.get("sha256") if isinstance(block, Mapping) else None

    recorded, options = result["model"], result.get("options") if isinstance(result.get("options"), Mapping) else {}
    changes = [
        what
        for key, what in (("network", "network weights"), ("shape_model", "shape model"))
        if digest(recorded.get(key)) != digest(made_with["model"][key])
    ]
    ours = made_with["options"]
    compared = {*options, *ours} - {"report"} - {k for k in FILL_INS if not _filled_in(result, k)}
    differing = {k for k in compared if _option(k, options.get(k)) != _option(k, ours.get(k))}
    if ours.get("report") and options.get("report") is False:
        differing.add("report")
    return changes + ([f"option{'s' * (len(differing) > 1)} {', '.join(sorted(differing))}"] if differing else [])


def mesh_summary(mesh: trimesh.Trimesh) -> dict:
    """Size of a surface in result.json: vertices, faces, watertight."""
    return {"vertices": len(mesh.vertices), "faces": len(mesh.faces), "watertight": bool(mesh.is_watertight)}


def result_summary(
    info: Mapping,
    geometry: Geometry,
    bones: Mapping[str, dict],
    hip_plane: dict | None,
    warnings: Sequence[str],
    model: Mapping | None,
) -> dict:
    """The result.json fields the bundle's inference (:func:`write_reconstruction`) and the Deploy app
    (``deploy/app/pipeline.py``) share, built here for both so that they agree: the input's format, geometry
    source, coverage and laterality (``info`` of :func:`scripts.io.radiograph_io.load_radiograph_with_field`),
    the frame (:data:`FRAME`) and the nominal patient frame (:data:`PATIENT_FRAME`), ``geometry`` (the bundle's: its
    maps', at the network size; the app's: the standard one its image was resampled into), the per-bone summary
    ``bones`` (:meth:`Reconstruction.bone_summary`), the hip plane (camera frame, mm), the warnings and the ``model``
    that made the result (:attr:`Reconstructor.model`; None when unknown, e.g. a custom inference callable of the
    app)."""
    return {
        "model": None if model is None else dict(model),
        "input_format": info.get("format"),
        "geometry_source": info.get("geometry_source"),
        "coverage": info.get("coverage"),
        "laterality": info.get("laterality"),
        "frame": FRAME,
        "patient_frame": PATIENT_FRAME,
        "geometry": geometry.to_dict(),
        "hip_plane": hip_plane,
        "bones": dict(bones),
        "warnings": list(warnings),
    }


def output_warnings(rec: Reconstruction, info: Mapping) -> list[str]:
    """Warnings of one result: the input's (e.g. burned-in annotation) and the prediction's (implausible)."""
    return [*info.get("warnings", []), *rec.warnings]


def report_notes(info: Mapping, rec: Reconstruction) -> dict[str, list[str]]:
    """report.png's lines under its warnings (:func:`scripts.io.report.save_reconstruction_report`): ``cautions``, a
    laterality that was assumed rather than read (info ``laterality``); ``notes``, where the left-right sense and the
    geometry came from (result.json ``laterality``, ``geometry_source``, ``coverage``) and a plausible prediction's
    score (an implausible one is a warning)."""
    laterality = str(info.get("laterality") or "unknown")
    cautions = [f"left/right {laterality}"] if laterality.startswith("assumed") else []
    notes = [] if cautions else [f"left/right: {laterality}"]
    sources = info.get("geometry_source") or {}
    geometry = [f"SID {rec.geometry.sid_mm:.0f} mm"]
    if "all" in sources:
        geometry[0] += f" and pixel spacing: {sources['all']}"
    else:
        geometry = [f"{geometry[0]}: {sources.get('sid_mm', 'unknown')}"]
        geometry.append(f"pixel spacing: {sources.get('pixel_spacing_mm', 'unknown')}")
    if info.get("coverage") is not None:
        geometry.append(f"the radiograph covers {100 * info['coverage']:.0f}% of the standard field")
    notes.append("; ".join(geometry))
    score = rec.plausibility
    if score.get("plausible"):
        notes.append(f"plausibility score {score['score']:.2f} (at least {score['min_score']:g}: plausible)")
    return {"cautions": cautions, "notes": notes}


def _resize_image(image: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The input image at the maps' size (area interpolation) for the report."""
    if image.shape == (geometry.height, geometry.width):
        return image
    t = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=(geometry.height, geometry.width), mode="area")[0, 0].numpy()


# ---------------------------------------------------------------------- one-call API
def bundle_config(
    config_file: PathLike = INFERENCE_CONFIG, overrides: Mapping | None = None, option: str = "override"
) -> ConfigParser:
    """A bundle config (default configs/inference.yaml) read with ``bundle_root`` set to this bundle and config-key
    ``overrides``; a key the config lacks (misspelt) raises InputFileError naming ``--option`` that set it."""
    if not Path(config_file).is_file():
        raise InputFileError(config_file, "config file not found")
    parser = ConfigParser()
    try:
        parser.read_config(str(config_file))
    except (ValueError, OSError, yaml.YAMLError) as e:  # a suffix MONAI does not read, a file that does not parse
        raise InputFileError(config_file, f"unreadable bundle config (.yaml or .json: {first_line(e)})") from None
    unknown = sorted(k for k in overrides or {} if k not in parser)
    if unknown:
        raise InputFileError(f"--{option}", f"no such key in {config_file}: {', '.join(unknown)}")
    parser.update({"bundle_root": str(BUNDLE_ROOT), **dict(overrides or {})})
    return parser


def build_reconstructor(config_file: PathLike = INFERENCE_CONFIG, **overrides) -> Reconstructor:
    """The ``reconstructor`` of an inference config (default configs/inference.yaml) with config-key overrides (None:
    config value); a key the config lacks (a misspelt ``--inference_overrides`` key) raises InputFileError naming the
    ``settings_option`` that set it."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return bundle_config(config_file, overrides, overrides.get("settings_option") or "override").get_parsed_content(
        "reconstructor"
    )


@functools.lru_cache(maxsize=4)
def _cached_reconstructor(
    model_path: str | None, ssm_path: str | None, device: str | None, torchscript: bool, settings_option: str | None
) -> Reconstructor:
    return build_reconstructor(
        ckpt_path=model_path, ssm_path=ssm_path, device=device, torchscript=torchscript, settings_option=settings_option
    ).load()


class BoneMeshes(dict):
    """``{bone: trimesh.Trimesh}`` of one radiograph (camera frame, mm) carrying the result's ``warnings``
    (sentences, e.g. an implausible prediction: :attr:`Reconstruction.warnings`), ``hip_plane``
    (:attr:`Reconstruction.hip_plane`; None without a completed femur) and per-bone summary ``bones``
    (:meth:`Reconstruction.bone_summary`: result.json's) and ``model`` (:attr:`Reconstructor.model`: the files that made it).
    """

    def __init__(
        self,
        meshes: Mapping[str, trimesh.Trimesh],
        warnings: Sequence[str] = (),
        hip_plane: dict | None = None,
        bones: Mapping[str, dict] | None = None,
        model: Mapping | None = None,
    ):
        super().__init__(meshes)
        self.warnings = list(warnings)
        self.hip_plane = hip_plane
        self.bones = dict(bones or {})
        self.model = None if model is None else dict(model)


def reconstruct_image(
    image: np.ndarray,
    geometry: Geometry,
    model_path: PathLike | None = None,
    ssm_path: PathLike | None = None,
    device: str | None = None,
    completed: bool = True,
    torchscript: bool = False,
    fov: np.ndarray | None = None,
    settings_option: str | None = None,
) -> BoneMeshes:
    """Bone surfaces (camera frame, mm) of one bone-bright radiograph (H, W) taken with ``geometry``.

    Uses configs/inference.yaml (checkpoint ``model_path``, default models/model.pt; shape models
    ``ssm_path``, default models/ssm.npz). Returns per found bone the shape-model completion
    (``completed``; the dual-face surface where no fit was possible) or the dual-face surface, with
    the result's warnings (``.warnings``: empty unless the prediction is implausible or a found bone has no shape model),
    hip plane (``.hip_plane``), per-bone summary (``.bones``) and model (``.model``: files and SHA-256, computed once per model).
    ``torchscript``: accept a TorchScript ``model_path`` (its code runs: trusted sources only). ``fov`` (H, W): the
    radiograph's own area (:func:`scripts.io.radiograph_io.load_radiograph_with_field`; None: all of the image), normalised
    over and filled outside as in training, with no bone predicted outside it (:meth:`Reconstructor.predict`).
    ``settings_option``: how the caller sets inference keys, for the advice of a checkpoint whose training record
    disagrees with them (:class:`Reconstructor`; the Deploy app: ``configs/inference.yaml``).
    """
    reconstructor = _cached_reconstructor(
        None if model_path is None else str(model_path),
        None if ssm_path is None else str(ssm_path),
        device,
        bool(torchscript),
        settings_option,
    )
    rec = reconstructor(image, geometry, fov=fov)
    return BoneMeshes(
        {**rec.surfaces, **(rec.completed if completed else {})},
        rec.warnings,
        rec.hip_plane,
        rec.bone_summary(),
        reconstructor.model,
    )
