"""Volume reading (NIfTI vs DICOM series, RAS), HU/grid checks, label maps and TotalSegmentator labels, couch removal."""

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from scripts.data.simulate import table_shift_mm
from scripts.data.volumes import (
    LABEL_MAP_PRESETS,
    TOTALSEGMENTATOR_IDS,
    Volume,
    bones_center,
    crop_along,
    load_label_map,
    read_ct,
    read_labels,
    read_volume,
    remove_couch,
    totalsegmentator_version,
)
from scripts.geometry import standard_ap_pose
from scripts.io.files import InputFileError, shared_data_dir
from tests.helpers import write_dicom_series

REAL_CT_DIR = (shared_data_dir() or Path("/nonexistent")) / "real_ct"
REAL_CT = REAL_CT_DIR / "example_ct.nii.gz"
needs_real_ct = pytest.mark.skipif(not REAL_CT.exists(), reason="shared real CT (../shared/data/real_ct) not present")
# RAS affine of a typical DICOM axial scan: i runs to patient left (-x), j to posterior (-y).
AFFINE = np.array([[-0.8, 0, 0, 100.0], [0, -0.9, 0, 50.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]])


def ct_array(shape=(12, 10, 6)):
    rng = np.random.default_rng(0)
    a = rng.integers(-1000, 1500, size=shape).astype(np.int16)
    a[0] = -1000
    return a


def write_nib(path, array, affine=AFFINE):
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def test_dicom_series_and_nifti_give_the_same_ras_geometry(tmp_path):
    a = ct_array()
    nii = read_volume(write_nib(tmp_path / "ct.nii.gz", a))
    dcm = read_volume(write_dicom_series(tmp_path / "dicom", a, AFFINE))
    np.testing.assert_allclose(nii.affine, AFFINE, atol=1e-4)
    np.testing.assert_allclose(dcm.affine, AFFINE, atol=1e-3)
    np.testing.assert_array_equal(dcm.array, a.astype(np.float32))
    np.testing.assert_array_equal(nii.array, a.astype(np.float32))


def test_bad_inputs_name_the_file(tmp_path):
    good = write_nib(tmp_path / "good.nii.gz", ct_array((30, 30, 30)))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    nan = np.zeros((8, 8, 8), np.float32) - 1000
    nan[2, 2, 2] = np.nan
    raw = np.random.default_rng(1).integers(0, 4000, (8, 8, 8)).astype(np.uint16)  # raw detector values
    two_series = write_dicom_series(tmp_path / "two_series", ct_array(), AFFINE)  # e.g. a localizer and the axials
    for f in write_dicom_series(
        tmp_path / "other", ct_array(), AFFINE, series="1.2.826.0.1.3680043.2.1125.7"
    ).iterdir():
        f.rename(two_series / f"other_{f.name}")
    cases = {
        truncated: "unreadable",
        write_nib(tmp_path / "nan.nii.gz", nan): "NaN",
        write_nib(tmp_path / "raw.nii.gz", raw): "Hounsfield",
        tmp_path / "missing.nii.gz": "not found",
        tmp_path: "^[^(]*: folder holds no DICOM series$",
        two_series: "holds 2 DICOM series .*2.1125.2, 1.2.826.0.1.3680043.2.1125.7.: give a folder holding one series",
    }
    for path, problem in cases.items():
        with pytest.raises(InputFileError, match=problem) as err:
            read_ct(path)
        assert str(path) in str(err.value)


