"""The real-image checks (benchmarks/real_images.py; data in ../shared/data, skipped without it): the
bone-side convention, the real radiographs (nothing predicted outside the image), and radiographs
simulated from the real CT with its TotalSegmentator masks scored with the shipped model. Commands and
numbers: docs/real_radiographs.md."""

import shutil

import numpy as np
import pytest
from benchmarks.real_images import (
    DICE_TARGET,
    GALLERY_PIXEL_SPACING_MM,
    REAL_CT_DIR,
    REAL_RADIOGRAPHS,
    run_ct_check,
    run_gallery,
    sides_ok,
    with_phantom_bone,
    with_posterior_fat,
)
from scripts.data.simulate import case_name_of, label_positions, table_clearance_mm, table_shift_mm
from scripts.data.volumes import Volume, read_ct, read_labels
from scripts.geometry import BONES, Geometry, standard_ap_pose
from scripts.io.files import write_nifti
from scripts.reconstruction.plausibility import side_fractions

RADIOGRAPHS = (
    "331_DDH_10.jpg",
    "331_DDH_107.jpg",
    "331_DDH_121.jpg",
)  # the shared folder's three (docs/real_radiographs.md)
# Floors on the shipped model's mask Dice per bone, mean over the 4 poses (seed 0) of the real CT: a little below
# today's 0.91 / 0.74 / 0.88 (release 0.10.0, docs/real_radiographs.md, "real-ct-check"; min 0.89 / 0.64 / 0.86 over the
# poses). A network input inverted (pose 0: 0.77 / 0.39 / 0.44; pelvis mean 0.52) or shifted 6 rows (19 mm) against its
# geometry (pose 0: 0.85 / 0.75 / 0.68; pelvis mean 0.85) falls below them.
DICE_FLOOR = {"pelvis": 0.89, "femur_left": 0.70, "femur_right": 0.85}


def test_sides_convention():
    """femur_left at larger u (camera x -> patient left, scripts/geometry.py); fractions counted by hand."""
    mask = np.zeros((3, 8, 10), bool)
    mask[0, 2:4, 2:8] = True  # pelvis: 3 of 6 columns on each side of the centre u = 4.5
    mask[1, 5:7, 6:9] = True  # femur_left right of the centre
    mask[2, 5:7, 1:4] = True  # femur_right left of it
    sides = side_fractions(mask, BONES, 4.5)
    assert sides == {"pelvis": 0.5, "femur_left": 1.0, "femur_right": 1.0} and sides_ok(sides)
    mask[1, 7, 0:2] = True  # 2 of 8 femur_left pixels on the wrong side
    assert side_fractions(mask, BONES, 4.5)["femur_left"] == 0.75 and not sides_ok(side_fractions(mask, BONES, 4.5))
    swapped = mask[[0, 2, 1]]
    assert not sides_ok(side_fractions(swapped, BONES, 4.5))
    assert not sides_ok(side_fractions(mask[:2], BONES[:2], 4.5))  # a femur not found is not on its side


