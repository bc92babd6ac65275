"""Surface metrics against hand-computed distances of spheres, clipping to the X-ray cone, and the exact
point-to-surface routine against brute force."""

import numpy as np
import pytest
import trimesh
from scripts.geometry import Geometry
from scripts.io.report import error_rgba
from scripts.reconstruction.surface_metrics import (
    clip_to_field_of_view,
    inside_planes,
    point_to_surface,
    surface_metrics,
    vertex_errors,
    volume_extent_planes,
)

GEOMETRY = Geometry(sid_mm=1100.0, pixel_spacing_mm=(3.125, 3.125), image_size=(64, 48))


def sphere(radius, centre=(0.0, 0.0, 0.0)):
    return trimesh.creation.icosphere(4, radius=radius).apply_translation(centre)


def test_concentric_spheres():
    m = surface_metrics(sphere(20.0), sphere(23.0), spacing_mm=1.0)
    for key in ("assd_mm", "hd95_mm", "hd_mm", "chamfer_mm"):
        assert abs(m[key] - 3.0) < 0.02, (key, m[key])


def test_shifted_sphere_matches_integral():
    r, delta = 20.0, 4.0
    # distance from the point at polar angle theta (cos uniform on a sphere) to the shifted sphere
    c = np.linspace(-1, 1, 200001)
    dist = np.abs(np.sqrt(r * r + delta * delta - 2 * r * delta * c) - r)
    m = surface_metrics(sphere(r), sphere(r, (delta, 0.0, 0.0)), spacing_mm=0.7)
    assert abs(m["assd_mm"] - dist.mean()) < 0.03
    assert abs(m["chamfer_mm"] - dist.mean()) < 0.03  # equal areas: Chamfer = ASSD
    assert abs(m["hd95_mm"] - np.percentile(dist, 95)) < 0.05
    assert abs(m["hd_mm"] - delta) < 0.05


def test_cone_clipping():
    centre = np.array([90.0, 0.0, 950.0])  # half outside the right edge of the cone
    mesh = sphere(30.0, centre)
    clipped = clip_to_field_of_view(mesh, GEOMETRY)
    assert 0 < clipped.area < mesh.area
    assert GEOMETRY.in_field_of_view(clipped.vertices, margin_px=-1e-6).all()
    inside = GEOMETRY.in_field_of_view(mesh.vertices)
    # every original vertex inside the cone survives clipping
    assert trimesh.proximity.closest_point(clipped, mesh.vertices[inside])[1].max() < 1e-6
    # an extra surface wholly outside the cone changes the unclipped metrics, not the clipped ones
    ref = sphere(30.0, (0.0, 0.0, 950.0))
    pred = trimesh.util.concatenate([ref, sphere(30.0, (300.0, 0.0, 950.0))])
    assert not GEOMETRY.in_field_of_view(pred.vertices[len(ref.vertices) :]).any()
    assert surface_metrics(pred, ref, spacing_mm=2.0)["hd95_mm"] > 100.0
    clipped_m = surface_metrics(pred, ref, geometry=GEOMETRY, spacing_mm=2.0)
    assert clipped_m["hd_mm"] < 0.01
    # nothing in view -> NaN
    far = sphere(10.0, (600.0, 0.0, 950.0))
    assert np.isnan(surface_metrics(far, far, geometry=GEOMETRY)["assd_mm"])


def test_vertex_errors():
    a, b = sphere(20.0, (0.0, 0.0, 950.0)), sphere(22.0, (0.0, 0.0, 950.0))
    assert np.allclose(vertex_errors(a, b), 2.0, atol=0.01)
    shifted = a.copy().apply_translation((80.0, 0.0, 0.0))  # partly outside the cone
    err = vertex_errors(shifted, shifted, geometry=GEOMETRY)
    inside = GEOMETRY.in_field_of_view(shifted.vertices)
    assert np.isnan(err[~inside]).all() and np.allclose(err[inside], 0.0, atol=1e-6) and (~inside).any()
    colours = error_rgba(err, max_mm=5.0)
    assert colours.shape == (len(err), 4)
    assert (colours[~inside] == [0.6, 0.6, 0.6, 1.0]).all()  # NaN (outside the cone) shows grey