def test_labels_resampled_or_refused(tmp_path):
    ct_arr = -1000 * np.ones((20, 20, 10), np.int16)
    ct = read_ct(write_nib(tmp_path / "ct.nii.gz", ct_arr))
    fine = np.zeros((20, 20, 10), np.uint8)
    fine[10:, :, :] = 2
    coarse = fine[::2, ::2, ::2]
    coarse_affine = AFFINE.copy()
    coarse_affine[:3, :3] *= 2
    coarse_affine[:3, 3] += AFFINE[:3, :3] @ [0.5, 0.5, 0.5]  # same physical extent, 2x voxels
    lab = read_labels(write_nib(tmp_path / "coarse.nii.gz", coarse, coarse_affine), ct)
    assert lab.array.shape == ct.array.shape
    # fine voxel j lies at coarse coordinate (j - 0.5) / 2 = j / 2 - 0.25: never a tie between two coarse voxels,
    # so nearest neighbour reproduces every fine voxel (a half-voxel shift moves the boundary plane j = 9: 95%)
    assert np.array_equal(lab.array, fine)
    shifted = AFFINE.copy()
    shifted[:3, 3] += [50.0, 0, 0]
    bad = write_nib(tmp_path / "shifted.nii.gz", fine, shifted)
    with pytest.raises(InputFileError, match="physical space") as err:
        read_labels(bad, ct)
    assert "shifted.nii.gz" in str(err.value)


def test_label_maps_presets_and_files(tmp_path):
    ct = read_ct(write_nib(tmp_path / "ct.nii.gz", -1000 * np.ones((4, 4, 4), np.int16)))
    ts = np.zeros((4, 4, 4), np.uint8)
    ts[0, 0, 0], ts[1, 0, 0], ts[2, 0, 0], ts[3, 0, 0], ts[3, 3, 3] = (
        77,
        25,
        76,
        75,
        5,
    )  # hip_left, sacrum, femur_right, femur_left (the patient's left: RAS -x, higher i in AFFINE), gallbladder
    lab = read_labels(
        write_nib(tmp_path / "ts.nii.gz", ts), ct, LABEL_MAP_PRESETS["totalsegmentator_v2"]
    )  # a map as sample.json records it
    assert [lab.array[i, 0, 0] for i in range(4)] == [1, 1, 3, 2] and lab.array[3, 3, 3] == 0
    custom = tmp_path / "map.json"
    custom.write_text(json.dumps({"7": "femur_right", "8": 1}))
    assert load_label_map(custom) == {7: 3, 8: 1}
    custom.write_text(json.dumps({"7": "tibia"}))
    with pytest.raises(InputFileError, match="map.json"):
        load_label_map(custom)
    # pelvis voxels at i = 0, 1 (j = k = 0): its box centre, 10% of its (zero) height lower
    np.testing.assert_allclose(bones_center(lab), AFFINE[:3, :3] @ [0.5, 0, 0] + AFFINE[:3, 3])


def test_bones_center_centres_on_pelvis_shifted_inferiorly():
    lab = np.zeros((10, 10, 30), np.uint8)
    lab[2:8, 2:8, 10:30] = 1  # pelvis: k = 10..29 -> 19 voxel steps of 2 mm = 38 mm high
    lab[3:5, 3:5, 0:12] = 2  # femur reaching below the pelvis does not move the centre
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    centre = bones_center(Volume(lab, affine))
    np.testing.assert_allclose(centre, [4.5, 4.5, 2.0 * 19.5 - 0.1 * 38.0])
    only_femur = np.where(lab == 2, 2, 0).astype(np.uint8)
    np.testing.assert_allclose(bones_center(Volume(only_femur, affine)), [3.5, 3.5, 11.0])


