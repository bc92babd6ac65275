"""Inference workflow: tiny phantom data (2 cases, 3 mm voxels, 64x64 radiographs), a tiny untrained network.

Truth comes from the simulator's meshes and depth maps (independent of the reconstruction code):
oracle depth maps must give surfaces on the true bone surface, a known depth shift must move them
by that much, and the batch workflow must write the full layout, skip/redo and report bad files.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
import trimesh
import yaml
from monai.bundle import ConfigParser, ConfigWorkflow
from scripts.geometry import Geometry
from scripts.io.files import InputFileError, read_depth_and_mask
from scripts.io.radiograph_io import LATERALITY_ASSUMED
from scripts.model.checkpoints import load_network
from scripts.model.networks import DualFaceDepthNet
from scripts.reconstruction.reconstruct import (
    PATIENT_FRAME,
    MirrorAveragingInferer,
    Reconstructor,
    bundle_config,
    oracle_prediction,
    reconstruct_image,
    report_notes,
)
from scripts.reconstruction.surface_metrics import point_to_surface, surface_metrics
from tests.helpers import (
    FAST_FIT,
    FEATURES,
    ROOT,
    assert_complete,
    bundle_env,
    error_lines,
    make_dataset,
    make_dicom,
    ramp,
    run_bundle,
    sphere_model_file,
    sphere_shape_model_file,
    tiny_checkpoint,
)

OVERRIDES = {"features": FEATURES, "image_size": 64, "device": "cpu", "ssm_fit": FAST_FIT}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("recon")
    return make_dataset(root)


def truth_in_camera(sample_dir: Path, bone: str) -> trimesh.Trimesh:
    """The simulator's world-RAS mesh of ``bone`` moved into the sample's camera frame."""
    notes = json.loads((sample_dir / "sample.json").read_text())
    geometry = Geometry.load(sample_dir / "geometry.json")
    mesh = trimesh.load(str((sample_dir.parent / notes["meshes"][bone]).resolve()), process=False)
    return trimesh.Trimesh(geometry.world_to_camera_points(mesh.vertices), mesh.faces, process=False)


def run_inference(input_dir, output_dir, ckpt, ssm, **kw):
    run_bundle(
        "inference.yaml",
        input_dir=str(input_dir),
        output_dir=str(output_dir),
        ckpt_path=str(ckpt),
        ssm_path=str(ssm),
        **OVERRIDES,
        **kw,
    )


def test_inference_network_matches_training():
    """inference.yaml declares the same network (class and hyperparameters) as train.yaml, at the
    shipped model's input size (metadata.json; training defaults to 256, the shipped recipe used 128)."""
    train, infer = ConfigParser(), ConfigParser()
    train.read_config(str(ROOT / "configs" / "train.yaml"))
    infer.read_config(str(ROOT / "configs" / "inference.yaml"))
    for key in ("bones", "faces", "features", "depth_prior_mm", "centre_prior_mm"):
        assert infer[key] == train[key], key
    assert infer["network_def"] == train["network_def"]
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [infer["image_size"]] * 2
    with open(ROOT / "configs" / "train.yaml") as f:
        norm = [t for t in yaml.safe_load(f)["load_transforms"] if t["_target_"].endswith("NormalizeRadiographd")]
    assert [t for t in infer["preprocessing"]["transforms"] if t["_target_"].endswith("NormalizeRadiographd")] == norm


def test_configs_find_this_bundle_from_another_directory(tmp_path, monkeypatch):
    """Without --bundle_root, run from another folder, the configs' default paths are this bundle's files (with
    bundle_root "." inference stopped at 'configs/geometry.json: file not found')."""
    monkeypatch.chdir(tmp_path)
    infer, evaluate, train = ConfigParser(), ConfigParser(), ConfigParser()
    for parser, name in [(infer, "inference"), (evaluate, "evaluate"), (train, "train")]:
        parser.read_config(str(ROOT / "configs" / f"{name}.yaml"))
    for parser, key, path in [
        (infer, "standard_geometry", "configs/geometry.json"),
        (infer, "ckpt_path", "models/model.pt"),
        (infer, "ssm_path", "models/ssm.npz"),
        (evaluate, "ckpt_path", "models/model.pt"),
        (evaluate, "inference_config", "configs/inference.yaml"),
    ]:
        assert Path(parser.get_parsed_content(key)).samefile(ROOT / path), key
    assert Path(train.get_parsed_content("output_dir")) == ROOT / "runs" / "train"


