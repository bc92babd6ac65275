"""Model files are data or code: state dicts load with weights_only=True everywhere, TorchScript only when asked,
shipped files are checked against their SHA-256 in configs/metadata.json and change only by the release step.

The planted file is a TorchScript archive named ``model.pt`` whose code writes a marker file when it runs (a
custom op implemented in Python, registered in this process): every loader must refuse it without running it.
The positive control proves that running it does write the marker.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import scripts.model.release as release_mod
import torch
from deploy.app.pipeline import reconstruct_image_adapter, run
from scripts.io.files import InputFileError
from scripts.model.checkpoints import load_network, load_weights
from scripts.model.export_onnx import main as export_onnx_main
from scripts.model.export_onnx import network_from_config
from scripts.model.networks import DualFaceDepthNet
from scripts.model.release import SHA_KEY
from scripts.model.release import main as release_main
from scripts.model.release import release, verify_shipped
from scripts.reconstruction.reconstruct import bundle_config
from tests.helpers import FEATURES, ROOT, STD, make_dicom, ramp, run_bundle, write_sphere_dataset, write_training_record

MARKER: dict[str, Path | None] = {"path": None}
_LIB = torch.library.Library("bundle_trust_test", "DEF")
_LIB.define("touch(Tensor x) -> Tensor")


def _touch(x: torch.Tensor) -> torch.Tensor:
    if MARKER["path"] is not None:
        MARKER["path"].write_text("the model file's code ran")
    return x


_LIB.impl("touch", _touch, "CompositeExplicitAutograd")


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, by hashlib (not the release module's own digest)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
        run_bundle(
            "inference.yaml",
            input_dir=str(d),
            output_dir=str(tmp_path / "out"),
            ckpt_path=str(path),
            ssm_path="",
            standard_geometry=str(tmp_path / "geometry.json"),
            features=FEATURES,
            image_size=64,
            device="cpu",
        )
    assert info.value.code == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(f"{path}: is a TorchScript archive (code, not data)")
    )
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_evaluation_refuses_planted_torchscript(planted, tmp_path, capsys):
    path, marker = planted
    write_sphere_dataset(tmp_path / "data", n_cases=1)
    with pytest.raises(SystemExit) as info:
        run_bundle(
            "evaluate.yaml",
            dataset_dir=str(tmp_path / "data"),
            output_dir=str(tmp_path / "eval"),
            ckpt_path=str(path),
            single_face_ckpt_path=str(tmp_path / "none.pt"),
            ssm_path="",
            device="cpu",
            inference_overrides={"image_size": 64, "features": FEATURES},
        )
    assert info.value.code == 1
    assert f"{path}: is a TorchScript archive (code, not data)" in capsys.readouterr().err
    assert not marker.exists()


def test_onnx_export_refuses_planted_torchscript(planted, tmp_path, capsys):
    path, marker = planted
    assert (
        export_onnx_main(["--ckpt", str(path), "--out", str(tmp_path / "m.onnx"), "--override", f"features={FEATURES}"])
        == 1
    )
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
    assert sum(p.numel() for p in baseline.network.parameters()) == sum(p.numel() for p in dual.parameters()) - 3 * (
        24 + 1
    )


def test_release_copies_checked_files_and_records_their_sums(planted, tmp_path):
    path, marker = planted
    models, meta = tmp_path / "models", tmp_path / "metadata.json"
    models.mkdir()
    shutil.copy(ROOT / "configs" / "metadata.json", meta)
    torch.manual_seed(1)
    torch.save(network_from_config()[0].state_dict(), tmp_path / "best.pt")  # the configured network's, untrained
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
    assert np.array_equal(
        np.frombuffer((models / "model.pt").read_bytes(), np.uint8),
        np.frombuffer((tmp_path / "best.pt").read_bytes(), np.uint8),
    )


@pytest.fixture()
def shipped_copy(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(models folder, metadata file): copies of the shipped ones, which ``python -m scripts.release``'s ``main`` writes
    into instead of the bundle's own."""
    models, meta = tmp_path / "bundle" / "models", tmp_path / "bundle" / "configs" / "metadata.json"
    shutil.copytree(ROOT / "models", models)
    meta.parent.mkdir()
    shutil.copy(ROOT / "configs" / "metadata.json", meta)
    monkeypatch.setattr(release_mod, "release", functools.partial(release, metadata=meta, models_dir=models))
    return models, meta