def ts_volume(version, spacing=4.0, shape=(60, 20, 30)):
    """Hips and femurs of one TotalSegmentator id table as boxes, patient left at RAS -x (low i), femurs below."""
    ids = TOTALSEGMENTATOR_IDS[version]
    a = np.zeros(shape, np.uint8)
    a[5:25, 5:15, 15:28], a[35:55, 5:15, 15:28] = ids["hip_left"], ids["hip_right"]
    a[27:33, 5:15, 15:28] = ids["sacrum"]
    a[10:16, 8:12, 0:14], a[44:50, 8:12, 0:14] = ids["femur_left"], ids["femur_right"]
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = [-spacing * (shape[0] - 1) / 2, 0, 0]
    return a, affine


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_totalsegmentator_version_told_from_the_labels(tmp_path, version):
    a, affine = ts_volume(version)
    ct = read_ct(write_nib(tmp_path / "ct.nii.gz", np.full(a.shape, -1000, np.int16), affine))
    path = write_nib(tmp_path / "ts.nii.gz", a, affine)
    assert totalsegmentator_version(a, affine, path) == version
    lab = read_labels(path, ct, "totalsegmentator")
    assert lab.label_map == LABEL_MAP_PRESETS[f"totalsegmentator_{version}"]
    expected = np.zeros(a.shape, np.uint8)  # by hand: hips and sacrum pelvis, femurs by side
    expected[5:55, 5:15, 15:28] = 1
    expected[25:27, 5:15, 15:28] = expected[33:35, 5:15, 15:28] = 0
    expected[10:16, 8:12, 0:14], expected[44:50, 8:12, 0:14] = 2, 3
    np.testing.assert_array_equal(lab.array, expected)
    # left hip and femur on the right (an array flipped without its affine): no version fits, and no label map would
    # mend it (it used to ask for one): one line saying left and right are swapped, naming the version
    mirrored = write_nib(tmp_path / "mirrored.nii.gz", a[::-1].copy(), affine)
    swapped = rf"mirrored.nii.gz: TotalSegmentator {version} hip or femur ids lie mirrored .*: left and right swapped"
    for preset in ("totalsegmentator", f"totalsegmentator_{version}"):
        with pytest.raises(InputFileError, match=swapped):
            read_labels(mirrored, ct, preset)
    for right in ("hip_right", "femur_right"):  # one side only: nothing to tell a version or a mirror by
        a[a == TOTALSEGMENTATOR_IDS[version][right]] = 0
    with pytest.raises(InputFileError, match="one.nii.gz: cannot tell TotalSegmentator v1 from v2 .*neither fit"):
        read_labels(write_nib(tmp_path / "one.nii.gz", a[::-1].copy(), affine), ct, "totalsegmentator")


def test_totalsegmentator_folder_read_by_structure_names(tmp_path):
    a, affine = ts_volume("v2")
    ct = read_ct(write_nib(tmp_path / "ct.nii.gz", np.full(a.shape, -1000, np.int16), affine))
    folder = tmp_path / "seg"
    folder.mkdir()
    for name in ("hip_left", "hip_right", "sacrum", "femur_left", "femur_right"):
        write_nib(folder / f"{name}.nii.gz", (a == TOTALSEGMENTATOR_IDS["v2"][name]).astype(np.uint8), affine)
    write_nib(
        folder / "vertebrae_L5.nii.gz", np.zeros(a.shape, np.uint8), affine
    )  # other structures are not bones of the model
    from_folder = read_labels(folder, ct)
    np.testing.assert_array_equal(
        from_folder.array, read_labels(write_nib(tmp_path / "ts.nii.gz", a, affine), ct, "totalsegmentator").array
    )
    assert from_folder.label_map is None
    write_nib(folder / "femur_left.nii.gz", np.zeros((5, 5, 5), np.uint8), affine)
    with pytest.raises(InputFileError, match="femur_left.nii.gz: mask is not on the grid"):
        read_labels(folder, ct)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        InputFileError,
        match="empty: label folder lacks hip_left.nii.gz, hip_right.nii.gz, sacrum.nii.gz, femur_left.nii.gz, femur_right.nii.gz ",
    ):
        read_labels(empty, ct)


