"""Two evaluations of the same test radiographs compared subject by subject (docs/README.md, "What the numbers say").

    python -m benchmarks.compare_evaluations OLD_DIR NEW_DIR [--shift centre] [--variant dual_face_ssm]

OLD_DIR and NEW_DIR are evaluation outputs (configs/evaluate.yaml, their metrics.json). For every bone
and "all", prints each evaluation's per-subject ASSD mean (mm) over the radiographs both evaluated (others,
e.g. more poses in one of them, are left out and counted), the mean of the per-subject differences NEW - OLD
and its 95% percentile-bootstrap interval over subjects (2000 draws, seed 0): a difference whose interval excludes 0
is more than the choice of subjects explains. Evaluations written before the ``case`` column take the subject from
the sample name (``<case>_p<pose>``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
from scripts.io.files import InputFileError, read_json
from scripts.reconstruction.evaluate import HEADLINE, bootstrap_interval, subject_summary


def subject_rows(metrics_json: Path) -> list[dict]:
    """Per-sample rows of an evaluation's metrics.json, ``null`` as NaN and each row's subject (``case``)."""
    data = read_json(metrics_json)
    rows = data.get("per_sample") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise InputFileError(metrics_json, "no per_sample rows: not an evaluation's metrics.json")
    return [
        {
            **{k: float("nan") if v is None else v for k, v in r.items()},
            "case": r.get("case") or re.sub(r"_p\d+$", "", r["sample"]),
        }
        for r in rows
    ]


def compare(
    old: list[dict],
    new: list[dict],
    variant: str = HEADLINE[0],
    shift: str = HEADLINE[1],
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Per bone: both evaluations' means over the subjects they share, each subject's mean taken over the radiographs
    (``sample``) both evaluated, and the mean NEW - OLD difference with its 95% bootstrap interval over those subjects
    (mm)."""
    both = {r["sample"] for r in old} & {r["sample"] for r in new}
    a, b = (subject_summary([r for r in rows if r["sample"] in both], variant, shift) for rows in (old, new))
    shared = [s for s in a["per_subject"] if s in b["per_subject"]]
    if not shared:
        raise ValueError(f"the two evaluations share no radiograph evaluated with {variant} ({shift} shift)")
    rng = np.random.default_rng(seed)
    out = {}
    for bone in a["bones"]:
        old_v = np.array([a["per_subject"][s].get(bone, np.nan) for s in shared])
        new_v = np.array([b["per_subject"][s].get(bone, np.nan) for s in shared])
        keep = np.isfinite(old_v) & np.isfinite(new_v)
        d = new_v[keep] - old_v[keep]
        out[bone] = (
            {
                "subjects": int(keep.sum()),
                "old": float(old_v[keep].mean()),
                "new": float(new_v[keep].mean()),
                "difference": float(d.mean()),
                "ci95": bootstrap_interval(d, n_boot, rng),
            }
            if keep.any()
            else None
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare_evaluations", description=__doc__.splitlines()[0]
    )
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--variant", default=HEADLINE[0])
    parser.add_argument("--shift", default=HEADLINE[1])
    args = parser.parse_args(argv)
    try:
        old, new = subject_rows(args.old / "metrics.json"), subject_rows(args.new / "metrics.json")
        result = compare(old, new, args.variant, args.shift)
    except (InputFileError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    print(
        f"{args.variant}, {args.shift} shift, ASSD (mm), mean over subjects; NEW - OLD with its 95% interval over subjects"
    )
    samples = [{r["sample"] for r in rows} for rows in (old, new)]
    if samples[0] != samples[1]:
        print(
            f"paired on the {len(samples[0] & samples[1])} radiographs both evaluated; left out: "
            f"{len(samples[0] - samples[1])} only in OLD, {len(samples[1] - samples[0])} only in NEW"
        )
    print("| bone | subjects | old | new | new - old (95% interval) |\n|---|---|---|---|---|")
    for bone, r in result.items():
        if r:
            print(
                f"| {bone} | {r['subjects']} | {r['old']:.2f} | {r['new']:.2f} | {r['difference']:+.2f} "
                f"({r['ci95'][0]:+.2f} to {r['ci95'][1]:+.2f}) |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
