"""Deploy app logic with a fake inference callable: loading, inference contract, STL + DICOM outputs, PHI-free names."""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pydicom
import pytest
import torch
import trimesh
from deploy.app.pipeline import load_cases, model_file, reconstruct_cases, run, run_inference, write_case, write_results
from deploy.stage import stage_app
from PIL import Image
from pydicom.uid import BasicTextSRStorage
from scripts.geometry import Geometry
from scripts.io.dicom_export import bundle_version
from scripts.io.files import OUTPUT_MARKER, InputFileError
from tests.helpers import (
    ROOT,
    STD,
    config_copy,
    make_dicom,
    make_non_image,
    ramp,
    read_encapsulated_stl,
    sphere_model_file,
    sphere_shape_model_file,
    write_training_record,
)


def fake_infer(image: np.ndarray, geometry: Geometry, fov: np.ndarray | None = None) -> dict:
    """A sphere per bone whose radius encodes the image mean, so outputs can be traced to inputs; bone i's sphere is
    centred at (100 i, 50 i, 900) mm in the camera frame (i x 100 mm to the patient's left, i x 50 mm inferior)."""
    assert image.shape == (geometry.height, geometry.width) and (fov is None or fov.shape == image.shape)
    r = 5.0 + float(image.mean()) / 100.0
    return {
        b: trimesh.creation.icosphere(1, radius=r + i).apply_translation([100.0 * i, 50.0 * i, 900.0])
        for i, b in enumerate(geometry.bones)
    }


def failing_second(error: Exception):
    """An inference callable like :func:`fake_infer` that raises ``error`` on its second call."""
    calls = []

    def infer(image: np.ndarray, geometry: Geometry, fov: np.ndarray | None = None) -> dict:
        calls.append(1)
        if len(calls) == 2:
            raise error
        return fake_infer(image, geometry, fov)

    return infer


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
    assert files == sorted([f"{b}.{e}" for b in STD.bones for e in ("stl", "dcm")] + ["result.json", OUTPUT_MARKER])
    result = (case_dir / "result.json").read_text()
    assert "Doe" not in result and "MRN" not in result and "19650101" not in result
    assert json.loads(result)["input_format"] == "dicom"
    assert json.loads(result)["mesh_frame"].startswith("patient LPS (mm)")  # patient_frame not to be applied again
    expected_r = 5.0 + float(np.mean(ramp(), dtype=np.float64)) / 100.0  # fake_infer's radius from the pixels written
    series = set()
    for i, bone in enumerate(STD.bones):
        ds = pydicom.dcmread(str(case_dir / f"{bone}.dcm"))
        assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.PatientID == src.PatientID
        assert (
            ds.SoftwareVersions
            == json.loads((ROOT / "configs" / "metadata.json").read_text())["version"]
            == bundle_version()
        )
        series.add((ds.SeriesInstanceUID, ds.FrameOfReferenceUID))
        stl = trimesh.load(str(case_dir / f"{bone}.stl"))
        for m in (stl, read_encapsulated_stl(ds)):  # patient LPS: 100 i mm left, 900 mm posterior, 50 i mm inferior
            radius = np.linalg.norm(m.vertices - [100.0 * i, 900.0, -50.0 * i], axis=1).max()
            assert radius == pytest.approx(expected_r + i, rel=1e-4)
            assert m.volume > 0  # a rotation: the faces still face outward
    assert len(series) == 1  # one new series per reconstruction, in one Frame of Reference