def test_femurs_on_the_wrong_sides_are_refused(tmp_path):
    """femur_left must lie to the patient's left (RAS -x) of femur_right: a TotalSegmentator folder with the femur masks
    swapped and a label map with the femur ids crossed are refused naming them (each femur was taught as the other);
    the true sides and one femur alone are read."""
    a, affine = ts_volume("v1")  # femur_left voxels i 10..15 (centroid x = 4 * 12.5 - 118 = -68 mm), right 44..49: +68
    ct = read_ct(write_nib(tmp_path / "ct.nii.gz", np.full(a.shape, -1000, np.int16), affine))
    ids = TOTALSEGMENTATOR_IDS["v1"]
    ts = write_nib(tmp_path / "ts.nii.gz", a, affine)
    line = (
        "femur_left lies at RAS x 68 mm, to the patient's right of femur_right (-68 mm; the patient's left is RAS -x)"
    )
    with pytest.raises(InputFileError, match=re.escape(f"{ts}: {line}")):
        read_labels(ts, ct, {ids["femur_left"]: "femur_right", ids["femur_right"]: "femur_left"})
    assert read_labels(ts, ct, {ids["femur_right"]: "femur_left"}).array.max() == 2  # one femur: no sides to compare
    for name, swapped in (("seg", False), ("seg_swapped", True)):
        (tmp_path / name).mkdir()
        for structure, i in ids.items():
            if structure in ("femur_left", "femur_right") and swapped:
                structure = {"femur_left": "femur_right", "femur_right": "femur_left"}[structure]
            write_nib(tmp_path / name / f"{structure}.nii.gz", (a == i).astype(np.uint8), affine)
    assert np.array_equal(read_labels(tmp_path / "seg", ct).array, read_labels(ts, ct, "totalsegmentator").array)
    with pytest.raises(InputFileError, match=re.escape(f"{tmp_path / 'seg_swapped'}: {line}")):
        read_labels(tmp_path / "seg_swapped", ct)


def test_bundle_map_refuses_ids_it_does_not_know(tmp_path):
    """Without --label-map a TotalSegmentator file's ids 1..3 (spleen, kidneys) would become pelvis and femurs."""
    a, affine = ts_volume("v1")
    ct = read_ct(write_nib(tmp_path / "ct.nii.gz", np.full(a.shape, -1000, np.int16), affine))
    a[20:40, 15:20, 28:30], a[5:10, 15:20, 28:30], a[50:55, 15:20, 28:30] = 1, 2, 3  # spleen, kidneys
    ts = write_nib(tmp_path / "ts.nii.gz", a, affine)
    for spec in (None, "default"):
        with pytest.raises(
            InputFileError,
            match=r"ts.nii.gz: holds label ids 88, 89, 90, 91, 92 that the bundle's label map .* "
            r"does not know; TotalSegmentator labels: pass --label-map totalsegmentator",
        ):
            read_labels(ts, ct, spec)
    assert set(np.unique(read_labels(ts, ct, {90: "pelvis"}).array)) == {
        0,
        1,
    }  # a map of the user's ids leaves the others out
    bundle = np.zeros(
        a.shape, np.int16
    )  # a phantom's labels: the bones and lumbar vertebrae (4, background after mapping)
    bundle[0:4, 0, 0] = [1, 2, 3, 4]
    lab = read_labels(write_nib(tmp_path / "bundle.nii.gz", bundle, affine), ct)
    assert lab.array[0:4, 0, 0].tolist() == [1, 2, 3, 0] and lab.label_map == {1: 1, 2: 2, 3: 3}
    bundle[5, 0, 0] = -1
    with pytest.raises(InputFileError, match="bundle.nii.gz: holds label ids -1 that"):
        read_labels(write_nib(tmp_path / "bundle.nii.gz", bundle, affine), ct)


@pytest.mark.parametrize("version, other", [("v1", "v2"), ("v2", "v1")])
def test_explicit_totalsegmentator_version_must_fit_the_labels(tmp_path, version, other):
    """The other version's preset on a file maps the wrong structures (v1's right ribs 8/9 are v2's hips 77/78):
    refused like the auto preset refuses, naming the version that fits; the right one reads as the auto preset does."""
    a, affine = ts_volume(version)
    a[40:50, 15:18, 28], a[40:50, 15:18, 29] = 77, 78  # v1: rib_right_8, rib_right_9 (v2: hips); both on the right
    ct = read_ct(write_nib(tmp_path / "ct.nii.gz", np.full(a.shape, -1000, np.int16), affine))
    path = write_nib(tmp_path / "ts.nii.gz", a, affine)
    with pytest.raises(
        InputFileError,
        match=rf"ts.nii.gz: does not fit TotalSegmentator {other} class ids \(.*\) but fits {version}'s; "
        rf"pass --label-map totalsegmentator_{version}$",
    ):
        read_labels(path, ct, f"totalsegmentator_{other}")
    right = read_labels(path, ct, f"totalsegmentator_{version}")
    assert right.label_map == LABEL_MAP_PRESETS[f"totalsegmentator_{version}"]
    np.testing.assert_array_equal(right.array, read_labels(path, ct, "totalsegmentator").array)
    # neither version's hips or femurs on the sides: a JSON map of the file's ids is the remedy
    a[a == TOTALSEGMENTATOR_IDS[version]["hip_right"]] = 0
    a[a == TOTALSEGMENTATOR_IDS[version]["femur_right"]] = 0
    stray = write_nib(tmp_path / "stray.nii.gz", a, affine)
    with pytest.raises(
        InputFileError,
        match=f"stray.nii.gz: does not fit TotalSegmentator {version} .*, nor the other version's; pass a JSON label map",
    ):
        read_labels(stray, ct, f"totalsegmentator_{version}")


