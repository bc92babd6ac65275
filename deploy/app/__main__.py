"""Run the 3DDX deploy app: ``python deploy/app -i IN -o OUT -m models/model.ts [--ssm_path models/ssm.npz]
[--sid_mm S] [--pixel_spacing_mm P] [--device cuda:0]``.

With monai-deploy-app-sdk installed the app runs as a Holoscan application (loader -> reconstruction
-> writer operators); without it the same pipeline runs in plain Python. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.app.pipeline import reconstruct_image_adapter, run  # noqa: E402
from scripts.files import exits_on_input_error  # noqa: E402
from scripts.geometry import Geometry, GeometryError  # noqa: E402


def bundle_options(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Split the bundle's own options (geometry fill-ins, device) from the SDK's -i/-o/-m/-l/-w."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--sid_mm", type=float, default=None, help="source-to-detector distance (mm) for inputs lacking it")
    p.add_argument("--pixel_spacing_mm", type=float, nargs="+", default=None, help="detector pixel pitch (mm), 1 or 2 values")
    p.add_argument("--geometry", default=None, help="standard geometry JSON (default configs/geometry.json)")
    p.add_argument("--device", default=None, help="torch device, e.g. cuda:0 (default: cuda when available)")
    p.add_argument("--ssm_path", default=None, help="shape models (default models/ssm.npz of the bundle; '' for no completion)")
    return p.parse_known_args(argv)


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    """Run the app on ``argv`` (``sys.argv`` when None, program name first); returns the exit status."""
    argv = list(sys.argv if argv is None else argv)
    opts, sdk_argv = bundle_options(argv[1:])
    try:
        standard = Geometry.standard(opts.geometry)
    except (GeometryError, OSError, ValueError) as e:  # missing or malformed geometry JSON (the message names it)
        print(e, file=sys.stderr)
        return 1
    load_kwargs = dict(sid_mm=opts.sid_mm, pixel_spacing_mm=opts.pixel_spacing_mm)
    try:
        from monai.deploy.conditions import CountCondition
        from monai.deploy.core import Application
    except ImportError:
        p = argparse.ArgumentParser(description="3DDX deploy app (plain Python: monai-deploy-app-sdk not installed)")
        p.add_argument("-i", "--input", required=True)
        p.add_argument("-o", "--output", required=True)
        p.add_argument("-m", "--model", required=True)
        p.add_argument("-l", "--log-level", default="INFO")
        a = p.parse_args(sdk_argv)
        logging.basicConfig(level=a.log_level.upper())
        return run(a.input, a.output, reconstruct_image_adapter(a.model, opts.device, opts.ssm_path), standard, **load_kwargs)

    from deploy.app.operators import BoneReconstructionOperator, MeshWriterOperator, RadiographLoaderOperator

    class HipRadiograph3DApp(Application):
        """DICOM/PNG/NIfTI radiograph -> bundle inference -> STL + DICOM Encapsulated STL per bone."""

        def compose(self):
            ctx = Application.init_app_context([argv[0]] + sdk_argv)
            loader = RadiographLoaderOperator(self, CountCondition(self, 1), input_path=Path(ctx.input_path), standard=standard, name="loader", **load_kwargs)
            recon = BoneReconstructionOperator(self, infer=reconstruct_image_adapter(ctx.model_path, opts.device, opts.ssm_path), name="reconstruct")
            writer = MeshWriterOperator(self, output_folder=Path(ctx.output_path), name="writer")
            self.add_flow(loader, recon, {("cases", "cases")})
            self.add_flow(recon, writer, {("results", "results")})

    HipRadiograph3DApp().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
