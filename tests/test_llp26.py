"""Tests of the LLP26 reader: the array-only unpickler, the model's subjects and the Lagrange element evaluator."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from scripts.data import llp26
from scripts.io.files import InputFileError
from tests.helpers import Booby


def test_unpickler_reads_arrays_and_refuses_any_other_global(tmp_path):
    arrays = {"mean": np.arange(6.0), "modes": np.eye(3, dtype=np.float32), "n": 3}
    good = tmp_path / "good.pc"
    good.write_bytes(pickle.dumps(arrays, protocol=4))
    loaded = llp26.load_array_pickle(good)
    assert set(loaded) == {"mean", "modes"}
    np.testing.assert_array_equal(loaded["mean"], arrays["mean"])
    assert loaded["modes"].dtype == np.float32
    victim = tmp_path / "created_by_pickle"
    bad = tmp_path / "bad.pc"
    bad.write_bytes(pickle.dumps({"mean": Booby(victim)}))
    with pytest.raises(InputFileError, match="os.mkdir is not allowed|posix.mkdir is not allowed"):
        llp26.load_array_pickle(bad)
    assert not victim.exists()  # nothing ran
    objects = tmp_path / "objects.pc"
    objects.write_bytes(pickle.dumps({"mean": np.array([1, "a"], dtype=object)}))
    with pytest.raises(InputFileError):
        llp26.load_array_pickle(objects)


def test_subjects_rebuild_from_the_raw_arrays_and_average_to_the_mean():
    raw = llp26.load_array_pickle(llp26.package_file(llp26.MODEL_FILE))
    model = llp26.load_model()
    n = raw["mean"].size // 3
    assert n == 3225 and raw["modes"].shape == (3 * n, 26) and raw["projectedWeights"].shape == (26, 26)
    for j in (0, 17, 25):
        vector = raw["mean"] + raw["modes"] @ raw["projectedWeights"][:, j]  # all x, then all y, then all z
        np.testing.assert_allclose(model.subject(j), vector.reshape(3, n).T, atol=1e-9)
    subjects = np.stack([model.subject(j) for j in range(26)])
    np.testing.assert_allclose(subjects.mean(0), model.mean, atol=1e-6)  # PCA: the subjects average to the mean
    assert np.ptp(subjects[:, llp26.FEMUR_NODES, 2], axis=0).max() > 20.0  # and they differ
    # the package's mean-shape node files hold the same nodes (independent file, same numbering)
    for name, nodes in (
        ("atlas_meshes/femur_left_mean_rigid_LLP26.geof", llp26.FEMUR_NODES),
        ("atlas_meshes/pelvis_combined_cubic_mean_rigid_LLP26.geof", llp26.PELVIS_NODES),
    ):
        field = json.loads(llp26.package_file(name).read_text())["field_parameters"]
        geof = np.array([[float(field[k][f"dim {i}"]) for i in range(3)] for k in sorted(field)])
        np.testing.assert_allclose(geof, model.mean[nodes], atol=1e-9)
    with pytest.raises(IndexError):
        model.subject(26)


@pytest.mark.parametrize("kind", sorted(llp26.ELEMENT_TYPES))
def test_basis_interpolates_its_nodes_and_flat_elements_linearly(kind):
    xi_nodes = llp26.element_node_positions(kind)
    np.testing.assert_allclose(llp26.lagrange_basis(kind, xi_nodes), np.eye(len(xi_nodes)), atol=1e-9)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 2)) * 20.0, rng.normal(size=3) * 50.0
    nodes = xi_nodes @ a.T + b  # a flat (affine) element
    xi = rng.uniform(0.0, 1.0, size=(50, 2))
    if llp26.ELEMENT_TYPES[kind][0] == "simplex":
        xi = xi[xi.sum(1) <= 1.0]
    np.testing.assert_allclose(llp26.lagrange_basis(kind, xi) @ nodes, xi @ a.T + b, atol=1e-8)
    np.testing.assert_allclose(llp26.lagrange_basis(kind, xi).sum(1), 1.0, atol=1e-12)  # partition of unity


def test_surfaces_pass_through_every_node_and_are_closed_and_outward():
    model = llp26.load_model()
    for bone, nodes, components in (("pelvis", llp26.PELVIS_NODES, 3), ("femur", llp26.FEMUR_NODES, 1)):
        smap = llp26.bone_surface_map(bone)
        mesh = smap.mesh(model.subject(3))
        assert mesh.is_watertight and mesh.is_winding_consistent
        parts = mesh.split(only_watertight=False)
        assert len(parts) == components and all(p.volume > 0 for p in parts)
        # the sampling grid (pelvis 1/6, femur 1/8 of an edge) holds every node's parametric position
        # of the cubic/quartic elements: each element reproduces its own nodes there
        elements = llp26.read_element_mesh(
            *(llp26.package_file(f) for f in (llp26.PELVIS_MESH if bone == "pelvis" else llp26.FEMUR_MESH))
        )
        on_grid = np.unique(
            np.concatenate([e for t, e in zip(elements.types, elements.nodes, strict=True) if t != "quad54"])
        )
        dist = np.min(
            np.linalg.norm(mesh.vertices[:, None, :] - model.subject(3)[nodes][on_grid][None, :, :], axis=2), axis=0
        )
        assert dist.max() < 1e-6
        assert (
            smap.weights[:, : nodes.start].nnz == 0 and smap.weights[:, nodes.stop :].nnz == 0
        )  # only this bone's nodes


def test_element_numbering_error_is_caught(tmp_path):
    mesh_file, ens_file = (llp26.package_file(f) for f in llp26.FEMUR_MESH)
    data = json.loads(mesh_file.read_text())
    data["number_of_points"] = data["number_of_points"] + 1
    broken = tmp_path / "broken.mesh"
    broken.write_text(json.dumps(data))
    with pytest.raises(InputFileError, match="broken.mesh"):
        llp26.read_element_mesh(broken, ens_file)