def ts_folder(folder, names, version="v2", empty=()):
    """TotalSegmentator's output folder of ``ts_volume(version)``: the masks ``names``, those in ``empty`` all zero."""
    a, affine = ts_volume(version)
    folder.mkdir()
    for name in names:
        write_nib(
            folder / f"{name}.nii.gz",
            ((a == TOTALSEGMENTATOR_IDS[version][name]) & (name not in empty)).astype(np.uint8),
            affine,
        )
    return folder


def test_totalsegmentator_folder_missing_masks_refused_empty_ones_read(tmp_path):
    """A folder made with --roi_subset without the femurs would label femurs the image shows as absent."""
    a, affine = ts_volume("v2")
    ct = read_ct(write_nib(tmp_path / "ct.nii.gz", np.full(a.shape, -1000, np.int16), affine))
    subset = ts_folder(tmp_path / "subset", ("hip_left", "hip_right", "sacrum", "vertebrae_S1"))
    with pytest.raises(InputFileError, match="subset: label folder lacks femur_left.nii.gz, femur_right.nii.gz "):
        read_labels(subset, ct)
    # empty masks are bones outside the CT (a crop): read as absent; v1's folders have no vertebrae_S1
    cropped = read_labels(
        ts_folder(
            tmp_path / "cropped",
            ("hip_left", "hip_right", "sacrum", "femur_left", "femur_right"),
            empty=("femur_left",),
        ),
        ct,
    )
    assert (cropped.array == 2).sum() == 0 and (cropped.array == 3).sum() == (
        a == TOTALSEGMENTATOR_IDS["v2"]["femur_right"]
    ).sum()
    assert (cropped.array == 1).sum() == np.isin(
        a, [TOTALSEGMENTATOR_IDS["v2"][n] for n in ("hip_left", "hip_right", "sacrum")]
    ).sum()


def test_label_map_of_ids_refused_for_a_folder(tmp_path):
    """A folder is read by structure name: only the TotalSegmentator presets (or none) make sense with it."""
    a, affine = ts_volume("v1")
    ct = read_ct(write_nib(tmp_path / "ct.nii.gz", np.full(a.shape, -1000, np.int16), affine))
    seg = ts_folder(tmp_path / "seg", ("hip_left", "hip_right", "sacrum", "femur_left", "femur_right"), "v1")
    expected = read_labels(seg, ct).array
    for spec in ("totalsegmentator", "totalsegmentator_v1", "totalsegmentator_v2"):
        np.testing.assert_array_equal(read_labels(seg, ct, spec).array, expected)
    custom = tmp_path / "map.json"
    custom.write_text(json.dumps({"90": "pelvis"}))
    for spec, given in (
        ("default", "--label-map default"),
        (custom, "a label map of ids"),
        ({90: 1}, "a label map of ids"),
    ):
        with pytest.raises(
            InputFileError,
            match=f"seg: a TotalSegmentator folder is read by structure file names .*: {given} does not apply; pass no --label-map",
        ):
            read_labels(seg, ct, spec)


