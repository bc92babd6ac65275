"""Tests of the real-anatomy (LLP26) cohort: split, seating, mirror, articulation, labels and the whole path."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import trimesh
from scripts.data import llp26
from scripts.data import real_anatomy as ra
from scripts.data.phantom import generate_case, main, voxelize
from scripts.data.volumes import BONE_LABELS, VERTEBRAE_LABEL
from scripts.geometry import BONES, Geometry, standard_ap_pose
from scripts.shape_maths import fit_sphere, kabsch

SPACING = 4.0
NEUTRAL = {
    s: {"flexion_deg": 0.0, "abduction_deg": 0.0, "internal_rotation_deg": 0.0} for s in ("femur_left", "femur_right")
}


@pytest.fixture(scope="module")
def synthetic():
    return generate_case(3, SPACING, "llp26")


@pytest.fixture(scope="module")
def real_test_subject():
    return generate_case(5, SPACING, "llp26", subject=22)


def test_split_is_fixed_and_disjoint():
    splits = ra.SUBJECT_SPLITS
    assert (
        splits["test"] == (20, 21, 22, 23, 24, 25)
        and splits["validation"] == (17, 18, 19)
        and splits["training"] == tuple(range(17))
    )
    assert sorted(sum(splits.values(), ())) == list(range(llp26.N_SUBJECTS))


def test_test_subjects_never_reach_a_training_case(monkeypatch):
    """Poison the validation and test columns of the model: the training PCA and a drawn case stay finite,
    a training subject lies in the PCA's span and a test subject does not."""
    clean = ra.training_pca()
    model = llp26.load_model()
    poisoned = dataclasses.replace(model, projected=model.projected.copy())
    poisoned.projected[:, 17:] = np.nan
    monkeypatch.setattr(llp26, "load_model", lambda path=None: poisoned)
    for cached in (ra.training_pca, ra.landmarks):
        cached.cache_clear()
    try:
        pca = ra.training_pca()
        assert pca.subjects == tuple(range(17)) and np.isfinite(pca.modes).all()
        np.testing.assert_allclose(pca.mean, clean.mean, atol=1e-6)
        case = generate_case(11, 8.0, "llp26")
        assert all(np.isfinite(m.vertices).all() for m in case.meshes.values())
        assert case.params["pca_subjects"] == list(range(17))
    finally:
        for cached in (ra.training_pca, ra.landmarks):
            cached.cache_clear()
    monkeypatch.undo()

    def residual(j: int) -> float:
        pelvis, femur = ra.subject_nodes(j)
        x = np.concatenate([pelvis, femur])
        # rigid alignment of each part onto the PCA mean, then the part outside the modes' span
        parts = []
        for sl in (slice(0, 1946), slice(1946, None)):
            a, m = x[sl], clean.mean[sl]
            r = kabsch(a, m)
            parts.append((a - a.mean(0)) @ r.T + m.mean(0))
        d = (np.concatenate(parts) - clean.mean).ravel()
        modes = clean.modes.reshape(len(clean.sd), -1)
        return float(np.sqrt(np.mean((d - modes.T @ (modes @ d)) ** 2)))

    assert residual(4) < 0.2  # training subject: in the span
    assert all(residual(j) > 1.0 for j in ra.TEST_SUBJECTS)  # test subjects: not


