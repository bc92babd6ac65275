"""Model files are data or code: state dicts load with weights_only=True everywhere, TorchScript only when asked,
shipped files are checked against their SHA-256 in configs/metadata.json and change only by the release step.

The planted file is a TorchScript archive named ``model.pt`` whose code writes a marker file when it runs (a
custom op implemented in Python, registered in this process): every loader must refuse it without running it.
The positive control proves that running it does write the marker.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import scripts.model.release as release_mod
from deploy.app.pipeline import reconstruct_image_adapter, run
from scripts.model.checkpoints import load_network, load_weights
from scripts.model.export_onnx import main as export_onnx_main
from scripts.io.files import InputFileError
from scripts.model.networks import DualFaceDepthNet
from scripts.model.release import SHA_KEY, release, sha256, verify_shipped
from scripts.reconstruction.reconstruct import bundle_config
from tests.helpers import FEATURES, ROOT, STD, make_dicom, ramp, run_bundle, write_sphere_dataset

MARKER: dict[str, Path | None] = {"path": None}
_LIB = torch.library.Library("bundle_trust_test", "DEF")
_LIB.define("touch(Tensor x) -> Tensor")


def _touch(x: torch.Tensor) -> torch.Tensor:
    if MARKER["path"] is not None:
        MARKER["path"].write_text("the model file's code ran")
    return x


_LIB.impl("touch", _touch, "CompositeExplicitAutograd")


class _Planted(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.bundle_trust_test.touch(x)


@pytest.fixture()
def planted(tmp_path) -> tuple[Path, Path]:
    """(TorchScript archive named model.pt that writes the marker when it runs, the marker path)."""
    path, marker = tmp_path / "planted" / "model.pt", tmp_path / "MARKER"
    path.parent.mkdir()
    torch.jit.script(_Planted()).save(str(path))
    MARKER["path"] = marker
    yield path, marker
    MARKER["path"] = None


def test_planted_file_runs_only_when_torchscript_is_asked_for(planted):
    path, marker = planted
    with pytest.raises(InputFileError, match="is a TorchScript archive \\(code, not data\\): not loaded"):
        load_network(path, DualFaceDepthNet(features=FEATURES))
    with pytest.raises(InputFileError, match="TorchScript archive holds no trainable weights"):
        load_weights(path, DualFaceDepthNet(features=FEATURES))
    assert not marker.exists()
    load_network(path, None, torchscript=True)(torch.zeros(1))  # positive control: its code does run
    assert marker.exists()


def test_inference_refuses_planted_torchscript(planted, tmp_path, capsys):
    path, marker = planted
    d = tmp_path / "in"
    d.mkdir()
    make_dicom(d / "a.dcm", ramp(), DistanceSourceToDetector=1100.0, ImagerPixelSpacing=[6.25, 6.25])
    STD.save(tmp_path / "geometry.json")
    with pytest.raises(SystemExit) as info:
        run_bundle("inference.yaml", input_dir=str(d), output_dir=str(tmp_path / "out"), ckpt_path=str(path), ssm_path="",
                   standard_geometry=str(tmp_path / "geometry.json"), features=FEATURES, image_size=64, device="cpu")
    assert info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"{path}: is a TorchScript archive (code, not data)")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_evaluation_refuses_planted_torchscript(planted, tmp_path, capsys):
    path, marker = planted
    write_sphere_dataset(tmp_path / "data", n_cases=1)
    with pytest.raises(SystemExit) as info:
        run_bundle("evaluate.yaml", dataset_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "eval"), ckpt_path=str(path),
                   single_face_ckpt_path=str(tmp_path / "none.pt"), ssm_path="", device="cpu",
                   inference_overrides={"image_size": 64, "features": FEATURES})
    assert info.value.code == 1
    assert f"{path}: is a TorchScript archive (code, not data)" in capsys.readouterr().err
    assert not marker.exists()


def test_onnx_export_refuses_planted_torchscript(planted, tmp_path, capsys):
    path, marker = planted
    assert export_onnx_main(["--ckpt", str(path), "--out", str(tmp_path / "m.onnx"), "--override", f"features={FEATURES}"]) == 1
    assert capsys.readouterr().err.startswith(f"{path}: is a TorchScript archive")
    assert not marker.exists() and not (tmp_path / "m.onnx").exists()


def test_deploy_app_takes_torchscript_only_from_a_ts_path(planted, tmp_path, capsys):
    path, marker = planted
    d = tmp_path / "in"
    d.mkdir()
    make_dicom(d / "a.dcm", ramp())
    assert run(d, tmp_path / "out", reconstruct_image_adapter(path, "cpu", ""), STD) == 1
    assert f"{path}: is a TorchScript archive" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_shipped_files_match_their_sums_and_a_changed_one_is_refused(tmp_path, monkeypatch):
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    sums = meta[SHA_KEY]
    assert set(sums) == {f"models/{p.name}" for p in (ROOT / "models").iterdir()}  # every shipped file is listed
    for name, digest in sums.items():
        assert sha256(ROOT / name) == digest, f"{name} changed without python -m scripts.release"
    shipped_network = bundle_config().get_parsed_content("network_def")
    load_network(ROOT / "models" / "model.pt", shipped_network)  # the shipped model passes the check
    altered = dict(meta, **{SHA_KEY: dict(sums, **{"models/model.pt": "0" * 64, "models/ssm.npz": "0" * 64})})
    (tmp_path / "metadata.json").write_text(json.dumps(altered))
    monkeypatch.setattr(release_mod, "METADATA", tmp_path / "metadata.json")
    with pytest.raises(InputFileError, match="model.pt: SHA-256 differs from configs/metadata.json"):
        load_network(ROOT / "models" / "model.pt", shipped_network)
    from scripts.reconstruction.ssm import load_shape_models

    with pytest.raises(InputFileError, match="ssm.npz: SHA-256 differs"):
        load_shape_models(ROOT / "models" / "ssm.npz")
    verify_shipped(ROOT / "models" / "model_single_face.pt")  # still listed with its true sum


def test_shipped_single_face_baseline_loads_into_the_network_evaluation_builds():
    """configs/evaluate.yaml builds the baseline from inference.yaml's network (faces 1, no overrides): the shipped
    weights must fit it (a missing or unexpected key, or a channel count that differs, fails the load)."""
    parser = bundle_config(ROOT / "configs" / "evaluate.yaml")
    parser["device"] = "cpu"
    baseline = parser.get_parsed_content("single_face").load()
    out = baseline.network(torch.zeros(1, 1, 64, 64))
    assert out.shape[1] == 2 * 3 + 1  # 3 front-face depths, 3 mask logits, 1 centre-depth channel
    # the shipped dual-face network's width: all it lacks are the 3 back-face channels of the final 1x1 conv
    # (24 weights and a bias each, from the last of features [24, 24, 48, 96, 192, 24])
    dual = bundle_config().get_parsed_content("network_def")
    assert sum(p.numel() for p in baseline.network.parameters()) == sum(p.numel() for p in dual.parameters()) - 3 * (24 + 1)


def test_release_copies_checked_files_and_records_their_sums(planted, tmp_path):
    path, marker = planted
    models, meta = tmp_path / "models", tmp_path / "metadata.json"
    models.mkdir()
    shutil.copy(ROOT / "configs" / "metadata.json", meta)
    torch.manual_seed(1)
    torch.save(DualFaceDepthNet(features=FEATURES).state_dict(), tmp_path / "best.pt")
    shutil.copy(ROOT / "models" / "ssm.npz", tmp_path / "ssm.npz")
    before = json.loads(meta.read_text())
    done = release({"model": tmp_path / "best.pt", "ssm": tmp_path / "ssm.npz"}, metadata=meta, models_dir=models)
    assert (models / "model.pt").read_bytes() == (tmp_path / "best.pt").read_bytes()
    after = json.loads(meta.read_text())
    assert done == {"models/model.pt": sha256(tmp_path / "best.pt"), "models/ssm.npz": sha256(tmp_path / "ssm.npz")}
    assert after[SHA_KEY] == {**before[SHA_KEY], **done}
    assert {k: v for k, v in after.items() if k != SHA_KEY} == {k: v for k, v in before.items() if k != SHA_KEY}
    # a TorchScript archive given as the state-dict model: refused by weights_only loading, its code never runs,
    # nothing copied
    with pytest.raises(InputFileError, match="not a state-dict checkpoint"):
        release({"model": path}, metadata=meta, models_dir=models)
    assert not marker.exists() and (models / "model.pt").read_bytes() == (tmp_path / "best.pt").read_bytes()
    # the pre-existing training checkpoint layout (an epoch checkpoint) is not a model to ship
    torch.save({"model": torch.load(tmp_path / "best.pt")}, tmp_path / "checkpoint_epoch=3.pt")
    with pytest.raises(InputFileError, match="not a network state dict"):
        release({"model": tmp_path / "checkpoint_epoch=3.pt"}, metadata=meta, models_dir=models)
    assert np.array_equal(np.frombuffer((models / "model.pt").read_bytes(), np.uint8), np.frombuffer((tmp_path / "best.pt").read_bytes(), np.uint8))
