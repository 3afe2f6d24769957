"""Compiled (numba) kernels for exact point-to-triangle-mesh distance queries.

The tree layout is the implicit heap built by :class:`nepa3d.geometry.distance.TriangleDistanceIndex`:
node ``h`` has children ``2h + 1`` and ``2h + 2``; the ``2^depth`` leaves are heap nodes
``2^depth - 1 ... 2^(depth+1) - 2`` and leaf ``i`` owns the tree-ordered triangles
``starts[i] ... starts[i + 1] - 1``. All arithmetic is float64; pruning compares squared
distances, and a node is skipped only when its box is *strictly* farther than the best
triangle found so far, so the answer equals the brute-force minimum exactly.

Kernels compile on first use and are cached on disk (``cache=True``), so worker processes
of the preprocessing pool load them instead of recompiling.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always", error_model="numpy")
def _seg_sqdist(px, py, pz, ax, ay, az, bx, by, bz):
    """Squared distance from p to segment [a, b] (a point when a == b)."""
    ex, ey, ez = bx - ax, by - ay, bz - az
    den = ex * ex + ey * ey + ez * ez
    t = 0.0
    if den > 0.0:
        t = ((px - ax) * ex + (py - ay) * ey + (pz - az) * ez) / den
        if t < 0.0:
            t = 0.0
        elif t > 1.0:
            t = 1.0
    dx, dy, dz = px - (ax + t * ex), py - (ay + t * ey), pz - (az + t * ez)
    return dx * dx + dy * dy + dz * dz


@njit(cache=True, error_model="numpy")
def point_triangle_sqdist(px, py, pz, tri):
    """Squared distance from ``p`` to the triangle ``tri (3, 3)``.

    Voronoi-region classification of Ericson, *Real-Time Collision Detection* §5.1.5 (the
    same regions as :func:`nepa3d.geometry.distance.closest_point_on_triangles`); a
    zero-area triangle (non-finite result) falls back to its nearest edge.
    """
    ax, ay, az = tri[0, 0], tri[0, 1], tri[0, 2]
    bx, by, bz = tri[1, 0], tri[1, 1], tri[1, 2]
    cx, cy, cz = tri[2, 0], tri[2, 1], tri[2, 2]
    abx, aby, abz = bx - ax, by - ay, bz - az
    acx, acy, acz = cx - ax, cy - ay, cz - az
    apx, apy, apz = px - ax, py - ay, pz - az
    d1 = abx * apx + aby * apy + abz * apz
    d2 = acx * apx + acy * apy + acz * apz
    if d1 <= 0.0 and d2 <= 0.0:                                  # vertex A
        qx, qy, qz = ax, ay, az
    else:
        bpx, bpy, bpz = px - bx, py - by, pz - bz
        d3 = abx * bpx + aby * bpy + abz * bpz
        d4 = acx * bpx + acy * bpy + acz * bpz
        cpx, cpy, cpz = px - cx, py - cy, pz - cz
        d5 = abx * cpx + aby * cpy + abz * cpz
        d6 = acx * cpx + acy * cpy + acz * cpz
        vc = d1 * d4 - d3 * d2
        vb = d5 * d2 - d1 * d6
        va = d3 * d6 - d5 * d4
        if d3 >= 0.0 and d4 <= d3:                               # vertex B
            qx, qy, qz = bx, by, bz
        elif vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:              # edge AB
            t = d1 / (d1 - d3)
            qx, qy, qz = ax + t * abx, ay + t * aby, az + t * abz
        elif d6 >= 0.0 and d5 <= d6:                             # vertex C
            qx, qy, qz = cx, cy, cz
        elif vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:              # edge AC
            t = d2 / (d2 - d6)
            qx, qy, qz = ax + t * acx, ay + t * acy, az + t * acz
        elif va <= 0.0 and d4 - d3 >= 0.0 and d5 - d6 >= 0.0:   # edge BC
            t = (d4 - d3) / ((d4 - d3) + (d5 - d6))
            qx, qy, qz = bx + t * (cx - bx), by + t * (cy - by), bz + t * (cz - bz)
        else:                                                    # face interior
            den = va + vb + vc
            v = vb / den
            w = vc / den
            qx = ax + v * abx + w * acx
            qy = ay + v * aby + w * acy
            qz = az + v * abz + w * acz
    dx, dy, dz = px - qx, py - qy, pz - qz
    d = dx * dx + dy * dy + dz * dz
    if not np.isfinite(d):                                       # degenerate triangle
        d = min(_seg_sqdist(px, py, pz, ax, ay, az, bx, by, bz),
                _seg_sqdist(px, py, pz, bx, by, bz, cx, cy, cz),
                _seg_sqdist(px, py, pz, cx, cy, cz, ax, ay, az))
    return d


@njit(cache=True, inline="always", error_model="numpy")
def _box_sqdist(px, py, pz, box, h):
    """Squared distance from p to the box ``box[h] = [lo(3), hi(3)]`` (0 inside)."""
    s = 0.0
    g = box[h, 0] - px
    if g < 0.0:
        g = px - box[h, 3]
    if g > 0.0:
        s += g * g
    g = box[h, 1] - py
    if g < 0.0:
        g = py - box[h, 4]
    if g > 0.0:
        s += g * g
    g = box[h, 2] - pz
    if g < 0.0:
        g = pz - box[h, 5]
    if g > 0.0:
        s += g * g
    return s


@njit(cache=True, error_model="numpy")
def query_tree(points, tri, box, leaf_starts, depth):
    """Exact nearest triangle of each point: depth-first, nearer child first, with pruning.

    Args:
        points: ``(P, 3)`` float64; tri: ``(F, 3, 3)`` float64 triangles in tree order;
        box: ``(2^(depth+1) - 1, 6)`` float64 heap-ordered node boxes ``[lo, hi]``;
        leaf_starts: ``(2^depth + 1,)`` int64; depth: tree depth (0 = one leaf).

    Returns:
        ``(sqdist (P,) float64, pos (P,) int64)`` -- ``pos`` indexes ``tri`` (tree order).
    """
    n_p = points.shape[0]
    out_d = np.empty(n_p)
    out_i = np.empty(n_p, dtype=np.int64)
    first_leaf = (1 << depth) - 1
    stack_node = np.empty(2 * depth + 2, dtype=np.int64)
    stack_dist = np.empty(2 * depth + 2)
    for i in range(n_p):
        px, py, pz = points[i, 0], points[i, 1], points[i, 2]
        best = np.inf
        best_pos = 0
        top = 0
        stack_node[0] = 0
        stack_dist[0] = _box_sqdist(px, py, pz, box, 0)
        top = 1
        while top > 0:
            top -= 1
            h = stack_node[top]
            if stack_dist[top] > best:
                continue
            if h >= first_leaf:
                leaf = h - first_leaf
                for t in range(leaf_starts[leaf], leaf_starts[leaf + 1]):
                    d = point_triangle_sqdist(px, py, pz, tri[t])
                    if d < best:
                        best = d
                        best_pos = t
                continue
            c0 = 2 * h + 1
            c1 = c0 + 1
            d0 = _box_sqdist(px, py, pz, box, c0)
            d1 = _box_sqdist(px, py, pz, box, c1)
            if d1 < d0:  # order (near, far); push far first so near is visited next
                c0, c1, d0, d1 = c1, c0, d1, d0
            for c, dc in ((c1, d1), (c0, d0)):
                if dc <= best:
                    stack_node[top] = c
                    stack_dist[top] = dc
                    top += 1
        out_d[i] = best
        out_i[i] = best_pos
    return out_d, out_i
