"""Shape model: Procrustes, PCA variance, storage, CLI, registration and fitting to partial dual-face points."""

import json
import shutil

import numpy as np
import pytest
import torch
import trimesh
from scripts.geometry import STANDARD_AP_ROTATION, Geometry, rotation_matrix
from scripts.io.files import InputFileError, shared_data_dir, write_nifti
from scripts.reconstruction import ssm
from scripts.reconstruction.meshing import masked_points
from scripts.reconstruction.reconstruct import bone_field, bone_points, complete_surfaces
from scripts.reconstruction.surface_metrics import surface_metrics
from scripts.shape_maths import generalized_procrustes
from skimage.measure import marching_cubes
from tests.helpers import ROOT, error_lines

SPHERE = trimesh.creation.icosphere(3)


def random_shape(rng):
    """Template-deformed ellipsoid (642 vertices, mm): random axes plus smooth bumps."""
    x, y, z = SPHERE.vertices.T
    radii = np.array([60.0, 30.0, 22.0]) * (1 + 0.15 * rng.standard_normal(3))
    bump = (
        1 + 0.12 * rng.standard_normal() * x * y + 0.1 * rng.standard_normal() * z**2 + 0.08 * rng.standard_normal() * x
    )
    return SPHERE.vertices * radii * bump[:, None]


def rigid(rng, angle_sd=8.0, shift_sd=20.0):
    m = np.eye(4)
    m[:3, :3] = rotation_matrix(rng.normal(0, angle_sd, 3))
    m[:3, 3] = rng.normal(0, shift_sd, 3)
    return m


def posed(v, m):
    return v @ m[:3, :3].T + m[:3, 3]


@pytest.fixture(scope="module")
def cohort():
    rng = np.random.default_rng(0)
    return [posed(random_shape(rng), rigid(rng)) for _ in range(20)], random_shape(rng)


def dual_face_points(mesh, geometry):
    """Front/back points seen through ``geometry`` (ray casting), as the meshing module would back-project them."""
    dirs = geometry.ray_directions(dtype=torch.float64).numpy().reshape(-1, 3)
    loc, ray, _ = mesh.ray.intersects_location(np.zeros_like(dirs), dirs, multiple_hits=True)
    depth = np.linalg.norm(loc, axis=1)
    front, back = np.full(len(dirs), np.inf), np.zeros(len(dirs))
    np.minimum.at(front, ray, depth)
    np.maximum.at(back, ray, depth)
    mask = np.isfinite(front)
    front[~mask] = 0
    shape = (geometry.height, geometry.width)
    return masked_points(front.reshape(shape), back.reshape(shape), mask.reshape(shape), geometry), mask.reshape(shape)


def test_procrustes_removes_pose():
    rng = np.random.default_rng(1)
    base = random_shape(rng)
    shapes = np.stack([posed(base, rigid(rng, 20, 50)) for _ in range(5)])
    aligned = generalized_procrustes(shapes)
    assert np.abs(aligned - aligned[0]).max() < 1e-6
    # the first shape's orientation is kept (gauge), only centred
    assert np.allclose(aligned[0], shapes[0] - shapes[0].mean(0), atol=1e-6)
    scaled = shapes * np.array([1.0, 1.2, 0.8, 1.1, 0.9])[:, None, None]
    assert np.abs(np.diff(generalized_procrustes(scaled, scale=True), axis=0)).max() < 1e-6
    assert np.abs(np.diff(generalized_procrustes(scaled, scale=False), axis=0)).max() > 1.0


def test_variance_threshold_and_modes(cohort):
    shapes, _ = cohort
    full = ssm.build_shape_model(np.stack(shapes), SPHERE.faces, variance=1.0)
    model = ssm.build_shape_model(np.stack(shapes), SPHERE.faces, variance=0.98)
    frac = np.cumsum(full.variances) / full.variances.sum()
    k = model.n_modes
    assert frac[k - 1] >= 0.98 and (k == 1 or frac[k - 2] < 0.98)
    assert full.n_modes <= len(shapes) - 1
    flat = full.modes.reshape(full.n_modes, -1)
    assert np.allclose(flat @ flat.T, np.eye(full.n_modes), atol=1e-8)
    # the training shapes' coordinates along each mode have the stored variance
    aligned = generalized_procrustes(np.stack(shapes)).reshape(len(shapes), -1)
    coords = (aligned - full.mean.reshape(-1)) @ flat.T
    assert np.allclose(coords.var(0, ddof=1), full.variances, rtol=1e-6)
    # and with all modes each training shape is reproduced exactly from its coefficients
    assert np.allclose(full.shape(coords[3] / np.sqrt(full.variances)), aligned[3].reshape(-1, 3), atol=1e-6)


