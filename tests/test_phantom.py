"""Tests of the procedural phantom: correspondence, mesh/label agreement, anatomy, HU, files."""

from __future__ import annotations

import json
import pickle

import nibabel as nib
import numpy as np
import pytest
import trimesh
from scipy import ndimage
from scripts.data import phantom_anatomy as anatomy
from scripts.data.phantom import (
    BONE_LOSS_AT_1,
    TissueOptions,
    _bone_hu,
    build_meshes,
    case_seeds,
    check_spacing,
    generate_case,
    main,
    sample_params,
    voxelize,
)
from scripts.data.volumes import BONE_LABELS
from scripts.geometry import BONES, Geometry, standard_ap_pose
from scripts.io.files import OUTPUT_MARKER, InputFileError

SPACING = 3.0


@pytest.fixture(scope="module")
def case():
    return generate_case(7, SPACING, "procedural")


@pytest.fixture(scope="module")
def other():
    return generate_case(8, SPACING, "procedural")


def _world_points(case, index: np.ndarray) -> np.ndarray:
    return index @ case.affine[:3, :3].T + case.affine[:3, 3]


def test_voxelize_matches_analytic_sphere_and_box():
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=20.0)
    sphere.apply_translation((1.3, -0.7, 2.1))
    box = trimesh.creation.box(extents=(10.0, 14.0, 6.0))
    origin, shape = np.array([-25.0, -25.0, -25.0]), (51, 51, 51)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    p = origin + ijk
    r = np.linalg.norm(p - (1.3, -0.7, 2.1), axis=1).reshape(shape)
    occ = voxelize(sphere, origin, 1.0, shape)
    assert occ[r < 19.5].all() and not occ[r > 20.05].any()
    # faces through voxel centres: per axis exactly one of the two boundary layers counts (half-open rule)
    occ = voxelize(box, origin, 1.0, shape)
    closed = (np.abs(p) <= (5.0, 7.0, 3.0)).all(1).reshape(shape)
    open_ = (np.abs(p) < (5.0, 7.0, 3.0)).all(1).reshape(shape)
    assert occ.sum() == 10 * 14 * 6
    assert occ[open_].all() and not occ[~closed].any()


def test_meshes_correspond_across_subjects(case, other):
    for bone in BONES:
        a, b = case.meshes[bone], other.meshes[bone]
        assert a.vertices.shape == b.vertices.shape
        assert 2000 <= len(a.vertices) <= 10000
        np.testing.assert_array_equal(a.faces, b.faces)
        assert np.abs(a.vertices - b.vertices).max() > 1.0
    # the two femurs share the template: same vertex count, mirrored (reversed) winding
    np.testing.assert_array_equal(case.meshes["femur_left"].faces, case.meshes["femur_right"].faces[:, ::-1])


def test_meshes_closed_and_outward(case, other):
    for c in (case, other):
        for bone in BONES:
            m = c.meshes[bone]
            assert m.is_watertight and m.is_winding_consistent
            assert m.volume > 0
            # outward: the normal at the highest vertex points up
            top = np.argmax(m.vertices[:, 2])
            assert m.vertex_normals[top, 2] > 0


def test_labels_are_the_voxelised_meshes(case):
    rng = np.random.default_rng(0)
    for bone in BONES:
        mesh = case.meshes[bone]
        lo = np.floor((mesh.bounds[0] - case.affine[:3, 3]) / SPACING).astype(int)
        hi = np.ceil((mesh.bounds[1] - case.affine[:3, 3]) / SPACING).astype(int)
        assert (lo >= 0).all() and (hi < case.labels.shape).all()  # whole mesh inside the volume
        ijk = rng.integers(lo, hi + 1, size=(600, 3))
        sd = trimesh.proximity.signed_distance(mesh, _world_points(case, ijk))  # > 0 inside
        lab = case.labels[tuple(ijk.T)]
        assert (lab[sd > 0.5 * SPACING] == BONE_LABELS[bone]).all()
        assert (lab[sd < -0.5 * SPACING] != BONE_LABELS[bone]).all()
        assert (sd > 0.5 * SPACING).sum() > 20
        # occupied volume equals the mesh volume
        assert (case.labels == BONE_LABELS[bone]).sum() * SPACING**3 == pytest.approx(mesh.volume, rel=0.05)


