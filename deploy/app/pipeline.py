"""The deploy app's logic in plain Python (no MONAI Deploy / Holoscan import): load, infer, write.

The SDK operators in ``operators.py`` only move these objects between ports, so everything here is
testable with a fake inference callable ``(image, geometry, fov) -> {bone: trimesh.Trimesh}``.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import trimesh
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from scripts.io.dicom_export import write_encapsulated_stl, write_stl
from scripts.io.files import OUTPUT_MARKER, InputFileError, PathLike, atomic_dir, check_replaceable, remove_partials, write_json
from scripts.geometry import Geometry
from scripts.io.radiograph_io import input_key, iter_radiographs, load_radiograph_with_field, output_name, read_dicom

RESULT_KIND = "deploy result"  # the scripts.io.files marker of case folders
MeshFn = Callable[[np.ndarray, Geometry, "np.ndarray | None"], "dict[str, trimesh.Trimesh]"]
logger = logging.getLogger(__name__)


@dataclass
class RadiographCase:
    """One input radiograph in the standard geometry; ``fov`` its own area in the image (1; 0 where a smaller input was
    padded to the standard field, and DICOM pixel padding: :func:`scripts.io.radiograph_io.load_radiograph_with_field`); ``source`` is the DICOM header
    (no pixels) or None; ``key`` identifies the input in its output folder's marker (:func:`scripts.io.radiograph_io.input_key`)."""

    path: Path
    name: str
    image: np.ndarray
    geometry: Geometry
    info: dict
    fov: np.ndarray | None = None
    source: Dataset | None = None
    key: str | None = None


def load_cases(
    input_path: PathLike,
    standard: Geometry,
    sid_mm: float | None = None,
    pixel_spacing_mm: float | Sequence[float] | None = None,
    output_dir: PathLike | None = None,
) -> tuple[list[RadiographCase], list[str]]:
    """Load every radiograph under ``input_path`` (never ``output_dir`` or earlier results inside it).

    Refused files become one-line messages (second return) and the others still load; output names are
    unique per input (:func:`scripts.io.radiograph_io.output_name`) and a second input with the same name
    is refused, never written over the first, as is an input whose folder in ``output_dir`` this app may not
    replace (:func:`scripts.io.files.check_replaceable`: a user's folder, or a user's file added to a result).
    The ``.partial`` folders a killed run left in ``output_dir`` are removed first (:func:`scripts.io.files.remove_partials`).
    """
    cases, errors, claimed = [], [], {}
    root = Path(input_path) if Path(input_path).is_dir() else None
    try:
        paths = list(iter_radiographs(input_path, output_dir))
    except InputFileError as e:
        return [], [str(e)]
    if output_dir is not None:
        remove_partials(output_dir)
    for path in paths:
        try:
            image, geometry, info, fov = load_radiograph_with_field(path, standard, sid_mm=sid_mm, pixel_spacing_mm=pixel_spacing_mm)
            source = read_dicom(path, stop_before_pixels=True) if info["format"] == "dicom" else None
            name = output_name(path, source, root)
        except InputFileError as e:
            errors.append(str(e))
            continue
        except Exception as e:  # an unforeseen reader failure refuses this file only; the others still run
            errors.append(f"{path}: failed ({type(e).__name__}: {e})")
            continue
        if claimed.setdefault(name, path) != path:
            errors.append(f"{path}: its output name {name!r} is that of {claimed[name]} too; rename one of them (nothing written for this one)")
            continue
        key = input_key(path, source)
        if output_dir is not None:
            try:
                check_replaceable(Path(output_dir) / name, RESULT_KIND, key)  # before inference; again when written
            except InputFileError as e:
                errors.append(str(e))
                continue
        cases.append(RadiographCase(path, name, image, geometry, info, fov, source, key))
    return cases, errors


def run_inference(case: RadiographCase, infer: MeshFn) -> dict[str, trimesh.Trimesh]:
    """Call ``infer(image, geometry, fov)`` and check it returned non-empty meshes of known bones.

    Warnings the inference attaches to its result (``.warnings``, e.g. an implausible prediction:
    ``scripts.reconstruction.reconstruct.BoneMeshes``) are added to ``case.info["warnings"]`` (result.json, stderr),
    its hip plane (``.hip_plane``, docs/inference.md) to ``case.info["hip_plane"]`` (result.json).
    """
    meshes = infer(case.image, case.geometry, case.fov)
    if not isinstance(meshes, dict):
        raise TypeError(f"inference must return {{bone: trimesh.Trimesh}}, got {type(meshes).__name__}")
    unknown = set(meshes) - set(case.geometry.bones)
    if unknown:
        raise ValueError(f"inference returned unknown bone(s) {sorted(unknown)}; expected some of {case.geometry.bones}")
    case.info["warnings"] = [*case.info.get("warnings", []), *getattr(meshes, "warnings", [])]
    case.info["hip_plane"] = getattr(meshes, "hip_plane", None)
    return {b: m for b, m in meshes.items() if isinstance(m, trimesh.Trimesh) and len(m.faces) > 0}


