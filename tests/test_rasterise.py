"""The shared triangle rasteriser against hand-counted pixel centres: the top-left fill rule on shared and
outer edges, depth interpolation of a plane, clipping to the picture, chunking."""

from __future__ import annotations

import numpy as np
from scripts.rasterise import rasterise_triangles


def _pixels(result: tuple[np.ndarray, np.ndarray, np.ndarray], columns: int) -> list[tuple[int, int]]:
    """The (x, y) of every returned pair, sorted (repeats kept)."""
    y, x = np.divmod(result[0], columns)
    return sorted(zip(x.tolist(), y.tolist(), strict=True))


def test_square_of_two_triangles_counts_every_centre_once():
    """Square (1, 1)-(5, 5) split along either diagonal, corners in either order: the 4 x 4 centres of the
    half-open square 1 < x, y <= 5 each counted once (the top-left rule keeps the right and y = 5 edges
    and the corner (5, 5), drops the left and y = 1 edges; centres on the shared diagonal count once)."""
    p = {"a": (1.0, 1.0), "b": (5.0, 1.0), "c": (5.0, 5.0), "d": (1.0, 5.0)}
    expected = sorted((x, y) for x in range(2, 6) for y in range(2, 6))
    for halves in (("abc", "acd"), ("abd", "bcd"), ("cba", "dca"), ("dba", "dcb")):
        xy = np.array([[p[k] for k in half] for half in halves])
        got = rasterise_triangles(xy, np.zeros((2, 3)), (8, 8))
        assert _pixels(got, 8) == expected, halves
        # the diagonal's centres (x = y, or x + y = 6) go to exactly one of the two triangles
        assert len(got[0]) == 16 and set(got[2].tolist()) == {0, 1}


def test_triangulated_grid_covers_each_centre_once():
    """A 6 x 6 square cut into 2 x 2 cells, each split along a diagonal of its own choice and its corners
    in a random order: every centre of 0 < x, y <= 6 is covered exactly once, none outside."""
    rng = np.random.default_rng(0)
    tris = []
    for x in range(0, 6, 2):
        for y in range(0, 6, 2):
            a, b, c, d = (x, y), (x + 2, y), (x + 2, y + 2), (x, y + 2)
            for t in ((a, b, c), (a, c, d)) if rng.random() < 0.5 else ((a, b, d), (b, c, d)):
                tris.append([t[i] for i in rng.permutation(3)])
    got = rasterise_triangles(np.array(tris, dtype=float), np.zeros((len(tris), 3)), (9, 9))
    assert _pixels(got, 9) == sorted((x, y) for x in range(1, 7) for y in range(1, 7))


def test_plane_depth_clipping_and_triangle_index():
    """Depth of the plane 2 + 0.5 x - 0.25 y interpolated exactly; a square reaching outside a 3 x 4
    picture keeps only its pixels inside; indices count a zero-area triangle; chunks change nothing."""
    square = np.array(
        [[[-2.0, -2.0], [3.0, -2.0], [3.0, 3.0]], [[-2.0, -2.0], [-2.0, 3.0], [3.0, 3.0]]]
    )  # corners in both orders
    xy = np.concatenate([np.array([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]]), square])  # a zero-area triangle first
    depth = 2.0 + 0.5 * xy[..., 0] - 0.25 * xy[..., 1]
    pixel, z, tri = got = rasterise_triangles(xy, depth, (3, 4))
    assert _pixels(got, 4) == sorted((x, y) for x in range(4) for y in range(3))
    y, x = np.divmod(pixel, 4)
    np.testing.assert_allclose(z, 2.0 + 0.5 * x - 0.25 * y, rtol=0, atol=1e-12)
    assert set(tri.tolist()) == {1, 2}
    for a, b in zip(got, rasterise_triangles(xy, depth, (3, 4), max_candidates=1), strict=True):
        np.testing.assert_array_equal(np.sort(a), np.sort(b))
