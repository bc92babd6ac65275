"""Femoral head centres and the hip plane (scripts/reconstruction/hips.py) against analytic shapes and hand values."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation
from scripts.geometry import apply_transform
from scripts.reconstruction.hips import femoral_head_vertices, head_spheres, hip_plane

HEAD_CENTRE = np.array([40.0, 10.0, 180.0])  # RAS mm: a left femur's head, toward the midline (+x) and up
HEAD_RADIUS = 22.0


def analytic_left_femur() -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) RAS mm of a head sphere, a neck cylinder from 25 mm beyond the head centre toward the
    lateral side and a shaft cylinder below the neck's lateral end (separate surfaces), and the sphere's indices."""
    head = trimesh.creation.icosphere(subdivisions=3, radius=HEAD_RADIUS)
    head.apply_translation(HEAD_CENTRE)
    neck_axis = np.array(
        [-np.cos(np.radians(40.0)), 0.0, -np.sin(np.radians(40.0))]
    )  # neck-shaft angle about 130 degrees
    neck = trimesh.creation.cylinder(
        radius=14.0, segment=[HEAD_CENTRE + 25.0 * neck_axis, HEAD_CENTRE + 70.0 * neck_axis], sections=24
    )
    top = HEAD_CENTRE + 70.0 * neck_axis
    shaft = trimesh.creation.cylinder(
        radius=15.0, segment=[top + [0.0, 0.0, 10.0], top - [0.0, 0.0, 380.0]], sections=24
    )
    vertices = np.concatenate([head.vertices, neck.vertices, shaft.vertices])
    return vertices, np.arange(len(head.vertices))


def test_head_vertices_of_an_analytic_femur_and_its_mirror_image():
    """The rule picks exactly the head sphere's vertices, on the left femur and on its mirror image (right),
    and their sphere is the head (centre and radius by construction)."""
    vertices, sphere = analytic_left_femur()
    np.testing.assert_array_equal(femoral_head_vertices(vertices, "femur_left"), sphere)
    mirrored = vertices * [-1.0, 1.0, 1.0]  # the right femur: head toward -x
    np.testing.assert_array_equal(femoral_head_vertices(mirrored, "femur_right"), sphere)
    ((centre, radius),) = head_spheres({"femur_right": mirrored}, {"femur_right": sphere}).values()
    np.testing.assert_allclose(
        centre, HEAD_CENTRE * [-1.0, 1.0, 1.0], atol=0.05
    )  # icosphere vertices lie on the sphere
    assert radius == pytest.approx(HEAD_RADIUS, abs=0.05)
    # a left femur read as a right one has its head on the wrong side: the rule finds no sphere of this head
    assert not np.array_equal(femoral_head_vertices(vertices, "femur_right"), sphere)


def test_head_centres_follow_a_rigid_pose():
    """Indices chosen once on the model frame give the posed instance's head: the centre moves with the pose."""
    vertices, _ = analytic_left_femur()
    head = femoral_head_vertices(vertices, "femur_left")
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_euler("xyz", [170.0, 8.0, -5.0], degrees=True).as_matrix()
    pose[:3, 3] = [12.0, -30.0, 960.0]
    spheres = head_spheres({"femur_left": apply_transform(pose, vertices), "pelvis": vertices}, {"femur_left": head})
    assert list(spheres) == ["femur_left"]  # a bone without head vertices is left out
    centre, radius = spheres["femur_left"]
    np.testing.assert_allclose(centre, apply_transform(pose, HEAD_CENTRE[None])[0], atol=0.05)
    assert radius == pytest.approx(HEAD_RADIUS, abs=0.05)


def test_hip_plane_by_hand():
    """Depth = mean camera z of the head centres; magnification = SID / depth (1100 / 950)."""
    plane = hip_plane(
        {"femur_right": np.array([-90.0, 5.0, 940.0]), "femur_left": np.array([85.0, 3.0, 960.0])}, 1100.0
    )
    assert plane == {
        "depth_mm": 950.0,
        "magnification": pytest.approx(1100.0 / 950.0),
        "femurs": ["femur_left", "femur_right"],
    }
    assert hip_plane({"femur_left": np.array([0.0, 0.0, 1000.0])}, 1100.0)["magnification"] == pytest.approx(1.1)
    assert hip_plane({}, 1100.0) is None