def test_heads_seated_in_their_acetabula_with_a_joint_space(synthetic, real_test_subject):
    lm = ra.landmarks()
    for case in (synthetic, real_test_subject):
        pelvis = case.meshes["pelvis"]
        hemi = trimesh.Trimesh(
            pelvis.vertices, pelvis.faces[np.all(np.isin(pelvis.faces, lm.hemipelves), 1)], process=False
        )
        for side in ("left", "right"):
            femur = case.meshes[f"femur_{side}"]
            head, head_r = fit_sphere(femur.vertices[lm.head])
            socket, socket_r = fit_sphere(pelvis.vertices[getattr(lm, f"acetabulum_{side}")])
            assert np.linalg.norm(head - socket) < 1.0
            assert socket_r - head_r >= ra.MIN_JOINT_SPACE_MM - 0.5
            assert 17.0 < head_r < 28.0  # an adult femoral head
            _, dist, _ = trimesh.proximity.closest_point(hemi, femur.vertices)
            assert dist.min() > 0.5  # the bones never touch ...
            near = femur.vertices[dist < 10.0]
            assert (
                len(near) > 10 and (ra.winding_number(hemi, near) < 0.5).all()
            )  # ... and no femur vertex is inside the pelvis
        assert (case.meshes["femur_left"].vertices[:, 0] < 0).all() and (
            case.meshes["femur_right"].vertices[:, 0] > 0
        ).all()


def test_labels_of_different_bones_never_overlap(synthetic, real_test_subject):
    for case in (synthetic, real_test_subject):
        assert set(np.unique(case.labels)) == {0, 1, 2, 3, VERTEBRAE_LABEL}
        for side in ("femur_left", "femur_right"):
            centre = np.asarray(case.params[side]["head_centre_mm"])
            origin, shape = centre - 60.0, (121, 121, 121)
            femur = voxelize(case.meshes[side], origin, 1.0, shape)
            pelvis = np.zeros(shape, bool)
            for part in case.meshes["pelvis"].split(only_watertight=False):
                pelvis |= voxelize(part, origin, 1.0, shape)
            assert femur.sum() > 1000 and pelvis.sum() > 1000
            assert not (femur & pelvis).any()


def test_right_femur_is_the_mirror_image_of_the_left(synthetic):
    left, right = synthetic.meshes["femur_left"], synthetic.meshes["femur_right"]
    np.testing.assert_array_equal(left.faces, right.faces[:, ::-1])
    assert left.volume > 0 and right.volume > 0 and left.volume == pytest.approx(right.volume, rel=1e-6)

    def rms_after_rotation(a: np.ndarray, b: np.ndarray) -> float:
        r = kabsch(a, b)
        return float(np.sqrt(np.mean(np.sum(((a - a.mean(0)) @ r.T - (b - b.mean(0))) ** 2, axis=1))))

    assert rms_after_rotation(right.vertices * (-1.0, 1.0, 1.0), left.vertices) < 1e-6  # a reflection superimposes them
    assert rms_after_rotation(right.vertices, left.vertices) > 10.0  # no rotation does: opposite chirality


def test_articulation_turns_each_femur_about_its_head_centre():
    pelvis, femur = ra.subject_nodes(20)
    lm = ra.landmarks()
    base = ra.assemble(pelvis, femur, NEUTRAL)
    turned = ra.assemble(pelvis, femur, {s: dict(NEUTRAL[s], internal_rotation_deg=18.0) for s in NEUTRAL})
    flexed = ra.assemble(pelvis, femur, {s: dict(NEUTRAL[s], flexion_deg=10.0) for s in NEUTRAL})
    for side, lateral in (("femur_left", -1.0), ("femur_right", 1.0)):
        v0, v1, v2 = (s.meshes[side].vertices for s in (base, turned, flexed))
        centre = np.asarray(base.params[side]["head_centre_mm"])
        knee0 = v0[lm.knee].mean(0)
        assert abs(knee0[0] - centre[0]) < 60.0 and knee0[2] < centre[2] - 350.0  # neutral: knee below the hip
        axis0 = v0[lm.epicondyle_lateral].mean(0) - v0[lm.epicondyle_medial].mean(0)
        axis1 = v1[lm.epicondyle_lateral].mean(0) - v1[lm.epicondyle_medial].mean(0)
        assert axis0[0] * lateral > 0.9 * np.linalg.norm(axis0)  # neutral: epicondyles along x, lateral outward
        angle = np.degrees(np.arctan2(axis0[0] * axis1[1] - axis0[1] * axis1[0], axis0[:2] @ axis1[:2]))
        assert abs(abs(angle) - 18.0) < 0.5
        assert (
            v1[lm.epicondyle_lateral].mean(0)[1] > v0[lm.epicondyle_lateral].mean(0)[1] + 5.0
        )  # internal: the lateral side comes forward
        assert v2[lm.knee].mean(0)[1] > knee0[1] + 50.0  # flexion: the knee moves anteriorly
        head0, _ = fit_sphere(v0[lm.head])
        head2, _ = fit_sphere(v2[lm.head])
        np.testing.assert_allclose(head0, head2, atol=0.01)