@pytest.mark.skipif(
    not REAL_RADIOGRAPHS.is_dir(), reason="real radiographs (../shared/data/real_radiographs) not present"
)
def test_real_radiographs_nothing_outside_the_image_and_bones_on_their_sides(tmp_path):
    """The three real radiographs through the inference workflow: no predicted mask pixel in the padding of the
    standard field, and each predicted bone mask on its side of the image, counted here from the masks (femur_left
    at larger u: camera x points to the patient's left; the documented targets: at least 95% of each femur's pixels
    on its half, at least 25% of the pelvis on each half)."""
    (tmp_path / "in").mkdir()
    for name in RADIOGRAPHS:  # these three only, whatever else the folder holds; one missing fails
        shutil.copy(REAL_RADIOGRAPHS / name, tmp_path / "in" / name)
    rows = run_gallery(tmp_path / "in", tmp_path / "out", GALLERY_PIXEL_SPACING_MM, {"device": "cpu", "ssm_path": None})
    assert sorted(r["name"] for r in rows) == sorted(name.split(".")[0] for name in RADIOGRAPHS)
    # by hand: 331 px at 0.9 mm span 297.9 mm of the detector, centred on the standard field's centre;
    # the network's 128 px of 3.125 mm (same SID) cover it between u = 63.5 -+ 297.9 / 2 / 3.125
    standard = Geometry.standard()
    assert standard.image_size == (256, 256) and standard.pixel_spacing_mm == (1.5625, 1.5625)
    half = 331 * GALLERY_PIXEL_SPACING_MM / 2 / 3.125
    u = np.arange(128)
    inside = (np.abs(u - 63.5)[None, :] <= half) & (np.abs(u - 63.5)[:, None] <= half)
    assert inside.sum() < 0.6 * 128 * 128  # the check has padding to look at
    for r in rows:
        np.testing.assert_array_equal(r["image_area"], inside)
        assert r["found"] == list(BONES), f"{r['name']}: bones found {r['found']}"  # all three, channels in this order
        assert r["mask"].shape == (3, 128, 128)
        assert not (r["mask"] & ~inside).any(), f"{r['name']}: {r['outside_px']} mask pixels in the padding"
        columns = {bone: np.nonzero(r["mask"][b])[1] for b, bone in enumerate(BONES)}
        right_half = {bone: float(np.mean(c > 63.5)) for bone, c in columns.items()}  # image right = patient left
        assert columns["femur_left"].mean() > 63.5 and right_half["femur_left"] >= 0.95, f"{r['name']}: {right_half}"
        assert columns["femur_right"].mean() < 63.5 and right_half["femur_right"] <= 0.05, f"{r['name']}: {right_half}"
        assert 0.25 <= right_half["pelvis"] <= 0.75, f"{r['name']}: pelvis {right_half}"
        assert r["sides_ok"]


@pytest.mark.skipif(
    not (REAL_CT_DIR / "example_seg").is_dir(), reason="shared real CT (../shared/data/real_ct) not present"
)
def test_radiograph_simulated_from_the_real_ct_scores_the_shipped_model(tmp_path):
    """The ``ct`` check's pipeline on its 4 poses (seed 0, as in docs/real_radiographs.md): the TotalSegmentator
    folder's three bones in view, each true mask on its side, and the shipped model's mask Dice (counted here from
    the predicted and true masks) at least :data:`DICE_FLOOR` per bone on average; the reported Dice are these.

    The target (Dice >= DICE_TARGET per bone in view) is the benchmark's exit status, not asserted
    here: the shipped model meets it for the pelvis and the right femur only (docs/real_radiographs.md)."""
    summary = run_ct_check(
        REAL_CT_DIR / "example_ct.nii.gz",
        REAL_CT_DIR / "example_seg",
        "totalsegmentator",
        4,
        0,
        tmp_path,
        {"device": "cpu"},
        surfaces=False,
    )
    bones = list(Geometry.standard().bones)
    midline = Geometry.standard().resized((128, 128)).principal_point_px[0]  # the network-size maps' principal point
    assert bones == list(BONES) and len(summary["samples"]) == 4
    dice = {bone: [] for bone in bones}
    for sample in summary["samples"]:
        assert sample["in_view"] == bones
        assert sides_ok(side_fractions(sample["mask"], bones, midline))
        pred, truth = np.asarray(sample["pred_mask"], bool), np.asarray(sample["mask"], bool)
        assert pred.shape == truth.shape == (3, 128, 128)
        for b, bone in enumerate(bones):
            dice[bone].append(2 * (pred[b] & truth[b]).sum() / (pred[b].sum() + truth[b].sum()))
    for bone in bones:
        assert (
            np.mean(dice[bone]) >= DICE_FLOOR[bone]
        ), f"{bone}: mask Dice {np.round(dice[bone], 3)} (mean below {DICE_FLOOR[bone]})"
        assert summary["dice"][bone] == pytest.approx(np.mean(dice[bone]))
        assert summary["dice_min"][bone] == pytest.approx(np.min(dice[bone]))
    assert summary["meets_dice_target"] == all(min(d) >= DICE_TARGET for d in dice.values())


