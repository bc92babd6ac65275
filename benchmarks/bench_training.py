"""Training speed of configs/train.yaml: radiographs per second of one optimisation step (forward, CASI loss, backward, AdamW).

    python benchmarks/bench_training.py [--device cuda] [--sizes 128 256] [--batch_sizes 4 16] [--steps 20] \
        [--threads 2] [--amp]

The network, its training inferer (bfloat16 autocast with ``--amp``), loss and optimizer are the training config's own
(parsed from it with ``image_size``, ``device`` and ``amp`` overridden); batches are synthetic (image noise, bone-like
masks, depths near 950 mm), since the recipe caches its decoded data in memory and the step dominates. Prints a
Markdown table for docs/training.md, with the minutes per epoch of the shipped recipe's 4890 training images.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECIPE_IMAGES = 4890  # training radiographs of the shipped model (docs/training.md)


def synthetic_batch(
    batch: int, size: int, bones: int, faces: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image (N, 1, S, S) and label (N, faces*B + B, S, S): a disc per bone with front/back depths (mm) about 950."""
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    masks, depths = [], []
    for b in range(bones):
        cx = (b - (bones - 1) / 2) * 0.6
        r2 = ((xx - cx) ** 2 + yy**2) / 0.25**2
        inside = (r2 < 1).float()
        half = 40.0 * torch.sqrt(torch.clamp(1 - r2, min=0))
        masks.append(inside)
        depths += [(950.0 - half) * inside, (950.0 + half) * inside][:faces]
    label = torch.stack(depths + masks)[None].repeat(batch, 1, 1, 1)
    image = torch.rand(batch, 1, size, size, generator=gen) + label[:, -bones:].sum(1, keepdim=True)
    return image.to(device), label.to(device)


def time_step(size: int, batch: int, device: torch.device, steps: int, amp: bool = False) -> tuple[float, float | None]:
    """Median seconds of one optimisation step of the training config at ``size`` x ``size`` (``amp``: bfloat16
    autocast), and the peak GPU memory (MiB; None on CPU)."""
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.yaml"))
    parser.update(
        {
            "image_size": size,
            "batch_size": batch,
            "device": f"$torch.device({str(device)!r})",
            "bundle_root": str(ROOT),
            "amp": amp,
        }
    )
    network, inferer, loss, optimizer = (
        parser.get_parsed_content(k) for k in ("network", "train#inferer", "loss", "optimizer")
    )
    network.train()
    image, label = synthetic_batch(batch, size, len(parser["bones"]), int(parser["faces"]), device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(steps + 3):  # 3 warm-up steps (cuDNN autotuning, allocator)
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        value = loss(inferer(image, network), label)
        value.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= 3:
            times.append(time.perf_counter() - t0)
    if not torch.isfinite(value):
        raise RuntimeError(f"non-finite loss at {size} px, batch {batch}")
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return float(np.median(times)), peak


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[4])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast, as configs/train.yaml's amp: true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    precision = "bfloat16 autocast (amp: true)" if args.amp else "float32 (amp: false)"
    print(f"{where}; median of {args.steps} steps after 3 warm-up steps; {precision}\n")
    print(
        f"| image size | batch | s / step | radiographs / s | min / epoch of {RECIPE_IMAGES} | peak GPU "
        "memory |\n|---|---|---|---|---|---|"
    )
    for size in args.sizes:
        for batch in args.batch_sizes:
            s, peak = time_step(size, batch, device, args.steps, args.amp)
            memory = "-" if peak is None else f"{peak / 1024:.1f} GiB"
            print(
                f"| {size} | {batch} | {s:.3f} | {batch / s:.1f} | {RECIPE_IMAGES * s / batch / 60:.1f} | {memory} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
