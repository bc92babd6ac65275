"""DRR line integrals against analytic chord lengths; attenuation model and style options."""

import numpy as np
import pytest
import torch

from scripts.drr import attenuation_volume, coarsen, hu_to_mu, mu_water_per_mm, render_drr
from scripts.geometry import Geometry, standard_ap_pose
from scripts.radiograph_style import style_radiograph

R = 20.0


def sphere_volume(spacing=0.5, hu_inside=1000.0):
    n = int(np.ceil(2 * R / spacing)) + 8
    c = (n - 1) / 2.0
    x = (np.arange(n) - c) * spacing
    i, j, k = np.meshgrid(x, x, x, indexing="ij")
    hu = np.where(i**2 + j**2 + k**2 <= R**2, hu_inside, -1000.0).astype(np.float32)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -c * spacing
    return hu, affine


def test_mu_water_matches_nist_table_and_hu_model():
    assert mu_water_per_mm(60.0) == pytest.approx(0.02059, rel=1e-6)  # NIST XCOM water, 60 keV
    assert mu_water_per_mm(80.0) == pytest.approx(0.01837, rel=1e-6)
    mu = hu_to_mu(torch.tensor([-1000.0, 0.0, 1000.0]), 60.0, bone_enhancement=0.5)
    assert mu.tolist() == pytest.approx([0.0, 0.02059, 0.02059 * 2.5], rel=1e-5)


def reference_mu(hu, energy_kev, bone_enhancement):
    """The documented model in float64, written as the piecewise definition."""
    hu = np.asarray(hu, dtype=np.float64)
    return mu_water_per_mm(energy_kev) * np.maximum(0.0, 1.0 + hu / 1000.0 * (1.0 + bone_enhancement * (hu > 0)))


@pytest.mark.parametrize("bone_enhancement", [0.0, 0.5, 1.3])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_hu_to_mu_equals_piecewise_definition_for_every_hu(bone_enhancement, dtype):
    hu = np.concatenate([np.arange(-3024, 3072), [-1000.5, -999.5, -0.25, 0.25]]).astype(dtype)
    mu = hu_to_mu(torch.as_tensor(hu), 80.0, bone_enhancement).double().numpy()
    ref = reference_mu(hu, 80.0, bone_enhancement)
    assert np.all(mu[ref == 0] == 0)  # at and below -1000 HU (and the clamp below it) exactly no attenuation
    np.testing.assert_allclose(mu[ref > 0], ref[ref > 0], rtol=1e-6)


@pytest.mark.parametrize("slab_voxels", [500, 1 << 22])  # many slabs (last one thinner than a window) / one slab
def test_pooled_attenuation_equals_voxelwise_attenuation_then_average(slab_voxels):
    rng = np.random.default_rng(1)
    hu = rng.integers(-3024, 3000, size=(23, 18, 13)).astype(np.int16)
    hu[:, :4] = -1024  # air outside the field of view, clamped to 0 before averaging
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 1.0, 0.45])  # factors 2, 2, 4 for 2 mm voxels
    affine[:3, 3] = [10.0, -20.0, 5.0]
    mu, pooled_affine = attenuation_volume(hu, affine, 60.0, 0.5, 2.0, slab_voxels=slab_voxels)
    f = np.array([2, 2, 4])
    voxel_mu = reference_mu(hu, 60.0, 0.5)
    expected = np.zeros([-(-n // k) for n, k in zip(hu.shape, f)])
    for b in np.ndindex(*expected.shape):  # mean over each window's voxels (partial windows at the far ends)
        expected[b] = voxel_mu[tuple(slice(i * k, (i + 1) * k) for i, k in zip(b, f))].mean()
    assert mu.shape == expected.shape and mu.dtype == torch.float32
    np.testing.assert_allclose(mu.numpy(), expected, rtol=1e-5, atol=1e-5 * expected.max())
    scale = np.eye(4)
    scale[:3, :3], scale[:3, 3] = np.diag(f), (f - 1) / 2.0
    np.testing.assert_allclose(pooled_affine, affine @ scale)  # window centre of voxel (0, 0, 0)
    ref_mu, ref_affine = coarsen(hu_to_mu(torch.as_tensor(hu, dtype=torch.float32), 60.0, 0.5), affine, 2.0)
    np.testing.assert_allclose(mu.numpy(), ref_mu.numpy(), rtol=1e-5, atol=1e-6 * float(ref_mu.max()))
    np.testing.assert_array_equal(pooled_affine, ref_affine)


@pytest.mark.parametrize(
    "rotation_deg, step_mm",
    [([4, 9, -6], 0.5), ([4, 9, -6], 0.25), ([0, 80, 0], 0.5)],  # AP rays (dominant j axis), subdivided planes, near-lateral rays (dominant i)
)
def test_drr_of_uniform_sphere_matches_chord_times_attenuation(rotation_deg, step_mm):
    hu, affine = sphere_volume()
    g = Geometry(1100.0, (1.5, 1.5), (40, 36)).with_pose(standard_ap_pose([0, 0, 0], 950.0, rotation_deg, [2.0, -1.0, 15.0]))
    drr = render_drr(hu, affine, g, energy_kev=60.0, step_mm=step_mm).numpy().ravel()
    o, d = g.world_rays(dtype=torch.float64)
    o, d = o.numpy(), d.numpy().reshape(-1, 3)
    b = d @ o
    disc = b * b - (o @ o - R * R)
    chord = 2 * np.sqrt(np.clip(disc, 0, None))
    expected = chord * 2 * mu_water_per_mm(60.0)  # HU 1000 -> twice water
    central = chord > R  # away from the silhouette, where binary voxelisation dominates
    rel = np.abs(drr[central] / expected[central] - 1)
    assert central.sum() > 100
    assert np.median(rel) < 0.01
    assert abs(drr[central].sum() / expected[central].sum() - 1) < 0.01
    assert np.all(drr[disc < -25.0] < 1e-3)  # rays missing the sphere by a margin see only air


def test_style_defaults_are_a_monotone_normalisation_and_options_act():
    line = torch.linspace(0, 4, 64).reshape(8, 8)
    plain, drawn = style_radiograph(line)
    assert plain.min() >= 0 and plain.max() <= 1
    assert torch.all(plain.flatten().diff() >= 0)  # bone (larger integral) brighter
    gen = torch.Generator().manual_seed(0)
    noisy, drawn = style_radiograph(line, {"photons": 1000.0, "gamma": [0.5, 2.0]}, gen)
    assert 0.5 <= drawn["gamma"] <= 2.0
    assert not torch.allclose(noisy, plain)
    with pytest.raises(ValueError):
        style_radiograph(line, {"not_an_option": 1})
