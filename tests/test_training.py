"""Network, metrics and the training workflow (MONAI bundle configs) end to end on tiny sphere data."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigWorkflow
from scripts.config_flags import as_flag
from scripts.io.files import InputFileError, input_error_of
from scripts.model.metrics import DepthMAE, MaskDice
from scripts.model.networks import DualFaceDepthNet, absolute_depth, split_output
from scripts.model.plot_training import main as plot_main
from scripts.model.plot_training import plot_training
from scripts.model.run_record import check_trained_settings, network_settings, run_record, write_run_record
from scripts.model.training import bfloat16_supported, latest_checkpoint, load_datalist
from tests.helpers import META, ROOT, TINY, TRAIN, ddp_train_command, run_bundle, train_workflow, write_sphere_dataset

EXIT_ABORT = "terminate called without an active exception"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("spheres")
    write_sphere_dataset(root, n_cases=2, size=64)
    return root


# ---------------------------------------------------------------------------------------- network
@pytest.mark.parametrize("faces,shape", [(2, (64, 64)), (1, (32, 48))])
def test_network_output_layout(faces, shape):
    net = DualFaceDepthNet(faces=faces).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, *shape))
    assert out.shape == (2, faces * 3 + 3 + 1, *shape)
    parts = split_output(out, 3, faces)
    assert parts["depth"].shape[1] == faces * 3 and parts["mask_logits"].shape[1] == 3 and parts["centre"].shape == (2,)
    assert torch.allclose(out[:, -1], parts["centre"][:, None, None].expand(2, *shape))  # one scalar per image
    assert sum(p.numel() for p in net.parameters()) * 4 < 4e6  # < 4 MB of float32 weights: fits in git
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(torch.ones(1, 1, *shape)), net(torch.ones(1, 1, *shape)))


def test_network_output_is_float32_under_bfloat16_autocast():
    """Under bfloat16 autocast (training's ``amp``) the output layers (the maps' 1x1 convolution, the centre head) run
    in float32, the rest in bfloat16: in bfloat16 the mm affine would put every depth near 950 mm on bfloat16's 4 mm
    grid there, and a bfloat16 map before it would step 0.2-0.4 mm."""
    torch.manual_seed(0)
    net = DualFaceDepthNet(features=TINY["features"]).eval()
    x = torch.rand(2, 1, 32, 32)
    seen = {}
    for name in ("conv_0", "final_conv", "centre_head"):
        getattr(net, name).register_forward_hook(lambda m, i, o, name=name: seen.update({name: o.dtype}))
    with torch.no_grad():
        ref = split_output(net(x))["depth"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
    assert seen == {"conv_0": torch.bfloat16, "final_conv": torch.float32, "centre_head": torch.float32}
    assert out.dtype == torch.float32
    depth = split_output(out)["depth"]
    assert (torch.remainder(depth, 4.0) != 0).float().mean() > 0.9
    assert (depth - ref).abs().mean() < 0.5  # bfloat16 features move a depth by far less than the 4 mm grid


def test_amp_is_refused_without_native_bfloat16(dataset, tmp_path, monkeypatch):
    """``amp: true`` on a device without native bfloat16 (emulated: slower than float32) is one line naming --amp,
    before training writes anything; ``amp: false`` needs nothing."""
    monkeypatch.setattr("scripts.model.training.bfloat16_supported", lambda device: False)
    with pytest.raises(Exception) as info:
        train_workflow(dataset, tmp_path / "other", epochs=1, amp=True).run()
    assert "--amp" in str(input_error_of(info.value)) and "no native bfloat16" in str(input_error_of(info.value))
    assert not list((tmp_path / "other").glob("*.pt"))


def test_amp_trains_under_bfloat16_autocast(dataset, tmp_path):
    """``amp: true``: the training steps run the convolutions in bfloat16 (seen by a hook), validation in float32, and
    the run ends with a model."""
    if not bfloat16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no native bfloat16 (AVX512-BF16 or AMX)")
    wf = train_workflow(dataset, tmp_path / "run", epochs=1, amp=True)
    seen, stage = {"train": set(), "validate": set()}, {"now": "train"}
    wf.trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: stage.update(now="train"))
    wf.parser.get_parsed_content("validate#evaluator").add_event_handler(
        Events.STARTED, lambda e: stage.update(now="validate")
    )
    net = wf.parser.get_parsed_content("network_def")
    net.conv_0.register_forward_hook(lambda m, i, o: seen[stage["now"]].add(o.dtype))
    before = net.conv_0.conv_0.conv.weight.detach().clone()
    wf.run()
    wf.finalize()
    assert seen == {"train": {torch.bfloat16}, "validate": {torch.float32}}
    assert not torch.equal(before, net.conv_0.conv_0.conv.weight)
    DualFaceDepthNet(features=TINY["features"]).load_state_dict(
        torch.load(tmp_path / "run" / "models" / "model.pt", map_location="cpu")
    )


def test_absolute_depth_hand_computed():
    depth = torch.tensor([[[[10.0, 20.0], [30.0, 99.0]]]])
    weights = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])
    # masked mean 20, centre 950: every pixel moves by 930; a sample with no weights is left alone
    torch.testing.assert_close(absolute_depth(depth, weights, torch.tensor([950.0])), depth + 930.0)
    torch.testing.assert_close(absolute_depth(depth, 0 * weights, torch.tensor([950.0])), depth)


# ---------------------------------------------------------------------------------------- metrics
def _run_metrics(pred: torch.Tensor, label: torch.Tensor) -> dict:
    engine = Engine(lambda e, batch: batch)
    for name, metric in {
        "mae": DepthMAE("centre"),
        "oracle": DepthMAE("oracle"),
        "raw": DepthMAE("raw"),
        "dice": MaskDice(),
    }.items():
        metric.attach(engine, name)
    engine.run([(pred, label)], max_epochs=1)
    return engine.state.metrics


def test_metrics_hand_computed():
    mask = torch.zeros(1, 3, 4, 4)
    mask[0, 0] = 1.0  # only the pelvis present
    depth = torch.zeros(1, 6, 4, 4)
    depth[0, 0], depth[0, 1] = 1000.0, 1100.0
    label = torch.cat([depth, mask], 1)
    # prediction: depth 10 mm too deep everywhere, centre estimate 1053 (truth 1050), perfect mask
    pred = torch.cat([depth + 10.0, 40.0 * mask - 20.0, torch.full((1, 1, 4, 4), 1053.0)], 1)
    m = _run_metrics(pred, label)
    assert m["raw"] == pytest.approx(10.0) and m["oracle"] == pytest.approx(0.0, abs=1e-6)
    assert m["mae"] == pytest.approx(3.0, abs=1e-4)  # shifted by 1053 - 1060
    assert m["raw_pelvis_front"] == pytest.approx(10.0) and math.isnan(m["raw_femur_left_back"])
    assert m["dice"] == pytest.approx(1.0) and m["dice_pelvis"] == pytest.approx(1.0)
    # a prediction missing half the pelvis: Dice 2 * 8 / (8 + 16)
    pred[0, 6, :2] = -20.0
    assert _run_metrics(pred, label)["dice_pelvis"] == pytest.approx(16 / 24)


# ---------------------------------------------------------------------------------------- workflow
def test_datalist_errors_name_the_file(dataset, tmp_path):
    assert len(load_datalist(dataset, "training")) == 2
    with pytest.raises(InputFileError, match="datalist.json"):
        load_datalist(dataset, "nonexistent")
    (tmp_path / "datalist.json").write_text(
        '{"training": [{"image": "a.nii.gz", "depth": "b", "mask": "c", "geometry": "d"}]}'
    )
    with pytest.raises(InputFileError, match="a.nii.gz"):
        load_datalist(tmp_path, "training")
    for bad in (5, [], {"a": "b"}, [str(dataset), 3]):  # a --dataset_dir that is no folder nor list of folders
        with pytest.raises(InputFileError) as e:
            load_datalist(bad, "training")
        assert (
            str(e.value)
            == f"--dataset_dir: expected a data set folder or a list of them, e.g. \"['data/sim','data/sim_own']\"; got {bad!r}"
        )
    with pytest.raises(InputFileError, match=r"^--dataset_dir: .* is listed twice$"):
        load_datalist([dataset, Path(dataset) / "."], "training")


def test_datalists_of_several_folders_are_joined(dataset, tmp_path):
    """A list of folders: each list's entries in folder order, absolute; a folder without validation entries adds none."""
    other = tmp_path / "other"
    shutil.copytree(dataset, other)
    listed = json.loads((other / "datalist.json").read_text())
    (other / "datalist.json").write_text(json.dumps({**listed, "validation": []}))
    one, both = load_datalist(dataset, "training"), load_datalist([dataset, other], "training")
    assert len(both) == 2 * len(one) and both[: len(one)] == one
    assert [e["image"] for e in both[len(one) :]] == [e["image"].replace(str(dataset), str(other)) for e in one]
    assert load_datalist([dataset, other], "validation") == load_datalist(dataset, "validation")
    # own CTs all simulated into training: the line says how a validation list comes about (it named the key alone)
    fill = (
        "simulate a CT into it with python -m scripts.simulate --split validation, or list a data set that has "
        f"validation samples beside it, --dataset_dir \"['data/sim',{str(other)!r}]\""
    )
    with pytest.raises(InputFileError) as e:
        load_datalist([other], "validation")
    assert (
        str(e.value) == f"{other / 'datalist.json'}: no entries under key 'validation' in any of {[str(other)]}: {fill}"
    )
    with pytest.raises(InputFileError) as e:
        load_datalist(other, "validation")
    assert str(e.value) == f"{other / 'datalist.json'}: no non-empty list under key 'validation': {fill}"


