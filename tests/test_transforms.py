"""Transforms keep image, depth, mask and geometry consistent (analytic sphere 'bones')."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from scripts.geometry import Geometry
from scripts.io.files import InputFileError, input_error_of
from scripts.model.transforms import LoadGeometryd, NormalizeRadiographd, RandFlipLRd, lr_swap_permutation
from tests.helpers import ROOT, write_sphere_dataset

TRAIN_CONFIG = ROOT / "configs" / "train.yaml"


@pytest.fixture(scope="module")
def sphere_dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("spheres")
    return root, write_sphere_dataset(root)


def load_transforms(image_size: int = 64):
    parser = ConfigParser()
    parser.read_config(str(TRAIN_CONFIG))
    parser["image_size"] = image_size
    from monai.transforms import Compose

    return Compose(parser.get_parsed_content("load_transforms"))


def _first_sample(dataset) -> dict:
    root, _ = dataset
    entry = json.loads((root / "datalist.json").read_text())["training"][0]
    return {k: str(root / v) if k in ("image", "depth", "mask", "geometry") else v for k, v in entry.items()}


def test_load_layout(sphere_dataset):
    d = load_transforms()(_first_sample(sphere_dataset))
    assert d["image"].shape == (1, 64, 64) and d["depth"].shape == (6, 64, 64) and d["mask"].shape == (3, 64, 64)
    assert float(d["image"].min()) == 0.0 and float(d["image"].max()) == 1.0
    assert isinstance(d["geometry"], Geometry) and d["geometry"].image_size == (64, 64)
    # depth is 0 exactly outside the mask and inside it lies between the sphere's nearest and farthest points
    depth, mask = d["depth"].numpy(), d["mask"].numpy()
    assert np.all((depth[0::2] > 0) == (mask > 0)) and np.all(depth[1::2] >= depth[0::2])


def test_resize_keeps_rays(sphere_dataset):
    """Down-sampling to 32 x 32 with the resized geometry: depths still lie on the analytic spheres."""
    root, truth = sphere_dataset
    d = load_transforms(32)(_first_sample(sphere_dataset))
    pts = d["geometry"].backproject(d["depth"].numpy().astype(np.float64))
    pitch_at_object = d["geometry"].pixel_spacing_mm[0] * 950.0 / d["geometry"].sid_mm
    for i, (centre, radius) in enumerate(truth["case_0000_p0"].values()):
        inside = d["mask"][i].numpy() > 0
        # area-averaged depth: well under a pixel pitch at the object (~10.8 mm here); a nearest-neighbour
        # pick, half a pixel off the resized rays, misses by ~0.15 pitch on the small spheres
        err = np.abs(np.linalg.norm(pts[2 * i][inside] - centre, axis=-1) - radius)
        assert np.median(err) < 0.1 * pitch_at_object, np.median(err)


def test_flip_swaps_femurs_and_mirrors_geometry(sphere_dataset):
    root, truth = sphere_dataset
    d = load_transforms()(_first_sample(sphere_dataset))
    f = RandFlipLRd(prob=1.0)(d)
    assert torch.equal(f["image"], torch.flip(d["image"], (-1,)))
    assert torch.equal(f["mask"][1], torch.flip(d["mask"][2], (-1,)))  # femur_left <- femur_right
    assert torch.equal(f["depth"][2:4], torch.flip(d["depth"][4:6], (-1,)))
    assert torch.equal(f["depth"][0:2], torch.flip(d["depth"][0:2], (-1,)))
    # the mirrored geometry back-projects the flipped femur_left channel onto the mirrored right sphere
    centre, radius = truth["case_0000_p0"]["femur_right"]
    mirrored = centre * np.array([-1.0, 1.0, 1.0])
    inside = f["mask"][1].numpy() > 0
    for face in (2, 3):
        pts = f["geometry"].backproject(f["depth"][face].numpy().astype(np.float64))[inside]
        np.testing.assert_allclose(np.linalg.norm(pts - mirrored, axis=-1), radius, atol=1e-2)
    # ... and those are the original world points (the pose is mirrored too)
    orig = d["geometry"].camera_to_world_points(d["geometry"].backproject(d["depth"][4].numpy().astype(np.float64)))
    flip = f["geometry"].camera_to_world_points(f["geometry"].backproject(f["depth"][2].numpy().astype(np.float64)))
    np.testing.assert_allclose(flip[:, ::-1][inside[:, ::-1]], orig[inside[:, ::-1]], atol=1e-3)
    # flipping twice restores everything
    ff = RandFlipLRd(prob=1.0)(f)
    assert torch.equal(ff["depth"], d["depth"]) and ff["geometry"] == d["geometry"]


def test_lr_swap_permutation():
    assert lr_swap_permutation(["pelvis", "femur_left", "femur_right"]) == [0, 2, 1]
    assert lr_swap_permutation(["femur_right", "sacrum", "femur_left"]) == [2, 1, 0]


def test_normalisation_invariant_to_energy_scale():
    """A different DRR energy/gain (a global factor and offset) normalises to the same image in [0, 1]."""
    img = torch.rand(1, 32, 32) ** 2
    norm = NormalizeRadiographd(keys="image")
    a = norm({"image": img})["image"]
    b = norm({"image": 3.7 * img + 0.5})["image"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert float(a.min()) == 0.0 and float(a.max()) == 1.0


def test_bad_geometry_names_file(sphere_dataset, tmp_path):
    sample = _first_sample(sphere_dataset)
    bad = tmp_path / "geometry.json"
    bad.write_text('{"sid_mm": 1100}')
    sample["geometry"] = str(bad)
    with pytest.raises(RuntimeError) as excinfo:  # MONAI's Compose wraps the transform's error
        load_transforms()(sample)
    cause = input_error_of(excinfo.value)
    assert cause is not None and cause.path == str(bad) and "missing geometry key" in cause.problem


def test_load_geometry_matches_bones_by_name(sphere_dataset, tmp_path):
    """A sample whose geometry.json lists its bones in another order (its files' channels in that order) loads
    exactly like the standard sample: the training transforms reorder the channels by name; a sample lacking
    one of the network's bones is refused naming its geometry file. Evaluation's load_sample does the same."""
    import shutil

    from scripts.io.files import read_depth_and_mask, write_depth_and_mask
    from scripts.reconstruction.evaluate import load_sample

    root, _ = sphere_dataset
    original = _first_sample(sphere_dataset)
    geom = Geometry.load(original["geometry"])
    depth, mask = read_depth_and_mask(original["depth"], original["mask"])
    order = [2, 0, 1]  # femur_right, pelvis, femur_left
    sample, shuffled = dict(original), dict(original)
    for entry, folder, bones in ((sample, tmp_path / "std", range(3)), (shuffled, tmp_path / "shuffled", order)):
        folder.mkdir()
        shutil.copy(original["image"], folder / "image.nii.gz")
        write_depth_and_mask(
            folder,
            depth[[2 * i + f for i in bones for f in (0, 1)]],
            mask[list(bones)].astype(np.uint8),
            geom.image_affine,
        )
        (folder / "geometry.json").write_text(json.dumps({**geom.to_dict(), "bones": [geom.bones[i] for i in bones]}))
        (folder / "sample.json").write_text("{}")  # the simulator's notes: no CT extent
        entry.update({k: str(folder / Path(original[k]).name) for k in ("image", "depth", "mask", "geometry")})
    transforms = load_transforms()
    a, b = transforms(sample), transforms(shuffled)
    assert b["geometry"] == a["geometry"]
    for key in ("depth", "mask"):
        np.testing.assert_array_equal(np.asarray(b[key]), np.asarray(a[key]))
    import trimesh

    trimesh.creation.icosphere(1, 30.0).export(tmp_path / "ball.ply")  # truth meshes are matched by name anyway
    with_mesh = {"meshes": {"pelvis": str(tmp_path / "ball.ply")}}
    s_a, s_b = load_sample(sample | with_mesh, root, bones=geom.bones), load_sample(
        shuffled | with_mesh, root, bones=geom.bones
    )
    np.testing.assert_array_equal(s_b.depth, s_a.depth)
    np.testing.assert_array_equal(s_b.mask, s_a.mask)
    assert s_b.geometry.bones == geom.bones
    (tmp_path / "shuffled" / "geometry.json").write_text(
        json.dumps({**geom.to_dict(), "bones": ["femur_right", "pelvis", "sacrum"]})
    )
    with pytest.raises(
        InputFileError, match=r"geometry.json: bones \['femur_right', 'pelvis', 'sacrum'\] lack \['femur_left'\]"
    ):
        LoadGeometryd(bones=geom.bones)(shuffled)
    with pytest.raises(InputFileError, match="lack"):
        load_sample(shuffled | with_mesh, root, bones=geom.bones)


def _config(**overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(TRAIN_CONFIG))
    for key, value in {"image_size": 64, **overrides}.items():
        parser[key] = value
    return parser


@pytest.mark.parametrize("zoom", [0.9, 1.1])
def test_training_zoom_moves_image_labels_and_field_together(sphere_dataset, zoom):
    """The configured RandZoomd scales the mask area by zoom^2 about the centre, keeps the image on it, and pads the
    field with 0."""
    sample = load_transforms()(_first_sample(sphere_dataset))
    sample["image"] = sample["mask"][:1].clone()  # an image that is the first bone's mask
    parser = _config(augment_prob=1.0, zoom_range=[zoom, zoom])
    rand_zoom = next(t for t in parser.get_parsed_content("augment_transforms") if type(t).__name__ == "RandZoomd")
    out = rand_zoom(sample)
    before, after = float(sample["mask"][0].sum()), float(out["mask"][0].sum())
    assert after / before == pytest.approx(zoom**2, rel=0.15)
    agree = ((out["image"][0] > 0.5) == (out["mask"][0] > 0.5)).float().mean()
    assert agree > 0.99
    ys, xs = torch.nonzero(out["mask"][0] > 0, as_tuple=True)
    y0, x0 = torch.nonzero(sample["mask"][0] > 0, as_tuple=True)
    centre = torch.tensor([31.5, 31.5])
    moved = torch.stack([ys.float().mean(), xs.float().mean()]) - centre
    expected = (torch.stack([y0.float().mean(), x0.float().mean()]) - centre) * zoom
    assert torch.allclose(moved, expected, atol=1.0)  # scaled about the image centre (the principal point)
    depth_in = sample["depth"][0][sample["depth"][0] > 0]
    depth_out = out["depth"][0][out["depth"][0] > 0]
    assert (
        depth_in.min() - 1e-3 <= depth_out.min() and depth_out.max() <= depth_in.max() + 1e-3
    )  # depth values move, unchanged
    assert (out["fov"].min() == 0) == (zoom < 1)  # zooming out pads outside the radiograph


def test_training_input_has_the_field_channel_when_configured(sphere_dataset):
    from monai.transforms import Compose

    for channel in (False, True):
        parser = _config(fov_channel=channel, augment_prob=1.0)
        pipeline = Compose(parser.get_parsed_content("validate#preprocessing").transforms)
        out = pipeline(_first_sample(sphere_dataset))
        assert out["image"].shape[0] == (2 if channel else 1) and out["label"].shape[0] == 9
        assert parser.get_parsed_content("network_def").conv_0.conv_0.conv.in_channels == (2 if channel else 1)
