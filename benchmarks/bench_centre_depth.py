"""How good is the absolute depth? The centre-depth estimate's error (mm) on held-out subjects, split into
a per-subject part and a per-radiograph part, and, on the phantom cohort, set against what the
radiograph cannot show: each subject's own posterior soft-tissue thickness.

    python benchmarks/bench_centre_depth.py --dataset_dir data/sim [more folders] [--splits validation test]
                                            [--ckpt models/model.pt] [--output_dir bench_centre]

Error = network centre estimate - true mean depth of the visible bone faces (the oracle shift), mm.
The subject-level part is the RMS over subjects of their mean error; the within-subject part the RMS
of the errors about their subject's mean (poses differ, the subject does not). With the phantoms'
``params.json`` beside the case meshes, the posterior tissue's individual part (its residual on the
habitus that drives every soft-tissue depot, see scripts/data/phantom.py) is regressed out too. For any CT,
phantom or real, a second table sets the error against each sample's pelvis-to-table clearance (mm: the
posterior soft tissue between the pelvis's deepest point and the table top, as sample.json records it or
measured from the labels and pose). Writes centre_depth.json and centre_depth.png; prints Markdown tables
for docs/inference.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from numpy.typing import ArrayLike  # noqa: E402
from tqdm import tqdm  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.data.simulate import label_positions, table_clearance_mm  # noqa: E402
from scripts.data.volumes import load_label_map, read_labels  # noqa: E402
from scripts.io.files import InputFileError, read_json  # noqa: E402
from scripts.model.training import load_datalist, recorded_path  # noqa: E402
from scripts.reconstruction.evaluate import load_sample  # noqa: E402
from scripts.reconstruction.reconstruct import build_reconstructor, mean_masked_depth, true_face_mask  # noqa: E402


def phantom_tissue(entry: dict, dataset_dir: Path) -> tuple[float, float] | None:
    """(habitus, posterior tissue mm) of the entry's phantom subject, or None without its params.json."""
    meshes = entry.get("meshes") or {}
    if not meshes:
        return None
    params = (dataset_dir / next(iter(meshes.values()))).parent.parent / "params.json"
    if not params.is_file():
        return None
    tissue = json.loads(params.read_text()).get("tissue", {})
    return (float(tissue["habitus"]), float(tissue["posterior_tissue_mm"])) if "posterior_tissue_mm" in tissue else None


def pelvis_clearance(entry: dict, world_to_camera: np.ndarray, labels_cache: dict[str, np.ndarray]) -> float | None:
    """The sample's pelvis-to-table clearance (mm; :func:`scripts.data.simulate.table_clearance_mm`): as its
    sample.json records it, or measured from its (uncut) labels and pose for samples rendered before it was
    recorded (``world_to_camera``: its pose); None without a table (``pose.table_mm: null``) or a readable labels file.
    """
    notes_path = Path(entry["image"]).parent / "sample.json"  # datalist entries are absolute (load_datalist)
    notes = read_json(notes_path) if notes_path.is_file() else {}
    if notes.get("table_mm") is None:
        return None
    if notes.get("pelvis_table_clearance_mm") is not None:
        return float(notes["pelvis_table_clearance_mm"])
    source = notes.get("labels") and str(recorded_path(notes["labels"], notes_path.parent.parent))
    if source not in labels_cache:
        try:
            labels_cache[source] = label_positions(
                read_labels(source, None, load_label_map(notes.get("label_map"))), ("pelvis",)
            )
        except (InputFileError, OSError, TypeError):
            labels_cache[source] = np.empty((0, 3))
    return table_clearance_mm(labels_cache[source], world_to_camera, notes["table_mm"])


def rms(a: ArrayLike) -> float:
    """Root mean square of ``a`` (mm)."""
    return float(np.sqrt(np.mean(np.square(a))))


def by_subject(error: np.ndarray, subject: np.ndarray) -> dict[str, np.ndarray]:
    """The errors (mm) of each subject, subjects in order of first appearance."""
    return {s: error[subject == s] for s in dict.fromkeys(subject)}


def decompose(error: np.ndarray, subject: np.ndarray) -> dict[str, float]:
    """Bias, total RMS, subject-level RMS (of subject means) and within-subject RMS of ``error`` (mm)."""
    groups = by_subject(error, subject).values()
    return {
        "n": int(error.size),
        "subjects": len(groups),
        "bias_mm": float(error.mean()),
        "rms_mm": rms(error),
        "subject_rms_mm": rms([g.mean() for g in groups]),
        "within_subject_rms_mm": rms(np.concatenate([g - g.mean() for g in groups])),
    }