def test_sampled_poses_cover_a_standard_ap_view_and_unequal_sides():
    poses = [ra.sample_pose(np.random.default_rng(s)) for s in range(200)]
    rot = np.array([[p[s]["internal_rotation_deg"] for s in ("femur_left", "femur_right")] for p in poses])
    standard = np.array([p["standard_ap_hip_view"] for p in poses])
    assert 0.45 < standard.mean() < 0.75
    assert 12.0 < np.median(rot[standard]) < 22.0 and rot[~standard].min() < -5.0
    assert np.abs(rot[:, 0] - rot[:, 1]).mean() > 2.0


def test_case_anatomy_body_and_ap_view(synthetic):
    case = synthetic
    ct = case.ct
    assert ct.dtype == np.int16 and case.labels.dtype == np.uint8
    vert = case.labels == VERTEBRAE_LABEL
    pel = case.labels == BONE_LABELS["pelvis"]
    z = np.arange(ct.shape[2]) * SPACING + case.affine[2, 3]
    assert (
        z[np.nonzero(vert.any((0, 1)))[0]].min() > z[np.nonzero(pel.any((0, 1)))[0]].min() + 80.0
    )  # spine above the sacrum
    assert ct[vert].min() > 100 and ct[pel].min() > 100  # bone HU (cortex and trabecular)
    bladder = case.params["tissue"]["bladder"]
    c = np.rint((np.asarray(bladder["centre_mm"]) - case.affine[:3, 3]) / SPACING).astype(int)
    assert abs(int(ct[tuple(c)]) - bladder["hu"]) <= 1 and case.labels[tuple(c)] == 0
    lowest_hip = min(case.params[s]["head_centre_mm"][2] for s in ("femur_left", "femur_right"))
    assert case.affine[2, 3] >= lowest_hip - ra.FEMUR_CROP_MM - SPACING  # cropped below the hips
    assert case.meshes["femur_left"].vertices[:, 2].min() < case.affine[2, 3]  # the mesh stays the whole femur
    centre = case.meshes["pelvis"].centroid
    geom = Geometry.standard().with_pose(standard_ap_pose(centre, 950.0))
    u = {
        b: geom.project(geom.world_to_camera_points(case.meshes[b].vertices))[0][:, 0]
        for b in ("femur_left", "femur_right")
    }
    assert np.median(u["femur_left"]) > np.median(u["femur_right"])  # image columns toward the patient's left
    assert 220.0 < case.params["inter_iliac_width_mm"] < 340.0