def test_objects_without_an_image_and_copies_are_skipped_not_failed(tmp_path, capsys):
    """A study export with a structured report and a second copy of its radiograph: the radiograph reconstructed, the
    other two named on stderr as skipped, exit 0; a folder holding only a report: no radiographs, exit 1."""
    d = tmp_path / "in"
    d.mkdir()
    make_dicom(d / "hip.dcm", ramp()).save_as(str(d / "hip_copy.dcm"), enforce_file_format=True)
    make_non_image(d / "report.dcm", BasicTextSRStorage, "SR")
    assert run(d, tmp_path / "out", fake_infer, STD) == 0
    err = capsys.readouterr().err
    assert f"{d / 'report.dcm'}: no image: Basic Text SR Storage (modality SR), not a radiograph; skipped" in err
    assert f"{d / 'hip_copy.dcm'}: the same DICOM instance (SOP Instance UID) as {d / 'hip.dcm'}" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["hip"]
    (d / "hip.dcm").unlink()
    (d / "hip_copy.dcm").unlink()
    assert run(d, tmp_path / "out2", fake_infer, STD) == 1
    assert f"{d}: no radiographs found" in capsys.readouterr().err


def test_inference_contract_checked(dicom_dir):
    d, _ = dicom_dir
    cases, errors = load_cases(d, STD)
    assert len(cases) == 1 and len(errors) == 1
    with pytest.raises(ValueError, match="unknown bone"):
        run_inference(cases[0], lambda im, g, f: {"skull": trimesh.creation.box()})
    with pytest.raises(TypeError):
        run_inference(cases[0], lambda im, g, f: [trimesh.creation.box()])
    partial = run_inference(
        cases[0], lambda im, g, f: {"pelvis": trimesh.creation.box(), "femur_left": trimesh.Trimesh()}
    )
    assert list(partial) == ["pelvis"]  # empty meshes dropped


def test_stages_go_on_past_a_failed_case_and_stop_at_a_bad_model(tmp_path, capsys):
    """The functions the SDK operators call (and the plain run): a case whose inference or writing fails is one line
    and the others are done; an error naming the model stops the inference loop (every case would fail)."""
    d = tmp_path / "in"
    d.mkdir()
    for name in ("a", "b", "c"):
        make_dicom(d / f"{name}.dcm", ramp())
    cases, errors = load_cases(d, STD)
    assert len(cases) == 3 and errors == []

    done = list(reconstruct_cases(cases, failing_second(ValueError("no bone found"))))
    results = [(c, m) for c, m, error in done if error is None]
    assert [c.name for c, _ in results] == [cases[0].name, cases[2].name]
    assert [error for _, _, error in done if error] == [f"{cases[1].path}: no bone found"]

    def bad_model(image, geometry, fov):
        bad_model.calls += 1
        raise InputFileError(tmp_path / "model.pt", "checkpoint file is empty")

    bad_model.calls = 0
    assert (
        list(reconstruct_cases(cases, bad_model))
        == [(cases[0], None, f"{tmp_path / 'model.pt'}: checkpoint file is empty")]
        and bad_model.calls == 1
    )
    out = tmp_path / "out"
    (out / cases[0].name).mkdir(parents=True)
    (out / cases[0].name / "notes.txt").write_text("mine")
    errors = write_results(results, out)
    assert len(errors) == 1 and errors[0].startswith(
        f"{out / cases[0].name}: exists and was not written by this bundle"
    )
    assert (out / cases[0].name / "notes.txt").read_text() == "mine" and (out / cases[2].name / "result.json").exists()


def test_run_writes_each_case_before_inferring_the_next(tmp_path, capsys, caplog):
    """The plain run streams: when the second case's inference runs, the first case is written; an error of the
    inference callable that is not a bad-input one (here RuntimeError) is one line for its case, and the run goes on.
    Each case is logged as it starts with its place in the run (k of N)."""
    d = tmp_path / "in"
    d.mkdir()
    for name in ("a", "b", "c"):
        make_dicom(d / f"{name}.dcm", ramp())
    out, written_before = tmp_path / "out", []
    crash = failing_second(RuntimeError("out of memory"))

    def infer(image, geometry, fov=None):
        written_before.append(sorted(p.name for p in out.iterdir()) if out.exists() else [])
        return crash(image, geometry, fov)

    with caplog.at_level(logging.INFO, logger="deploy.app.pipeline"):
        assert run(d, out, infer, STD) == 1
    assert written_before[1] == ["a"]
    started = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reconstructing")]
    assert started == [f"reconstructing {n} ({k} of 3)" for k, n in enumerate("abc", 1)]
    assert [line for line in capsys.readouterr().err.splitlines() if str(d) in line] == [
        f"{d / 'b.dcm'}: inference failed (RuntimeError: out of memory)"
    ]
    assert sorted(p.name for p in out.iterdir()) == ["a", "c"]