def test_datalist_shorter_than_the_processes_sharing_it(dataset, tmp_path):
    """Multi-process validation needs one entry per process: fewer is one line naming the datalist, or --dataset_dir
    for a list of folders."""
    assert len(load_datalist(dataset, "validation", processes=2)) == 2
    one = tmp_path / "one"
    shutil.copytree(dataset, one)
    listed = json.loads((one / "datalist.json").read_text())
    (one / "datalist.json").write_text(json.dumps({**listed, "validation": listed["validation"][:1]}))
    tail = "multi-process training needs at least one validation sample per process (docs/training.md)"
    with pytest.raises(InputFileError) as e:
        load_datalist(one, "validation", processes=2)
    assert str(e.value) == f"{one / 'datalist.json'}: 1 validation entry for 2 processes; {tail}"
    with pytest.raises(InputFileError) as e:
        load_datalist([dataset, one], "validation", processes=4)
    assert str(e.value) == f"--dataset_dir: 3 validation entries for 4 processes; {tail}"


def test_train_end_to_end(dataset, tmp_path):
    wf = train_workflow(dataset, tmp_path / "run", epochs=2)
    assert not wf.check_properties()
    wf.run()
    wf.finalize()
    assert wf.trainer.state.epoch == 2
    assert latest_checkpoint(tmp_path / "run").endswith("checkpoint_epoch=2.pt")
    best = torch.load(tmp_path / "run" / "models" / "model.pt", map_location="cpu")
    DualFaceDepthNet(features=TINY["features"]).load_state_dict(best)
    png = plot_training(tmp_path / "run" / "tensorboard", tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a user's PNG at the output: one line, the file byte for byte; --overwrite replaces it
    (tmp_path / "mine.png").write_bytes(b"a user's figure")
    assert plot_main([str(tmp_path / "run" / "tensorboard"), str(tmp_path / "mine.png")]) == 1
    assert (tmp_path / "mine.png").read_bytes() == b"a user's figure"
    assert plot_main([str(tmp_path / "run" / "tensorboard"), str(tmp_path / "mine.png"), "--overwrite"]) == 0
    assert (tmp_path / "mine.png").read_bytes() == png.read_bytes()


def test_resume_continues_from_saved_epoch(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    first = train_workflow(dataset, run, epochs=3)
    first.trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate())  # "interrupted"
    first.run()
    first.finalize()
    assert latest_checkpoint(run).endswith("checkpoint_epoch=1.pt")
    saved = torch.load(latest_checkpoint(run), map_location="cpu")
    before = _tree(run)
    with pytest.raises(Exception) as info:  # another --epochs: the restored schedule would not be the one asked for
        train_workflow(dataset, run, epochs=5).run()
    cause = input_error_of(info.value)
    assert isinstance(cause, InputFileError) and cause.path == latest_checkpoint(run)
    assert "a run of --epochs 3 (its cosine learning-rate schedule), resumed with --epochs 5" in str(cause)
    # another image_size (the weights fit, their meaning does not), or --pretrained beside a run that started without
    torch.save(saved["model"], tmp_path / "pre.pt")
    for override, told in (
        ({"image_size": 32}, "image_size 64, resumed with 32; resume with --image_size 64"),
        ({"pretrained": str(tmp_path / "pre.pt")}, "a checkpoint to resume of a run that started without --pretrained"),
    ):
        with pytest.raises(Exception) as info:
            train_workflow(dataset, run, epochs=3, **override).run()
        cause = input_error_of(info.value)
        assert isinstance(cause, InputFileError) and cause.path == latest_checkpoint(run) and told in str(cause)
    assert _tree(run) == before

    second = train_workflow(dataset, run, epochs=3)
    seen = []

    def record(engine):
        net = second.parser.get_parsed_content("network_def")
        seen.append((engine.state.epoch, {k: v.clone() for k, v in net.state_dict().items()}))

    second.trainer.add_event_handler(Events.EPOCH_STARTED, record)
    second.run()
    second.finalize()
    assert [epoch for epoch, _ in seen] == [2, 3]
    for k, v in saved["model"].items():  # weights at the start of epoch 2 are those saved after epoch 1
        torch.testing.assert_close(seen[0][1][k], v)
    assert second.parser.get_parsed_content("lr_scheduler").last_epoch == 3
    assert latest_checkpoint(run).endswith("checkpoint_epoch=3.pt")
    capsys.readouterr()
    finished = _tree(run)
    again = train_workflow(dataset, run, epochs=3)  # the same command once more: the run is complete, and says so
    again.run()
    again.finalize()
    assert (
        f"{latest_checkpoint(run)}: the run is complete (3 of 3 epochs): nothing to train; to train on, fine-tune "
        + ("from its model.pt with --pretrained in a new --output_dir")
        in capsys.readouterr().err.strip().splitlines()
    )
    assert _tree(run) == finished  # no file added or changed (no empty TensorBoard event files)


def test_resume_remembers_the_best_validation(dataset, tmp_path):
    """After an interruption the best model is replaced only by a better validation than before it."""
    run = tmp_path / "run"
    first = train_workflow(dataset, run, epochs=3)
    first.trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate())
    first.run()
    first.finalize()
    saved = torch.load(latest_checkpoint(run), map_location="cpu", weights_only=False)
    assert saved["best_model"]["best_metric_epoch"] == 1
    tracked = saved["best_model"]["saver"]  # ignite Checkpoint state: {key: [(priority, filename)]}
    assert sum(len(items) for items in tracked.values()) == 1  # one best model kept
    # pretend epoch 1 validated at 1 um: no later epoch can beat it (priority = -metric, lower is better)
    saved["best_model"] = {
        "best_metric": 1e-3,
        "best_metric_epoch": 1,
        "saver": {k: [(-1e-3, f) for _, f in v] for k, v in tracked.items()},
    }
    torch.save(saved, latest_checkpoint(run))
    best = (run / "models" / "model.pt").read_bytes()
    second = train_workflow(dataset, run, epochs=3)
    second.run()
    second.finalize()
    assert (run / "models" / "model.pt").read_bytes() == best
    evaluator = second.parser.get_parsed_content("validate#evaluator")
    assert (evaluator.state.best_metric, evaluator.state.best_metric_epoch) == (1e-3, 1)


