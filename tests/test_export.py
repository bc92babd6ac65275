"""Model export: ``monai.bundle ckpt_export`` (TorchScript) and ``scripts.export_onnx`` give the checkpoint's outputs.

A tiny randomly initialised DualFaceDepthNet checkpoint is written by the test; the exported models
are run (TorchScript, ONNX Runtime) and compared with the checkpoint loaded into ``network_def``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from scripts.geometry import Geometry
from scripts.io.files import InputFileError
from scripts.model.checkpoints import load_network
from scripts.model.export_onnx import main as export_onnx_main
from scripts.model.export_onnx import network_from_config
from scripts.model.networks import DualFaceDepthNet
from scripts.reconstruction.reconstruct import build_reconstructor
from tests.helpers import FEATURES, ROOT, bundle_env, config_copy, write_training_record

SIZE = 64
OVERRIDES = {"features": FEATURES, "image_size": SIZE}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "model.pt"
    torch.manual_seed(3)
    net = DualFaceDepthNet(features=FEATURES)
    with torch.no_grad():  # non-trivial centre head and depth outputs (default init makes them near-constant)
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def reference(ckpt):
    """The checkpoint in the config's network_def, and a batch of normalised radiographs in [0, 1]."""
    net, shape = network_from_config(overrides=OVERRIDES)
    assert shape == (1, SIZE, SIZE)
    net = load_network(ckpt, net, "cpu")
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return net, x, net(x).numpy()


def assert_same_outputs(got: np.ndarray, want: np.ndarray) -> None:
    """Within 1e-4 absolute; the mm-valued depth/centre channels (~950 mm) also get float32 rounding (1e-6 relative)."""
    assert got.shape == want.shape == (2, 10, SIZE, SIZE)
    np.testing.assert_allclose(got[:, 6:9], want[:, 6:9], rtol=0, atol=1e-4)  # mask logits
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)


def test_ckpt_export_cli_torchscript_matches_checkpoint(ckpt, reference, tmp_path):
    """The archive computes the checkpoint's maps; the workflow reads it as TorchScript alike, and checks it by the
    config it embeds (a copy of configs/inference.yaml at the network's size): at another image_size, refused."""
    net, x, want = reference
    ts = tmp_path / "model.ts"
    config = config_copy(tmp_path / "inference.yaml", **OVERRIDES)
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "ckpt_export",
        "network_def",
        "--filepath",
        str(ts),
        "--ckpt_file",
        str(ckpt),
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        str(config),
    ]
    done = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, encoding="utf-8", errors="replace", timeout=300, env=bundle_env()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    extra = {"metadata.json": ""}
    model = torch.jit.load(str(ts), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["network_data_format"]["outputs"]["pred"]["num_channels"] == 10
    with torch.inference_mode():
        assert_same_outputs(model(x).numpy(), want)
    # the workflow's loader takes TorchScript when asked (torchscript true) and predicts what the checkpoint predicts
    image = np.random.default_rng(1).random((SIZE, SIZE)).astype(np.float32)
    geometry = Geometry.standard(
        image_size=[SIZE, SIZE], pixel_spacing_mm=[6.25, 6.25], principal_point_px=[31.5, 31.5]
    )
    preds = [
        build_reconstructor(ckpt_path=str(p), ssm_path=None, device="cpu", torchscript=True, **OVERRIDES).predict(
            image, geometry
        )
        for p in (ckpt, ts)
    ]
    np.testing.assert_allclose(preds[1].mask_prob, preds[0].mask_prob, atol=1e-5)
    np.testing.assert_allclose(preds[1].depth, preds[0].depth, rtol=1e-6, atol=1e-4)
    assert preds[1].centre_mm == pytest.approx(preds[0].centre_mm, rel=1e-6)
    at_128 = build_reconstructor(ckpt_path=str(ts), ssm_path=None, device="cpu", torchscript=True, features=FEATURES)
    with pytest.raises(InputFileError) as refused:
        at_128.load()
    assert str(refused.value) == (
        f"{ts}: trained with other network settings (the config its TorchScript archive embeds): image_size {SIZE}, "
        f"configured 128; pass --image_size {SIZE}"
    )


def test_onnx_export_matches_checkpoint(ckpt, reference, tmp_path, capsys):
    net, x, want = reference
    out = tmp_path / "model.onnx"
    argv = [
        "--ckpt",
        str(ckpt),
        "--out",
        str(out),
        "--override",
        f"features={json.dumps(FEATURES)}",
        "--override",
        f"image_size={SIZE}",
    ]
    assert export_onnx_main(argv) == 0
    captured = capsys.readouterr()
    assert f"exported {out}" in captured.out
    assert f"exporting {ckpt} to ONNX (opset " in captured.err  # said before the export, which takes a while
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"] and [o.name for o in session.get_outputs()] == ["pred"]
    (got,) = session.run(["pred"], {"image": x.numpy()})  # batch of 2 through the dynamic batch axis
    assert_same_outputs(got, want)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary files left
    exported = out.read_bytes()
    assert export_onnx_main(argv) == 1  # an existing file is not replaced without --overwrite
    assert (
        capsys.readouterr().err.strip() == f"{out}: exists; pass --overwrite to replace it"
        and out.read_bytes() == exported
    )
    assert export_onnx_main(argv + ["--overwrite", "--check"]) == 0
    # --check runs ONNX Runtime and PyTorch on the seeded batch compared above and prints their largest difference
    assert f"max |onnxruntime - torch| = {float(np.abs(got - want).max()):.3g}\n" in capsys.readouterr().out


def test_exports_refuse_a_run_trained_under_other_network_keys(ckpt, tmp_path, capsys):
    """A checkpoint in a run folder whose training.json says image_size 64, exported under a 128 px config: the ONNX
    graph's input would be 128 px and ckpt_export's archive would embed the 128 px config (what the Deploy app and
    the release step go by), both without a word. Each export refuses in one line naming how to configure it (the
    ONNX script: its --override; ckpt_export: the keys to set in its --config_file, which the archive embeds), and
    writes nothing; configured so, each exports."""
    run = tmp_path / "run"
    run.mkdir()
    trained = run / "model.pt"
    trained.write_bytes(ckpt.read_bytes())
    record = write_training_record(run, {"features": FEATURES}, image_size=SIZE)
    said = f"{trained}: trained with other network settings ({record}): image_size {SIZE}, configured 128; "
    onnx = tmp_path / "model.onnx"
    argv = ["--ckpt", str(trained), "--out", str(onnx), "--override", f"features={json.dumps(FEATURES)}"]
    assert export_onnx_main(argv) == 1
    assert capsys.readouterr().err.strip() == said + f"pass --override image_size={SIZE}" and not onnx.exists()
    assert export_onnx_main(argv + ["--override", f"image_size={SIZE}"]) == 0 and onnx.is_file()

    config, ts = tmp_path / "inference.yaml", tmp_path / "model.ts"
    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(ts)]
    cmd += ["--ckpt_file", str(trained), "--meta_file", "configs/metadata.json", "--config_file", str(config)]
    for size in (128, SIZE):
        config_copy(config, features=FEATURES, image_size=size)
        done = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, encoding="utf-8", errors="replace", timeout=300, env=bundle_env()
        )
        if size == 128:
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
            assert done.stderr.strip().splitlines()[-1] == said + f"set image_size: {SIZE} in {config}"
            assert not ts.exists()
    assert done.returncode == 0, done.stderr[-2000:]
    extra = {"inference.json": ""}
    torch.jit.load(str(ts), _extra_files=extra)
    assert json.loads(extra["inference.json"])["image_size"] == SIZE  # the archive's config is the run's


