"""Inference: radiograph -> per-bone depth maps and masks -> camera-frame surfaces -> shape-model completion.

Pipeline pieces (each usable alone):

1. :func:`scripts.checkpoints.load_network` - checkpoint (state dict, ``torch.load(weights_only=True)``; TorchScript only when asked);
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

from scripts.checkpoints import load_network
from scripts.config_flags import as_device
from scripts.files import InputFileError, PathLike, atomic_dir, check_replaceable, remove_partials, write_depth_and_mask, write_json
from scripts.geometry import BONES, Geometry, GeometryError
from scripts.meshing import dual_face_mesh, grid_triangles, masked_points
from scripts.networks import absolute_depth, split_output
from scripts.plausibility import plausibility
from scripts.radiograph_io import NIFTI_SUFFIXES, RASTER_SUFFIXES, input_key, iter_radiographs, load_radiograph, output_name, radiograph_field, read_dicom
from scripts.report import save_reconstruction_report
from scripts.ssm import ShapeFit, ShapeModel, fit_shape_model, load_shape_models
from scripts.transforms import flip_bone_maps_lr

BUNDLE_ROOT = Path(__file__).resolve().parent.parent
INFERENCE_CONFIG = BUNDLE_ROOT / "configs" / "inference.yaml"
OUTPUT_FILES = ("depth.nii.gz", "mask.nii.gz", "result.json", "report.png")
RESULT_KIND = "reconstruction"  # the scripts.files marker of output folders
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
        as in training validation (:class:`scripts.metrics.DepthMAE`). ``masked``: 0 outside the mask.
        """
        centre = self.centre_mm if centre_mm is None else float(centre_mm)
        w = np.repeat(self.mask_prob, self.faces, axis=0) if weights is None else np.asarray(weights)
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))[None]  # noqa: E731
        shifted = absolute_depth(t(self.depth), t(w), torch.tensor([centre], dtype=torch.float64))[0].numpy()
        return (np.where(np.repeat(self.mask, self.faces, axis=0), shifted, 0.0) if masked else shifted).astype(np.float32)


def oracle_prediction(depth: np.ndarray, mask: np.ndarray, geometry: Geometry, faces: int = 2) -> DepthPrediction:
    """A 'perfect network': true depth (2B, H, W) mm and mask (B, H, W); centre = the true mean masked depth."""
    depth = np.asarray(depth, dtype=np.float32)
    depth = depth if faces == 2 else depth[0::2]
    mask = np.asarray(mask, dtype=np.float32)
    valid = np.repeat(mask, faces, axis=0) * (depth > 0)
    centre = float((depth * valid).sum() / max(valid.sum(), 1.0))
    return DepthPrediction(depth * valid, mask, centre, geometry)


# ---------------------------------------------------------------------- surfaces
def front_face_mesh(front: np.ndarray, mask: np.ndarray, geometry: Geometry, max_depth_jump_mm: float = 20.0) -> trimesh.Trimesh:
    """Open surface (camera frame, mm) of the front face only (single-face baseline): grid triangles facing the source."""
    mask = np.asarray(mask, bool) & (front > 0)
    tris = grid_triangles(mask)
    d = np.asarray(front, dtype=np.float64).reshape(-1)[tris]
    tris = tris[np.ptp(d, axis=1) <= max_depth_jump_mm] if len(tris) else tris
    mesh = trimesh.Trimesh(geometry.backproject(np.asarray(front, dtype=np.float64)).reshape(-1, 3), tris[:, ::-1], process=False)
    mesh.remove_unreferenced_vertices()
    return mesh


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