def test_app_version_is_the_bundles():
    """The MAP manifest names the bundle's version (as every DICOM output's SoftwareVersions does)."""
    import yaml

    app = yaml.safe_load((ROOT / "deploy" / "app" / "app.yaml").read_text())
    assert str(app["application"]["version"]) == bundle_version()


def test_failed_write_leaves_no_case_folder(dicom_dir, tmp_path):
    d, _ = dicom_dir
    case = load_cases(d, STD)[0][0]
    bad = {"pelvis": trimesh.creation.box(), "femur_left": "not a mesh"}
    with pytest.raises(AttributeError):
        write_case(case, bad, tmp_path / "out")
    assert not (tmp_path / "out" / case.name).exists()
    assert [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")] == []


@pytest.mark.skipif(importlib.util.find_spec("holoscan") is not None, reason="plain-Python path only without the SDK")
def test_main_plain_cli(dicom_dir, tmp_path, monkeypatch):
    import deploy.app.__main__ as app_main

    d, _ = dicom_dir
    (d / "ct_slice.dcm").unlink()
    monkeypatch.setattr(app_main, "reconstruct_image_adapter", lambda model, device, ssm_path: fake_infer)
    geometry_file = tmp_path / "geometry.json"
    STD.save(geometry_file)
    rc = app_main.main(
        ["app", "-i", str(d), "-o", str(tmp_path / "out"), "-m", "models/model.ts", "--geometry", str(geometry_file)]
    )
    assert rc == 0 and len(list((tmp_path / "out").iterdir())) == 1


@pytest.mark.skipif(importlib.util.find_spec("holoscan") is not None, reason="plain-Python path only without the SDK")
def test_main_takes_geometry_sid_and_pixel_spacing(tmp_path, monkeypatch, capsys):
    """--geometry, --sid_mm and --pixel_spacing_mm reach the loader: an 80x80 PNG (no pixel spacing) is one line and
    exit 1 without --pixel_spacing_mm; with 4 mm at SID 1000 mm it is resampled into the --geometry file's geometry
    (not configs/geometry.json), covering (80 * 4 mm * 1100 / 1000 / 400 mm)^2 of the standard field."""
    import deploy.app.__main__ as app_main

    monkeypatch.setattr(app_main, "reconstruct_image_adapter", lambda model, device, ssm_path: fake_infer)
    geometry = Geometry(sid_mm=1100.0, pixel_spacing_mm=(6.25, 6.25), image_size=(64, 64))  # the 400 mm field at 64 px
    assert geometry.to_dict() != Geometry.standard().to_dict()
    geometry.save(tmp_path / "geometry.json")
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(ramp(80, 80, 250).astype(np.uint8)).save(d / "hip.png")
    argv = [
        "app",
        "-i",
        str(d),
        "-o",
        str(tmp_path / "out"),
        "-m",
        "models/model.ts",
        "--geometry",
        str(tmp_path / "geometry.json"),
    ]
    assert app_main.main(argv) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        f"{d / 'hip.png'}: size 80x80 differs from the standard geometry 64x64 and the file has no pixel spacing"
    )
    assert not (tmp_path / "out").exists()
    assert app_main.main(argv + ["--sid_mm", "1000", "--pixel_spacing_mm", "4.0"]) == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "out" / "hip" / "result.json").read_text())
    assert result["geometry"] == geometry.to_dict()
    assert result["geometry_source"] == {"sid_mm": "argument sid_mm", "pixel_spacing_mm": "argument pixel_spacing_mm"}
    assert result["coverage"] == pytest.approx((80 * 4.0 * 1100 / 1000 / 400) ** 2, abs=3 / 64)


# ---------------------------------------------------------------------- end to end: TorchScript model + shape model
SPHERE_CENTRE = np.array([0.0, 0.0, 950.0])  # mm, camera frame, on the central ray
SPHERE_RADIUS = 40.0