def couch_ct(gap_mm):
    """2 mm CT: an elliptic body (40 HU) with bone and bowel gas, and a 6 mm couch plate (300 HU) ``gap_mm`` behind it."""
    shape, s = (100, 80, 20), 2.0
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    body = ((i - 50) / 40.0) ** 2 + ((j - 45) / 25.0) ** 2 <= 1.0  # posterior skin at j = 20 (RAS +y anterior)
    a = np.full(shape, -1000, np.int16)
    a[body] = 40
    a[40:60, 40:50] = 700  # bone
    a[30:36, 55:60] = -1000  # gas
    a[31:35, 57] = 40  # a thin wall inside the gas stays body
    back = 20 - int(round(gap_mm / s))
    a[5:95, back - 3 : back] = 300  # plate, 3 voxels thick, j = back-3 .. back-1
    affine = np.diag([s, s, s, 1.0])
    return Volume(a.astype(np.float32), affine, "couch.nii.gz"), body


@pytest.mark.parametrize("gap_mm", [4.0, 10.0])  # a pad (air in HU terms) between couch top and skin
def test_couch_removed_before_the_table_model(gap_mm):
    ct, body = couch_ct(gap_mm)
    clean, removed = remove_couch(ct)  # 3 mm analysis grid: blocks of 2 voxels
    plate = np.zeros(ct.array.shape, bool)
    back = 20 - int(round(gap_mm / 2.0))
    plate[5:95, back - 3 : back] = True
    body3d = np.repeat(body[..., None], ct.array.shape[2], 2)
    lost = body3d & (clean.array != ct.array)
    assert lost.sum() <= 0.005 * body3d.sum()  # at most a voxel rounded off the skin where the plate meets it
    assert not (lost & ndimage.binary_erosion(body3d, iterations=2)).any()  # inside (bone, gas and its wall) untouched
    assert ((clean.array == ct.array) | plate | lost).all()
    assert (clean.array[plate] == -1000).all()
    assert removed == plate.sum() + lost.sum()
    assert (
        remove_couch(Volume(np.where(plate, -1000.0, ct.array).astype(np.float32), ct.affine))[1] == 0
    )  # no couch: nothing to remove
    # the table touches the posterior skin (RAS y = 20 * 2 mm) on the central line through (100, 90, 20) mm
    centre = np.array([100.0, 90.0, 20.0])
    pose = standard_ap_pose(centre, 950.0, [0, 0, 0], [0, 0, 0])
    skin_z = 950.0 + (centre[1] - 2.0 * 20)
    assert table_shift_mm(clean, pose, centre, 1065.0, -500.0) == pytest.approx(1065.0 - skin_z, abs=1.0)
    assert (
        table_shift_mm(ct, pose, centre, 1065.0, -500.0) < 1065.0 - skin_z - gap_mm - 5.0
    )  # the couch would have been the skin


@needs_real_ct
def test_real_ct_totalsegmentator_folder_and_multilabel_agree_and_couch_removed():
    ct = read_ct(REAL_CT)
    assert np.allclose(ct.affine, nib.load(str(REAL_CT)).affine, atol=1e-3)
    seg = REAL_CT_DIR / "example_seg"
    folder = read_labels(seg, ct)
    multi_path = REAL_CT_DIR / "example_seg_multilabel.nii.gz"
    multi = read_labels(multi_path, ct, "totalsegmentator")
    assert multi.label_map == LABEL_MAP_PRESETS["totalsegmentator_v1"]  # the file holds v1 ids (NOTICE.md)
    np.testing.assert_array_equal(folder.array, multi.array)
    masks = {
        n: np.asarray(nib.load(str(seg / f"{n}.nii.gz")).dataobj) > 0
        for n in ("hip_left", "hip_right", "sacrum", "femur_left", "femur_right")
    }
    np.testing.assert_array_equal(folder.array == 1, masks["hip_left"] | masks["hip_right"] | masks["sacrum"])
    np.testing.assert_array_equal(folder.array == 2, masks["femur_left"])
    left_x, right_x = ((ct.affine[:3, :3] @ np.argwhere(folder.array == b).mean(0))[0] for b in (2, 3))
    assert left_x < right_x - 100  # patient left is RAS -x
    clean, removed = remove_couch(ct)
    gone = (ct.array > -500) & (clean.array <= -500)
    assert removed == gone.sum() > 5000  # the curved couch under the patient (checked by eye: docs/simulation.md)
    assert (
        np.mean(np.argwhere(gone)[:, 1] <= 24) > 0.97
    )  # posterior (RAS +y anterior, 3 mm voxels): under the patient's back
    assert not (gone & ndimage.binary_dilation(folder.array > 0, iterations=3)).any()


