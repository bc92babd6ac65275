"""Evaluation workflow on the tiny phantom data set of tests/test_reconstruct.py (2 cases, 64x64)."""

from __future__ import annotations

import csv
import inspect
import json
import multiprocessing
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from benchmarks.compare_evaluations import compare, main, subject_rows
from matplotlib import colormaps
from monai.bundle import ConfigWorkflow
from PIL import Image
from scripts.geometry import read_standard_geometry
from scripts.io.files import (
    OUTPUT_MARKER,
    InputFileError,
    input_error_of,
    read_depth_and_mask,
    read_json,
    write_json,
    write_nifti,
)
from scripts.io.report import save_error_map
from scripts.model.networks import DualFaceDepthNet
from scripts.model.training import load_datalist
from scripts.reconstruction.evaluate import (
    METRIC_KEYS,
    SHIFTS,
    VARIANTS,
    EvaluationRunner,
    dataset_folders,
    label_surfaces,
    load_sample,
    mask_top_edge_px,
    prior_centre_depth,
    subject_summary,
    summarise,
    truth_meshes,
)
from scripts.reconstruction.reconstruct import build_reconstructor, true_face_mask
from scripts.reconstruction.surface_metrics import clip_to_planes, sample_surface, vertex_errors
from tests.helpers import (
    FAST_FIT,
    FEATURES,
    META,
    ROOT,
    error_lines,
    make_dataset,
    run_bundle,
    run_evaluation,
    tiny_checkpoint,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("evaluate"))


def true_mean_depth(sample_dir: Path, faces: int = 2) -> float:
    """Mean true depth (mm) over the masked pixels of a sample's ``faces`` (2: both, 1: front) maps."""
    depth, mask = read_depth_and_mask(sample_dir / "depth.nii.gz", sample_dir / "mask.nii.gz")
    if faces == 1:
        depth = depth[0::2]
    valid = np.repeat(mask, faces, axis=0) & (depth > 0)
    return float(depth[valid].mean(dtype=np.float64))


def test_prior_is_mean_training_depth(data):
    prior = prior_centre_depth(data, "training")
    assert prior[2] == pytest.approx(true_mean_depth(data / "case_0000_p0"), abs=1e-3)
    assert prior[1] == pytest.approx(true_mean_depth(data / "case_0000_p0", faces=1), abs=1e-3)


