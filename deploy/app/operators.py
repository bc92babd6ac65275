"""MONAI Deploy (Holoscan) operators: thin wrappers moving pipeline.py objects between ports.

Imported only when the app runs with the SDK installed (``monai-deploy-app-sdk``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from deploy.app.pipeline import MeshFn, load_cases, reconstruct_cases, write_results
from monai.deploy.core import Fragment, Operator, OperatorSpec
from scripts.geometry import Geometry

logger = logging.getLogger(__name__)


class RadiographLoaderOperator(Operator):
    """Emits ``cases``: the radiographs under ``input_path`` (not the results under ``output_path``) in the standard
    geometry (refusals logged)."""

    def __init__(
        self,
        fragment: Fragment,
        *args,
        input_path: Path,
        standard: Geometry,
        output_path: Path | None = None,
        sid_mm: float | None = None,
        pixel_spacing_mm: float | Sequence[float] | None = None,
        **kwargs,
    ):
        self.input_path, self.standard = Path(input_path), standard
        self.load_kwargs = dict(sid_mm=sid_mm, pixel_spacing_mm=pixel_spacing_mm, output_dir=output_path)
        self.errors: list[str] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        """Declare the ``cases`` output port."""
        spec.output("cases")

    def compute(self, op_input, op_output, context) -> None:
        """Load the inputs and emit them as ``cases``."""
        cases, self.errors = load_cases(self.input_path, self.standard, **self.load_kwargs)
        for line in self.errors:
            logger.error(line)
        op_output.emit(cases, "cases")


class BoneReconstructionOperator(Operator):
    """Receives ``cases``, emits ``results`` [(case, {bone: mesh})] using the inference callable."""

    def __init__(self, fragment: Fragment, *args, infer: MeshFn, **kwargs):
        self.infer = infer
        self.errors: list[str] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        """Declare the ``cases`` input and ``results`` output ports."""
        spec.input("cases")
        spec.output("results")

    def compute(self, op_input, op_output, context) -> None:
        """Reconstruct every received case and emit the meshes as ``results`` (failed cases logged, in ``errors``)."""
        results, self.errors = [], []
        for case, meshes, error in reconstruct_cases(op_input.receive("cases"), self.infer):
            if error:
                self.errors.append(error)
                logger.error(error)
            else:
                results.append((case, meshes))
        op_output.emit(results, "results")


class MeshWriterOperator(Operator):
    """Receives ``results`` and writes STL + DICOM Encapsulated STL per bone under ``output_folder``."""

    def __init__(self, fragment: Fragment, *args, output_folder: Path, **kwargs):
        self.output_folder = Path(output_folder)
        self.errors: list[str] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        """Declare the ``results`` input port."""
        spec.input("results")

    def compute(self, op_input, op_output, context) -> None:
        """Write the received meshes of every case (cases that cannot be written logged, in ``errors``)."""
        self.errors = write_results(op_input.receive("results"), self.output_folder)
        for line in self.errors:
            logger.error(line)