def test_same_seed_same_case_different_seed_different_shape(case, other):
    again = generate_case(7, SPACING, "procedural")
    np.testing.assert_array_equal(again.ct, case.ct)
    np.testing.assert_array_equal(again.labels, case.labels)
    np.testing.assert_array_equal(again.affine, case.affine)
    for bone in BONES:
        np.testing.assert_array_equal(again.meshes[bone].vertices, case.meshes[bone].vertices)
    assert again.params == case.params
    assert other.params["head_radius"] != case.params["head_radius"]
    assert len(set(case_seeds(5, 0))) == 5 and case_seeds(3, 0) == case_seeds(5, 0)[:3]


def test_left_right_follow_ras_and_ap_view(case):
    left, right = case.meshes["femur_left"].vertices, case.meshes["femur_right"].vertices
    assert left[:, 0].max() < 0 < right[:, 0].min()  # RAS: +x is the patient's right
    centre = case.meshes["pelvis"].centroid
    geom = Geometry.standard().with_pose(standard_ap_pose(centre, 950.0))
    u_left = geom.project(geom.world_to_camera_points(left))[0][:, 0]
    u_right = geom.project(geom.world_to_camera_points(right))[0][:, 0]
    assert u_left.min() > u_right.max()  # image columns run toward the patient's left


def test_heads_seated_in_acetabula_without_overlap():
    for seed in case_seeds(4, 11):
        params = sample_params(seed)
        meshes = build_meshes(params)
        radius = params["head_radius"]
        cavity = radius * (1 + anatomy.JOINT_GAP / anatomy.HEAD_RADIUS)
        for bone, hip in zip(("femur_right", "femur_left"), anatomy.hip_centres(params), strict=True):
            head = np.asarray(params[bone]["head_centre_mm"])
            np.testing.assert_allclose(head, hip, atol=1e-6)
            d_femur = np.linalg.norm(meshes[bone].vertices - head, axis=1)
            d_pelvis = np.linalg.norm(meshes["pelvis"].vertices - head, axis=1)
            assert d_femur.min() == pytest.approx(radius, abs=1.0)  # spherical head of the sampled size
            assert d_pelvis.min() == pytest.approx(cavity, abs=1.0)  # cup surrounds it with a joint space
            assert cavity - radius >= 1.5
            # no voxel of a 1 mm grid around the hip lies in both bones
            origin, shape = head - 70.0, (141, 141, 141)
            both = voxelize(meshes[bone], origin, 1.0, shape) & voxelize(meshes["pelvis"], origin, 1.0, shape)
            assert not both.any()


def test_adult_proportions_and_partial_femurs_in_view():
    geom = Geometry.standard()
    for seed in case_seeds(6, 3):
        params = sample_params(seed)
        meshes = build_meshes(params)
        assert 240.0 <= np.ptp(meshes["pelvis"].vertices[:, 0]) <= 300.0  # inter-iliac width
        assert 42.0 <= 2 * params["head_radius"] <= 52.0
        for bone in ("femur_left", "femur_right"):
            side = params[bone]
            assert 120.0 <= side["neck_shaft_angle"] <= 140.0 and 5.0 <= side["anteversion"] <= 25.0
            below = side["head_centre_mm"][2] - meshes[bone].vertices[:, 2].min()
            assert 190.0 <= below <= 320.0
        hips = np.mean([params[b]["head_centre_mm"] for b in ("femur_left", "femur_right")], 0)
        g = geom.with_pose(standard_ap_pose(hips + (0.0, 0.0, 40.0), 950.0))
        for bone in ("femur_left", "femur_right"):
            seen = g.in_field_of_view(g.world_to_camera_points(meshes[bone].vertices))
            assert 0.2 < seen.mean() < 0.95  # the femur is only partly in the hip radiograph


