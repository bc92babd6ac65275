"""What lies outside the radiograph: padding is normalised away, filled as in training, and inference
predicts nothing there (a network that would mark bone everywhere still leaves the padding empty)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from deploy.app.pipeline import load_cases, reconstruct_image_adapter, run_inference
from PIL import Image
from scripts.geometry import Geometry
from scripts.io.radiograph_io import field_of_view
from scripts.model.networks import DualFaceDepthNet
from scripts.model.transforms import EnsureFieldOfViewd, FillOutsideFieldd, NormalizeRadiographd
from scripts.reconstruction.reconstruct import INFERENCE_CONFIG, build_reconstructor, bundle_config
from tests.helpers import FEATURES, GEOM, make_dicom, ramp, run_bundle


def bone_everywhere_network(in_channels: int = 1, features=FEATURES) -> DualFaceDepthNet:
    """A network (tiny by default) whose mask logits are +20 at every pixel: without a field of view it marks bone everywhere."""
    torch.manual_seed(0)
    net = DualFaceDepthNet(in_channels=in_channels, features=features)
    with torch.no_grad():
        net.final_conv.bias[net.n_depth : net.n_depth + net.bones] = 20.0
    return net


def test_normalisation_ignores_padding_and_fill_is_the_same_everywhere():
    torch.manual_seed(1)
    inside = torch.rand(1, 40, 30)
    padded = torch.full((1, 64, 64), 7.0)  # a padding value far outside the image's range
    padded[:, 10:50, 20:50] = inside
    fov = torch.zeros(1, 64, 64)
    fov[:, 10:50, 20:50] = 1.0
    a = NormalizeRadiographd(keys="image", fov_key="fov")({"image": padded, "fov": fov})["image"]
    b = NormalizeRadiographd(keys="image")({"image": inside})["image"]
    torch.testing.assert_close(a[:, 10:50, 20:50], b, atol=1e-5, rtol=0)
    filled = FillOutsideFieldd(fill=0.0)({"image": a, "fov": fov})["image"]
    assert filled.shape == (1, 64, 64) and torch.all(filled[fov == 0] == 0.0)
    two = FillOutsideFieldd(fill=0.0, channel=True)({"image": a, "fov": fov})["image"]
    assert two.shape == (2, 64, 64) and torch.equal(two[1:], fov) and torch.equal(two[:1], filled)
    whole = EnsureFieldOfViewd()({"image": inside})
    assert torch.equal(whole["fov"], torch.ones_like(inside))


def infer_bone_everywhere(tmp_path, write_input, **overrides) -> tuple[np.ndarray, dict]:
    """The inference workflow with :func:`bone_everywhere_network` on the one input ``write_input(folder)`` writes
    (named ``name``), in the 64 x 64 standard field ``GEOM``: its mask (H, W, B) and result.json."""
    torch.save(bone_everywhere_network().state_dict(), tmp_path / "model.pt")
    GEOM.save(tmp_path / "geometry.json")
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    name = write_input(inputs)
    run_bundle(
        "inference.yaml",
        input_dir=str(inputs),
        output_dir=str(out),
        ckpt_path=str(tmp_path / "model.pt"),
        ssm_path="",
        standard_geometry=str(tmp_path / "geometry.json"),
        features=FEATURES,
        image_size=64,
        device="cpu",
        **overrides,
    )
    return np.asarray(nib.load(str(out / name / "mask.nii.gz")).dataobj), json.loads(
        (out / name / "result.json").read_text()
    )


def test_inference_predicts_nothing_in_padding(tmp_path):
    """A 30 x 24 cm PNG resampled into the 40 cm standard field: masks only on the radiograph's own area."""

    def film(folder):
        Image.fromarray((np.random.default_rng(0).random((80, 100)) * 200 + 30).astype(np.uint8)).save(
            folder / "film.png"
        )
        return "film"

    mask, result = infer_bone_everywhere(tmp_path, film, pixel_spacing_mm=3.0)
    # by hand: the 300 x 240 mm film, centred at the same SID, covers pixel centres |u - 31.5| * 6.25 <= 150 mm
    # and |v - 31.5| * 6.25 <= 120 mm of the 64 x 64 standard field: columns 8..55, rows 13..50
    fov = np.zeros((64, 64), bool)
    fov[13:51, 8:56] = True
    np.testing.assert_array_equal(field_of_view(Geometry(1100.0, (3.0, 3.0), (100, 80)), GEOM) > 0.5, fov)
    assert not mask[~fov].any()  # nothing predicted in the padding
    assert mask[fov].all()  # the network marks bone everywhere it may
    assert result["coverage"] == pytest.approx(38 * 48 / 64**2)


