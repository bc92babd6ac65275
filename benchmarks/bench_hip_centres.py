"""How well does a reconstruction place the femoral heads, and the hip plane that templating calibrates?

    python benchmarks/bench_hip_centres.py --dataset_dir runs/sim_test [more folders] [--splits test]
                                           [--ckpt models/model.pt] [--ssm models/ssm.npz] [--output_dir bench_hips]

Per radiograph and femur, the head centre of the shape-model completion (result.json ``bones.<femur>.head``,
scripts/reconstruction/hips.py) against the true one: the sphere through the head vertices of the true mesh
(chosen by the same rule, :func:`scripts.reconstruction.hips.femoral_head_vertices`, on the mesh in world RAS),
with the network's centre depth (``estimated``) and with the true one (``oracle``). Errors in mm, camera frame:
3D distance, along the central ray (z) and across it; the head radius; and the hip plane's magnification
(``SID / depth`` of the mean head-centre depth), in percent of the true one. Writes hip_centres.json and
hip_centres.png (the magnification error per radiograph beside clinical calibration methods' mean errors,
docs/inference.md); prints a Markdown table for docs/inference.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.io.files import write_json  # noqa: E402
from scripts.model.training import load_datalist  # noqa: E402
from scripts.reconstruction.evaluate import Sample, load_sample  # noqa: E402
from scripts.reconstruction.hips import MEDIAL_X, femoral_head_vertices, head_spheres, hip_plane  # noqa: E402
from scripts.reconstruction.reconstruct import (  # noqa: E402
    Reconstructor,
    build_reconstructor,
    mean_masked_depth,
    true_face_mask,
)

SHIFTS = ("estimated", "oracle")
# mean absolute hip-plane magnification error of clinical calibration, %, on 57 post-operative radiographs
# (Franken, Grimm, Heyligers, J Bone Joint Surg Br 2010; docs/inference.md)
CLINICAL_MEAN_ERROR_PCT = {
    "ball beside the trochanter": 2.55,
    "ball between the thighs": 2.04,
    "one fixed factor": 1.42,
}


def true_heads(sample: Sample) -> dict[str, tuple[np.ndarray, float]]:
    """{femur: (centre (3,), radius)} camera mm of the sample's true femur meshes (head chosen on the mesh in world RAS)."""
    vertices = {
        b: np.asarray(m.vertices, dtype=np.float64)
        for b, m in sample.meshes.items()
        if b in MEDIAL_X and len(m.vertices)
    }
    return head_spheres(
        vertices, {b: femoral_head_vertices(sample.geometry.camera_to_world_points(v), b) for b, v in vertices.items()}
    )


def score_sample(sample: Sample, recon: Reconstructor) -> dict:
    """Head-centre and hip-plane errors of one sample for each shift (mm, %)."""
    truth = true_heads(sample)
    true_plane = hip_plane({b: c for b, (c, _) in truth.items()}, sample.geometry.sid_mm)
    prediction = recon.predict(sample.image, sample.geometry, sample.fov)
    oracle = mean_masked_depth(sample.depth, true_face_mask(sample.depth, sample.mask, prediction.faces))
    row: dict = {"name": sample.name, "case": sample.case}
    for shift in SHIFTS:
        rec = recon.reconstruct(prediction, centre_mm=oracle if shift == "oracle" else None)
        femurs = {}
        for bone, (centre, radius) in rec.heads.items():
            if bone not in truth:
                continue
            d = np.asarray(centre) - truth[bone][0]
            femurs[bone] = {
                "error_mm": float(np.linalg.norm(d)),
                "along_ray_mm": float(d[2]),
                "across_ray_mm": float(np.hypot(d[0], d[1])),
                "radius_error_mm": float(radius - truth[bone][1]),
            }
        plane = hip_plane({b: rec.heads[b][0] for b in femurs}, rec.geometry.sid_mm)
        true_common = hip_plane({b: truth[b][0] for b in femurs}, sample.geometry.sid_mm)
        row[shift] = {
            "femurs": femurs,
            "magnification_error_pct": (
                None if plane is None else 100.0 * (plane["magnification"] / true_common["magnification"] - 1.0)
            ),
        }
    row["true_magnification"] = None if true_plane is None else true_plane["magnification"]
    return row


