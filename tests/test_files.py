import json
import os

import numpy as np
import pytest
from scripts.io.files import (
    MODELS_DIR,
    OUTPUT_MARKER,
    InputFileError,
    atomic_dir,
    atomic_path,
    check_output_dir,
    exits_on_input_error,
    in_folder,
    make_output_dir,
    read_depth_and_mask,
    read_json,
    read_nifti,
    remove_partials,
    write_depth_and_mask,
    write_json,
    write_nifti,
)
from tests.helpers import tree


def test_in_folder_inverts_relpath_also_through_a_linked_folder(tmp_path):
    """A path recorded relative to a folder names the file again, lexically: through a folder that is a link to
    somewhere else, '..' stays beside the link (where relpath counted from), not beside the link's target."""
    (tmp_path / "cohort").mkdir()
    ct = tmp_path / "cohort" / "ct.nii.gz"
    ct.write_text("x")
    (tmp_path / "elsewhere" / "sim").mkdir(parents=True)
    (tmp_path / "sim").symlink_to(tmp_path / "elsewhere" / "sim")
    recorded = os.path.relpath(ct, tmp_path / "sim")
    assert recorded == "../cohort/ct.nii.gz"
    assert in_folder(recorded, tmp_path / "sim") == ct and in_folder(recorded, tmp_path / "sim").is_file()
    assert not (tmp_path / "sim" / recorded).exists()  # the kernel takes '..' from the link's target
    assert in_folder(str(ct), tmp_path / "anywhere") == ct  # an absolute path is itself


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
        with atomic_dir(tmp_path / "case", "test result") as d:
            (d / "f.txt").write_text("ok")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "case").stat().st_mode & 0o777 == 0o755
    assert read_json(tmp_path / "a.json") == {"x": 1.5, "y": [0, 1, 2]}


