"""Run the 3DDX deploy app: ``python deploy/app -i IN -o OUT -m models/model.ts [--ssm_path models/ssm.npz]
[--sid_mm S] [--pixel_spacing_mm P] [--geometry G] [--device cuda:0] [-w WORKDIR] [-l LEVEL]`` (``--help`` lists them).

With monai-deploy-app-sdk installed the app runs as a Holoscan application (loader -> reconstruction
-> writer operators); without it the same pipeline runs in plain Python. Nothing is downloaded. In a MAP (the folder
``python -m deploy.stage`` writes) it runs with no arguments: -i/-o/-m come from HOLOSCAN_INPUT_PATH/OUTPUT_PATH/MODEL_PATH.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# the bundle's folder: the repository (deploy/app/__main__.py), or the app folder of a MAP (python -m deploy.stage)
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "scripts" / "__init__.py").is_file())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.app.pipeline import model_file, reconstruct_image_adapter, run  # noqa: E402
from scripts.geometry import Geometry, GeometryError  # noqa: E402
from scripts.io.files import OneLineParser, check_output_dir, exits_on_input_error  # noqa: E402

SDK_OPTIONS = ("input", "output", "model", "workdir", "log_level")  # the MONAI Deploy app context's -i/-o/-m/-w/-l
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# where a MAP gives -i/-o/-m (the SDK's RuntimeEnv): the packaged app runs with no arguments
PATH_ENV = {"input": "HOLOSCAN_INPUT_PATH", "output": "HOLOSCAN_OUTPUT_PATH", "model": "HOLOSCAN_MODEL_PATH"}


def argument_parser() -> argparse.ArgumentParser:
    """Every option the app takes (``--help`` lists them): the MONAI Deploy ones and the bundle's."""
    from scripts.config_flags import path_argument  # here, not after the sys.path set-up above (E402)

    p = OneLineParser(
        prog="python deploy/app",
        description="3DDX deploy app: radiographs (DICOM DX/CR; PNG/JPEG/TIFF, simulator NIfTI) "
        "-> per bone STL and DICOM Encapsulated STL, and result.json. See docs/deployment.md.",
    )
    for short, key, text in (
        ("-i", "input", "radiograph file or folder (searched recursively)"),
        ("-o", "output", "output folder: OUT/<name>/ per radiograph"),
        ("-m", "model", "network: TorchScript models/model.ts (or a state dict .pt), or a folder holding one"),
    ):  # by default the MAP's environment variable of it (required where that is unset)
        default = os.environ.get(PATH_ENV[key])
        p.add_argument(
            short,
            f"--{key}",
            default=default,
            required=default is None,
            type=path_argument,
            help=f"{text} (default: ${PATH_ENV[key]})",
        )
    p.add_argument(
        "-w", "--workdir", default=None, type=path_argument, help="MONAI Deploy working folder (SDK runs only)"
    )
    p.add_argument(
        "-l",
        "--log-level",
        dest="log_level",
        default="INFO",
        type=str.upper,
        choices=LOG_LEVELS,
        help="logging level: " + ", ".join(LOG_LEVELS),
    )
    p.add_argument(
        "--ssm_path", default=None, help="shape models (default models/ssm.npz of the bundle; '' for no completion)"
    )
    p.add_argument("--sid_mm", type=float, default=None, help="source-to-detector distance (mm) for inputs lacking it")
    p.add_argument(
        "--pixel_spacing_mm",
        type=float,
        nargs="+",
        default=None,
        help="detector pixel pitch (mm), 1 or 2 values, for inputs lacking it",
    )
    p.add_argument(
        "--geometry", default=None, type=path_argument, help="standard geometry JSON (default configs/geometry.json)"
    )
    p.add_argument("--device", default=None, help="torch device, e.g. cuda:0 (default: cuda when available)")
    return p


def sdk_arguments(opts: argparse.Namespace) -> list[str]:
    """The SDK's own options (-i/-o/-m/-w/-l) of the parsed ``opts``, as the app context parses them (its log levels
    name WARNING ``WARN``)."""
    flags = {"input": "-i", "output": "-o", "model": "-m", "workdir": "-w", "log_level": "-l"}
    values = {**vars(opts), "log_level": {"WARNING": "WARN"}.get(opts.log_level, opts.log_level)}
    return [x for key in SDK_OPTIONS if values[key] is not None for x in (flags[key], str(values[key]))]


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    """Run the app on ``argv`` (``sys.argv`` when None, program name first); returns the exit status."""
    argv = list(sys.argv if argv is None else argv)
    opts = argument_parser().parse_args(argv[1:])
    sdk_argv = sdk_arguments(opts)
    check_output_dir(
        opts.output, "-o"
    )  # a file, a path under a file or a folder without write permission: one line, nothing run
    try:
        standard = Geometry.standard(opts.geometry, check_range=True)
    except (GeometryError, OSError, ValueError) as e:  # missing or malformed geometry JSON (the message names it)
        print(e, file=sys.stderr)
        return 1
    load_kwargs = dict(sid_mm=opts.sid_mm, pixel_spacing_mm=opts.pixel_spacing_mm)
    model = model_file(opts.model)  # a MAP's models folder: the file packaged in it
    try:
        from monai.deploy.conditions import CountCondition
        from monai.deploy.core import Application
    except ImportError:  # plain Python: monai-deploy-app-sdk not installed
        logging.basicConfig(level=opts.log_level.upper())
        return run(
            opts.input,
            opts.output,
            reconstruct_image_adapter(model, opts.device, opts.ssm_path),
            standard,
            **load_kwargs,
        )

    from deploy.app.operators import BoneReconstructionOperator, MeshWriterOperator, RadiographLoaderOperator

    class HipRadiograph3DApp(Application):
        """DICOM/PNG/NIfTI radiograph -> bundle inference -> STL + DICOM Encapsulated STL per bone."""

        def compose(self):
            ctx = Application.init_app_context([argv[0]] + sdk_argv)
            loader = RadiographLoaderOperator(
                self,
                CountCondition(self, 1),
                input_path=Path(ctx.input_path),
                output_path=Path(ctx.output_path),
                standard=standard,
                name="loader",
                **load_kwargs,
            )
            recon = BoneReconstructionOperator(
                self, infer=reconstruct_image_adapter(model, opts.device, opts.ssm_path), name="reconstruct"
            )
            writer = MeshWriterOperator(self, output_folder=Path(ctx.output_path), name="writer")
            self.add_flow(loader, recon, {("cases", "cases")})
            self.add_flow(recon, writer, {("results", "results")})
            self.stages = (loader, recon, writer)

    app = HipRadiograph3DApp()
    app.run()
    return 1 if any(stage.errors for stage in getattr(app, "stages", ())) else 0


if __name__ == "__main__":
    sys.exit(main())