def test_cli_cohort_and_real_subjects_feed_simulator_shape_model_training_and_evaluation(tmp_path):
    """The whole anatomy path on a tiny cohort: phantom CLI (training draws, real validation and test
    subjects) -> simulator -> shape model from the training cases -> training -> evaluation on the real
    test subjects; every case and the shape model carry LLP26's MPL-2.0 notice."""
    from scripts.data.llp26 import NOTICE
    from scripts.data.simulate import find_cases, load_config, simulate
    from scripts.reconstruction.ssm import build_from_cases, cohort_provenance, save_shape_models
    from tests.helpers import run_evaluation, train_workflow

    cohort, real, test = tmp_path / "cohort", tmp_path / "validation", tmp_path / "test"
    assert main(["--anatomy", "llp26", "--n", "2", "--out", str(cohort), "--seed", "4", "--spacing", "8"]) == 0
    assert main(["--subjects", "validation", "--out", str(real), "--seed", "4", "--spacing", "8"]) == 0
    assert main(["--subjects", "test", "--out", str(test), "--seed", "4", "--spacing", "8"]) == 0
    assert sorted(p.name for p in real.iterdir()) == ["subject_17_00", "subject_18_00", "subject_19_00"]
    assert sorted(p.name for p in test.iterdir()) == [f"subject_{j}_00" for j in ra.TEST_SUBJECTS]
    first = {}
    for d in [*sorted(cohort.iterdir()), *sorted(real.iterdir()), *sorted(test.iterdir())]:
        assert "Mozilla Public License 2.0" in (d / "NOTICE.txt").read_text()
        params = json.loads((d / "params.json").read_text())
        assert params["anatomy"] == "llp26" and nib.aff2axcodes(nib.load(d / "ct.nii.gz").affine) == ("R", "A", "S")
        assert params.get("llp26_subject") == (int(d.name.split("_")[1]) if d.name.startswith("subject") else None)
        for bone in BONES:
            mesh = trimesh.load(d / "meshes" / f"{bone}.ply", process=False)
            assert mesh.is_watertight
            ref = first.setdefault(bone, mesh)
            np.testing.assert_array_equal(mesh.faces, ref.faces)  # vertex correspondence across subjects
    cfg = load_config()
    cfg["depth"]["step_voxels"] = 1.0
    datalist, errors = simulate(find_cases(real), tmp_path / "sim", poses=1, seed=0, cfg=cfg, split="test")
    assert not errors and len(datalist["test"]) == 3
    mask = nib.load(tmp_path / "sim" / "subject_17_00_p0" / "mask.nii.gz").get_fdata()
    assert mask.shape[-1] == 3 and (mask.reshape(-1, 3).sum(0) > 0).all()  # three bones, no vertebra channel
    models, meta = build_from_cases(cohort, variance=1.0)
    assert meta["cases"] == ["case_0000", "case_0001"] and models["femur_left"].n_modes == 1
    assert (
        meta["anatomy"] == ["llp26"]
        and meta["llp26_subjects"] == list(ra.TRAINING_SUBJECTS)
        and meta["notice"] == NOTICE
    )
    assert cohort_provenance(sorted(real.iterdir()))["llp26_subjects"] == [17, 18, 19]  # a leak would show
    # training and evaluation take the cohort unchanged: draws to train on, a real subject to validate, real test subjects
    save_shape_models(tmp_path / "ssm.npz", models, meta)
    data = tmp_path / "sim_all"
    for cases, split in (
        (find_cases(cohort), "training"),
        (find_cases(real)[:1], "validation"),
        (find_cases(test)[:2], "test"),
    ):
        assert not simulate(cases, data, poses=1, seed=0, cfg=cfg, split=split)[1]
    wf = train_workflow(data, tmp_path / "run", epochs=1)
    wf.run()
    wf.finalize()
    m = run_evaluation(
        data,
        tmp_path / "eval",
        ckpt_path=str(tmp_path / "run" / "models" / "model.pt"),
        single_face_ckpt_path=str(tmp_path / "absent.pt"),
    )
    assert m["n_samples"] == 2 and {r["sample"] for r in m["per_sample"]} == {
        f"subject_{j}_00_p0" for j in ra.TEST_SUBJECTS[:2]
    }
    oracle = run_evaluation(
        data, tmp_path / "oracle", oracle_inputs=True
    )  # the true maps: the truth surfaces agree with them
    assert all(
        r["assd_mm"] < 5.0
        for r in oracle["means"]
        if r["variant"] == "dual_face" and r["shift"] == "oracle" and r["bone"] != "all"
    )


