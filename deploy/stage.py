"""The application folder of a MONAI Application Package (MAP): ``python -m deploy.stage OUT``.

``monai-deploy package OUT -c OUT/app.yaml -m models/model.ts ...`` copies the one folder OUT into the MAP as
/opt/holoscan/app and runs it as ``python3 /opt/holoscan/app`` with no arguments (its paths in HOLOSCAN_INPUT_PATH,
HOLOSCAN_OUTPUT_PATH and HOLOSCAN_MODEL_PATH, the models folder holding the ``-m`` file as ``<name>/<file>``). OUT
holds the app (``__main__.py``, ``requirements.txt``, ``app.yaml`` of deploy/app) and all it imports and reads: the
``deploy`` and ``scripts`` packages, the configs, the shipped shape models ``models/ssm.npz`` (checked against their
SHA-256 first) and the licences. The network is not in it: the packager's ``-m`` ships it. See docs/deployment.md.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from scripts import BUNDLE_ROOT
from scripts.config_flags import path_argument
from scripts.io.files import InputFileError, OneLineParser, PathLike, atomic_dir, exits_on_input_error
from scripts.model.release import verify_shipped

KIND = "MAP application folder"  # the scripts.io.files marker of OUT
PACKAGES = ("deploy", "scripts")  # copied whole, without bytecode
FILES = {  # OUT path: bundle path
    "__main__.py": "deploy/app/__main__.py",
    "requirements.txt": "deploy/app/requirements.txt",
    "app.yaml": "deploy/app/app.yaml",
    "configs/inference.yaml": "configs/inference.yaml",
    "configs/geometry.json": "configs/geometry.json",
    "configs/metadata.json": "configs/metadata.json",
    "models/ssm.npz": "models/ssm.npz",
    "LICENSE": "LICENSE",
    "docs/data_license.txt": "docs/data_license.txt",
}


def stage_app(out: PathLike) -> Path:
    """Write the MAP application folder ``out`` atomically (:func:`scripts.io.files.atomic_dir`: an earlier one of
    this bundle is replaced, anything else refused). Raises :class:`InputFileError` for an ``out`` inside a package it
    copies, or a shipped shape-model file that fails its SHA-256."""
    out = Path(out)
    for package in PACKAGES:
        if (BUNDLE_ROOT / package).resolve() in (out.resolve(), *out.resolve().parents):
            raise InputFileError(out, f"lies inside {package}/, which it copies; choose a folder outside it")
    verify_shipped(BUNDLE_ROOT / FILES["models/ssm.npz"])
    with atomic_dir(out, KIND, str(BUNDLE_ROOT)) as tmp:
        for package in PACKAGES:
            shutil.copytree(BUNDLE_ROOT / package, tmp / package, ignore=shutil.ignore_patterns("__pycache__"))
        for target, source in FILES.items():
            (tmp / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(BUNDLE_ROOT / source, tmp / target)
    return out


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    """CLI: stage the MAP application folder; returns the exit status."""
    p = OneLineParser(prog="python -m deploy.stage", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "out",
        type=path_argument,
        help="the folder to write (e.g. runs/map_app; replaced when an earlier one of this bundle)",
    )
    out = stage_app(p.parse_args(argv).out)
    print(f"staged {out}; package it: monai-deploy package {out} -c {out / 'app.yaml'} -m models/model.ts ...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
