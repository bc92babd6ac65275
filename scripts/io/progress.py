"""Progress of the bundle's long commands on stderr: a live tqdm bar on a terminal; in a log (stderr a file or a pipe)
a plain line when the work starts, at most one every :data:`LOG_INTERVAL_S` seconds, and one when it ends, never a
line (or carriage-return update) per item."""

from __future__ import annotations

import sys
import time
from typing import IO, Callable, Iterable

from tqdm import tqdm

LOG_INTERVAL_S = 30.0  # seconds between progress lines in a log
LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit}s ({percentage:.0f}%), {elapsed} elapsed, {remaining} left"


class _LogLines:
    """A text stream for tqdm that writes each status it shows as one line of its own (no carriage returns), dropping
    the blanks it clears a bar with and a repeat of the line before (its final status, shown again on closing)."""

    def __init__(self, stream: IO[str]):
        self.stream, self.last = stream, ""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line and line != self.last:
            self.stream.write(line + "\n")
            self.last = line

    def flush(self) -> None:
        self.stream.flush()


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def log_bar_options(stream: IO[str] | None = None) -> dict:
    """tqdm keyword arguments for ``stream`` (default stderr): none on a terminal; in a log, :class:`_LogLines` at
    most every :data:`LOG_INTERVAL_S` seconds in :data:`LOG_FORMAT` (e.g. for ignite's ProgressBar)."""
    stream = sys.stderr if stream is None else stream
    if is_terminal(stream):
        return {"file": stream}
    return {"file": _LogLines(stream), "mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S}


def progress(
    iterable: Iterable | None = None, *, total: int | None = None, desc: str, unit: str, stream: IO[str] | None = None
) -> tqdm:
    """A tqdm progress bar over ``iterable`` (or ``total`` items updated by hand) on ``stream`` (default stderr): a
    live bar on a terminal, plain lines in a log (:func:`log_bar_options`)."""
    options = log_bar_options(stream)
    if not is_terminal(stream):
        options["bar_format"] = LOG_FORMAT
    return tqdm(iterable, total=total, desc=desc, unit=unit, **options)


def every_seconds(seconds: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> Callable:
    """An event filter (``filter(engine, event) -> bool``, e.g. MONAI StatsHandler's ``iteration_log``) that is True
    for the first event and then for the first one at least ``seconds`` after the last True."""
    last: list[float] = []

    def due(_engine: object = None, _event: object = None) -> bool:
        now = clock()
        if last and now - last[0] < seconds:
            return False
        last[:] = [now]
        return True

    return due