def test_inference_predicts_nothing_on_dicom_pixel_padding(tmp_path):
    """A DICOM in the standard geometry whose 16 left columns hold its PixelPaddingValue: no mask there, bone everywhere else."""

    def padded(folder):
        pixels = ramp()
        pixels[:, :16] = 0
        make_dicom(
            folder / "padded.dcm",
            pixels,
            DistanceSourceToDetector=1100.0,
            ImagerPixelSpacing=[6.25, 6.25],
            PixelPaddingValue=0,
        )
        return "padded"

    mask, result = infer_bone_everywhere(tmp_path, padded)
    assert not mask[:, :16].any() and mask[:, 16:].all()
    assert result["coverage"] == pytest.approx(0.75)


def test_field_of_view_channel_reaches_the_network():
    """With fov_channel the network gets the field of view as its second channel; masks still stop at the padding."""
    rec = build_reconstructor(
        ckpt_path=None, ssm_path=None, device="cpu", features=FEATURES, image_size=64, fov_channel=True
    )
    rec.network = bone_everywhere_network(in_channels=2).eval()
    seen = []
    rec.network.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    fov = np.zeros((64, 64), np.float32)
    fov[8:56, 4:40] = 1.0
    pred = rec.predict(np.random.default_rng(2).random((64, 64)).astype(np.float32), GEOM, fov)
    assert seen[0].shape[1] == 2 and torch.equal(seen[0][0, 1], torch.as_tensor(fov))
    assert not pred.mask[:, fov == 0].any() and pred.mask[:, fov == 1].all()


def test_deploy_app_predicts_nothing_in_padding(tmp_path):
    """The MONAI Deploy app's path (load_cases -> reconstruct_image) with the shipped network's configuration: a
    300 x 240 mm film in the 400 mm standard field gives surfaces only on rays through the film."""
    features = bundle_config(INFERENCE_CONFIG).get_parsed_content("features")
    torch.save(bone_everywhere_network(features=features).state_dict(), tmp_path / "model.pt")
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray((np.random.default_rng(0).random((80, 100)) * 200 + 30).astype(np.uint8)).save(inputs / "film.png")
    standard = Geometry.standard()
    (case,), errors = load_cases(inputs, standard, pixel_spacing_mm=3.0)
    assert errors == [] and case.fov.shape == (standard.height, standard.width) and 0 < case.fov.mean() < 1
    meshes = run_inference(case, reconstruct_image_adapter(tmp_path / "model.pt", "cpu", ssm_path=""))
    assert set(meshes) == set(standard.bones)
    # by hand: each vertex's ray meets the detector at SID * (x, y) / z (mm from the principal point); the film spans
    # +-150 x +-120 mm there, and a network pixel (128 px over 400 mm) is 3.125 mm wide
    pitch = 400.0 / 128
    for mesh in meshes.values():
        at_detector = standard.sid_mm * mesh.vertices[:, :2] / mesh.vertices[:, 2:]
        reach = np.abs(at_detector).max(axis=0)
        assert reach[0] <= 150.0 + pitch and reach[1] <= 120.0 + pitch  # nothing beyond the film
        assert reach[0] >= 150.0 - 2 * pitch and reach[1] >= 120.0 - 2 * pitch  # bone everywhere it may be
