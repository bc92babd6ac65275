"""Triangle rasterisation shared by the data engine (the phantoms' label volumes) and io (mesh renderings)."""

from __future__ import annotations

import numpy as np


def rasterise_triangles(
    xy: np.ndarray, depth: np.ndarray, shape: tuple[int, int], max_candidates: int = 65_536
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (pixel, triangle) pair of 2D triangles whose pixel centre lies inside the triangle.

    ``xy`` (T, 3, 2): triangle corners in pixel units (x along columns, y along rows), pixel (x, y)
    centred at integer (x, y); ``depth`` (T, 3): a value per corner (any unit), interpolated linearly;
    ``shape``: (rows, columns) of the picture. Returns the flat pixel index ``y * columns + x``, the
    interpolated depth and the triangle's index into ``xy`` of each pair. Exact fill rule (top-left with
    y growing up): a centre on a triangle's edge counts only on a right edge or on a horizontal edge at the
    triangle's largest y, so one on an edge shared by two triangles counts once (the parity of
    ``scripts.data.phantom.voxelize`` needs that); triangles of zero area cover nothing. Candidates (the
    pixels of each triangle's bounding box) are evaluated in chunks of about ``max_candidates``, bounding memory.
    """
    xy, depth = np.asarray(xy, dtype=np.float64), np.asarray(depth, dtype=np.float64)
    a, b, c = xy[:, 0], xy[:, 1], xy[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    lo = np.clip(np.ceil(xy.min(1)), 0, None).astype(np.int64)
    hi = np.minimum(np.floor(xy.max(1)), np.array([shape[1], shape[0]]) - 1).astype(np.int64)
    nx, ny = np.maximum(hi[:, 0] - lo[:, 0] + 1, 0), np.maximum(hi[:, 1] - lo[:, 1] + 1, 0)
    keep = np.flatnonzero((area != 0) & (nx * ny > 0))  # triangles with area and a pixel centre in their bounding box
    xy, depth, area, lo, nx, counts = xy[keep], depth[keep], area[keep], lo[keep], nx[keep], nx[keep] * ny[keep]
    flip = area < 0  # make every triangle counter-clockwise
    xy[flip], depth[flip] = xy[flip][:, [0, 2, 1]], depth[flip][:, [0, 2, 1]]
    area = np.abs(area)
    # per triangle, repeated for each candidate: bounding box, each edge's start and direction and
    # whether it owns the centres on it (top-left rule)
    columns = [lo[:, 0], lo[:, 1], nx]
    for i, j in ((0, 1), (1, 2), (2, 0)):
        dx, dy = xy[:, j, 0] - xy[:, i, 0], xy[:, j, 1] - xy[:, i, 1]
        columns += [xy[:, i, 0], xy[:, i, 1], dx, dy, (dy > 0) | ((dy == 0) & (dx < 0))]
    ends = np.cumsum(counts)
    out: list[tuple[np.ndarray, ...]] = [(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64))]
    start = 0
    while start < len(counts):  # chunks of at most max_candidates candidates (at least one triangle)
        before = int(ends[start - 1]) if start else 0
        stop = max(int(np.searchsorted(ends, before + max_candidates, side="right")), start + 1)
        n = counts[start:stop]
        x0, y0, w, *k = (np.repeat(c[start:stop], n) for c in columns)
        row, col = np.divmod(np.arange(int(ends[stop - 1]) - before) - np.repeat(ends[start:stop] - n - before, n), w)
        px, py = (x0 + col).astype(np.float64), (y0 + row).astype(np.float64)
        e, hit = [], np.ones(len(px), dtype=bool)
        for j in range(0, 15, 5):
            e.append(k[j + 2] * (py - k[j + 1]) - k[j + 3] * (px - k[j]))
            hit &= (e[-1] > 0) | ((e[-1] == 0) & k[j + 4])
        e_ab, e_bc, e_ca = (x[hit] for x in e)
        t = np.repeat(np.arange(start, stop), n)[hit]
        z = (e_bc * depth[t, 0] + e_ca * depth[t, 1] + e_ab * depth[t, 2]) / area[t]
        out.append(((y0 + row)[hit] * shape[1] + (x0 + col)[hit], z, keep[t]))
        start = stop
    return tuple(np.concatenate(parts) for parts in zip(*out, strict=True))  # type: ignore[return-value]