def test_oracle_evaluation_end_to_end(data, tmp_path):
    """True maps as 'network': small surface errors; the prior shift is off by exactly |prior - true mean|."""
    prior = true_mean_depth(data / "case_0001_p0") + 30.0
    m = run_evaluation(data, tmp_path / "eval", oracle_inputs=True, prior_centre_mm=prior)
    assert {"means", "per_sample", "prior_centre_mm", "notes"} <= set(m)
    assert m["variants"] == list(VARIANTS)
    rows = {(r["variant"], r["shift"], r["bone"]): r for r in m["means"]}
    assert len(m["per_sample"]) == len(VARIANTS) * len(SHIFTS) * 3
    for bone in ("pelvis", "femur_left", "femur_right", "all"):
        for shift in ("centre", "oracle"):
            assert rows[("dual_face", shift, bone)]["assd_mm"] < 3.0  # one CT voxel
            assert rows[("dual_face_ssm", shift, bone)]["assd_mm"] < 3.0
            assert rows[("dual_face", shift, bone)]["depth_mae_mm"] < 1e-3
            assert rows[("dual_face", shift, bone)]["dice"] == 1.0
        assert rows[("dual_face", "prior", bone)]["depth_mae_mm"] == pytest.approx(30.0, abs=0.05)
        assert rows[("dual_face", "prior", bone)]["assd_mm"] > 10.0
        # one face only: surfaces are open and half the bone is missing
        assert rows[("single_face", "oracle", bone)]["assd_mm"] > rows[("dual_face", "oracle", bone)]["assd_mm"]
    out = tmp_path / "eval"
    with open(out / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert set(table[0]) == {"sample", "case", "variant", "shift", "bone", *METRIC_KEYS}
    assert sum(r["sample"] == "mean" for r in table) == len(m["means"])
    assert {r["case"] for r in table if r["sample"] != "mean"} == {"case_0001"}
    summary = (out / "summary.md").read_text()
    assert "| dual_face_ssm | oracle | femur_left |" in summary and "ORACLE" in summary
    # one test subject: its per-subject row is the headline mean, and its interval is that one value
    subj = m["subjects"]
    assert (subj["variant"], subj["shift"]) == ("dual_face_ssm", "centre") and subj["poses"] == {"case_0001": 1}
    for bone in ("pelvis", "femur_left", "femur_right", "all"):
        assert subj["per_subject"]["case_0001"][bone] == pytest.approx(
            rows[("dual_face_ssm", "centre", bone)]["assd_mm"]
        )
        assert subj["ci95"][bone] == pytest.approx([subj["mean"][bone]] * 2)
    assert "| case_0001 | 1 |" in summary and "| mean (95% interval) | 1 |" in summary
    for png in ("assd_by_variant.png", "error_map_case_0001_p0.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def copy_dataset(data: Path, name: str, **lists: list[str]) -> Path:
    """A copy of the data set beside it (its mesh paths stay valid) named ``name``, whose datalist holds the given
    lists, each the original's samples of those cases (e.g. ``training=["case_0001"], test=[]``)."""
    copy = data.parent / name
    if not copy.exists():
        shutil.copytree(data, copy)
    entries = [e for listed in read_json(data / "datalist.json").values() for e in listed]
    write_json(
        copy / "datalist.json", {key: [e for e in entries if e["case"] in cases] for key, cases in lists.items()}
    )
    return copy


def test_several_data_sets_are_evaluated_together_with_their_samples_and_subjects_apart(data, tmp_path, capsys):
    """--dataset_dir as a list (as train.yaml takes it): the test lists of all sets evaluated together, each sample and
    subject named <set>.<name> so equal names in two sets stay two subjects; a set with no test sample is noted and left out.
    """
    own = copy_dataset(data, "sim_own", training=["case_0000"], validation=[], test=["case_0001"])
    empty = copy_dataset(data, "sim_train_only", training=["case_0000", "case_0001"], validation=[], test=[])
    kw = dict(oracle_inputs=True, prior_centre_mm=true_mean_depth(data / "case_0001_p0") + 30.0)
    one = run_evaluation(data, tmp_path / "one", **kw)
    both = run_evaluation([data, own, empty], tmp_path / "both", **kw)
    assert f"{empty}: no samples in its 'test' list; not evaluated" in both["notes"]
    assert both["n_samples"] == 2 and both["dataset_dirs"] == {
        "sim": str(data),
        "sim_own": str(own),
        "sim_train_only": str(empty),
    }
    assert {r["sample"] for r in both["per_sample"]} == {"sim.case_0001_p0", "sim_own.case_0001_p0"}
    single = {(r["variant"], r["shift"], r["bone"]): r for r in one["per_sample"]}
    for r in both["per_sample"]:  # the same sample in both sets: the single set's numbers
        set_name = r["sample"].split(".")[0]
        assert r["case"] == f"{set_name}.case_0001"
        for k in ("assd_mm", "depth_mae_mm", "dice"):
            assert r[k] == pytest.approx(single[(r["variant"], r["shift"], r["bone"])][k], abs=1e-6)
    subj = both["subjects"]
    assert subj["poses"] == {
        "sim.case_0001": 1,
        "sim_own.case_0001": 1,
    }  # two subjects of one pose each, not one of two
    for name in subj["poses"]:
        assert subj["per_subject"][name] == pytest.approx(one["subjects"]["per_subject"]["case_0001"])
    out = tmp_path / "both"
    with open(out / "metrics.csv") as f:
        assert {r["case"] for r in csv.DictReader(f) if r["sample"] != "mean"} == {"sim.case_0001", "sim_own.case_0001"}
    assert (
        "| sim.case_0001 | 1 |" in (out / "summary.md").read_text()
        and (out / "error_map_sim.case_0001_p0.png").is_file()
    )


def test_dataset_dir_values(data, tmp_path):
    """One folder keeps its sample names; several get their folder names as prefixes (with their positions when two
    share a name); anything else is one line naming --dataset_dir, also through the bundle workflow."""
    assert dataset_folders("a/sim") == dataset_folders(["a/sim"]) == {"": Path("a/sim")}
    assert dataset_folders([Path("a/sim"), "b/own"]) == {"sim.": Path("a/sim"), "own.": Path("b/own")}
    assert dataset_folders(["a/sim", "b/sim", "c/own"]) == {
        "1_sim.": Path("a/sim"),
        "2_sim.": Path("b/sim"),
        "3_own.": Path("c/own"),
    }
    for bad, problem in (
        (5, "expected a data set folder or a list of them"),
        ([], "expected"),
        (["a", 3], "expected"),
        ({"a": "b"}, "expected"),
        (["a", ""], "expected"),
        (["a/sim", "a/./sim"], "a/sim is listed twice"),
    ):
        with pytest.raises(InputFileError) as e:
            dataset_folders(bad)
        assert str(e.value).startswith("--dataset_dir: ") and problem in str(e.value)
    with pytest.raises(Exception) as e:
        run_bundle(
            "evaluate.yaml",
            dataset_dir=7,
            output_dir=str(tmp_path / "eval"),
            ssm_path=str(data.parent / "ssm.npz"),
            device="cpu",
        )
    assert (
        str(input_error_of(e.value))
        == "--dataset_dir: expected a data set folder or a list of them, e.g. \"['data/sim','data/sim_own']\"; got 7"
    )
    assert not (tmp_path / "eval").exists()


def test_a_folder_without_datalist_says_evaluation_needs_a_simulated_data_set(tmp_path, capsys):
    """--dataset_dir naming a folder of radiographs (no truth) said only '.../datalist.json: file not found': the line
    says evaluation needs a simulated data set and names the commands that make one and reconstruct radiographs."""
    radiographs = tmp_path / "real_radiographs"
    radiographs.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(radiographs / "hip.png")
    with pytest.raises(SystemExit) as e:
        run_evaluation(radiographs, tmp_path / "eval", oracle_inputs=True)
    assert e.value.code == 1
    assert error_lines(capsys.readouterr().err, "datalist.json") == [
        f"{radiographs / 'datalist.json'}: not found: evaluation's --dataset_dir is a simulated data set with truth "
        "(made by python -m scripts.simulate --out DIR: docs/simulation.md); radiographs without truth are "
        "reconstructed by configs/inference.yaml"
    ]
    assert not (tmp_path / "eval").exists() and [p.name for p in radiographs.iterdir()] == ["hip.png"]


def test_an_empty_split_says_which_lists_there_are_and_how_to_choose(data, tmp_path, capsys):
    """A user's one CT simulated into 'training': the test list is empty, and the line names every list with its
    samples and --split; --split training evaluates it. Without a training list the prior says to pass --prior_centre_mm.
    """
    own = copy_dataset(data, "sim_one_ct", training=["case_0001"], validation=[], test=[])
    with pytest.raises(SystemExit):
        run_evaluation(own, tmp_path / "refused", oracle_inputs=True)
    assert error_lines(capsys.readouterr().err, "datalist.json") == [
        f"{own / 'datalist.json'}: no samples in its 'test' list (its lists: training 1, validation 0, test 0); "
        "choose the list to evaluate with --split (e.g. --split training for a CT simulated into training)"
    ]
    assert not (tmp_path / "refused").exists()
    m = run_evaluation(own, tmp_path / "eval", oracle_inputs=True, split="training")
    assert m["split"] == "training" and {r["sample"] for r in m["per_sample"]} == {"case_0001_p0"}
    assert m["prior_centre_mm"]["dual_face"] == pytest.approx(true_mean_depth(data / "case_0001_p0"), abs=1e-3)
    assert "1 training samples" in (tmp_path / "eval" / "summary.md").read_text()
    test_only = copy_dataset(data, "sim_test_only", test=["case_0001"])
    remedy = "the prior centre depth is their mean depth: pass --prior_centre_mm MM"
    with pytest.raises(InputFileError) as e:
        prior_centre_depth(test_only)
    assert str(e.value).startswith(
        f"{test_only / 'datalist.json'}: no samples in its 'training' list (its lists: test 1); {remedy}"
    )
    with pytest.raises(InputFileError) as e:
        prior_centre_depth([test_only, copy_dataset(data, "sim_none", training=[], test=[])])
    assert str(e.value).startswith(
        f"--dataset_dir: no samples in the 'training' list of any data set ({test_only / 'datalist.json'}: test 1; "
        f"{data.parent / 'sim_none' / 'datalist.json'}: training 0, test 0); {remedy}"
    )


def test_subject_summary_by_hand():
    """Two subjects: per-subject means over poses by hand, "all" over bones and poses, a missing bone skipped; the
    bootstrap mean of two subjects takes only the values a, (a+b)/2 and b, so its 95% interval is [a, b]."""

    def row(case, pose, bone, assd, variant="dual_face_ssm", shift="centre"):
        return {
            "sample": f"{case}_p{pose}",
            "case": case,
            "variant": variant,
            "shift": shift,
            "bone": bone,
            "assd_mm": assd,
        }

    rows = [
        row("s1", 0, "pelvis", 1.0),
        row("s1", 1, "pelvis", 3.0),
        row("s1", 0, "femur_left", 4.0),
        row("s1", 1, "femur_left", float("nan")),
        row("s2", 0, "pelvis", 6.0),
        row("s2", 0, "femur_left", 8.0),
        row("s1", 0, "pelvis", 100.0, shift="oracle"),
        row("s2", 0, "pelvis", 100.0, variant="dual_face"),
    ]  # other variants: ignored
    got = subject_summary(rows)
    assert got["bones"] == ["pelvis", "femur_left", "all"] and got["poses"] == {"s1": 2, "s2": 1}
    assert got["per_subject"] == {
        "s1": {"pelvis": 2.0, "femur_left": 4.0, "all": pytest.approx(8.0 / 3)},
        "s2": {"pelvis": 6.0, "femur_left": 8.0, "all": 7.0},
    }
    assert got["mean"] == {"pelvis": 4.0, "femur_left": 6.0, "all": pytest.approx((8.0 / 3 + 7.0) / 2)}
    assert got["ci95"]["pelvis"] == [2.0, 6.0] and got["ci95"]["femur_left"] == [4.0, 8.0]
    assert subject_summary(rows, seed=5) == subject_summary(rows, seed=5)


def test_summarise_by_hand():
    """Mean, population std (ddof 0) and count per (variant, shift, bone) and "all", NaN skipped but counted in ``n``:
    pelvis ASSD 1 and 3 (mean 2, std 1), femur_left 4 and NaN (mean 4, std 0, one value), all 1, 3, 4 (mean 8/3,
    std sqrt(14) / 3); Dice 0.9, 0.7, 0.6, 0.6. A row of another shift is a group of its own, listed after."""

    def row(sample, bone, assd, dice, shift="centre"):
        return {
            "sample": sample,
            "case": "s",
            "variant": "dual_face",
            "shift": shift,
            "bone": bone,
            **{k: float("nan") for k in METRIC_KEYS},
            "assd_mm": assd,
            "dice": dice,
        }

    rows = [
        row("s_p0", "pelvis", 1.0, 0.9),
        row("s_p1", "pelvis", 3.0, 0.7),
        row("s_p0", "femur_left", 4.0, 0.6),
        row("s_p1", "femur_left", float("nan"), 0.6),
        row("s_p0", "pelvis", 100.0, 0.0, shift="oracle"),
    ]
    got = {(r["shift"], r["bone"]): r for r in summarise(rows)}
    assert list(got) == [
        ("centre", "pelvis"),
        ("centre", "femur_left"),
        ("centre", "all"),
        ("oracle", "pelvis"),
        ("oracle", "femur_left"),
        ("oracle", "all"),
    ]
    expected = {
        "pelvis": (2.0, 1.0, 2, 2, 0.8, 0.1),
        "femur_left": (4.0, 0.0, 1, 2, 0.6, 0.0),
        "all": (8.0 / 3, 14**0.5 / 3, 3, 4, 0.7, 0.015**0.5),
    }
    for bone, (mean, std, n, rows_n, dice, dice_std) in expected.items():
        r = got[("centre", bone)]
        assert (r["assd_mm"], r["assd_mm_std"], r["assd_mm_n"], r["n"]) == pytest.approx(
            (mean, std, n, rows_n), abs=1e-12
        )
        assert (r["dice"], r["dice_std"], r["dice_n"]) == pytest.approx((dice, dice_std, rows_n), abs=1e-12)
        assert np.isnan(r["hd95_mm"]) and np.isnan(r["hd95_mm_std"]) and r["hd95_mm_n"] == 0
    assert got[("oracle", "pelvis")]["assd_mm"] == 100.0 and got[("oracle", "femur_left")]["n"] == 0


def test_error_map_shows_a_known_offset_in_its_colour(tmp_path):
    """A 60 mm square 2 mm in front of a larger true square: every vertex error is 2 mm, so the AP view of the error
    map is that square in the colour viridis gives 2 mm on the map's scale (0 .. max_mm, default and 4 mm): a large
    patch of it, far more pixels than the colour bar's one level of that colour."""

    def square(z: float, half: float) -> trimesh.Trimesh:
        v = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]])
        return trimesh.Trimesh(v, [[0, 1, 2], [0, 2, 3]], process=False)

    mesh, truth = square(998.0, 30.0), square(1000.0, 50.0)
    errors = vertex_errors(mesh, truth)
    np.testing.assert_allclose(errors, 2.0, atol=1e-9)
    default_max = inspect.signature(save_error_map).parameters["max_mm"].default
    for max_mm in (None, 4.0):
        kwargs = {} if max_mm is None else {"max_mm": max_mm}
        save_error_map(tmp_path / "map.png", {"pelvis": mesh}, {"pelvis": errors}, **kwargs)
        picture = np.asarray(Image.open(tmp_path / "map.png").convert("RGB")).astype(int)
        colour = np.round(np.array(colormaps["viridis"](2.0 / (max_mm or default_max))[:3]) * 255)
        near = (np.abs(picture - colour) <= 2).all(-1)
        assert near.sum() > 20000, (max_mm, near.sum())