def write_case(case: RadiographCase, meshes: dict[str, trimesh.Trimesh], output_dir: PathLike) -> list[Path]:
    """Write ``<output_dir>/<name>/<bone>.stl`` and ``<bone>.dcm`` (one new series per case, SoftwareVersions the
    bundle's version) and ``result.json``.

    The case folder appears only when complete; an existing one is replaced only when it is this app's
    result for the same input (else :class:`InputFileError` naming it). result.json holds no patient identifiers.
    """
    final = Path(output_dir) / case.name
    series_uid = generate_uid()
    with atomic_dir(final, RESULT_KIND, case.key) as tmp:
        for i, bone in enumerate(case.geometry.bones):
            if bone not in meshes:
                continue
            write_stl(meshes[bone], tmp / f"{bone}.stl")
            write_encapsulated_stl(
                meshes[bone], tmp / f"{bone}.dcm", bone, source=case.source, series_instance_uid=series_uid, instance_number=i + 1
            )
        summary = {
            "input_format": case.info["format"],
            "bones": {b: {"vertices": len(m.vertices), "faces": len(m.faces), "watertight": bool(m.is_watertight)} for b, m in meshes.items()},
            "geometry": case.geometry.to_dict(),
            "geometry_source": case.info.get("geometry_source"),
            "coverage": case.info.get("coverage"),
            "laterality": case.info.get("laterality"),
            "frame": "camera (mm): origin at the focal spot, +z toward the detector",
            "hip_plane": case.info.get("hip_plane"),
            "warnings": case.info.get("warnings", []),
        }
        write_json(tmp / "result.json", summary)
    return sorted(f for f in final.iterdir() if f.name != OUTPUT_MARKER)


def reconstruct_image_adapter(model_path: PathLike, device: str | None = None, ssm_path: PathLike | None = None) -> MeshFn:
    """Inference callable backed by ``scripts.reconstruction.reconstruct.reconstruct_image`` (imported on first use).

    Expected contract: ``reconstruct_image(image, geometry, model_path=..., ssm_path=..., device=..., fov=...)``
    returns ``{bone: trimesh.Trimesh}`` in the camera frame (mm): the shape-model completion where a fit
    was possible, else the dual-face surface; nothing is predicted outside the radiograph's own area ``fov``. ``ssm_path``: None for the bundle's models/ssm.npz, "" for
    no completion. A model path ending in ``.ts`` may be TorchScript (its code runs: trusted sources
    only); any other is loaded as a state dict with ``weights_only=True``.
    """

    torchscript = Path(model_path).suffix.lower() == ".ts"  # the explicit request for TorchScript (code: trusted sources only)

    def infer(image: np.ndarray, geometry: Geometry, fov: np.ndarray | None = None) -> dict[str, trimesh.Trimesh]:
        from scripts.reconstruction.reconstruct import reconstruct_image

        return reconstruct_image(image, geometry, model_path=str(model_path), ssm_path=None if ssm_path is None else str(ssm_path), device=device,
                                 torchscript=torchscript, fov=fov)

    return infer


def reconstruct_cases(cases: Sequence[RadiographCase], infer: MeshFn) -> Iterator[tuple[RadiographCase, dict[str, trimesh.Trimesh] | None, str | None]]:
    """For each case in turn, ``(case, meshes, None)``, or ``(case, None, line)`` when its inference failed (any
    exception of ``infer``). An :class:`InputFileError` naming another file than the case's input (the model,
    the shape-model file) ends the loop: every further case would fail alike."""
    for case in cases:
        try:
            yield case, run_inference(case, infer), None
        except InputFileError as e:
            yield case, None, str(e)
            if Path(e.path) != case.path:
                return
        except ValueError as e:
            yield case, None, f"{case.path}: {e}"
        except Exception as e:  # anything else the callable raises fails this case only; KeyboardInterrupt still stops the run
            yield case, None, f"{case.path}: inference failed ({type(e).__name__}: {e})"


def write_results(results: Sequence[tuple[RadiographCase, dict[str, trimesh.Trimesh]]], output_dir: PathLike) -> list[str]:
    """Write every case (:func:`write_case`); returns one line per case that could not be written (e.g. a user's
    folder of its name). Each written case's warnings go to stderr, named by its PHI-free output folder."""
    errors = []
    for case, meshes in results:
        try:
            write_case(case, meshes, output_dir)
        except InputFileError as e:
            errors.append(str(e))
            continue
        logger.info("reconstructed %s", case.name)
        for warning in case.info.get("warnings", []):
            print(f"{Path(output_dir) / case.name}: warning: {warning}", file=sys.stderr)
    return errors


def run(input_path: PathLike, output_dir: PathLike, infer: MeshFn, standard: Geometry | None = None, **load_kwargs) -> int:
    """Whole app without the SDK: returns 0 when every input was reconstructed, else 1 (errors on stderr)."""
    cases, errors = load_cases(input_path, standard or Geometry.standard(), output_dir=output_dir, **load_kwargs)
    for case, meshes, error in reconstruct_cases(cases, infer):  # each case written as soon as it is done
        errors += [error] if error else write_results([(case, meshes)], output_dir)
    if not cases and not errors:
        errors.append(f"{input_path}: no radiographs found")
    for line in errors:
        print(line, file=sys.stderr)
    return 1 if errors else 0
