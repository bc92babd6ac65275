"""Dual-face depth maps and masks by ray casting against each bone's sub-voxel surface.

The surface of bone ``b`` is the 0.5 isosurface of its trilinearly interpolated occupancy
(``labels == b`` as 0/1). Each pixel ray is sampled through the bone's bounding box every
``step_voxels`` of the smallest voxel size; the first and last samples at or above 0.5 bracket the
entry (front face) and exit (back face) crossings, which bisection plus a final linear
interpolation refine to well under a voxel. Depth is the distance (mm) from the X-ray source along
the ray (docs/architecture.md, "Data conventions"); ``mask`` is 1 where the ray meets the bone; depth is 0 outside the mask.

Coarse-to-fine search (same answer as sampling every step, far fewer samples): the fine samples
of a ray are taken in groups of ``m`` consecutive steps; a group is sampled on the full-resolution
trilinear field only if its centre falls in a *candidate block*. Blocks are ``block`` voxels wide;
a block is a candidate when it or a neighbouring block holds a cell (8 voxels) with any bone voxel.
The trilinear field can reach 0.5 only inside such a cell, and ``m`` is chosen so every sample of a
group lies within ``block`` voxels (per axis) of the group centre, so no sample at or above 0.5 is
ever skipped, however thin the structure. Groups are visited in ray order (front) or reverse order
(back) and a ray stops at its first group with a sample at or above 0.5. The per-bone crops and
candidate blocks depend only on the labels, so :class:`BoneGrid` s are built once per case and
reused for every pose. Front and back crossings are bisected together, and on CPU the search runs
on one intra-op thread (:func:`cpu_threads`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scripts.data.drr import box_entry_exit, grid_rays, march, rays_in_voxels
from scripts.data.volumes import BONE_LABELS
from scripts.geometry import Geometry, voxel_spacing

GROUPS_PER_PASS = 3  # candidate groups sampled per ray and pass of the fine search (fewer passes, same answer)
SEARCH_THREADS = 1  # CPU intra-op threads of the ray search (see cpu_threads)


@contextmanager
def cpu_threads(n: int, device: torch.device | str) -> Iterator[None]:
    """Run the block on ``n`` torch intra-op threads when ``device`` is a CPU (restored afterwards).

    The ray search is hundreds of small tensor operations per bone (tens of thousands of elements
    each); with several threads every one ends at a barrier, and on a busy machine each barrier
    waits for a descheduled thread (measured on the shared 2-core machine: 2 threads 8-20x slower
    than 1, docs/simulation.md). Changes process-wide torch state while it runs.
    """
    before = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class BoneGrid:
    """One bone's occupancy crop (float 0/1, >= 1 voxel of zero padding on every side), its candidate
    blocks (bool, ``block`` voxels each, see module docstring) and the label-volume voxel index of
    ``occupancy[0, 0, 0]``."""

    occupancy: torch.Tensor
    candidates: torch.Tensor
    offset: np.ndarray
    block: int


def candidate_blocks(occupancy: torch.Tensor, block: int) -> torch.Tensor:
    """Bool (ceil(I / block), ...) of blocks that are, or touch, a block with a cell holding occupancy > 0.

    Block ``B`` holds cells ``B * block .. B * block + block - 1`` per axis, i.e. voxels
    ``B * block .. B * block + block`` (a cell spans voxels i..i+1): one strided max over windows
    of ``block + 1`` voxels, zero-padded at the far end.
    """
    n_blocks = [-(-n // block) for n in occupancy.shape]
    pad = [
        p for n, nb in zip(reversed(occupancy.shape), reversed(n_blocks), strict=True) for p in (0, nb * block + 1 - n)
    ]
    blocks = F.max_pool3d(F.pad(occupancy[None, None], pad), block + 1, stride=block)
    return F.max_pool3d(blocks, 3, stride=1, padding=1)[0, 0] > 0


def bone_grids(
    labels: np.ndarray, bones: tuple[str, ...], block: int = 2, device: torch.device | str = "cpu"
) -> dict[str, BoneGrid | None]:
    """Per-bone :class:`BoneGrid` of a label volume (I, J, K) of ``BONE_LABELS`` ids (>= 0); ``None`` for absent bones."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        labels = labels.astype(np.int32)
    # bounding boxes searched only inside the box of all labels (two max projections: a few ms)
    jk, ij = labels.max(axis=0) > 0, labels.max(axis=2) > 0
    present = [np.flatnonzero(x) for x in (ij.any(1), jk.any(1), jk.any(0))]
    outer = tuple(slice(int(x[0]), int(x[-1]) + 1) for x in present) if present[0].size else None
    boxes = ndimage.find_objects(labels[outer], max_label=max(BONE_LABELS[b] for b in bones)) if outer else []
    grids: dict[str, BoneGrid | None] = {}
    for bone in bones:
        local = boxes[BONE_LABELS[bone] - 1] if boxes else None
        if local is None:
            grids[bone] = None
            continue
        box = tuple(slice(o.start + b.start, o.start + b.stop) for o, b in zip(outer, local, strict=True))
        crop = np.pad(labels[box] == BONE_LABELS[bone], 1).astype(np.float32)
        occ = torch.as_tensor(crop, device=device)
        grids[bone] = BoneGrid(occ, candidate_blocks(occ, block), np.array([s.start - 1 for s in box]), block)
    return grids