def test_mask_top_edge_by_hand():
    """Truth rows 10-19 over columns 5-14. Bone 0: the prediction 3 rows higher over columns 3-12 (shared 5-12): -3.
    Bone 1: prediction tops 8, 9, ..., 17 over columns 5-14 (differences -2..+7): median +2.5. Bone 2: no shared
    column: NaN."""
    truth = np.zeros((3, 32, 32), bool)
    truth[:, 10:20, 5:15] = True
    pred = np.zeros_like(truth)
    pred[0, 7:20, 3:13] = True
    for k, c in enumerate(range(5, 15)):
        pred[1, 8 + k : 20, c] = True
    pred[2, 10:20, 20:25] = True
    got = mask_top_edge_px(pred, truth, ("a", "b", "c"))
    assert got["a"] == -3.0 and got["b"] == 2.5 and np.isnan(got["c"])


def test_compare_evaluations_by_hand(tmp_path, capsys):
    """Paired by subject: a new evaluation 1 mm better on every subject differs by exactly -1 (interval [-1, -1]); with
    differences -1 and 0 on two subjects the interval is [-1, 0]. A metrics.json without ``case`` takes the subject
    from the sample name; subjects and radiographs only one evaluation has are left out."""

    def rows(values: dict[str, float], with_case: bool = True) -> list[dict]:
        return [
            {
                "sample": f"{c}_p{p}",
                **({"case": c} if with_case else {}),
                "variant": "dual_face_ssm",
                "shift": "centre",
                "bone": "pelvis",
                "assd_mm": v + p,
            }
            for c, v in values.items()
            for p in (0, 1)
        ]

    for name, values, with_case in (
        ("old", {"s1": 3.0, "s2": 5.0, "s9": 1.0}, False),
        ("new", {"s1": 2.0, "s2": 4.0}, True),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"per_sample": rows(values, with_case)}))
    old, new = subject_rows(tmp_path / "old" / "metrics.json"), subject_rows(tmp_path / "new" / "metrics.json")
    assert {r["case"] for r in old} == {"s1", "s2", "s9"}
    got = compare(old, new)["pelvis"]
    assert got["subjects"] == 2 and got["old"] == 4.5 and got["new"] == 3.5
    assert got["difference"] == -1.0 and got["ci95"] == [-1.0, -1.0]
    spread = compare(
        old, subject_rows(tmp_path / "new" / "metrics.json")[:2] + [{**r, "assd_mm": r["assd_mm"] + 1} for r in new[2:]]
    )["pelvis"]
    assert spread["difference"] == -0.5 and spread["ci95"] == [-1.0, 0.0]
    assert (
        main([str(tmp_path / "old"), str(tmp_path / "new")]) == 0
        and "| pelvis | 2 | 4.50 | 3.50 | -1.00 (-1.00 to -1.00) |" in capsys.readouterr().out
    )
    assert main([str(tmp_path / "old"), str(tmp_path)]) == 1 and "metrics.json" in capsys.readouterr().err
    # a third pose of s1 that only the new evaluation has is left out (its subject mean would be 2.67, not 2.5)
    more = rows({"s1": 2.0, "s2": 4.0}) + [{**rows({"s1": 2.0})[0], "sample": "s1_p2", "assd_mm": 3.0}]
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "metrics.json").write_text(json.dumps({"per_sample": more}))
    assert main([str(tmp_path / "old"), str(tmp_path / "more")]) == 0
    out = capsys.readouterr().out
    assert "paired on the 4 radiographs both evaluated; left out: 2 only in OLD, 1 only in NEW" in out
    assert "| pelvis | 2 | 4.50 | 3.50 | -1.00 (-1.00 to -1.00) |" in out