def _weights_at_first_epoch(wf: ConfigWorkflow) -> dict:
    """Run ``wf`` and return the network's weights as its first epoch starts."""
    net, seen = wf.parser.get_parsed_content("network_def"), {}
    wf.trainer.add_event_handler(
        Events.EPOCH_STARTED, lambda e: seen or seen.update({k: v.clone() for k, v in net.state_dict().items()})
    )
    wf.run()
    wf.finalize()
    return seen


def test_pretrained_weights_start_the_training(dataset, tmp_path):
    torch.manual_seed(7)  # not the config's seed: a fresh start differs
    start = DualFaceDepthNet(features=TINY["features"]).state_dict()
    torch.save(start, tmp_path / "pre.pt")
    fresh = _weights_at_first_epoch(train_workflow(dataset, tmp_path / "fresh", epochs=1))
    assert not torch.equal(fresh["conv_0.conv_0.conv.weight"], start["conv_0.conv_0.conv.weight"])
    tuned_run = train_workflow(dataset, tmp_path / "tuned", epochs=2, pretrained=str(tmp_path / "pre.pt"))
    tuned_run.trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate())  # "interrupted"
    tuned = _weights_at_first_epoch(tuned_run)
    assert tuned.keys() == start.keys() and all(torch.equal(tuned[k], start[k]) for k in start)
    # a training checkpoint ({"model": ..., "optimizer": ...}) serves too
    ckpt = torch.load(latest_checkpoint(tmp_path / "fresh"), map_location="cpu")
    again = _weights_at_first_epoch(
        train_workflow(dataset, tmp_path / "again", epochs=1, pretrained=latest_checkpoint(tmp_path / "fresh"))
    )
    assert all(torch.equal(again[k], ckpt["model"][k]) for k in start)
    # without --pretrained the interrupted fine-tune continues from its own checkpoint (after epoch 1)
    after_first = torch.load(latest_checkpoint(tmp_path / "tuned"), map_location="cpu")["model"]
    resumed = _weights_at_first_epoch(train_workflow(dataset, tmp_path / "tuned", epochs=2))
    assert all(torch.equal(resumed[k], after_first[k]) for k in start)
    assert not torch.equal(resumed["conv_0.conv_0.conv.weight"], start["conv_0.conv_0.conv.weight"])


