"""Dual-face depth maps against analytic ray/ellipsoid intersections."""

import numpy as np
import pytest
import torch
import trimesh

from scripts.depth_maps import bone_depth, bone_grids, depth_maps
from scripts.drr import rays_in_voxels
from scripts.geometry import Geometry, standard_ap_pose

SPACING = 0.5
SEMI_AXES = {"sphere": (15.0, 15.0, 15.0), "ellipsoid": (18.0, 11.0, 14.0)}


def voxelised(axes):
    """Binary label (1 = pelvis) of an origin-centred ellipsoid at 0.5 mm voxels, and its affine."""
    n = np.ceil(2 * np.asarray(axes) / SPACING).astype(int) + 6
    c = (n - 1) / 2.0
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = -c * SPACING
    i, j, k = np.meshgrid(*[(np.arange(m) - cm) * SPACING for m, cm in zip(n, c)], indexing="ij")
    inside = (i / axes[0]) ** 2 + (j / axes[1]) ** 2 + (k / axes[2]) ** 2 <= 1.0
    return inside.astype(np.uint8), affine


def analytic(geometry, axes):
    """Entry/exit distances (mm) of every pixel ray with the ellipsoid, and its chord as a fraction of the
    smallest diameter (<= 0 for a miss)."""
    o, d = geometry.world_rays(dtype=torch.float64)
    o, d = o.numpy(), d.numpy().reshape(-1, 3)
    s = 1.0 / np.asarray(axes)
    os_, ds = o * s, d * s
    a, b, c = (ds * ds).sum(1), 2 * (ds @ os_), os_ @ os_ - 1
    disc = b * b - 4 * a * c
    root = np.sqrt(np.clip(disc, 0, None))
    chord = np.where(disc > 0, root / a, -1.0)
    return (-b - root) / (2 * a), (-b + root) / (2 * a), chord / (2 * min(axes))


@pytest.fixture
def geometry():
    return Geometry(1100.0, (1.0, 1.0), (48, 40)).with_pose(standard_ap_pose([0, 0, 0], 950.0, [7, -4, 12], [1.5, -2.0, 20.0]))


@pytest.mark.parametrize("shape", list(SEMI_AXES))
def test_depth_matches_analytic_intersections(shape, geometry):
    axes = SEMI_AXES[shape]
    labels, affine = voxelised(axes)
    depth, mask = depth_maps(labels, affine, geometry, bones=("pelvis",))
    t_in, t_out, margin = analytic(geometry, axes)
    hit = mask[0].numpy().ravel() > 0
    truth_hit = margin > 0
    assert (hit != truth_hit).mean() < 0.03  # only silhouette pixels may differ
    interior = hit & (margin > 0.5)  # away from the silhouette
    assert interior.sum() > 200
    front, back = depth[0].numpy().ravel(), depth[1].numpy().ravel()
    assert np.median(np.abs(front[interior] - t_in[interior])) < 0.25
    assert np.median(np.abs(back[interior] - t_out[interior])) < 0.25
    assert np.all(back[hit] >= front[hit])
    assert np.all(depth.numpy()[:, ~mask[0].numpy().astype(bool)] == 0)


def test_backprojected_depth_lies_on_surface_mesh(geometry):
    axes = SEMI_AXES["ellipsoid"]
    labels, affine = voxelised(axes)
    depth, mask = depth_maps(labels, affine, geometry, bones=("pelvis",))
    mesh = trimesh.creation.icosphere(subdivisions=5)
    mesh.apply_scale(axes)
    m = mask[0].numpy().astype(bool)
    pts_cam = geometry.backproject(depth.numpy())[:, m].reshape(-1, 3)
    pts_world = geometry.camera_to_world_points(pts_cam)
    dist = np.abs(trimesh.proximity.signed_distance(mesh, pts_world))
    assert np.median(dist) < 0.25
    assert np.quantile(dist, 0.9) < 0.5


def test_absent_and_out_of_view_bones_give_empty_masks(geometry):
    labels, affine = voxelised(SEMI_AXES["sphere"])
    depth, mask = depth_maps(labels, affine, geometry)  # femur labels absent
    assert mask[0].any() and not mask[1:].any() and not depth[2:].any()
    away = geometry.with_pose(standard_ap_pose([500.0, 0, 0], 950.0))  # sphere far outside the cone
    _, mask = depth_maps(labels, affine, away)
    assert not mask.any()


def test_coarse_search_finds_thin_tilted_plate(geometry):
    """A 1.5-voxel-thick plate tilted 35 degrees: the coarse-to-fine search equals sampling every step."""
    spacing, n = 1.0, 44
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -(n - 1) / 2.0 * spacing
    x = (np.arange(n) - (n - 1) / 2.0) * spacing
    i, j, k = np.meshgrid(x, x, x, indexing="ij")
    normal = np.array([np.sin(np.radians(35.0)), np.cos(np.radians(35.0)), 0.0])  # mostly along the AP rays
    height = normal[0] * i + normal[1] * j + normal[2] * k
    labels = ((np.abs(height) <= 0.75 * spacing) & (i**2 + j**2 + k**2 <= 15.0**2)).astype(np.uint8)
    depth, mask = depth_maps(labels, affine, geometry, bones=("pelvis",))

    grid = bone_grids(labels, ("pelvis",))["pelvis"]
    source, dirs = rays_in_voxels(geometry, affine)
    source = source - torch.as_tensor(grid.offset, dtype=source.dtype)
    everywhere = torch.ones_like(grid.candidates)  # no block skipped: plain march every step
    front, back, hit = bone_depth(grid.occupancy, source, dirs, 0.5 * spacing, candidates=everywhere)
    m = mask[0].numpy().ravel() > 0
    np.testing.assert_array_equal(m, hit.numpy())
    np.testing.assert_allclose(depth[0].numpy().ravel()[m], front.numpy()[m], atol=1e-4)
    np.testing.assert_allclose(depth[1].numpy().ravel()[m], back.numpy()[m], atol=1e-4)

    o, d = geometry.world_rays(dtype=torch.float64)  # analytic mid-plane hits
    o, d = o.numpy(), d.numpy().reshape(-1, 3)
    t_mid = -(o @ normal) / (d @ normal)
    p = o + t_mid[:, None] * d
    inner = np.linalg.norm(p, axis=1) < 13.0
    assert inner.sum() > 100 and m[inner].mean() > 0.99
    mid = 0.5 * (depth[0].numpy().ravel() + depth[1].numpy().ravel())
    assert np.median(np.abs(mid[inner & m] - t_mid[inner & m])) < 0.25
