"""Plausibility scores of the shipped model (docs/inference.md, "Plausibility"): where its thresholds sit.

    python -m benchmarks.plausibility_scores --samples runs/sim_test --cases runs/llp26_test --out runs/plausibility
        [--radiographs ../shared/data/real_radiographs --pixel-spacing-mm 0.9] [--ckpt models/model.pt --ssm models/ssm.npz]

Inputs, all through the inference workflow (configs/inference.yaml): every other simulated AP radiograph of
``--samples`` (a simulate output folder, e.g. the real test subjects: should pass), every sixth of them
inverted, uniform noise (5 images), lateral views (90 degrees about camera y) of the first three cases of
``--cases``, and the real radiographs of ``--radiographs`` when present (at ``--pixel-spacing-mm``).
Writes OUT/plausibility.json (score, failed checks and every check's value per input) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import monai.bundle
import numpy as np
from PIL import Image

from scripts import BUNDLE_ROOT
from scripts.data import simulate
from scripts.geometry import Geometry
from scripts.io.files import read_nifti, shared_data_dir, write_nifti

SKIP = shutil.ignore_patterns("preview.png")


def write_inverted(sample: Path, dest: Path) -> Path:
    """A copy of simulator sample folder ``sample`` at ``dest`` with its radiograph inverted (bone dark)."""
    shutil.copytree(sample, dest, ignore=SKIP)
    image = read_nifti(sample / "image.nii.gz")
    write_nifti(dest / "image.nii.gz", (image.max() - image).astype(np.float32), Geometry.load(sample / "geometry.json").image_affine)
    return dest


def write_noise(path: Path, seed: int) -> Path:
    """A 16-bit PNG of uniform noise at the standard detector size (so it takes the standard geometry)."""
    size = Geometry.standard().image_size
    Image.fromarray(np.random.default_rng(seed).integers(0, 65535, size[::-1]).astype(np.uint16)).save(path)
    return path


def simulate_lateral(cases: list, out: Path, seed: int) -> list[Path]:
    """Sample folders of one lateral view (90 degrees about camera y, no translation) of each case, under ``out``."""
    cfg = simulate.load_config()
    cfg["pose"] = {**cfg["pose"], "rotation_deg": [0.0, 0.0, 0.0], "translation_mm": [0.0, 0.0, 0.0], "view_rotation_deg": [0.0, 90.0, 0.0]}
    datalist, errors = simulate.simulate(cases, out, poses=1, seed=seed, cfg=cfg, device="cpu")
    if errors:
        raise RuntimeError("; ".join(errors))
    return [out / Path(entry["image"]).parent for split in datalist.values() for entry in split]


def build_inputs(samples: Path, cases: Path, radiographs: Path | None, work: Path) -> Path:
    """The input folder ``work/in`` (built once)."""
    inp = work / "in"
    if inp.exists():
        return inp
    inp.mkdir(parents=True)
    found = sorted(p.parent for p in samples.glob("*/image.nii.gz"))
    for s in found[::2]:
        shutil.copytree(s, inp / f"ap_{s.name}", ignore=SKIP)
    for s in found[::6]:
        write_inverted(s, inp / f"inverted_{s.name}")
    for k in range(5):
        write_noise(inp / f"noise_{k}.png", k)
    for s in simulate_lateral(simulate.find_cases(cases)[:3], work / "lateral", seed=3):
        shutil.copytree(s, inp / f"lateral_{s.name}", ignore=SKIP)
    for p in sorted(radiographs.glob("*.jp*g")) if radiographs and radiographs.is_dir() else []:
        shutil.copy(p, inp / f"real_{p.name}")
    return inp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=Path, required=True)
    parser.add_argument("--cases", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--radiographs", type=Path, default=(shared_data_dir() or Path("/nonexistent")) / "real_radiographs")
    parser.add_argument("--pixel-spacing-mm", type=float, default=0.9)
    parser.add_argument("--ckpt", default=str(BUNDLE_ROOT / "models" / "model.pt"))
    parser.add_argument("--ssm", default=str(BUNDLE_ROOT / "models" / "ssm.npz"))
    args = parser.parse_args()
    inp = build_inputs(args.samples, args.cases, args.radiographs, args.out)
    monai.bundle.run(config_file=str(BUNDLE_ROOT / "configs" / "inference.yaml"), bundle_root=str(BUNDLE_ROOT), input_dir=str(inp),
                     output_dir=str(args.out / "out"), overwrite=True, device="cpu", ckpt_path=args.ckpt, ssm_path=args.ssm,
                     pixel_spacing_mm=args.pixel_spacing_mm, report=False)
    rows = []
    for result in sorted((args.out / "out").glob("*/result.json")):
        p = json.loads(result.read_text())["plausibility"]
        rows.append({"name": result.parent.name, "score": p["score"], "plausible": p["plausible"],
                     "failed": [c["name"] for c in p["checks"] if not c["ok"]], "values": {c["name"]: c["value"] for c in p["checks"]}})
    (args.out / "plausibility.json").write_text(json.dumps(rows, indent=1))
    for r in rows:
        fits = " ".join(f"{r['values'].get(f'{b} shape-model fit', float('nan')):5.2f}" for b in Geometry.standard().bones)
        print(f"{r['name'][:32]:32s} {r['score']:.2f} {'ok  ' if r['plausible'] else 'WARN'} fit RMS {fits}  failed: {', '.join(r['failed'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
