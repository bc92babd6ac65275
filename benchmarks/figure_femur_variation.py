"""Femurs beyond the training span: docs/figures/femur_variation.png.

    python benchmarks/figure_femur_variation.py [--draws 300] [--out PNG]

Left: the training-mean left femur in its neutral frame (head centre at the origin, mechanical axis
vertical, lateral -x, anterior +y) with each change of ``--femur_variation`` at -2 and +2 SD (version
seen from above, neck-shaft angle from the front, shaft bow from the side). Right: where the shaft
lies in depth relative to the head, 100 mm below the head centre (mm, + anterior), for the 26 LLP26
subjects by split and for ``--draws`` cohort draws without and with ``--femur_variation 1``; the
per-group means and ranges are printed (docs/training.md, "Why the femur set").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import trimesh  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.data import real_anatomy as ra  # noqa: E402
from scripts.io.report import save_figure  # noqa: E402

LEVEL_MM = 100.0  # below the head centre
CHANGES = (
    ("version_deg", "version (from above)", (0, 1)),
    ("neck_shaft_deg", "neck-shaft angle (from the front)", (0, 2)),
    ("bow_mm", "shaft bow (from the side)", (1, 2)),
)


def neutral_surface(
    femur_nodes: np.ndarray, frame: tuple[np.ndarray, float, np.ndarray] | None = None
) -> trimesh.Trimesh:
    """Surface (mm) of a left femur in the neutral frame of ``frame`` (default: its own)."""
    mesh = ra.surface("femur", femur_nodes)
    centre, _, rot = frame or ra.femur_neutral_frame(mesh.vertices)
    return trimesh.Trimesh((mesh.vertices - centre) @ rot.T, mesh.faces, process=False)


def shaft_depth_mm(femur_nodes: np.ndarray) -> float:
    """Depth (mm, + anterior) of the area centroid of the femur's cross-section ``LEVEL_MM`` below the head
    centre, neutral frame."""
    return float(ra.section_centroid(neutral_surface(femur_nodes), -LEVEL_MM)[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=300, help="cohort draws per group")
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "femur_variation.png"))
    args = parser.parse_args(argv)
    pca = ra.training_pca()
    _, mean_nodes = pca.sample(np.zeros(len(pca.sd)))
    frame = ra.femur_neutral_frame(ra.surface("femur", mean_nodes).vertices)
    fig, axes = plt.subplots(1, 4, figsize=(17, 5.5), gridspec_kw={"width_ratios": [1, 1, 0.7, 1.6]})
    base = neutral_surface(mean_nodes, frame).vertices
    for ax, (key, title, (i, j)) in zip(axes, CHANGES, strict=False):
        top = base[:, 2] > -LEVEL_MM - 60.0 if key != "bow_mm" else np.ones(len(base), bool)
        ax.scatter(base[top, i], base[top, j], s=1, c="0.6", label="training mean")
        for k, colour in ((-2.0, "tab:blue"), (2.0, "tab:red")):
            value = k * ra.FEMUR_VARIATION_SD[key]
            v = neutral_surface(ra.vary_femur(mean_nodes, **{key: value}), frame).vertices
            ax.scatter(
                v[top, i], v[top, j], s=1, c=colour, alpha=0.5, label=f"{value:+g} {'mm' if key == 'bow_mm' else 'deg'}"
            )
        ax.set_aspect("equal")
        ax.set_xlabel("xyz"[i] + " (mm)")
        ax.set_ylabel("xyz"[j] + " (mm)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, markerscale=6, loc="lower left")
    rng = np.random.default_rng(0)
    groups = {
        f"LLP26 {name} subjects": [shaft_depth_mm(ra.subject_nodes(s)[1]) for s in subjects]
        for name, subjects in ra.SUBJECT_SPLITS.items()
    }
    plain, varied = [], []
    for _ in range(args.draws):
        nodes = ra.subject_shape(None, rng)[1]
        plain.append(shaft_depth_mm(nodes))
        varied.append(shaft_depth_mm(ra.vary_femur(nodes, **ra.femur_variation_draw(1.0, rng))))
    groups["cohort draws (training PCA)"] = plain
    groups["cohort draws, --femur_variation 1"] = varied
    ax = axes[3]
    for row, (name, values) in enumerate(groups.items()):
        values = np.asarray(values)
        ax.scatter(
            values,
            np.full(len(values), row) + rng.uniform(-0.15, 0.15, len(values)),
            s=8 if len(values) < 30 else 2,
            alpha=0.8,
        )
        print(
            f"{name:36s} n={len(values):3d} mean {values.mean():6.1f}  sd {values.std(ddof=1):5.1f}  "
            f"range {values.min():6.1f} .. {values.max():6.1f} mm"
        )
    ax.set_yticks(range(len(groups)), list(groups), fontsize=8)
    ax.set_xlabel(f"shaft depth {LEVEL_MM:g} mm below the head centre (mm, + anterior)")
    ax.set_title("shaft depth relative to the head", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
