"""DRR line integrals against analytic chord lengths; HU -> water/bone material decomposition."""

import numpy as np
import pytest
import torch
from scripts.data.drr import MM_TO_CM, hu_to_densities, line_integrals, material_volumes
from scripts.data.xray_physics import mass_attenuation
from scripts.geometry import Geometry, standard_ap_pose
from tests.helpers import ellipsoid_depths

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


def test_water_attenuation_matches_nist_table():
    assert float(mass_attenuation("water", 60.0)) == pytest.approx(0.2059, rel=1e-6)  # NIST XCOM water, 60 keV (cm^2/g)
    assert float(mass_attenuation("water", 80.0)) == pytest.approx(0.1837, rel=1e-6)
    assert (
        mass_attenuation("water", 80.0) < mass_attenuation("water", 70.0) < mass_attenuation("water", 60.0)
    )  # log-log between rows


def reference_densities(hu, ct_kev=70.0):
    """The documented decomposition in float64, written piecewise: (water, bone) g/cm^3."""
    hu = np.asarray(hu, dtype=np.float64)
    mw, mb = mass_attenuation("water", ct_kev), mass_attenuation("bone", ct_kev)
    f = np.where(hu > 0, hu / 1000.0 * mw / (1.92 * mb - mw), 0.0)
    water = np.where(hu > 0, np.maximum(0.0, 1.0 - f), np.maximum(0.0, 1.0 + hu / 1000.0))
    return np.stack([water, 1.92 * f])


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_densities_equal_piecewise_definition_and_reproduce_the_hu(dtype):
    hu = np.concatenate([np.arange(-3024, 3072), [-1000.5, -999.5, -0.25, 0.25]]).astype(dtype)
    dens = hu_to_densities(torch.as_tensor(hu), 70.0).double().numpy()
    ref = reference_densities(hu)
    np.testing.assert_allclose(dens, ref, rtol=1e-5, atol=1e-6)
    # at the CT's energy the mixture attenuates as its HU say, up to pure cortical bone
    mw, mb = mass_attenuation("water", 70.0), mass_attenuation("bone", 70.0)
    mu = dens[0] * mw + dens[1] * mb
    hu_cortical = 1000.0 * (1.92 * mb - mw) / mw
    ok = (hu >= -1000) & (hu <= hu_cortical)
    np.testing.assert_allclose(mu[ok], mw * (1.0 + hu[ok] / 1000.0), rtol=1e-5, atol=1e-7)
    assert 1400 < hu_cortical < 1800  # cortical bone's HU at about 70 keV
    assert np.all(dens[:, hu <= -1000] == 0)  # air and below: nothing


@pytest.mark.parametrize("slab_voxels", [500, 1 << 22])  # many slabs (last one thinner than a window) / one slab
def test_pooled_densities_equal_voxelwise_densities_then_average(slab_voxels):
    rng = np.random.default_rng(1)
    hu = rng.integers(-3024, 3000, size=(23, 18, 13)).astype(np.int16)
    hu[:, :4] = -1024  # air outside the field of view
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 1.0, 0.45])  # factors 2, 2, 4 for 2 mm voxels
    affine[:3, 3] = [10.0, -20.0, 5.0]
    dens, pooled_affine = material_volumes(hu, affine, 70.0, 2.0, slab_voxels=slab_voxels)
    f = np.array([2, 2, 4])
    voxel = reference_densities(hu)
    expected = np.zeros([2] + [-(-n // k) for n, k in zip(hu.shape, f, strict=True)])
    for b in np.ndindex(*expected.shape[1:]):  # mean over each window's voxels (partial windows at the far ends)
        expected[(slice(None),) + b] = voxel[
            (slice(None),) + tuple(slice(i * k, (i + 1) * k) for i, k in zip(b, f, strict=True))
        ].mean(axis=(1, 2, 3))
    assert dens.shape == expected.shape and dens.dtype == torch.float32
    np.testing.assert_allclose(dens.numpy(), expected, rtol=1e-5, atol=1e-5 * expected.max())
    scale = np.eye(4)
    scale[:3, :3], scale[:3, 3] = np.diag(f), (f - 1) / 2.0
    np.testing.assert_allclose(pooled_affine, affine @ scale)  # window centre of voxel (0, 0, 0)


@pytest.mark.parametrize(
    "rotation_deg, step_mm",
    [
        ([4, 9, -6], 0.5),
        ([4, 9, -6], 0.25),
        ([0, 80, 0], 0.5),
    ],  # AP rays (dominant j axis), subdivided planes, near-lateral rays (dominant i)
)
def test_drr_of_uniform_sphere_matches_chord_times_densities(rotation_deg, step_mm):
    hu, affine = sphere_volume()
    g = Geometry(1100.0, (1.5, 1.5), (40, 36)).with_pose(
        standard_ap_pose([0, 0, 0], 950.0, rotation_deg, [2.0, -1.0, 15.0])
    )
    mu, mu_affine = material_volumes(
        hu, affine, ct_kev=70.0, min_voxel_mm=0.5
    )  # the simulator's path, unpooled at 0.5 mm
    drr = (line_integrals(mu, mu_affine, g, step_mm) * MM_TO_CM).numpy().reshape(2, -1)
    front, back, _ = ellipsoid_depths(g, (0.0, 0.0, 0.0), (R, R, R), world=True)
    chord_cm = (back - front).ravel() / 10.0
    clear = ~ellipsoid_depths(g, (0.0, 0.0, 0.0), (np.hypot(R, 5.0),) * 3, world=True)[
        2
    ].ravel()  # missing the sphere by a margin
    central = chord_cm * 10.0 > R  # away from the silhouette, where binary voxelisation dominates
    assert central.sum() > 100
    for channel, density in enumerate(reference_densities([1000.0])[:, 0]):  # HU 1000: a water/bone mixture
        expected = chord_cm * density
        rel = np.abs(drr[channel, central] / expected[central] - 1)
        assert np.median(rel) < 0.01
        assert abs(drr[channel, central].sum() / expected[central].sum() - 1) < 0.01
        assert np.all(drr[channel, clear] < 1e-4)  # rays missing the sphere by a margin see only air