def test_network_evaluation_skips_missing_single_face(data, tmp_path, capsys):
    m = run_evaluation(
        data,
        tmp_path / "eval",
        ckpt_path=str(data.parent / "model.pt"),
        single_face_ckpt_path=str(tmp_path / "absent.pt"),
    )
    assert m["variants"] == ["dual_face", "dual_face_ssm"]
    assert any("single_face" in n and "absent.pt" in n for n in m["notes"])
    assert "absent.pt" in capsys.readouterr().err
    assert m["prior_centre_mm"]["dual_face"] == pytest.approx(true_mean_depth(data / "case_0000_p0"), abs=1e-3)
    samples = {e["image"] for e in load_datalist(data, "test")}
    assert (
        len(m["per_sample"]) == len(samples) * len(SHIFTS) * 3 * 2
    )  # every sample, shift, bone, for dual_face and its completion
    got = {(r["sample"], r["variant"], r["shift"], r["bone"]): r for r in m["per_sample"]}
    recon = build_reconstructor(
        ckpt_path=str(data.parent / "model.pt"), ssm_path=None, device="cpu", features=FEATURES, image_size=64
    )
    assert (
        sum(oracle_rows_by_hand(got, entry, data, "dual_face", recon, 64) for entry in load_datalist(data, "test")) >= 1
    )


def test_monai_eval_properties_are_the_workflows_own(data, tmp_path):
    """MONAI's inference-workflow properties of configs/evaluate.yaml (ConfigWorkflow "eval": none missing) are the
    objects the run uses: ``dataset`` the entries of ``--split`` it evaluates (here the training list), ``network_def``
    the module the checkpoint's weights are loaded into, ``inferer`` its network call; the data set is read on first
    use. ``--poses_per_case`` below 1 is one line."""
    ckpt = data.parent / "model.pt"
    wf = ConfigWorkflow(
        config_file=str(ROOT / "configs" / "evaluate.yaml"),
        meta_file=META,
        workflow_type="eval",
        dataset_dir=str(data),
        output_dir=str(tmp_path / "eval"),
        split="training",
        prior_centre_mm=950.0,
        ckpt_path=str(ckpt),
        single_face_ckpt_path=str(tmp_path / "absent.pt"),
        ssm_path=str(data.parent / "ssm.npz"),
        device="cpu",
        surface_spacing_mm=3.0,
        surface_max_samples=600,
        inference_overrides={"image_size": 64, "features": FEATURES, "ssm_fit": FAST_FIT},
    )
    wf.initialize()
    assert wf.check_properties() == []
    dual = wf.evaluator.dual_face
    assert wf.dataset is wf.evaluator.samples and wf.inferer is dual.inferer and wf.network_def is dual.network_def
    assert [(p, e["image"]) for p, e in wf.dataset] == [("", e["image"]) for e in load_datalist(data, "training")]
    wf.run()
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {r["sample"] for r in m["per_sample"]} == {Path(e["image"]).parent.name for _, e in wf.dataset}
    assert dual.network is wf.network_def
    for name, value in torch.load(ckpt, weights_only=True).items():
        torch.testing.assert_close(wf.network_def.state_dict()[name], value, rtol=0, atol=0)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InputFileError, match="^--poses_per_case: expected a whole number of poses, at least 1"):
            EvaluationRunner(dual, None, data, tmp_path / "never", poses_per_case=bad)
    assert not (tmp_path / "never").exists()
    # the data set is read when listed, not when the properties are checked: a folder not there yet passes the check
    absent = tmp_path / "absent"
    wf = ConfigWorkflow(
        config_file=str(ROOT / "configs" / "evaluate.yaml"),
        meta_file=META,
        workflow_type="infer",
        dataset_dir=str(absent),
        device="cpu",
    )
    wf.initialize()
    assert wf.check_properties() == []
    with pytest.raises(InputFileError, match=f"^{absent / 'datalist.json'}: "):
        wf.dataset[0]