def random_soup(rng, n):
    """Triangles (n, 3, 3) of very different sizes, with long thin slivers and degenerate (collinear, point) ones."""
    tri = rng.normal(0.0, 30.0, (n, 1, 3)) + rng.normal(0.0, 1.0, (n, 3, 3)) * np.exp(rng.normal(0.0, 1.5, (n, 1, 1)))
    thin = rng.random(n) < 0.3
    tri[thin, 2] = (
        tri[thin, 0]
        + rng.uniform(-0.5, 1.5, (thin.sum(), 1)) * (tri[thin, 1] - tri[thin, 0])
        + rng.normal(0, 0.05, (thin.sum(), 3))
    )
    tri[: n // 20, 1:] = tri[: n // 20, :1]  # points
    return tri


def brute_force_distance(points, tri):
    """Distance to the closest of all triangles: every point-triangle pair through trimesh's closest point."""
    rep = np.repeat(points, len(tri), axis=0)
    closest = trimesh.triangles.closest_point(np.tile(tri, (len(points), 1, 1)), rep)
    return np.linalg.norm(closest - rep, axis=1).reshape(len(points), len(tri)).min(1)


def test_point_to_surface_matches_brute_force():
    rng = np.random.default_rng(7)
    for n in (1, 5, 150, 400):
        tri = random_soup(rng, n)
        mesh = trimesh.Trimesh(tri.reshape(-1, 3), np.arange(3 * n).reshape(-1, 3), process=False)
        # points near the triangles (on them, just off them) and far away
        on = np.einsum("ij,ijk->ik", rng.dirichlet([1, 1, 1], 200), tri[rng.integers(0, n, 200)])
        points = np.concatenate([on, on + rng.normal(0, 0.5, on.shape), rng.normal(0, 200.0, (200, 3))])
        d = point_to_surface(points, mesh)
        assert np.allclose(d, brute_force_distance(points, tri), rtol=0, atol=1e-9)
        assert np.all(d[:200] < 1e-9)
    # few large triangles of one size (one proxy each, far from its corners), points near corners and edges
    tri = rng.normal(0.0, 20.0, (30, 1, 3)) + rng.normal(0.0, 10.0, (30, 3, 3))
    mesh = trimesh.Trimesh(tri.reshape(-1, 3), np.arange(90).reshape(-1, 3), process=False)
    corners = tri[rng.integers(0, 30, 3000), rng.integers(0, 3, 3000)]
    edges = corners + rng.random((3000, 1)) * (tri[rng.integers(0, 30, 3000), 0] - corners) * 0.2
    points = np.concatenate([corners, edges]) + rng.normal(0, 2.0, (6000, 3))
    assert np.allclose(point_to_surface(points, mesh), brute_force_distance(points, tri), rtol=0, atol=1e-9)


def test_point_to_surface_noisy_surface():
    """A bumpy sphere with spikes (as an untrained network's surfaces): still exact."""
    mesh = sphere(30.0)
    rng = np.random.default_rng(3)
    mesh.vertices *= (
        1 + 0.05 * rng.standard_normal(len(mesh.vertices)) + 2.0 * (rng.random(len(mesh.vertices)) < 0.01)
    )[:, None]
    points = rng.normal(0, 60.0, (300, 3))
    assert np.allclose(point_to_surface(points, mesh), brute_force_distance(points, mesh.triangles), rtol=0, atol=1e-9)


def test_ct_extent_clipping_judges_a_cut_bone_on_what_the_ct_holds(tmp_path):
    """A ball of radius 15 mm whose CT ends at its equator: the labels' surface is a capped hemisphere.
    Against the whole (completed) ball it scores millimetres; clipped to the CT's box both are the same
    hemisphere, within the voxelisation error."""
    from scripts.geometry import apply_transform, standard_ap_pose
    from scripts.io.files import write_nifti
    from scripts.reconstruction.evaluate import label_surfaces

    n, r = 48, 15.0
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-23.5, -23.5, 0.0]  # k = 0 (the CT's last slice) through the ball's centre
    i, j, k = np.indices((n, n, n), dtype=np.float64)
    inside = (i - 23.5) ** 2 + (j - 23.5) ** 2 + k**2 <= r * r
    write_nifti(tmp_path / "labels.nii.gz", inside.astype(np.uint8), affine)
    truth = label_surfaces(tmp_path / "labels.nii.gz", ["pelvis"])["pelvis"]
    pose = standard_ap_pose(np.zeros(3), 950.0, [5.0, -3.0, 10.0], [0.0, 0.0, 0.0])

    def to_camera(m: trimesh.Trimesh) -> trimesh.Trimesh:
        return trimesh.Trimesh(apply_transform(pose, np.asarray(m.vertices)), m.faces, process=False)

    ball, truth = to_camera(sphere(r)), to_camera(truth)
    planes = volume_extent_planes(affine, (n, n, n), pose)
    # unclipped, by hand: the ball's lower half is |z| from the cap (mean r/2 over area 2 pi r^2), the cap
    # r - rho from the ball (mean r/3 over pi r^2), the rest 0; ASSD = (2 pi r^2 r/2 + pi r^2 r/3) / (7 pi r^2)
    assert surface_metrics(ball, truth)["assd_mm"] == pytest.approx((r + r / 3) / 7, abs=0.15)
    clipped = surface_metrics(ball, truth, extent_planes=planes)
    assert clipped["assd_mm"] < 0.3 and clipped["hd_mm"] < 1.0
    inside_ct = inside_planes(np.asarray(ball.vertices), planes)
    ball_z = apply_transform(np.linalg.inv(pose), np.asarray(ball.vertices))[:, 2]
    off = np.abs(ball_z) > 1e-6  # the equator's vertices lie on the plane
    np.testing.assert_array_equal(
        inside_ct[off], ball_z[off] > 0
    )  # the box's last-slice plane is the world z = 0 plane
    errors = vertex_errors(ball, truth, GEOMETRY.with_pose(np.eye(4)), planes)  # camera frame: the ball is in the cone
    assert np.isnan(errors[~inside_ct]).all() and np.nanmax(errors) < 1.0
