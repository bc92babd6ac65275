"""Simulator CLI end to end on a tiny synthetic cohort: files, poses, split, shards, bad input."""

import fcntl
import hashlib
import json
import threading
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import scripts.data.simulate as simulate_mod
import torch
from monai.data import load_decathlon_datalist
from scripts import BUNDLE_ROOT
from scripts.data.simulate import (
    SPLITS,
    assign_splits,
    build_datalist,
    label_positions,
    load_config,
    main,
    pose_parameters,
    split_counts,
    table_clearance_mm,
    table_shift_mm,
)
from scripts.data.volumes import Volume
from scripts.geometry import GEOMETRY_KEYS, Geometry, apply_transform, standard_ap_pose
from scripts.io.files import InputFileError, atomic_dir
from scripts.io.radiograph_io import input_key
from tests.helpers import assert_rigid, write_dicom_series

AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])


def body_block_ct():
    """Body block (0 HU) in air, 4 mm voxels (AFFINE): voxels [4:36, 3:17, 2:28], so RAS y in [10, 66) mm."""
    ct = -1000 * np.ones((40, 20, 30), np.int16)
    ct[4:36, 3:17, 2:28] = 0
    return ct


def make_case(folder, with_femur_right=True):
    """:func:`body_block_ct` with a pelvis slab and femur rods, 4 mm voxels."""
    folder.mkdir(parents=True)
    ct = body_block_ct()
    lab = np.zeros(ct.shape, np.uint8)
    lab[8:32, 8:12, 18:24] = 1
    lab[26:30, 8:12, 4:16] = 3  # RAS +x is patient right
    lab[10:14, 8:12, 4:16] = 2
    if not with_femur_right:
        lab[lab == 3] = 0
    ct[lab > 0] = 800
    nib.save(nib.Nifti1Image(ct, AFFINE), str(folder / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(lab, AFFINE), str(folder / "labels.nii.gz"))
    (folder / "meshes").mkdir()
    (folder / "meshes" / "pelvis.ply").write_text("ply\n")


@pytest.fixture
def small_geometry(tmp_path):
    path = tmp_path / "geometry.json"
    path.write_text(
        json.dumps(
            {"sid_mm": 1100, "pixel_spacing_mm": [12.5, 12.5], "image_size": [32, 32], "source_to_object_mm": 950}
        )
    )
    return path


def test_no_more_worker_processes_than_samples(tmp_path, small_geometry, monkeypatch):
    """--workers 8 for one sample renders it in this process: no pool of 8 idle processes (one was started per
    worker, each importing torch, whatever the number of samples)."""

    def no_pool(method):
        raise AssertionError("a process pool was started for one sample")

    monkeypatch.setattr("scripts.data.simulate.multiprocessing.get_context", no_pool)
    make_case(tmp_path / "cohort" / "case_0000")
    args = ["--cases", str(tmp_path / "cohort"), "--out", str(tmp_path / "out"), "--geometry", str(small_geometry)]
    assert main(args + ["--workers", "8"]) == 0 and (tmp_path / "out" / "case_0000_p0" / "sample.json").is_file()


def test_cohort_samples_datalist_and_shards(tmp_path, small_geometry):
    cohort = tmp_path / "cohort"
    for i in range(4):
        make_case(cohort / f"case_{i:04d}", with_femur_right=i != 1)
    args = ["--cases", str(cohort), "--poses", "2", "--seed", "3", "--geometry", str(small_geometry)]
    out = tmp_path / "out"
    assert main(args + ["--out", str(out), "--shard", "0/2"]) == 0
    assert main(args + ["--out", str(out), "--shard", "1/2", "--workers", "1"]) == 0
    datalist = json.loads((out / "datalist.json").read_text())
    entries = [e for s in SPLITS for e in datalist[s]]
    assert len(entries) == 8
    case_splits = {e["case"]: s for s in SPLITS for e in datalist[s]}
    # no case in two lists; both shards knew the whole cohort, so the split is the documented hash rank
    # and 4 cases at 0.8/0.1/0.1 fill every list: ranks 0-1 training, 2 validation, 3 test
    ranked = sorted(
        case_splits, key=lambda c: int.from_bytes(hashlib.sha256(f"split/3/{c}".encode()).digest()[:8], "big")
    )
    assert [case_splits[c] for c in ranked] == ["training", "training", "validation", "test"]
    for s in SPLITS:
        assert all(case_splits[e["case"]] == s for e in datalist[s])
    loaded = (
        load_decathlon_datalist(str(out / "datalist.json"), data_list_key="training", base_dir=str(out))
        if datalist["training"]
        else []
    )
    for item in loaded:
        assert item["image"].startswith(str(out))

    sample = out / "case_0000_p1"
    image = nib.load(str(sample / "image.nii.gz"))
    depth = nib.load(str(sample / "depth.nii.gz")).get_fdata()
    mask = nib.load(str(sample / "mask.nii.gz")).get_fdata()
    assert image.shape == (32, 32) and depth.shape == (32, 32, 6) and mask.shape == (32, 32, 3)
    np.testing.assert_allclose(image.affine, np.diag([12.5, 12.5, 1, 1]))
    assert np.all(depth[..., 0::2][mask == 0] == 0) and np.all(depth[..., 1::2][mask == 0] == 0)
    assert np.all(depth[..., 1::2][mask > 0] >= depth[..., 0::2][mask > 0])
    assert mask.reshape(-1, 3).any(0).all()
    assert 800 < depth[..., 0][mask[..., 0] > 0].min() < 1100
    fov = nib.load(str(sample / "fov.nii.gz")).get_fdata()
    notes = json.loads((sample / "sample.json").read_text())
    assert fov.shape == (32, 32) and set(np.unique(fov)) <= {0, 1} and fov.mean() > 0.5
    assert np.all(image.get_fdata()[fov == 0] == 0)  # padding outside the detector
    assert np.all(mask[fov == 0] == 0) and np.all(
        depth[fov == 0] == 0
    )  # labels only where the radiograph shows the patient
    assert 70 <= notes["style"]["kvp"] <= 90 and 1000 <= notes["style"]["sid_mm"] <= 1200
    assert (
        10.0 < notes["pelvis_table_clearance_mm"] < 34.0
    )  # 22 mm unrotated (test_pelvis_table_clearance_by_hand); the pose tilts the slab
    assert all(e["fov"] == f"{e['image'].split('/')[0]}/fov.nii.gz" for e in entries)
    geometry = json.loads((sample / "geometry.json").read_text())
    assert tuple(geometry) == GEOMETRY_KEYS
    assert_rigid(Geometry.load(sample / "geometry.json").matrix)
    notes = json.loads((out / "case_0001_p0" / "sample.json").read_text())
    assert notes["absent_bones"] == ["femur_right"]
    assert notes["meshes"] == {"pelvis": "../cohort/case_0001/meshes/pelvis.ply"}
    assert (sample / "preview.png").read_bytes()[:4] == b"\x89PNG"


def test_extra_cohort_joins_one_list_and_rendered_samples_keep_theirs(tmp_path, small_geometry):
    """--split puts a later cohort's cases in one list; the earlier cases stay where they were rendered."""
    for i in range(3):
        make_case(tmp_path / "cohort" / f"case_{i:04d}")
    make_case(tmp_path / "extra" / "case_0003")
    out, common = tmp_path / "out", ["--poses", "1", "--seed", "3", "--geometry", str(small_geometry)]
    assert main(["--cases", str(tmp_path / "cohort"), "--out", str(out)] + common) == 0
    first = {e["case"]: s for s, entries in json.loads((out / "datalist.json").read_text()).items() for e in entries}
    assert sorted(first.values()) == ["test", "training", "validation"]  # 3 cases fill the three lists
    assert main(["--cases", str(tmp_path / "extra"), "--out", str(out), "--split", "validation"] + common) == 0
    second = {e["case"]: s for s, entries in json.loads((out / "datalist.json").read_text()).items() for e in entries}
    assert second == {**first, "case_0003": "validation"}
    assert json.loads((out / "case_0003_p0" / "sample.json").read_text())["split"] == "validation"


def test_poses_are_seeded_and_within_ranges():
    cfg = {"rotation_deg": [10, 10, 15], "translation_mm": [30, 30, 50]}
    a = pose_parameters("case_0000", 3, 7, cfg)
    assert a == pose_parameters("case_0000", 3, 7, cfg)
    assert a != pose_parameters("case_0000", 4, 7, cfg)
    for k in range(20):
        rot, trans = pose_parameters("c", k, 0, cfg)
        assert np.all(np.abs(rot) <= cfg["rotation_deg"]) and np.all(np.abs(trans) <= cfg["translation_mm"])
    lateral = {**cfg, "view_rotation_deg": [0, 90, 0]}  # the view's rotation adds to the same draw
    for k in range(5):
        (rot, trans), (lat, lat_trans) = pose_parameters("c", k, 0, cfg), pose_parameters("c", k, 0, lateral)
        np.testing.assert_allclose(np.subtract(lat, rot), [0, 90, 0])
        assert lat_trans == trans
    fixed = {"rotation_deg": [0, 0, 0], "translation_mm": [0, 0, 0], "view_rotation_deg": [0, 90, 0]}
    assert pose_parameters("c", 0, 0, fixed) == ([0.0, 90.0, 0.0], [0.0, 0.0, 0.0])


@pytest.mark.parametrize("broken", ["ct", "no labels", "labels elsewhere", "fractional labels"])
def test_bad_input_exits_1_with_one_line_and_leaves_no_folder(tmp_path, small_geometry, capsys, broken):
    """An unreadable CT, a labels path that is not there, labels covering another space or holding non-integer
    values: one line naming the file after the summary (nothing rendered, one sample failed), exit 1, and no
    output folder made (an empty one given stays empty: no marker, datalist or lock)."""
    make_case(tmp_path / "good")
    ct, labels = tmp_path / "good" / "ct.nii.gz", tmp_path / "good" / "labels.nii.gz"
    if broken == "ct":
        ct = tmp_path / "broken.nii.gz"
        ct.write_bytes(b"not a nifti")
    elif broken == "no labels":
        labels = tmp_path / "missing.nii.gz"
    else:
        lab = nib.load(str(labels))
        array, affine = lab.get_fdata(), lab.affine.copy()
        if broken == "labels elsewhere":
            affine[:3, 3] += 500.0  # 0.5 m away from the CT
        else:
            array = array * 0.5
        labels = tmp_path / "bad_labels.nii.gz"
        nib.save(nib.Nifti1Image(array.astype(np.float32), affine), str(labels))
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "o", tmp_path / "empty"):
        code = main(["--ct", str(ct), "--labels", str(labels), "--out", str(out), "--geometry", str(small_geometry)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and err[-1].startswith(f"{ct if broken == 'ct' else labels}: "), err
        assert err[-2] == "rendered 0, skipped 0 (already done), failed 1"
    assert not (tmp_path / "o").exists() and not any((tmp_path / "empty").iterdir())


def test_a_device_that_is_no_device_or_not_here_is_one_line_before_any_work(tmp_path, small_geometry, capsys):
    """``--device gpu0`` (no torch device) and, on a machine without CUDA, ``--device cuda``: the one line the training
    and inference give, exit 1, no output folder (they were a traceback from inside the first case)."""
    make_case(tmp_path / "c")
    out = tmp_path / "out"
    run = ["--ct", str(tmp_path / "c" / "ct.nii.gz"), "--labels", str(tmp_path / "c" / "labels.nii.gz")]
    lines = {"gpu0": "--device: not a torch device ('gpu0': "}
    if not torch.cuda.is_available():
        lines["cuda"] = "--device: cuda requested but CUDA is not available on this machine; use --device cpu"
    for device, line in lines.items():
        code = main(run + ["--out", str(out), "--geometry", str(small_geometry), "--device", device])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1 and err[0].startswith(line), err
        assert not out.exists()


@pytest.mark.parametrize(
    "config, problem",
    [
        ("ct_ends: {probability: 1.0}", "unknown setting 'ct_ends'"),  # a misspelt section
        ("pose: {rotation_degs: [0, 0, 0]}", "pose: unknown key(s) ['rotation_degs']"),  # a misspelt knob
        ("style: {kvpp: 80}", "style: unknown key(s) ['kvpp']"),
        ("pose: 3", "pose: must be a mapping"),
        ("- a list", "not a mapping of simulator settings"),
    ],
)
def test_bad_config_is_refused_before_any_work(tmp_path, small_geometry, capsys, config, problem):
    """A setting the simulator does not know would otherwise be ignored without a word (the default drawn instead)."""
    make_case(tmp_path / "cohort" / "case_000")
    (tmp_path / "bad.yaml").write_text(config)
    code = main(
        [
            "--cases",
            str(tmp_path / "cohort"),
            "--out",
            str(tmp_path / "o"),
            "--geometry",
            str(small_geometry),
            "--config",
            str(tmp_path / "bad.yaml"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith(f"{tmp_path / 'bad.yaml'}: {problem}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("overlay", sorted((BUNDLE_ROOT / "configs").glob("simulate_*.yaml")), ids=lambda p: p.name)
def test_shipped_simulator_overlays_load_over_the_default(overlay):
    """Every configs/simulate_*.yaml names only settings configs/simulate.yaml has, and changes at least one."""
    assert load_config(overlay) != load_config(None)


@pytest.mark.parametrize("distance", [None, 0, -950, "950", 2000])
def test_source_to_object_distance_is_checked(tmp_path, capsys, distance):
    """The patient's distance from the source must give a magnification SID / distance within 1..2."""
    make_case(tmp_path / "cohort" / "case_000")
    geometry = tmp_path / "geometry.json"
    geometry.write_text(
        json.dumps(
            {"sid_mm": 1100, "pixel_spacing_mm": [12.5, 12.5], "image_size": [32, 32], "source_to_object_mm": distance}
        )
    )
    code = main(["--cases", str(tmp_path / "cohort"), "--out", str(tmp_path / "o"), "--geometry", str(geometry)])
    err = capsys.readouterr().err
    assert (
        code == 1
        and err.startswith(f"{geometry}: source_to_object_mm must be a distance")
        and len(err.strip().splitlines()) == 1
    )
    assert not (tmp_path / "o").exists()


FRACTIONS = {"training": 0.8, "validation": 0.1, "test": 0.1}


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10, 23])
def test_cohort_split_fills_every_list_when_possible(n):
    names = [f"case_{i:04d}" for i in range(n)]
    split = assign_splits(names, 5, FRACTIONS)
    assert split == assign_splits(list(reversed(names)), 5, FRACTIONS)  # order-free: shards agree
    counts = {s: sum(v == s for v in split.values()) for s in SPLITS}
    assert sum(counts.values()) == n
    if n >= 3:
        assert min(counts.values()) >= 1
    else:
        assert counts["training"] == n
    if n == 10:
        assert counts == {"training": 8, "validation": 1, "test": 1}
    assert split_counts(n, {"training": 1.0, "validation": 0.0, "test": 0.0}) == {
        "training": n,
        "validation": 0,
        "test": 0,
    }


def test_same_case_name_in_another_cohort_is_loaded_afresh(tmp_path, small_geometry):
    """One process simulating two cohorts that both hold case_0000 renders each from its own files."""
    make_case(tmp_path / "a" / "case_0000")
    make_case(tmp_path / "b" / "case_0000", with_femur_right=False)
    for cohort in ("a", "b"):
        args = [
            "--cases",
            str(tmp_path / cohort),
            "--out",
            str(tmp_path / f"out_{cohort}"),
            "--geometry",
            str(small_geometry),
            "--workers",
            "1",
        ]
        assert main(args + ["--device", "cpu"]) == 0
    masks = {c: nib.load(str(tmp_path / f"out_{c}" / "case_0000_p0" / "mask.nii.gz")).get_fdata() for c in ("a", "b")}
    assert masks["a"][..., 2].sum() > 0 and masks["b"][..., 2].sum() == 0  # femur_right only in cohort a


def test_single_ct_without_cohort_uses_per_case_hash(tmp_path, small_geometry):
    """A single CT's list is a SHA-256 hash of ("split", seed, case name) cut at configs/simulate.yaml's fractions
    (training 0.7, validation 0.1, test 0.2): a seed for each list, computed by hand, lands it there."""
    make_case(tmp_path / "c")
    wanted = {}
    for seed in range(100):
        u = int.from_bytes(hashlib.sha256(f"split/{seed}/ct".encode()).digest()[:8], "big") / 2.0**64
        wanted.setdefault("training" if u < 0.7 else "validation" if u < 0.8 else "test", seed)
    assert set(wanted) == set(SPLITS)
    for split, seed in wanted.items():
        out = tmp_path / f"out_{split}"
        args = [
            "--ct",
            str(tmp_path / "c" / "ct.nii.gz"),
            "--labels",
            str(tmp_path / "c" / "labels.nii.gz"),
            "--out",
            str(out),
        ]
        assert main(args + ["--geometry", str(small_geometry), "--seed", str(seed)]) == 0
        datalist = json.loads((out / "datalist.json").read_text())
        assert [s for s in SPLITS if datalist[s]] == [split]


def test_datalist_rebuild_waits_for_the_lock(tmp_path, monkeypatch):
    """A rebuild meets the lock another shard holds and waits for it. The verdict rests on what the worker saw (the
    lock held when it asked: a signalled Event) and on no datalist before the release, not on how long anything took."""
    out = tmp_path / "out"
    out.mkdir()
    found_held, real_flock = threading.Event(), fcntl.flock

    def probing_flock(fd, operation):
        if operation == fcntl.LOCK_EX:
            try:
                return real_flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                found_held.set()
        return real_flock(fd, operation)

    monkeypatch.setattr(
        simulate_mod, "fcntl", SimpleNamespace(flock=probing_flock, LOCK_EX=fcntl.LOCK_EX, LOCK_UN=fcntl.LOCK_UN)
    )
    with open(out / ".datalist.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another shard rebuilding
        worker = threading.Thread(target=build_datalist, args=(out, 0, FRACTIONS, ["a"]))
        worker.start()
        while worker.is_alive() and not found_held.wait(0.05):  # until it meets the lock, or (a broken lock) is done
            pass
        assert found_held.is_set() and not (out / "datalist.json").exists()
        fcntl.flock(held, fcntl.LOCK_UN)
    worker.join()
    assert json.loads((out / "datalist.json").read_text()) == {s: [] for s in SPLITS}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_datalist_the_simulator_did_not_write_is_never_replaced(tmp_path, small_geometry, capsys):
    """datalist.json is rebuilt only when the simulator wrote it (its SHA-256 in the folder's marker, or, from versions
    that wrote no marker, exactly the simulator's form); a user's own, or the simulator's edited by hand, is refused
    with one line before any rendering and keeps its bytes."""
    make_case(tmp_path / "c")
    out = tmp_path / "out"
    run = [
        "--ct",
        str(tmp_path / "c" / "ct.nii.gz"),
        "--labels",
        str(tmp_path / "c" / "labels.nii.gz"),
        "--out",
        str(out),
        "--geometry",
        str(small_geometry),
    ]
    datalist = out / "datalist.json"

    def refused(poses: int) -> None:
        before, _ = _sha(datalist), capsys.readouterr()
        assert main(run + ["--poses", str(poses)]) == 1
        err = capsys.readouterr().err.strip()
        assert (
            err
            == f"{datalist}: was not written by the simulator (or was changed since); left untouched: move it out of the way "
            "(the simulator rebuilds its datalist from the samples) or choose another --out"
        )
        assert _sha(datalist) == before and not (out / f"ct_p{poses - 1}").exists()  # nothing rendered

    out.mkdir()
    datalist.write_text(
        json.dumps({"training": [{"image": "/data/mine/img.nii.gz", "label": "/data/mine/seg.nii.gz"}]})
    )
    refused(1)
    datalist.unlink()
    assert main(run) == 0 and main(run + ["--poses", "2"]) == 0  # its own datalist is rebuilt
    mine = json.loads(datalist.read_text())
    assert [e["pose"] for s in SPLITS for e in mine[s]] == [0, 1]
    datalist.write_text(
        json.dumps(
            {**mine, "training": mine["training"][:1], "validation": mine["validation"][:1], "test": mine["test"][:1]}
        )
    )
    refused(3)  # the simulator's, edited by hand
    # an earlier version's output: no marker, the simulator's exact form (also without "fov", as the first versions)
    (out / ".3ddx_output.json").unlink()
    datalist.write_text(json.dumps({s: [{k: v for k, v in e.items() if k != "fov"} for e in mine[s]] for s in SPLITS}))
    assert main(run + ["--poses", "2"]) == 0 and json.loads(datalist.read_text()) == mine
    (out / ".3ddx_output.json").unlink()
    datalist.write_text(json.dumps({**mine, "extra": []}))  # the same lists beside a key the simulator never writes
    refused(3)
    datalist.unlink()
    (out / ".3ddx_output.json").write_text(
        json.dumps({"kind": "reconstruction", "source": None})
    )  # another kind of bundle output
    capsys.readouterr()
    assert main(run) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"{out}: holds a reconstruction written by this bundle, not a simulated data set; choose another --out"
    )
    assert not datalist.exists()


def test_two_cts_of_one_name_never_share_a_case(tmp_path, small_geometry, capsys):
    """patA/ct.nii.gz and patB/ct.nii.gz both make case "ct": B into A's folder is refused with one line (with and
    without --overwrite) and A's samples and datalist keep their bytes; A again is skipped; B into another folder is
    fine. Samples of versions that recorded no source are told apart by their recorded CT path."""
    make_case(tmp_path / "patA")
    make_case(tmp_path / "patB", with_femur_right=False)
    out = tmp_path / "out"

    def run(patient: str, *extra: str) -> int:
        folder = tmp_path / patient
        return main(
            [
                "--ct",
                str(folder / "ct.nii.gz"),
                "--labels",
                str(folder / "labels.nii.gz"),
                "--out",
                str(out),
                "--geometry",
                str(small_geometry),
                *extra,
            ]
        )

    assert run("patA") == 0
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != ".datalist.lock")
    before = {p: _sha(p) for p in files}
    notes = out / "ct_p0" / "sample.json"
    for legacy in (False, True):
        if legacy:  # as written before sources were recorded: the CT's path as given
            recorded = {k: v for k, v in json.loads(notes.read_text()).items() if k != "source"}
            notes.write_text(json.dumps({**recorded, "ct": str(tmp_path / "patA" / "ct.nii.gz")}))
            before[notes] = _sha(notes)
        for extra in ((), ("--overwrite",)):
            capsys.readouterr()
            assert run("patB", *extra) == 1
            err = capsys.readouterr().err.strip()
            assert err == (
                f"{tmp_path / 'patB' / 'ct.nii.gz'}: case name 'ct' is taken in {out} by the samples of another CT "
                f"({tmp_path / 'patA' / 'ct.nii.gz'}); choose another --out or rename this CT (its file "
                "or folder name is the case name)"
            )
            assert {p: _sha(p) for p in files} == before
        assert run("patA") == 0 and {p: _sha(p) for p in files} == before  # the same CT: skipped
    assert json.loads(notes.read_text()).get("source") is None
    out = tmp_path / "out_b"
    assert (
        run("patB") == 0 and nib.load(str(out / "ct_p0" / "mask.nii.gz")).get_fdata()[..., 2].sum() == 0
    )  # B's own samples


def test_source_names_the_ct_after_the_data_set_is_renamed(tmp_path, small_geometry, capsys):
    """A cohort and its data set built under a temporary name (atomic_dir, as make demo builds them) and renamed: the
    sample's source is the CT's path from the data set, a rerun over the renamed folder skips the sample (the same
    CT) and refuses another CT of that case name; so again after the whole folder moves. A source as bundle 0.10.6
    recorded it (SHA-256 of the CT's resolved path) still tells its CT from another."""
    built = tmp_path / "built"
    with atomic_dir(built, "test") as work:
        make_case(work / "cohort" / "hip")
        assert (
            main(["--cases", str(work / "cohort"), "--out", str(work / "data"), "--geometry", str(small_geometry)]) == 0
        )
    make_case(tmp_path / "other" / "hip")
    assert json.loads((built / "data" / "hip_p0" / "sample.json").read_text())["source"] == "../cohort/hip/ct.nii.gz"

    def same_and_other(root):
        """Exit statuses of a rerun of root's own cohort into root/data (sample.json unchanged) and of the other CT."""
        notes = root / "data" / "hip_p0" / "sample.json"
        before = _sha(notes)
        codes = [
            main(["--cases", str(root / cohort), "--out", str(root / "data"), "--geometry", str(small_geometry)])
            for cohort in ("cohort", "../other")
        ]
        assert _sha(notes) == before
        return codes

    assert same_and_other(built) == [0, 1]
    assert "case name 'hip' is taken" in capsys.readouterr().err
    moved = tmp_path / "moved"
    built.rename(moved)
    assert same_and_other(moved) == [0, 1]
    notes = moved / "data" / "hip_p0" / "sample.json"
    notes.write_text(
        json.dumps({**json.loads(notes.read_text()), "source": input_key(moved / "cohort" / "hip" / "ct.nii.gz")})
    )
    assert same_and_other(moved) == [0, 1]


@pytest.mark.parametrize("rotation", [(0.0, 0.0, 0.0), (0.0, 0.0, 14.0), (8.0, -6.0, 10.0)])
def test_table_shift_lays_the_posterior_skin_on_the_table(rotation):
    """Body block y in [10, 66) mm (4 mm voxels 3..16): its posterior face y = 10 mm must land on z = table."""
    volume = Volume(body_block_ct(), AFFINE, "ct.nii.gz")
    centre = np.array([80.0, 38.0, 60.0])
    pose = standard_ap_pose(centre, 950.0, rotation, (20.0, -10.0, 0.0))
    shift = table_shift_mm(volume, pose, centre, 1075.0, -500.0)
    moved = pose.copy()
    moved[2, 3] += shift
    centre_cam = apply_transform(moved, centre)
    # the skin on the camera-z line through the centre: solve y(world) = 10 for that line
    direction = np.linalg.inv(moved[:3, :3]) @ (0.0, 0.0, 1.0)
    world = apply_transform(np.linalg.inv(moved), centre_cam)
    lam = (10.0 - world[1]) / direction[1]
    skin_cam = apply_transform(moved, world + lam * direction)
    assert skin_cam[2] == pytest.approx(1075.0, abs=1.0)
    if rotation == (0.0, 0.0, 0.0):  # centre 28 mm in front of the skin
        assert centre_cam[2] == pytest.approx(1075.0 - 28.0, abs=1.0)


def test_pelvis_table_clearance_by_hand(tmp_path):
    """make_case's pelvis slab (voxel centres y = 32..44 mm) on the table by its skin (y = 10 mm), pose unrotated:
    its deepest voxel centre lies 22 mm in front of the table; a case without pelvis voxels has none."""
    make_case(tmp_path / "case")
    labels = Volume(
        nib.load(str(tmp_path / "case" / "labels.nii.gz")).get_fdata().astype(np.uint8), AFFINE, "labels.nii.gz"
    )
    ct = Volume(body_block_ct(), AFFINE, "ct.nii.gz")
    pelvis = label_positions(labels, ("pelvis",))
    assert len(pelvis) == 24 * 4 * 6 and pelvis[:, 1].min() == pytest.approx(32.0)
    centre = np.array([80.0, 38.0, 60.0])
    pose = standard_ap_pose(centre, 950.0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    pose[2, 3] += table_shift_mm(ct, pose, centre, 1075.0, -500.0)
    assert table_clearance_mm(pelvis, pose, 1075.0) == pytest.approx(22.0, abs=1.0)
    assert table_clearance_mm(label_positions(labels, ()), pose, 1075.0) is None


def test_table_shift_without_body_names_the_ct():
    volume = Volume(-1000 * np.ones((10, 10, 10), np.int16), AFFINE, "empty_ct.nii.gz")
    with pytest.raises(InputFileError, match="empty_ct.nii.gz.*no body"):
        table_shift_mm(
            volume, standard_ap_pose([20.0, 20.0, 20.0], 950.0), np.array([20.0, 20.0, 20.0]), 1075.0, -500.0
        )


def cut_and_plain(tmp_path, geometry, knob: str, spec: str) -> tuple[dict, dict]:
    """Masks (H, W, 3) and sample.json notes of :func:`make_case`'s unperturbed pose 0, simulated with the
    config knob ``knob`` set to ``spec`` ("cut") and with it off ("plain")."""
    make_case(tmp_path / "cohort" / "case_0000")
    masks, notes = {}, {}
    for name, value in (("cut", spec), ("plain", "{probability: 0.0}")):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(f"{knob}: {value}\npose: {{rotation_deg: [0, 0, 0], translation_mm: [0, 0, 0]}}\n")
        out = tmp_path / name
        assert (
            main(
                [
                    "--cases",
                    str(tmp_path / "cohort"),
                    "--out",
                    str(out),
                    "--geometry",
                    str(geometry),
                    "--config",
                    str(cfg),
                    "--split",
                    "test",
                ]
            )
            == 0
        )
        masks[name] = nib.load(str(out / "case_0000_p0" / "mask.nii.gz")).get_fdata() > 0
        notes[name] = json.loads((out / "case_0000_p0" / "sample.json").read_text())
    return masks, notes


def test_ct_end_cuts_ct_labels_and_truth_together(tmp_path, small_geometry):
    """ct_end with probability 1: the CT ends 20 mm below the femur top (RAS z 60 -> 40 mm, voxel k 10);
    the femur masks lose their lower part, the pelvis above is untouched, sample.json records the cut box."""
    masks, notes = cut_and_plain(
        tmp_path, small_geometry, "ct_end", "{probability: 1.0, below_femur_top_mm: [20.0, 20.0]}"
    )
    assert notes["plain"]["ct_end_z_mm"] is None and notes["plain"]["ct_extent"]["shape"] == [40, 20, 30]
    assert notes["cut"]["ct_end_z_mm"] == pytest.approx(40.0)
    assert notes["cut"]["ct_extent"]["shape"] == [40, 20, 20]
    np.testing.assert_allclose(
        notes["cut"]["ct_extent"]["affine"],
        AFFINE + np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 40.0], [0, 0, 0, 0]]),
    )
    np.testing.assert_array_equal(masks["cut"][..., 0], masks["plain"][..., 0])  # pelvis (z 72-96 mm) above the cut
    for b in (1, 2):  # femur rods z 16-64 mm, cut at 40 mm: fewer pixels, none new
        assert masks["cut"][..., b].any() and not (masks["cut"][..., b] & ~masks["plain"][..., b]).any()
        assert masks["cut"][..., b].sum() < masks["plain"][..., b].sum()


def test_ct_sides_cut_ct_labels_and_truth_at_the_femurs_sides(tmp_path, small_geometry):
    """ct_sides with probability 1, 8 mm into the femurs: the femur voxels span RAS x 40-116 mm, so the CT
    keeps x 48-108 mm (voxels i 12-27); the outer half of each femur rod and the pelvis slab's ends go."""
    masks, notes = cut_and_plain(tmp_path, small_geometry, "ct_sides", "{probability: 1.0, into_femur_mm: [8.0, 8.0]}")
    assert notes["plain"]["ct_sides_x_mm"] is None
    assert notes["cut"]["ct_sides_x_mm"] == pytest.approx([48.0, 108.0])
    assert notes["cut"]["ct_extent"]["shape"] == [16, 20, 30]
    np.testing.assert_allclose(
        notes["cut"]["ct_extent"]["affine"],
        AFFINE + np.array([[0, 0, 0, 48.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
    )
    for b in (0, 1, 2):  # no bone gains a pixel; the rods' halves stay about a pixel (12.5 mm) wide
        assert masks["cut"][..., b].any() and not (masks["cut"][..., b] & ~masks["plain"][..., b]).any()
    assert masks["cut"][..., 0].sum() < masks["plain"][..., 0].sum()  # the pelvis slab (x 32-124 mm) loses its ends


def test_centre_depth_bench_reads_or_measures_the_clearance(tmp_path, small_geometry):
    """bench_centre_depth takes the clearance a sample records, and measures the same from its labels and pose
    for a sample rendered before it was recorded; its summary has the slope and correlation of a line."""
    from benchmarks.bench_centre_depth import clearance_summary, pelvis_clearance
    from scripts.model.training import load_datalist

    make_case(tmp_path / "cohort" / "case_0000")
    out = tmp_path / "out"
    assert (
        main(
            [
                "--cases",
                str(tmp_path / "cohort"),
                "--out",
                str(out),
                "--poses",
                "1",
                "--seed",
                "0",
                "--geometry",
                str(small_geometry),
                "--split",
                "test",
            ]
        )
        == 0
    )
    entry = load_datalist(out, "test")[0]  # absolute paths, as the bench reads them
    notes_path = out / "case_0000_p0" / "sample.json"
    notes = json.loads(notes_path.read_text())
    pose = Geometry.load(out / "case_0000_p0" / "geometry.json").matrix
    recorded = pelvis_clearance(entry, pose, {})
    assert recorded == notes["pelvis_table_clearance_mm"]
    del notes["pelvis_table_clearance_mm"]
    notes_path.write_text(json.dumps(notes))
    assert pelvis_clearance(entry, pose, {}) == pytest.approx(recorded, abs=1e-9)
    notes_path.write_text(json.dumps({**notes, "table_mm": None}))
    assert pelvis_clearance(entry, pose, {}) is None

    line = clearance_summary(np.array([3.0, 5.0, 9.0]), np.array([1.0, 2.0, 4.0]))  # error = 2 * clearance + 1
    assert line["slope"] == pytest.approx(2.0) and line["correlation"] == pytest.approx(1.0)
    assert line["mean_mm"] == pytest.approx(7.0 / 3.0) and (line["min_mm"], line["max_mm"]) == (1.0, 4.0)
    flat = clearance_summary(np.array([1.0, 2.0]), np.array([5.0, 5.0]))
    assert flat["slope"] is None and flat["correlation"] is None and flat["sd_mm"] == 0.0


def test_rerun_skips_the_same_inputs_and_refuses_other_ones(tmp_path, small_geometry, capsys):
    """A rerun over a sample rendered from the same inputs skips it (counted as skipped); one with another seed,
    label map or setting is refused with one line naming the sample and what differs, before any
    rendering, every file keeping its bytes; --overwrite renders it anew. A setting added after a sample was
    rendered (missing from its record) is not a difference. Samples of bundle 0.10.6 and earlier (no record of their
    inputs) are skipped as before."""
    make_case(tmp_path / "cohort" / "case_0000")
    (tmp_path / "style.yaml").write_text("style: {kvp: 80.0}\n")
    out = tmp_path / "out"
    run = ["--cases", str(tmp_path / "cohort"), "--out", str(out), "--geometry", str(small_geometry), "--split", "test"]
    assert main(run) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == "rendered 1, skipped 0 (already done), failed 0"
    sample = out / "case_0000_p0"
    assert json.loads((sample / "sample.json").read_text())["inputs"]["labels"] == "../cohort/case_0000/labels.nii.gz"
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != ".datalist.lock")
    before = {p: _sha(p) for p in files}
    assert main(run) == 0 and {p: _sha(p) for p in files} == before
    assert capsys.readouterr().err.strip().splitlines()[-1] == "rendered 0, skipped 1 (already done), failed 0"
    for extra, differs in (
        (["--seed", "1"], "seed 0 -> 1"),
        (["--label-map", "totalsegmentator"], 'label_map null -> "totalsegmentator"'),
        (["--config", str(tmp_path / "style.yaml")], "config.style.kvp [70.0, 90.0] -> 80.0"),
    ):
        assert main(run + extra) == 1
        err = capsys.readouterr().err.strip()
        assert (
            err.startswith(f"{sample}: was rendered from other inputs ({differs}") and len(err.splitlines()) == 1
        ), err
        assert err.endswith("; left untouched: choose another --out, or pass --overwrite to render it again")
        assert {p: _sha(p) for p in files} == before
    assert main(run + ["--seed", "1", "--overwrite"]) == 0
    assert (
        json.loads((sample / "sample.json").read_text())["inputs"]["seed"] == 1
        and _sha(sample / "image.nii.gz") != before[sample / "image.nii.gz"]
    )
    notes = json.loads((sample / "sample.json").read_text())
    kvp = notes["inputs"]["config"]["style"].pop("kvp")  # a setting the simulator gained after this sample
    (sample / "sample.json").write_text(json.dumps(notes))
    capsys.readouterr()
    assert main(run + ["--seed", "1"]) == 0 and kvp == [70.0, 90.0]
    assert capsys.readouterr().err.strip().splitlines()[-1] == "rendered 0, skipped 1 (already done), failed 0"
    del notes["inputs"]  # as bundle 0.10.6 wrote it
    (sample / "sample.json").write_text(json.dumps(notes))
    legacy = _sha(sample / "sample.json")
    capsys.readouterr()
    assert main(run + ["--seed", "2"]) == 0 and _sha(sample / "sample.json") == legacy
    assert capsys.readouterr().err.strip().splitlines()[-1] == "rendered 0, skipped 1 (already done), failed 0"


def test_out_folder_that_is_not_a_data_set_gets_nothing(tmp_path, small_geometry, capsys):
    """--out holding an inference result (no marker, or another kind's marker) is refused with one line before any
    rendering, and nothing (marker, datalist, lock) is written into it; a folder holding only sample folders (a
    first run stopped before its datalist) is the simulator's and is finished."""
    make_case(tmp_path / "c")
    run = [
        "--ct",
        str(tmp_path / "c" / "ct.nii.gz"),
        "--labels",
        str(tmp_path / "c" / "labels.nii.gz"),
        "--geometry",
        str(small_geometry),
    ]
    foreign = tmp_path / "result"
    foreign.mkdir()
    (foreign / "result.json").write_text("{}")
    (foreign / "surfaces").mkdir()
    for marker, line in (
        (
            None,
            f"{foreign}: holds files that are not a simulated data set (no .3ddx_output.json of kind 'simulated data set'); "
            "left untouched: choose another --out (a new or empty folder)",
        ),
        (
            {"kind": "reconstruction", "source": None},
            f"{foreign}: holds a reconstruction written by this bundle, not a simulated data set; choose another --out",
        ),
    ):
        if marker:
            (foreign / ".3ddx_output.json").write_text(json.dumps(marker))
        listing = sorted(p.name for p in foreign.iterdir())
        assert main(run + ["--out", str(foreign)]) == 1
        assert capsys.readouterr().err.strip() == line
        assert sorted(p.name for p in foreign.iterdir()) == listing
    out = tmp_path / "out"
    assert main(run + ["--out", str(out)]) == 0
    datalist = json.loads((out / "datalist.json").read_text())
    (out / "datalist.json").unlink()
    (out / ".3ddx_output.json").unlink()
    capsys.readouterr()
    assert main(run + ["--out", str(out)]) == 0 and json.loads((out / "datalist.json").read_text()) == datalist
    assert capsys.readouterr().err.strip().splitlines()[-1] == "rendered 0, skipped 1 (already done), failed 0"


def test_cohort_case_may_hold_a_totalsegmentator_folder(tmp_path, small_geometry, capsys):
    """A case of --cases with its labels as a TotalSegmentator output folder (labels/hip_left.nii.gz, ...) renders
    the same sample as one with those labels in labels.nii.gz; a rerun after its labels changed from one to the other
    is refused naming the labels."""
    for cohort in ("file", "folder"):
        make_case(tmp_path / cohort / "case_0000")
    case = tmp_path / "folder" / "case_0000"
    lab = nib.load(str(case / "labels.nii.gz"))
    (case / "labels").mkdir()
    for name, bone in (
        ("hip_left", 1),
        ("hip_right", -1),
        ("sacrum", -1),
        ("femur_left", 2),
        ("femur_right", 3),
    ):  # -1: an empty mask
        nib.save(
            nib.Nifti1Image((lab.get_fdata() == bone).astype(np.uint8), lab.affine),
            str(case / "labels" / f"{name}.nii.gz"),
        )
    (case / "labels.nii.gz").unlink()
    for cohort in ("file", "folder"):
        assert (
            main(
                [
                    "--cases",
                    str(tmp_path / cohort),
                    "--out",
                    str(tmp_path / f"out_{cohort}"),
                    "--geometry",
                    str(small_geometry),
                ]
            )
            == 0
        )
    for f in ("mask.nii.gz", "depth.nii.gz", "image.nii.gz"):
        np.testing.assert_array_equal(
            *(nib.load(str(tmp_path / f"out_{c}" / "case_0000_p0" / f)).get_fdata() for c in ("file", "folder"))
        )
    (tmp_path / "file" / "case_0000" / "labels.nii.gz").unlink()
    (case / "labels").rename(tmp_path / "file" / "case_0000" / "labels")
    capsys.readouterr()
    assert (
        main(
            ["--cases", str(tmp_path / "file"), "--out", str(tmp_path / "out_file"), "--geometry", str(small_geometry)]
        )
        == 1
    )
    assert capsys.readouterr().err.startswith(
        f"{tmp_path / 'out_file' / 'case_0000_p0'}: was rendered from other inputs (labels "
    )


def test_cohort_cases_in_the_formats_the_ct_reader_takes(tmp_path, small_geometry, capsys):
    """A case's CT and labels uncompressed (ct.nii, labels.nii) or its CT a DICOM series folder (ct/) render the same
    sample as ct.nii.gz with labels.nii.gz; a subfolder without a CT is named in one line and left out (it was skipped
    unseen); a case holding two CTs is refused naming both, before any rendering."""
    make_case(tmp_path / "gz" / "case_0000")
    ct = nib.load(str(tmp_path / "gz" / "case_0000" / "ct.nii.gz"))
    labels = nib.load(str(tmp_path / "gz" / "case_0000" / "labels.nii.gz"))
    plain, dicom = tmp_path / "plain" / "case_0000", tmp_path / "dicom" / "case_0000"
    plain.mkdir(parents=True)
    nib.save(ct, str(plain / "ct.nii"))
    nib.save(labels, str(plain / "labels.nii"))
    dicom.mkdir(parents=True)
    write_dicom_series(dicom / "ct", np.asarray(ct.dataobj), ct.affine)
    nib.save(labels, str(dicom / "labels.nii.gz"))
    (tmp_path / "dicom" / "notes").mkdir()
    (tmp_path / "dicom" / "notes" / "protocol.txt").write_text("a user's notes")
    for cohort in ("gz", "plain", "dicom"):
        capsys.readouterr()
        run = ["--cases", str(tmp_path / cohort), "--out", str(tmp_path / f"out_{cohort}"), "--split", "training"]
        assert main(run + ["--geometry", str(small_geometry)]) == 0
        assert capsys.readouterr().err.strip().splitlines()[-1] == "rendered 1, skipped 0 (already done), failed 0"
    assert capsys.readouterr().err == ""
    main(["--cases", str(tmp_path / "dicom"), "--out", str(tmp_path / "out_dicom"), "--geometry", str(small_geometry)])
    assert capsys.readouterr().err.splitlines()[0] == (
        f"{tmp_path / 'dicom'}: warning: left out notes: no ct.nii.gz (or ct.nii, ct.nrrd, ct.mha, ct.mhd, a DICOM "
        "series folder ct/)"
    )
    for f in ("image.nii.gz", "mask.nii.gz", "depth.nii.gz"):
        reference = nib.load(str(tmp_path / "out_gz" / "case_0000_p0" / f)).get_fdata()
        for cohort in ("plain", "dicom"):
            np.testing.assert_allclose(
                nib.load(str(tmp_path / f"out_{cohort}" / "case_0000_p0" / f)).get_fdata(), reference, atol=1e-3
            )
    nib.save(ct, str(dicom / "ct.nii.gz"))
    capsys.readouterr()
    assert main(["--cases", str(tmp_path / "dicom"), "--out", str(tmp_path / "out_two")]) == 1
    assert capsys.readouterr().err.strip() == f"{dicom}: holds ct.nii.gz and ct: a case folder holds one ct image"
    assert not (tmp_path / "out_two").exists()


def test_a_ct_stays_in_one_list_of_a_data_set(tmp_path, small_geometry, capsys):
    """Poses added to a CT's samples join their list: with another --split the run is refused with one line before
    any rendering; without --split (even with another seed, whose hash would pick another list) they join it."""
    make_case(tmp_path / "c")
    out = tmp_path / "out"
    run = [
        "--ct",
        str(tmp_path / "c" / "ct.nii.gz"),
        "--labels",
        str(tmp_path / "c" / "labels.nii.gz"),
        "--out",
        str(out),
        "--geometry",
        str(small_geometry),
    ]
    assert main(run + ["--split", "training"]) == 0
    capsys.readouterr()
    assert main(run + ["--split", "test", "--poses", "2"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"{tmp_path / 'c' / 'ct.nii.gz'}: has samples in the training list of {out}, not test: a CT belongs to "
        "one list (its radiographs in both would be alike); leave --split out to add poses to training"
    )
    assert not (out / "ct_p1").exists()
    seed = next(s for s in range(100) if simulate_mod.split_of("ct", s, load_config()["split"]) != "training")
    assert main(run + ["--poses", "2", "--seed", str(seed), "--overwrite"]) == 0
    assert [e["pose"] for e in json.loads((out / "datalist.json").read_text())["training"]] == [0, 1]


def test_training_cases_join_a_data_set_whose_rendered_cases_keep_their_lists(tmp_path, small_geometry, capsys):
    """README's "more training-only subjects": the whole cohort rerun with --split training renders the new case
    into training and skips a case fully rendered into test, its files keeping their bytes; a case with poses still
    to render whose samples are in test is refused with one line before any rendering."""
    make_case(tmp_path / "cohort" / "case_0000")
    out = tmp_path / "out"
    run = ["--cases", str(tmp_path / "cohort"), "--out", str(out), "--geometry", str(small_geometry)]
    assert main(run + ["--split", "test"]) == 0
    old = {p: _sha(p) for p in (out / "case_0000_p0").iterdir()}
    make_case(tmp_path / "cohort" / "case_0001")
    capsys.readouterr()
    assert main(run + ["--split", "training"]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == "rendered 1, skipped 1 (already done), failed 0"
    lists = {e["case"]: s for s, entries in json.loads((out / "datalist.json").read_text()).items() for e in entries}
    assert lists == {"case_0000": "test", "case_0001": "training"}
    assert {p: _sha(p) for p in (out / "case_0000_p0").iterdir()} == old
    listing = sorted(p.name for p in out.iterdir())
    assert main(run + ["--split", "training", "--poses", "2"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"{tmp_path / 'cohort' / 'case_0000' / 'ct.nii.gz'}: has samples in the test list of {out}, not training: "
        "a CT belongs to one list (its radiographs in both would be alike); leave --split out to add poses to test"
    )
    assert sorted(p.name for p in out.iterdir()) == listing


@pytest.mark.parametrize("broken", ['{"case": "case_0000", "po', "[1, 2]", "{}"], ids=["truncated", "list", "no case"])
def test_a_sample_with_an_unreadable_sample_json_is_rendered_again(tmp_path, small_geometry, capsys, broken):
    """A sample folder of the simulator whose sample.json is cut short, not a JSON object or without its case is not done: a rerun
    renders it again (exit 0) and lists it."""
    make_case(tmp_path / "cohort" / "case_0000")
    out = tmp_path / "out"
    run = ["--cases", str(tmp_path / "cohort"), "--out", str(out), "--geometry", str(small_geometry)]
    assert main(run + ["--split", "validation"]) == 0
    (out / "case_0000_p0" / "sample.json").write_text(broken)
    capsys.readouterr()
    assert main(run + ["--split", "validation"]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == "rendered 1, skipped 0 (already done), failed 0"
    notes = json.loads((out / "case_0000_p0" / "sample.json").read_text())
    assert notes["case"] == "case_0000" and notes["split"] == "validation" and notes["inputs"]["seed"] == 0
    assert [e["case"] for e in json.loads((out / "datalist.json").read_text())["validation"]] == ["case_0000"]


@pytest.mark.parametrize("broken", ['{"case": "case_0000", "po', "[1, 2]", "{}"], ids=["truncated", "list", "no case"])
def test_an_unreadable_sample_json_of_another_case_is_left_out_with_a_warning(tmp_path, small_geometry, capsys, broken):
    """A rerun over case B of a data set whose case A sample.json is cut short, not a JSON object or without its case succeeds: the
    datalist lists B only, and one warning line names A's folder and how to render it again."""
    for name in ("case_0000", "case_0001"):
        make_case(tmp_path / "cohort" / name)
    out = tmp_path / "out"
    run = ["--cases", str(tmp_path / "cohort"), "--out", str(out), "--geometry", str(small_geometry)]
    assert main(run + ["--split", "training"]) == 0
    (out / "case_0000_p0" / "sample.json").write_text(broken)
    capsys.readouterr()
    assert main(run + ["--shard", "1/2"]) == 0  # case_0001 only
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2:] == [
        "rendered 0, skipped 1 (already done), failed 0",
        f"{out / 'case_0000_p0'}: warning: sample.json is unreadable or not a sample's notes; left out of the datalist: "
        "rerun the simulator with case 'case_0000' to render it again",
    ]
    datalist = json.loads((out / "datalist.json").read_text())
    assert [(s, e["case"]) for s, entries in datalist.items() for e in entries] == [("training", "case_0001")]
    assert (out / "case_0000_p0" / "sample.json").read_text() == broken