def _crossing(
    occ: torch.Tensor, origin: torch.Tensor, slope: torch.Tensor, a: torch.Tensor, b: torch.Tensor, iters: int
) -> torch.Tensor:
    """Distance (mm) of the 0.5 crossing of ``occ`` on each :func:`grid_rays` ray, bracketed by ``a`` (below) and ``b``
    (at/above)."""
    for _ in range(iters):
        m = 0.5 * (a + b)
        above = march(occ, origin, slope, m[:, None])[:, 0] >= 0.5
        a, b = torch.where(above, a, m), torch.where(above, m, b)
    fa, fb = march(occ, origin, slope, torch.stack([a, b], 1)).unbind(1)
    w = ((0.5 - fa) / (fb - fa).clamp(min=1e-6)).clamp(0.0, 1.0)
    return a + w * (b - a)


def _first_above(
    occ: torch.Tensor,
    origin: torch.Tensor,
    slope: torch.Tensor,
    near: torch.Tensor,
    step: float,
    order: torch.Tensor,
    m: int,
    n: int,
    reverse: bool,
) -> torch.Tensor:
    """Index (R,) of the first (``reverse``: last) fine sample ``near + j * step`` at or above 0.5 on each :func:`grid_rays` ray.

    ``order`` (R, G) lists each ray's candidate groups in visiting order, padded with -1; rays must
    have a sample at or above 0.5 in a listed group, or get -1.
    """
    found = torch.full((slope.shape[0],), -1, dtype=torch.long, device=slope.device)
    within = torch.arange(m, device=slope.device)
    if reverse:
        within = within.flip(0)
    todo = torch.arange(slope.shape[0], device=slope.device)
    for start in range(0, order.shape[1], GROUPS_PER_PASS):
        groups = order[todo, start : start + GROUPS_PER_PASS]
        keep = groups[:, 0] >= 0
        todo, groups = todo[keep], groups[keep]
        if todo.numel() == 0:
            break
        j = (groups[:, :, None] * m + within).reshape(todo.numel(), -1)  # (R', P * m) in visiting order
        valid = (groups[:, :, None] >= 0).expand(-1, -1, m).reshape(todo.numel(), -1) & (j < n)
        t = near[todo, None] + j.to(near.dtype) * step
        above = (march(occ, origin, slope[todo], t) >= 0.5) & valid
        met = above.any(-1)
        found[todo[met]] = j[met].gather(1, above[met].to(torch.uint8).argmax(-1, keepdim=True))[:, 0]
        todo = todo[~met]
    return found


