"""scripts.plot_training on synthetic TensorBoard runs: each folder of event files is one run, never merged with
another; a resumed run's files in one folder are one run (the later file wins per step)."""

from scripts.model.plot_training import main, read_runs, training_figure
from torch.utils.tensorboard import SummaryWriter


def write_events(folder, scalars: dict[str, dict[int, float]], time: int = 1) -> None:
    """One event file in ``folder`` with {tag: {step: value}} (values exact in float32), named as if written at
    ``time`` (s; the file name orders a run's files)."""
    staging = folder / "staging"
    writer = SummaryWriter(str(staging))
    for tag, points in scalars.items():
        for step, value in points.items():
            writer.add_scalar(tag, value, step)
    writer.close()
    (written,) = staging.iterdir()
    written.rename(folder / f"events.out.tfevents.{time:010d}.host.1.0")
    staging.rmdir()


def test_each_folder_of_event_files_is_its_own_run(tmp_path):
    """runs/a and runs/nested/b share steps with different values: two runs, each with exactly its own points; the
    plot of both is written. A folder holding event files itself is the one run "."."""
    runs = tmp_path / "runs"
    write_events(runs / "a", {"train_loss": {0: 1.0, 1: 0.5, 2: 0.25}, "val_dice_pelvis": {1: 0.5}})
    write_events(runs / "nested" / "b", {"train_loss": {1: 8.0, 2: 4.0, 3: 2.0}, "val_depth_mae_mm": {1: 6.0, 2: 3.0}})
    assert read_runs(runs) == {
        "a": {"train_loss": ([0, 1, 2], [1.0, 0.5, 0.25]), "val_dice_pelvis": ([1], [0.5])},
        "nested/b": {"train_loss": ([1, 2, 3], [8.0, 4.0, 2.0]), "val_depth_mae_mm": ([1, 2], [6.0, 3.0])},
    }
    assert read_runs(runs / "a") == {".": read_runs(runs)["a"]}
    png = tmp_path / "curves.png"
    assert main([str(runs), str(png)]) == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_resumed_runs_files_are_one_run(tmp_path):
    """Two event files in one folder (a run resumed at step 1): one series, the later file's value at step 1."""
    write_events(tmp_path / "run", {"train_loss": {1: 3.0, 2: 1.0}}, time=2)
    write_events(tmp_path / "run", {"train_loss": {0: 4.0, 1: 2.0}}, time=1)
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 2
    assert read_runs(tmp_path / "run") == {".": {"train_loss": ([0, 1, 2], [4.0, 3.0, 1.0])}}


def test_the_best_epoch_is_marked_and_steps_are_whole_numbers():
    """val_depth_mae_mm 6, 3, 3, 4 over epochs 1-4: the best model (the first lowest) is epoch 2, a dotted line on both
    validation panels, named in their legends; no panel has a fractional epoch or iteration tick."""
    epochs = [1, 2, 3, 4]
    runs = {
        ".": {
            "train_loss": ([1, 2, 3, 4, 5, 6, 7, 8], [3.0, 2.5, 2.0, 1.8, 1.5, 1.2, 1.1, 1.0]),
            "val_depth_mae_mm": (epochs, [6.0, 3.0, 3.0, 4.0]),
            "val_dice_pelvis": (epochs, [0.5, 0.7, 0.8, 0.8]),
        }
    }
    fig = training_figure(runs)
    loss, mae, dice = fig.axes
    for ax in (mae, dice):
        (marker,) = [line for line in ax.lines if line.get_linestyle() == ":"]
        assert list(marker.get_xdata()) == [2, 2]
        assert "best epoch 2 (model.pt)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert not [line for line in loss.lines if line.get_linestyle() == ":"]
    for ax in fig.axes:
        fig.canvas.draw()
        assert all(float(t).is_integer() for t in ax.get_xticks())