def summarise(rows: list[dict]) -> dict:
    """Per shift: mean 3D / across-ray head error, RMS along-ray error, mean radius error (mm) and magnification error (%)."""
    out = {}
    for shift in SHIFTS:
        femurs = [f for r in rows for f in r[shift]["femurs"].values()]
        mag = np.array(
            [r[shift]["magnification_error_pct"] for r in rows if r[shift]["magnification_error_pct"] is not None]
        )
        pick = lambda key: np.array([f[key] for f in femurs])  # noqa: E731
        out[shift] = {
            "femurs": len(femurs),
            "radiographs": int(len(mag)),
            "head_error_mm": float(pick("error_mm").mean()) if femurs else None,
            "across_ray_mm": float(pick("across_ray_mm").mean()) if femurs else None,
            "along_ray_rms_mm": float(np.sqrt(np.mean(pick("along_ray_mm") ** 2))) if femurs else None,
            "radius_error_mm": float(pick("radius_error_mm").mean()) if femurs else None,
            "magnification_mean_abs_pct": float(np.abs(mag).mean()) if len(mag) else None,
            "magnification_rms_pct": float(np.sqrt(np.mean(mag**2))) if len(mag) else None,
            "magnification_max_abs_pct": float(np.abs(mag).max()) if len(mag) else None,
        }
    return out


def markdown(summaries: dict[str, dict]) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [
        "| set | shift | femurs | head centre error, mean | across the ray, mean | along the ray, RMS | head radius error, mean "
        "| hip-plane magnification error, mean abs / RMS / max abs (%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, summary in summaries.items():
        for shift in SHIFTS:
            s = summary[shift]
            lines.append(
                f"| {name} | {shift} | {s['femurs']} | {fmt(s['head_error_mm'])} | "
                f"{fmt(s['across_ray_mm'])} | {fmt(s['along_ray_rms_mm'])} "
                f"| {fmt(s['radius_error_mm'])} | {fmt(s['magnification_mean_abs_pct'])} / "
                f"{fmt(s['magnification_rms_pct'])} / {fmt(s['magnification_max_abs_pct'])} |"
            )
    return "\n".join(lines)


def figure(path: Path, results: dict[str, list[dict]]) -> None:
    """Absolute hip-plane magnification error per radiograph (%), per set and shift, beside clinical calibration."""
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(results) * len(SHIFTS), 4.0))
    labels, data = [], []
    for name, rows in results.items():
        for shift in SHIFTS:
            labels.append(f"{name}\n{shift}")
            data.append(
                [
                    abs(r[shift]["magnification_error_pct"])
                    for r in rows
                    if r[shift]["magnification_error_pct"] is not None
                ]
            )
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    for (method, pct), style in zip(CLINICAL_MEAN_ERROR_PCT.items(), (":", "--", "-."), strict=True):
        ax.axhline(pct, color="grey", linestyle=style, linewidth=1, label=f"{method}: {pct}% (clinical mean)")
    ax.set_ylabel("|hip-plane magnification error| (%)")
    ax.set_title("Hip plane from the completed femoral heads")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--dataset_dir",
        type=Path,
        nargs="+",
        required=True,
        help="simulated data sets; with several, rows are named folder/split",
    )
    ap.add_argument("--splits", nargs="+", default=["test"])
    ap.add_argument("--ckpt", default=str(ROOT / "models" / "model.pt"))
    ap.add_argument("--ssm", default=str(ROOT / "models" / "ssm.npz"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--output_dir", type=Path, default=Path("bench_hips"))
    args = ap.parse_args(argv)
    recon = build_reconstructor(ckpt_path=args.ckpt, ssm_path=args.ssm, device=args.device).load()
    results: dict[str, list[dict]] = {}
    for dataset_dir in args.dataset_dir:
        for split in args.splits:
            entries = load_datalist(dataset_dir, split)
            if not entries:
                continue
            name = f"{dataset_dir.name}/{split}" if len(args.dataset_dir) > 1 else split
            results[name] = [
                score_sample(load_sample(e, dataset_dir, recon.image_size), recon)
                for e in tqdm(entries, desc=f"hip centres ({name})", unit="sample")
            ]
    summaries = {name: summarise(rows) for name, rows in results.items()}
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.output_dir / "hip_centres.json", {"summary": summaries, "samples": results})
    figure(args.output_dir / "hip_centres.png", results)
    print(markdown(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