def test_interrupted_fine_tune_resumes_with_the_same_command(dataset, tmp_path):
    """The interrupted fine-tune's own command again (--pretrained included) continues from its checkpoint's epoch,
    not from the pretrained weights: its training.json records that file's SHA-256. Another --pretrained file, or one
    beside a run without a record (earlier bundles): one line saying how to choose, before training."""
    torch.manual_seed(7)
    start = DualFaceDepthNet(features=TINY["features"]).state_dict()
    torch.save(start, tmp_path / "pre.pt")
    torch.save({k: v + 1 for k, v in start.items()}, tmp_path / "other.pt")
    run, pre = tmp_path / "tuned", str(tmp_path / "pre.pt")
    first = train_workflow(dataset, run, epochs=2, pretrained=pre)
    first.trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate())  # "interrupted"
    first.run()
    first.finalize()
    digest = hashlib.sha256((tmp_path / "pre.pt").read_bytes()).hexdigest()
    assert json.loads((run / "training.json").read_text())["pretrained"] == {"path": pre, "sha256": digest}
    after_first = torch.load(latest_checkpoint(run), map_location="cpu")["model"]
    before = _tree(run)
    old = tmp_path / "old"  # the same run without its record
    shutil.copytree(run, old)
    (old / "training.json").unlink()
    for folder, pretrained, told in (
        (
            run,
            tmp_path / "other.pt",
            f"started from {pre} ({run / 'training.json'}), and --pretrained {tmp_path / 'other.pt'} is not that file "
            "(SHA-256 differs): ",
        ),
        (old, tmp_path / "pre.pt", f"a checkpoint to resume, and --pretrained {pre} was given too: "),
    ):
        with pytest.raises(Exception) as info:
            train_workflow(dataset, folder, epochs=2, pretrained=str(pretrained)).run()
        cause = input_error_of(info.value)
        assert isinstance(cause, InputFileError) and cause.path == latest_checkpoint(folder), info.value
        assert told in str(cause) and str(cause).endswith(
            f"to fine-tune from {pretrained} give a new --output_dir; to resume this run drop --pretrained"
        )
    assert _tree(run) == before
    again = train_workflow(dataset, run, epochs=2, pretrained=pre)
    epochs = []
    again.trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    resumed = _weights_at_first_epoch(again)
    assert epochs == [2]
    assert all(torch.equal(resumed[k], after_first[k]) for k in start)


def test_run_record_is_checked_by_inference_and_evaluation(dataset, tmp_path, capsys):
    """A fresh run writes training.json into ckpt_dir and output_dir: what its weights mean. Inference and evaluation
    (dual- and single-face) of a checkpoint in its folder configured otherwise (here image_size: the fully convolutional
    network would run, silently wrong) refuse in one line naming the checkpoint, the key, both values and the option to
    pass, before writing anything; configured as recorded, inference runs."""
    run = tmp_path / "run"
    wf = train_workflow(dataset, run, epochs=1)
    wf.run()
    wf.finalize()
    record = json.loads((run / "models" / "training.json").read_text())
    assert (run / "training.json").read_bytes() == (run / "models" / "training.json").read_bytes()
    assert record["network"] == {
        "image_size": 64,
        "bones": ["pelvis", "femur_left", "femur_right"],
        "faces": 2,
        "features": TINY["features"],
        "depth_prior_mm": [950.0, 50.0],
        "centre_prior_mm": [950.0, 50.0],
        "fov_channel": False,
        "fov_fill": 0.0,
    }
    assert (record["epochs"], record["pretrained"], record["dataset_dir"]) == (1, None, [str(dataset)])
    assert record["bundle_version"] == json.loads(Path(META).read_text())["version"]
    ckpt, written = run / "models" / "model.pt", run / "models" / "training.json"
    given = dict(ckpt_path=str(ckpt), ssm_path="", features=TINY["features"], device="cpu")
    infer = dict(input_dir=str(dataset / "case_0000_p0" / "image.nii.gz"), output_dir=str(tmp_path / "out"), **given)
    with pytest.raises(SystemExit) as info:
        run_bundle("inference.yaml", **infer)
    assert info.value.code == 1 and not (tmp_path / "out").exists()
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"{ckpt}: trained with other network settings ({written}): image_size 64, configured 128; pass --image_size 64"
    )
    run_bundle("inference.yaml", **infer, image_size=64)
    assert len(list((tmp_path / "out").rglob("result.json"))) == 1

    single = tmp_path / "single"
    wf = train_workflow(dataset, single, ("configs/variants/single_face.yaml",), epochs=1, image_size=32)
    wf.run()
    wf.finalize()
    assert json.loads((single / "training.json").read_text())["network"]["faces"] == 1
    evaluate = dict(dataset_dir=str(dataset), output_dir=str(tmp_path / "eval"), ckpt_path=str(ckpt), ssm_path="")
    for overrides, single_face, told in (
        (
            {"features": TINY["features"]},
            tmp_path / "none.pt",  # missing: the variant is skipped
            f"{ckpt}: trained with other network settings ({written}): image_size 64, configured 128; "
            "pass --inference_overrides \"{'image_size': 64}\" (beside any other keys given there)",
        ),
        (
            {"features": TINY["features"], "image_size": 64},
            single / "model.pt",
            f"{single / 'model.pt'}: trained with other network settings ({single / 'training.json'}): image_size 32, "
            "configured 64; pass --single_face_overrides \"{'image_size': 32}\" (beside any other keys given there)",
        ),
    ):
        with pytest.raises(SystemExit) as info:
            run_bundle(
                "evaluate.yaml", **evaluate, single_face_ckpt_path=str(single_face), inference_overrides=overrides
            )
        assert info.value.code == 1 and not (tmp_path / "eval").exists()
        assert capsys.readouterr().err.strip().splitlines()[-1] == told


