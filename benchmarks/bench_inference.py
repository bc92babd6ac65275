"""Seconds per radiograph, load -> meshes, without and with shape-model completion (2 CPU threads by default; --device
cuda for a GPU).

    python benchmarks/bench_inference.py [--input IMAGE] [--ckpt models/model.pt] [--ssm models/ssm.npz]
                                         [--repeats 3] [--threads 2] [--image_size 128] [--oracle]
                                         [--device cpu]

Without ``--input`` a simulated 256x256 radiograph is made (2 phantom cases at 3 mm, one pose, which
also give the shape models when ``--ssm`` is missing); without a checkpoint an untrained network is
used (its masks are not bone-shaped, so meshing/SSM times are only indicative). ``--oracle`` also
times the reconstruction from the simulator sample's true depth maps and masks (``depth.nii.gz``,
``mask.nii.gz`` beside the image) at the image's full size, in place of the network. Targets: < 1 s
without SSM, < 3 s with SSM. Prints Markdown tables (totals and per-step medians) for docs/inference.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.geometry import Geometry  # noqa: E402
from scripts.io.files import read_depth_and_mask  # noqa: E402
from scripts.io.radiograph_io import load_radiograph_with_field  # noqa: E402
from scripts.reconstruction.reconstruct import (  # noqa: E402
    Reconstructor,
    build_reconstructor,
    bundle_config,
    oracle_prediction,
)


def make_inputs(tmp: Path) -> tuple[Path, Path]:
    """A simulated 256x256 radiograph (image.nii.gz with geometry.json) and shape models from the same cohort."""
    from scripts.data.phantom import generate_cohort
    from scripts.data.simulate import find_cases, simulate
    from scripts.reconstruction.ssm import build_from_cases, save_shape_models

    generate_cohort(2, tmp / "cohort", seed=0, spacing_mm=3.0, anatomy_name="procedural")
    simulate(find_cases(tmp / "cohort"), tmp / "sim", poses=1, device="cpu")
    save_shape_models(tmp / "ssm.npz", *build_from_cases(tmp / "cohort"))
    return sorted((tmp / "sim").glob("*/image.nii.gz"))[0], tmp / "ssm.npz"


def time_runs(recon: Reconstructor, image_path: Path, repeats: int, oracle: bool) -> dict[str, dict[str, list[float]]]:
    """Per setting ("without SSM", "with SSM"): seconds of each step and the total, over ``repeats`` (after one warm-up)."""
    standard = Geometry.standard()
    times: dict[str, dict[str, list[float]]] = {}
    for run in range(repeats + 1):
        for label, complete in (("without SSM", False), ("with SSM", True)):
            t0 = time.perf_counter()
            image, geometry, _, fov = load_radiograph_with_field(image_path, standard)  # as the runner reads it
            t1 = time.perf_counter()
            if oracle:
                depth, mask = read_depth_and_mask(image_path.parent / "depth.nii.gz", image_path.parent / "mask.nii.gz")
                pred = oracle_prediction(depth, mask, geometry)
            else:
                pred = recon.predict(image, geometry, fov)
            t2 = time.perf_counter()
            rec = recon.reconstruct(pred, complete=complete)
            assert rec.surfaces
            steps = {
                "load": t1 - t0,
                "network" if not oracle else "true maps": t2 - t1,
                **rec.timings_s,
                "total": time.perf_counter() - t0,
            }
            if run:
                for k, v in steps.items():
                    times.setdefault(label, {}).setdefault(k, []).append(v)
    times["pixels"] = {bone: [float(rec.mask[b].sum())] for b, bone in enumerate(rec.geometry.bones)}
    return times


def print_tables(times: dict, title: str) -> None:
    pixels = ", ".join(f"{bone} {int(v[0])}" for bone, v in times["pixels"].items())
    print(f"\n{title} (mask pixels: {pixels})\n")
    print("| step | median s / radiograph | target |\n|---|---|---|")
    for label, target in (("without SSM", "< 1 s"), ("with SSM", "< 3 s")):
        print(f"| load -> meshes {label} | {np.median(times[label]['total']):.2f} | {target} |")
    steps = [k for k in times["with SSM"] if k != "total"]
    print("\n| setting | " + " | ".join(steps) + " |\n|---|" + "---|" * len(steps))
    for label in ("without SSM", "with SSM"):
        print(
            f"| {label} | "
            + " | ".join(f"{np.median(times[label][k]):.3f}" if k in times[label] else "-" for k in steps)
            + " |"
        )


def run_benchmark(args: argparse.Namespace, tmp: Path) -> None:
    """Make inputs in ``tmp`` where needed, then time and print."""
    image_path, ssm = (Path(args.input), Path(args.ssm)) if args.input else make_inputs(tmp)
    if not Path(args.ssm).is_file() and not args.input:
        args.ssm = str(ssm)
    ckpt = Path(args.ckpt)
    note = f"trained checkpoint {ckpt.name}"
    if not ckpt.is_file():
        ckpt, note = tmp / "untrained.pt", "UNTRAINED network (no checkpoint, seed 0)"
        torch.manual_seed(0)
        torch.save(bundle_config().get_parsed_content("network_def").state_dict(), ckpt)
    recon = build_reconstructor(
        ckpt_path=str(ckpt), ssm_path=args.ssm, device=args.device, image_size=args.image_size
    ).load()
    size = f"{recon.image_size[0]}x{recon.image_size[1]}"
    where = torch.cuda.get_device_name(recon.device) if recon.device.type == "cuda" else "CPU"
    print(f"network on {where}, {args.threads} CPU threads; input {image_path}; shape models {args.ssm}")
    print_tables(time_runs(recon, image_path, args.repeats, oracle=False), f"{note}, network at {size}")
    if args.oracle:
        print_tables(
            time_runs(recon, image_path, args.repeats, oracle=True),
            "true depth maps and masks (no network), full image size",
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", default=None)
    p.add_argument("--ckpt", default=str(ROOT / "models" / "model.pt"))
    p.add_argument("--ssm", default=str(ROOT / "models" / "ssm.npz"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--image_size", type=int, default=None, help="network input size (default: configs/inference.yaml)")
    p.add_argument("--device", default="cpu", help="torch device of the network (cpu, cuda)")
    p.add_argument(
        "--oracle", action="store_true", help="also time the true maps of a simulator sample in place of the network"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp_dir:
        run_benchmark(args, Path(tmp_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
