"""Dual-face meshing against analytic ray-sphere / ray-ellipsoid depth maps."""

import numpy as np
import pytest
import trimesh
from scripts.geometry import Geometry
from scripts.reconstruction.meshing import dual_face_mesh, grid_triangles, masked_points
from tests.helpers import ellipsoid_depths

GEOMETRY = Geometry(sid_mm=1100.0, pixel_spacing_mm=(3.125, 3.125), image_size=(96, 80))


def test_sphere_closed_and_on_surface():
    centre, r = np.array([15.0, -10.0, 950.0]), 40.0
    front, back, mask = ellipsoid_depths(GEOMETRY, centre, (r, r, r))
    mesh = dual_face_mesh(front, back, mask, GEOMETRY)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.body_count == 1
    assert np.abs(np.linalg.norm(mesh.vertices - centre, axis=1) - r).max() < 0.1
    # outward orientation: positive volume, close to the sphere's (the rim wall cuts a little off)
    assert 0.9 * (4 / 3 * np.pi * r**3) < mesh.volume < 4 / 3 * np.pi * r**3
    # front faces point toward the source, back faces away
    towards_source = np.einsum("ij,ij->i", mesh.face_normals, -mesh.triangles_center)
    front_faces = np.linalg.norm(mesh.triangles_center, axis=1) < np.linalg.norm(centre) - 10
    back_faces = np.linalg.norm(mesh.triangles_center, axis=1) > np.linalg.norm(centre) + 10
    assert (towards_source[front_faces] > 0).all() and (towards_source[back_faces] < 0).all()


def test_ellipsoid_watertight_and_border_open():
    front, back, mask = ellipsoid_depths(GEOMETRY, (20.0, 5.0, 900.0), (60.0, 35.0, 25.0))
    mesh = dual_face_mesh(front, back, mask, GEOMETRY)
    assert mesh.is_watertight and mesh.body_count == 1
    # move the ellipsoid so that it runs off the right image border: the surface stays open there
    front, back, mask = ellipsoid_depths(GEOMETRY, (130.0, 5.0, 900.0), (60.0, 35.0, 25.0))
    assert mask[:, -1].any() and not mask[:, 0].any()
    mesh = dual_face_mesh(front, back, mask, GEOMETRY)
    assert not mesh.is_watertight
    u, _ = GEOMETRY.project(mesh.vertices)[0].T
    boundary = mesh.edges[trimesh.grouping.group_rows(mesh.edges_sorted, require_count=1)]
    assert len(boundary) > 0
    # every open edge lies on the last image column
    assert np.allclose(u[boundary], GEOMETRY.width - 1, atol=1e-6)


def test_no_triangle_bridges_depth_jump():
    near_c, far_c, r = np.array([-15.0, 0.0, 850.0]), np.array([15.0, 0.0, 1000.0]), 30.0
    fn, bn, mn = ellipsoid_depths(GEOMETRY, near_c, (r, r, r))
    ff, bf, mf = ellipsoid_depths(GEOMETRY, far_c, (r, r, r))
    front = np.where(mn, fn, ff)
    back = np.where(mf, bf, bn)
    mask = mn | mf
    mesh = dual_face_mesh(front, back, mask, GEOMETRY, max_depth_jump_mm=20.0)
    on_near = np.abs(np.linalg.norm(mesh.vertices - near_c, axis=1) - r) < 0.1
    on_far = np.abs(np.linalg.norm(mesh.vertices - far_c, axis=1) - r) < 0.1
    assert (on_near ^ on_far).all() and on_near.any() and on_far.any()
    # no edge joins the near sphere to the far one (they are > 100 mm apart in depth)
    assert not (on_near[mesh.edges[:, 0]] & on_far[mesh.edges[:, 1]]).any()
    # without the jump test the same masks are bridged
    bridged = dual_face_mesh(front, back, mask, GEOMETRY, max_depth_jump_mm=1e6)
    near_b = np.abs(np.linalg.norm(bridged.vertices - near_c, axis=1) - r) < 0.1
    far_b = np.abs(np.linalg.norm(bridged.vertices - far_c, axis=1) - r) < 0.1
    assert (near_b[bridged.edges[:, 0]] & far_b[bridged.edges[:, 1]]).any()


def test_grid_triangles_counts():
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True  # 2 x 3 block: 2 full quads -> 4 triangles
    assert len(grid_triangles(mask)) == 4
    mask[0, 1] = True  # adds one 3-of-4 quad
    assert len(grid_triangles(mask)) == 5


def test_masked_points_and_bad_input():
    front, back, mask = ellipsoid_depths(GEOMETRY, (0.0, 0.0, 950.0), (30.0, 30.0, 30.0))
    pts = masked_points(front, back, mask, GEOMETRY)
    assert pts.shape == (2 * mask.sum(), 3)
    assert np.allclose(np.linalg.norm(pts - [0, 0, 950.0], axis=1), 30.0, atol=1e-6)
    front[mask] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dual_face_mesh(front, back, mask, GEOMETRY)