def test_trained_settings_check_names_every_key_and_its_option(tmp_path):
    """A record written by write_run_record against other settings: every differing key with both values, and the
    options setting the trained ones as the command line takes them (evaluation: its dict-valued overrides option;
    export_onnx: its repeated --override), or the keys to set in a config file (the release step, the Deploy app);
    agreeing settings, a missing checkpoint, or a training.json that is not a run record (a user's): not checked."""
    bones, features = ["pelvis", "femur_left", "femur_right"], [4, 4, 8, 8, 16, 4]
    trained = network_settings("64", bones, 2, features, [950, 50], [950, 50], "true", -1)
    write_run_record(run_record(trained, 1, None, "false", str(tmp_path)), tmp_path)
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    configured = network_settings(128, bones, 2, features, [950.0, 50.0], [950.0, 50.0], False, 0.0)
    said = (
        f"{ckpt}: trained with other network settings ({tmp_path / 'training.json'}): image_size 64, configured 128; "
        "fov_channel True, configured False; fov_fill -1.0, configured 0.0; "
    )
    for option, passed in (
        (None, "pass --image_size 64 --fov_channel true --fov_fill -1.0"),
        (
            "inference_overrides",
            "pass --inference_overrides \"{'image_size': 64, 'fov_channel': True, 'fov_fill': -1.0}\" "
            "(beside any other keys given there)",
        ),
        ("override=", "pass --override image_size=64 --override fov_channel=true --override fov_fill=-1.0"),
        ("configs/inference.yaml", "set image_size: 64, fov_channel: true, fov_fill: -1.0 in configs/inference.yaml"),
        (
            "configs/evaluate.yaml#single_face_overrides",
            'set single_face_overrides: {"image_size": 64, "fov_channel": true, "fov_fill": -1.0} in '
            "configs/evaluate.yaml (beside any other keys given there)",
        ),
    ):
        with pytest.raises(InputFileError) as info:
            check_trained_settings(ckpt, configured, option)
        assert str(info.value) == said + passed
    check_trained_settings(ckpt, trained)
    check_trained_settings(tmp_path / "missing.pt", configured)
    (tmp_path / "training.json").write_text(json.dumps({"network": {"image_size": 64}}))
    check_trained_settings(ckpt, configured)


def test_pretrained_widen_starts_a_wider_network_from_a_narrower_one(dataset, tmp_path):
    """`--pretrained small.pt --features WIDER --pretrained_widen true`: the wider network's first epoch starts
    from the narrow one's maps (widening.py); without the flag the narrow file is refused (test below)."""
    torch.manual_seed(7)
    small = DualFaceDepthNet(features=[2, 2, 4, 4, 8, 2])
    torch.save(small.state_dict(), tmp_path / "small.pt")
    wf = train_workflow(
        dataset, tmp_path / "wide", epochs=1, pretrained=str(tmp_path / "small.pt"), pretrained_widen=True
    )
    start = _weights_at_first_epoch(wf)
    wide = DualFaceDepthNet(features=TINY["features"])
    wide.load_state_dict(start)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(wide.eval()(x), small.eval()(x), rtol=0, atol=1e-3)


@pytest.mark.parametrize(
    "name,match",
    [
        ("wide.pt", "network configuration"),
        ("model.ts", "TorchScript"),
        ("missing.pt", "not found"),
        ("garbage.pt", "unreadable checkpoint (UnpicklingError: Unsupported operand 110)"),  # ord("n"), its first byte
        ("list.pt", "not a network state dict"),
    ],
)
def test_pretrained_weights_that_do_not_fit_name_the_file(dataset, tmp_path, name, match):
    if name == "wide.pt":
        torch.save(DualFaceDepthNet(features=[8, 8, 16, 16, 32, 8]).state_dict(), tmp_path / name)
    elif name == "model.ts":
        torch.jit.script(DualFaceDepthNet(features=TINY["features"])).save(str(tmp_path / name))
    elif name == "garbage.pt":
        (tmp_path / name).write_bytes(b"not a checkpoint" * 10)
    elif name == "list.pt":
        torch.save([torch.zeros(3)], tmp_path / name)
    with pytest.raises(Exception) as info:  # before any training sample is loaded and cached
        train_workflow(dataset, tmp_path / "run", epochs=1, pretrained=str(tmp_path / name)).run()
    cause = input_error_of(info.value)
    assert isinstance(cause, InputFileError) and name in str(cause) and match in str(cause)
    assert not (tmp_path / "run").exists()  # the run stopped before training: no empty output_dir left behind