def test_app_end_to_end_torchscript_and_shape_model(tmp_path, capsys):
    """``python deploy/app`` plain path: DICOM DX in -> bundle inference (TorchScript + SSM) -> STL + Encapsulated STL."""
    import deploy.app.__main__ as app_main

    standard = Geometry.standard()
    sphere_model_file(tmp_path / "model.ts", standard, SPHERE_CENTRE, SPHERE_RADIUS)
    sphere_shape_model_file(tmp_path / "ssm.npz")
    d = tmp_path / "in"
    d.mkdir()
    # 64x64 px at 6.25 mm, SID 1100: the standard 400 mm field, resampled to 256x256 by the loader
    src = make_dicom(d / "hip_ap.dcm", ramp(), DistanceSourceToDetector=1100.0, ImagerPixelSpacing=[6.25, 6.25])
    argv = [
        "app",
        "-i",
        str(d),
        "-o",
        str(tmp_path / "out"),
        "-m",
        str(tmp_path / "model.ts"),
        "--ssm_path",
        str(tmp_path / "ssm.npz"),
        "--device",
        "cpu",
    ]
    assert app_main.main(argv) == 0, capsys.readouterr().err
    case_dir = tmp_path / "out" / "hip_ap"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["hip_ap"]
    assert sorted(p.name for p in case_dir.iterdir()) == sorted(
        [OUTPUT_MARKER, "pelvis.dcm", "pelvis.stl", "result.json"]
    )  # femurs not found
    stl = trimesh.load(str(case_dir / "pelvis.stl"), force="mesh")
    ds = pydicom.dcmread(str(case_dir / "pelvis.dcm"))
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.Modality == "M3D"
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.3"
    assert ds.SourceInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    from_dicom = read_encapsulated_stl(ds)
    np.testing.assert_allclose(np.sort(from_dicom.vertices, axis=0), np.sort(stl.vertices, axis=0), atol=1e-4)
    # the shape-model completion (icosphere topology) sits on the true sphere, in patient LPS mm: 950 mm posterior
    assert len(stl.faces) == len(trimesh.creation.icosphere(2).faces)
    radii = np.linalg.norm(stl.vertices - [0.0, 950.0, 0.0], axis=1)
    assert abs(np.median(radii) - SPHERE_RADIUS) < 1.0 and radii.max() - radii.min() < 3.0
    result = json.loads((case_dir / "result.json").read_text())
    assert result["input_format"] == "dicom" and list(result["bones"]) == ["pelvis"]
    assert result["hip_plane"] is None  # no femur completed
    # a pelvis alone is no AP pelvis radiograph's prediction: the plausibility warning reaches result.json and stderr
    (warning,) = result["warnings"]
    assert warning.startswith("implausible prediction") and "femur_left found, femur_right found" in warning
    assert f"{case_dir}: warning: {warning}" in capsys.readouterr().err
    assert not {"Doe", "MRN123456", "19650101"} & set((case_dir / "result.json").read_text().split('"'))


