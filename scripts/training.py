"""Small helpers the training configs call: datalist loading, resume checkpoint lookup, progress bar."""

from __future__ import annotations

import re
from pathlib import Path

from ignite.engine import Engine
from ignite.handlers.tqdm_logger import ProgressBar
from monai.handlers import from_engine

from scripts.files import InputFileError, PathLike, read_json

SAMPLE_FILE_KEYS = ("image", "depth", "mask", "geometry")
CHECKPOINT_PATTERN = re.compile(r"checkpoint_epoch=(\d+)\.pt$")


def load_datalist(dataset_dir: PathLike, key: str = "training") -> list[dict]:
    """Entries of ``dataset_dir/datalist.json[key]`` with the sample files made absolute.

    Raises :class:`InputFileError` naming the datalist (missing key, empty list, bad entry) or the
    missing sample file.
    """
    path = Path(dataset_dir) / "datalist.json"
    datalist = read_json(path)
    if not isinstance(datalist, dict) or not isinstance(datalist.get(key), list) or not datalist[key]:
        raise InputFileError(path, f"no non-empty list under key {key!r}")
    entries = []
    for i, item in enumerate(datalist[key]):
        if not isinstance(item, dict) or any(k not in item for k in SAMPLE_FILE_KEYS):
            raise InputFileError(path, f"{key}[{i}] must be an object with keys {list(SAMPLE_FILE_KEYS)}")
        entry = dict(item)
        for k in SAMPLE_FILE_KEYS:
            f = Path(dataset_dir) / item[k]
            if not f.is_file():
                raise InputFileError(f, f"listed in {path} ({key}[{i}].{k}) but missing")
            entry[k] = str(f)
        entries.append(entry)
    return entries


def latest_checkpoint(output_dir: PathLike) -> str | None:
    """Path of the highest-epoch ``checkpoint_epoch=N.pt`` in ``output_dir``, or None (fresh run)."""
    found = [(int(m.group(1)), p) for p in Path(output_dir).glob("checkpoint_epoch=*.pt") if (m := CHECKPOINT_PATTERN.search(p.name))]
    return str(max(found)[1]) if found else None


class LossProgressBar(ProgressBar):
    """ignite tqdm ProgressBar showing the iteration loss; ``attach(engine)`` as MONAI handlers expect."""

    def attach(self, engine: Engine, *args, **kwargs) -> None:  # type: ignore[override]
        """Attach to ``engine``, showing the ``loss`` of each iteration unless an ``output_transform`` is given."""
        kwargs.setdefault("output_transform", lambda out: {"loss": from_engine(["loss"], first=True)(out)})
        super().attach(engine, *args, **kwargs)