@pytest.mark.parametrize(
    "variant,depth_channels", [("configs/variants/single_face.yaml", 3), ("configs/variants/absolute_si.yaml", 6)]
)
def test_variants(dataset, tmp_path, variant, depth_channels):
    wf = train_workflow(dataset, tmp_path / "run", configs=(variant,), epochs=1)
    assert not wf.check_properties()
    net = wf.parser.get_parsed_content("network_def")
    assert net(torch.rand(1, 1, 64, 64)).shape[1] == depth_channels + 3 + 1
    assert wf.parser.get_parsed_content("loss").depth_loss.center_align == ("absolute_si" not in variant)
    wf.run()
    wf.finalize()
    assert (tmp_path / "run" / "model.pt").exists()  # variants keep their best model in their own run folder


def test_command_line_false_switches_flags_off(dataset, tmp_path):
    """``--casi_per_channel false`` reaches the config as the string "false" (Python Fire): it must mean off."""
    (tmp_path / "on").mkdir()
    torch.save(
        {"model": DualFaceDepthNet(features=TINY["features"]).state_dict()}, tmp_path / "on" / "checkpoint_epoch=1.pt"
    )
    off = train_workflow(
        dataset, tmp_path / "off", epochs=1, casi_per_channel="false", center_align="False", resume="false"
    )
    loss = off.parser.get_parsed_content("loss").depth_loss
    assert loss.per_channel is False and loss.center_align is False
    assert off.parser.get_parsed_content("resume_checkpoint") is None
    on = train_workflow(dataset, tmp_path / "on", epochs=1, casi_per_channel="true", resume="true")
    assert on.parser.get_parsed_content("loss").depth_loss.per_channel is True
    assert on.parser.get_parsed_content("resume_checkpoint").endswith("checkpoint_epoch=1.pt")


@pytest.mark.parametrize(
    "value,expected",
    [
        (True, True),
        (False, False),
        (0, False),
        (1, True),
        ("false", False),
        ("TRUE", True),
        (" off ", False),
        ("yes", True),
    ],
)
def test_as_flag(value, expected):
    assert as_flag(value) is expected


def test_as_flag_names_the_key():
    with pytest.raises(InputFileError, match="--flip_tta: must be true or false, got 'maybe'"):
        as_flag("maybe", "flip_tta")


# each bad value of a training option: its line (scripts.config_flags); they were tracebacks (val_interval 0 after
# writing models/ and tensorboard/, zoom_range abc after training.json) or ran (cache_rate 2, image_size 100, augment_prob 2)
TRAIN_OPTION_CASES = {
    "--epochs abc": ({"epochs": "abc"}, "--epochs: must be a whole number of at least 1, got 'abc'"),
    "--features five levels": (  # was a 4 KB traceback from BasicUNet
        {"features": [8, 16, 32, 64, 128]},
        "--features: must be six channel counts (BasicUNet's levels), got [8, 16, 32, 64, 128]",
    ),
    "--epochs 0": ({"epochs": 0}, "--epochs: must be a whole number of at least 1, got 0"),
    "--batch_size 0": ({"batch_size": 0}, "--batch_size: must be a whole number of at least 1, got 0"),
    "--val_batch_size abc": (
        {"val_batch_size": "abc"},
        "--val_batch_size: must be a whole number of at least 1, got 'abc'",
    ),
    "--learning_rate -1": ({"learning_rate": -1}, "--learning_rate: must be a positive number, got -1"),
    "--learning_rate abc": ({"learning_rate": "abc"}, "--learning_rate: must be a positive number, got 'abc'"),
    "--weight_decay -1": ({"weight_decay": -1}, "--weight_decay: must be a number of at least 0, got -1"),
    "--num_workers -1": ({"num_workers": -1}, "--num_workers: must be a whole number of at least 0, got -1"),
    "--cache_rate 2": ({"cache_rate": 2}, "--cache_rate: must be a number from 0 to 1, got 2"),
    "--cache_rate abc": ({"cache_rate": "abc"}, "--cache_rate: must be a number from 0 to 1, got 'abc'"),
    "--image_size 100": (
        {"image_size": 100},
        "--image_size: must be a whole number of at least 16 and a multiple of 16, got 100",
    ),
    "--image_size 0": (
        {"image_size": 0},
        "--image_size: must be a whole number of at least 16 and a multiple of 16, got 0",
    ),
    "--val_interval 0": ({"val_interval": 0}, "--val_interval: must be a whole number of at least 1, got 0"),
    "--loss_weights abc": ({"loss_weights": "abc"}, "--loss_weights: must be a mapping of names to values, e.g. "),
    "--loss_weights without centre": (
        {"loss_weights": {"depth": 50, "mask": 1}},
        "--loss_weights: must map depth, mask, centre to numbers of at least 0, got {'depth': 50, 'mask': 1}",
    ),
    "--loss_weights#depth abc": (
        {"loss_weights#depth": "abc"},
        "--loss_weights#depth: must be a number of at least 0, got 'abc'",
    ),
    "--casi_lambda 2": ({"casi_lambda": 2}, "--casi_lambda: must be a number from 0 to 1, got 2"),
    "--augment_prob 2": ({"augment_prob": 2}, "--augment_prob: must be a number from 0 to 1, got 2"),
    "--flip_prob abc": ({"flip_prob": "abc"}, "--flip_prob: must be a number from 0 to 1, got 'abc'"),
    "--zoom_range high, low": (
        {"zoom_range": [1.1, 0.9]},
        "--zoom_range: must be two positive numbers (scale), low and high, got [1.1, 0.9]",
    ),
    "--seed abc": ({"seed": "abc"}, "--seed: must be a whole number of at least 0, got 'abc'"),
    "--resume maybe": ({"resume": "maybe"}, "--resume: must be true or false, got 'maybe'"),
    "--amp maybe": ({"amp": "maybe"}, "--amp: must be true or false, got 'maybe'"),
    "--is_main_process maybe": ({"is_main_process": "maybe"}, "--is_main_process: must be true or false, got 'maybe'"),
    "--faces 3": ({"faces": 3}, "--faces: must be a whole number from 1 to 2, got 3"),
    # '' is the working folder: --ckpt_dir '' wrote model.pt and training.json into it, --pretrained '' was '.: ...'
    "--ckpt_dir ''": ({"ckpt_dir": ""}, "--ckpt_dir: must be a file or folder path, got ''"),
    "--pretrained ''": ({"pretrained": ""}, "--pretrained: must be a file or folder path, got ''"),
}