def test_posterior_fat_what_if_by_hand(tmp_path):
    """A body block (0 HU, 4 mm voxels, RAS y 10..66 mm, through the CT's whole z extent so the couch removal keeps
    all of it) with a pelvis slab (voxel centres y 32..44 mm) lies 22 mm
    off the table (unrotated pose); 12 mm of fat under its back: three -100 HU rows behind it, the labels where
    they were in the world, the pelvis 34 mm off the table; the copy keeps the case name (the same simulated poses)."""
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    ct = np.full((40, 20, 30), -1000, np.int16)
    ct[4:36, 3:17, :] = 0
    labels = np.zeros(ct.shape, np.uint8)
    labels[8:32, 8:12, 18:24] = 1
    write_nifti(tmp_path / "subject_7.nii.gz", ct, affine)
    write_nifti(tmp_path / "labels.nii.gz", labels, affine)
    ct_path, labels_path = with_posterior_fat(
        tmp_path / "subject_7.nii.gz", tmp_path / "labels.nii.gz", None, 12.0, tmp_path / "fat"
    )
    assert case_name_of(ct_path) == "subject_7" and ct_path.parent == labels_path.parent == tmp_path / "fat"
    fat, fat_labels = read_ct(ct_path), read_labels(labels_path, None)
    assert fat.array.shape == (40, 23, 30) and fat.affine[1, 3] == pytest.approx(-12.0)
    expected = np.concatenate([np.full((40, 3, 30), -1000, np.int16), ct], axis=1)
    expected[4:36, 3:6, :] = -100  # under the back: new rows 3-5 (y -2..10 mm) between the new surface and the skin
    np.testing.assert_array_equal(fat.array, expected)
    np.testing.assert_allclose(
        label_positions(fat_labels, ("pelvis",)), label_positions(Volume(labels, affine), ("pelvis",))
    )
    centre = np.array([80.0, 38.0, 60.0])
    for volume, expected in ((Volume(ct.astype(np.float32), affine, "ct"), 22.0), (fat, 34.0)):
        pose = standard_ap_pose(centre, 950.0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
        pose[2, 3] += table_shift_mm(volume, pose, centre, 1075.0, -500.0)
        assert table_clearance_mm(label_positions(Volume(labels, affine), ("pelvis",)), pose, 1075.0) == pytest.approx(
            expected, abs=1.0
        )


def test_phantom_bone_what_if_by_hand(tmp_path):
    """A 4 x 4 x 4 pelvis cube and a 3 x 3 x 3 femur cube in a 100 HU body: the 56 outer voxels of the first and the 26
    of the second get the cortex, the cube's 8 inner voxels and the femur's centre the interior, a metal voxel on the
    cube's surface keeps its 3000 HU, every voxel outside the labels keeps its own; labels and case name unchanged."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    ct = np.full((12, 12, 12), 100, np.int16)
    ct[:, :, 0] = -1000
    labels = np.zeros(ct.shape, np.uint8)
    labels[2:6, 2:6, 2:6] = 1
    labels[7:10, 7:10, 7:10] = 2
    ct[2, 2, 2] = 3000
    write_nifti(tmp_path / "subject_3.nii.gz", ct, affine)
    write_nifti(tmp_path / "labels.nii.gz", labels, affine)
    ct_path, labels_path = with_phantom_bone(
        tmp_path / "subject_3.nii.gz", tmp_path / "labels.nii.gz", None, 1100.0, 300.0, tmp_path / "bone"
    )
    assert case_name_of(ct_path) == "subject_3"
    got = read_ct(ct_path).array
    np.testing.assert_array_equal(read_labels(labels_path, None).array, labels)
    expected = ct.astype(np.float32)
    expected[labels > 0] = 1100.0
    expected[3:5, 3:5, 3:5] = 300.0
    expected[8, 8, 8] = 300.0
    expected[2, 2, 2] = 3000.0
    np.testing.assert_array_equal(got, expected)
    assert (got[labels == 1] == 1100.0).sum() == 56 - 1 and (got[labels == 2] == 1100.0).sum() == 26
