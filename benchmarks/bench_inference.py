"""Seconds per radiograph, load -> meshes, without and with shape-model completion (2 CPU threads, 256x256).

    python benchmarks/bench_inference.py [--input IMAGE] [--ckpt models/model.pt] [--ssm models/ssm.npz] [--repeats 3]

Without ``--input`` a simulated radiograph is made (2 phantom cases at 3 mm, one 256x256 pose, which
also give the shape models when ``--ssm`` is missing); without a checkpoint an untrained network is
used (its masks are not bone-shaped, so meshing/SSM times are only indicative). Targets: < 1 s
without SSM, < 3 s with SSM. Prints a Markdown table for docs/inference.md.
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
from scripts.networks import DualFaceDepthNet  # noqa: E402
from scripts.radiograph_io import load_radiograph  # noqa: E402
from scripts.reconstruct import build_reconstructor  # noqa: E402


def make_inputs(tmp: Path) -> tuple[Path, Path]:
    """A simulated 256x256 radiograph (image.nii.gz with geometry.json) and shape models from the same cohort."""
    from scripts.phantom import generate_cohort
    from scripts.simulate import find_cases, simulate
    from scripts.ssm import build_from_cases, save_shape_models

    generate_cohort(2, tmp / "cohort", seed=0, spacing_mm=3.0)
    simulate(find_cases(tmp / "cohort"), tmp / "sim", poses=1, device="cpu")
    save_shape_models(tmp / "ssm.npz", *build_from_cases(tmp / "cohort"))
    return sorted((tmp / "sim").glob("*/image.nii.gz"))[0], tmp / "ssm.npz"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", default=None)
    p.add_argument("--ckpt", default=str(ROOT / "models" / "model.pt"))
    p.add_argument("--ssm", default=str(ROOT / "models" / "ssm.npz"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    image_path, ssm = (Path(args.input), Path(args.ssm)) if args.input else make_inputs(tmp)
    if not Path(args.ssm).is_file() and not args.input:
        args.ssm = str(ssm)
    ckpt = Path(args.ckpt)
    note = "trained checkpoint"
    if not ckpt.is_file():
        ckpt, note = tmp / "untrained.pt", "UNTRAINED network (no checkpoint)"
        torch.save(DualFaceDepthNet().state_dict(), ckpt)
    recon = build_reconstructor(ckpt_path=str(ckpt), ssm_path=args.ssm, device="cpu").load()
    standard = Geometry.standard()
    times: dict[str, list[float]] = {"without SSM": [], "with SSM": []}
    for _ in range(args.repeats + 1):  # first run warms up
        for label, complete in (("without SSM", False), ("with SSM", True)):
            t0 = time.perf_counter()
            image, geometry, _ = load_radiograph(image_path, standard)
            pred = recon.predict(image, geometry)
            rec = recon.reconstruct(pred, complete=complete)
            assert rec.surfaces
            times[label].append(time.perf_counter() - t0)
    print(f"{note}; {args.threads} threads; input {image_path.name} -> network at {recon.image_size[0]}x{recon.image_size[1]}\n")
    print("| step | median s / radiograph | target |\n|---|---|---|")
    for label, target in (("without SSM", "< 1 s"), ("with SSM", "< 3 s")):
        print(f"| load -> meshes {label} | {np.median(times[label][1:]):.2f} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
