"""Inference throughput end to end: the real ``monai.bundle run`` of configs/inference.yaml on N simulated radiographs.

    python benchmarks/bench_throughput.py --input_dir DIR [--n 100] [--repeats 1] [--threads 2]
                                          [--settings reports no_reports] [--override KEY=VALUE ...]

``DIR``: simulator output (``<case>_p<k>/image.nii.gz`` with geometry.json), whose first ``n`` samples (sorted) are
copied (image and geometry) into a temporary input folder, or a folder of radiograph files (e.g. full-size DICOM),
whose first ``n`` files are copied. Each setting runs the workflow as a user would, in a fresh
process (startup, imports, model loading included), into a fresh output folder, with
``OMP_WAIT_POLICY=PASSIVE`` and ``--threads`` intra-op threads (docs/inference.md, "Threads on a shared CPU").
Prints, per setting, wall seconds per image (startup included; median over ``repeats``) and the per-stage
medians over all images from their result.json ``timings_s`` (load and write run beside the main
process: DataLoader workers and writer threads), and the peak memory of the run with its workers (PSS, MiB).
Targets (issue 16): with reports <= 0.8 s, without <= 0.6 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from bundle_process import BundleRun, format_mib, timed_bundle_run

SETTINGS = {"reports": {}, "no_reports": {"report": "false"}}
TARGETS = {"reports": 0.8, "no_reports": 0.6}
STAGES = ("load", "network", "meshing", "ssm", "write", "report")


def copy_inputs(dataset: Path, n: int, into: Path) -> int:
    """Copy image.nii.gz and geometry.json of the first ``n`` sample folders of a simulator output into ``into``, or,
    in a folder without them, its first ``n`` files."""
    samples = sorted(p.parent for p in dataset.glob("*/image.nii.gz"))[:n]
    for s in samples:
        (into / s.name).mkdir(parents=True)
        for f in ("image.nii.gz", "geometry.json"):
            shutil.copyfile(s / f, into / s.name / f)
    files = [] if samples else sorted(p for p in dataset.iterdir() if p.is_file())[:n]
    into.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, into / f.name)
    return len(samples) or len(files)


def run_once(inputs: Path, out: Path, threads: int, overrides: dict[str, str]) -> BundleRun:
    """Wall seconds and peak memory of one workflow run in a fresh process."""
    cmd = [
        "--config_file",
        "configs/inference.yaml",
        "--input_dir",
        str(inputs),
        "--output_dir",
        str(out),
        "--device",
        "cpu",
    ]
    for k, v in overrides.items():
        cmd += [f"--{k}", v]
    return timed_bundle_run(cmd, threads)


def stage_medians(out: Path) -> dict[str, float]:
    """Median seconds per stage over the outputs' result.json timings."""
    timings = [json.loads(p.read_text())["timings_s"] for p in out.glob("*/result.json")]
    return {k: float(np.median([t[k] for t in timings])) for k in STAGES if all(k in t for t in timings)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input_dir", required=True, help="simulator output folder, or a folder of radiograph files")
    p.add_argument("--n", type=int, default=100, help="radiographs (the first n samples)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument(
        "--override", nargs="*", default=[], help="more config keys, KEY=VALUE (e.g. writers=2 num_workers=1)"
    )
    args = p.parse_args()
    extra = dict(kv.split("=", 1) for kv in args.override)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_throughput_") as tmp:
        n = copy_inputs(Path(args.input_dir), args.n, Path(tmp) / "in")
        print(
            f"{n} radiographs from {args.input_dir}; {args.threads} threads, {os.cpu_count()} CPUs; load "
            f"average {load:.1f} at start; overrides {extra or '-'}"
        )
        rows = []
        for setting in args.settings:
            runs, stages = [], {}
            for r in range(args.repeats):
                out = Path(tmp) / f"out_{setting}_{r}"
                runs.append(run_once(Path(tmp) / "in", out, args.threads, {**SETTINGS[setting], **extra}))
                stages = stage_medians(out)
                print(
                    f"  {setting} run {r + 1}: {runs[-1].wall_s:.1f} s, {runs[-1].wall_s / n:.3f} s/image, peak "
                    f"memory {format_mib(runs[-1].peak_memory_mib)} MiB; load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
            memory = [r.peak_memory_mib for r in runs if r.peak_memory_mib is not None]
            rows.append((setting, float(np.median([r.wall_s for r in runs])) / n, max(memory, default=None), stages))
    print(
        "\n| setting | s / image end to end (startup included) | target | "
        + " | ".join(STAGES)
        + " | peak memory (MiB) |"
    )
    print("|---|---|---|" + "---|" * len(STAGES) + "---|")
    for setting, per_image, memory, stages in rows:
        print(
            f"| {setting} | {per_image:.3f} | <= {TARGETS[setting]} | "
            + " | ".join(f"{stages[k]:.3f}" if k in stages else "-" for k in STAGES)
            + f" | {format_mib(memory)} |"
        )
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
