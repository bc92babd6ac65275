"""Realism options that turn DRR line integrals into processed-radiograph-like images (bone bright).

Pipeline on a line-integral image ``L`` (H, W), each step off when its parameter is 0:

1. transmission ``T = exp(-L)``;
2. scatter-like haze: ``T + scatter_fraction * blur(T, scatter_sigma_px)`` (low-frequency veil);
3. detector PSF: Gaussian blur with ``blur_sigma_px`` pixels;
4. quantum noise: Poisson counts with ``photons`` expected quanta per unexposed pixel;
5. log: ``L' = -log(T)``, normalised by its ``norm_percentile`` percentile, clipped to [0, 1];
6. display contrast: ``image = L'^gamma``.

Every option may be a number or a ``[low, high]`` range drawn uniformly per image with the given
generator, so a data set covers a spread of real processing chains.
"""

from __future__ import annotations

from typing import Mapping, Sequence, Union

import torch
from monai.networks.layers import GaussianFilter

Option = Union[float, Sequence[float]]

DEFAULT_STYLE: dict[str, Option] = {
    "scatter_fraction": 0.0,
    "scatter_sigma_px": 24.0,
    "blur_sigma_px": 0.0,
    "photons": 0.0,
    "gamma": 1.0,
    "norm_percentile": 99.5,
}


def draw(value: Option, generator: torch.Generator | None = None) -> float:
    """A number as is, or a uniform draw from a ``[low, high]`` range."""
    if isinstance(value, (int, float)):
        return float(value)
    low, high = (float(v) for v in value)
    return low + (high - low) * float(torch.rand((), generator=generator))


def _blur(image: torch.Tensor, sigma_px: float) -> torch.Tensor:
    return GaussianFilter(2, sigma_px).to(image.device)(image[None, None])[0, 0]


def style_radiograph(line_integral: torch.Tensor, options: Mapping[str, Option] | None = None, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Radiograph-like image (H, W) float32 in [0, 1], bone bright, and the option values drawn.

    ``generator`` (CPU) seeds the option draws and the noise.
    """
    opts = {**DEFAULT_STYLE, **(options or {})}
    unknown = set(opts) - set(DEFAULT_STYLE)
    if unknown:
        raise ValueError(f"unknown radiograph style option(s) {sorted(unknown)}")
    p = {k: draw(v, generator) for k, v in opts.items()}
    t = torch.exp(-line_integral.float())
    if p["scatter_fraction"] > 0:
        t = t + p["scatter_fraction"] * _blur(t, p["scatter_sigma_px"])
    if p["blur_sigma_px"] > 0:
        t = _blur(t, p["blur_sigma_px"])
    if p["photons"] > 0:
        lam = (t * p["photons"]).cpu()
        t = (torch.poisson(lam, generator=generator).to(t.device) / p["photons"]).clamp(min=0.5 / p["photons"])
    log_t = -torch.log(t.clamp(min=1e-12))
    log_t = log_t - log_t.min()
    ref = torch.quantile(log_t.flatten(), p["norm_percentile"] / 100.0).clamp(min=1e-6)
    image = (log_t / ref).clamp(0.0, 1.0) ** p["gamma"]
    return image.float(), p
