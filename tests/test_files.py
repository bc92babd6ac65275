import os

import numpy as np
import pytest

from scripts.files import (
    InputFileError,
    atomic_dir,
    atomic_path,
    exits_on_input_error,
    read_depth_and_mask,
    read_json,
    read_nifti,
    write_depth_and_mask,
    write_json,
    write_nifti,
)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "result.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("interrupted")
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_atomic_writes_have_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": np.float32(1.5), "y": np.arange(3)})
        with atomic_dir(tmp_path / "case") as d:
            (d / "f.txt").write_text("ok")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "case").stat().st_mode & 0o777 == 0o755
    assert read_json(tmp_path / "a.json") == {"x": 1.5, "y": [0, 1, 2]}


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "case"
    with atomic_dir(target) as d:
        (d / "a.txt").write_text("first")
    with pytest.raises(ValueError):
        with atomic_dir(target) as d:
            (d / "a.txt").write_text("second")
            raise ValueError("bad input")
    assert (target / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["case"]


def test_nifti_round_trip_and_errors(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_nifti(tmp_path / "x.nii.gz", arr)
    np.testing.assert_array_equal(read_nifti(tmp_path / "x.nii.gz"), arr)
    write_nifti(tmp_path / "nan.nii.gz", np.array([[np.nan, 1.0]], np.float32))
    with pytest.raises(InputFileError, match="nan.nii.gz: contains NaN"):
        read_nifti(tmp_path / "nan.nii.gz")
    (tmp_path / "trunc.nii.gz").write_bytes((tmp_path / "x.nii.gz").read_bytes()[:40])
    with pytest.raises(InputFileError, match="trunc.nii.gz: unreadable"):
        read_nifti(tmp_path / "trunc.nii.gz")
    with pytest.raises(InputFileError, match="missing.json: file not found"):
        read_json(tmp_path / "missing.json")


def test_exits_on_input_error(tmp_path, capsys):
    @exits_on_input_error
    def main(path):
        """A CLI."""
        read_json(path)
        return 0

    assert main(tmp_path / "missing.json") == 1
    err = capsys.readouterr().err
    assert err == f"{tmp_path / 'missing.json'}: file not found\n"
    write_json(tmp_path / "ok.json", {})
    assert main(tmp_path / "ok.json") == 0 and main.__doc__ == "A CLI."
    assert capsys.readouterr().err == ""


def test_depth_and_mask_layout_round_trip(tmp_path):
    depth = np.random.default_rng(0).uniform(800, 1000, (6, 5, 7)).astype(np.float32)
    mask = np.zeros((3, 5, 7), bool)
    mask[1, 2:4, 1:5] = True
    write_depth_and_mask(tmp_path, depth, mask, np.eye(4))
    assert read_nifti(tmp_path / "depth.nii.gz").shape == (5, 7, 6)  # on disk (H, W, 2B)
    assert read_nifti(tmp_path / "mask.nii.gz", np.uint8).shape == (5, 7, 3)
    d, m = read_depth_and_mask(tmp_path / "depth.nii.gz", tmp_path / "mask.nii.gz")
    np.testing.assert_array_equal(d, depth)
    np.testing.assert_array_equal(m, mask)