def test_ckpt_export_refuses_network_keys_on_its_command_line(ckpt, tmp_path):
    """ckpt_export embeds its --config_file as the file holds it: network keys given on its command line (the features
    of a narrower run) would leave the archive stating the file's network, and the Deploy app checks the archive by
    what it states. One line naming the file and the keys to set in a copy of it; nothing written."""
    config, ts = config_copy(tmp_path / "inference.yaml", image_size=SIZE), tmp_path / "model.ts"
    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(ts)]
    cmd += ["--ckpt_file", str(ckpt), "--meta_file", "configs/metadata.json", "--config_file", str(config)]
    cmd += ["--features", json.dumps(FEATURES)]
    done = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, encoding="utf-8", errors="replace", timeout=300, env=bundle_env()
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"{config}: ckpt_export embeds this file as it is, not the network keys given on its command line (features "
        f"{FEATURES!r}, {config} [24, 24, 48, 96, 192, 24]); set features: {json.dumps(FEATURES)} in {config} (a copy) "
        "instead"
    )
    assert not ts.exists()


@pytest.mark.parametrize("kind", ["empty", "junk", "other_version"])
def test_onnx_export_refuses_bad_checkpoints(kind, tmp_path, capsys):
    bad = tmp_path / f"{kind}.pt"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "junk":
        bad.write_bytes(b"\x80\x04 not a checkpoint" * 20)
    else:
        torch.save(DualFaceDepthNet(features=[4, 4, 8, 8, 32, 4]).state_dict(), bad)
    with pytest.raises(InputFileError, match=str(bad)):
        load_network(bad, network_from_config(overrides=OVERRIDES)[0])
    out = tmp_path / "model.onnx"
    assert (
        export_onnx_main(["--ckpt", str(bad), "--out", str(out), "--override", f"features={json.dumps(FEATURES)}"]) == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{bad}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name]  # nothing written


@pytest.mark.parametrize("content", ["garbage", "TorchScript", "other network", "good, no output folder"])
def test_ckpt_export_bad_checkpoint_one_line(ckpt, tmp_path, content):
    """MONAI's ckpt_export on a file that is not a fitting state dict, or into a folder that does not exist: one
    line naming the file at fault, no traceback, nothing written."""
    bad, out = tmp_path / "bad.pt", tmp_path / "model.ts"
    if content == "garbage":
        bad.write_bytes(b"not a checkpoint" * 10)
    elif content == "TorchScript":
        torch.jit.script(DualFaceDepthNet(features=FEATURES)).save(str(bad))
    elif content == "other network":
        torch.save(DualFaceDepthNet(features=[4, 4, 8, 8, 32, 4]).state_dict(), bad)
    else:
        bad, out = ckpt, tmp_path / "absent" / "model.ts"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "ckpt_export",
        "network_def",
        "--filepath",
        str(out),
        "--ckpt_file",
        str(bad),
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        str(config_copy(tmp_path / "inference.yaml", features=FEATURES)),
    ]
    done = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, encoding="utf-8", errors="replace", timeout=300, env=bundle_env()
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    if bad == ckpt:
        assert (
            line.startswith(f"{out}: the export could not be written (RuntimeError: Parent directory")
            and not out.parent.exists()
        )
    else:
        assert line.startswith(f"{bad}: not a state-dict checkpoint of network_def") and not out.exists()
