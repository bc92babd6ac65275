"""Volume reading (NIfTI vs DICOM series, RAS), HU/grid checks, label maps, threshold labels."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from scripts.files import InputFileError
from scripts.volumes import Volume, bones_center, load_label_map, read_ct, read_labels, read_volume, threshold_labels

REAL_CT = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_ct" / "example_ct.nii.gz"
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


def write_dicom_series(folder, array):
    """One DICOM file per slice k; positions/orientation computed by hand in LPS from AFFINE."""
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(array.shape[2]):
        sl = sitk.GetImageFromArray(np.ascontiguousarray(array[:, :, k].T))  # (rows=j, cols=i)
        sl.SetSpacing((0.8, 0.9))
        lps_pos = (-100.0, -50.0, -30.0 + 2.0 * k)  # RAS (100, 50, z) -> LPS (-100, -50, z)
        for tag, value in {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.2",
            "0008|0018": f"1.2.826.0.1.3680043.2.1125.3.{k}",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.4f}" for v in lps_pos),
            "0020|0037": "1\\0\\0\\0\\1\\0",  # RAS -x and -y are LPS +x and +y
            "0018|0050": "2.0",
        }.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)
    return folder


def test_dicom_series_and_nifti_give_the_same_ras_geometry(tmp_path):
    a = ct_array()
    nii = read_volume(write_nib(tmp_path / "ct.nii.gz", a))
    dcm = read_volume(write_dicom_series(tmp_path / "dicom", a))
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
    cases = {
        truncated: "unreadable",
        write_nib(tmp_path / "nan.nii.gz", nan): "NaN",
        write_nib(tmp_path / "raw.nii.gz", raw): "Hounsfield",
        tmp_path / "missing.nii.gz": "not found",
        tmp_path: "DICOM",
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
    assert (lab.array == fine).mean() > 0.9  # nearest neighbour on the half-voxel boundary may shift one plane
    shifted = AFFINE.copy()
    shifted[:3, 3] += [50.0, 0, 0]
    bad = write_nib(tmp_path / "shifted.nii.gz", fine, shifted)
    with pytest.raises(InputFileError, match="physical space") as err:
        read_labels(bad, ct)
    assert "shifted.nii.gz" in str(err.value)


def test_label_maps_presets_and_files(tmp_path):
    ct = read_ct(write_nib(tmp_path / "ct.nii.gz", -1000 * np.ones((4, 4, 4), np.int16)))
    ts = np.zeros((4, 4, 4), np.uint8)
    ts[0, 0, 0], ts[1, 0, 0], ts[2, 0, 0], ts[3, 0, 0], ts[3, 3, 3] = 77, 25, 75, 76, 5  # hip_left, sacrum, femurs, gallbladder
    lab = read_labels(write_nib(tmp_path / "ts.nii.gz", ts), ct, load_label_map("totalsegmentator"))
    assert [lab.array[i, 0, 0] for i in range(4)] == [1, 1, 2, 3] and lab.array[3, 3, 3] == 0
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


@pytest.mark.skipif(not REAL_CT.exists(), reason="shared real CT (../shared) not present")
def test_real_ct_reads_in_hu_and_threshold_labels_find_bones():
    ct = read_ct(REAL_CT)
    assert np.allclose(ct.affine, nib.load(str(REAL_CT)).affine, atol=1e-3)
    labels = threshold_labels(ct)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    assert (labels > 0).sum() > 1000
    assert np.median(ct.array[labels > 0]) > 200  # bone-dense voxels (closing adds some marrow)


def test_labels_must_be_integers(tmp_path):
    ct = read_ct(write_nib(tmp_path / "ct.nii.gz", -1000 * np.ones((4, 4, 4), np.int16)))
    lab = np.zeros((4, 4, 4), np.float32)
    lab[1, 1, 1] = 2.0000002  # float storage rounding is tolerated
    assert read_labels(write_nib(tmp_path / "ok.nii.gz", lab), ct).array[1, 1, 1] == 2
    lab[2, 2, 2] = 1.5
    with pytest.raises(InputFileError, match="half.nii.gz: label volume holds non-integer values"):
        read_labels(write_nib(tmp_path / "half.nii.gz", lab), ct)
