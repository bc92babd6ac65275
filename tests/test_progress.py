"""Progress of long commands: a live bar on a terminal, a few plain lines in a log (a file or pipe)."""

from __future__ import annotations

import io

from scripts.io.progress import LOG_INTERVAL_S, every_seconds, progress
from scripts.model.training import LossProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_at_the_start_and_the_end_not_one_per_item():
    """1000 quick items (well within LOG_INTERVAL_S) into a log: two plain lines, no carriage-return updates; a line
    written between (a warning) keeps its own line."""
    log = io.StringIO()
    with progress(total=1000, desc="reconstruct", unit="image", stream=log) as bar:
        for k in range(1000):
            bar.update(1)
            if k == 500:
                bar.write("a warning", file=log)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 3, lines
    assert lines[0].startswith("reconstruct: 0/1000 images (0%)")
    assert lines[1] == "a warning"
    assert lines[2].startswith("reconstruct: 1000/1000 images (100%)")
    assert list(progress(range(3), desc="x", unit="case", stream=io.StringIO())) == [0, 1, 2]


def test_a_terminal_gets_a_live_bar():
    """On a terminal the bar redraws itself in place (carriage returns), as tqdm does."""
    tty = Terminal()
    with progress(total=3, desc="simulate", unit="sample", stream=tty) as bar:
        bar.update(3)
    assert tty.getvalue().count("\r") >= 2 and "3/3" in tty.getvalue()


def test_every_seconds_passes_the_first_event_then_one_per_interval():
    """Events at 0, 10, 29.9, 30, 31, 61 s with a 30 s interval: the first, the one at 30 (30 after 0) and at 61."""
    times = iter([0.0, 10.0, 29.9, 30.0, 31.0, 61.0])
    due = every_seconds(30.0, clock=lambda: next(times))
    assert [due(None, k) for k in range(6)] == [True, False, False, True, False, True]
    assert LOG_INTERVAL_S == 30.0  # configs/train.yaml's comment says "at most every 30 s"


def test_the_training_bar_is_off_in_a_log():
    """pytest captures stderr (not a terminal): the per-iteration bar of training is off there."""
    assert LossProgressBar(persist=False).tqdm_kwargs["disable"] is True