def test_oracle_depth_gives_true_surfaces(data):
    """True depth maps through the pipeline: surfaces within one CT voxel of the true bone surface."""
    sample = data / "case_0001_p0"
    depth, mask = read_depth_and_mask(sample / "depth.nii.gz", sample / "mask.nii.gz")
    geometry = Geometry.load(sample / "geometry.json")
    recon = Reconstructor(
        None,
        None,
        preprocessing=lambda d: d,
        image_size=(64, 64),
        ssm_path=data.parent / "ssm.npz",
        fit_kwargs=FAST_FIT,
    )
    pred = oracle_prediction(depth, mask, geometry)
    field = geometry.cropped(
        json.loads((sample / "sample.json").read_text())["field_px"]
    )  # the exposed part of the detector
    rec = recon.reconstruct(pred)
    voxel = 3.0  # mm, the phantom CT spacing (the labels the depth maps were cast against)
    for bone in geometry.bones:
        truth = truth_in_camera(sample, bone)
        surf = rec.surfaces[bone]
        # every front/back vertex lies on the true surface (depth maps are exact ray hits)
        assert np.median(point_to_surface(np.asarray(surf.vertices), truth)) < voxel / 2
        assert surface_metrics(surf, truth, field, spacing_mm=3.0)["assd_mm"] < voxel
        assert surface_metrics(rec.completed[bone], truth, field, spacing_mm=3.0)["assd_mm"] < voxel
    # the completed femoral heads on the phantom's own head centres (params.json, world RAS), the hip plane through them
    notes = json.loads((sample / "sample.json").read_text())
    params = json.loads(
        ((sample.parent / notes["meshes"]["femur_left"]).resolve().parent.parent / "params.json").read_text()
    )
    true_centres = {
        b: geometry.world_to_camera_points(np.array(params[b]["head_centre_mm"])) for b in ("femur_left", "femur_right")
    }
    assert sorted(rec.heads) == sorted(true_centres)
    for bone, centre in true_centres.items():
        assert np.linalg.norm(rec.heads[bone][0] - centre) < voxel
    # in result.json's nominal patient frame (LPS) the left head lies to the patient's left of the right one, as the
    # phantom's own centres (RAS) say, within the pose's tilt
    to_patient = np.asarray(PATIENT_FRAME["camera_to_patient"])
    lps = {b: (to_patient @ [*rec.heads[b][0], 1.0])[:3] for b in true_centres}
    ras = {b: np.array(params[b]["head_centre_mm"]) for b in true_centres}
    seen, true = lps["femur_left"] - lps["femur_right"], (ras["femur_left"] - ras["femur_right"]) * [-1, -1, 1]
    assert seen[0] > 100.0 and seen @ true / np.linalg.norm(seen) / np.linalg.norm(true) > 0.95
    assert rec.hip_plane["magnification"] == pytest.approx(
        geometry.sid_mm / np.mean([c[2] for c in true_centres.values()]), rel=voxel / 950.0
    )
    # a known depth error moves the surface along the rays by that amount
    moved = recon.reconstruct(pred, centre_mm=pred.centre_mm + 15.0, complete=False)
    np.testing.assert_allclose(moved.depth[moved.depth > 0] - rec.depth[rec.depth > 0], 15.0, atol=1e-3)
    far = surface_metrics(moved.surfaces["femur_left"], truth_in_camera(sample, "femur_left"), field, spacing_mm=3.0)
    assert 7.0 < far["assd_mm"] < 15.5