def test_save_load_roundtrip(tmp_path, cohort):
    shapes, _ = cohort
    model = ssm.build_shape_model(np.stack(shapes), SPHERE.faces)
    path = tmp_path / "ssm.npz"
    ssm.save_shape_models(path, {"pelvis": model}, {"note": "test"})
    with np.load(path, allow_pickle=False) as z:
        assert "pelvis/modes" in z.files
    loaded = ssm.ShapeModel.load(path, "pelvis")
    coeffs = np.array([1.0, -0.5] + [0.0] * (model.n_modes - 2))
    pose = rigid(np.random.default_rng(3))
    assert np.allclose(loaded.instance(coeffs, pose)[0], model.instance(coeffs, pose)[0])
    assert ssm.load_shape_models(path)[1]["note"] == "test"
    with pytest.raises(InputFileError, match="femur_left"):
        ssm.ShapeModel.load(path, "femur_left")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputFileError, match="bad.npz"):
        ssm.load_shape_models(tmp_path / "bad.npz")


def test_fit_reproduces_training_shape(cohort):
    shapes, _ = cohort
    model = ssm.build_shape_model(np.stack(shapes), SPHERE.faces)
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation_matrix([3, -2, 4]) @ STANDARD_AP_ROTATION, [10.0, -5.0, 950.0]
    target = posed(shapes[4], pose)
    fit = ssm.fit_shape_model(model, target, regularisation_mm2=1e-4, trim_fraction=0.0)
    assert fit.rms_mm < 0.3
    truth = trimesh.Trimesh(target, SPHERE.faces)
    assert surface_metrics(fit.mesh(), truth, spacing_mm=3.0)["assd_mm"] < 0.3


def test_fit_partial_points_beats_mean_shape(cohort):
    shapes, held_out = cohort
    model = ssm.build_shape_model(np.stack(shapes), SPHERE.faces)
    geometry = Geometry(sid_mm=1100.0, pixel_spacing_mm=(4.0, 4.0), image_size=(64, 64))
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation_matrix([5, -4, 3]) @ STANDARD_AP_ROTATION, [100.0, 10.0, 950.0]
    truth = trimesh.Trimesh(posed(held_out, pose), SPHERE.faces)
    points, mask = dual_face_points(truth, geometry)
    assert mask[:, -1].any()  # the shape runs off the image: partial view
    assert geometry.in_field_of_view(points).all()
    fit = ssm.fit_shape_model(model, points, geometry=geometry)
    mean_fit = ssm.fit_shape_model(model, points, geometry=geometry, n_rigid_iterations=30)
    assert np.allclose(mean_fit.coeffs, 0)
    err_fit = surface_metrics(fit.mesh(), truth, spacing_mm=3.0)["assd_mm"]
    err_mean = surface_metrics(mean_fit.mesh(), truth, spacing_mm=3.0)["assd_mm"]
    assert err_fit < 0.6 * err_mean and err_fit < 2.0
    assert fit.rms_mm < 1.0 and 0.85 < fit.inlier_fraction <= 1.0


def test_fit_early_stop_matches_full_iterations(cohort):
    """Stopping a phase once an update moves no vertex by more than tol_mm gives the fit of all iterations."""
    shapes, held_out = cohort
    model = ssm.build_shape_model(np.stack(shapes), SPHERE.faces)
    geometry = Geometry(sid_mm=1100.0, pixel_spacing_mm=(4.0, 4.0), image_size=(64, 64))
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation_matrix([-4, 3, 6]) @ STANDARD_AP_ROTATION, [-20.0, 15.0, 940.0]
    truth = trimesh.Trimesh(posed(held_out, pose), SPHERE.faces)
    points, _ = dual_face_points(truth, geometry)
    args = dict(geometry=geometry, n_iterations=60, n_rigid_iterations=10, trim_fraction=0.0)
    full = ssm.fit_shape_model(model, points, tol_mm=0.0, **args)
    early = ssm.fit_shape_model(model, points, tol_mm=0.01, **args)
    assert np.abs(early.vertices - full.vertices).max() < 0.1
    assert abs(early.rms_mm - full.rms_mm) < 0.01
    # without trimming or subsampling the rms is over all points' exact distances to the fitted surface
    assert len(points) < 3000 and early.inlier_fraction == 1.0
    assert early.rms_mm == pytest.approx(
        np.sqrt(np.mean(trimesh.proximity.closest_point(early.mesh(), points)[1] ** 2)), abs=1e-9
    )


def test_fit_trust_region_keeps_pose_near_bad_points(cohort):
    """Points that no instance fits (a thin slab, as from a wrong mask): the fit stays on them.
    Without the step limit (max_step_deg/max_step_mm huge) these fits end metres away."""
    shapes, _ = cohort
    model = ssm.build_shape_model(np.stack(shapes), SPHERE.faces)
    geometry = Geometry(sid_mm=1100.0, pixel_spacing_mm=(4.0, 4.0), image_size=(64, 64))
    for seed in (0, 1, 3):
        points = np.array([10.0, 20.0, 950.0]) + np.random.default_rng(seed).uniform(-1, 1, (2000, 3)) * [
            15.0,
            100.0,
            5.0,
        ]
        fit = ssm.fit_shape_model(model, points, geometry=geometry)
        assert np.linalg.norm(fit.vertices.mean(0) - points.mean(0)) < 20.0 and fit.rms_mm < 10.0


