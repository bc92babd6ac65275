"""Where does the depth error come from? The network's depth MAE (mm) per split with the true shift applied
once per radiograph (the evaluation's oracle), once per bone, and once per bone face; each channel's
offset from the radiograph's shift; and each femur's offset at its head (the top 30% of its mask rows)
against the rest of it (tilt in depth about the hip).

    python benchmarks/bench_depth_offsets.py --dataset_dir data/sim --splits training validation
        [--dataset_dir_test runs/sim_test] [--n 40] [--ckpt models/model.pt] [--image_size 128]
        [--output_dir bench_depth_offsets]

A large gap between the per-radiograph and per-bone rows means the bones' depths relative to each
other are off (a whole femur in front of or behind the pelvis); the per-face row is what is left in
each face's own shape. Pixels: predicted and true mask, true depth present, at the network size.
Writes depth_offsets.json and depth_offsets.png; prints a Markdown table for docs/training.md.
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
from tqdm import tqdm  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_centre_depth import rms  # noqa: E402
from scripts.model.training import load_datalist  # noqa: E402
from scripts.reconstruction.evaluate import load_sample  # noqa: E402
from scripts.reconstruction.reconstruct import build_reconstructor, true_face_mask  # noqa: E402

SHIFTS = ("radiograph", "bone", "face")
HEAD_ROWS = 0.3  # the top fraction of a femur's mask rows counted as its head and neck


def fixed_subset(dataset_dir: str | Path, split: str, n: int) -> list[dict]:
    """Up to ``n`` entries of a datalist split: a fixed random subset (seed 0, the same on every run), in datalist
    order; all when fewer."""
    entries = load_datalist(dataset_dir, split)
    pick = np.random.default_rng(0).choice(len(entries), min(n, len(entries)), replace=False)
    return [entries[i] for i in sorted(pick)]


def error_parts(pred_depth: np.ndarray, pred_mask: np.ndarray, depth: np.ndarray, mask: np.ndarray) -> dict:
    """Depth error parts of one radiograph: maps (2B, H, W) mm bone-major [front, back], masks (B, H, W) bool.

    Returns ``mae`` {shift: mm} (mean over channels of the mean absolute error after that shift),
    ``offset`` (2B,) each channel's mean error minus the radiograph's, mm, and ``head``/``rest`` (2B,) the
    same offset over the top ``HEAD_ROWS`` of the channel's rows and over the others (NaN when empty).
    """
    valid = true_face_mask(depth, mask, 2) & np.repeat(pred_mask, 2, axis=0)
    err = [np.where(v, p - t, np.nan) for v, p, t in zip(valid, pred_depth, depth, strict=True)]
    seen = [e[np.isfinite(e)] for e in err]
    if not any(s.size for s in seen):
        raise ValueError("no pixel where both masks and the true depth agree")
    overall = float(np.concatenate(seen).mean())
    per_bone = [np.concatenate(seen[2 * b : 2 * b + 2]) for b in range(len(seen) // 2)]
    shift = {
        "radiograph": [overall] * len(seen),
        "bone": [p.mean() if p.size else np.nan for p in per_bone for _ in (0, 1)],
        "face": [s.mean() if s.size else np.nan for s in seen],
    }
    mae = {
        k: float(np.nanmean([np.abs(s - m).mean() if s.size else np.nan for s, m in zip(seen, v, strict=True)]))
        for k, v in shift.items()
    }
    head, rest = np.full(len(seen), np.nan), np.full(len(seen), np.nan)
    for c, e in enumerate(err):
        rows = np.flatnonzero(np.isfinite(e).any(1))
        if rows.size < 2:
            continue
        cut = rows[0] + int(HEAD_ROWS * (rows[-1] - rows[0])) + 1
        head[c] = np.nanmean(e[:cut]) - overall
        rest[c] = np.nanmean(e[cut:]) - overall if np.isfinite(e[cut:]).any() else np.nan
    return {"mae": mae, "offset": np.array(shift["face"]) - overall, "head": head, "rest": rest}


def summarise(parts: list[dict], channels: list[str]) -> dict:
    """Mean MAE per shift, and RMS offsets per channel (overall, head, rest), mm."""

    def rms_of(key: str) -> dict:
        a = np.array([p[key] for p in parts])
        return {ch: float(np.sqrt(np.nanmean(a[:, i] ** 2))) for i, ch in enumerate(channels)}

    return {
        "n": len(parts),
        "mae_mm": {k: float(np.mean([p["mae"][k] for p in parts])) for k in SHIFTS},
        "offset_rms_mm": rms_of("offset"),
        "head_offset_rms_mm": rms_of("head"),
        "rest_offset_rms_mm": rms_of("rest"),
    }


def plot(results: dict, path: Path) -> None:
    """Bar chart: MAE per shift and split, and femur offsets (head / rest) per split."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(results)
    w = 0.8 / len(SHIFTS)
    for i, k in enumerate(SHIFTS):
        a.bar(np.arange(len(names)) + i * w, [results[n]["mae_mm"][k] for n in names], w, label=f"one shift per {k}")
    a.set_xticks(np.arange(len(names)) + w, names)
    a.set_ylabel("depth MAE (mm)")
    a.legend()
    femur = [c for c in next(iter(results.values()))["offset_rms_mm"] if c.startswith("femur")]
    for i, key in enumerate(("head_offset_rms_mm", "rest_offset_rms_mm")):
        b.bar(
            np.arange(len(names)) + i * 0.4,
            [np.mean([results[n][key][c] for c in femur]) for n in names],
            0.4,
            label="femur head and neck" if i == 0 else "rest of the femur",
        )
    b.set_xticks(np.arange(len(names)) + 0.2, names)
    b.set_ylabel("femur offset from the radiograph's shift, RMS (mm)")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset_dir", required=True, help="simulated data set (datalist.json)")
    p.add_argument("--splits", nargs="+", default=["training", "validation"])
    p.add_argument("--dataset_dir_test", default=None, help="a second data set whose test split is added")
    p.add_argument("--n", type=int, default=40, help="radiographs per split (a fixed random subset; all when fewer)")
    p.add_argument("--ckpt", default=str(ROOT / "models" / "model.pt"))
    p.add_argument("--image_size", type=int, default=None, help="network input size (default: configs/inference.yaml)")
    p.add_argument("--output_dir", default="bench_depth_offsets")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {"image_size": args.image_size} if args.image_size else {}
    rec = build_reconstructor(ckpt_path=args.ckpt, ssm_path=None, device="cpu", **overrides).load()
    channels = [f"{b}_{f}" for b in rec.bones for f in ("front", "back")]
    sets = [(args.dataset_dir, s) for s in args.splits] + (
        [(args.dataset_dir_test, "test")] if args.dataset_dir_test else []
    )
    results = {}
    for ds, split in sets:
        parts = []
        for entry in tqdm(fixed_subset(ds, split, args.n), desc=split):
            s = load_sample(entry, ds, rec.image_size, rec.bones)
            pred = rec.predict(s.image, s.geometry, s.fov)
            parts.append(error_parts(pred.depth, pred.mask, s.depth, s.mask))
        results[split] = summarise(parts, channels)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "depth_offsets.json").write_text(
        json.dumps({"ckpt": args.ckpt, "image_size": list(rec.image_size), "splits": results}, indent=2)
    )
    plot(results, out / "depth_offsets.png")
    print(
        "| split | radiographs | MAE, one shift per radiograph / bone / face | offset RMS pelvis / "
        "femur_left / femur_right | femur head / rest offset RMS |"
    )
    print("|---|---|---|---|---|")
    for split, r in results.items():
        off = r["offset_rms_mm"]
        bone_off = [rms([off[f"{b}_front"], off[f"{b}_back"]]) for b in rec.bones]
        fem = [c for c in off if c.startswith("femur")]
        print(
            f"| {split} | {r['n']} | "
            + " / ".join(f"{r['mae_mm'][k]:.2f}" for k in SHIFTS)
            + " | "
            + " / ".join(f"{x:.1f}" for x in bone_off)
            + f" | {rms([r['head_offset_rms_mm'][c] for c in fem]):.1f} / "
            f"{rms([r['rest_offset_rms_mm'][c] for c in fem]):.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
