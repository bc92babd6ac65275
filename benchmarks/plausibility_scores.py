"""Plausibility scores of the shipped model (docs/inference.md, "Plausibility"): where its thresholds sit.

    python -m benchmarks.plausibility_scores --samples runs/sim_test --cases runs/llp26_test --out runs/plausibility
        [--radiographs ../shared/data/real_radiographs --pixel-spacing-mm 0.9] [--ckpt models/model.pt --ssm models/ssm.npz]

Inputs, all through the inference workflow (configs/inference.yaml): every other simulated AP radiograph of
``--samples`` (a simulate output folder, e.g. the real test subjects: should pass), every sixth of them
inverted, uniform noise (5 images), lateral views (90 degrees about camera y) of the first three cases of
``--cases``, five radiographs of a procedural chest phantom (:func:`write_chest_case`), and the real
radiographs of ``--radiographs`` when present (at ``--pixel-spacing-mm``).
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
from scipy import ndimage
from scripts import BUNDLE_ROOT
from scripts.data import simulate
from scripts.data.volumes import VERTEBRAE_LABEL
from scripts.geometry import Geometry
from scripts.io.files import read_nifti, shared_data_dir, write_nifti

SKIP = shutil.ignore_patterns("preview.png")


def write_inverted(sample: Path, dest: Path) -> Path:
    """A copy of simulator sample folder ``sample`` at ``dest`` with its radiograph inverted (bone dark)."""
    shutil.copytree(sample, dest, ignore=SKIP)
    image = read_nifti(sample / "image.nii.gz")
    write_nifti(
        dest / "image.nii.gz",
        (image.max() - image).astype(np.float32),
        Geometry.load(sample / "geometry.json").image_affine,
    )
    return dest


def write_noise(path: Path, seed: int) -> Path:
    """A 16-bit PNG of uniform noise at the standard detector size (so it takes the standard geometry)."""
    size = Geometry.standard().image_size
    Image.fromarray(np.random.default_rng(seed).integers(0, 65535, size[::-1]).astype(np.uint16)).save(path)
    return path


def simulate_lateral(cases: list, out: Path, seed: int) -> list[Path]:
    """Sample folders of one lateral view (90 degrees about camera y, no translation) of each case, under ``out``."""
    cfg = simulate.load_config()
    cfg["pose"] = {
        **cfg["pose"],
        "rotation_deg": [0.0, 0.0, 0.0],
        "translation_mm": [0.0, 0.0, 0.0],
        "view_rotation_deg": [0.0, 90.0, 0.0],
    }
    datalist, errors = simulate.simulate(cases, out, poses=1, seed=seed, cfg=cfg, device="cpu")
    if errors:
        raise RuntimeError("; ".join(errors))
    return [out / Path(entry["image"]).parent for split in datalist.values() for entry in split]


def write_chest_case(dest: Path, spacing_mm: float = 3.0) -> Path:
    """A procedural chest phantom at ``dest`` (ct.nii.gz, labels.nii.gz; RAS mm, origin at the chest's centre): a
    torso with subcutaneous fat, two lungs (-850 HU), the heart toward the patient's left, 11 pairs of ribs
    descending from the spine toward the front, clavicles, scapulae and a thoracic spine (label 4, never
    reconstructed). No pelvis or femur: an input the model does not know, rendered like an AP radiograph."""
    lo = np.array([-190.0, -140.0, -230.0])
    shape = tuple(int(n) for n in np.ceil(-2.0 * lo / spacing_mm) + 1)
    axes = [lo[i] + spacing_mm * np.arange(shape[i]) for i in range(3)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)

    def ellipsoid(centre: tuple, radii: tuple) -> np.ndarray:
        return sum(((g - c) / r) ** 2 for g, c, r in zip((x, y, z), centre, radii, strict=True)) <= 1.0

    def column(centre_xy: tuple, radii_xy: tuple) -> np.ndarray:
        """An elliptic column along z through the whole volume."""
        return np.broadcast_to(
            ((x - centre_xy[0]) / radii_xy[0]) ** 2 + ((y - centre_xy[1]) / radii_xy[1]) ** 2 <= 1.0, shape
        )

    ct = np.full(shape, -1000.0, np.float32)
    ct[column((0.0, 0.0), (165.0, 115.0))] = -100.0  # fat under the skin
    ct[column((0.0, 0.0), (155.0, 105.0))] = 40.0
    for side in (-1.0, 1.0):
        ct[ellipsoid((side * 80.0, -5.0, 40.0), (62.0, 85.0, 150.0))] = -850.0
    ct[ellipsoid((-30.0, 25.0, -50.0), (70.0, 55.0, 65.0))] = 40.0  # the heart (RAS -x: the patient's left)
    centre_lines = np.zeros(shape, bool)

    def draw(points: np.ndarray) -> None:
        ijk = np.rint((points - lo) / spacing_mm).astype(np.int64)
        centre_lines[tuple(ijk[np.all((ijk >= 0) & (ijk < shape), axis=1)].T)] = True

    phi = np.linspace(0.08, 0.8 * np.pi, 300)  # angle about the spine, from behind (0) toward the front
    t = np.linspace(0.0, 1.0, 200)
    for side in (-1.0, 1.0):
        for k in range(11):
            grow = min(1.0, k / 4.0)  # the upper ribs are shorter
            a, b, top = 85.0 + 60.0 * grow, 70.0 + 30.0 * grow, 185.0 - 29.0 * k
            draw(np.stack([side * a * np.sin(phi), -b * np.cos(phi), top - 55.0 * phi / np.pi], 1))
        draw(
            np.stack([side * (20.0 + 135.0 * t), 65.0 - 55.0 * t + 10.0 * np.sin(np.pi * t), 178.0 + 18.0 * t], 1)
        )  # clavicle
        ct[ellipsoid((side * 100.0, -70.0, 110.0), (45.0, 7.0, 75.0))] = 600.0  # scapula, inside the back wall
    ct[ndimage.distance_transform_edt(~centre_lines, sampling=spacing_mm) <= 5.0] = 700.0
    labels = np.zeros(shape, np.uint8)
    for bottom in np.arange(-215.0, 215.0, 28.0):  # vertebral bodies over discs, spinous processes behind them
        level = np.broadcast_to((z >= bottom) & (z < bottom + 22.0), shape)
        body = column((0.0, -55.0), (20.0, 17.0)) & level
        ct[body] = 350.0
        labels[body] = VERTEBRAE_LABEL
        ct[column((0.0, -90.0), (8.0, 14.0)) & level] = 600.0
    affine = np.diag([spacing_mm] * 3 + [1.0])
    affine[:3, 3] = lo
    dest.mkdir(parents=True, exist_ok=True)
    write_nifti(dest / "ct.nii.gz", ct.astype(np.int16), affine)
    write_nifti(dest / "labels.nii.gz", labels, affine)
    return dest


def simulate_chest(out: Path, poses: int, seed: int) -> list[Path]:
    """Sample folders of :func:`write_chest_case`'s phantom (``out/samples/chest_p<k>``; the case in ``out/case``), with
    the clinical image formation of configs/simulate.yaml, centred on the chest's centre (it has no bone to centre on)
    and no couch removal (it has no couch: the removal would take the thin tissue behind the lungs for one)."""
    cfg = simulate.load_config()
    cfg["couch"] = {**cfg.get("couch", {}), "remove": False}
    cases = simulate.find_cases(write_chest_case(out / "case" / "chest").parent)
    samples = out / "samples"  # beside the case: the simulator writes only into a data set of its own
    datalist, errors = simulate.simulate(
        cases, samples, poses=poses, seed=seed, cfg=cfg, device="cpu", split="test", center_ras=(0.0, 0.0, 0.0)
    )
    if errors:
        raise RuntimeError("; ".join(errors))
    return [samples / Path(entry["image"]).parent for entry in datalist["test"]]


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
    for s in simulate_chest(work / "chest", poses=5, seed=3):
        shutil.copytree(s, inp / s.name, ignore=SKIP)
    for p in sorted(radiographs.glob("*.jp*g")) if radiographs and radiographs.is_dir() else []:
        shutil.copy(p, inp / f"real_{p.name}")
    return inp


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.plausibility_scores", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--samples", type=Path, required=True)
    parser.add_argument("--cases", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--radiographs", type=Path, default=(shared_data_dir() or Path("/nonexistent")) / "real_radiographs"
    )
    parser.add_argument("--pixel-spacing-mm", type=float, default=0.9)
    parser.add_argument("--ckpt", default=str(BUNDLE_ROOT / "models" / "model.pt"))
    parser.add_argument("--ssm", default=str(BUNDLE_ROOT / "models" / "ssm.npz"))
    args = parser.parse_args()
    inp = build_inputs(args.samples, args.cases, args.radiographs, args.out)
    monai.bundle.run(
        config_file=str(BUNDLE_ROOT / "configs" / "inference.yaml"),
        bundle_root=str(BUNDLE_ROOT),
        input_dir=str(inp),
        output_dir=str(args.out / "out"),
        overwrite=True,
        device="cpu",
        ckpt_path=args.ckpt,
        ssm_path=args.ssm,
        pixel_spacing_mm=args.pixel_spacing_mm,
        report=False,
    )
    rows = []
    for result in sorted((args.out / "out").glob("*/result.json")):
        p = json.loads(result.read_text())["plausibility"]
        rows.append(
            {
                "name": result.parent.name,
                "score": p["score"],
                "plausible": p["plausible"],
                "failed": [c["name"] for c in p["checks"] if not c["ok"]],
                "values": {c["name"]: c["value"] for c in p["checks"]},
            }
        )
    (args.out / "plausibility.json").write_text(json.dumps(rows, indent=1))
    for r in rows:
        fits = " ".join(
            f"{r['values'].get(f'{b} shape-model fit', float('nan')):5.2f}" for b in Geometry.standard().bones
        )
        print(
            f"{r['name'][:32]:32s} {r['score']:.2f} {'ok  ' if r['plausible'] else 'WARN'} fit RMS {fits} "
            f" failed: {', '.join(r['failed'])}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