def test_json_is_strict_nan_and_infinity_become_null(tmp_path):
    """result.json and metrics.json parse with strict JSON readers (jq, JavaScript): no NaN or Infinity tokens."""
    write_json(
        tmp_path / "r.json",
        {
            "centre_depth_mm": float("nan"),
            "v": [np.float32("inf"), 2.0, -np.inf],
            "a": np.array([np.nan, 1.0]),
            "n": None,
        },
    )
    text = (tmp_path / "r.json").read_text()

    def refuse(token):
        raise ValueError(token)

    assert json.loads(text, parse_constant=refuse) == {
        "centre_depth_mm": None,
        "v": [None, 2.0, None],
        "a": [None, 1.0],
        "n": None,
    }
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json(tmp_path / "s.json", {"x": {1, 2}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_no_writer_but_the_release_step_writes_into_models(tmp_path):
    """Every atomic writer (files, output folders) refuses a target inside the shipped models/ folder, before writing."""
    before = sorted(p.name for p in MODELS_DIR.iterdir())
    with pytest.raises(InputFileError, match="shipped models/ folder"):
        write_json(MODELS_DIR / "x.json", {})
    with pytest.raises(InputFileError, match="shipped models/ folder"):
        with atomic_path(MODELS_DIR / "model.pt"):
            raise AssertionError("not reached")
    with pytest.raises(InputFileError, match="shipped models/ folder"):
        with atomic_dir(MODELS_DIR / "out", "test result"):
            raise AssertionError("not reached")
    assert sorted(p.name for p in MODELS_DIR.iterdir()) == before
    with atomic_path(tmp_path / "models" / "x.txt", release=True) as tmp:  # the release step's own way in
        tmp.write_text("ok")
    assert (tmp_path / "models" / "x.txt").read_text() == "ok"


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "case"
    with atomic_dir(target, "test result") as d:
        (d / "a.txt").write_text("first")
    with pytest.raises(ValueError):
        with atomic_dir(target, "test result") as d:
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


@pytest.mark.parametrize("existing", ["user folder", "user file", "other kind", "other input", "symlink"])
def test_atomic_dir_never_replaces_what_it_did_not_write(tmp_path, existing):
    """Only a folder carrying this bundle's marker of the same kind and input is replaced; anything else is
    refused with one line naming it, before the block runs, and stays byte for byte."""
    target = tmp_path / "out" / "notes"
    if existing == "user folder":
        (target / "sub").mkdir(parents=True)
        (target / "sub" / "diary.txt").write_text("mine")
    elif existing == "user file":
        target.parent.mkdir()
        target.write_text("mine")
    elif existing == "symlink":
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "x.txt").write_text("mine")
        target.parent.mkdir()
        target.symlink_to(tmp_path / "elsewhere")
    else:
        with atomic_dir(target, "simulator sample" if existing == "other kind" else "result", source="a") as d:
            (d / "x.txt").write_text("first")
    before = tree(tmp_path)
    ran = []
    with pytest.raises(InputFileError) as info:
        with atomic_dir(target, "result", source="b") as d:
            ran.append(d)
    assert (
        str(info.value).startswith(f"{target}: ")
        and "left untouched" in str(info.value)
        and "\n" not in str(info.value)
    )
    assert not ran and tree(tmp_path) == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["notes"]  # no temporary folder either


def test_atomic_dir_replaces_its_own_result_of_the_same_input(tmp_path):
    """The marker lists what the block wrote (files and folders, relative paths); a result missing one of its own
    files (result.json moved away) is still replaced."""
    target = tmp_path / "case"
    for text in ("first", "second"):
        with atomic_dir(target, "result", source="a") as d:
            (d / "x.txt").write_text(text)
            (d / "meshes").mkdir()
            (d / "meshes" / "pelvis.ply").write_text(text)
        assert json.loads((target / OUTPUT_MARKER).read_text()) == {
            "kind": "result",
            "source": "a",
            "files": ["meshes", "meshes/pelvis.ply", "x.txt"],
        }
        (target / "x.txt").unlink()
    assert (target / "meshes" / "pelvis.ply").read_text() == "second"


def test_atomic_dir_replaces_the_result_of_an_earlier_version_of_its_input(tmp_path):
    """With ``origin`` (where the input was read from), a result recorded with that origin and another ``source`` (the
    input's content changed) is replaced and the marker records both; one of another origin, or of none (a result
    written without), is refused and stays byte for byte."""
    target = tmp_path / "case"
    with atomic_dir(target, "result", source="a", origin="here") as d:
        (d / "x.txt").write_text("first")
    with atomic_dir(target, "result", source="b", origin="here") as d:
        (d / "x.txt").write_text("second")
    assert json.loads((target / OUTPUT_MARKER).read_text()) == {
        "kind": "result",
        "source": "b",
        "origin": "here",
        "files": ["x.txt"],
    }
    assert (target / "x.txt").read_text() == "second" and [p.name for p in tmp_path.iterdir()] == ["case"]
    for written_with in ("elsewhere", None):
        with atomic_dir(target, "result", source="b", origin=written_with) as d:
            (d / "x.txt").write_text("third")
        before = tree(tmp_path)
        with pytest.raises(InputFileError, match="holds the result of another input"):
            with atomic_dir(target, "result", source="c", origin="here"):
                pass
        assert tree(tmp_path) == before


@pytest.mark.parametrize("added", ["file", "folder", "file in its subfolder", "no file list"])
def test_atomic_dir_never_deletes_what_a_user_added_to_its_result(tmp_path, added):
    """A result the bundle wrote, with the user's notes (or segmentations) added inside, is never replaced: one
    line naming the folder and what was added, the folder byte for byte, no temporary folder; the same after
    the bundle's own result.json was moved away. A marker without a file list (an earlier version's) is refused too."""
    target = tmp_path / "out" / "case"
    with atomic_dir(target, "result", source="a") as d:
        (d / "result.json").write_text("{}")
        (d / "meshes").mkdir()
        (d / "meshes" / "pelvis.ply").write_text("mesh")
    needle = {
        "file": "(my_notes.txt)",
        "folder": "(manual_seg/)",
        "file in its subfolder": "(meshes/edited.ply)",
        "no file list": f"before it recorded its files in {OUTPUT_MARKER}",
    }[added]
    if added == "file":
        (target / "my_notes.txt").write_text("mine")
    elif added == "folder":
        (target / "manual_seg" / "2025").mkdir(parents=True)
        (target / "manual_seg" / "2025" / "pelvis.nii.gz").write_bytes(b"hours of work")
    elif added == "file in its subfolder":
        (target / "meshes" / "edited.ply").write_text("mine")
    else:
        (target / OUTPUT_MARKER).write_text(json.dumps({"kind": "result", "source": "a"}))
    for moved in (False, True):
        if moved:
            (target / "result.json").rename(tmp_path / "result.json")
        before = tree(tmp_path)
        with pytest.raises(InputFileError) as info:
            with atomic_dir(target, "result", source="a"):
                raise AssertionError("not reached")
        line = str(info.value)
        assert line.startswith(f"{target}: ") and needle in line and "left untouched" in line and "\n" not in line
        assert tree(tmp_path) == before and sorted(p.name for p in target.parent.iterdir()) == ["case"]


def test_atomic_dir_checks_again_before_replacing(tmp_path):
    """A file the user adds while the new result is being written stops the replacement (checked before the rename)."""
    target = tmp_path / "case"
    with atomic_dir(target, "result") as d:
        (d / "x.txt").write_text("first")
    with pytest.raises(InputFileError, match=r"\(notes.txt\); left untouched"):
        with atomic_dir(target, "result") as d:
            (d / "x.txt").write_text("second")
            (target / "notes.txt").write_text("mine")
    assert (target / "x.txt").read_text() == "first" and (target / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case"]


def test_atomic_dir_keeps_the_old_result_when_the_new_one_cannot_take_its_place(tmp_path, monkeypatch):
    """The old folder is renamed aside, not deleted, before the new one is renamed into place: when that rename fails
    the old result is back as it was (it used to be deleted first: a failure left no result, or half of one)."""
    from pathlib import Path

    target = tmp_path / "case"
    with atomic_dir(target, "result") as d:
        (d / "x.txt").write_text("first")
        (d / "meshes").mkdir()
        (d / "meshes" / "pelvis.ply").write_text("first")
    before = tree(tmp_path)
    rename = Path.rename

    def failing_rename(self, to):
        if Path(to) == target and self.name.endswith(".partial") and not self.name.endswith("-old.partial"):
            raise OSError(28, "No space left on device")
        return rename(self, to)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(InputFileError, match=r"case: cannot be written \(OSError: No space left on device\)"):
        with atomic_dir(target, "result") as d:
            (d / "x.txt").write_text("second")
    assert tree(tmp_path) == before
    monkeypatch.setattr(Path, "rename", rename)
    with atomic_dir(target, "result") as d:
        (d / "x.txt").write_text("second")
    assert (target / "x.txt").read_text() == "second" and sorted(p.name for p in tmp_path.iterdir()) == ["case"]


def test_a_result_without_write_permission_is_not_replaced(tmp_path, monkeypatch):
    """A result folder (or a folder in it) without write permission, e.g. made read-only by its user, is refused in
    one line before the block runs, untouched (a rerun with --overwrite failed half way through deleting it)."""
    import scripts.io.files as files

    target = tmp_path / "case"
    with atomic_dir(target, "result") as d:
        (d / "meshes").mkdir()
        (d / "meshes" / "pelvis.ply").write_text("first")
    before = tree(tmp_path)
    access = os.access
    monkeypatch.setattr(files.os, "access", lambda p, mode: access(p, mode) and p != target / "meshes")
    with pytest.raises(InputFileError) as info:
        with atomic_dir(target, "result"):
            raise AssertionError("not reached")
    assert str(info.value) == (
        f"{target}: cannot be replaced (no write permission on {target / 'meshes'}); left untouched: make it writable or "
        "choose another output folder"
    )
    assert tree(tmp_path) == before


def test_outputs_that_cannot_be_written_are_one_line(tmp_path):
    """A file where a folder must be, a folder where a file must be: InputFileError naming the output, nothing written."""
    (tmp_path / "file.txt").write_text("mine")
    (tmp_path / "folder").mkdir()
    under_file = tmp_path / "file.txt" / "x.dcm"
    cases = [
        (
            lambda: write_json(under_file, {}),
            f"{under_file}: cannot be written: {tmp_path / 'file.txt'} is a file, not a folder",
        ),
        (
            lambda: write_json(tmp_path / "file.txt" / "a" / "b.json", {}),
            f"{tmp_path / 'file.txt' / 'a' / 'b.json'}: cannot be written: {tmp_path / 'file.txt'} is a file",
        ),
        (
            lambda: write_json(tmp_path / "folder", {}),
            f"{tmp_path / 'folder'}: cannot be written (IsADirectoryError: Is a directory)",
        ),
        (
            lambda: atomic_dir(under_file, "result").__enter__(),
            f"{under_file}: cannot be written: {tmp_path / 'file.txt'} is a file",
        ),
        (
            lambda: make_output_dir(tmp_path / "file.txt", "--out"),
            f"{tmp_path / 'file.txt'}: exists and is not a folder; --out names the output folder",
        ),
        (
            lambda: check_output_dir(tmp_path / "file.txt", "-o"),
            f"{tmp_path / 'file.txt'}: exists and is not a folder; -o names the output folder",
        ),
        (
            lambda: check_output_dir(under_file, "--output_dir"),
            f"{under_file}: cannot be created: {tmp_path / 'file.txt'} is a file, not a folder; --output_dir names",
        ),
    ]
    for call, needle in cases:
        with pytest.raises(InputFileError) as info:
            call()
        assert str(info.value).startswith(needle) and "\n" not in str(info.value), info.value
    assert (tmp_path / "file.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [
        "file.txt",
        "folder",
    ]
    assert list((tmp_path / "folder").iterdir()) == []
    check_output_dir(tmp_path / "new" / "out")  # missing folders under a writable one are fine


def test_atomic_dir_takes_an_empty_folder(tmp_path):
    """An empty folder (made with mkdir for the output) holds nothing to lose: it is taken, not refused."""
    target = tmp_path / "eval"
    target.mkdir()
    with atomic_dir(target, "evaluation") as d:
        (d / "x.txt").write_text("done")
    assert (target / "x.txt").read_text() == "done" and sorted(p.name for p in tmp_path.iterdir()) == ["eval"]


def test_remove_partials_removes_only_its_own(tmp_path):
    own = tmp_path / ".case.abc123.partial"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(tmp_path / "case", "result") as d:
            killed = d  # a SIGKILL would leave this folder: simulate by copying it before the cleanup
            (d / "half.nii.gz").write_bytes(b"half")
            import shutil

            shutil.copytree(d, own)
            raise KeyboardInterrupt
    assert not killed.exists()
    user = tmp_path / ".thesis.final.partial"  # a user's folder with a look-alike name
    user.mkdir()
    (user / "chapter.tex").write_text("mine")
    empty = tmp_path / ".case.xyz789.partial"  # killed before the marker was written
    empty.mkdir()
    unwritten = tmp_path / ".case.def456.partial"  # killed between creating the marker and writing it
    unwritten.mkdir()
    (unwritten / OUTPUT_MARKER).touch()
    lookalike = tmp_path / ".notes.old.partial"  # a user's folder: an unreadable marker beside the user's own file
    lookalike.mkdir()
    (lookalike / OUTPUT_MARKER).touch()
    (lookalike / "notes.txt").write_text("mine")
    assert remove_partials(tmp_path) == sorted([own, empty, unwritten])
    assert (user / "chapter.tex").read_text() == "mine"
    assert (lookalike / "notes.txt").read_text() == "mine"