def test_bad_checkpoints_are_refused(data, tmp_path, capsys):
    net = DualFaceDepthNet(features=FEATURES)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all" * 10)
    other = tmp_path / "other.pt"
    torch.save(DualFaceDepthNet(features=[4, 4, 8, 8, 32, 4]).state_dict(), other)
    for path, message in (
        (empty, "empty"),
        (junk, "unreadable checkpoint"),
        (other, "shapes differ for"),
        (tmp_path / "none.pt", "not found"),
    ):
        with pytest.raises(InputFileError, match=message) as e:
            load_network(path, net)
        assert str(path) in str(e.value)
    # the workflow: one line naming the file, exit 1, no output folder
    with pytest.raises(SystemExit) as e:
        run_inference(data / "case_0001_p0", tmp_path / "out", other, data.parent / "ssm.npz")
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"{other}: checkpoint from another bundle version") and "shapes differ" in err[-1]
    assert not (tmp_path / "out").exists()


def test_workflow_layout_rerun_overwrite_and_bad_file(data, tmp_path, capsys):
    inputs = tmp_path / "in"
    for name in ("case_0000_p0", "case_0001_p0"):
        (inputs / name).mkdir(parents=True)
        for f in ("image.nii.gz", "geometry.json"):
            (inputs / name / f).write_bytes((data / name / f).read_bytes())
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        run_inference(inputs, out, data.parent / "model.pt", data.parent / "ssm.npz")
    assert e.value.code == 1  # the broken file failed, after the others completed
    err = capsys.readouterr().err
    assert f"{inputs / 'broken.png'}: " in err
    assert sorted(p.name for p in out.iterdir()) == ["case_0000_p0", "case_0001_p0"]

    for name in ("case_0000_p0", "case_0001_p0"):
        d = out / name
        geometry = Geometry.load(inputs / name / "geometry.json")
        result = json.loads((d / "result.json").read_text())
        assert Geometry.from_dict(result["geometry"]) == geometry
        depth = nib.load(str(d / "depth.nii.gz")).get_fdata()
        mask = nib.load(str(d / "mask.nii.gz")).get_fdata() > 0
        assert depth.shape == (64, 64, 6) and mask.shape == (64, 64, 3) and np.isfinite(depth).all()
        assert np.allclose(nib.load(str(d / "depth.nii.gz")).affine, np.diag([6.25, 6.25, 1, 1]))
        assert (d / "report.png").stat().st_size > 0
        for b, bone in enumerate(geometry.bones):
            info = result["bones"][bone]
            assert info["found"] == bool(mask[..., b].any())
            if not info["found"]:
                assert not (d / f"{bone}.ply").exists()
                continue
            assert info["points"] == 2 * mask[..., b].sum() and np.isfinite(info["centre_depth_mm"])
            mesh = trimesh.load(str(d / f"{bone}.ply"), process=False)
            # camera frame: vertices project into the bone's mask pixels, at the written depths
            uv, dist = geometry.project(np.asarray(mesh.vertices))
            u, v = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
            np.testing.assert_allclose(uv, np.stack([u, v], -1), atol=1e-4)  # float32 PLY
            assert mask[v, u, b].all()
            front, back = depth[v, u, 2 * b], depth[v, u, 2 * b + 1]
            assert np.all(np.isclose(dist, front, atol=1e-2) | np.isclose(dist, back, atol=1e-2))
            assert abs(np.mean(depth[..., 2 * b : 2 * b + 2][mask[..., b]]) - info["centre_depth_mm"]) < 1e-3
            completed = trimesh.load(str(d / f"{bone}_completed.ply"), process=False)
            assert np.isfinite(completed.vertices).all() and np.isfinite(info["ssm"]["rms_mm"])
            assert ("head" in info) == bone.startswith("femur")  # its sphere: test_hips.py, and on the truth above
        heads = [
            result["bones"][b]["head"]["centre_mm"][2]
            for b in ("femur_left", "femur_right")
            if "head" in result["bones"][b]
        ]
        assert result["hip_plane"]["magnification"] == pytest.approx(geometry.sid_mm / np.mean(heads))
        assert set(result["timings_s"]) >= {"load", "network", "meshing", "ssm", "write"}

    before = {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")}
    with pytest.raises(SystemExit):
        run_inference(inputs, out, data.parent / "model.pt", data.parent / "ssm.npz")
    assert "skipped 2" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")} == before
    (inputs / "broken.png").unlink()
    run_inference(
        inputs, out, data.parent / "model.pt", data.parent / "ssm.npz", overwrite=True
    )  # exit 0: no SystemExit
    assert "reconstructed 2" in capsys.readouterr().err
    assert all(p.stat().st_mtime_ns != t for p, t in before.items())


def test_reconstruct_image_api(data, tmp_path):
    """The deploy/demo entry point: {bone: mesh} in the camera frame for a 64x64 input run at the configured network
    size. A TorchScript 'network' drawing a 40 mm sphere's exact depth maps (pelvis only) gives a pelvis surface on
    that sphere; the shipped network's state dict, untrained, gives surfaces inside the X-ray cone."""
    image = nib.load(str(data / "case_0001_p0" / "image.nii.gz")).get_fdata().astype(np.float32)
    geometry = Geometry.load(data / "case_0001_p0" / "geometry.json")
    centre, radius = (
        np.array([0.0, -15.0, 940.0]),
        40.0,
    )  # camera frame, mm; on the midline, as flip TTA averages mirror images
    sphere_model_file(tmp_path / "sphere.ts", geometry, centre, radius)
    meshes = reconstruct_image(
        image,
        geometry,
        model_path=tmp_path / "sphere.ts",
        ssm_path=data.parent / "ssm.npz",
        device="cpu",
        completed=False,
        torchscript=True,
    )
    assert list(meshes) == ["pelvis"]
    radii = np.linalg.norm(np.asarray(meshes["pelvis"].vertices) - centre, axis=1)
    assert np.abs(radii - radius).max() < 0.05 and meshes["pelvis"].is_watertight
    torch.manual_seed(1)
    ckpt = data.parent / "model_default.pt"
    torch.save(bundle_config().get_parsed_content("network_def").state_dict(), ckpt)  # the shipped network, untrained
    meshes = reconstruct_image(
        image, geometry, model_path=ckpt, ssm_path=data.parent / "ssm.npz", device="cpu", completed=False
    )
    assert meshes and set(meshes) <= set(geometry.bones)
    for mesh in meshes.values():
        assert isinstance(mesh, trimesh.Trimesh) and len(mesh.faces) > 0
        assert geometry.in_field_of_view(np.asarray(mesh.vertices), margin_px=-0.01).all()


def test_a_bone_missing_from_the_shape_model_file_is_warned(tmp_path, capsys):
    """A shape model file without the pelvis (e.g. built for femurs only): the pelvis the network finds gets its surface,
    no completion and a warning naming the bone and the file, in result.json and on stderr."""
    sphere_model_file(tmp_path / "model.ts", Geometry.standard(), (0.0, 0.0, 950.0), 40.0)  # finds a pelvis only
    ssm = tmp_path / "femurs.npz"
    sphere_shape_model_file(ssm, ("femur_left", "femur_right"))
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    make_dicom(inputs / "hip_ap.dcm", ramp(), DistanceSourceToDetector=1100.0, ImagerPixelSpacing=[6.25, 6.25])
    run_bundle(
        "inference.yaml",
        input_dir=str(inputs),
        output_dir=str(out),
        ckpt_path=str(tmp_path / "model.ts"),
        torchscript=True,
        ssm_path=str(ssm),
        device="cpu",
        report=False,
    )
    case = out / "hip_ap"
    result = json.loads((case / "result.json").read_text())
    assert result["bones"]["pelvis"]["found"] and result["bones"]["pelvis"]["ssm"] is None
    assert (case / "pelvis.ply").exists() and not (case / "pelvis_completed.ply").exists()
    warning = f"pelvis: the shape model file {ssm} has no pelvis model; no completion (pelvis_completed.ply)"
    assert warning in result["warnings"]
    assert error_lines(capsys.readouterr().err, "no pelvis model") == [f"{case}: warning: {warning}"]


class ChannelScales(torch.nn.Module):
    """A 'network' whose output channel k is (k + 1) times its one-channel input: 6 depth maps, 3 mask logits and the
    centre map of the bones pelvis, femur_left, femur_right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.arange(1.0, 11.0)[None, :, None, None]


def test_inferer_averages_the_mirror_images_maps_mirrored_back():
    """MirrorAveragingInferer by hand: the mirror image's maps, flipped back, equal the image's own for this
    network, so each channel gets the mean of its own and its left/right partner's scale (pelvis keeps its own);
    without flip_tta the network's output as it is. A reconstructor refuses an inferer of other bones."""
    x = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(2, 1, 4, 5)  # no left-right symmetry
    want = [1, 2, (3 + 5) / 2, (4 + 6) / 2, (5 + 3) / 2, (6 + 4) / 2, 7, (8 + 9) / 2, (9 + 8) / 2, 10]
    got = MirrorAveragingInferer(("pelvis", "femur_left", "femur_right"))(x, ChannelScales())
    torch.testing.assert_close(got, x * torch.tensor(want)[None, :, None, None], rtol=0, atol=0)
    plain = MirrorAveragingInferer(flip_tta=False)(x, ChannelScales())
    torch.testing.assert_close(plain, x * torch.arange(1.0, 11.0)[None, :, None, None], rtol=0, atol=0)
    with pytest.raises(ValueError, match="inferer's bones"):
        Reconstructor(None, None, lambda d: d, inferer=MirrorAveragingInferer(("pelvis", "femur_right", "femur_left")))


def test_monai_infer_properties_are_the_workflows_own(data, tmp_path):
    """MONAI's "infer" properties of configs/inference.yaml (ConfigWorkflow.check_properties: none missing) are the
    objects the run uses: ``dataset_dir`` (set here instead of input_dir) is what the ``evaluator`` lists and reads,
    ``dataset`` its input listing, ``inferer`` the reconstructor's network call (flip_tta on as configured); the run
    then writes each input's result."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    names = _copy_inputs(data, inputs)
    wf = ConfigWorkflow(
        config_file=str(ROOT / "configs" / "inference.yaml"),
        meta_file=str(ROOT / "configs" / "metadata.json"),
        workflow_type="infer",
        dataset_dir=str(inputs),
        output_dir=str(out),
        ckpt_path=str(data.parent / "model.pt"),
        ssm_path=str(data.parent / "ssm.npz"),
        report=False,
        **OVERRIDES,
    )
    wf.initialize()
    assert wf.check_properties() == []
    assert wf.dataset is wf.evaluator.radiographs and wf.inferer is wf.evaluator.reconstructor.inferer
    assert sorted(p.parent.name for p in wf.dataset.paths()) == names
    assert wf.inferer.flip_tta and wf.inferer.bones == ("pelvis", "femur_left", "femur_right")
    wf.run()
    assert sorted(p.name for p in out.iterdir()) == names
    assert json.loads((out / names[0] / "result.json").read_text())["options"]["flip_tta"] is True


def test_flip_tta_makes_the_prediction_mirror_equivariant(tmp_path):
    """With flip_tta, predicting the mirror image gives the mirror of the prediction: masks and centre
    exactly, depths up to the free CASI offset, and the left/right femur maps trade places."""
    ckpt = tiny_checkpoint(tmp_path / "net.pt")
    recon = Reconstructor(
        DualFaceDepthNet(features=FEATURES),
        ckpt,
        preprocessing=lambda d: d,
        image_size=(64, 64),
        device="cpu",
        inferer=MirrorAveragingInferer(flip_tta=True),
    )
    geometry = Geometry.standard(image_size=[64, 64], pixel_spacing_mm=[6.25, 6.25], principal_point_px=[31.5, 31.5])
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    a, b = recon.predict(image, geometry), recon.predict(image[:, ::-1].copy(), geometry.flipped_lr())
    swap = [0, 2, 1]  # pelvis, femur_left, femur_right -> pelvis, femur_right, femur_left
    np.testing.assert_allclose(b.mask_prob, a.mask_prob[swap][..., ::-1], atol=1e-5)
    assert b.centre_mm == pytest.approx(a.centre_mm, abs=1e-3)
    mirrored = a.depth.reshape(3, 2, 64, 64)[swap].reshape(6, 64, 64)[..., ::-1]
    difference = b.depth - mirrored
    np.testing.assert_allclose(difference, difference.mean(), atol=1e-2)
    plain = Reconstructor(
        DualFaceDepthNet(features=FEATURES), ckpt, preprocessing=lambda d: d, image_size=(64, 64), device="cpu"
    )
    c = plain.predict(image, geometry)
    assert not np.allclose(c.mask_prob, a.mask_prob, atol=1e-3)  # an untrained net is not symmetric: TTA changed it


def _copy_inputs(data: Path, into: Path, copies: int = 1) -> list[str]:
    """The two tiny samples (image + geometry), ``copies`` times under distinct folder names; returns the names."""
    names = []
    for k in range(copies):
        for case in ("case_0000_p0", "case_0001_p0"):
            name = f"{case}_{k}" if copies > 1 else case
            (into / name).mkdir(parents=True)
            for f in ("image.nii.gz", "geometry.json"):
                (into / name / f).write_bytes((data / case / f).read_bytes())
            names.append(name)
    return names


# Runs the inference workflow and SIGKILLs the process from inside a writer thread as it is about to write the
# KILL_AT-th result.json (the last file of an output), so that the death falls inside that output's temporary
# folder every time; a death in the middle of a file is the same case, as files reach their names only by renaming.
KILL_AT = 3
_DYING_RUN = f"""
import os, runpy, signal, sys, threading
import scripts.reconstruction.reconstruct as reconstruct
lock, calls, write_json = threading.Lock(), [], reconstruct.write_json
def dying_write_json(*args, **kwargs):
    with lock:
        calls.append(args[0])
        if len(calls) == {KILL_AT}:
            os.kill(os.getpid(), signal.SIGKILL)
    return write_json(*args, **kwargs)
reconstruct.write_json = dying_write_json
sys.argv = ["monai.bundle", *sys.argv[1:]]
runpy.run_module("monai.bundle", run_name="__main__")
"""


def test_killed_background_writing_leaves_no_partial_output(data, tmp_path):
    """SIGKILL while the writer threads are busy (inside the third output's temporary folder): every output under
    its final name is complete, only hidden ``.<name>.*.partial`` folders are left, and the rerun finishes the rest
    without touching finished outputs."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    names = _copy_inputs(data, inputs, copies=4)
    args = {
        **OVERRIDES,
        "input_dir": str(inputs),
        "output_dir": str(out),
        "ckpt_path": str(data.parent / "model.pt"),
        "ssm_path": str(data.parent / "ssm.npz"),
        "writers": 2,
        "num_workers": 1,
    }
    cmd = [
        sys.executable,
        "-c",
        _DYING_RUN,
        "run",
        "--config_file",
        "configs/inference.yaml",
        *[x for k, v in args.items() for x in (f"--{k}", json.dumps(v) if isinstance(v, (list, dict)) else str(v))],
    ]
    log = tmp_path / "run.log"
    with log.open("wb") as sink:  # not a pipe: the killed run's data-loader worker would hold it open
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=bundle_env(), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            returncode = proc.wait(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the orphaned worker too
            proc.wait()
    assert returncode == -signal.SIGKILL, log.read_text(encoding="utf-8", errors="replace")[-2000:]
    left = list(out.iterdir())
    assert any(p.name.startswith(".") for p in left)
    finished = [p for p in left if not p.name.startswith(".")]
    for d in finished:
        assert_complete(d)
    assert 1 <= len(finished) < KILL_AT  # a writer took the third output only after finishing one before it
    before = {d.name: (d / "result.json").stat().st_mtime_ns for d in finished}
    run_inference(inputs, out, data.parent / "model.pt", data.parent / "ssm.npz", writers=2)
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no partial folders left
    for name in names:
        assert_complete(out / name)
    assert all((out / name / "result.json").stat().st_mtime_ns == t for name, t in before.items())


def test_shards_split_the_inputs_and_report_is_optional(data, tmp_path, capsys):
    """Two shards into one folder: disjoint halves whose union is every input; a shard removes only its own
    inputs' leftovers of a killed run; --report false writes everything but report.png; a bad shard is one line."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    names = _copy_inputs(
        data, inputs, copies=2
    )  # sorted: case_0000_p0_0, case_0000_p0_1, case_0001_p0_0, case_0001_p0_1
    other = out / f".{sorted(names)[1]}.abc123.partial"  # shard 1/2's input, being written by that shard
    other.mkdir(parents=True)
    run_inference(inputs, out, data.parent / "model.pt", data.parent / "ssm.npz", shard="0/2", report=False)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(names)[0::2]
    assert other.is_dir()
    for name in sorted(names)[0::2]:
        assert_complete(out / name, report=False)
        assert not (out / name / "report.png").exists()
    run_inference(inputs, out, data.parent / "model.pt", data.parent / "ssm.npz", shard="1/2")
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # shard 1 removed its own leftover
    for name in sorted(names)[1::2]:
        assert_complete(out / name)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_inference(inputs, out, data.parent / "model.pt", data.parent / "ssm.npz", shard="2/2")
    assert (
        e.value.code == 1
        and capsys.readouterr().err.strip().splitlines()[-1] == "--shard: index must satisfy 0 <= i < n, got '2/2'"
    )


def test_batched_network_calls_match_single_images(tmp_path):
    """predict_batch on 3 images (with the mirror pass) equals 3 single predictions; the batch workflow with
    batch_size 3 writes the same depth maps as batch_size 1."""
    ckpt = tiny_checkpoint(tmp_path / "net.pt")
    recon = Reconstructor(
        DualFaceDepthNet(features=FEATURES),
        ckpt,
        preprocessing=lambda d: d,
        image_size=(64, 64),
        device="cpu",
        inferer=MirrorAveragingInferer(flip_tta=True),
    )
    geometry = Geometry.standard(image_size=[64, 64], pixel_spacing_mm=[6.25, 6.25], principal_point_px=[31.5, 31.5])
    images = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    batch = recon.predict_batch(torch.from_numpy(images[:, None]), [geometry] * 3)
    for image, b in zip(images, batch, strict=True):
        a = recon.predict(image, geometry)
        np.testing.assert_allclose(b.depth, a.depth, atol=1e-3)
        np.testing.assert_allclose(b.mask_prob, a.mask_prob, atol=1e-5)
        assert b.centre_mm == pytest.approx(a.centre_mm, abs=1e-3)
    assert not np.allclose(batch[0].mask_prob, batch[1].mask_prob)  # different images, different maps


def test_report_notes_say_where_laterality_and_geometry_came_from():
    """report.png's lines under its warnings: an assumed laterality is a caution, a read one a note; the geometry's
    sources and coverage (as result.json records them) and a plausible prediction's score are notes."""
    rec = SimpleNamespace(geometry=SimpleNamespace(sid_mm=1100.0), plausibility={"plausible": False, "score": 0.8})
    png = {
        "laterality": LATERALITY_ASSUMED,
        "geometry_source": {"sid_mm": "standard geometry", "pixel_spacing_mm": "argument pixel_spacing_mm"},
        "coverage": 0.5508,
    }
    assert report_notes(png, rec) == {
        "cautions": [f"left/right {LATERALITY_ASSUMED}"],
        "notes": [
            "SID 1100 mm: standard geometry; pixel spacing: argument pixel_spacing_mm; "
            "the radiograph covers 55% of the standard field"
        ],
    }
    rec.plausibility = {"plausible": True, "score": 1.0, "min_score": 1.0}
    dicom = {"laterality": "DICOM PatientOrientation (0020,0020) L\\F", "geometry_source": {"all": "geometry.json"}}
    assert report_notes(dicom, rec) == {
        "cautions": [],
        "notes": [
            "left/right: DICOM PatientOrientation (0020,0020) L\\F",
            "SID 1100 mm and pixel spacing: geometry.json",
            "plausibility score 1.00 (at least 1: plausible)",
        ],
    }