def test_hounsfield_units(case):
    ct, labels = case.ct, case.labels
    assert ct.dtype == np.int16 and labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    bone = labels > 0
    surface = bone & ~ndimage.binary_erosion(bone)
    deep = ndimage.binary_erosion(bone, iterations=3)
    assert 1100 <= np.median(ct[surface]) <= 1900 and ct[surface].min() > 900
    assert 120 <= np.median(ct[deep]) <= 450
    assert ct[0, 0, 0] == -1000 and ct[0, -1, -1] == -1000  # air outside the body
    soft = ct[~bone & (ct > -200)]
    assert 20 <= np.median(soft) <= 60  # muscle
    assert ((ct > -150) & (ct < -50) & ~bone).sum() > 0.05 * (~bone & (ct > -200)).sum()  # fat layer


def test_a_spacing_finer_than_memory_holds_is_refused():
    """A case peaks at about 2 GiB x (1 mm / spacing)^3: 0.5 mm needs 16 GiB, so a 16 GiB machine takes 0.5 mm and
    refuses 0.49 mm (2 / 0.49^3 = 17.0 GiB) in one line naming the option and the finest spacing it holds; 24 GiB
    holds (2 / 24)^(1/3) = 0.437 mm, offered as 0.44. Without a memory figure only the sign is checked."""
    gib = 2**30
    assert check_spacing("0.5", memory=16 * gib) == 0.5
    with pytest.raises(InputFileError) as e:
        check_spacing(0.49, memory=16 * gib)
    assert str(e.value) == (
        "--spacing: 0.49 mm needs about 17 GiB of memory per case (2 GiB at 1 mm, x (1 mm / spacing)^3); "
        "this machine has 16 GiB: use 0.5 mm or coarser"
    )
    with pytest.raises(InputFileError, match="use 0.44 mm or coarser"):
        check_spacing(0.43, memory=24 * gib)
    assert check_spacing(0.44, memory=24 * gib) == 0.44
    with pytest.raises(InputFileError, match="--spacing: must be a positive number"):
        check_spacing(0, memory=24 * gib)


def test_no_more_worker_processes_than_cases(tmp_path, monkeypatch):
    """--workers 1000 for two cases starts two processes (it started 1000, idle, each importing torch)."""
    sizes = []

    class Pool:
        def __init__(self, processes):
            sizes.append(processes)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def imap(self, function, tasks):
            return map(function, tasks)

    monkeypatch.setattr(
        "scripts.data.phantom.multiprocessing.get_context", lambda method: type("Spawn", (), {"Pool": Pool})
    )
    args = ["--anatomy", "procedural", "--n", "2", "--out", str(tmp_path / "o"), "--spacing", "8", "--workers", "1000"]
    assert main(args) == 0 and sizes == [2] and len(list((tmp_path / "o").glob("case_*"))) == 2


def test_an_output_folder_in_models_is_refused_before_it_is_made(tmp_path, monkeypatch, capsys):
    """--out models/ph: one line, and no folder made there (it made models/ph, then refused its first case); with
    models/ moved to a temporary folder, so that the shipped one is never at stake."""
    monkeypatch.setattr("scripts.io.files.MODELS_DIR", tmp_path / "models")
    (tmp_path / "models").mkdir()
    assert (
        main(["--anatomy", "procedural", "--n", "1", "--out", str(tmp_path / "models" / "ph"), "--spacing", "8"]) == 1
    )
    assert capsys.readouterr().err.strip() == (
        f"{tmp_path / 'models' / 'ph'}: --out points into the shipped models/ folder; write under runs/ and ship with "
        "python -m scripts.release"
    )
    assert not any((tmp_path / "models").iterdir())