def _contents(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (hidden temporaries too), by relative path."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_release_refuses_a_state_dict_of_another_network(shipped_copy, capsys):
    """``release --model models/model_single_face.pt`` used to print "released" and break every inference after it:
    each state dict must load strictly into the network it is shipped for (the single-face baseline: faces 1), or
    nothing is copied."""
    models, meta = shipped_copy
    before = _contents(models.parent)
    single, dual = ROOT / "models" / "model_single_face.pt", ROOT / "models" / "model.pt"
    assert release_main(["--model", str(single)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"{single}: does not fit configs/inference.yaml network_def: checkpoint from another bundle "
        "version or network configuration: shapes differ for ['final_conv.bias', 'final_conv.weight']"
    )
    assert release_main(["--model", str(dual), "--single_face", str(dual)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(
        f"{dual}: does not fit configs/inference.yaml network_def with faces 1 (the single-face baseline): "
    )
    assert _contents(models.parent) == before
    assert release_main(["--model", str(dual), "--single_face", str(single)]) == 0  # each where it fits
    assert capsys.readouterr().out.splitlines() == [
        f"released models/model.pt (sha256 {sha256(dual)[:16]}...)",
        f"released models/model_single_face.pt (sha256 {sha256(single)[:16]}...)",
    ]


def test_release_ships_only_a_torchscript_export_of_the_state_dict(shipped_copy, tmp_path, capsys):
    """--torchscript must compute what the state dict computes (the one released with it, else the shipped model.pt):
    an export of other weights is refused with one line, and shipped together with its own weights it goes in. New
    weights alone are refused while the shipped model.ts is an export of others (the Deploy app would run the old)."""
    models, meta = shipped_copy
    torch.manual_seed(5)
    network = network_from_config()[0].eval()
    other, other_ts = tmp_path / "other.pt", tmp_path / "other.ts"
    torch.save(network.state_dict(), other)
    torch.jit.script(network).save(str(other_ts))  # what ckpt_export writes for other.pt
    before = _contents(models.parent)
    assert release_main(["--torchscript", str(other_ts)]) == 1  # against the shipped model.pt
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(
        f"{other_ts}: its outputs differ from {models / 'model.pt'}'s in configs/inference.yaml network_def (up to "
    )
    assert err.endswith("not an export of that model; export it with monai.bundle ckpt_export (docs/deployment.md)")
    assert _contents(models.parent) == before
    assert release_main(["--model", str(other)]) == 1  # new weights without their export: the Deploy app's model.ts
    assert capsys.readouterr().err.strip() == (
        f"{other}: {models / 'model.ts'} (the Deploy app's network) is an export of other weights; export this model "
        "with monai.bundle ckpt_export and release both, --model with --torchscript (docs/deployment.md)"
    )
    assert _contents(models.parent) == before
    assert release_main(["--model", str(other), "--torchscript", str(other_ts)]) == 0
    assert release_main(["--model", str(other)]) == 0  # the same weights again: model.ts is their export
    assert sha256(models / "model.pt") == sha256(other) and sha256(models / "model.ts") == sha256(other_ts)
    assert json.loads(meta.read_text())[SHA_KEY] == {
        **json.loads((ROOT / "configs" / "metadata.json").read_text())[SHA_KEY],
        "models/model.pt": sha256(other),
        "models/model.ts": sha256(other_ts),
    }


def test_release_refuses_a_run_trained_under_other_network_keys(shipped_copy, tmp_path, capsys):
    """A run trained at image_size 64 fits the 128 px network_def (fully convolutional): the release step used to ship
    it, and the shipped model then ran at 128 px without a word (models/ holds no record). With its training.json
    beside it, the model, its TorchScript export and a single-face baseline are each refused in one line naming the
    keys to set in the shipped config that runs it (no option reaches a shipped model), nothing copied. The same
    files without a record, or with a record that agrees, go in."""
    models, meta = shipped_copy
    before = _contents(models.parent)
    run, single = tmp_path / "run", tmp_path / "single"
    for folder in (run, single):
        folder.mkdir()
    torch.manual_seed(11)
    network = network_from_config()[0].eval()
    torch.save(network.state_dict(), run / "model.pt")
    torch.jit.script(network).save(str(run / "model.ts"))
    torch.save(network_from_config(overrides={"faces": 1})[0].state_dict(), single / "model.pt")
    write_training_record(run, image_size=64)
    write_training_record(single, {"faces": 1}, image_size=64, fov_fill=-1.0)
    said = "trained with other network settings"
    for argv, line in (
        (
            ["--model", str(run / "model.pt"), "--torchscript", str(run / "model.ts")],
            f"{run / 'model.pt'}: {said} ({run / 'training.json'}): image_size 64, configured 128; "
            "set image_size: 64 in configs/inference.yaml",
        ),
        (
            ["--torchscript", str(run / "model.ts")],
            f"{run / 'model.ts'}: {said} ({run / 'training.json'}): image_size 64, configured 128; "
            "set image_size: 64 in configs/inference.yaml",
        ),
        (
            ["--single_face", str(single / "model.pt")],
            f"{single / 'model.pt'}: {said} ({single / 'training.json'}): image_size 64, configured 128; fov_fill "
            '-1.0, configured 0.0; set single_face_overrides: {"image_size": 64, "fov_fill": -1.0} in '
            "configs/evaluate.yaml (beside any other keys given there)",
        ),
    ):
        assert release_main(argv) == 1
        assert capsys.readouterr().err.strip() == line
        assert _contents(models.parent) == before
    plain, agreeing = tmp_path / "plain", tmp_path / "agreeing"
    shutil.copytree(run, plain, ignore=shutil.ignore_patterns("training.json"))
    shutil.copytree(run, agreeing, ignore=shutil.ignore_patterns("training.json"))
    write_training_record(agreeing)
    for folder in (plain, agreeing):
        assert release_main(["--model", str(folder / "model.pt"), "--torchscript", str(folder / "model.ts")]) == 0
    assert sha256(models / "model.pt") == sha256(run / "model.pt")


@pytest.mark.parametrize("failing", ["copy of the second file", "rename of the second file", "rename of the metadata"])
def test_release_is_all_or_nothing(shipped_copy, tmp_path, monkeypatch, capsys, failing):
    """A full disk used to leave a new model.pt beside the old metadata (every run refused from then on). Whatever
    step fails (simulated here), one line names the file, and models/ and the metadata are as they were, no temporary
    left; the same release without the fault goes in whole."""
    models, meta = shipped_copy
    torch.manual_seed(7)
    best, best_ts, ssm = tmp_path / "best.pt", tmp_path / "best.ts", tmp_path / "new" / "ssm.npz"
    network = network_from_config()[0].eval()
    torch.save(network.state_dict(), best)
    torch.jit.script(network).save(str(best_ts))  # its export: a new model.pt goes in with its model.ts
    ssm.parent.mkdir()
    shutil.copy(ROOT / "models" / "ssm.npz", ssm)
    before = _contents(models.parent)
    fault = {"on": True}
    real_copy, real_replace = shutil.copyfile, os.replace

    def copyfile(src, dst, *args, **kwargs):
        if fault["on"] and failing.startswith("copy") and Path(src) == ssm:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(src, dst, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        target = models / "ssm.npz" if failing == "rename of the second file" else meta
        if fault["on"] and failing.startswith("rename") and Path(dst) == target and str(src).endswith(".partial"):
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(release_mod.shutil, "copyfile", copyfile)
    monkeypatch.setattr(release_mod.os, "replace", replace)
    assert release_main(["--model", str(best), "--ssm", str(ssm), "--torchscript", str(best_ts)]) == 1
    named = meta if failing == "rename of the metadata" else models / "ssm.npz"
    problem = "No space left on device" if failing.startswith("copy") else "Input/output error"
    assert (
        capsys.readouterr().err.strip()
        == f"{named}: cannot be written (OSError: {problem}); nothing released: models/ and the metadata are as they were"
    )
    assert _contents(models.parent) == before
    fault["on"] = False
    assert release_main(["--model", str(best), "--ssm", str(ssm), "--torchscript", str(best_ts)]) == 0
    assert sha256(models / "model.pt") == sha256(best) and json.loads(meta.read_text())[SHA_KEY][
        "models/model.pt"
    ] == sha256(best)
    assert sorted(_contents(models.parent)) == sorted(before)  # no temporaries left


def test_shipped_model_runs_only_at_the_size_metadata_states(tmp_path):
    """The shipped dual-face model and its export have no training record: their trained size is metadata.json's input
    spatial_shape (128 px). Configured otherwise (``--image_size 256``, which runs the weights at another scale, the
    maps silently wrong), loading them is refused naming that size. A copy outside models/ is not the shipped file:
    the state dict's copy is unchecked; the archive's is checked by the config it embeds (configs/inference.yaml's)."""
    from scripts.model.run_record import check_trained_settings

    configured = bundle_config().get_parsed_content("network_settings")
    shape = json.loads((ROOT / "configs" / "metadata.json").read_text())["network_data_format"]["inputs"]["image"]
    assert shape["spatial_shape"] == [configured["image_size"]] * 2 == [128, 128]
    for name in ("model.pt", "model.ts"):
        shipped = ROOT / "models" / name
        check_trained_settings(shipped, configured)  # as configured: runs
        with pytest.raises(InputFileError) as info:
            check_trained_settings(shipped, {**configured, "image_size": 256})
        assert str(info.value) == (
            f"{shipped}: trained with other network settings (configs/metadata.json network_data_format): image_size "
            "128, configured 256; pass --image_size 128"
        )
        shutil.copy(shipped, tmp_path / name)
        if name == "model.pt":
            check_trained_settings(tmp_path / name, {**configured, "image_size": 256})
        else:
            with pytest.raises(
                InputFileError, match=r"\(the config its TorchScript archive embeds\): image_size 128, con"
            ):
                check_trained_settings(tmp_path / name, {**configured, "image_size": 256})
