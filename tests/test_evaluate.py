"""Evaluation workflow on the tiny phantom data set of tests/test_reconstruct.py (2 cases, 64x64)."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import trimesh

from scripts.evaluate import METRIC_KEYS, SHIFTS, VARIANTS, label_surfaces, prior_centre_depth
from scripts.files import write_nifti
from tests.helpers import make_dataset, run_evaluation


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("evaluate"))


def true_mean_depth(sample_dir: Path, faces: int = 2) -> float:
    depth = nib.load(str(sample_dir / "depth.nii.gz")).get_fdata()
    mask = nib.load(str(sample_dir / "mask.nii.gz")).get_fdata() > 0
    if faces == 1:
        depth = depth[..., 0::2]
    valid = np.repeat(mask, faces, axis=-1) & (depth > 0)
    return float(depth[valid].mean())


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
    assert set(table[0]) == {"sample", "variant", "shift", "bone", *METRIC_KEYS}
    assert sum(r["sample"] == "mean" for r in table) == len(m["means"])
    summary = (out / "summary.md").read_text()
    assert "| dual_face_ssm | oracle | femur_left |" in summary and "ORACLE" in summary
    for png in ("assd_by_variant.png", "error_map_case_0001_p0.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_network_evaluation_skips_missing_single_face(data, tmp_path, capsys):
    m = run_evaluation(data, tmp_path / "eval", ckpt_path=str(data.parent / "model.pt"), single_face_ckpt_path=str(tmp_path / "absent.pt"))
    assert m["variants"] == ["dual_face", "dual_face_ssm"]
    assert any("single_face" in n and "absent.pt" in n for n in m["notes"])
    assert "absent.pt" in capsys.readouterr().err
    assert m["prior_centre_mm"]["dual_face"] == pytest.approx(true_mean_depth(data / "case_0000_p0"), abs=1e-3)
    for r in m["per_sample"]:
        assert 0.0 <= r["dice"] <= 1.0
        if r["variant"] == "dual_face" and np.isfinite(r["assd_mm"]):
            assert r["assd_mm"] >= 0 and r["hd95_mm"] >= r["assd_mm"] * 0.5


def test_label_surface_fallback(tmp_path):
    """Marching cubes of a label sphere (radius 20 mm, 1 mm voxels, shifted affine) lands on the sphere in world mm."""
    grid = np.indices((50, 50, 50)).transpose(1, 2, 3, 0) - 24.5
    labels = (np.linalg.norm(grid, axis=-1) <= 20.0).astype(np.uint8) * 2  # femur_left
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [10.0, -5.0, 3.0]
    write_nifti(tmp_path / "labels.nii.gz", labels, affine)
    meshes = label_surfaces(tmp_path / "labels.nii.gz", ("pelvis", "femur_left"))
    assert list(meshes) == ["femur_left"]
    mesh: trimesh.Trimesh = meshes["femur_left"]
    r = np.linalg.norm(mesh.vertices - (np.array([24.5, 24.5, 24.5]) + affine[:3, 3]), axis=1)
    assert abs(r.mean() - 20.0) < 0.7 and mesh.is_watertight and mesh.volume > 0