@needs_real_ct
def test_real_multilabel_file_refused_without_its_map_or_with_v2():
    """The shared v1 file: without --label-map its spleen and kidneys (1..3) would be bones; v2's ids would make ribs pelvis."""
    ct, multi = read_ct(REAL_CT), REAL_CT_DIR / "example_seg_multilabel.nii.gz"
    with pytest.raises(
        InputFileError,
        match=r"example_seg_multilabel.nii.gz: holds label ids 5, 6, 7, 8, 9, 10, 11, 12, \.\.\. \(55 ids\) .* "
        r"pass --label-map totalsegmentator",
    ):
        read_labels(multi, ct)
    with pytest.raises(
        InputFileError,
        match="does not fit TotalSegmentator v2 class ids .* but fits v1's; pass --label-map totalsegmentator_v1$",
    ):
        read_labels(multi, ct, "totalsegmentator_v2")


def test_labels_must_be_integers(tmp_path):
    ct = read_ct(write_nib(tmp_path / "ct.nii.gz", -1000 * np.ones((4, 4, 4), np.int16)))
    lab = np.zeros((4, 4, 4), np.float32)
    lab[1, 1, 1] = 2.0000002  # float storage rounding is tolerated
    assert read_labels(write_nib(tmp_path / "ok.nii.gz", lab), ct).array[1, 1, 1] == 2
    lab[2, 2, 2] = 1.5
    with pytest.raises(InputFileError, match="half.nii.gz: label volume holds non-integer values"):
        read_labels(write_nib(tmp_path / "half.nii.gz", lab), ct)


@pytest.mark.parametrize("step", [2.5, -2.5])
def test_crop_along_keeps_the_slices_inside_and_their_world_positions(step):
    """Axial slices (voxel axis 1 along RAS z, either direction) below z go; every kept voxel keeps its world
    position; a range along x (voxel axis 0) keeps the sagittal slices inside it."""
    z0 = 7.0 if step > 0 else 29.5  # slices at z 7 ... 29.5 mm either way
    affine = np.array(
        [[1.5, 0, 0, -10.0], [0, 0, step, 20.0], [0, step, 0, z0], [0, 0, 0, 1]]
    )  # axis 1 -> z, axis 2 -> y
    array = np.arange(4 * 10 * 3, dtype=np.float32).reshape(4, 10, 3)
    vol = Volume(array, affine, "ct.nii.gz")
    cut = crop_along(vol, 2, 14.0)
    z = z0 + step * np.arange(10)
    kept = np.flatnonzero(z >= 14.0)
    assert 0 < len(kept) < 10
    assert cut.array.shape == (4, len(kept), 3) and cut.path == "ct.nii.gz"
    for jj, j in enumerate(kept):
        np.testing.assert_array_equal(cut.array[:, jj], array[:, j])
        np.testing.assert_allclose(cut.affine @ [2, jj, 1, 1], affine @ [2, j, 1, 1])
    assert crop_along(vol, 2, 30.0) is None  # nothing left
    sides = crop_along(vol, 0, -9.0, -6.0)  # x at -10, -8.5, -7, -5.5: the middle two
    np.testing.assert_array_equal(sides.array, array[1:3])
    np.testing.assert_allclose(sides.affine @ [0, 0, 0, 1], affine @ [1, 0, 0, 1])
    tilted = affine.copy()
    tilted[2, 0] = 0.1  # slices not axial
    assert crop_along(Volume(array, tilted), 2, 14.0) is None
