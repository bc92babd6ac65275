"""Shared shape maths: the sphere refit of femoral heads and the rigid Procrustes gauges, against analytic truth."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation
from scripts.geometry import rotation_matrix
from scripts.shape_maths import generalized_procrustes, refit_sphere_shell, rotate_points_about


def ball_on_a_shaft() -> tuple[np.ndarray, int, np.ndarray, float]:
    """Points (N, 3) mm: a sphere (radius 20 mm) then a straight shaft (radius 8 mm) below it; the number of sphere points."""
    centre, radius = np.array([10.0, -5.0, 40.0]), 20.0
    ball = trimesh.creation.icosphere(subdivisions=3, radius=radius).vertices + centre
    z = np.linspace(-120.0, -25.0, 30)  # its top ring 26 mm from the centre, 6 mm off the sphere
    a = np.linspace(0.0, 2 * np.pi, 24, endpoint=False)
    shaft = np.stack(
        [
            8.0 * np.cos(a)[None].repeat(len(z), 0),
            8.0 * np.sin(a)[None].repeat(len(z), 0),
            z[:, None].repeat(len(a), 1),
        ],
        -1,
    ).reshape(-1, 3)
    return np.concatenate([ball, shaft + centre]), len(ball), centre, radius


def test_refit_sphere_shell_settles_on_the_sphere():
    points, n_ball, centre, radius = ball_on_a_shaft()
    # a partial start: the points within 20 mm of the top one (a cap of the sphere)
    start = np.flatnonzero(np.linalg.norm(points - points[np.argmax(points[:, 2])], axis=1) < 20.0)
    assert 0 < len(start) < n_ball // 2
    chosen, c, r = refit_sphere_shell(points, start, shell_mm=2.5, iterations=8)
    np.testing.assert_array_equal(chosen, np.arange(n_ball))
    np.testing.assert_allclose(c, centre, atol=1e-9)
    assert r == pytest.approx(radius, abs=0.5)  # icosphere vertices lie on the sphere; the algebraic fit is exact
    # ``keep`` narrows every chosen set: the lower hemisphere only
    lower, c2, r2 = refit_sphere_shell(points, start, 2.5, 8, keep=lambda p, c, r: p[:, 2] < c[2])
    np.testing.assert_array_equal(lower, np.flatnonzero(points[:n_ball, 2] < centre[2]))
    assert np.linalg.norm(c2 - centre) < 1e-6 and r2 == pytest.approx(r, abs=1e-6)


def test_procrustes_gauges():
    """Copies of one shape under rotations: aligned, they coincide; ``first`` keeps the first copy's orientation,
    ``mean`` the orientation of the plain mean of the centred copies (the rotation best mapping the shape onto it)."""
    rng = np.random.default_rng(3)
    base = rng.normal(0.0, 30.0, (200, 3)) * [2.0, 1.0, 0.5]
    shapes = np.stack(
        [(base @ rotation_matrix(rng.normal(0.0, 10.0, 3)).T) + rng.normal(0.0, 20.0, 3) for _ in range(6)]
    )
    centred = shapes - shapes.mean(1, keepdims=True)
    first = generalized_procrustes(shapes, gauge="first", tol_mm=1e-9)
    assert np.abs(first - first[0]).max() < 1e-6
    np.testing.assert_allclose(first[0], centred[0], atol=1e-6)
    mean = generalized_procrustes(shapes, gauge="mean", tol_mm=1e-9)
    assert np.abs(mean - mean[0]).max() < 1e-6
    turn, _ = Rotation.align_vectors(centred.mean(0), centred[0])  # centred[0] @ R.T best fits the plain mean
    np.testing.assert_allclose(mean[0], turn.apply(centred[0]), atol=1e-6)
    assert np.abs(mean[0] - first[0]).max() > 1.0  # the two gauges differ
    with pytest.raises(ValueError, match="gauge"):
        generalized_procrustes(shapes, gauge="last")


def test_rotate_points_about_per_point_angles():
    """Each point turns about the line (centre, axis) by its own angle: by hand about z, and against scipy's rotation vectors."""
    centre = np.array([1.0, 1.0, 0.0])
    z_turned = rotate_points_about(
        np.array([[2.0, 1.0, 5.0], [2.0, 1.0, 5.0], [1.0, 3.0, -2.0]]),
        centre,
        np.array([0.0, 0.0, 1.0]),
        np.array([0.0, np.pi / 2, np.pi]),
    )
    np.testing.assert_allclose(z_turned, [[2.0, 1.0, 5.0], [1.0, 2.0, 5.0], [1.0, -1.0, -2.0]], atol=1e-12)
    rng = np.random.default_rng(5)
    points, angles = rng.normal(0.0, 50.0, (40, 3)), rng.uniform(-np.pi, np.pi, 40)
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    centre = np.array([10.0, -20.0, 30.0])
    expected = Rotation.from_rotvec(angles[:, None] * axis).apply(points - centre) + centre
    np.testing.assert_allclose(rotate_points_about(points, centre, axis, angles), expected, atol=1e-9)