def bone_points(depth: np.ndarray, mask: np.ndarray, geometry: Geometry) -> dict[str, np.ndarray]:
    """Per-bone back-projected points (N, 3) camera frame mm (front then back faces); empty masks skipped."""
    faces = depth.shape[0] // mask.shape[0]
    out = {}
    for b, bone in enumerate(geometry.bones):
        if mask[b].any():
            front = depth[faces * b]
            pts = masked_points(front, depth[2 * b + 1] if faces == 2 else front, mask[b], geometry)
            out[bone] = pts if faces == 2 else pts[: len(pts) // 2]
    return out


def complete_surfaces(
    points: Mapping[str, np.ndarray], shape_models: Mapping[str, ShapeModel], geometry: Geometry, min_points: int = 10, **fit_kwargs
) -> dict[str, ShapeFit]:
    """Shape-model fit per bone with a model and at least ``min_points`` points (camera frame, cone-aware)."""
    return {
        bone: fit_shape_model(shape_models[bone], pts, geometry=geometry, **fit_kwargs)
        for bone, pts in points.items()
        if bone in shape_models and len(pts) >= max(min_points, 10)
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
    plausibility: dict = field(default_factory=dict)  # scripts.plausibility.plausibility of the masks and fits

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
                surf = self.surfaces[bone]
                info.update(centre_depth_mm=float(d.mean()), in_view=not border,
                            surface={"vertices": len(surf.vertices), "faces": len(surf.faces), "watertight": bool(surf.is_watertight)})
            fit = self.fits.get(bone)
            info["ssm"] = None if fit is None else {
                "rms_mm": fit.rms_mm, "inlier_fraction": fit.inlier_fraction, "coeffs_sd": fit.coeffs.tolist(), "pose_model_to_camera": fit.pose.tolist()
            }
            if not m.any():
                info["note"] = "bone not found (empty mask): skipped"
            out[bone] = info
        return out


# ---------------------------------------------------------------------- the reconstructor
def _average_with_mirror(parts: Mapping[str, torch.Tensor], mirrored: Mapping[str, torch.Tensor], bones: Sequence[str], faces: int) -> dict[str, torch.Tensor]:
    """Mean of the network's maps of an image and (mirrored back) of its left-right mirror image.

    The mirror image shows the mirror patient, so its maps are flipped back and its left/right bone
    channels swapped (:func:`scripts.transforms.flip_bone_maps_lr`). The relative (CASI) depths'
    free offsets need no matching: :meth:`DepthPrediction.absolute` re-centres the mean anyway.
    """
    return {
        "depth": 0.5 * (parts["depth"] + flip_bone_maps_lr(mirrored["depth"], bones, faces)),
        "mask_logits": 0.5 * (parts["mask_logits"] + flip_bone_maps_lr(mirrored["mask_logits"], bones, 1)),
        "centre": 0.5 * (parts["centre"] + mirrored["centre"]),
    }


class Reconstructor:
    """Network + preprocessing + shape models: ``reconstructor(image, geometry) -> Reconstruction``.

    Args:
        network: the network definition (e.g. :class:`scripts.networks.DualFaceDepthNet`); weights from ``ckpt_path``.
        ckpt_path: state-dict checkpoint (TorchScript only with ``torchscript``); ``None`` only when predictions are always given.
        preprocessing: dictionary transform on ``{"image": (1, H, W)}`` at the network size (normalisation as in training).
        image_size: (W, H) the network was trained at; inputs are area-resized to it, the geometry with them.
        ssm_path: per-bone shape models (``scripts.ssm``); ``None`` disables completion.
        device: torch device (default CUDA when available); an unavailable one raises InputFileError naming ``--device``.
        min_pixels: a bone with fewer mask pixels counts as not found.
        max_depth_jump_mm: meshing depth-jump threshold (:func:`scripts.meshing.dual_face_mesh`).
        fit_kwargs: extra arguments of :func:`scripts.ssm.fit_shape_model`.
        flip_tta: also run the network on the left-right mirror image and average (test-time
            augmentation; twice the network time). Exact for a centred principal point.
        bones: names of the network's bone channels, in order (configs: ``bones``). The maps are
            labelled with these, whatever order an input's geometry.json lists (that order only
            describes the input's own truth files).
        plausibility: thresholds of :func:`scripts.plausibility.plausibility` (configs: ``plausibility``).
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
        self.flip_tta = bool(flip_tta)
        self.network: torch.nn.Module | None = None
        self.shape_models: dict[str, ShapeModel] | None = None

    def load(self, network: bool = True) -> "Reconstructor":
        """Load shape models and (``network``) weights, once. Raises :class:`InputFileError` naming a bad file."""
        if network and self.network is None and self.ckpt_path is not None:
            self.network = load_network(self.ckpt_path, self.network_def, self.device, self.torchscript)
        if self.shape_models is None:
            self.shape_models = load_shape_models(self.ssm_path)[0] if self.ssm_path else {}
        return self

    def predict(self, image: np.ndarray, geometry: Geometry, fov: np.ndarray | None = None) -> DepthPrediction:
        """Network maps of an (H, W) bone-bright image at the network size, with the matching geometry.

        ``fov`` (H, W): the radiograph's own area in ``image`` (1; 0 on padding, e.g. where a smaller
        input was padded to the standard field); None: all of it. The preprocessing fills the image
        outside it as in training, and no bone is predicted there (mask probability 0).
        """
        self.load()
        if self.network is None:
            raise ValueError("no checkpoint: pass ckpt_path or a precomputed prediction")
        net_geometry = replace(geometry if geometry.image_size == self.image_size else geometry.resized(self.image_size), bones=self.bones)
        data = {"image": torch.as_tensor(np.asarray(image, dtype=np.float32))[None]}
        if fov is not None:
            data["fov"] = torch.as_tensor(np.asarray(fov, dtype=np.float32))[None]
        data = self.preprocessing(data)
        x = torch.as_tensor(data["image"], dtype=torch.float32)[None].to(self.device)
        inside = data.get("fov")
        if tuple(x.shape[-2:]) != (net_geometry.height, net_geometry.width):
            raise ValueError(f"preprocessing gave {tuple(x.shape[-2:])}, expected (H, W) = {(net_geometry.height, net_geometry.width)}")
        bones = len(self.bones)
        with torch.inference_mode():
            out = self.network(x).float()
            faces = (out.shape[1] - 1 - bones) // bones
            parts = split_output(out, bones, faces)
            if self.flip_tta:
                mirrored = split_output(self.network(torch.flip(x, dims=(-1,))).float(), bones, faces)
                parts = _average_with_mirror(parts, mirrored, self.bones, faces)
        mask_prob = torch.sigmoid(parts["mask_logits"][0]).cpu()
        if inside is not None:
            mask_prob = mask_prob * (torch.as_tensor(inside).float().cpu().reshape(1, *mask_prob.shape[-2:]) > 0.5)
        return DepthPrediction(parts["depth"][0].cpu().numpy(), mask_prob.numpy(), float(parts["centre"][0]), net_geometry)

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
        fits = complete_surfaces(bone_points(depth, mask, geom), self.shape_models, geom, **self.fit_kwargs) if complete else {}
        t2 = time.perf_counter()
        centre = float(depth[np.repeat(mask, prediction.faces, axis=0)].mean()) if mask.any() else float("nan")
        score = plausibility(mask, depth, geom, {b: f.rms_mm for b, f in fits.items()}, **self.plausibility_kwargs)
        return Reconstruction(geom, depth, mask, centre, surfaces, fits, {"meshing": t1 - t0, "ssm": t2 - t1}, score)

    def __call__(self, image: np.ndarray, geometry: Geometry, prediction: DepthPrediction | None = None, fov: np.ndarray | None = None) -> Reconstruction:
        """Predict (unless ``prediction`` is given, e.g. an oracle) and reconstruct with the estimated centre depth (``fov``: :meth:`predict`)."""
        t0 = time.perf_counter()
        prediction = prediction or self.predict(image, geometry, fov)
        t1 = time.perf_counter()
        rec = self.reconstruct(prediction)
        rec.timings_s = {"network": t1 - t0, **rec.timings_s}
        return rec


# ---------------------------------------------------------------------- outputs
def write_reconstruction(out_dir: PathLike, rec: Reconstruction, image: np.ndarray, info: Mapping, name: str, source: str | None = None) -> Path:
    """Write ``out_dir`` atomically: depth/mask NIfTI (simulator layout), ``<bone>.ply``, ``<bone>_completed.ply``, result.json, report.png.

    ``source``: identifier of the input (:func:`scripts.radiograph_io.input_key`); an existing ``out_dir``
    is replaced only when it is this bundle's reconstruction of the same input (:func:`scripts.files.atomic_dir`).
    """
    geom = rec.geometry
    affine = geom.image_affine
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    with atomic_dir(out_dir, RESULT_KIND, source) as tmp:
        write_depth_and_mask(tmp, rec.depth, rec.mask, affine)
        for bone, mesh in rec.surfaces.items():
            mesh.export(tmp / f"{bone}.ply")
        for bone, mesh in rec.completed.items():
            mesh.export(tmp / f"{bone}_completed.ply")
        shown = None if info.get("burned_in_annotation") else _resize_image(image, geom)  # identifying text stays out of the report
        faces = rec.depth.shape[0] // rec.mask.shape[0]
        depth2 = np.moveaxis(rec.depth if faces == 2 else np.repeat(rec.depth, 2, axis=0), 0, -1)
        warnings = output_warnings(rec, info)
        save_reconstruction_report(
            tmp / "report.png", shown, np.moveaxis(rec.mask, 0, -1), depth2, rec.completed or rec.surfaces, geom.bones, title=name, warnings=warnings
        )
        result = {
            "name": name,
            "input_format": info.get("format"),
            "geometry_source": info.get("geometry_source"),
            "coverage": info.get("coverage"),
            "frame": FRAME,
            "geometry": geom.to_dict(),
            "faces": faces,
            "centre_depth_mm": rec.centre_mm,
            "bones": rec.bone_summary(),
            "warnings": warnings,
            "plausibility": rec.plausibility,
            "timings_s": {**rec.timings_s, "write": time.perf_counter() - t0},
        }
        write_json(tmp / "result.json", result)
    return out_dir


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
def _dicom_header(path: Path):
    """DICOM header (no pixels) for PHI-free naming, or None for NIfTI/PNG/TIFF."""
    return None if path.name.lower().endswith(NIFTI_SUFFIXES + RASTER_SUFFIXES) else read_dicom(path, stop_before_pixels=True)


class ReconstructionRunner:
    """Reconstruct every radiograph under ``input_dir`` into ``output_dir/<name>/``.

    A bad file is reported on stderr (one line: file and problem) and skipped; finished outputs are
    skipped on a rerun unless ``overwrite``. After all inputs, exits with status 1
    (``SystemExit``) if any failed or a checkpoint/shape model is unusable.

    Args:
        reconstructor: a :class:`Reconstructor`.
        input_dir: a radiograph file or a folder (searched recursively, :func:`scripts.radiograph_io.iter_radiographs`).
        output_dir: output root.
        standard_geometry: geometry JSON for inputs without their own (PNG/TIFF/DICOM); default configs/geometry.json.
        sid_mm, pixel_spacing_mm: fill-ins for inputs lacking them (:func:`scripts.radiograph_io.load_radiograph`).
        overwrite: redo finished outputs.
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
    ):
        self.reconstructor = reconstructor
        self.input_dir, self.output_dir = Path(input_dir), Path(output_dir)
        self.standard_geometry = standard_geometry
        self.sid_mm, self.pixel_spacing_mm, self.overwrite = sid_mm, pixel_spacing_mm, bool(overwrite)
        self._claimed: dict[str, Path] = {}  # output name -> the input that has it in this run

    @functools.cached_property
    def standard(self) -> Geometry:
        """The standard geometry given to inputs without their own."""
        return Geometry.standard(self.standard_geometry, check_range=True)

    def process(self, path: Path) -> str:
        """Reconstruct one file; returns "done" or "skipped". Raises InputFileError / ValueError for bad input.

        The output folder is ``output_dir/<name>`` (:func:`scripts.radiograph_io.output_name`, unique per
        input). It is skipped when it already holds this input's finished reconstruction (unless
        ``overwrite``); a name already used by another input of this run, or a folder that is not this
        input's reconstruction, is an error and is left untouched.
        """
        t0 = time.perf_counter()
        header = _dicom_header(path)
        name = output_name(path, header, self.input_dir if self.input_dir.is_dir() else None)
        source = input_key(path, header)
        target = self.output_dir / name
        other = self._claimed.setdefault(name, path)
        if other != path:
            raise InputFileError(path, f"its output name {name!r} is that of {other} too; rename one of them (nothing written for this one)")
        if check_replaceable(target, RESULT_KIND, source) and not self.overwrite and (target / "result.json").exists():
            return "skipped"
        image, geometry, info = load_radiograph(path, self.standard, self.sid_mm, self.pixel_spacing_mm)
        fov = radiograph_field(path, geometry, info)
        t1 = time.perf_counter()
        rec = self.reconstructor(image, geometry, fov=fov)
        rec.timings_s = {"load": t1 - t0, **rec.timings_s}
        write_reconstruction(target, rec, image, info, name, source)
        for warning in output_warnings(rec, info):  # named by the output folder: free of patient identifiers
            tqdm.write(f"{target}: warning: {warning}", file=sys.stderr)
        return "done"

    def run(self) -> dict[str, list[str]]:
        """Process all inputs; returns {"done", "skipped", "failed"} lists, or exits 1 after all if any failed."""
        try:
            _ = self.standard
            self.reconstructor.load()
            inputs = list(iter_radiographs(self.input_dir, self.output_dir))
            remove_partials(self.output_dir)  # unfinished outputs of an interrupted (killed) run
        except (InputFileError, GeometryError) as e:
            print(e, file=sys.stderr)
            raise SystemExit(1) from None
        status: dict[str, list[str]] = {"done": [], "skipped": [], "failed": []}
        if not inputs:
            print(f"{self.input_dir}: no radiographs found", file=sys.stderr)
            raise SystemExit(1)
        for path in tqdm(inputs, desc="reconstruct", unit="image"):
            try:
                status[self.process(path)].append(str(path))
            except InputFileError as e:
                tqdm.write(str(e), file=sys.stderr)
                status["failed"].append(str(path))
            except (ValueError, GeometryError) as e:
                tqdm.write(f"{path}: {e}", file=sys.stderr)
                status["failed"].append(str(path))
            except Exception as e:  # anything else fails this input only; KeyboardInterrupt still stops the batch
                tqdm.write(f"{path}: failed ({type(e).__name__}: {e})", file=sys.stderr)
                status["failed"].append(str(path))
        print(f"reconstructed {len(status['done'])}, skipped {len(status['skipped'])} (already done), failed {len(status['failed'])}", file=sys.stderr)
        if status["failed"]:
            raise SystemExit(1)
        return status


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
    (sentences, e.g. an implausible prediction: :attr:`Reconstruction.warnings`)."""

    def __init__(self, meshes: Mapping[str, trimesh.Trimesh], warnings: Sequence[str] = ()):
        super().__init__(meshes)
        self.warnings = list(warnings)


def reconstruct_image(
    image: np.ndarray,
    geometry: Geometry,
    model_path: PathLike | None = None,
    ssm_path: PathLike | None = None,
    device: str | None = None,
    completed: bool = True,
    torchscript: bool = False,
) -> BoneMeshes:
    """Bone surfaces (camera frame, mm) of one bone-bright radiograph (H, W) taken with ``geometry``.

    Uses configs/inference.yaml (checkpoint ``model_path``, default models/model.pt; shape models
    ``ssm_path``, default models/ssm.npz). Returns per found bone the shape-model completion
    (``completed``; the dual-face surface where no fit was possible) or the dual-face surface, with
    the result's warnings (``.warnings``: empty unless the prediction is implausible).
    ``torchscript``: accept a TorchScript ``model_path`` (its code runs: trusted sources only).
    """
    rec = _cached_reconstructor(None if model_path is None else str(model_path), None if ssm_path is None else str(ssm_path), device, bool(torchscript))(image, geometry)
    return BoneMeshes({**rec.surfaces, **(rec.completed if completed else {})}, rec.warnings)