@pytest.mark.parametrize("case", list(TRAIN_OPTION_CASES))
def test_bad_training_option_one_line_before_any_sample_is_loaded(case, dataset, tmp_path, monkeypatch):
    """A bad value of a training option is one line naming it, before any sample is loaded (CheckSampled sees each
    one as it is cached) and before output_dir exists; nothing in the working folder either."""
    overrides, line = TRAIN_OPTION_CASES[case]
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")

    def loaded(self, data):
        raise AssertionError("a sample was loaded before the option was checked")

    monkeypatch.setattr("scripts.model.transforms.CheckSampled.__call__", loaded)
    with pytest.raises(Exception) as info:
        train_workflow(dataset, tmp_path / "run", **{"epochs": 1, **overrides}).run()
    assert input_error_of(info.value) is not None, info.value
    cause = str(input_error_of(info.value))
    assert cause.startswith(line) if line.endswith(" ") else cause == line, cause
    assert not (tmp_path / "run").exists() and list((tmp_path / "cwd").iterdir()) == []


def test_is_main_process_false_on_the_command_line_turns_its_handlers_off(dataset, tmp_path):
    """``--is_main_process false`` arrives as the text 'false' (a DDP rank above 0 when given by hand): the validation
    logging and TensorBoard handlers are off, the best-model saver stays (it was read as true, a non-empty text)."""
    kinds = {
        value: [
            type(h).__name__
            for h in train_workflow(
                dataset, tmp_path / value, epochs=1, is_main_process=value
            ).parser.get_parsed_content("validate#handlers")
        ]
        for value in ("false", "true")
    }
    assert kinds == {
        "false": ["CheckpointSaver"],
        "true": ["StatsHandler", "TensorBoardStatsHandler", "CheckpointSaver"],
    }


def test_pretrained_null_on_the_command_line_is_none(dataset, tmp_path):
    """The command line passes ``--pretrained null`` as the text 'null' (it was 'null: checkpoint not found'): no
    weights loaded, none recorded, as the config's null."""
    wf = train_workflow(dataset, tmp_path / "run", epochs=1, pretrained="null")
    assert wf.parser.get_parsed_content("pretrained_weights") is None
    assert wf.parser.get_parsed_content("run_record")["pretrained"] is None
    assert wf.parser.get_parsed_content("resume_checkpoint") is None


def test_runs_never_write_into_models(dataset, tmp_path):
    """The README train command keeps the best model in its run folder; ckpt_dir or output_dir inside models/ is
    refused before anything is written, and the shipped files stay byte for byte."""
    parser = ConfigWorkflow(
        config_file=TRAIN, meta_file=META, workflow_type="train", output_dir=str(tmp_path / "run")
    ).parser
    assert parser.get_parsed_content("ckpt_dir") == str(tmp_path / "run")
    shipped = {p.name: p.read_bytes() for p in (ROOT / "models").iterdir()}
    for key, run_dir, ckpt_dir in (
        ("ckpt_dir", tmp_path / "run2", ROOT / "models"),
        ("output_dir", ROOT / "models", tmp_path / "best"),
    ):
        with pytest.raises(Exception) as info:
            train_workflow(dataset, run_dir, epochs=1, ckpt_dir=str(ckpt_dir)).run()
        cause = input_error_of(info.value)
        assert isinstance(cause, InputFileError) and f"{key} points into the shipped models/ folder" in str(cause)
    assert {p.name: p.read_bytes() for p in (ROOT / "models").iterdir()} == shipped


@pytest.mark.parametrize("content", ["plain state dict", "not a checkpoint"])
def test_resume_checkpoint_that_is_not_a_training_checkpoint(dataset, tmp_path, content):
    """A checkpoint_epoch=N.pt that is not this bundle's training checkpoint: one error naming it before training."""
    run = tmp_path / "run"
    run.mkdir()
    bad = run / "checkpoint_epoch=3.pt"
    if content == "plain state dict":
        torch.save(DualFaceDepthNet(features=TINY["features"]).state_dict(), bad)
    else:
        bad.write_bytes(b"garbage" * 20)
    with pytest.raises(Exception) as info:
        train_workflow(dataset, run, epochs=4).run()
    cause = input_error_of(info.value)
    assert isinstance(cause, InputFileError) and cause.path == str(bad)
    assert (
        "no 'model' state dict"
        if content == "plain state dict"
        else "unreadable resume checkpoint (UnpicklingError: Unsupported operand 103)"  # ord("g"), its first byte
    ) in str(cause)


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_training_never_overwrites_what_it_did_not_write(dataset, tmp_path):
    """A fresh run into a folder holding a user's model.pt, an earlier run's checkpoint (with --resume false), or a
    checkpoint of another network (resume): one error naming the file before training; every file byte for byte."""
    user = tmp_path / "user"
    user.mkdir()
    (user / "model.pt").write_bytes(b"a user's model" * 10)
    (user / "notes.txt").write_text("mine")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    torch.save({"model": DualFaceDepthNet(features=TINY["features"]).state_dict()}, earlier / "checkpoint_epoch=5.pt")
    other = tmp_path / "other"
    other.mkdir()
    torch.save(
        {"model": DualFaceDepthNet(features=[8, 8, 16, 16, 32, 8]).state_dict()}, other / "checkpoint_epoch=2.pt"
    )
    record = tmp_path / "record"  # a user's training.json (or another run's record)
    record.mkdir()
    (record / "training.json").write_text('{"mine": true}')
    for run, override, bad, match in (
        (user, {"ckpt_dir": str(user)}, user / "model.pt", "this run starts afresh"),
        (record, {}, record / "training.json", "this run starts afresh"),
        (earlier, {"resume": "false"}, earlier / "checkpoint_epoch=5.pt", "--resume false"),
        (other, {}, other / "checkpoint_epoch=2.pt", "shapes differ for"),
    ):
        before = _tree(run)
        with pytest.raises(Exception) as info:
            train_workflow(dataset, run, epochs=1, **override).run()
        cause = input_error_of(info.value)
        assert isinstance(cause, InputFileError) and cause.path == str(bad) and match in str(cause), info.value
        assert _tree(run) == before