def test_shipped_shape_models_never_saw_a_validation_or_test_subject():
    """models/ssm.npz: its cases' LLP26 subjects (metadata) are training subjects only; once it is built
    from real anatomy, also geometrically: training subjects lie (nearly) in its span, test subjects do not."""
    from scripts.reconstruction.ssm import load_shape_models

    models, meta = load_shape_models(Path(__file__).resolve().parent.parent / "models" / "ssm.npz")
    assert set(meta.get("llp26_subjects", [])) <= set(ra.TRAINING_SUBJECTS)
    if meta.get("anatomy") != ["llp26"]:
        pytest.skip("the shipped shape models are not built from LLP26 cases (release 0.5.0: procedural)")

    def residual(bone: str, j: int) -> float:
        pelvis, femur = ra.subject_nodes(j)
        verts = ra.surface("pelvis", pelvis).vertices if bone == "pelvis" else ra.surface("femur", femur).vertices
        model = models[bone]
        aligned = (verts - verts.mean(0)) @ kabsch(verts, model.mean).T + model.mean.mean(0)
        d = (aligned - model.mean).ravel()
        modes = model.modes.reshape(model.n_modes, -1)
        return float(np.sqrt(np.mean((d - modes.T @ (modes @ d)) ** 2)))

    for bone in ("pelvis", "femur_left"):
        training = np.mean([residual(bone, j) for j in (0, 5, 10, 15)])
        test = np.mean([residual(bone, j) for j in ra.TEST_SUBJECTS])
        assert test > 1.7 * training, (bone, training, test)


def _rigid_rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
    """Angle (deg) and unit axis of the rotation best mapping points a onto b (Kabsch, independent of the code under test)."""
    u, _, vt = np.linalg.svd((a - a.mean(0)).T @ (b - b.mean(0)))
    r = vt.T @ np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))]) @ u.T
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)))), axis / np.linalg.norm(axis)


def test_femur_variation_is_the_named_change():
    """Version turns the proximal femur about the mechanical axis and leaves the knee; bow moves the mid-shaft
    anteriorly; a valgus neck-shaft change turns the head about an AP axis, up and toward the shaft."""
    pca = ra.training_pca()
    _, nodes = pca.sample(np.zeros(len(pca.sd)))
    centre, _, rot = ra.femur_neutral_frame(ra.surface("femur", nodes).vertices)
    local = lambda n: (n - centre) @ rot.T  # noqa: E731
    base = local(nodes)
    np.testing.assert_allclose(ra.vary_femur(nodes), nodes, atol=1e-9)
    knee_z = base[:, 2].min()
    top, distal = base[:, 2] > -ra.VARIATION_TOP_MM, base[:, 2] < knee_z + 40.0
    a = np.radians(10.0)
    turned = base @ np.array(
        [[np.cos(a), np.sin(a), 0.0], [-np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]]
    )  # +10 deg about +z
    version = local(ra.vary_femur(nodes, version_deg=10.0))
    np.testing.assert_allclose(version[top], turned[top], atol=1e-6)
    np.testing.assert_allclose(version[distal], base[distal], atol=1e-6)
    assert (
        version[top & (base[:, 0] < -20.0), 1] < base[top & (base[:, 0] < -20.0), 1]
    ).all()  # the lateral proximal femur goes back
    bow = local(ra.vary_femur(nodes, bow_mm=5.0)) - base
    np.testing.assert_allclose(bow[:, [0, 2]], 0.0, atol=1e-9)
    assert bow[:, 1].max() == pytest.approx(5.0, abs=0.2) and (bow[:, 1] >= -1e-9).all()
    assert np.abs(bow[top | distal, 1]).max() < 1e-9
    valgus_nodes = ra.vary_femur(nodes, neck_shaft_deg=6.0)
    valgus = local(valgus_nodes)
    surf = lambda n: (ra.surface("femur", n).vertices - centre) @ rot.T  # noqa: E731
    head = ra.landmarks().head[surf(nodes)[ra.landmarks().head, 0] > 0.0]  # the head's medial half, away from the neck
    before, after = surf(nodes)[head], surf(valgus_nodes)[head]
    angle, axis = _rigid_rotation_angle_deg(before, after)
    assert angle == pytest.approx(6.0, abs=0.05) and abs(axis[1]) > 0.999
    moved = after.mean(0) - before.mean(0)
    assert moved[2] > 2.0 and moved[0] < -2.0  # up, and toward the shaft (lateral is -x for the left femur)
    # the turn's fixed point (x, z) lies on the shaft axis: the cross-section centroids 80 and 140 mm down
    turn = kabsch(before, after)  # after = before @ turn.T + shift
    shift = (after.mean(0) - before.mean(0) @ turn.T)[[0, 2]]
    pivot = np.linalg.solve(np.eye(2) - turn[np.ix_([0, 2], [0, 2])], shift)
    neutral = trimesh.Trimesh(surf(nodes), ra.surface("femur", nodes).faces, process=False)
    top, low = (ra.section_centroid(neutral, z)[[0, 2]] for z in (-80.0, -140.0))
    along = (top - low) / np.linalg.norm(top - low)
    off_axis = (pivot - low) - ((pivot - low) @ along) * along
    assert np.linalg.norm(off_axis) < 0.5 and pivot[1] < -10.0  # on the axis, below the head
    np.testing.assert_allclose(
        valgus[distal | (base[:, 2] < -ra.VARIATION_TOP_MM)],
        base[distal | (base[:, 2] < -ra.VARIATION_TOP_MM)],
        atol=1e-9,
    )


