"""Dual-face depth maps and masks by ray casting against each bone's sub-voxel surface.

The surface of bone ``b`` is the 0.5 isosurface of its trilinearly interpolated occupancy
(``labels == b`` as 0/1). Each pixel ray is marched only through the bone's bounding box at
``step_voxels`` of the smallest voxel size; the first and last samples at or above 0.5 bracket
the entry (front face) and exit (back face) crossings, which bisection plus a final linear
interpolation refine to well under a voxel. Depth is the distance (mm) from the X-ray source along
the ray (DESIGN.md); ``mask`` is 1 where the ray meets the bone; depth is 0 outside the mask.
"""

from __future__ import annotations

import numpy as np
import torch

from scripts.drr import box_entry_exit, march, rays_in_voxels
from scripts.geometry import Geometry
from scripts.volumes import BONE_LABELS


def _crossing(occ: torch.Tensor, source: torch.Tensor, dirs: torch.Tensor, a: torch.Tensor, b: torch.Tensor, iters: int) -> torch.Tensor:
    """Distance (mm) of the 0.5 crossing of ``occ`` on each ray, bracketed by ``a`` (below) and ``b`` (at/above)."""
    for _ in range(iters):
        m = 0.5 * (a + b)
        above = march(occ, source, dirs, m[:, None])[:, 0] >= 0.5
        a, b = torch.where(above, a, m), torch.where(above, m, b)
    fa = march(occ, source, dirs, a[:, None])[:, 0]
    fb = march(occ, source, dirs, b[:, None])[:, 0]
    w = ((0.5 - fa) / (fb - fa).clamp(min=1e-6)).clamp(0.0, 1.0)
    return a + w * (b - a)


def bone_depth(
    occupancy: torch.Tensor,
    source: torch.Tensor,
    dirs: torch.Tensor,
    step: float,
    bisection_iters: int = 6,
    max_samples_per_chunk: int = 4_000_000,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Front/back depth (R,) and hit flag (R,) of rays (voxel-index ``source``, ``dirs`` per mm) against one occupancy crop.

    The crop must hold at least one voxel of zero padding on every side.
    """
    device = occupancy.device
    n_rays = dirs.shape[0]
    front = torch.zeros(n_rays, dtype=occupancy.dtype, device=device)
    back = torch.zeros_like(front)
    hit = torch.zeros(n_rays, dtype=torch.bool, device=device)
    shape = torch.as_tensor(occupancy.shape, dtype=torch.float64, device=device)
    near, far = box_entry_exit(source, dirs, torch.zeros_like(shape), shape - 1.0)
    cand = torch.nonzero(far > near).flatten()
    if cand.numel() == 0:
        return front, back, hit
    n = int(np.ceil(float((far[cand] - near[cand]).max()) / step)) + 1
    ks = torch.arange(n, device=device, dtype=occupancy.dtype) * step
    chunk = max(1, max_samples_per_chunk // n)
    for start in range(0, cand.numel(), chunk):
        idx = cand[start : start + chunk]
        t = near[idx].to(occupancy.dtype)[:, None] + ks
        above = march(occupancy, source, dirs[idx], t) >= 0.5
        met = above.any(-1)
        idx, t, above = idx[met], t[met], above[met]
        if idx.numel() == 0:
            continue
        rows = torch.arange(idx.numel(), device=device)
        k_first = above.to(torch.uint8).argmax(-1)
        k_last = n - 1 - above.flip(-1).to(torch.uint8).argmax(-1)
        d = dirs[idx]
        front[idx] = _crossing(occupancy, source, d, t[rows, (k_first - 1).clamp(min=0)], t[rows, k_first], bisection_iters)
        back[idx] = _crossing(occupancy, source, d, t[rows, (k_last + 1).clamp(max=n - 1)], t[rows, k_last], bisection_iters)
        hit[idx] = True
    return front, back, hit


def depth_maps(
    labels: np.ndarray,
    affine: np.ndarray,
    geometry: Geometry,
    bones: tuple[str, ...] | None = None,
    step_voxels: float = 0.5,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dual-face depth (2B, H, W) in mm and masks (B, H, W) uint8 of the bone labels seen with ``geometry``.

    ``labels`` (I, J, K) holds bone label ids (``scripts.volumes.BONE_LABELS``) on the voxel grid of
    ``affine`` (voxel -> RAS mm). Channel order is bone-major [b0 front, b0 back, b1 front, ...].
    An absent bone, or one outside the field of view, gives an empty mask and zero depth.
    """
    bones = tuple(bones or geometry.bones)
    h, w = geometry.height, geometry.width
    depth = torch.zeros(2 * len(bones), h * w, dtype=torch.float32, device=device)
    mask = torch.zeros(len(bones), h * w, dtype=torch.uint8, device=device)
    source, dirs = rays_in_voxels(geometry, affine, device)
    step = step_voxels * float(np.linalg.norm(np.asarray(affine)[:3, :3], axis=0).min())
    for b, bone in enumerate(bones):
        sel = labels == BONE_LABELS[bone]
        if not sel.any():
            continue
        idx = np.argwhere(sel)
        lo, hi = idx.min(0) - 1, idx.max(0) + 1
        crop = np.zeros(tuple(hi - lo + 1), np.float32)
        inner = tuple(slice(max(l, 0), min(u, s)) for l, u, s in zip(lo, hi + 1, labels.shape))
        dst = tuple(slice(sl.start - l, sl.stop - l) for sl, l in zip(inner, lo))
        crop[dst] = sel[inner]
        occ = torch.as_tensor(crop, device=device)
        origin = source - torch.as_tensor(lo, dtype=source.dtype, device=device)
        front, back, hit = bone_depth(occ, origin, dirs, step)
        depth[2 * b] = torch.where(hit, front, 0.0)
        depth[2 * b + 1] = torch.where(hit, back, 0.0)
        mask[b] = hit.to(torch.uint8)
    return depth.reshape(-1, h, w), mask.reshape(-1, h, w)