def test_fit_matches_front_faces_to_the_model_front(cohort):
    """A 4 mm plate seen from the front only, started 3 mm toward the source: a front-face point's closest
    model vertex is on the plate's back face (1 mm away, the front 3 mm), so face-blind matching settles
    with the back face on the points (4 mm toward the source); matching each point to model vertices facing
    its way (``facing``) finds the true depth."""
    plate = trimesh.creation.box(extents=(80.0, 60.0, 4.0)).subdivide_to_size(2.0)
    model = ssm.ShapeModel(
        np.asarray(plate.vertices), np.asarray(plate.faces), np.zeros((0, len(plate.vertices), 3)), np.zeros(0)
    )
    geometry = Geometry(sid_mm=1100.0, pixel_spacing_mm=(4.0, 4.0), image_size=(64, 64))
    truth = np.eye(4)
    truth[2, 3] = 950.0
    points, mask = dual_face_points(trimesh.Trimesh(posed(model.mean, truth), model.faces), geometry)
    front = points[: len(points) // 2]
    assert mask.sum() > 200 and np.allclose(front[:, 2], 948.0, atol=1e-6)
    start = truth.copy()
    start[2, 3] -= 3.0
    depth = {}
    for name, facing in (("matched", np.ones(len(front))), ("blind", None)):
        fit = ssm.fit_shape_model(model, front, geometry=geometry, init_pose=start, facing=facing)
        depth[name] = fit.pose[2, 3]
    assert depth["matched"] == pytest.approx(950.0, abs=0.2)
    assert depth["blind"] == pytest.approx(946.0, abs=0.5)  # the failure the matching removes
    inward = ssm.ShapeModel(model.mean, model.faces[:, ::-1].copy(), model.modes, model.variances)  # faces wound inward
    assert ssm.fit_shape_model(inward, front, geometry=geometry, init_pose=start, facing=np.ones(len(front))).pose[
        2, 3
    ] == pytest.approx(depth["matched"], abs=1e-6)
    off = ssm.fit_shape_model(
        model, front, geometry=geometry, init_pose=start, facing=np.ones(len(front)), match_faces=False
    )
    assert off.pose[2, 3] == pytest.approx(depth["blind"], abs=1e-9)
    with pytest.raises(ValueError, match="one sign per point"):
        ssm.fit_shape_model(model, front, geometry=geometry, facing=np.ones(3))


def test_bone_points_facing_is_front_then_back():
    geometry = Geometry(sid_mm=1100.0, pixel_spacing_mm=(4.0, 4.0), image_size=(64, 64), bones=("pelvis", "femur_left"))
    mask = np.zeros((2, 64, 64), dtype=bool)
    mask[0, 20:30, 20:25] = True
    depth = np.zeros((4, 64, 64), dtype=np.float32)
    depth[0][mask[0]], depth[1][mask[0]] = 940.0, 960.0
    points, facing = bone_points(depth, mask, geometry)
    assert list(points) == ["pelvis"] and points["pelvis"].shape == (100, 3)
    assert np.array_equal(facing["pelvis"], np.repeat([1, -1], 50))
    assert np.allclose(np.linalg.norm(points["pelvis"][:50], axis=1), 940.0) and np.allclose(
        np.linalg.norm(points["pelvis"][50:], axis=1), 960.0
    )
    points, facing = bone_points(depth[::2], mask, geometry)  # one face per bone: front only
    assert points["pelvis"].shape == (50, 3) and np.array_equal(facing["pelvis"], np.ones(50))


def write_cases(root, meshes):
    for i, mesh in enumerate(meshes):
        (root / f"case_{i:03d}" / "meshes").mkdir(parents=True)
        mesh.export(root / f"case_{i:03d}" / "meshes" / "pelvis.ply")


def test_cli_build_and_bad_topology(tmp_path, cohort, capsys):
    shapes, _ = cohort
    write_cases(tmp_path / "cases", [trimesh.Trimesh(s, SPHERE.faces, process=False) for s in shapes[:6]])
    out = tmp_path / "models" / "ssm.npz"
    assert ssm.main(["build", "--cases", str(tmp_path / "cases"), "--out", str(out), "--bones", "pelvis"]) == 0
    models, meta = ssm.load_shape_models(out)
    assert meta["n_training"] == 6 and models["pelvis"].mean.shape == (642, 3)
    assert out.with_suffix(".png").exists()
    odd = trimesh.creation.icosphere(2, radius=40.0)
    odd.export(tmp_path / "cases" / "case_003" / "meshes" / "pelvis.ply")
    assert (
        ssm.main(["build", "--cases", str(tmp_path / "cases"), "--out", str(tmp_path / "x.npz"), "--bones", "pelvis"])
        == 1
    )
    assert "case_003" in capsys.readouterr().err and not (tmp_path / "x.npz").exists()
    # --datalist/--split keep the held-out (here: the odd) case out of the model
    datalist = tmp_path / "datalist.json"
    datalist.write_text(
        json.dumps({"training": [{"case": f"case_{i:03d}"} for i in (0, 1, 2, 4)], "test": [{"case": "case_003"}]})
    )
    out2 = tmp_path / "train_only.npz"
    assert (
        ssm.main(
            [
                "build",
                "--cases",
                str(tmp_path / "cases"),
                "--out",
                str(out2),
                "--bones",
                "pelvis",
                "--datalist",
                str(datalist),
            ]
        )
        == 0
    )
    assert ssm.load_shape_models(out2)[1]["cases"] == ["case_000", "case_001", "case_002", "case_004"]
    assert (
        ssm.main(
            [
                "build",
                "--cases",
                str(tmp_path / "cases"),
                "--out",
                str(tmp_path / "val.npz"),
                "--datalist",
                str(datalist),
                "--split",
                "validation",
            ]
        )
        == 1
    )
    assert "no 'validation' entries" in capsys.readouterr().err and not (tmp_path / "val.npz").exists()


def test_cli_build_refuses_what_it_cannot_write_right(tmp_path, cohort, capsys):
    """An existing output (a user's file) is left alone unless --overwrite; a bad --out, --variance or a --split
    without its --datalist stop before any work, and the model is written whole under a name without .npz too."""
    shapes, _ = cohort
    write_cases(tmp_path / "cases", [trimesh.Trimesh(s, SPHERE.faces, process=False) for s in shapes[:4]])
    build = ["build", "--cases", str(tmp_path / "cases"), "--bones", "pelvis", "--out"]
    mine = tmp_path / "mine.npz"
    mine.write_bytes(b"a user's file")
    assert ssm.main(build + [str(mine)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err and mine.read_bytes() == b"a user's file"
    (tmp_path / "plot.png").write_bytes(b"a user's picture")  # the variance plot's name beside --out
    assert (
        ssm.main(build + [str(tmp_path / "plot.npz")]) == 1
        and (tmp_path / "plot.png").read_bytes() == b"a user's picture"
    )
    assert ssm.main(build + [str(mine), "--overwrite"]) == 0
    assert ssm.load_shape_models(mine)[0]["pelvis"].mean.shape == (642, 3)
    for bad in (
        build + [str(tmp_path / "model")],
        build + [str(tmp_path / "m.png")],
        build + [str(tmp_path / "v.npz"), "--variance", "1.5"],
        build + [str(tmp_path / "s.npz"), "--split", "validation"],
    ):
        with pytest.raises(SystemExit) as e:
            ssm.main(bad)
        assert e.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cases",
        "mine.npz",
        "mine.png",
        "plot.png",
    ]  # nothing else written
    assert ssm.main(build + [str(ROOT / "models" / "new.npz")]) == 1
    assert "shipped models/ folder" in capsys.readouterr().err and not (ROOT / "models" / "new.npz").exists()
    # --out under a file: one line naming it before the build (the missing --cases would be the first error after)
    assert (
        ssm.main(["build", "--cases", str(tmp_path / "absent"), "--bones", "pelvis", "--out", str(mine / "s.npz")]) == 1
    )
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"{mine / 's.npz'}: cannot be written: its folder {mine} exists and is not a folder", line


def test_build_takes_case_folders_of_any_name_and_says_why_it_found_too_few(tmp_path, cohort, capsys):
    """Case folders are the subfolders holding meshes/, whatever their names (a user's patA/, not only case_*); too few
    gets one line saying what was looked for, where, and why each subfolder was left out (no meshes/, or not a case of
    --datalist's list, e.g. an own CT simulated as 'ct' while its folder is patA)."""
    shapes, _ = cohort
    cases = tmp_path / "own"
    for name, shape in zip(("patA", "patB", "patC"), shapes, strict=False):
        (cases / name / "meshes").mkdir(parents=True)
        trimesh.Trimesh(shape, SPHERE.faces, process=False).export(cases / name / "meshes" / "pelvis.ply")
    (cases / "seg").mkdir()  # the user's label folder, no meshes
    assert ssm.main(["build", "--cases", str(cases), "--out", str(tmp_path / "own.npz"), "--bones", "pelvis"]) == 0
    assert ssm.load_shape_models(tmp_path / "own.npz")[1]["cases"] == ["patA", "patB", "patC"]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"case": "ct"}], "test": [{"case": "patC"}]}))
    for split, found, left in (
        ("training", "found 0", "patA, patB, patC: not among the 'training' cases of --datalist {d} (ct)"),
        ("test", "found 1 (patC)", "patA, patB: not among the 'test' cases of --datalist {d} (patC)"),
    ):
        out = tmp_path / f"{split}.npz"
        assert (
            ssm.main(
                [
                    "build",
                    "--cases",
                    str(cases),
                    "--out",
                    str(out),
                    "--bones",
                    "pelvis",
                    "--datalist",
                    str(datalist),
                    "--split",
                    split,
                ]
            )
            == 1
        )
        assert error_lines(capsys.readouterr().err, cases) == [
            f"{cases}: need at least two case folders (subfolders of any name holding meshes/<bone>.ply), {found}; left out: "
            + left.format(d=datalist)
            + "; seg: no meshes/ folder (python -m scripts.ssm meshes writes one from the case's labels)"
        ]
        assert not out.exists()
    (tmp_path / "empty").mkdir()
    assert ssm.main(["build", "--cases", str(tmp_path / "empty"), "--out", str(tmp_path / "e.npz")]) == 1
    assert capsys.readouterr().err.strip().endswith("found 0; it has no subfolders")