def test_cli_writes_full_layout(tmp_path, capsys):
    assert main(["--anatomy", "procedural", "--n", "2", "--out", str(tmp_path), "--seed", "5", "--spacing", "4"]) == 0
    assert capsys.readouterr().out == f"wrote 2 phantom cases to {tmp_path}\n"
    template = {
        b: len(v.vertices)
        for b, v in ((b, anatomy.pelvis_template() if b == "pelvis" else anatomy.femur_template()) for b in BONES)
    }
    for i in range(2):
        d = tmp_path / f"case_{i:04d}"
        ct, lab = nib.load(d / "ct.nii.gz"), nib.load(d / "labels.nii.gz")
        assert ct.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
        assert ct.shape == lab.shape
        np.testing.assert_allclose(ct.affine, lab.affine)
        np.testing.assert_allclose(np.diag(ct.affine)[:3], 4.0)
        assert nib.aff2axcodes(ct.affine) == ("R", "A", "S")
        for bone in BONES:
            mesh = trimesh.load(d / "meshes" / f"{bone}.ply", process=False)
            assert len(mesh.vertices) == template[bone] and mesh.is_watertight
        params = json.loads((d / "params.json").read_text())
        assert params["spacing_mm"] == 4.0 and "femur_left" in params
        assert (d / "preview.png").stat().st_size > 1000
    with pytest.raises(SystemExit) as refused:  # argparse's one line (config_flags.argument)
        main(["--anatomy", "procedural", "--n", "1", "--out", str(tmp_path / "x"), "--spacing", "-1"])
    assert refused.value.code == 2 and not (tmp_path / "x").exists()