def test_ddp_two_processes_cpu(dataset, tmp_path):
    run = tmp_path / "ddp"
    cmd = ddp_train_command(dataset, run, processes=2)
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONFAULTHANDLER="1")

    def complete() -> bool:  # both epochs checkpointed and a best model written
        last = latest_checkpoint(run)
        return last is not None and last.endswith("checkpoint_epoch=2.pt") and (run / "models" / "model.pt").exists()

    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=240)
    if proc.returncode != 0 and complete() and EXIT_ABORT in proc.stderr:
        # a gloo rank aborting at interpreter exit after a complete run (once in CI, never in 50 local
        # runs; docs/training.md): run again from scratch, so a second abort fails the test
        warnings.warn(
            f"DDP rank aborted at exit after a complete run; retrying once:\n{proc.stderr[-1500:]}", stacklevel=2
        )
        shutil.rmtree(run)
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=240
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert complete()
    # TensorBoard events come from rank 0 alone (file names end in .<pid>.<n>)
    writers = {
        re.search(r"\.(\d+)\.\d+$", f.name).group(1) for f in (run / "tensorboard").glob("events.out.tfevents.*")
    }
    assert len(writers) == 1, sorted((run / "tensorboard").iterdir())


def test_ddp_validation_list_shorter_than_the_processes(dataset, tmp_path):
    """torchrun with 2 processes and 1 validation sample: each rank says so in one line (no MONAI traceback) and exits
    before training, writing nothing. One training sample is fine: DistributedSampler repeats it to fill the shares."""
    one = tmp_path / "one"
    shutil.copytree(dataset, one)
    listed = json.loads((one / "datalist.json").read_text())
    (one / "datalist.json").write_text(json.dumps({**listed, "validation": listed["validation"][:1]}))
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        ddp_train_command(one, run, processes=2),
        cwd=ROOT,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=240,
    )
    line = f"{one / 'datalist.json'}: 1 validation entry for 2 processes; multi-process training needs at least one"
    rows = proc.stderr.splitlines()
    assert proc.returncode != 0
    assert len([r for r in rows if line in r]) == 2, proc.stderr[-3000:]  # one per rank, "[rankN]: " before it
    assert not [r for r in rows if r.startswith("[rank") and "Traceback" in r], proc.stderr[-3000:]
    assert "DistributedSampler" not in proc.stderr  # the check came before the sampler (MONAI's ValueError)
    assert not run.exists()


def test_verify_net_in_out():
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "verify_net_in_out",
        "network_def",
        "--meta_file",
        META,
        "--config_file",
        TRAIN,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, encoding="utf-8", errors="replace", timeout=120)
    assert proc.returncode == 0 and "verified with no error" in proc.stdout + proc.stderr, proc.stderr[-3000:]


def test_cli_pretrained_not_a_state_dict_one_line(dataset, tmp_path):
    """The real command line, run from another folder without the bundle on PYTHONPATH (MONAI puts it on the path as
    run starts: the checks open run; at initialize they stopped at ``import scripts``): a --pretrained file that is not
    a state dict is one line naming it, exit 1, no traceback."""
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint" * 10)
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        TRAIN,
        "--meta_file",
        META,
        "--dataset_dir",
        str(dataset),
        "--output_dir",
        str(tmp_path / "run"),
        "--pretrained",
        str(tmp_path / "garbage.pt"),
        "--epochs",
        "1",
        "--image_size",
        "64",
        "--features",
        str(TINY["features"]),
        "--device",
        "cpu",
    ]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith(f"{tmp_path / 'garbage.pt'}: unreadable checkpoint")
    assert not list((tmp_path / "run").glob("*.pt"))


def test_fresh_runs_of_one_seed_train_the_same_weights(dataset, tmp_path):
    """``set_determinism(seed)`` comes before anything draws random numbers, the network's initial weights
    included (``resume_checkpoint`` builds ``network_def`` as the run starts): two fresh runs of one seed in one process,
    whatever the random state before them, give the same model bit for bit (they differed by up to 0.66)."""
    models = []
    for run in ("a", "b"):
        torch.rand(7)  # another random state before each run
        wf = train_workflow(dataset, tmp_path / run, epochs=1)
        wf.run()
        wf.finalize()
        models.append(torch.load(tmp_path / run / "models" / "model.pt", weights_only=True))
    assert models[0].keys() == models[1].keys() and all(torch.equal(models[0][k], models[1][k]) for k in models[0])