def test_meshes_from_labels_land_on_the_labelled_bones_and_build_a_model(tmp_path, capsys):
    """``ssm meshes``: marching cubes of a label volume (spheres of known centre and radius, 1 mm voxels, shifted
    affine) in world mm, the same from a TotalSegmentator folder of per-structure masks; written as the case layout
    that ``build --register`` takes; a missing bone, or a meshes/ folder the command did not write, gets one line."""
    grid = np.indices((60, 50, 50)).transpose(1, 2, 3, 0).astype(np.float64)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [10.0, -5.0, 3.0]
    spheres = {
        "pelvis": ([30.0, 25.0, 32.0], 12.0),
        "femur_left": ([12.0, 25.0, 14.0], 8.0),
        "femur_right": ([48.0, 25.0, 14.0], 8.0),
    }
    labels = np.zeros(grid.shape[:3], np.uint8)
    masks = {}
    for i, (bone, (centre, radius)) in enumerate(spheres.items()):
        masks[bone] = np.linalg.norm(grid - centre, axis=-1) <= radius
        labels[masks[bone]] = i + 1
    write_nifti(tmp_path / "labels.nii.gz", labels, affine)
    seg = tmp_path / "seg"
    seg.mkdir()
    x = grid[..., 0]
    for name, mask in (
        ("hip_left", masks["pelvis"] & (x < 25)),
        ("sacrum", masks["pelvis"] & (x >= 25) & (x < 35)),
        ("hip_right", masks["pelvis"] & (x >= 35)),
        ("femur_left", masks["femur_left"]),
        ("femur_right", masks["femur_right"]),
    ):
        write_nifti(seg / f"{name}.nii.gz", mask.astype(np.uint8), affine)
    cases = tmp_path / "cases"
    assert ssm.main(["meshes", "--labels", str(tmp_path / "labels.nii.gz"), "--out", str(cases / "patA")]) == 0
    assert ssm.main(["meshes", "--labels", str(seg), "--out", str(cases / "patB")]) == 0
    for bone, (centre, radius) in spheres.items():
        a, b = (ssm.read_mesh(cases / case / "meshes" / f"{bone}.ply") for case in ("patA", "patB"))
        assert np.allclose(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)
        r = np.linalg.norm(a.vertices - (np.array(centre) + affine[:3, 3]), axis=1)
        assert abs(r.mean() - radius) < 0.7 and a.is_watertight and a.volume > 0
    assert (
        ssm.main(["meshes", "--labels", str(tmp_path / "labels.nii.gz"), "--out", str(cases / "patA")]) == 0
    )  # its own: replaced
    holed = labels.copy()  # marrow voxels left out of the pelvis mask (a cavity) and stray pelvis voxels (specks)
    holed[30, 25, 32] = holed[30, 26, 32] = holed[28, 25, 30] = 0
    holed[2, 2, 2] = holed[57, 47, 47] = holed[58, 47, 47] = 1
    write_nifti(tmp_path / "holed.nii.gz", holed, affine)
    assert ssm.main(["meshes", "--labels", str(tmp_path / "holed.nii.gz"), "--out", str(tmp_path / "holed")]) == 0
    for bone in spheres:  # the outer surface alone: the clean labels' mesh, one closed piece
        a, b = (ssm.read_mesh(folder / "meshes" / f"{bone}.ply") for folder in (cases / "patA", tmp_path / "holed"))
        assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)
        assert len(b.split(only_watertight=False)) == 1
    capsys.readouterr()
    write_nifti(tmp_path / "no_right.nii.gz", np.where(labels == 3, 0, labels).astype(np.uint8), affine)
    assert ssm.main(["meshes", "--labels", str(tmp_path / "no_right.nii.gz"), "--out", str(tmp_path / "x")]) == 1
    assert error_lines(capsys.readouterr().err, "no_right") == [
        f"{tmp_path / 'no_right.nii.gz'}: no voxels of femur_right (is --label-map right for these labels?)"
    ]
    assert not (tmp_path / "x").exists()
    (tmp_path / "mine" / "meshes").mkdir(parents=True)
    (tmp_path / "mine" / "meshes" / "pelvis.ply").write_text("a user's mesh")
    assert ssm.main(["meshes", "--labels", str(seg), "--out", str(tmp_path / "mine")]) == 1
    assert (
        tmp_path / "mine" / "meshes" / "pelvis.ply"
    ).read_text() == "a user's mesh" and "not written by this bundle" in capsys.readouterr().err
    template = tmp_path / "template"
    template.mkdir()
    trimesh.creation.icosphere(2, radius=10.0).export(template / "pelvis.ply")
    build = ["build", "--cases", str(cases), "--bones", "pelvis", "--register", "--template", str(template), "--out"]
    assert ssm.main(build + [str(tmp_path / "same.npz")]) == 1  # one labelling meshed twice: it would count twice
    same = (
        f"{cases / 'patB' / 'meshes' / 'pelvis.ply'}: the same surface as patA's (one CT meshed twice, or a copied case "
        "folder): a shape model counts each subject once; leave one of them out"
    )
    assert error_lines(capsys.readouterr().err, cases) == [same]
    shutil.rmtree(cases / "patB")  # the labels stored in another voxel order (LPS, as its DICOM series reads): the
    flipped = affine @ np.array([[-1, 0, 0, 59], [0, -1, 0, 49], [0, 0, 1, 0], [0, 0, 0, 1]])  # same surface
    write_nifti(tmp_path / "lps.nii.gz", labels[::-1, ::-1].copy(), flipped)
    assert ssm.main(["meshes", "--labels", str(tmp_path / "lps.nii.gz"), "--out", str(cases / "patB")]) == 0
    lps = ssm.read_mesh(cases / "patB" / "meshes" / "pelvis.ply")
    assert not np.array_equal(lps.vertices, ssm.read_mesh(cases / "patA" / "meshes" / "pelvis.ply").vertices)
    capsys.readouterr()
    assert ssm.main(build + [str(tmp_path / "same.npz")]) == 1
    assert error_lines(capsys.readouterr().err, cases) == [same]
    assert not (tmp_path / "same.npz").exists()
    shutil.rmtree(cases / "patB")
    sphere = ssm.read_mesh(cases / "patA" / "meshes" / "pelvis.ply")
    with pytest.raises(ValueError, match="the 2 shapes are the same after alignment: nothing varies to model"):
        ssm.build_shape_model(np.stack([sphere.vertices, sphere.vertices]), sphere.faces)  # no mode to write
    write_nifti(
        tmp_path / "small.nii.gz",
        np.where(labels == 1, np.linalg.norm(grid - spheres["pelvis"][0], axis=-1) <= 10.0, labels).astype(np.uint8),
        affine,
    )
    assert ssm.main(["meshes", "--labels", str(tmp_path / "small.nii.gz"), "--out", str(cases / "patC")]) == 0
    assert ssm.main(build + [str(tmp_path / "ssm.npz")]) == 0
    mean = ssm.ShapeModel.load(tmp_path / "ssm.npz", "pelvis").mean
    r = np.linalg.norm(mean - mean.mean(0), axis=1)
    assert (
        mean.shape == (162, 3) and abs(r.mean() - 11.0) < 0.7
    )  # the template registered onto the spheres: mean radius of 12 and 10


