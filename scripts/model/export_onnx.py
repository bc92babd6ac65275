"""ONNX export of the inference network (``network_def`` of configs/inference.yaml) with a checkpoint.

CLI::

    python -m scripts.export_onnx --ckpt models/model.pt --out runs/export/model.onnx
        [--config_file configs/inference.yaml] [--override features=[4,4,8,8,16,4] ...] [--check]

The graph takes ``image`` (N, 1, H, W) float32, the normalised radiograph at the trained size
(``image_size`` of the config; N is dynamic) and returns ``pred`` (N, faces*B + B + 1, H, W): depths
(mm), mask logits and the centre depth, as :class:`scripts.model.networks.DualFaceDepthNet`. The
checkpoint loads with ``torch.load(weights_only=True)``; the file is written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import yaml
from scripts.config_flags import as_count, path_argument
from scripts.io.files import (
    OneLineParser,
    PathLike,
    atomic_path,
    exits_on_input_error,
    refuse_existing,
    refuse_models_dir,
)
from scripts.model.checkpoints import load_network
from scripts.model.run_record import check_trained_settings
from scripts.reconstruction.reconstruct import INFERENCE_CONFIG, bundle_config
from torch.onnx._constants import ONNX_MAX_OPSET
from torch.onnx._internal.exporter._constants import TORCHLIB_OPSET

# the ONNX opsets the installed torch.onnx exporter (dynamo) writes: below its torchlib's it writes that one instead (its
# version conversion fails on Pad, a traceback in the log), above ONNX_MAX_OPSET it has not been tested
OPSETS = range(TORCHLIB_OPSET, ONNX_MAX_OPSET + 1)


def network_from_config(
    config_file: PathLike = INFERENCE_CONFIG, overrides: Mapping[str, Any] | None = None
) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    """The config's ``network_def`` (untrained) and its input shape (C, H, W) at ``image_size`` pixels, with config-key
    overrides."""
    parser = bundle_config(config_file, overrides)
    size = int(parser.get_parsed_content("image_size"))
    return parser.get_parsed_content("network_def"), (
        int(parser.get_parsed_content("network_def#in_channels")),
        size,
        size,
    )


def export_onnx(
    ckpt: PathLike,
    out: PathLike,
    config_file: PathLike = INFERENCE_CONFIG,
    overrides: Mapping[str, Any] | None = None,
    opset_version: int = OPSETS[0],
    overwrite: bool = False,
) -> Path:
    """Write the network of ``config_file`` with the weights of ``ckpt`` as ONNX to ``out`` (batch axis dynamic).

    Raises:
        InputFileError: missing, empty, unreadable or mismatched checkpoint, a TorchScript archive (code: refused),
            a checkpoint whose training record (``training.json`` beside it) gives other network keys than the config
            (the graph's input size is ``image_size``; the line names the ``--override`` to give), ``out`` inside
            models/, an existing ``out`` without ``overwrite``, or an ``opset_version`` outside :data:`OPSETS`.
    """
    as_count(opset_version, "opset", minimum=OPSETS[0], maximum=OPSETS[-1])
    refuse_models_dir(out, "--out")
    refuse_existing(out, overwrite)
    parser = bundle_config(config_file, overrides)
    if "network_settings" in parser:  # a config of an earlier bundle has none: unchecked
        check_trained_settings(ckpt, parser.get_parsed_content("network_settings"), "override=")
    net, shape = network_from_config(config_file, overrides)
    net = load_network(ckpt, net, "cpu")
    example = torch.zeros(1, *shape)
    out = Path(out)
    print(f"exporting {ckpt} to ONNX (opset {opset_version})", file=sys.stderr, flush=True)  # the export takes a while
    with atomic_path(out) as tmp, _quiet_exporter():
        torch.onnx.export(
            net,
            (example,),
            str(tmp),
            input_names=["image"],
            output_names=["pred"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}},
            opset_version=opset_version,
            external_data=False,
            dynamo=True,
            verbose=False,
        )
    return out


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch.onnx's dynamo exporter without its notes that do not concern this network: that torchvision (not a
    dependency of this bundle) is missing for its detection operators, and a deprecation inside torch itself."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def max_difference(onnx_file: PathLike, net: torch.nn.Module, x: torch.Tensor) -> float:
    """Largest |ONNX Runtime - PyTorch| output difference for the input batch ``x`` (same units as the output, mm)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (got,) = session.run(["pred"], {"image": x.numpy()})
    with torch.inference_mode():
        want = net(x).numpy()
    return float(np.abs(got - want).max())


def _override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    """CLI: export (and optionally check) the ONNX model; returns the exit status."""
    p = OneLineParser(prog="python -m scripts.export_onnx", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, type=path_argument, help="state-dict checkpoint (e.g. models/model.pt)")
    p.add_argument(
        "--out",
        required=True,
        type=path_argument,
        help="ONNX file to write (e.g. runs/export/model.onnx; never into models/; refused if it exists, unless --overwrite)",
    )
    p.add_argument(
        "--config_file",
        default=str(INFERENCE_CONFIG),
        type=path_argument,
        help="config holding network_def and image_size",
    )
    p.add_argument(
        "--override",
        type=_override,
        action="append",
        default=[],
        help="config key=YAML value, e.g. features=[4,4,8,8,16,4]",
    )
    p.add_argument(
        "--opset",
        type=int,
        default=OPSETS[0],
        help=f"ONNX opset, {OPSETS[0]} to {OPSETS[-1]} (what torch.onnx writes); default %(default)s",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument(
        "--check",
        action="store_true",
        help="compare ONNX Runtime with PyTorch on a random input and print the difference",
    )
    a = p.parse_args(argv)
    out = export_onnx(a.ckpt, a.out, a.config_file, dict(a.override), a.opset, a.overwrite)
    if a.check:
        net, shape = network_from_config(a.config_file, dict(a.override))
        net = load_network(a.ckpt, net, "cpu")
        diff = max_difference(out, net, torch.rand(2, *shape, generator=torch.Generator().manual_seed(0)))
        print(f"max |onnxruntime - torch| = {diff:.3g}")
    print(f"exported {out}")
    return 0