@pytest.mark.parametrize(
    "option, bad, line",
    [
        ("prior_centre_mm", "abc", "--prior_centre_mm: must be a positive number (mm), got 'abc'"),
        ("prior_centre_mm", -5.0, "--prior_centre_mm: must be a positive number (mm), got -5.0"),
        ("prior_centre_mm", float("nan"), "--prior_centre_mm: must be a positive number (mm), got nan"),
        ("surface_spacing_mm", 0, "--surface_spacing_mm: must be a positive number (mm), got 0"),
        ("error_map_max_mm", True, "--error_map_max_mm: must be a positive number (mm), got True"),
        ("max_samples", 0, "--surface_max_samples: must be a whole number of at least 1, got 0"),
        ("workers", "abc", "--workers: must be a whole number of at least 1, got 'abc'"),
        ("workers", 0, "--workers: must be a whole number of at least 1, got 0"),
        ("output_dir", "", "--output_dir: must be a file or folder path, got ''"),
        ("output_dir", True, "--output_dir: must be a file or folder path, got True"),
    ],
)
def test_bad_lengths_and_counts_are_one_line_naming_the_option(data, tmp_path, option, bad, line):
    """--prior_centre_mm -5 ran a whole evaluation with a prior behind the source, --workers 0 ran with 1, text in
    either and an --output_dir left without its value (True) ended in a traceback: each is refused as the evaluator is
    built, before any work, in one line."""
    with pytest.raises(InputFileError) as e:
        EvaluationRunner(None, None, data, **{"output_dir": tmp_path / "never", option: bad})
    assert str(e.value) == line and not (tmp_path / "never").exists()
    assert EvaluationRunner(None, None, data, tmp_path / "never", prior_centre_mm="948.7").prior_centre_mm == 948.7
    nulls = EvaluationRunner(None, None, data, tmp_path / "never", prior_centre_mm="null", poses_per_case="None")
    assert nulls.prior_centre_mm is None and nulls.samples.poses_per_case is None  # the command line's null


@pytest.mark.parametrize(
    "overrides, line",
    [
        ({"inference_overrides": "abc"}, "--inference_overrides: must be a mapping of names to values, e.g. "),
        ({"single_face_overrides": "[64]"}, "--single_face_overrides: must be a mapping of names to values, e.g. "),
        ({"inference_overrides": {"imag_size": 64}}, "--inference_overrides: no such key in {config}: imag_size"),
        ({"single_face_overrides": {"feature": [4]}}, "--single_face_overrides: no such key in {config}: feature"),
        ({"inference_config": ""}, "--inference_config: must be a file or folder path, got ''"),
        ({"single_face_ckpt_path": ""}, "--single_face_ckpt_path: must be a file or folder path, got ''"),
        ({"inference_config": "{tmp}/nowhere.yaml"}, "{tmp}/nowhere.yaml: config file not found"),
    ],
)
def test_bad_inference_settings_of_the_evaluation_are_one_line(data, tmp_path, overrides, line):
    """--inference_overrides / --single_face_overrides that are no mapping (TypeError: 'str' object is not a mapping)
    or name a key inference.yaml lacks (silently unused), an --inference_config that is empty or no file (tracebacks):
    one line naming the option or file as the workflow is built, nothing written."""
    overrides = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in overrides.items()}
    with pytest.raises(Exception) as e:
        run_bundle(
            "evaluate.yaml", dataset_dir=str(data), output_dir=str(tmp_path / "never"), device="cpu", **overrides
        )
    config = Path(overrides.get("inference_config") or ROOT / "configs" / "inference.yaml")
    assert str(input_error_of(e.value)).startswith(line.format(tmp=tmp_path, config=config))
    assert not (tmp_path / "never").exists()


def test_a_missing_true_mesh_is_one_line_before_any_work(data, tmp_path, capsys):
    """A true mesh that a test entry lists but that is not there is named with its datalist, bone and sample when the
    samples are listed, before the networks load or any sample is evaluated (it was found when its subject came up)."""
    copy = copy_dataset(data, "sim_nomesh", training=["case_0000"], test=["case_0001"])
    datalist = read_json(copy / "datalist.json")
    (entry,) = datalist["test"]
    entry["meshes"]["femur_left"] = "gone/femur_left.ply"
    write_json(copy / "datalist.json", datalist)
    with pytest.raises(InputFileError) as e:
        EvaluationRunner(None, None, copy, tmp_path / "eval").samples[0]
    assert str(e.value) == (
        f"{copy / 'gone/femur_left.ply'}: listed in {copy / 'datalist.json'} (the femur_left mesh of "
        f"{Path(entry['image']).parent.name}) but missing"
    )
    with pytest.raises(SystemExit):  # the line about the mesh, not about the missing checkpoint loaded after it
        run_evaluation(copy, tmp_path / "eval", ckpt_path=str(tmp_path / "no_model.pt"), prior_centre_mm=950.0)
    err = capsys.readouterr().err
    assert error_lines(err, "gone/femur_left.ply") == [str(e.value)] and "no_model.pt" not in err
    assert not (tmp_path / "eval").exists()


def test_label_surface_fallback(tmp_path):
    """Marching cubes of a label sphere (radius 20 mm, 1 mm voxels, shifted affine) lands on the sphere in world mm."""
    grid = np.indices((50, 50, 50)).transpose(1, 2, 3, 0) - 24.5
    labels = (np.linalg.norm(grid, axis=-1) <= 20.0).astype(np.uint8) * 2  # femur_left
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [10.0, -5.0, 3.0]
    write_nifti(tmp_path / "labels.nii.gz", labels, affine)
    meshes = label_surfaces(tmp_path / "labels.nii.gz", ("pelvis", "femur_left"))
    assert list(meshes) == ["femur_left"]
    # the label map as sample.json gives it back (JSON: string ids) reads the same labels
    recorded = json.loads(json.dumps({7: 1, 2: 2}))
    again = label_surfaces(tmp_path / "labels.nii.gz", ("pelvis", "femur_left"), recorded)
    assert list(again) == ["femur_left"] and np.array_equal(again["femur_left"].vertices, meshes["femur_left"].vertices)
    mesh: trimesh.Trimesh = meshes["femur_left"]
    r = np.linalg.norm(mesh.vertices - (np.array([24.5, 24.5, 24.5]) + affine[:3, 3]), axis=1)
    assert abs(r.mean() - 20.0) < 0.7 and mesh.is_watertight and mesh.volume > 0


