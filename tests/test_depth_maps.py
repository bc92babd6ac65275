"""Dual-face depth maps against analytic ray/ellipsoid intersections."""

import numpy as np
import pytest
import torch
import trimesh
from scripts.data.depth_maps import bone_depth, bone_grids, candidate_blocks, cpu_threads, depth_maps
from scripts.data.drr import rays_in_voxels
from scripts.geometry import Geometry, standard_ap_pose
from tests.helpers import ellipsoid_depths

SPACING = 0.5
SEMI_AXES = {"sphere": (15.0, 15.0, 15.0), "ellipsoid": (18.0, 11.0, 14.0)}


def voxelised(axes):
    """Binary label (1 = pelvis) of an origin-centred ellipsoid at 0.5 mm voxels, and its affine."""
    n = np.ceil(2 * np.asarray(axes) / SPACING).astype(int) + 6
    c = (n - 1) / 2.0
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = -c * SPACING
    i, j, k = np.meshgrid(*[(np.arange(m) - cm) * SPACING for m, cm in zip(n, c, strict=True)], indexing="ij")
    inside = (i / axes[0]) ** 2 + (j / axes[1]) ** 2 + (k / axes[2]) ** 2 <= 1.0
    return inside.astype(np.uint8), affine


@pytest.fixture
def geometry():
    return Geometry(1100.0, (1.0, 1.0), (48, 40)).with_pose(
        standard_ap_pose([0, 0, 0], 950.0, [7, -4, 12], [1.5, -2.0, 20.0])
    )


@pytest.mark.parametrize("shape", list(SEMI_AXES))
def test_depth_matches_analytic_intersections(shape, geometry):
    axes = SEMI_AXES[shape]
    labels, affine = voxelised(axes)
    depth, mask = depth_maps(labels, affine, geometry, bones=("pelvis",))
    t_in, t_out, truth_hit = (a.ravel() for a in ellipsoid_depths(geometry, (0.0, 0.0, 0.0), axes, world=True))
    margin = np.where(truth_hit, (t_out - t_in) / (2 * min(axes)), -1.0)  # chord as a fraction of the smallest diameter
    hit = mask[0].numpy().ravel() > 0
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


@pytest.mark.parametrize("block", [2, 3])
@pytest.mark.parametrize("shape", [(13, 10, 9), (12, 11, 8)])
def test_candidate_blocks_match_their_definition(block, shape):
    """Block B is a candidate iff a cell (voxels c..c+1) of block B or of a neighbouring block holds bone."""
    rng = np.random.default_rng(sum(shape) + block)
    occ = (rng.random(shape) < 0.004).astype(np.float32)
    occ[-1, -1, -1] = 1.0  # the far corner voxel: only the last blocks' cells reach it
    got = candidate_blocks(torch.as_tensor(occ), block).numpy()
    n_blocks = [-(-n // block) for n in shape]
    expected = np.zeros(n_blocks, dtype=bool)
    for b in np.ndindex(*n_blocks):
        # cells of blocks B-1..B+1 span voxels (B - 1) * block .. (B + 2) * block
        window = tuple(slice(max(0, (i - 1) * block), (i + 2) * block + 1) for i in b)
        expected[b] = occ[window].any()
    np.testing.assert_array_equal(got, expected)
    assert got.any() and not got.all()


def test_bone_grids_crop_each_bone_with_one_voxel_margin():
    labels = np.zeros((30, 25, 20), np.uint8)
    labels[3:9, 4:7, 10:19] = 1
    labels[20:28, 15:24, 1:6] = 3
    labels[5, 20, 2] = 3  # a stray voxel widens femur_right's box
    grids = bone_grids(labels, ("pelvis", "femur_left", "femur_right"))
    assert grids["femur_left"] is None
    for bone, label in (("pelvis", 1), ("femur_right", 3)):
        idx = np.argwhere(labels == label)
        lo, hi = idx.min(0), idx.max(0)
        grid = grids[bone]
        np.testing.assert_array_equal(grid.offset, lo - 1)
        expected = np.pad(labels[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] == label, 1)
        np.testing.assert_array_equal(grid.occupancy.numpy(), expected.astype(np.float32))
    assert all(g is None for g in bone_grids(np.zeros((4, 4, 4), np.uint8), ("pelvis",)).values())


def test_cpu_threads_scope_is_restored(geometry):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with cpu_threads(1, "cpu"):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with cpu_threads(1, "meta"):  # not a CPU: untouched
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), cpu_threads(1, torch.device("cpu")):
            raise RuntimeError("restored on errors too")
        assert torch.get_num_threads() == 2
        labels, affine = voxelised(SEMI_AXES["sphere"])
        depth_maps(labels, affine, geometry, bones=("pelvis",))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