def test_app_result_json_agrees_with_the_bundle_inference(tmp_path, capsys):
    """The Deploy app and the bundle's inference (configs/inference.yaml's evaluator) on one DICOM with one model: result.json's
    shared fields agree, laterality from PatientOrientation included; each bone the app wrote has the bundle's summary
    of that bone plus the size of the mesh it wrote, which is the bundle's <bone>_completed.ply."""
    import deploy.app.__main__ as app_main
    from scripts.reconstruction.reconstruct import build_reconstructor
    from scripts.reconstruction.runner import ReconstructionRunner

    sphere_model_file(tmp_path / "model.ts", Geometry.standard(), SPHERE_CENTRE, SPHERE_RADIUS)
    sphere_shape_model_file(tmp_path / "ssm.npz")
    d = tmp_path / "in"
    d.mkdir()
    make_dicom(
        d / "hip_ap.dcm",
        ramp(),
        DistanceSourceToDetector=1100.0,
        ImagerPixelSpacing=[6.25, 6.25],
        PatientOrientation=["L", "F"],
    )
    model = ["-m", str(tmp_path / "model.ts"), "--ssm_path", str(tmp_path / "ssm.npz"), "--device", "cpu"]
    assert app_main.main(["app", "-i", str(d), "-o", str(tmp_path / "app"), *model]) == 0, capsys.readouterr().err
    reconstructor = build_reconstructor(
        ckpt_path=str(tmp_path / "model.ts"), ssm_path=str(tmp_path / "ssm.npz"), device="cpu", torchscript=True
    )
    ReconstructionRunner(reconstructor, d, tmp_path / "bundle", report=False, num_workers=0, writers=0).run()
    app = json.loads((tmp_path / "app" / "hip_ap" / "result.json").read_text())
    bundle = json.loads((tmp_path / "bundle" / "hip_ap" / "result.json").read_text())
    assert app["laterality"] == bundle["laterality"] == "DICOM PatientOrientation (0020,0020) L\\F"
    assert app["model"]["network"] == {
        "file": "model.ts",
        "sha256": hashlib.sha256((tmp_path / "model.ts").read_bytes()).hexdigest(),
        "torchscript": True,
    }
    shared = ("input_format", "geometry_source", "coverage", "frame", "patient_frame", "hip_plane", "warnings", "model")
    assert {k: app[k] for k in shared} == {k: bundle[k] for k in shared}
    # geometry: the app's is the standard one its image was resampled into, the bundle's that of its maps (network size)
    standard, size = Geometry.standard(), bundle["geometry"]["image_size"]
    assert (
        app["geometry"] == standard.to_dict()
        and bundle["geometry"] == standard.resized(tuple(size)).to_dict()
        and size[0] < standard.width
    )
    assert (
        list(app["bones"]) == ["pelvis"]
        and bundle["bones"]["pelvis"]["found"]
        and bundle["bones"]["pelvis"]["ssm"] is not None
    )
    completed = trimesh.load(str(tmp_path / "bundle" / "hip_ap" / "pelvis_completed.ply"), process=False)
    written = {
        "vertices": len(completed.vertices),
        "faces": len(completed.faces),
        "watertight": bool(completed.is_watertight),
    }
    assert app["bones"]["pelvis"] == {**bundle["bones"]["pelvis"], "mesh": written}