def test_cli_leaves_a_users_files_and_clears_its_leftovers(tmp_path, capsys):
    """A user's folder at a case's name, or a file as --out: one line before any case is drawn, nothing written,
    the user's files byte for byte; a rerun removes the .case_XXXX.*.partial folder of a killed run."""
    out = tmp_path / "out"
    (out / "case_0001").mkdir(parents=True)
    (out / "case_0001" / "notes.txt").write_text("mine")
    (out / "notes.txt").write_text("mine too")
    args = ["--anatomy", "procedural", "--n", "2", "--seed", "5", "--spacing", "8"]
    assert main([*args, "--out", str(out)]) == 1
    assert f"{out / 'case_0001'}: exists and was not written by this bundle" in capsys.readouterr().err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "case_0001",
        "case_0001/notes.txt",
        "notes.txt",
    ]
    (tmp_path / "file").write_text("a user's file")
    assert main([*args, "--out", str(tmp_path / "file"), "--workers", "2"]) == 1
    assert capsys.readouterr().err.strip().endswith("exists and is not a folder; --out names the output folder")
    assert (tmp_path / "file").read_text() == "a user's file"
    err = pickle.loads(pickle.dumps(InputFileError("a.nii.gz", "bad")))  # a worker's error reaches the Pool's parent
    assert (err.path, err.problem, str(err)) == ("a.nii.gz", "bad", "a.nii.gz: bad")
    (out / "case_0001" / "notes.txt").unlink()
    (out / "case_0001").rmdir()
    leftover = out / ".case_0000.k1lled00.partial"
    leftover.mkdir()
    (leftover / OUTPUT_MARKER).write_text(json.dumps({"kind": "phantom case", "source": None}))
    assert main([*args, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["case_0000", "case_0001", "notes.txt"]


def test_soft_tissue_depots_follow_the_body_habitus():
    """Every depot rises with the habitus (lean 0 .. heavy 1) and stays in its range (docs/phantom.md)."""
    ranges = {
        "fat_mm": (8, 35),
        "lateral_tissue_mm": (35, 75),
        "anterior_tissue_mm": (40, 110),
        "posterior_tissue_mm": (30, 55),
        "thigh_radius_mm": (70, 95),
    }
    draws = [sample_params(s)["tissue"] for s in range(200)]
    habitus = np.array([t["habitus"] for t in draws])
    for key, (low, high) in ranges.items():
        values = np.array([t[key] for t in draws])
        assert low <= values.min() and values.max() <= high
        unit = (values - low) / (high - low)
        assert np.corrcoef(habitus, unit)[0, 1] > 0.9
        assert 0.05 < np.abs(unit - habitus).mean() < 0.12  # an individual part of about 10% of the range


def test_posterior_tissue_range_sets_the_tissue_behind_the_pelvis(tmp_path):
    """--posterior_tissue_mm: the default draws are unchanged, a fixed range gives that thickness behind the
    pelvis in params and in the CT (the body's back this far behind the pelvis's, to a voxel), every other
    draw unchanged; a reversed range is refused before anything is written."""
    assert sample_params(3) == sample_params(3, TissueOptions(posterior_tissue_mm=(30.0, 55.0)))
    depth = {}
    for mm in (15.0, 45.0):
        case = generate_case(3, SPACING, "procedural", options=TissueOptions(posterior_tissue_mm=(mm, mm)))
        tissue = dict(case.params["tissue"])
        assert tissue.pop("posterior_tissue_mm") == mm
        default = dict(sample_params(3)["tissue"])
        default.pop("posterior_tissue_mm")
        assert tissue == default
        y = _world_points(case, np.argwhere(case.ct > -500))[:, 1]  # body voxels, RAS y (anterior +)
        pelvis_y = _world_points(case, np.argwhere(case.labels == BONE_LABELS["pelvis"]))[:, 1]
        depth[mm] = pelvis_y.min() - y.min()
    assert depth[45.0] - depth[15.0] == pytest.approx(30.0, abs=SPACING)
    assert depth[15.0] == pytest.approx(15.0, abs=2 * SPACING)
    with pytest.raises(SystemExit):
        main(["--anatomy", "procedural", "--n", "1", "--out", str(tmp_path / "x"), "--posterior_tissue_mm", "40", "20"])
    assert not (tmp_path / "x").exists()


def test_osteoporosis_scales_the_bone_draws_and_nothing_else(tmp_path):
    """--osteoporosis: the default draws nothing (params as before); a fixed bone loss of 1 scales the four bone
    draws by BONE_LOSS_AT_1 (by hand: trabecular HU to 35%), every other draw unchanged, and lowers the CT's bone
    HU by as much (mean over the pelvis's interior, away from the partial-volume rim); a range draws one loss
    per subject within it; a reversed range is refused before anything is written."""
    default = sample_params(3)
    assert (
        default == sample_params(3, TissueOptions(osteoporosis=(0.0, 0.0))) and "osteoporosis" not in default["tissue"]
    )
    lossy = sample_params(3, TissueOptions(osteoporosis=(1.0, 1.0)))["tissue"]
    assert lossy.pop("osteoporosis") == 1.0
    assert lossy["trabecular_hu"] == pytest.approx(0.35 * default["tissue"]["trabecular_hu"])
    assert lossy["cortical_hu"] == pytest.approx(0.65 * default["tissue"]["cortical_hu"])
    assert lossy["cortex_mm"] == pytest.approx(0.6 * default["tissue"]["cortex_mm"])
    assert {k: v for k, v in lossy.items() if k not in BONE_LOSS_AT_1} == {
        k: v for k, v in default["tissue"].items() if k not in BONE_LOSS_AT_1
    }
    drawn = [sample_params(s, TissueOptions(osteoporosis=(0.2, 0.6)))["tissue"]["osteoporosis"] for s in range(20)]
    assert all(0.2 <= o <= 0.6 for o in drawn) and np.std(drawn) > 0.05
    young, old = generate_case(3, SPACING, "procedural"), generate_case(
        3, SPACING, "procedural", options=TissueOptions(osteoporosis=(1.0, 1.0))
    )
    np.testing.assert_array_equal(young.labels, old.labels)
    inner = ndimage.binary_erosion(young.labels == BONE_LABELS["pelvis"], iterations=2)
    ratio = (old.ct[inner].astype(float).mean()) / young.ct[inner].astype(float).mean()
    assert 0.3 < ratio < 0.7  # between the trabecular and the cortical scaling
    with pytest.raises(SystemExit):
        main(["--anatomy", "procedural", "--n", "1", "--out", str(tmp_path / "x"), "--osteoporosis", "0.8", "0.2"])
    assert not (tmp_path / "x").exists()


def test_partial_volume_cortex_by_hand(tmp_path):
    """A 20-voxel cube at 2 mm, cortex 1.2 or 2.5 mm thick: by default the outer voxel layer is cortex (1.2 mm widened to a
    voxel; 2.5 mm cut to the one layer whose centre lies within it), with --partial_volume_cortex the layers hold shares
    1.2 / 2 = 0.6 and 0 (1 and 0.25 for 2.5 mm), HU and texture mixed by them (the texture read from the default
    rendering, the same draws). The shares along a row add up to the cortex on both faces; params record the choice only
    when made; the CLI passes it on."""
    mask = np.zeros((24, 24, 24), bool)
    mask[2:22, 2:22, 2:22] = True
    row = mask[:, 12, 12]  # a line through the middle: layers 1, 2, 3 ... in from each face
    for cortex_mm, shares in ((1.2, (0.6, 0.0, 0.0)), (2.5, (1.0, 0.25, 0.0))):
        tissue = {"cortical_hu": 1500.0, "trabecular_hu": 200.0}
        plain = np.zeros(mask.shape)
        plain[mask] = _bone_hu(mask, 2.0, cortex_mm, {"tissue": tissue}, np.random.default_rng(0))
        mixed = np.zeros(mask.shape)
        mixed[mask] = _bone_hu(
            mask, 2.0, cortex_mm, {"tissue": {**tissue, "partial_volume_cortex": True}}, np.random.default_rng(0)
        )
        layers = np.arange(2, 22)
        texture = np.where(
            np.minimum(layers - 2, 21 - layers) < 1,
            (plain[layers, 12, 12] - 1500.0) / 80.0,
            (plain[layers, 12, 12] - 200.0) / 50.0,
        )
        depth_layer = np.minimum(layers - 2, 21 - layers)  # 0: the outer voxel
        share = np.array([shares[min(d, 2)] for d in depth_layer])
        np.testing.assert_allclose(
            mixed[layers, 12, 12], 200.0 + share * 1300.0 + (50.0 + 30.0 * share) * texture, atol=1e-6
        )
        assert share.sum() * 2.0 == pytest.approx(2 * cortex_mm)  # both faces of the row
    assert row.sum() == 20
    assert "partial_volume_cortex" not in sample_params(3)["tissue"]
    assert sample_params(3, TissueOptions(partial_volume_cortex=True))["tissue"] == {
        **sample_params(3)["tissue"],
        "partial_volume_cortex": True,
    }
    main(
        [
            "--anatomy",
            "procedural",
            "--n",
            "1",
            "--out",
            str(tmp_path / "pv"),
            "--spacing",
            "6",
            "--partial_volume_cortex",
        ]
    )
    assert (
        json.loads((tmp_path / "pv" / "case_0000" / "params.json").read_text())["tissue"]["partial_volume_cortex"]
        is True
    )


def test_parallel_and_extended_cohorts_match_serial(tmp_path):
    """--workers 2 writes the same cases (same seeds, same folders) as one process, and --start 1
    writes the second case of that cohort without the first."""
    assert (
        main(
            ["--anatomy", "procedural", "--n", "2", "--out", str(tmp_path / "serial"), "--seed", "7", "--spacing", "6"]
        )
        == 0
    )
    assert (
        main(
            [
                "--anatomy",
                "procedural",
                "--n",
                "2",
                "--out",
                str(tmp_path / "parallel"),
                "--seed",
                "7",
                "--spacing",
                "6",
                "--workers",
                "2",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "--anatomy",
                "procedural",
                "--n",
                "1",
                "--start",
                "1",
                "--out",
                str(tmp_path / "extended"),
                "--seed",
                "7",
                "--spacing",
                "6",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "extended").iterdir()) == ["case_0001"]
    for run, case in (("parallel", "case_0000"), ("parallel", "case_0001"), ("extended", "case_0001")):
        serial, other = (json.loads((tmp_path / r / case / "params.json").read_text()) for r in ("serial", run))
        assert serial == other
        a, b = (nib.load(str(tmp_path / r / case / "labels.nii.gz")).get_fdata() for r in ("serial", run))
        np.testing.assert_array_equal(a, b)
