"""The deploy app's logic in plain Python (no MONAI Deploy / Holoscan import): load, infer, write.

The SDK operators in ``operators.py`` only move these objects between ports, so everything here is
testable with a fake inference callable ``(image, geometry, fov) -> {bone: trimesh.Trimesh}``. The inputs are listed,
read and named by :class:`scripts.io.radiograph_io.RadiographInputs` and result.json's shared fields built by
:func:`scripts.reconstruction.reconstruct.result_summary`, as for the bundle's inference.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import trimesh
from scripts.geometry import Geometry, camera_to_patient_lps
from scripts.io.dicom_export import NewSeries, write_encapsulated_stl, write_stl
from scripts.io.files import (
    OUTPUT_MARKER,
    InputFileError,
    PathLike,
    atomic_dir,
    check_replaceable,
    input_error_of,
    remove_partials,
    write_json,
)
from scripts.io.radiograph_io import RadiographFile, RadiographInputs
from scripts.reconstruction.reconstruct import mesh_summary, reconstruct_image, result_summary

RESULT_KIND = "deploy result"  # the scripts.io.files marker of case folders
MeshFn = Callable[[np.ndarray, Geometry, "np.ndarray | None"], "dict[str, trimesh.Trimesh]"]
logger = logging.getLogger(__name__)


def load_cases(
    input_path: PathLike,
    standard: Geometry,
    sid_mm: float | None = None,
    pixel_spacing_mm: float | Sequence[float] | None = None,
    output_dir: PathLike | None = None,
) -> tuple[list[RadiographFile], list[str]]:
    """Load every radiograph under ``input_path`` (never ``output_dir`` or earlier results inside it) into ``standard``.

    Each case (:class:`scripts.io.radiograph_io.RadiographFile`) carries its output name, marker key, DICOM header
    (no pixels; None for PNG/JPEG/TIFF/NIfTI), image, geometry, info and own area ``fov`` (1 inside; 0 on the padding of
    the standard field and on DICOM pixel padding). Refused files become one-line messages (second return) and the
    others still load; output names are unique per input (:func:`scripts.io.radiograph_io.output_name`) and a second
    input with the same name is refused, never written over the first, as is an input whose folder in ``output_dir``
    this app may not replace (:func:`scripts.io.files.check_replaceable`: a user's folder, or a user's file added to a
    result; checked before loading, again when written). The ``.partial`` folders a killed run left in ``output_dir``
    are removed first (:func:`scripts.io.files.remove_partials`). What is not a radiograph and no failure, as in the
    bundle's inference, is printed on stderr and left out of both lists: a DICOM object that holds no image (a
    structured report, presentation state, ...) and a further copy of a DICOM instance.
    """
    try:  # a bad sid_mm / pixel_spacing_mm is one line for the run, as an input folder that cannot be listed
        inputs = RadiographInputs(input_path, standard, sid_mm, pixel_spacing_mm, output_dir)
        paths = inputs.paths()
    except InputFileError as e:
        return [], [str(e)]
    if output_dir is not None:
        remove_partials(output_dir)

    def replaceable(item: RadiographFile) -> bool:
        check_replaceable(
            Path(output_dir) / item.name, RESULT_KIND, item.key, item.origin
        )  # raises for a folder this app may not replace
        return True

    items = list(inputs.items(paths, None if output_dir is None else replaceable))
    for line in inputs.copy_lines() + [item.error for item in items if item.no_image]:
        print(line, file=sys.stderr)
    return [item for item in items if not item.error], [
        item.error for item in items if item.error and not item.no_image
    ]


def run_inference(case: RadiographFile, infer: MeshFn) -> dict[str, trimesh.Trimesh]:
    """Call ``infer(image, geometry, fov)`` and check it returned non-empty meshes of known bones.

    Warnings the inference attaches to its result (``.warnings``, e.g. an implausible prediction:
    ``scripts.reconstruction.reconstruct.BoneMeshes``) are added to ``case.info["warnings"]`` (result.json, stderr),
    its hip plane (``.hip_plane``, docs/inference.md) to ``case.info["hip_plane"]`` and its per-bone summary
    (``.bones``: :meth:`scripts.reconstruction.reconstruct.Reconstruction.bone_summary`) to ``case.info["bones"]`` and the
    model that made it (``.model``: :attr:`scripts.reconstruction.reconstruct.Reconstructor.model`; None for a callable
    without one) to ``case.info["model"]`` (result.json).
    """
    meshes = infer(case.image, case.geometry, case.fov)
    if not isinstance(meshes, dict):
        raise TypeError(f"inference must return {{bone: trimesh.Trimesh}}, got {type(meshes).__name__}")
    unknown = set(meshes) - set(case.geometry.bones)
    if unknown:
        raise ValueError(
            f"inference returned unknown bone(s) {sorted(unknown)}; expected some of {case.geometry.bones}"
        )
    case.info["warnings"] = [*case.info.get("warnings", []), *getattr(meshes, "warnings", [])]
    case.info["hip_plane"] = getattr(meshes, "hip_plane", None)
    case.info["bones"] = getattr(meshes, "bones", {})
    case.info["model"] = getattr(meshes, "model", None)
    return {b: m for b, m in meshes.items() if isinstance(m, trimesh.Trimesh) and len(m.faces) > 0}


# result.json "mesh_frame": the frame of the app's STL and DICOM meshes (its values, e.g. hip_plane, are in "frame")
MESH_FRAME = "patient LPS (mm): patient_frame.camera_to_patient is already applied to the STL and DICOM meshes"


def write_case(case: RadiographFile, meshes: dict[str, trimesh.Trimesh], output_dir: PathLike) -> list[Path]:
    """Write ``<output_dir>/<name>/<bone>.stl`` and ``<bone>.dcm`` (one new series and Frame of Reference per case,
    :class:`scripts.io.dicom_export.NewSeries`; SoftwareVersions the
    bundle's version; both in the patient's nominal DICOM coordinates, LPS mm, :func:`camera_to_patient_lps`, as a
    DICOM Frame of Reference is patient-based) and ``result.json``: the fields the bundle's inference writes too
    (:func:`scripts.reconstruction.reconstruct.result_summary`), each written bone's summary (:func:`run_inference`'s
    ``bones``) with the size of the mesh written (``mesh``: the shape-model completion, else the surface).

    The case folder appears only when complete; an existing one is replaced only when it is this app's
    result for the same input (else :class:`InputFileError` naming it). result.json holds no patient identifiers.
    """
    final = Path(output_dir) / case.name
    series = NewSeries()  # one series, Frame of Reference (and study, without a source) for all bones
    to_patient = camera_to_patient_lps()
    with atomic_dir(final, RESULT_KIND, case.key, case.origin) as tmp:
        for i, bone in enumerate(case.geometry.bones):
            if bone not in meshes:
                continue
            mesh = meshes[bone].copy().apply_transform(to_patient)
            write_stl(mesh, tmp / f"{bone}.stl")
            write_encapsulated_stl(
                mesh, tmp / f"{bone}.dcm", bone, source=case.header, series=series, instance_number=i + 1
            )
        bones = {b: {**case.info.get("bones", {}).get(b, {}), "mesh": mesh_summary(m)} for b, m in meshes.items()}
        summary = result_summary(
            case.info,
            case.geometry,
            bones,
            case.info.get("hip_plane"),
            case.info.get("warnings", []),
            case.info.get("model"),
        )
        summary["mesh_frame"] = MESH_FRAME
        write_json(tmp / "result.json", summary)
    return sorted(f for f in final.iterdir() if f.name != OUTPUT_MARKER)


MODEL_SUFFIXES = (".ts", ".pt")  # the network files -m may name: TorchScript, state dict
# where the app's network keys are set (no option reaches them): a model trained otherwise (its training.json says so)
# is refused in one line naming the keys to set there (scripts.model.run_record.option_text)
SETTINGS_IN = "configs/inference.yaml"


def model_file(path: PathLike) -> Path:
    """The network file of ``-m``: a file as given; in a folder, its one ``.ts`` or ``.pt`` file, searched recursively
    (a MAP's models folder, ``HOLOSCAN_MODEL_PATH``, holds the packaged ``-m`` file as ``<name>/<file>``). Raises
    :class:`InputFileError` naming a folder that holds none or several."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = sorted(f for f in path.rglob("*") if f.suffix.lower() in MODEL_SUFFIXES and f.is_file())
    if len(found) != 1:
        held = ", ".join(str(f.relative_to(path)) for f in found) if found else "none"
        raise InputFileError(path, f"a model folder must hold one .ts or .pt file, it holds {held}; -m names the file")
    return found[0]


def reconstruct_image_adapter(
    model_path: PathLike, device: str | None = None, ssm_path: PathLike | None = None
) -> MeshFn:
    """Inference callable backed by :func:`scripts.reconstruction.reconstruct.reconstruct_image`.

    Expected contract: ``reconstruct_image(image, geometry, model_path=..., ssm_path=..., device=..., fov=...)``
    returns ``{bone: trimesh.Trimesh}`` in the camera frame (mm): the shape-model completion where a fit
    was possible, else the dual-face surface; nothing is predicted outside the radiograph's own area ``fov``.
    ``ssm_path``: None for the bundle's models/ssm.npz, "" for no completion. A model path ending in
    ``.ts`` may be TorchScript (its code runs: trusted sources only); any other is loaded as a state dict
    with ``weights_only=True``.
    """

    torchscript = (
        Path(model_path).suffix.lower() == ".ts"
    )  # the explicit request for TorchScript (code: trusted sources only)

    def infer(image: np.ndarray, geometry: Geometry, fov: np.ndarray | None = None) -> dict[str, trimesh.Trimesh]:
        return reconstruct_image(
            image,
            geometry,
            model_path=str(model_path),
            ssm_path=None if ssm_path is None else str(ssm_path),
            device=device,
            torchscript=torchscript,
            fov=fov,
            settings_option=SETTINGS_IN,
        )

    return infer


def reconstruct_cases(
    cases: Sequence[RadiographFile], infer: MeshFn
) -> Iterator[tuple[RadiographFile, dict[str, trimesh.Trimesh] | None, str | None]]:
    """For each case in turn, ``(case, meshes, None)``, or ``(case, None, line)`` when its inference failed (any
    exception of ``infer``). An :class:`InputFileError`, also one MONAI wrapped while building the configured
    reconstructor (e.g. ``--device``), naming another file or option than the case's input (the model, the
    shape-model file) ends the loop: every further case would fail alike. Each case is logged as it starts, with its
    place in the run ("reconstructing NAME (k of N)")."""
    for k, case in enumerate(cases, 1):
        logger.info("reconstructing %s (%d of %d)", case.name, k, len(cases))
        try:
            yield case, run_inference(case, infer), None
        except Exception as e:  # fails this case only (or, below, the run); KeyboardInterrupt still stops the run
            error = input_error_of(e)
            if error is not None:
                yield case, None, str(error)
                if Path(error.path) != case.path:
                    return
            elif isinstance(e, ValueError):
                yield case, None, f"{case.path}: {e}"
            else:
                yield case, None, f"{case.path}: inference failed ({type(e).__name__}: {e})"


def write_results(
    results: Sequence[tuple[RadiographFile, dict[str, trimesh.Trimesh]]], output_dir: PathLike
) -> list[str]:
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


def run(
    input_path: PathLike, output_dir: PathLike, infer: MeshFn, standard: Geometry | None = None, **load_kwargs
) -> int:
    """Whole app without the SDK: returns 0 when every input was reconstructed, else 1 (errors on stderr)."""
    cases, errors = load_cases(input_path, standard or Geometry.standard(), output_dir=output_dir, **load_kwargs)
    for case, meshes, error in reconstruct_cases(cases, infer):  # each case written as soon as it is done
        errors += [error] if error else write_results([(case, meshes)], output_dir)
    if not cases and not errors:
        errors.append(f"{input_path}: no radiographs found")
    for line in errors:
        print(line, file=sys.stderr)
    return 1 if errors else 0
