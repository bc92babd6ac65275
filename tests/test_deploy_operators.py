"""Deploy app logic with a fake inference callable: loading, inference contract, STL + DICOM outputs, PHI-free names."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pydicom
import pytest
import trimesh

from deploy.app.pipeline import load_cases, run, run_inference, write_case
from scripts.dicom_export import read_encapsulated_stl
from scripts.geometry import Geometry
from tests.test_radiograph_io import STD, make_dicom, ramp


def fake_infer(image: np.ndarray, geometry: Geometry) -> dict:
    """A sphere per bone whose radius encodes the image mean, so outputs can be traced to inputs."""
    assert image.shape == (geometry.height, geometry.width)
    r = 5.0 + float(image.mean()) / 100.0
    return {b: trimesh.creation.icosphere(1, radius=r + i).apply_translation([0, 0, 900.0]) for i, b in enumerate(geometry.bones)}


@pytest.fixture()
def dicom_dir(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    src = make_dicom(d / "Doe_Jane_19650101.dcm", ramp())
    make_dicom(d / "ct_slice.dcm", ramp(), modality="CT")
    return d, src


def test_run_writes_stl_and_dicom_per_bone(dicom_dir, tmp_path, capsys):
    d, src = dicom_dir
    rc = run(d, tmp_path / "out", fake_infer, STD)
    assert rc == 1  # the CT slice was refused, the radiograph still processed
    assert "ct_slice.dcm: modality CT" in capsys.readouterr().err
    (case_dir,) = list((tmp_path / "out").iterdir())
    assert case_dir.name.startswith("rg_") and "Doe" not in case_dir.name
    files = sorted(p.name for p in case_dir.iterdir())
    assert files == sorted([f"{b}.{e}" for b in STD.bones for e in ("stl", "dcm")] + ["result.json"])
    result = (case_dir / "result.json").read_text()
    assert "Doe" not in result and "MRN" not in result and "19650101" not in result
    assert json.loads(result)["input_format"] == "dicom"
    expected_r = 5.0 + float(load_cases(d, STD)[0][0].image.mean()) / 100.0
    series = set()
    for i, bone in enumerate(STD.bones):
        ds = pydicom.dcmread(str(case_dir / f"{bone}.dcm"))
        assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.PatientID == src.PatientID
        series.add(ds.SeriesInstanceUID)
        stl = trimesh.load(str(case_dir / f"{bone}.stl"))
        for m in (stl, read_encapsulated_stl(ds)):
            radius = np.linalg.norm(m.vertices - [0, 0, 900.0], axis=1).max()
            assert radius == pytest.approx(expected_r + i, rel=1e-4)
    assert len(series) == 1  # one new series per reconstruction


def test_inference_contract_checked(dicom_dir):
    d, _ = dicom_dir
    cases, errors = load_cases(d, STD)
    assert len(cases) == 1 and len(errors) == 1
    with pytest.raises(ValueError, match="unknown bone"):
        run_inference(cases[0], lambda im, g: {"skull": trimesh.creation.box()})
    with pytest.raises(TypeError):
        run_inference(cases[0], lambda im, g: [trimesh.creation.box()])
    partial = run_inference(cases[0], lambda im, g: {"pelvis": trimesh.creation.box(), "femur_left": trimesh.Trimesh()})
    assert list(partial) == ["pelvis"]  # empty meshes dropped


def test_failed_write_leaves_no_case_folder(dicom_dir, tmp_path):
    d, _ = dicom_dir
    case = load_cases(d, STD)[0][0]
    bad = {"pelvis": trimesh.creation.box(), "femur_left": "not a mesh"}
    with pytest.raises(Exception):
        write_case(case, bad, tmp_path / "out")
    assert not (tmp_path / "out" / case.name).exists()
    assert [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")] == []


@pytest.mark.skipif(importlib.util.find_spec("holoscan") is not None, reason="plain-Python path only without the SDK")
def test_main_plain_cli(dicom_dir, tmp_path, monkeypatch):
    import deploy.app.__main__ as app_main

    d, _ = dicom_dir
    (d / "ct_slice.dcm").unlink()
    monkeypatch.setattr(app_main, "reconstruct_image_adapter", lambda model, device: fake_infer)
    geometry_file = tmp_path / "geometry.json"
    STD.save(geometry_file)
    rc = app_main.main(["app", "-i", str(d), "-o", str(tmp_path / "out"), "-m", "models/model.ts", "--geometry", str(geometry_file)])
    assert rc == 0 and len(list((tmp_path / "out").iterdir())) == 1