def test_truth_from_labels_recorded_relative_to_the_data_set(tmp_path, monkeypatch):
    """A sample without meshes takes its truth from the labels its sample.json names: relative to the data set (as
    the simulator records them), found after data set and cohort moved together and from another working folder; an
    absolute path (as earlier bundles recorded it) is still read; the same relative path from the working folder is not
    taken instead."""
    grid = np.indices((50, 50, 50)).transpose(1, 2, 3, 0) - 24.5
    labels = (np.linalg.norm(grid, axis=-1) <= 20.0).astype(np.uint8) * 2  # femur_left, centre at RAS (24.5, ...)
    root = tmp_path / "before"
    write_nifti(root / "cohort" / "labels.nii.gz", labels, np.eye(4))
    sample = root / "sim" / "ct_p0"
    sample.mkdir(parents=True)
    geometry = read_standard_geometry()[0]
    (sample / "sample.json").write_text(json.dumps({"labels": "../cohort/labels.nii.gz", "label_map": None}))
    moved = tmp_path / "after"
    root.rename(moved)
    decoy = tmp_path / "other" / "cohort" / "labels.nii.gz"  # the same relative path from the working folder
    write_nifti(decoy, labels // 2, np.eye(4))  # a pelvis
    (tmp_path / "other" / "run").mkdir()
    monkeypatch.chdir(tmp_path / "other" / "run")
    centre = geometry.world_to_camera_points(np.full((1, 3), 24.5))[0]
    for recorded in ("../cohort/labels.nii.gz", str(moved / "cohort" / "labels.nii.gz")):
        (moved / "sim" / "ct_p0" / "sample.json").write_text(json.dumps({"labels": recorded, "label_map": None}))
        entry = {"geometry": str(moved / "sim" / "ct_p0" / "geometry.json")}
        meshes = truth_meshes(entry, moved / "sim", geometry)
        assert list(meshes) == ["femur_left"]
        r = np.linalg.norm(meshes["femur_left"].vertices - centre, axis=1)
        assert abs(r.mean() - 20.0) < 0.7


def straightforward_metrics(
    mesh: trimesh.Trimesh, truth: trimesh.Trimesh, planes: list, spacing_mm: float, max_samples: int
) -> dict[str, float]:
    """The metrics of one pair computed on their own: both meshes clipped (cone and CT box) and sampled (seeds 0 and 1,
    as documented), each sample's distance to the other surface by trimesh's exact closest point (not the bundle's index).
    """
    a, b = clip_to_planes(mesh, planes), clip_to_planes(truth, planes)
    pa, pb = sample_surface(a, spacing_mm, max_samples, 0), sample_surface(b, spacing_mm, max_samples, 1)
    if len(pa) == 0 or len(pb) == 0:
        return {k: float("nan") for k in ("assd_mm", "hd95_mm", "hd_mm", "chamfer_mm")}
    da, db = trimesh.proximity.closest_point(b, pa)[1], trimesh.proximity.closest_point(a, pb)[1]
    return {
        "assd_mm": (da.sum() + db.sum()) / (len(da) + len(db)),
        "hd95_mm": max(np.percentile(da, 95), np.percentile(db, 95)),
        "hd_mm": max(da.max(), db.max()),
        "chamfer_mm": (da.mean() + db.mean()) / 2,
    }


def test_parallel_evaluation_matches_the_straightforward_path(data, tmp_path):
    """Two worker processes, each true surface clipped, sampled and indexed once per sample, true meshes read once per
    subject: every surface number equals (to 0.01 mm) the straightforward path, which reconstructs each variant and
    shift and measures every surface pair on its own."""
    both = data.parent / "sim_both"  # both cases in the test split (two subjects: one per worker)
    both.mkdir(exist_ok=True)
    datalist = json.loads((data / "datalist.json").read_text())
    entries = [
        {**e, **{k: f"../sim/{e[k]}" for k in ("image", "depth", "mask", "geometry", "fov") if k in e}}
        for split in datalist.values()
        for e in split
    ]
    (both / "datalist.json").write_text(json.dumps({"training": entries[:1], "validation": [], "test": entries}))
    tiny_checkpoint(data.parent / "single_face.pt", seed=2, faces=1)
    spacing, max_samples, prior = 3.0, 600, 960.0
    m = run_evaluation(
        both,
        tmp_path / "eval",
        workers=2,
        ckpt_path=str(data.parent / "model.pt"),
        single_face_ckpt_path=str(data.parent / "single_face.pt"),
        prior_centre_mm=prior,
    )
    assert m["variants"] == list(VARIANTS) and m["n_samples"] == 2
    got = {(r["sample"], r["variant"], r["shift"], r["bone"]): r for r in m["per_sample"]}
    assert len(got) == 2 * len(VARIANTS) * len(SHIFTS) * 3

    common = {
        "ssm_path": str(data.parent / "ssm.npz"),
        "device": "cpu",
        "image_size": 64,
        "features": FEATURES,
        "ssm_fit": FAST_FIT,
    }
    nets = {
        "dual_face": build_reconstructor(ckpt_path=str(data.parent / "model.pt"), **common).load(),
        "single_face": build_reconstructor(ckpt_path=str(data.parent / "single_face.pt"), faces=1, **common).load(),
    }
    compared = 0
    for entry in load_datalist(both, "test"):
        sample = load_sample(entry, both, (64, 64), nets["dual_face"].bones)
        assert sample.extent_planes  # the simulator records the CT's box
        for network, recon in nets.items():
            pred = recon.predict(sample.image, sample.geometry, sample.fov)
            valid = true_face_mask(sample.depth, sample.mask, pred.faces)
            oracle = float((sample.depth if pred.faces == 2 else sample.depth[0::2])[valid].mean())
            for shift, centre, weights in (
                ("centre", pred.centre_mm, None),
                ("prior", prior, None),
                ("oracle", oracle, valid),
            ):
                rec = nets["dual_face"].reconstruct(pred, centre, weights)
                for variant, meshes in ((network, rec.surfaces), (f"{network}_ssm", rec.completed)):
                    for bone, truth in sample.meshes.items():
                        row = got[(sample.name, variant, shift, bone)]
                        if bone not in meshes:
                            assert row["assd_mm"] is None  # no surface: null in metrics.json (strict JSON has no NaN)
                            continue
                        planes = [
                            *(sample.field or sample.geometry).field_of_view_planes(),
                            *(sample.extent_planes or ()),
                        ]
                        expected = straightforward_metrics(meshes[bone], truth, planes, spacing, max_samples)
                        for key, value in expected.items():
                            if np.isnan(value):  # nothing of the surface inside the field: null as well
                                assert row[key] is None, (sample.name, variant, shift, bone, key)
                            else:
                                assert row[key] == pytest.approx(value, abs=0.01), (
                                    sample.name,
                                    variant,
                                    shift,
                                    bone,
                                    key,
                                )
                        compared += not np.isnan(expected["assd_mm"])
    assert compared >= 2 * 2 * 3 * 3  # at least the completions of every bone, network, shift and sample


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_counts_each_sample_as_it_is_finished(data, tmp_path, monkeypatch, workers):
    """The bar counts radiographs: one step per sample as it is finished, in this process and from the worker
    processes (a subject, all its poses, is one task), never a subject's poses at once at its end (a real test subject
    has 10 poses: the bar sat at 0 for minutes). Here subject case_0001 has two poses, case_0000 one."""
    from scripts.io import progress

    two_poses = data.parent / "sim_two_poses"
    if not two_poses.exists():
        shutil.copytree(data, two_poses)
        shutil.copytree(two_poses / "case_0001_p0", two_poses / "case_0001_p1")
        entries = {e["case"]: e for listed in read_json(data / "datalist.json").values() for e in listed}
        second = {**json.loads(json.dumps(entries["case_0001"]).replace("case_0001_p0/", "case_0001_p1/")), "pose": 1}
        write_json(two_poses / "datalist.json", {"test": [entries["case_0001"], second, entries["case_0000"]]})
    steps: list[int] = []

    class Recording(progress.tqdm):  # the bar of scripts.io.progress.progress
        def update(self, n=1):
            if self.desc.startswith("evaluate"):
                steps.append(n)
            return super().update(n)

    monkeypatch.setattr(progress, "tqdm", Recording)
    m = run_evaluation(two_poses, tmp_path / "eval", oracle_inputs=True, prior_centre_mm=960.0, workers=workers)
    assert m["n_samples"] == 3 and m["subjects"]["poses"] == {"case_0001": 2, "case_0000": 1}
    assert steps == [1, 1, 1]


@pytest.mark.parametrize("stage", ["subject", "prior"])
def test_a_worker_that_dies_stops_the_run_in_one_line(data, tmp_path, monkeypatch, capsys, stage):
    """A worker process killed (for memory) while evaluating a subject, or reading the training depths for the prior:
    multiprocessing.Pool replaced it and waited for ever for its task. The run stops in one line naming --workers and
    the subject, exit 1, nothing written. The workers die here by os._exit (forked: they inherit the patch)."""
    from scripts.reconstruction import evaluate

    parent = os.getpid()

    def dies_in_a_worker(real):
        def call(*args, **kwargs):
            if os.getpid() != parent:
                os._exit(3)
            return real(*args, **kwargs)

        return call

    if stage == "subject":
        monkeypatch.setattr(
            evaluate.EvaluationRunner, "evaluate_entries", dies_in_a_worker(evaluate.EvaluationRunner.evaluate_entries)
        )
        where, prior = "subject case_0001", {"prior_centre_mm": 960.0}
    else:
        monkeypatch.setattr(evaluate, "read_depth_and_mask", dies_in_a_worker(evaluate.read_depth_and_mask))
        where, prior = "the training split's depths (the prior)", {}

    def hung(*_):
        raise TimeoutError("the evaluation waits for a dead worker")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        with pytest.raises(SystemExit) as e:
            run_evaluation(data, tmp_path / "eval", oracle_inputs=True, workers=2, **prior)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert e.value.code == 1
    assert error_lines(capsys.readouterr().err, "--workers") == [
        f"--workers: a worker process died (killed, e.g. out of memory) while evaluating {where}; nothing was "
        "written: rerun with fewer --workers"
    ]
    assert not (tmp_path / "eval").exists() and not multiprocessing.active_children()


def block_averaged_truth(entry: dict, size: int, bones: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """True depth (2B, size, size) mm and masks (B, size, size) of a datalist entry read with nibabel, channels in
    ``bones`` order; k x k pixel blocks averaged when ``size`` is 1/k of the sample's: a block is in a mask when at
    least half of it was, its depth is the mean of its valid (> 0) depths."""
    depth, mask = read_depth_and_mask(entry["depth"], entry["mask"])
    depth = depth.astype(np.float64)
    order = [json.loads(Path(entry["geometry"]).read_text())["bones"].index(b) for b in bones]
    depth, mask = depth[[2 * i + face for i in order for face in (0, 1)]], mask[order]
    k = depth.shape[-1] // size
    if k == 1:
        return depth, mask
    blocks = lambda a: a.reshape(a.shape[0], size, k, size, k).sum(axis=(2, 4))  # noqa: E731
    valid = depth > 0
    mask = blocks(mask) >= k * k / 2
    keep = np.repeat(mask, 2, axis=0) & (blocks(valid) > 0)
    return np.where(keep, blocks(depth * valid) / np.maximum(blocks(valid), 1), 0.0), mask


def oracle_rows_by_hand(rows: dict, entry: dict, data: Path, network: str, recon, size: int) -> int:
    """Assert ``network``'s oracle-shift rows of one test entry (``rows`` keyed (sample, variant, shift, bone)): Dice
    of the predicted masks and depth MAE (mm) of its maps shifted to the true mean depth, against
    :func:`block_averaged_truth` at the network's ``size``. Returns the number of bones whose depth MAE was compared."""
    sample = load_sample(entry, data, (size, size), recon.bones)  # the network's input only
    pred = recon.predict(sample.image, sample.geometry, sample.fov)
    assert pred.mask.shape[-2:] == (size, size)
    depth, mask = block_averaged_truth(entry, size, recon.bones)
    true_depth = depth if pred.faces == 2 else depth[0::2]
    valid = np.repeat(mask, pred.faces, axis=0) & (true_depth > 0)
    shifted = pred.depth + (true_depth[valid].mean() - pred.depth[valid].mean())  # oracle shift: equal mean depths
    checked = 0
    for b, bone in enumerate(recon.bones):
        row = rows[(sample.name, network, "oracle", bone)]
        p, t = pred.mask[b], mask[b]
        assert row["dice"] == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()) if p.sum() + t.sum() else 1.0)
        ch = valid[pred.faces * b : pred.faces * (b + 1)]
        if ch.any():
            err = np.abs(
                shifted[pred.faces * b : pred.faces * (b + 1)] - true_depth[pred.faces * b : pred.faces * (b + 1)]
            )[ch]
            assert row["depth_mae_mm"] == pytest.approx(err.mean(), rel=1e-4)
            checked += 1
    return checked


