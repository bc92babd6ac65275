"""Face-blind against face-matched shape-model fits, seen from the side: docs/figures/face_matching.png.

    python benchmarks/figure_face_matching.py [--dataset_dir runs/sim_test] [--sample subject_24_00_p5]
        [--bone femur_right] [--out PNG]

One simulated radiograph of a real test subject, the single-face baseline's front-face points of one
bone (estimated centre depth) and its shape-model completion fitted face-blind (bundle 0.10.1) and with
front-face points matched to the model's front (``ssm_fit: {match_faces: true}``, the default), beside
the true surface; camera frame, seen along the image rows (depth from the source to the right, image
columns up), clipped to the exposed field as the evaluation clips them. The ASSD of each fit is printed
and written in the panel titles (docs/reconstruction.md, "Front and back faces matched to the model's own").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.io.report import save_figure  # noqa: E402
from scripts.model.training import load_datalist  # noqa: E402
from scripts.reconstruction.evaluate import load_sample  # noqa: E402
from scripts.reconstruction.reconstruct import bone_points, build_reconstructor  # noqa: E402
from scripts.reconstruction.surface_metrics import ReferenceSurface  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", default=str(ROOT / "runs" / "sim_test"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--sample", default="subject_24_00_p5", help="sample folder name in the data set")
    parser.add_argument("--bone", default="femur_right")
    parser.add_argument("--ckpt", default=str(ROOT / "models" / "model_single_face.pt"), help="single-face network")
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "face_matching.png"))
    args = parser.parse_args(argv)
    entries = [
        e for e in load_datalist(args.dataset_dir, args.split) if Path(str(e["image"])).parent.name == args.sample
    ]
    if not entries:
        parser.error(f"{args.dataset_dir}: no {args.split} sample named {args.sample}")
    reconstructor = build_reconstructor(ckpt_path=args.ckpt, faces=1, device="cpu")
    reconstructor.load()
    sample = load_sample(entries[0], args.dataset_dir, reconstructor.image_size)
    prediction = reconstructor.predict(sample.image, sample.geometry, sample.fov)
    field = sample.field or sample.geometry
    truth = ReferenceSurface(sample.meshes[args.bone], field, 1.0, 20000, seed=1, extent_planes=sample.extent_planes)
    fits = {}
    for name, match in (("face-blind (bundle 0.10.1)", False), ("face-matched (shipped)", True)):
        reconstructor.fit_kwargs = {**reconstructor.fit_kwargs, "match_faces": match}
        rec = reconstructor.reconstruct(prediction)
        fits[name] = (rec.fits[args.bone].vertices, truth.metrics(rec.fits[args.bone].mesh())["assd_mm"])
        print(f"{args.sample} {args.bone} {name}: ASSD {fits[name][1]:.2f} mm")
    points = bone_points(rec.depth, rec.mask, rec.geometry)[0][args.bone]
    true_vertices = sample.meshes[args.bone].vertices
    fig, axes = plt.subplots(1, len(fits), figsize=(6 * len(fits), 5.5))
    for ax, (name, (vertices, assd)) in zip(axes, fits.items(), strict=True):
        for v, colour, alpha, label in (
            (true_vertices, "0.6", 1.0, "true surface"),
            (vertices, "tab:orange", 0.35, "completion"),
        ):
            seen = field.in_field_of_view(v)
            ax.scatter(v[seen, 2], v[seen, 0], s=2, c=colour, alpha=alpha, label=label, rasterized=True)
        ax.scatter(
            points[:, 2], points[:, 0], s=2, c="k", label="front-face points (single-face network)", rasterized=True
        )
        ax.set_title(f"{name}: ASSD {assd:.1f} mm")
        ax.set_xlabel("depth along the central ray, camera z (mm)")
        ax.set_aspect("equal")
        ax.set_ylabel("across the image, camera x (mm)")
    axes[0].legend(loc="best", markerscale=6, fontsize=8)
    fig.suptitle(f"{args.sample}, {args.bone}: shape-model completion from front faces only, in the exposed field")
    save_figure(fig, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
