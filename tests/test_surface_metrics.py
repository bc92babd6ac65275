"""Surface metrics against hand-computed distances of spheres, and clipping to the X-ray cone."""

import numpy as np
import trimesh

from scripts.geometry import Geometry
from scripts.surface_metrics import clip_to_field_of_view, error_colours, surface_metrics, vertex_errors

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
    assert not GEOMETRY.in_field_of_view(pred.vertices[len(ref.vertices):]).any()
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
    colours = error_colours(err, max_mm=5.0)
    assert colours.shape == (len(err), 4) and colours.dtype == np.uint8
    assert (colours[~inside] == [153, 153, 153, 255]).all()