def test_networks_of_different_sizes_are_each_scored_at_their_own(data, tmp_path):
    """A single-face baseline trained at another size (single_face_overrides) is evaluated against truth resampled
    to its size, the dual-face network against truth at its own: Dice and depth MAE as computed by hand."""
    tiny_checkpoint(data.parent / "single_32.pt", seed=3, faces=1)
    m = run_evaluation(
        data,
        tmp_path / "eval",
        ckpt_path=str(data.parent / "model.pt"),
        single_face_ckpt_path=str(data.parent / "single_32.pt"),
        single_face_overrides={"image_size": 32},
    )
    got = {(r["sample"], r["variant"], r["shift"], r["bone"]): r for r in m["per_sample"]}
    common = {"ssm_path": None, "device": "cpu", "features": FEATURES}
    nets = {
        "dual_face": (64, build_reconstructor(ckpt_path=str(data.parent / "model.pt"), image_size=64, **common)),
        "single_face": (
            32,
            build_reconstructor(ckpt_path=str(data.parent / "single_32.pt"), faces=1, image_size=32, **common),
        ),
    }
    checked = sum(
        oracle_rows_by_hand(got, entry, data, network, recon, size)
        for entry in load_datalist(data, "test")
        for network, (size, recon) in nets.items()
    )
    assert checked >= 2