def test_app_bad_model_one_line(tmp_path, capsys):
    import deploy.app.__main__ as app_main

    d = tmp_path / "in"
    d.mkdir()
    make_dicom(d / "a.dcm", ramp())
    make_dicom(d / "b.dcm", ramp())
    (tmp_path / "empty.ts").write_bytes(b"")
    rc = app_main.main(
        ["app", "-i", str(d), "-o", str(tmp_path / "out"), "-m", str(tmp_path / "empty.ts"), "--ssm_path", ""]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err == [f"{tmp_path / 'empty.ts'}: checkpoint file is empty"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("stated_by", ["run record", "embedded config"])
def test_app_refuses_a_run_trained_under_other_network_keys(stated_by, tmp_path, capsys):
    """-m a network trained at image_size 64 under the 128 px configs/inference.yaml: a run's model.pt (its folder's
    training.json says so), or its TorchScript export in another folder (the config ckpt_export embedded says so; up
    to bundle 0.10.10 it ran at 128 px without a word). Refused before any case, in one line naming the keys to set in
    that config (the app has no option for them), exit 1, nothing written."""
    import deploy.app.__main__ as app_main
    from monai.bundle import ConfigParser
    from scripts.model.export_onnx import network_from_config

    network = network_from_config()[0]  # fits the configured network's shapes
    if stated_by == "run record":
        (tmp_path / "run").mkdir()
        model = tmp_path / "run" / "model.pt"
        torch.save(network.state_dict(), model)
        stated = write_training_record(tmp_path / "run", image_size=64)
    else:
        model, stated = tmp_path / "export" / "model.ts", "the config its TorchScript archive embeds"
        model.parent.mkdir()
        config = ConfigParser.load_config_file(config_copy(tmp_path / "inference.yaml", image_size=64))
        torch.jit.script(network).save(str(model), _extra_files={"inference.json": json.dumps(config)})
    (tmp_path / "in").mkdir()
    make_dicom(tmp_path / "in" / "a.dcm", ramp())
    argv = ["app", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model), "--ssm_path", ""]
    assert app_main.main(argv) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"{model}: trained with other network settings ({stated}): image_size 64, configured 128; "
        "set image_size: 64 in configs/inference.yaml"
    ]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_app_refuses_an_output_file_and_an_unknown_log_level(tmp_path, capsys):
    import deploy.app.__main__ as app_main

    d = tmp_path / "in"
    d.mkdir()
    make_dicom(d / "a.dcm", ramp())
    (tmp_path / "out.txt").write_text("mine")
    assert app_main.main(["app", "-i", str(d), "-o", str(tmp_path / "out.txt"), "-m", "models/model.pt"]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"{tmp_path / 'out.txt'}: exists and is not a folder; -o names the output folder"
    )
    assert app_main.main(["app", "-i", str(d), "-o", str(tmp_path / "out.txt" / "sub"), "-m", "models/model.pt"]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"{tmp_path / 'out.txt' / 'sub'}: cannot be created: {tmp_path / 'out.txt'} is a file, not a "
        "folder; -o names the output folder"
    )
    assert (tmp_path / "out.txt").read_text() == "mine"
    with pytest.raises(SystemExit) as e:
        app_main.main(["app", "-i", str(d), "-o", str(tmp_path / "out"), "-m", "models/model.pt", "-l", "loud"])
    assert e.value.code == 2 and "invalid choice: 'LOUD'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out.txt"]


# each bad value of an app option: (its arguments, the one line, the exit status); '' for a path was the working folder
# (-i '' reconstructed every image under it, -m '' listed its .pt files), an argparse error a usage block
APP_OPTION_CASES = {
    "-i ''": (["-i", ""], "-i/--input: must be a file or folder path, got ''; see python deploy/app --help", 2),
    "-o ''": (["-o", ""], "-o/--output: must be a file or folder path, got ''", 2),
    "-m ''": (["-m", ""], "-m/--model: must be a file or folder path, got ''", 2),
    "-w ''": (["-w", ""], "-w/--workdir: must be a file or folder path, got ''", 2),
    "--geometry ''": (["--geometry", ""], "--geometry: must be a file or folder path, got ''", 2),
    "--geometry not JSON": (["--geometry", "{tmp}/in/a.dcm"], "{tmp}/in/a.dcm: unreadable JSON (", 1),
    "-m to no file": (["-m", "{tmp}/none.ts"], "{tmp}/none.ts: checkpoint not found", 1),
    "--ssm_path to no file": (["--ssm_path", "{tmp}/none.npz"], "{tmp}/none.npz: shape model file not found", 1),
    "--device gpu0": (["--device", "gpu0"], "--device: not a torch device ('gpu0'", 1),
    **(  # MONAI wrapped it while building the reconstructor: 'inference failed (RuntimeError: Failed to instantiate ...'
        {}
        if torch.cuda.is_available()
        else {
            "--device cuda:0 without CUDA": (
                ["--device", "cuda:0"],
                "--device: cuda:0 requested but CUDA is not available on this machine; use --device cpu",
                1,
            )
        }
    ),
    "--sid_mm abc": (["--sid_mm", "abc"], "--sid_mm: invalid float value: 'abc'; see python deploy/app --help", 2),
    "--sid_mm -5": (["--sid_mm", "-5"], "--sid_mm: must be a positive number (mm), got -5.0", 1),
    "--pixel_spacing_mm 0": (
        ["--pixel_spacing_mm", "0"],
        "--pixel_spacing_mm: must be a positive number (mm), got 0.0",
        1,
    ),
    "--pixel_spacing_mm three values": (
        ["--pixel_spacing_mm", "1", "2", "3"],
        "--pixel_spacing_mm: must be one or two numbers (mm: 0.15, or su,sv as 0.15,0.16), got [1.0, 2.0, 3.0]",
        1,
    ),
    "-l verbose": (["-l", "verbose"], "-l/--log-level: invalid choice: 'VERBOSE' (choose from 'DEBUG', 'INFO',", 2),
    "an unknown option": (["--bogus", "1"], "unrecognized arguments: --bogus 1; see python deploy/app --help", 2),
}