def test_section_centroid_is_the_area_centroid():
    """An L-shaped prism (unequal vertex spacing): the area centroid (95/7, 95/7) mm, not the vertex mean, at any cut."""
    outline = np.array([[0.0, 0.0], [40.0, 0.0], [40.0, 10.0], [10.0, 10.0], [10.0, 40.0], [0.0, 40.0]]) + [5.0, -20.0]
    prism = trimesh.creation.extrude_triangulation(
        outline, np.array([[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 5]]), height=30.0
    )
    for z in (3.0, 17.5):
        np.testing.assert_allclose(ra.section_centroid(prism, z), [95.0 / 7.0 + 5.0, 95.0 / 7.0 - 20.0, z], atol=1e-9)
    with pytest.raises(ValueError, match="does not reach"):
        ra.section_centroid(prism, 31.0)


def test_femur_variation_widens_draws_only():
    """Off by default (cohorts drawn before stay the same); a PCA draw records its draws and its femurs stay
    mirror images; a real subject is never changed."""
    plain, again = ra.sample_subject(4), ra.sample_subject(4, femur_variation=0.0)
    np.testing.assert_array_equal(plain.meshes["femur_left"].vertices, again.meshes["femur_left"].vertices)
    varied = ra.sample_subject(4, femur_variation=1.0)
    draws = varied.params["femur_variation"]
    assert set(draws) == set(ra.FEMUR_VARIATION_SD) and all(
        abs(draws[k]) <= ra.MAX_SD * sd for k, sd in ra.FEMUR_VARIATION_SD.items()
    )
    assert np.abs(varied.meshes["femur_left"].vertices - plain.meshes["femur_left"].vertices).max() > 1.0
    assert varied.meshes["femur_left"].is_watertight and len(varied.meshes["femur_left"].vertices) == len(
        plain.meshes["femur_left"].vertices
    )
    left, right = varied.meshes["femur_left"], varied.meshes["femur_right"]
    assert left.volume == pytest.approx(right.volume, rel=1e-6) and left.volume > 0 and right.volume > 0
    real, real_varied = ra.sample_subject(4, subject=21), ra.sample_subject(4, subject=21, femur_variation=1.0)
    np.testing.assert_array_equal(real.meshes["femur_left"].vertices, real_varied.meshes["femur_left"].vertices)
    assert "femur_variation" not in real_varied.params
