"""Vendor image processing of a detected radiograph: log, exposure recognition, multi-scale contrast
equalisation, look-up curve and window, storage as MONOCHROME1/2.

Input: the detected signal ``D`` (H, W) in units of the unattenuated intensity and the exposed
(collimated) area. Output: a display image (H, W) in [0, 1], bone bright, as the bundle's readers
deliver every radiograph (``scripts.radiograph_io``).

1. log: ``L = -log D``;
2. exposure recognition: the ``window_low_percentile`` .. ``window_high_percentile`` percentiles
   of ``L`` over the patient (exposed pixels with ``L`` > 0.5, i.e. less than 61% transmitted; all
   exposed pixels if the patient covers less than 5% of them) map to 0 .. 1, as vendors' histogram
   analysis finds the values of interest inside the collimation and lets direct exposure saturate;
3. multi-scale contrast equalisation (MUSICA-like; unsharp masking is its one-level case): ``x``
   is split into Gaussian difference bands at 1, 2, 4, 8, 16 pixels and a coarse residual; the
   bands from 2 pixels up are amplified nonlinearly, ``detail_gain * sign(b) a (|b| / a)^power``
   with ``a = 0.1`` (power < 1 lifts faint detail more than strong edges), the finest band (mostly
   noise) is kept as it is, and the residual is scaled by
   ``base_gain`` about its exposed mean (< 1 flattens the large-scale latitude: soft tissue and
   bone both visible);
4. look-up curve: a sigmoid of ``lut_contrast`` (0: linear) through (0, 0) and (1, 1), then
   ``gamma``, clipped to [0, 1];
5. storage: quantised to ``bits_stored`` and written as MONOCHROME2 or MONOCHROME1 (inverted), then
   read back with the same function the DICOM reader uses (:func:`scripts.io.radiograph_io.bone_bright`).
"""

from __future__ import annotations

import numpy as np
import torch
from scripts.data.xray_physics import gaussian_blur
from scripts.io.radiograph_io import bone_bright

BAND_SIGMAS_PX = (1.0, 2.0, 4.0, 8.0, 16.0)
BAND_AMPLITUDE = 0.1


def masked_quantile(x: torch.Tensor, mask: torch.Tensor, q: float) -> torch.Tensor:
    """``q``-quantile (0..1) of ``x`` over ``mask`` (all of ``x`` when the mask is empty)."""
    values = x[mask > 0.5] if bool((mask > 0.5).any()) else x.flatten()
    return torch.quantile(values.float(), float(q))


PATIENT_LOG = 0.5


def exposure_normalise(
    log_signal: torch.Tensor, exposed: torch.Tensor, low_percentile: float, high_percentile: float
) -> torch.Tensor:
    """``log_signal`` with the patient's percentiles ``low_percentile`` -> 0 and ``high_percentile`` -> 1 (not clipped;
    module docstring, step 2)."""
    patient = (exposed > 0.5) & (log_signal > PATIENT_LOG)
    region = patient if int(patient.sum()) >= 0.05 * int((exposed > 0.5).sum()) else exposed
    lo = masked_quantile(log_signal, region, low_percentile / 100.0)
    hi = masked_quantile(log_signal, region, high_percentile / 100.0)
    return (log_signal - lo) / (hi - lo).clamp(min=1e-6)


def multiscale_equalise(
    x: torch.Tensor, exposed: torch.Tensor, base_gain: float, detail_gain: float, power: float
) -> torch.Tensor:
    """Multi-scale contrast equalisation of ``x`` (H, W) (module docstring, step 3); identity for gains 1 and power 1."""
    bands, previous = [], x
    for sigma in BAND_SIGMAS_PX:
        smooth = gaussian_blur(x, sigma)
        bands.append(previous - smooth)
        previous = smooth
    residual = previous
    mean = residual[exposed > 0.5].mean() if bool((exposed > 0.5).any()) else residual.mean()
    out = mean + base_gain * (residual - mean)
    out = out + bands[0]
    for b in bands[1:]:
        out = out + detail_gain * torch.sign(b) * BAND_AMPLITUDE * (b.abs() / BAND_AMPLITUDE) ** power
    return out


def look_up(x: torch.Tensor, lut_contrast: float, gamma: float) -> torch.Tensor:
    """Display curve of ``x`` (clipped to [0, 1]): sigmoid of slope ``lut_contrast`` through (0, 0) and (1, 1), then ``gamma``."""
    x = x.clamp(0.0, 1.0)
    if lut_contrast > 1e-3:
        s = lambda t: torch.sigmoid(lut_contrast * (t - 0.5))  # noqa: E731
        lo, hi = s(torch.zeros(())), s(torch.ones(()))
        x = ((s(x) - lo) / (hi - lo)).clamp(0.0, 1.0)
    return x**gamma


def store_and_read(image: torch.Tensor, bits_stored: int, monochrome1: bool) -> torch.Tensor:
    """``image`` in [0, 1] (bone bright) stored with ``bits_stored`` bits as MONOCHROME1 (inverted) or 2, read back to
    [0, 1] bone bright."""
    top = float(2 ** int(bits_stored) - 1)
    stored = torch.round(image.clamp(0.0, 1.0) * top)
    if monochrome1:
        stored = top - stored
    arr = bone_bright(stored.cpu().numpy().astype(np.float64), "MONOCHROME1" if monochrome1 else "MONOCHROME2")
    lo, hi = float(arr.min()), float(arr.max())
    return torch.as_tensor((arr - lo) / max(hi - lo, 1e-12), dtype=image.dtype, device=image.device)


def process(signal: torch.Tensor, exposed: torch.Tensor, p: dict) -> torch.Tensor:
    """Vendor chain (module docstring, steps 1-4) of a detected signal (H, W) with drawn options ``p``; display image in [0, 1]."""
    log_signal = -torch.log(signal.clamp(min=1e-6))
    x = exposure_normalise(log_signal, exposed, p["window_low_percentile"], p["window_high_percentile"])
    x = multiscale_equalise(x, exposed, p["base_gain"], p["detail_gain"], p["power"])
    return look_up(x, p["lut_contrast"], p["gamma"])
