"""X-ray physics of a radiograph: source spectrum, material attenuation, heel effect, scatter and grid, detector.

Units: energies keV, lengths mm, areal densities g/cm^2, mass attenuation coefficients cm^2/g.

- **Attenuation tables** (:data:`MASS_ATTENUATION`): total mass attenuation coefficients (with
  coherent scattering) of water, cortical bone (ICRU-44, 1.92 g/cm^3), aluminium, copper, titanium
  and lead from NIST XCOM / NIST Standard Reference Database 126 (Hubbell & Seltzer, "Tables of X-ray
  mass attenuation coefficients", tables 3 and 4), 20-150 keV, interpolated log-log (lead's K edge
  at 88.0 keV kept as a step).
- **Spectrum** (:func:`spectrum`): Kramers' law for the bremsstrahlung photon number per keV,
  ``n(E) ~ (kVp - E) / E``, hardened by the tube's aluminium (and optional copper) filtration,
  ``exp(-mu_Al(E) t_Al - mu_Cu(E) t_Cu)``, in bins of ``bin_kev`` from 20 keV to the kVp. An
  energy-integrating detector weights each photon by its energy: :func:`detector_weights`.
- **Transmission** (:func:`polychromatic_transmission`): ``P = sum_E w(E) exp(-sum_m mu_m(E) A_m) / sum_E w(E)``
  for areal densities ``A_m`` of each material along each ray.
- **Heel effect** (:func:`heel_factor`): anode self-attenuation, intensity ``exp(-k / sin(alpha + theta))``
  relative to the central ray (alpha: anode angle, theta: ray angle toward the cathode along the
  anode-cathode axis), so intensity falls monotonically toward the anode.
- **Scatter and grid** (:func:`scatter`, :func:`grid_transmission`): scatter source ``P * (-log P)``
  (what a ray loses by interaction, weighted by what leaves the patient) spread with a broad
  Gaussian kernel: a uniform slab of attenuation ``mu t`` gets a scatter-to-primary ratio
  ``spr_per_attenuation * mu t`` away from its edges. An anti-scatter grid passes a fraction of
  the primary and a (smaller) fraction of the scatter.
- **Detector** (:func:`detector_signal`): Gaussian MTF blur, quantum (Poisson) noise of the quanta a
  pixel collects, and electronic noise of the native detector pixels it aggregates.

Everything is torch and batched over pixels; it runs where its inputs are (CPU or CUDA), except the
Poisson draw, which runs on the CPU with the caller's generator so results are seeded identically
on every device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# NIST XCOM / SRD 126 total mass attenuation coefficients (cm^2/g, with coherent scattering).
_KEV = (20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0)
MASS_ATTENUATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "water": (_KEV, (0.8096, 0.3756, 0.2683, 0.2269, 0.2059, 0.1837, 0.1707, 0.1505)),
    "bone": (_KEV, (4.001, 1.331, 0.6655, 0.4242, 0.3148, 0.2229, 0.1855, 0.1480)),  # Bone, Cortical (ICRU-44)
    "aluminium": (_KEV, (3.441, 1.128, 0.5685, 0.3681, 0.2778, 0.2018, 0.1704, 0.1378)),
    "copper": (_KEV, (33.79, 10.92, 4.862, 2.613, 1.593, 0.7630, 0.4584, 0.2217)),
    "titanium": (_KEV, (15.85, 4.972, 2.214, 1.213, 0.7661, 0.4052, 0.2721, 0.1649)),
    "lead": (
        (20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 88.0045 - 1e-6, 88.0045, 100.0, 150.0),
        (86.36, 30.32, 14.36, 8.041, 5.021, 2.419, 1.910, 7.683, 5.549, 2.014),
    ),
}
DENSITY_G_CM3 = {
    "water": 1.0,
    "bone": 1.92,
    "aluminium": 2.699,
    "copper": 8.96,
    "titanium": 4.506,
    "lead": 11.35,
    "cocr": 8.3,
    "steel": 7.9,
}
# Materials of the per-pixel areal-density stack (M, H, W) that the image chain attenuates with.
# CoCr (implant heads) and stainless steel (fracture fixation) are approximated by copper's coefficients at their densities.
MATERIALS = ("water", "bone", "titanium", "copper", "lead")
MIN_KEV = 20.0


def mass_attenuation(material: str, energies_kev: np.ndarray | float) -> np.ndarray:
    """Mass attenuation coefficient (cm^2/g) of a tabulated material at ``energies_kev`` (20..150 keV; log-log interpolation)."""
    kev, mu = MASS_ATTENUATION[material]
    e = np.asarray(energies_kev, dtype=np.float64)
    if np.any(e < kev[0]) or np.any(e > kev[-1]):
        raise ValueError(f"energies must lie in {kev[0]:g}..{kev[-1]:g} keV, got {e.min():g}..{e.max():g}")
    return np.exp(np.interp(np.log(e), np.log(kev), np.log(mu)))


def spectrum(
    kvp: float, filtration_al_mm: float = 2.5, filtration_cu_mm: float = 0.0, bin_kev: float = 5.0
) -> tuple[np.ndarray, np.ndarray]:
    """Bin-centre energies (keV) and relative photon numbers of a filtered Kramers spectrum (sum 1).

    Bins of ``bin_kev`` from 20 keV up to ``kvp`` (the last bin may be narrower); photon number per
    bin ``(kVp - E) / E * width``, times the filter transmission ``exp(-mu_Al t_Al - mu_Cu t_Cu)``.
    """
    if not 30.0 <= kvp <= 150.0:
        raise ValueError(f"kVp must lie in 30..150, got {kvp}")
    edges = np.append(np.arange(MIN_KEV, kvp, bin_kev), kvp)
    e = 0.5 * (edges[:-1] + edges[1:])
    n = (kvp - e) / e * np.diff(edges)
    n = n * np.exp(
        -0.1
        * (
            mass_attenuation("aluminium", e) * DENSITY_G_CM3["aluminium"] * filtration_al_mm
            + mass_attenuation("copper", e) * DENSITY_G_CM3["copper"] * filtration_cu_mm
        )
    )
    return e, n / n.sum()


def detector_weights(energies_kev: np.ndarray, photons: np.ndarray) -> np.ndarray:
    """Signal weight of each bin for an energy-integrating detector: photons times energy, sum 1."""
    w = np.asarray(photons) * np.asarray(energies_kev)
    return w / w.sum()


def attenuation_matrix(energies_kev: np.ndarray, materials: tuple[str, ...] = MATERIALS) -> np.ndarray:
    """(E, M) mass attenuation coefficients (cm^2/g) of ``materials`` at the bin energies."""
    return np.stack([mass_attenuation(m, energies_kev) for m in materials], axis=1)


def polychromatic_transmission(
    areal_density: torch.Tensor, energies_kev: np.ndarray, weights: np.ndarray
) -> torch.Tensor:
    """Detected fraction (H, W) of the unattenuated signal behind areal densities (M, H, W) g/cm^2 of the first M :data:`MATERIALS`.

    ``sum_E w(E) exp(-sum_m mu_m(E) A_m)`` with weights ``w`` summing to 1 (:func:`detector_weights`).
    """
    materials = MATERIALS[: areal_density.shape[0]]
    mu = torch.as_tensor(
        attenuation_matrix(energies_kev, materials), dtype=areal_density.dtype, device=areal_density.device
    )
    w = torch.as_tensor(weights, dtype=areal_density.dtype, device=areal_density.device)
    m = areal_density.shape[0]
    line = mu @ areal_density.reshape(m, -1)  # (E, H*W)
    return (w @ torch.exp(-line)).reshape(areal_density.shape[1:])


def heel_factor(ray_angle_rad: torch.Tensor, anode_angle_deg: float, attenuation: float) -> torch.Tensor:
    """Relative intensity of the heel effect, 1 on the central ray.

    ``ray_angle_rad``: angle of each ray from the central ray along the anode-cathode axis, positive
    toward the cathode. Path in the target ``~ 1 / sin(alpha + theta)`` (alpha + theta kept >= 1 degree):
    ``exp(-attenuation * (1 / sin(alpha + theta) - 1 / sin(alpha)))``.
    """
    alpha = math.radians(anode_angle_deg)
    take_off = torch.clamp(alpha + ray_angle_rad, min=math.radians(1.0))
    return torch.exp(-attenuation * (1.0 / torch.sin(take_off) - 1.0 / math.sin(alpha)))


def gaussian_blur(image: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of (..., H, W) with ``sigma_px`` pixels (kernel truncated at 3 sigma or the image size;
    edges replicated)."""
    if sigma_px <= 0:
        return image
    shape = image.shape
    radius = max(1, min(int(math.ceil(3.0 * sigma_px)), min(shape[-2:]) - 1))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    k = torch.exp(-0.5 * (x / sigma_px) ** 2)
    k = k / k.sum()
    out = F.pad(image.reshape(-1, 1, *shape[-2:]), (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(F.conv2d(out, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    return out.reshape(shape)


def scatter(
    primary: torch.Tensor, exposed: torch.Tensor, spr_per_attenuation: float, sigma_px: float, downsample: int = 4
) -> torch.Tensor:
    """Scatter (H, W) reaching the detector, in units of the unattenuated primary.

    Source ``exposed * P * (-log P)`` (only irradiated pixels scatter), spread by a normalised Gaussian
    of ``sigma_px`` pixels (computed on a ``downsample``-times coarser grid, zero beyond the field),
    times ``spr_per_attenuation``.
    """
    source = exposed * primary * (-torch.log(primary.clamp(min=1e-12)))
    f = max(1, int(downsample)) if min(primary.shape[-2:]) >= 4 * downsample else 1
    coarse = F.avg_pool2d(source[None, None], f) if f > 1 else source[None, None]
    r = int(math.ceil(3.0 * sigma_px / f))
    blurred = gaussian_blur(F.pad(coarse, (r, r, r, r)), sigma_px / f)[
        ..., r : r + coarse.shape[-2], r : r + coarse.shape[-1]
    ]
    if f > 1:
        blurred = F.interpolate(blurred, size=primary.shape[-2:], mode="bilinear", align_corners=False)
    return spr_per_attenuation * blurred[0, 0]


def grid_transmission(use_grid: bool, primary_fraction: float, scatter_fraction: float) -> tuple[float, float]:
    """(primary, scatter) transmission of the anti-scatter grid; (1, 1) without a grid."""
    return (float(primary_fraction), float(scatter_fraction)) if use_grid else (1.0, 1.0)


def detector_signal(
    intensity: torch.Tensor,
    quanta_per_pixel: float,
    blur_px: float,
    electronic_noise: float,
    native_pixels: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Detected signal (H, W), in units of the unattenuated intensity, of an ``intensity`` image (H, W).

    Gaussian MTF of ``blur_px`` pixels, then Poisson noise of ``quanta_per_pixel * intensity`` quanta
    (0: no quantum noise) and Gaussian electronic noise of ``electronic_noise`` quanta (std) in each
    of the ``native_pixels`` detector pixels a pixel aggregates. Clamped to >= 0.5 quanta.
    """
    signal = gaussian_blur(intensity, blur_px)
    if quanta_per_pixel <= 0:
        return signal
    lam = (signal * quanta_per_pixel).double().cpu()
    counts = torch.poisson(lam, generator=generator)
    if electronic_noise > 0:
        counts = counts + torch.randn(lam.shape, generator=generator, dtype=lam.dtype) * (
            electronic_noise * math.sqrt(native_pixels)
        )
    return (counts.clamp(min=0.5) / quanta_per_pixel).to(device=intensity.device, dtype=intensity.dtype)
