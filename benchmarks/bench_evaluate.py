"""Evaluation speed: the real ``monai.bundle run`` of configs/evaluate.yaml, all variants and shifts, per sample.

    python benchmarks/bench_evaluate.py --dataset_dir DIR [--poses_per_case 2] [--workers 1 2] [--threads 2]
                                        [--prior_centre_mm 955.4] [--override KEY=VALUE ...]

Each ``--workers`` value runs the workflow in a fresh process (startup, model loading and, without
``--prior_centre_mm``, the prior from the training split included) into a fresh output folder, with
``OMP_WAIT_POLICY=PASSIVE``. Prints wall seconds per sample and the per-stage medians per sample that
the workflow records in metrics.json ``timings_s`` (load, predict, reconstruct, metrics; seconds of
one process) and the peak memory of the run with its worker processes (PSS, MiB), and checks that every run gives
the same numbers. Target (issue 16): <= 10 s per sample
on 2 cores for the full table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from bundle_process import BundleRun, format_mib, timed_bundle_run

STAGES = ("load", "predict", "reconstruct", "metrics")


def run_once(args: argparse.Namespace, workers: int, out: Path) -> tuple[BundleRun, dict]:
    """Wall seconds and peak memory of one evaluation run in a fresh process, and its metrics.json."""
    cmd = [
        "--config_file",
        "configs/evaluate.yaml",
        "--dataset_dir",
        args.dataset_dir,
        "--output_dir",
        str(out),
        "--workers",
        str(workers),
        "--device",
        "cpu",
    ]
    if args.poses_per_case is not None:
        cmd += ["--poses_per_case", str(args.poses_per_case)]
    if args.prior_centre_mm is not None:
        cmd += ["--prior_centre_mm", str(args.prior_centre_mm)]
    for kv in args.override:
        k, v = kv.split("=", 1)
        cmd += [f"--{k}", v]
    run = timed_bundle_run(cmd, args.threads)
    return run, json.loads((out / "metrics.json").read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset_dir", required=True)
    p.add_argument("--poses_per_case", type=int, default=2)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prior_centre_mm", type=float, default=None)
    p.add_argument("--override", nargs="*", default=[], help="more config keys, KEY=VALUE")
    args = p.parse_args()
    print(
        f"{args.dataset_dir}, poses per case {args.poses_per_case}; {os.cpu_count()} CPUs; load average "
        f"{os.getloadavg()[0]:.1f} at start"
    )
    rows, reference = [], None
    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp:
        for workers in args.workers:
            run, metrics = run_once(args, workers, Path(tmp) / f"eval_{workers}")
            n = metrics["n_samples"]
            stages = metrics["timings_s"]["per_sample_median"]
            numbers = [
                (
                    r["sample"],
                    r["variant"],
                    r["shift"],
                    r["bone"],
                    *(np.nan if r[k] is None else r[k] for k in ("assd_mm", "hd95_mm")),
                )
                for r in metrics["per_sample"]
            ]  # null (no surface) compares as NaN
            same = (
                "-"
                if reference is None
                else str(
                    len(numbers) == len(reference)
                    and all(
                        a[:4] == b[:4] and np.allclose(a[4:], b[4:], atol=0.01, equal_nan=True)
                        for a, b in zip(numbers, reference, strict=True)
                    )
                )
            )
            reference = reference or numbers
            rows.append((workers, n, run.wall_s / n, run.peak_memory_mib, stages, same))
            print(
                f"  workers {workers}: {run.wall_s:.0f} s for {n} samples; load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    print(
        "\n| workers | samples | s / sample (wall, startup included) | target | "
        + " | ".join(f"{s} (median s)" for s in STAGES)
        + " | peak memory (MiB) | same numbers as the first run |"
    )
    print("|---|---|---|---|" + "---|" * len(STAGES) + "---|---|")
    for workers, n, per_sample, memory, stages, same in rows:
        print(
            f"| {workers} | {n} | {per_sample:.1f} | <= 10 | "
            + " | ".join(f"{stages.get(s, float('nan')):.2f}" for s in STAGES)
            + f" | {format_mib(memory)} | {same} |"
        )
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