@pytest.mark.parametrize("case", list(APP_OPTION_CASES))
def test_app_bad_option_one_line_nothing_written(case, tmp_path, monkeypatch, capsys):
    """A bad value of any app option: one line naming it, exit non-zero, nothing written (in -o or the working folder)."""
    import deploy.app.__main__ as app_main

    extra, line, code = APP_OPTION_CASES[case]
    (tmp_path / "in").mkdir()
    (tmp_path / "cwd").mkdir()
    make_dicom(tmp_path / "in" / "a.dcm", ramp())
    monkeypatch.chdir(tmp_path / "cwd")
    given = {"-i": str(tmp_path / "in"), "-o": str(tmp_path / "out"), "-m": str(ROOT / "models" / "model.ts")}
    extra = [x.format(tmp=tmp_path) for x in extra]
    if extra[0] in given:  # -i, -o or -m itself
        given[extra[0]], extra = extra[1], extra[2:]
    argv = ["app", *(x for kv in given.items() for x in kv), *extra]
    try:
        status = app_main.main(argv)
    except SystemExit as e:  # argparse
        status = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == code and len(err) == 1 and err[0].startswith(line.format(tmp=tmp_path)), err
    assert not (tmp_path / "out").exists() and list((tmp_path / "cwd").iterdir()) == []


