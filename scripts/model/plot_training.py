"""Training curves PNG from the TensorBoard event files of a training run, or of several runs side by side.

python -m scripts.plot_training runs/train/tensorboard runs/train/curves.png [--overwrite]
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from scripts.config_flags import path_argument  # noqa: E402
from scripts.io.files import (  # noqa: E402
    InputFileError,
    OneLineParser,
    PathLike,
    exits_on_input_error,
    refuse_existing,
)
from scripts.io.report import save_figure  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

PANELS = (
    ("training loss", "iteration", ("train_loss",)),
    ("validation depth MAE (mm)", "epoch", ("val_depth_mae_mm", "val_depth_mae_oracle_mm", "val_depth_mae_raw_mm")),
    ("validation mask Dice", "epoch", ("val_dice_pelvis", "val_dice_femur_left", "val_dice_femur_right")),
)
KEY_METRIC = "val_depth_mae_mm"  # configs/train.yaml's key metric (lower is better): the best model's epoch
LABELS = {
    "val_depth_mae_mm": "estimated centre shift",
    "val_depth_mae_oracle_mm": "oracle shift",
    "val_depth_mae_raw_mm": "no shift",
}


Scalars = dict[str, tuple[list[int], list[float]]]  # {tag: (steps, values)}


def read_runs(log_dir: PathLike) -> dict[str, Scalars]:
    """The scalar series of each run under ``log_dir``: {run: {tag: (steps, values)}}, sorted by run.

    A run is a folder holding event files, named by its path relative to ``log_dir`` ("." for ``log_dir`` itself);
    its files (training and validation writers, a resumed run's new ones) are merged in name order, so the later
    file wins per step. The files of different folders are never merged: each is its own run."""
    files = sorted(Path(log_dir).rglob("events.out.tfevents.*"))
    if not files:
        raise InputFileError(log_dir, "no TensorBoard event files found")
    runs: dict[str, dict[str, dict[int, float]]] = {}
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        series = runs.setdefault(f.parent.relative_to(log_dir).as_posix(), {})
        for tag in acc.Tags()["scalars"]:
            series.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return {
        run: {tag: (sorted(s), [s[k] for k in sorted(s)]) for tag, s in series.items()}
        for run, series in sorted(runs.items())
    }


def plot_training(log_dir: PathLike, output_png: PathLike, overwrite: bool = False) -> Path:
    """Write :func:`training_figure` of the runs under ``log_dir`` (:func:`read_runs`) as PNG; returns its path.
    An existing ``output_png`` is refused (:class:`InputFileError`) unless ``overwrite``."""
    refuse_existing(output_png, overwrite)
    save_figure(training_figure(read_runs(log_dir)), output_png, dpi=120)
    return Path(output_png)


def training_figure(runs: dict[str, Scalars]) -> plt.Figure:
    """Three panels (loss, depth MAE with centre/oracle/no shift, Dice per bone) on whole-number steps; several runs
    are drawn as separate curves, each label prefixed by its run. Each run's best epoch by the key metric
    (:data:`KEY_METRIC`, lowest), the one its model.pt holds, is a dotted line on the validation panels."""
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 3.8))
    for ax, (title, xlabel, tags) in zip(axes, PANELS, strict=True):
        for run, scalars in runs.items():
            for tag in tags:
                if tag in scalars:
                    steps, values = scalars[tag]
                    label = LABELS.get(tag, tag.removeprefix("val_dice_"))
                    ax.plot(
                        steps,
                        values,
                        marker="." if len(steps) < 50 else None,
                        label=label if len(runs) == 1 else f"{run}: {label}",
                    )
        if xlabel == "epoch":
            for k, (run, scalars) in enumerate(runs.items()):
                if KEY_METRIC in scalars:
                    steps, values = scalars[KEY_METRIC]
                    best = steps[values.index(min(values))]  # the first of equal values, as the checkpoint saver keeps
                    label = f"best epoch {best} (model.pt)"
                    ax.axvline(best, color=f"C{k}", linestyle=":", label=label if len(runs) == 1 else f"{run}: {label}")
        ax.set(title=title, xlabel=xlabel)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    """CLI: write the training-curve PNG; returns the exit status."""
    parser = OneLineParser(prog="python -m scripts.plot_training", description=__doc__.splitlines()[0])
    parser.add_argument(
        "log_dir",
        type=path_argument,
        help="folder with TensorBoard event files (e.g. runs/train/tensorboard); each subfolder holding some is a run of its own",
    )
    parser.add_argument(
        "output_png", type=path_argument, help="PNG to write (refused if it exists, unless --overwrite)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output_png")
    args = parser.parse_args(argv)
    print(plot_training(args.log_dir, args.output_png, args.overwrite))
    return 0
