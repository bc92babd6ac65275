"""The bundle's main job on its embedded default data (``make demo``).

A real held-out adult pelvis and femurs (LLP26 test subject 20, never seen in training) posed and
given soft tissue by the phantom generator (CT, bone labels, true surfaces) -> a radiograph with the
clinical image formation of configs/simulate.yaml -> the inference workflow with the shipped model
(models/model.pt, models/ssm.npz) -> meshes, report.png and result.json -> surface errors against
the true surfaces, printed and written to errors.json, and drawn on the completed surfaces in errors.png. Everything
runs offline.

    python -m scripts.demo --out demo_output [--subject 20] [--seed 1] [--spacing 1.5] [--device cpu]
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import monai.bundle
import numpy as np
import trimesh
from scripts import BUNDLE_ROOT
from scripts.config_flags import argument, as_count, as_device, path_argument
from scripts.data.phantom import check_spacing, generate_case, write_case
from scripts.data.real_anatomy import TEST_SUBJECTS
from scripts.data.simulate import find_cases, simulate
from scripts.geometry import Geometry
from scripts.io.files import OneLineParser, atomic_dir, exits_on_input_error, remove_partials, write_json
from scripts.io.report import save_error_map
from scripts.reconstruction.evaluate import truth_meshes
from scripts.reconstruction.reconstruct import INFERENCE_CONFIG
from scripts.reconstruction.ssm import read_mesh
from scripts.reconstruction.surface_metrics import surface_metrics, vertex_errors

DEMO_CASE = "case_demo"
ERROR_MAP_MAX_MM = 10.0  # errors.png's colour scale, 0 .. 10 mm (the completions' HD95 lies about there)
DEMO_KIND = "demo"  # the output marker's kind of a demo output folder (scripts.io.files.atomic_dir)


def run_demo(out: Path, subject: int, seed: int, spacing_mm: float, device: str | None) -> dict:
    """Run the demo into ``out`` on LLP26 test subject ``subject`` (pose, tissue and image formation from
    ``seed``); returns per-bone errors (mm) of the dual-face and completed surfaces.

    ``out`` is the demo's own folder (:func:`scripts.io.files.atomic_dir`, kind :data:`DEMO_KIND`): written beside
    it and put in place when complete, replacing only an earlier demo output; an existing folder holding anything
    else (a user's files) raises :class:`scripts.io.files.InputFileError` before any work and is left untouched. The
    temporary folder a killed demo left beside ``out`` is removed first."""
    remove_partials(out.parent, [out.name])
    with atomic_dir(out, DEMO_KIND) as work:
        print(f"[1/4] phantom of LLP26 test subject {subject} (seed {seed}, {spacing_mm} mm) -> {out / 'phantom'}")
        write_case(generate_case(seed, spacing_mm, "llp26", subject=subject), work / "phantom" / DEMO_CASE)

        print(f"[2/4] simulated radiograph (clinical image formation) -> {out / 'radiograph'}")
        datalist, errors = simulate(
            find_cases(work / "phantom"), work / "radiograph", poses=1, seed=seed, device=device, overwrite=True
        )
        if errors:
            raise RuntimeError("; ".join(errors))
        entry = next(e for split in datalist.values() for e in split)
        sample_dir = work / "radiograph" / Path(entry["image"]).parent

        print(f"[3/4] inference with the shipped model -> {out / 'reconstruction'}")
        overrides = {"device": device} if device else {}
        monai.bundle.run(
            config_file=str(INFERENCE_CONFIG),
            bundle_root=str(BUNDLE_ROOT),
            input_dir=str(sample_dir),
            output_dir=str(work / "reconstruction"),
            overwrite=True,
            **overrides,
        )
        rec_dir = work / "reconstruction" / sample_dir.name
        print(f"      meshes, report.png and result.json: {out / 'reconstruction' / sample_dir.name}")

        print("[4/4] surface errors against the phantom's true surfaces (clipped to the X-ray cone)")
        geometry = Geometry.load(sample_dir / "geometry.json")
        truth = truth_meshes(entry, work / "radiograph", geometry)
        results: dict[str, dict] = {}
        completed: dict[str, trimesh.Trimesh] = {}
        for bone, ref in truth.items():
            row = {}
            for kind, suffix in (("dual_face", ""), ("dual_face_ssm", "_completed")):
                path = rec_dir / f"{bone}{suffix}.ply"
                mesh = read_mesh(path) if path.exists() else None
                row[kind] = None if mesh is None else surface_metrics(mesh, ref, geometry)
                if mesh is not None and suffix:
                    completed[bone] = mesh
            results[bone] = row
        write_json(work / "errors.json", results)
        save_error_map(
            work / "errors.png",
            completed,
            {bone: vertex_errors(mesh, truth[bone], geometry) for bone, mesh in completed.items()},
            ERROR_MAP_MAX_MM,
            f"demo, LLP26 test subject {subject} (seed {seed}): shape-model completions, distance to the true surfaces",
        )
    return results


def format_errors(results: dict) -> str:
    """Text table of :func:`run_demo`'s per-bone ASSD and HD95 (mm)."""
    lines = [f"{'bone':<12} {'dual-face ASSD':>15} {'+ shape model ASSD':>19} {'+ shape model HD95':>19}"]
    for bone, row in results.items():
        cells = [row[k]["assd_mm"] if row[k] else np.nan for k in ("dual_face", "dual_face_ssm")]
        hd95 = row["dual_face_ssm"]["hd95_mm"] if row["dual_face_ssm"] else np.nan
        lines.append(f"{bone:<12} {cells[0]:>12.2f} mm {cells[1]:>16.2f} mm {hd95:>16.2f} mm")
    return "\n".join(lines)


@exits_on_input_error
def main(argv: Sequence[str] | None = None) -> int:
    """CLI: run the demo; returns the exit status."""
    parser = OneLineParser(prog="python -m scripts.demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out",
        default="demo_output",
        type=path_argument,
        help="output folder, the demo's own: a rerun replaces it; a folder holding anything else is refused",
    )
    parser.add_argument(
        "--subject",
        type=int,
        choices=TEST_SUBJECTS,
        default=TEST_SUBJECTS[0],
        help="LLP26 test subject (held out of training)",
    )
    parser.add_argument("--seed", type=argument(as_count), default=1, help="pose, soft tissue and image-formation seed")
    parser.add_argument("--spacing", type=argument(check_spacing), default=1.5, help="phantom CT voxel size, mm")
    parser.add_argument("--device", default=None, help="torch device (default: CUDA when available)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    if args.device is not None:  # before the phantom, which takes minutes
        as_device(args.device)
    results = run_demo(out, args.subject, args.seed, args.spacing, args.device)
    print(format_errors(results))
    print(f"errors: {out / 'errors.json'}")
    print(f"error map: {out / 'errors.png'}")
    return 0
