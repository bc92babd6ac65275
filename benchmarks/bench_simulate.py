"""Simulator speed (CPU, 2 threads unless --threads; or --device cuda): seconds per 256x256 sample (DRR + dual-face
depth, 3 bones, masks, clinical image formation), each part alone, peak memory.

A case's first sample pays the per-case preparation (HU -> water/bone densities, pooling, per-bone depth
grids); the simulator reuses it for the case's other poses, so further samples cost DRR + depth + image formation.
Image formation (``scripts.data.radiograph_style``, configs/simulate.yaml ranges) is timed over ``repeats`` different draws
(seeds), all parts switched on (every ``*_prob`` 1), so its minimum is the cost of a full clinical chain.
On CPU the depth search itself always runs on one thread (``scripts.data.depth_maps.cpu_threads``).

    python benchmarks/bench_simulate.py [--phantom-dir DIR] [--repeats 5] [--threads 2] [--device cpu]

Cases: the shared real CT (its TotalSegmentator masks) when ../shared/data exists, and a 1 mm phantom made with
``python -m scripts.phantom`` when that module exists.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.data.depth_maps import depth_maps  # noqa: E402
from scripts.data.drr import areal_densities  # noqa: E402
from scripts.data.radiograph_style import style_radiograph  # noqa: E402
from scripts.data.simulate import Case, load_case, load_config, prepare_case  # noqa: E402
from scripts.geometry import read_standard_geometry, standard_ap_pose  # noqa: E402
from scripts.io.files import shared_data_dir  # noqa: E402

REAL_CT_DIR = (shared_data_dir() or Path("/nonexistent")) / "real_ct"


def best_of(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Minimum wall time (s) of ``repeats`` calls (GPU work finished): the machine is shared, the minimum is the least disturbed."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def bench(name: str, case: Case, repeats: int, device: torch.device) -> None:
    """One table row: the case read as the simulator reads it (:func:`scripts.data.simulate.load_case`), its parts timed."""
    cfg = load_config()
    g, source_to_object_mm = read_standard_geometry()
    lc = load_case(case, None, cfg, device)
    ct, labels = lc.ct, lc.labels.array
    geom = g.with_pose(standard_ap_pose(lc.center, source_to_object_mm, [3, -4, 5], [5, 5, 10]))
    step_depth = cfg["depth"]["step_voxels"]
    step_drr = cfg["drr"]["step_voxels"]
    areal = areal_densities(lc.mu, lc.mu_affine, geom, step_drr)  # warm-up
    t_drr = best_of(lambda: areal_densities(lc.mu, lc.mu_affine, geom, step_drr), repeats, device)
    t_depth = best_of(
        lambda: depth_maps(labels, ct.affine, geom, step_voxels=step_depth, device=device, grids=lc.bones),
        repeats,
        device,
    )
    t_prep = best_of(
        lambda: prepare_case(case, ct, lc.labels, lc.center, lc.couch_voxels, cfg, device), repeats, device
    )
    masks = depth_maps(labels, ct.affine, geom, step_voxels=step_depth, device=device, grids=lc.bones)[1]
    options = {
        k: (
            1.0
            if k.endswith("_prob")
            and k not in ("shutter_white_prob", "anode_up_prob", "portrait_prob", "monochrome1_prob")
            else v
        )
        for k, v in cfg["style"].items()
    }
    seeds = iter(range(10 * repeats + 10))
    style_radiograph(areal, geom, masks, options, torch.Generator().manual_seed(next(seeds)))  # warm-up
    t_style = best_of(
        lambda: style_radiograph(areal, geom, masks, options, torch.Generator().manual_seed(next(seeds))),
        repeats,
        device,
    )
    further = t_drr + t_depth + t_style
    print(
        f"| {name} | {ct.array.shape} @ {ct.spacing.round(2).tolist()} mm | {t_prep + further:.2f} | "
        f"{further:.2f} | {t_drr:.2f} | {t_depth:.2f} | {t_style:.2f} | {t_prep:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phantom-dir", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, torch threads {args.threads}"
    print(f"min of {args.repeats} runs, {where}")
    print(
        "| case | CT voxels @ spacing | s / first sample of a case | s / further sample (DRR + depth + "
        "masks + image formation) | s / DRR | s / depth + masks | s / image formation | s / per-case "
        "preparation |"
    )
    print("|---|---|---|---|---|---|---|---|")
    if (REAL_CT_DIR / "example_ct.nii.gz").exists():
        bench(
            "shared real CT (TotalSegmentator labels)",
            Case("example", REAL_CT_DIR / "example_ct.nii.gz", REAL_CT_DIR / "example_seg"),
            args.repeats,
            device,
        )
    if (ROOT / "scripts" / "phantom.py").exists():
        d = Path(args.phantom_dir or tempfile.mkdtemp())
        if not (d / "case_0000").exists():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "scripts.phantom",
                    "--anatomy",
                    "procedural",
                    "--n",
                    "1",
                    "--out",
                    str(d),
                    "--seed",
                    "0",
                    "--spacing",
                    "1.0",
                ],
                cwd=ROOT,
                check=True,
            )
        bench(
            "1 mm phantom",
            Case("case_0000", d / "case_0000" / "ct.nii.gz", d / "case_0000" / "labels.nii.gz"),
            args.repeats,
            device,
        )
    print(f"peak memory (max RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
