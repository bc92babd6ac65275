"""Simulated radiographs beside real ones: docs/figures/simulated_vs_real.png.

    python benchmarks/figure_realism.py [--ct CT --labels LABELS --label-map MAP] [--real DIR] [--poses 4] [--out PNG]

Simulates ``--poses`` radiographs of one CT with configs/simulate.yaml (default: the shared real CT with
its TotalSegmentator labels) and shows them in one row above the real radiographs of ``--real``
(default ../shared/data/real_radiographs), each as the bundle reads it (bone bright, [0, 1]) at the
network's input size, padding included. Progress on stderr; the figure is written atomically.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.data.simulate import Case, load_config, simulate  # noqa: E402
from scripts.data.volumes import load_label_map  # noqa: E402
from scripts.geometry import read_standard_geometry  # noqa: E402
from scripts.io.files import read_json, read_nifti, shared_data_dir  # noqa: E402
from scripts.io.report import save_figure  # noqa: E402

SHARED = shared_data_dir() or ROOT.parent / "shared" / "data"


def real_images(folder: Path) -> list[tuple[str, np.ndarray]]:
    """Grey JPEG/PNG radiographs of ``folder`` scaled to [0, 1]."""
    out = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        a = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
        out.append((path.name, (a - a.min()) / max(float(a.max() - a.min()), 1e-6)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", default=str(SHARED / "real_ct" / "example_ct.nii.gz"))
    parser.add_argument("--labels", default=str(SHARED / "real_ct" / "example_seg_multilabel.nii.gz"))
    parser.add_argument("--label-map", default="totalsegmentator_v1")
    parser.add_argument("--real", default=str(SHARED / "real_radiographs"))
    parser.add_argument("--poses", type=int, default=4)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "simulated_vs_real.png"))
    args = parser.parse_args(argv)
    geometry, s2o = read_standard_geometry()
    with tempfile.TemporaryDirectory() as tmp:
        _, errors = simulate(
            [Case("real_ct", Path(args.ct), Path(args.labels))],
            tmp,
            args.poses,
            args.seed,
            load_config(),
            geometry,
            s2o,
            load_label_map(args.label_map),
            device="cpu",
        )
        if errors:
            print("\n".join(errors), file=sys.stderr)
            return 1
        sims = []
        for d in sorted(p for p in Path(tmp).iterdir() if p.is_dir()):
            notes = read_json(d / "sample.json")["style"]
            label = (
                f"{notes['kvp']:.0f} kVp, {'grid' if notes['grid'] else 'no grid'}, "
                f"{'MONO1' if notes['monochrome1'] else 'MONO2'}"
            )
            sims.append((label, read_nifti(d / "image.nii.gz")))
    reals = real_images(Path(args.real)) if Path(args.real).is_dir() else []
    cols = max(len(sims), len(reals), 1)
    fig, axes = plt.subplots(2, cols, figsize=(3.0 * cols, 6.4), squeeze=False)
    for row, (items, title) in enumerate(
        ((sims, "simulated (shared real CT)"), (reals, "real (CC BY 4.0, see NOTICE)"))
    ):
        for c in range(cols):
            ax = axes[row, c]
            ax.axis("off")
            if c < len(items):
                ax.imshow(items[c][1], cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{title}\n{items[c][0]}" if c == 0 else items[c][0], fontsize=8)
    fig.tight_layout()
    save_figure(fig, Path(args.out), dpi=90)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