def test_depth_error_parts_hand_computed():
    """benchmarks/bench_depth_offsets.error_parts: constant offsets per channel on a hand-made truth."""
    from benchmarks.bench_depth_offsets import error_parts

    depth = np.zeros((4, 10, 8))
    mask = np.zeros((2, 10, 8), bool)
    mask[0, :, :4] = True  # bone 0: 40 pixels per face
    mask[1, :, 4:] = True  # bone 1: 40 pixels per face
    depth[0:2] = np.where(mask[0], [[900.0]], 0)
    depth[1] += mask[0] * 20.0
    depth[2:4] = np.where(mask[1], [[950.0]], 0)
    depth[3] += mask[1] * 30.0
    offsets = np.array([1.0, 3.0, -2.0, 6.0])  # bone 0 faces: +1, +3; bone 1: -2, +6 -> radiograph mean +2
    pred = depth + offsets[:, None, None] * np.repeat(mask, 2, axis=0)
    pred[2, :5] += 4.0  # bone 1 front: its top half 4 mm further (a tilt): mean offset -2 + 2 = 0
    parts = error_parts(pred, mask, depth, mask)
    assert parts["mae"]["face"] == pytest.approx((0 + 0 + 2 + 0) / 4)  # tilted face: |+-2| about its own mean
    # per bone: bone 0 errors 1 and 3 about 2 -> 1, 1; bone 1 errors (2, -2) front and 6 back about 3 -> 3, 3
    assert parts["mae"]["bone"] == pytest.approx((1 + 1 + 3 + 3) / 4)
    # one shift: mean error (40*1 + 40*3 + 20*2 + 20*-2 + 40*6) / 160 = 2.5
    assert parts["mae"]["radiograph"] == pytest.approx((1.5 + 0.5 + 2.5 + 3.5) / 4)
    np.testing.assert_allclose(parts["offset"], [-1.5, 0.5, -2.5, 3.5])
    # head: the top 30% of rows 0..9 (rows 0-2), error +2; rest: rows 3-4 at +2, rows 5-9 at -2; about 2.5
    assert parts["head"][2] == pytest.approx(2 - 2.5)
    assert parts["rest"][2] == pytest.approx((2 * 2 - 5 * 2) / 7 - 2.5)
    assert parts["head"][0] == pytest.approx(-1.5) and parts["rest"][0] == pytest.approx(-1.5)  # no tilt


def test_surface_error_parts_undo_a_known_pose_error():
    """benchmarks/bench_surface_error_sources.bone_parts: a completion that is the truth turned 6 degrees about x
    at its joint and shifted takes each correction back to the hand-computed surface."""
    from benchmarks.bench_surface_error_sources import about_x, bone_parts, turned

    rng = np.random.default_rng(0)
    truth = rng.normal(0.0, 1.0, (400, 3)) * [20.0, 25.0, 150.0] + [80.0, 0.0, -120.0]  # a femur-sized cloud
    joint, shift = np.array([82.0, 0.0, 0.0]), np.array([1.0, -2.0, 7.0])
    pred = turned(truth, about_x(6.0), joint) + shift
    seen = truth[:, 2] > -200.0  # the part in view
    parts = bone_parts(pred, truth, seen, joint + shift)
    assert parts["turn_deg"] == pytest.approx(-6.0)  # the turn that takes the completion back
    np.testing.assert_allclose(parts["rigid"], truth, atol=1e-9)  # rigid pose set right: no shape error left
    np.testing.assert_allclose(parts["angle"], truth + shift, atol=1e-9)  # angle taken out about the moved joint
    np.testing.assert_allclose(parts["translation"][seen].mean(0), truth[seen].mean(0), atol=1e-9)
    np.testing.assert_allclose(parts["estimated"], pred)


def test_single_face_overrides_reach_its_reconstruction_and_the_output_folder_is_kept_safe(data, tmp_path):
    """single_face_overrides that only the reconstruction reads (min_pixels) apply to the baseline, not the dual-face
    network; a folder the bundle did not write is refused before any work, an earlier evaluation is replaced."""
    torch.manual_seed(4)
    single = DualFaceDepthNet(features=FEATURES, faces=1)
    with torch.no_grad():
        single.final_conv.bias[3:6] = 5.0  # mask logits: every pixel of every bone, so each bone has a surface
    torch.save(single.state_dict(), data.parent / "single_64.pt")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.md").write_text("my notes")
    with pytest.raises(Exception) as e:
        run_evaluation(data, mine, ckpt_path=str(data.parent / "model.pt"))
    assert "was not written by this bundle" in str(input_error_of(e.value))
    assert [p.name for p in mine.iterdir()] == ["summary.md"] and (mine / "summary.md").read_text() == "my notes"
    kw = dict(ckpt_path=str(data.parent / "model.pt"), single_face_ckpt_path=str(data.parent / "single_64.pt"))
    first = run_evaluation(data, tmp_path / "eval", **kw)
    m = run_evaluation(data, tmp_path / "eval", single_face_overrides={"min_pixels": 10**6}, **kw)  # replaces the first
    assert (tmp_path / "eval" / OUTPUT_MARKER).exists() and not list(tmp_path.glob(".eval.*"))
    for run, single_found in ((first, True), (m, False)):
        found = {
            v: any(r["assd_mm"] is not None for r in run["per_sample"] if r["variant"] == v)
            for v in ("single_face", "dual_face")
        }
        assert found == {"single_face": single_found, "dual_face": True}


def test_torchscript_checkpoint_only_when_asked_and_scored_as_its_state_dict(data, tmp_path, capsys):
    """``--torchscript true`` (a config key of evaluate.yaml, as of inference.yaml) lets evaluation load a TorchScript
    archive; without it the archive is refused with one line. The archive of the tiny network scores as its state dict.
    """
    net = DualFaceDepthNet(features=FEATURES)
    net.load_state_dict(torch.load(data.parent / "model.pt", weights_only=True))
    ts = tmp_path / "model.ts"
    torch.jit.script(net.eval()).save(str(ts))
    kw = dict(single_face_ckpt_path=str(tmp_path / "absent.pt"), poses_per_case=1)
    with pytest.raises(SystemExit):
        run_evaluation(data, tmp_path / "refused", ckpt_path=str(ts), **kw)
    assert f"{ts}: is a TorchScript archive (code, not data): not loaded" in capsys.readouterr().err
    scripted = run_evaluation(data, tmp_path / "ts", ckpt_path=str(ts), torchscript=True, **kw)
    plain = run_evaluation(data, tmp_path / "sd", ckpt_path=str(data.parent / "model.pt"), **kw)
    for a, b in zip(scripted["per_sample"], plain["per_sample"], strict=True):
        assert (a["variant"], a["bone"], a["shift"]) == (b["variant"], b["bone"], b["shift"])
        assert a["dice"] == pytest.approx(b["dice"], abs=1e-6)
        assert (a["assd_mm"] is None) == (b["assd_mm"] is None)
        assert a["assd_mm"] is None or a["assd_mm"] == pytest.approx(b["assd_mm"], abs=1e-3)