@pytest.mark.parametrize("command", [["meshes", "--labels", "labels.nii.gz"], ["build", "--cases", "cases"]])
def test_an_unknown_bone_is_a_usage_error(tmp_path, capsys, command):
    """``--bones`` takes only the bundle's bones: a typo is argparse's one-line usage error (exit 2) naming it,
    before any file is read or written."""
    with pytest.raises(SystemExit) as e:
        ssm.main(command + ["--bones", "pelvis", "femur_lft", "--out", str(tmp_path / "out.npz")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("--bones: invalid choice: 'femur_lft'") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


REAL_CT = (shared_data_dir() or ROOT / "absent") / "real_ct"


@pytest.mark.skipif(
    not (REAL_CT / "example_seg").is_dir(), reason="shared real CT (../shared/data/real_ct) not present"
)
def test_meshes_of_the_real_ct_from_its_folder_and_its_multilabel_file_agree(tmp_path):
    """The shared CT's TotalSegmentator folder and its multi-label file (v1 ids, --label-map totalsegmentator) give the
    same three surfaces, each closed and one piece (its pelvis masks hold stray voxels and marrow cavities: 19 pieces
    before they were left out and filled)."""
    assert ssm.main(["meshes", "--labels", str(REAL_CT / "example_seg"), "--out", str(tmp_path / "folder")]) == 0
    assert (
        ssm.main(
            [
                "meshes",
                "--labels",
                str(REAL_CT / "example_seg_multilabel.nii.gz"),
                "--label-map",
                "totalsegmentator",
                "--out",
                str(tmp_path / "file"),
            ]
        )
        == 0
    )
    for bone in ("pelvis", "femur_left", "femur_right"):
        a, b = (ssm.read_mesh(tmp_path / case / "meshes" / f"{bone}.ply") for case in ("folder", "file"))
        assert np.allclose(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces) and a.is_watertight
        assert len(a.vertices) > 1000 and len(a.split(only_watertight=False)) == 1


def test_register_brings_meshes_into_correspondence(tmp_path):
    rng = np.random.default_rng(5)
    template = trimesh.creation.icosphere(2, radius=30.0)
    targets = []
    for _ in range(3):
        t = trimesh.creation.icosphere(3)  # different topology from the template
        t.vertices *= np.array([45.0, 30.0, 22.0]) * (1 + 0.1 * rng.standard_normal(3))
        t.apply_transform(rigid(rng, 5, 5))
        targets.append(t)
    registered = ssm.register_to_template(template, targets[0])
    assert registered.shape == template.vertices.shape
    assert trimesh.proximity.closest_point(targets[0], registered)[1].mean() < 1.0
    write_cases(tmp_path / "cases", targets)
    (tmp_path / "tmpl").mkdir()
    template.export(tmp_path / "tmpl" / "pelvis.ply")
    out = tmp_path / "ssm.npz"
    args = [
        "build",
        "--cases",
        str(tmp_path / "cases"),
        "--out",
        str(out),
        "--bones",
        "pelvis",
        "--register",
        "--template",
        str(tmp_path / "tmpl"),
    ]
    assert ssm.main(args) == 0
    model = ssm.ShapeModel.load(out, "pelvis")
    assert model.mean.shape == template.vertices.shape and model.n_modes >= 1


def voxel_surface(mask):
    """Marching-cubes surface of a boolean voxel mask (1 mm voxels), as ``ssm meshes`` makes one."""
    verts, faces, _, _ = marching_cubes(np.pad(mask, 1).astype(np.float32), 0.5)
    return trimesh.Trimesh(verts, faces[:, ::-1], process=False)


def test_register_template_from_a_shape_model_file_or_refused_in_one_line(tmp_path, capsys):
    """``build --register --template F.npz`` registers the mean of F's bone (e.g. the shipped models/ssm.npz, for a
    team without phantoms): the same model as that mesh given as a folder's <bone>.ply. A template whose
    non-rigid ICP cannot be solved (here a voxel surface with enclosed cavities: scipy's 'Factor is exactly singular',
    a traceback after minutes with the real CT's pelvis as the first case) is one line naming the case's mesh and
    the template, nothing written."""
    grid = np.indices((20, 20, 20)).transpose(1, 2, 3, 0) - 10.0
    targets = [voxel_surface(np.linalg.norm(grid * s, axis=-1) <= 7) for s in ([1.1, 1, 0.9], [0.9, 1, 1.1])]
    write_cases(tmp_path / "cases", targets)
    template = voxel_surface(np.linalg.norm(grid, axis=-1) <= 6)
    (tmp_path / "tmpl").mkdir()
    template.export(tmp_path / "tmpl" / "pelvis.ply")
    one = np.zeros((1, *template.vertices.shape))
    ssm.save_shape_models(
        tmp_path / "tmpl.npz", {"pelvis": ssm.ShapeModel(template.vertices, template.faces, one, [1.0])}
    )
    build = ["build", "--bones", "pelvis", "--register", "--cases"]
    assert (
        ssm.main(
            build + [str(tmp_path / "cases"), "--template", str(tmp_path / "tmpl"), "--out", str(tmp_path / "ply.npz")]
        )
        == 0
    )
    assert (
        ssm.main(
            build
            + [str(tmp_path / "cases"), "--template", str(tmp_path / "tmpl.npz"), "--out", str(tmp_path / "npz.npz")]
        )
        == 0
    )
    a, b = (ssm.ShapeModel.load(tmp_path / f"{name}.npz", "pelvis") for name in ("ply", "npz"))
    assert a.mean.shape == template.vertices.shape and np.allclose(a.mean, b.mean) and np.allclose(a.modes, b.modes)
    grid = np.indices((40, 40, 40)).transpose(1, 2, 3, 0) - 20.0
    holed = np.linalg.norm(grid, axis=-1) <= 12
    holed[20, 20, 20] = holed[24, 20, 20] = False
    voxel_surface(holed).export(tmp_path / "tmpl" / "pelvis.ply")
    write_cases(tmp_path / "big", [voxel_surface(np.linalg.norm(grid * [1.1, 1, 0.9], axis=-1) <= 13), targets[0]])
    capsys.readouterr()
    assert (
        ssm.main(
            build + [str(tmp_path / "big"), "--template", str(tmp_path / "tmpl"), "--out", str(tmp_path / "holed.npz")]
        )
        == 1
    )
    mesh = tmp_path / "big" / "case_000" / "meshes" / "pelvis.ply"
    assert error_lines(capsys.readouterr().err, tmp_path) == [
        f"{mesh}: registering {tmp_path / 'tmpl' / 'pelvis.ply'} onto it failed (Factor is exactly singular): take a "
        "template of one clean surface per bone (--template models/ssm.npz)"
    ]
    assert not (tmp_path / "holed.npz").exists()


def test_bone_field_cuts_the_cone_at_the_mask_inferior_and_lateral_edges():
    """Hand-computed boxes: a mask spanning rows 10-30 and columns 40-50, margin 8 mm = 2 px of 4 mm."""
    geometry = Geometry(sid_mm=1100.0, pixel_spacing_mm=(4.0, 4.0), image_size=(64, 64))
    mask = np.zeros((64, 64), bool)
    mask[10:31, 40:51] = True
    expected = {"femur_left": (0, 52), "femur_right": (38, 63), "pelvis": (38, 52)}  # +u is patient left
    for bone, (u0, u1) in expected.items():
        field = bone_field(geometry, mask, bone, margin_mm=8.0)
        for u in range(64):
            for v in (0, 32, 33):
                ray = np.array([(u - 31.5) * 4.0, (v - 31.5) * 4.0, 1100.0])  # pixel centre on the detector
                assert field.in_field_of_view(ray * 0.9) == (u0 <= u <= u1 and v <= 32), (bone, u, v)
    assert bone_field(geometry, np.zeros((64, 64), bool), "pelvis", 8.0) == geometry  # nothing seen: the whole cone


def test_fit_of_a_femur_cut_short_by_the_field_recovers_it():
    """Shipped femur models, posed as on an AP radiograph and cut 20-50 rows below the head top (collimation
    or a CT's end): fitted in the cut-aware field (complete_surfaces with masks) the completion lies on the
    true surface; the whole-cone fit starts the mean femur's centroid on the seen part and can settle 20-40 mm off here.
    """
    models, _ = ssm.load_shape_models(ROOT / "models" / "ssm.npz")
    geometry = Geometry.standard().resized((128, 128))
    rng = np.random.default_rng(0)
    errors = {"cone": [], "cut": []}
    for trial in range(6):
        bone = ("femur_left", "femur_right")[trial % 2]
        model = models[bone]
        pose = np.eye(4)
        pose[:3, :3] = rotation_matrix(rng.uniform(-10, 10, 3)) @ STANDARD_AP_ROTATION
        v = model.shape(rng.normal(0, 1, model.n_modes)) @ pose[:3, :3].T
        pose[:3, 3] = np.array([95.0 if bone == "femur_left" else -95.0, rng.uniform(-80, -40), 950.0]) - [
            v[:, 0].mean(),
            v[:, 1].min(),
            0,
        ]
        truth = trimesh.Trimesh(v + pose[:3, 3], model.faces)
        points, mask = dual_face_points(truth, geometry)
        cut = int(np.flatnonzero(mask.any(1))[0] + rng.integers(20, 50))
        seen = np.rint(geometry.project(points)[0][:, 1]) <= cut
        mask[cut + 1 :] = False
        field = geometry.cropped((0, 127, 0, cut))
        for name, margin in (("cone", None), ("cut", 10.0)):
            fit = complete_surfaces(
                {bone: points[seen]}, {bone: model}, geometry, {bone: mask}, field_margin_mm=margin
            )[bone]
            errors[name].append(surface_metrics(fit.mesh(), truth, field, spacing_mm=2.0)["assd_mm"])
    assert max(errors["cut"]) < 1.0, errors
    assert max(errors["cone"]) > 10.0, errors  # the failure the cut-aware field exists for


def test_similarity_scale_measures_a_pelvis_drawn_too_small_or_large():
    """A shipped-model pelvis shape, posed as on an AP radiograph and scaled about its centroid by a known factor (a
    wrong pixel spacing does that to every bone): complete_surfaces' similarity fit finds the factor from the true
    dual faces, and the completion stays the rigid fit's."""
    models, _ = ssm.load_shape_models(ROOT / "models" / "ssm.npz")
    model = models["pelvis"]
    geometry = Geometry.standard().resized((128, 128))
    v = model.shape(np.random.default_rng(0).normal(0, 0.5, model.n_modes)) @ STANDARD_AP_ROTATION.T
    scales = {}
    for factor in (0.8, 1.0, 1.2):
        truth = trimesh.Trimesh((v - v.mean(0)) * factor + [0.0, -20.0, 950.0], model.faces)
        points, mask = dual_face_points(truth, geometry)
        args = ({"pelvis": points}, {"pelvis": model}, geometry, {"pelvis": mask})
        fit = complete_surfaces(*args, scale_bones=["pelvis"])["pelvis"]
        scales[factor] = fit.similarity_scale
        plain = complete_surfaces(*args)["pelvis"]
        assert plain.similarity_scale is None and np.array_equal(fit.vertices, plain.vertices)
    assert all(abs(scale - factor) < 0.02 for factor, scale in scales.items()), scales


def test_variance_plot_tells_equal_curves_apart(monkeypatch, tmp_path):
    """ssm.png: two femurs with the same variances (mirror images) drew one curve over the other; each bone now has
    its report colour and its own marker and line, and its curve reaches 100% at its last mode."""
    from scripts.io import report

    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path, dpi=110: figures.append(fig))
    variances = np.array([4.0, 1.0])
    models = {
        bone: ssm.ShapeModel(np.zeros((3, 3)), np.array([[0, 1, 2]]), np.zeros((2, 3, 3)), variances)
        for bone in ("pelvis", "femur_left", "femur_right")
    }
    ssm._plot_variance(tmp_path / "ssm.png", models)
    (ax,) = figures[0].axes
    styles = {(line.get_marker(), line.get_linestyle(), line.get_fillstyle()) for line in ax.lines}
    assert len(styles) == 3
    assert [line.get_color() for line in ax.lines] == [report.bone_colour(b) for b in models]
    for line in ax.lines:
        np.testing.assert_allclose(line.get_ydata(), [80.0, 100.0])
