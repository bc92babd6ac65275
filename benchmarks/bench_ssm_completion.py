"""Shape-model completion on the real LLP26 test subjects, from the part of each bone a radiograph sees.

    python benchmarks/bench_ssm_completion.py [--ssm models/ssm.npz] [--compare OTHER.npz ...]
                                              [--subjects test] [--poses 2] [--figure docs/figures/ssm_completion_llp26.png]

For every real subject of ``--subjects`` (LLP26 test subjects 20-25 by default) and ``--poses``
seeded hip poses, the true bone surfaces (scripts.data.real_anatomy) are seen in the standard AP
geometry; the true surface inside the X-ray cone (what perfect dual-face depth maps give) is
sampled (1 point per 4 mm^2) and each shape model is fitted to it in the X-ray cone
(``scripts.reconstruction.ssm.fit_shape_model``; inference also cuts the cone at each mask's inferior and
lateral edges, which here are the cone's own). Reports the completion's ASSD against the truth inside the cone and
over the whole bone, per bone, as a Markdown table for docs/phantom.md, and saves a figure of one
subject (truth, then each model's completion, coloured by the distance to the truth).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from scripts.data.real_anatomy import SUBJECT_SPLITS, sample_subject  # noqa: E402
from scripts.geometry import Geometry, read_standard_geometry, standard_ap_pose  # noqa: E402
from scripts.io.report import AP_VIEW, error_rgba, render_mesh, save_figure  # noqa: E402
from scripts.reconstruction.ssm import fit_shape_model, load_shape_models  # noqa: E402
from scripts.reconstruction.surface_metrics import (  # noqa: E402
    clip_to_field_of_view,
    sample_surface,
    surface_metrics,
    vertex_errors,
)


def completions(models: dict, truth: dict, geometry: Geometry) -> dict:
    """Per bone: the completed mesh (camera frame) fitted to the truth's in-cone surface points."""
    out = {}
    for bone, mesh in truth.items():
        seen = clip_to_field_of_view(mesh, geometry)
        if bone not in models or len(seen.faces) == 0:
            continue
        points = sample_surface(seen, spacing_mm=2.0)
        out[bone] = fit_shape_model(models[bone], points, geometry=geometry).mesh()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ssm", default=str(ROOT / "models" / "ssm.npz"))
    parser.add_argument(
        "--compare", nargs="*", default=[], help="other shape-model files, e.g. the procedural release's"
    )
    parser.add_argument("--subjects", default="test", choices=sorted(SUBJECT_SPLITS))
    parser.add_argument("--poses", type=int, default=2)
    parser.add_argument("--figure", default=str(ROOT / "docs" / "figures" / "ssm_completion_llp26.png"))
    args = parser.parse_args()
    files = [args.ssm, *args.compare]
    model_sets = {Path(f).stem: load_shape_models(f)[0] for f in files}
    rows, shown = [], None
    standard, source_to_object_mm = read_standard_geometry()
    for j in SUBJECT_SPLITS[args.subjects]:
        for k in range(args.poses):
            subject = sample_subject(1000 * j + k, j)
            centre = subject.meshes["pelvis"].bounds.mean(0) - (0.0, 0.0, 20.0)
            geometry = standard.with_pose(standard_ap_pose(centre, source_to_object_mm))
            truth = {b: m.copy().apply_transform(geometry.world_to_camera) for b, m in subject.meshes.items()}
            for name, models in model_sets.items():
                done = completions(models, truth, geometry)
                for bone, mesh in done.items():
                    seen = surface_metrics(mesh, truth[bone], geometry, spacing_mm=2.0)["assd_mm"]
                    whole = surface_metrics(mesh, truth[bone], None, spacing_mm=2.0)["assd_mm"]
                    rows.append((name, bone, j, seen, whole))
                if shown is None:
                    shown = (j, truth, geometry, {})
                if shown[0] == j and k == 0:
                    shown[3][name] = done
            print(f"subject {j} pose {k} done", flush=True)
    print("\n| shape model | bone | ASSD in the X-ray cone (mm) | ASSD whole bone (mm) |\n|---|---|---|---|")
    for name in model_sets:
        for bone in ("pelvis", "femur_left", "femur_right"):
            sel = [(s, w) for n, b, _, s, w in rows if n == name and b == bone]
            if sel:
                s, w = np.array(sel).T
                print(f"| {name} | {bone} | {s.mean():.2f} (max {s.max():.2f}) | {w.mean():.2f} (max {w.max():.2f}) |")
    j, truth, geometry, done = shown
    fig, axes = plt.subplots(1, 1 + len(done), figsize=(4.2 * (1 + len(done)), 5.2))
    render_mesh(axes[0], truth, AP_VIEW, f"LLP26 test subject {j}: truth (AP view)")
    for ax, (name, meshes) in zip(axes[1:], done.items(), strict=True):
        colours = {b: error_rgba(vertex_errors(m, truth[b])[m.faces].mean(1), max_mm=10.0) for b, m in meshes.items()}
        render_mesh(ax, meshes, AP_VIEW, f"completion with {name}\n(colour: distance to truth, 0-10 mm)", colours)
    fig.suptitle("shape-model completion from the bone surface inside the X-ray cone", fontsize=10)
    fig.tight_layout()
    save_figure(fig, args.figure, dpi=90)
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