def tissue_regression(error: np.ndarray, tissue: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """Error against the posterior tissue's individual part (residual of thickness on habitus, mm).

    Returns (that part's SD, its correlation with the error, the slope in mm of error per mm of
    tissue and the error RMS once the linear part is removed; the per-sample individual part, mm).
    """
    habitus, posterior = tissue[:, 0], tissue[:, 1]
    design = np.c_[habitus, np.ones_like(habitus)]
    own = posterior - design @ np.linalg.lstsq(design, posterior, rcond=None)[0]
    slope, offset = np.polyfit(own, error, 1)
    rest = error - (slope * own + offset)
    return {
        "own_tissue_sd_mm": float(own.std()),
        "correlation": float(np.corrcoef(own, error)[0, 1]),
        "slope": float(slope),
        "rms_without_it_mm": rms(rest),
    }, own


def clearance_summary(error: np.ndarray, clearance: np.ndarray) -> dict[str, float | None]:
    """Mean, SD and range of the pelvis-to-table clearance (mm) and, over two or more distinct values, the
    error's correlation with it and the slope (mm of error per mm of clearance); None where undefined."""
    spread = clearance.size > 1 and np.ptp(clearance) > 0
    slope = float(np.polyfit(clearance, error, 1)[0]) if spread else None
    return {
        "mean_mm": float(clearance.mean()),
        "sd_mm": float(clearance.std()),
        "min_mm": float(clearance.min()),
        "max_mm": float(clearance.max()),
        "correlation": float(np.corrcoef(clearance, error)[0, 1]) if spread else None,
        "slope": slope,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--dataset_dir",
        type=Path,
        nargs="+",
        required=True,
        help="simulated data sets; with several, rows are named folder/split",
    )
    ap.add_argument("--splits", nargs="+", default=["validation", "test"])
    ap.add_argument("--ckpt", default=str(ROOT / "models" / "model.pt"))
    ap.add_argument("--output_dir", type=Path, default=Path("bench_centre"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    recon = build_reconstructor(ckpt_path=args.ckpt, ssm_path=None, device="cpu")

    results, plotted, labels_cache = {}, {}, {}
    pairs = [(d, s) for d in args.dataset_dir for s in args.splits if read_json(d / "datalist.json").get(s)]
    if not pairs:
        ap.error(f"no samples in the lists {args.splits} of {[str(d) for d in args.dataset_dir]}")
    for dataset_dir, split in pairs:
        name = split if len(args.dataset_dir) == 1 else f"{dataset_dir.name}/{split}"
        errors, subjects, tissue, clearance = [], [], [], []
        for entry in tqdm(load_datalist(dataset_dir, split), desc=f"centre depth ({name})", unit="sample"):
            sample = load_sample(entry, dataset_dir, recon.image_size)
            truth = mean_masked_depth(sample.depth, true_face_mask(sample.depth, sample.mask, 2))
            errors.append(recon.predict(sample.image, sample.geometry, sample.fov).centre_mm - truth)
            subjects.append(str(entry.get("case", sample.name)))
            tissue.append(phantom_tissue(entry, dataset_dir))
            clearance.append(pelvis_clearance(entry, sample.geometry.matrix, labels_cache))
        error, subject = np.array(errors), np.array(subjects)
        results[name], own, cleared = decompose(error, subject), None, None
        if all(t is not None for t in tissue):
            results[name]["posterior_tissue"], own = tissue_regression(error, np.array(tissue, dtype=float))
        if all(c is not None for c in clearance):
            cleared = np.array(clearance)
            results[name]["pelvis_table_clearance"] = clearance_summary(error, cleared)
        plotted[name] = (own, cleared, error, subject)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "centre_depth.json").write_text(json.dumps(results, indent=1))
    save_plot(args.output_dir / "centre_depth.png", plotted)
    print(
        "| split | radiographs (subjects) | bias | RMS | subject-level RMS | within-subject RMS | corr. "
        "with own posterior tissue | RMS without it |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for split, r in results.items():
        t = r.get("posterior_tissue", {})
        corr = f"{t['correlation']:.2f}" if t else "-"
        rest = f"{t['rms_without_it_mm']:.2f}" if t else "-"
        print(
            f"| {split} | {r['n']} ({r['subjects']}) | {r['bias_mm']:+.2f} | {r['rms_mm']:.2f} | {r['subject_rms_mm']:.2f} "
            f"| {r['within_subject_rms_mm']:.2f} | {corr} | {rest} |"
        )
    print()
    print(
        "| split | pelvis-to-table clearance, mean +- SD (range), mm | corr. with the error | error per mm of clearance |"
    )
    print("|---|---|---|---|")
    for split, r in results.items():
        if c := r.get("pelvis_table_clearance"):
            corr = "- | -" if c["correlation"] is None else f"{c['correlation']:.2f} | {c['slope']:+.2f}"
            print(
                f"| {split} | {c['mean_mm']:.1f} +- {c['sd_mm']:.1f} ({c['min_mm']:.1f}-{c['max_mm']:.1f}) | {corr} |"
            )
    return 0


def save_plot(path: Path, plotted: dict) -> None:
    """Error (mm) against the phantom subject's own posterior tissue and against the pelvis-to-table clearance
    (each when known), and per subject (mean +- SD over its poses)."""
    fig, (ax0, axc, ax1) = plt.subplots(1, 3, figsize=(16, 4.2))
    offset = 0
    for split, (own, cleared, error, subject) in plotted.items():
        if own is not None:
            ax0.scatter(own, error, s=12, alpha=0.7, label=split)
        if cleared is not None:
            axc.scatter(cleared, error, s=12, alpha=0.7, label=split)
        groups = list(by_subject(error, subject).values())
        x = np.arange(len(groups)) + offset
        ax1.errorbar(x, [g.mean() for g in groups], yerr=[g.std() for g in groups], fmt="o", capsize=3, label=split)
        offset += len(groups)
    ax0.set(
        xlabel="subject's own posterior soft tissue (mm, beyond its habitus)",
        ylabel="centre-depth error (mm)",
        title="error vs what an AP radiograph cannot show",
    )
    axc.set(
        xlabel="pelvis-to-table clearance (mm)",
        ylabel="centre-depth error (mm)",
        title="error vs the tissue under the pelvis",
    )
    ax1.axhline(0.0, color="k", lw=0.8)
    ax1.set(
        xlabel="held-out subject", ylabel="centre-depth error (mm), mean +- SD over poses", title="per-subject error"
    )
    for ax in (ax0, axc, ax1):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