def test_app_help_lists_every_option(capsys):
    """``--help`` lists every option the app takes, the SDK's and the bundle's, and docs/deployment.md shows each."""
    import deploy.app.__main__ as app_main

    with pytest.raises(SystemExit) as e:
        app_main.main(["app", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    taken = [o for a in app_main.argument_parser()._actions for o in a.option_strings if o.startswith("--")]
    assert set(taken) >= {
        "--input",
        "--output",
        "--model",
        "--workdir",
        "--log-level",
        "--ssm_path",
        "--sid_mm",
        "--pixel_spacing_mm",
        "--geometry",
        "--device",
    }
    docs = (ROOT / "docs" / "deployment.md").read_text()
    for option in taken:
        assert option in text and (option in docs or option == "--help"), option


def test_model_file_of_a_map_models_folder(tmp_path, capsys):
    """-m a file: that file; a folder (a MAP's HOLOSCAN_MODEL_PATH holds the packaged file as <name>/<file>): its one
    .ts or .pt file; a folder with none or two: one line naming it, nothing run."""
    (tmp_path / "models" / "model").mkdir(parents=True)
    (tmp_path / "models" / "model" / "model.ts").write_bytes(b"archive")
    (tmp_path / "models" / "model" / "notes.txt").write_text("mine")
    assert model_file(tmp_path / "models") == tmp_path / "models" / "model" / "model.ts"
    assert model_file(tmp_path / "models" / "notes.txt") == tmp_path / "models" / "notes.txt"
    (tmp_path / "models" / "old.pt").write_bytes(b"weights")
    with pytest.raises(InputFileError, match="must hold one .ts or .pt file, it holds model/model.ts, old.pt"):
        model_file(tmp_path / "models")


def test_staged_map_app_runs_as_the_packager_runs_it(tmp_path):
    """``python -m deploy.stage``'s folder is what a MAP runs: ``python3 <app folder>`` with no arguments, from another
    folder, without this repository on the path, its paths in HOLOSCAN_INPUT_PATH / OUTPUT_PATH / MODEL_PATH (a models
    folder holding model/model.ts). It reconstructs with its own copy of the shipped shape models; a second staging
    replaces the first, a user's folder is refused."""
    app = tmp_path / "app"
    stage_app(app)
    ssm = ROOT / "models" / "ssm.npz"
    assert (app / "models" / "ssm.npz").read_bytes() == ssm.read_bytes()
    assert not list(app.rglob("__pycache__")) and (app / "requirements.txt").is_file()
    (tmp_path / "models" / "model").mkdir(parents=True)
    sphere_model_file(tmp_path / "models" / "model" / "model.ts", Geometry.standard(), SPHERE_CENTRE, SPHERE_RADIUS)
    (tmp_path / "input").mkdir()
    make_dicom(
        tmp_path / "input" / "hip_ap.dcm", ramp(), DistanceSourceToDetector=1100.0, ImagerPixelSpacing=[6.25, 6.25]
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        HOLOSCAN_INPUT_PATH=str(tmp_path / "input"),
        HOLOSCAN_OUTPUT_PATH=str(tmp_path / "output"),
        HOLOSCAN_MODEL_PATH=str(tmp_path / "models"),
    )
    done = subprocess.run(
        [sys.executable, str(app)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "output" / "hip_ap" / "result.json").read_text())
    assert (
        result["model"]["network"]["sha256"]
        == hashlib.sha256((tmp_path / "models" / "model" / "model.ts").read_bytes()).hexdigest()
    )
    assert result["model"]["shape_model"]["sha256"] == hashlib.sha256(ssm.read_bytes()).hexdigest()
    assert (tmp_path / "output" / "hip_ap" / "pelvis.stl").is_file()
    (app / "LICENSE").unlink()
    assert stage_app(app) == app and (app / "LICENSE").is_file()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(InputFileError, match="exists and was not written by this bundle"):
        stage_app(tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_sdk_arguments_are_those_the_sdk_parses():
    """The app context's options as MONAI Deploy's argument parser takes them: -i/-o/-m/-w as given, the log level
    WARNING as its WARN (DEBUG, INFO, WARN, ERROR, CRITICAL), unset ones left out."""
    import deploy.app.__main__ as app_main

    opts = app_main.argument_parser().parse_args(["-i", "in", "-o", "out", "-m", "m.ts", "-l", "warning"])
    assert app_main.sdk_arguments(opts) == ["-i", "in", "-o", "out", "-m", "m.ts", "-l", "WARN"]
    opts = app_main.argument_parser().parse_args(["-i", "in", "-o", "out", "-m", "m.ts", "-w", "work"])
    assert app_main.sdk_arguments(opts) == ["-i", "in", "-o", "out", "-m", "m.ts", "-w", "work", "-l", "INFO"]


def _module_level_imports(path) -> set[str]:
    """Dotted names a module imports at module level (``from a.b import c`` gives a.b and a.b.c)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


def test_map_requirements_cover_what_the_app_imports():
    """deploy/app/requirements.txt (what a MAP installs) pins each package as requirements.txt does, and names the
    distribution of every third-party package that the app's modules import at module level, followed through the
    bundle's own modules they import (the SDK comes with the MAP's base image)."""

    def pins(path):
        lines = [
            line.split("==") for line in path.read_text().splitlines() if "==" in line and not line.startswith("#")
        ]
        return {name.strip().lower(): version.strip() for name, version in lines}

    app_pins = pins(ROOT / "deploy" / "app" / "requirements.txt")
    assert app_pins.items() <= pins(ROOT / "requirements.txt").items()
    seen, queue, third_party = set(), [ROOT / "deploy" / "app" / "__main__.py"], set()
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _module_level_imports(path):
            top = name.split(".")[0]
            if top not in ("scripts", "deploy"):
                third_party.add(top)
                continue
            base = ROOT.joinpath(*name.split("."))
            queue += [p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()]
    assert ROOT / "scripts" / "reconstruction" / "reconstruct.py" in seen  # the inference was followed
    distributions = importlib.metadata.packages_distributions()
    for module in sorted(third_party - set(sys.stdlib_module_names)):
        names = {name.lower() for name in distributions.get(module, [])}
        assert names & set(app_pins), f"{module} ({names or 'not installed'}) missing from deploy/app/requirements.txt"