def bone_depth(
    occupancy: torch.Tensor,
    source: torch.Tensor,
    dirs: torch.Tensor,
    step: float,
    bisection_iters: int = 6,
    max_samples_per_chunk: int = 4_000_000,
    candidates: torch.Tensor | None = None,
    block: int = 2,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Front/back depth (R,) and hit flag (R,) of rays (voxel-index ``source``, ``dirs`` per mm) against one occupancy crop.

    The crop must hold at least one voxel of zero padding on every side. ``step`` (mm) is the fine
    sampling step; ``candidates`` are :func:`candidate_blocks` of the crop (computed when ``None``).
    """
    device = occupancy.device
    n_rays = dirs.shape[0]
    front = torch.zeros(n_rays, dtype=occupancy.dtype, device=device)
    back = torch.zeros_like(front)
    hit = torch.zeros(n_rays, dtype=torch.bool, device=device)
    if candidates is None:
        candidates = candidate_blocks(occupancy, block)
    shape = torch.as_tensor(occupancy.shape, dtype=torch.float64, device=device)
    near, far = box_entry_exit(source, dirs, torch.zeros_like(shape), shape - 1.0)
    cand = torch.nonzero(far > near).flatten()
    if cand.numel() == 0:
        return front, back, hit
    origin, slope = grid_rays(source, dirs, tuple(occupancy.shape), occupancy.dtype)
    n = int(np.ceil(float((far[cand] - near[cand]).max()) / step)) + 1
    # group size m: every sample of a group within (block - margin) voxels per axis of the group centre
    reach = float(dirs[cand].abs().amax()) * step  # voxels per step along the fastest axis
    m = max(1, int((2.0 * block - 0.01) / reach) + 1) if reach > 0 else n
    n_groups = -(-n // m)
    centres = (torch.arange(n_groups, device=device, dtype=occupancy.dtype) * m + (m - 1) / 2.0) * step
    nb = torch.as_tensor(candidates.shape, device=device)
    flat = candidates.flatten()
    chunk = max(1, max_samples_per_chunk // max(n_groups, GROUPS_PER_PASS * m))
    for start in range(0, cand.numel(), chunk):
        idx = cand[start : start + chunk]
        d, t0 = dirs[idx], near[idx].to(occupancy.dtype)
        pts = torch.addcmul(
            source.to(occupancy.dtype) / block,
            (t0[:, None] + centres)[..., None],
            d.to(occupancy.dtype)[:, None, :] / block,
        )
        block_idx = torch.minimum(pts.long().clamp(min=0), nb - 1)  # (R, G, 3); truncation = floor for pts >= 0
        flagged = flat[(block_idx[..., 0] * nb[1] + block_idx[..., 1]) * nb[2] + block_idx[..., 2]]
        met = flagged.any(-1)
        idx, t0, flagged = idx[met], t0[met], flagged[met]
        if idx.numel() == 0:
            continue
        g = torch.arange(n_groups, device=device)
        ascending = torch.where(flagged, g, n_groups).sort(-1).values
        order_front = torch.where(ascending < n_groups, ascending, -1)
        descending = torch.where(flagged, g, -1).sort(-1, descending=True).values
        s = slope[idx]
        j_first = _first_above(occupancy, origin, s, t0, step, order_front, m, n, reverse=False)
        met = j_first >= 0
        idx, s, t0, j_first, descending = idx[met], s[met], t0[met], j_first[met], descending[met]
        if idx.numel() == 0:
            continue
        j_last = _first_above(occupancy, origin, s, t0, step, descending, m, n, reverse=True)
        # front and back crossings in one bisection: below / at-or-above brackets of both faces
        below = torch.cat([(j_first - 1).clamp(min=0), (j_last + 1).clamp(max=n - 1)])
        t = torch.cat([t0, t0])
        faces = _crossing(
            occupancy,
            origin,
            torch.cat([s, s]),
            t + below.to(t.dtype) * step,
            t + torch.cat([j_first, j_last]).to(t.dtype) * step,
            bisection_iters,
        )
        front[idx], back[idx] = faces.split(idx.numel())
        hit[idx] = True
    return front, back, hit


def depth_maps(
    labels: np.ndarray,
    affine: np.ndarray,
    geometry: Geometry,
    bones: tuple[str, ...] | None = None,
    step_voxels: float = 0.5,
    device: torch.device | str = "cpu",
    grids: dict[str, BoneGrid | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dual-face depth (2B, H, W) in mm and masks (B, H, W) uint8 of the bone labels seen with ``geometry``.

    ``labels`` (I, J, K) holds bone label ids (``scripts.data.volumes.BONE_LABELS``) on the voxel grid of
    ``affine`` (voxel -> RAS mm). Channel order is bone-major [b0 front, b0 back, b1 front, ...].
    An absent bone, or one outside the field of view, gives an empty mask and zero depth.
    ``grids``: :func:`bone_grids` of ``labels`` (built when ``None``; pass them to reuse across poses).
    """
    bones = tuple(bones or geometry.bones)
    if grids is None:
        grids = bone_grids(labels, bones, device=device)
    h, w = geometry.height, geometry.width
    depth = torch.zeros(2 * len(bones), h * w, dtype=torch.float32, device=device)
    mask = torch.zeros(len(bones), h * w, dtype=torch.uint8, device=device)
    source, dirs = rays_in_voxels(geometry, affine, device)
    step = step_voxels * float(voxel_spacing(affine).min())
    with cpu_threads(SEARCH_THREADS, device):
        for b, bone in enumerate(bones):
            grid = grids.get(bone)
            if grid is None:
                continue
            origin = source - torch.as_tensor(grid.offset, dtype=source.dtype, device=device)
            front, back, hit = bone_depth(
                grid.occupancy, origin, dirs, step, candidates=grid.candidates, block=grid.block
            )
            depth[2 * b] = torch.where(hit, front, 0.0)
            depth[2 * b + 1] = torch.where(hit, back, 0.0)
            mask[b] = hit.to(torch.uint8)
    return depth.reshape(-1, h, w), mask.reshape(-1, h, w)
