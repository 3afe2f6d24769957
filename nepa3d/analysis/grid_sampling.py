"""Query samplers over a shape's UDF grid (CPAC ``--query_source grid|hybrid``).

All functions are pure: (udf_grid, n, rng, settings) -> queries; the only randomness is
the caller's ``RandomState``, consumed in a documented order.

Grid convention (the cache's): ``udf[i, j, k]`` with (i, j, k) = (x, y, z) cell indices of a
G³ lattice on [-1, 1]³; the linear cell index is lin = i·G² + j·G + k, the cell centre is
``-1 + (ijk + 0.5)·(2/G)``, and a cell's target is its exact grid value (no interpolation).

Modes (n = min(n_query, G³)):
- uniform:        n distinct cells.
- near_surface:   round(n·frac) cells with udf <= near_tau, the rest above (backfilled from
                  the other set when one is short); near block then far block, shuffled.
- stratified:     5 bins at the 20/40/60/80 % quantiles of the grid values, n//5 per bin
                  (first n%5 bins one more); a bin too small draws from the whole grid.
- coarse_to_fine: [LATER upstream] stages at increasing resolutions; stage 0 is uniform,
                  later stages refine around the previous stage's near-surface cells.
"""

from __future__ import annotations

import numpy as np

GRID_MODES = ("uniform", "near_surface", "stratified", "coarse_to_fine")


def as_cube(udf_grid: np.ndarray) -> np.ndarray:
    """float32 view of a cubic grid; raises ValueError for a non-cube. (G, G, G) -> (G, G, G)"""
    u = np.asarray(udf_grid, dtype=np.float32)
    if u.ndim != 3 or not (u.shape[0] == u.shape[1] == u.shape[2]):
        raise ValueError(f"udf_grid must be a cube (G, G, G), got shape {u.shape}")
    return u


def lin_to_ijk(lin: np.ndarray, res: int) -> np.ndarray:
    """(n,) linear cell indices -> (n, 3) int64 (i, j, k) at resolution res."""
    lin = np.asarray(lin, dtype=np.int64).reshape(-1)
    return np.stack([lin // (res * res), (lin // res) % res, lin % res], axis=1)


def ijk_to_xyz(ijk: np.ndarray, res: int) -> np.ndarray:
    """(n, 3) cell indices -> (n, 3) float32 cell centres in [-1, 1]³."""
    voxel = np.float32(2.0 / res)
    return (np.float32(-1.0) + (np.asarray(ijk, dtype=np.float32) + np.float32(0.5)) * voxel
            ).astype(np.float32)


def cells_to_queries(udf: np.ndarray, lin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source-grid cells -> (xyz (n, 3) float32 centres, exact cell values (n,) float32)."""
    g = udf.shape[0]
    lin = np.asarray(lin, dtype=np.int64)
    return ijk_to_xyz(lin_to_ijk(lin, g), g), udf.reshape(-1)[lin].astype(np.float32)


# --------------------------------------------------------------------------------------------
# Cell samplers on the source grid: (udf (G,G,G), n, rng, ...) -> lin (n,) int64
# --------------------------------------------------------------------------------------------

def sample_uniform_cells(udf: np.ndarray, n: int, rng: np.random.RandomState) -> np.ndarray:
    """n distinct cells. RNG: one choice(G³, n, replace=False)."""
    return rng.choice(udf.size, size=n, replace=False).astype(np.int64)


def near_far_counts(n: int, n_near_cells: int, n_far_cells: int,
                    near_frac: float) -> tuple[int, int]:
    """How many near / far cells to draw: k_near = round(n·clip(frac, 0, 1)) capped by the
    available cells (0 without near cells, n without far cells); shortfalls are backfilled
    from near first, then far. Returns (k_near, k_far); k_near + k_far < n only when the grid
    has fewer than n cells."""
    k_near = max(0, min(int(round(n * min(max(float(near_frac), 0.0), 1.0))), n))
    if n_near_cells == 0:
        k_near = 0
    if n_far_cells == 0:
        k_near = n
    k_near = min(k_near, n_near_cells)
    k_far = min(n - k_near, n_far_cells)
    short = n - k_near - k_far
    add = min(short, n_near_cells - k_near)
    k_near, short = k_near + add, short - add
    add = min(short, n_far_cells - k_far)
    return k_near, k_far + add


def sample_near_surface_cells(udf: np.ndarray, n: int, rng: np.random.RandomState,
                              near_tau: float = 0.05, near_frac: float = 0.7) -> np.ndarray:
    """Near cells (udf <= near_tau) and far cells in the proportion of :func:`near_far_counts`.
    RNG: choice(near, k_near) if k_near > 0, choice(far, k_far) if k_far > 0 (both without
    replacement), then shuffle; if the grid cannot supply n cells, one
    choice(G³, n, replace=True)."""
    flat = udf.reshape(-1)
    near = np.flatnonzero(flat <= near_tau)
    far = np.flatnonzero(flat > near_tau)
    k_near, k_far = near_far_counts(n, len(near), len(far), near_frac)
    if k_near + k_far < n:
        return rng.choice(flat.size, size=n, replace=True).astype(np.int64)
    parts = []
    if k_near > 0:
        parts.append(rng.choice(near, size=k_near, replace=False))
    if k_far > 0:
        parts.append(rng.choice(far, size=k_far, replace=False))
    lin = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    rng.shuffle(lin)
    return lin


def stratified_bins(udf: np.ndarray) -> np.ndarray:
    """Quantile bin (0..4) of every cell: edges at the 20/40/60/80 % quantiles (float32),
    ``digitize(right=True)``. (G, G, G) -> (G³,) int64"""
    flat = udf.reshape(-1)
    edges = np.quantile(flat, [0.2, 0.4, 0.6, 0.8]).astype(np.float32)
    return np.digitize(flat, edges, right=True).astype(np.int64)


def sample_stratified_cells(udf: np.ndarray, n: int, rng: np.random.RandomState) -> np.ndarray:
    """n//5 cells per quantile bin (the first n%5 bins one more), each without replacement
    (a bin with too few cells draws its share from the whole grid instead); trimmed / padded
    (uniform, without replacement) to n, then shuffled."""
    bins = stratified_bins(udf)
    per, extra = divmod(n, 5)
    parts = []
    for b in range(5):
        kb = per + (1 if b < extra else 0)
        if kb <= 0:
            continue
        idx = np.flatnonzero(bins == b)
        pool = idx if len(idx) >= kb else udf.size
        parts.append(rng.choice(pool, size=kb, replace=False))
    lin = (np.concatenate(parts).astype(np.int64) if parts
           else rng.choice(udf.size, n, replace=False))
    if len(lin) > n:
        lin = lin[:n]
    elif len(lin) < n:
        lin = np.concatenate([lin, rng.choice(udf.size, n - len(lin), replace=False)])
    rng.shuffle(lin)
    return lin


# --------------------------------------------------------------------------------------------
# Coarse-to-fine (upstream commit 26e2f03, after the reference version)
# --------------------------------------------------------------------------------------------

def parse_res_schedule(text: str, g: int) -> list[int]:
    """"16,32,64" -> stage resolutions clamped to [2, G], consecutive duplicates removed.
    Unparsable items are ignored; an empty schedule means [16, 32, 64]."""
    vals = [int(t) for t in (s.strip() for s in str(text or "").split(",")) if _is_int(t)]
    vals = vals or [16, 32, 64]
    out: list[int] = []
    for r in (max(2, min(g, v)) for v in vals):
        if not out or out[-1] != r:
            out.append(r)
    return out


def _is_int(t: str) -> bool:
    try:
        int(t)
        return True
    except ValueError:
        return False


def parse_stage_weights(text: str, k: int) -> list[float]:
    """Comma-separated weights; anything but k numbers with a positive sum gives [1, 2, .., k]."""
    vals = []
    for t in str(text or "").split(","):
        try:
            vals.append(float(t))
        except ValueError:
            continue
    if len(vals) != k or sum(vals) <= 0:
        return [float(i + 1) for i in range(k)]
    return vals


def allocate_counts(n: int, weights) -> list[int]:
    """Largest-remainder split of n by (clipped, normalised) weights; ties go to the earlier
    stage. -> counts summing to n."""
    w = np.maximum(np.asarray(weights, dtype=np.float64), 0.0)
    if n <= 0:
        return [0] * len(w)
    if w.sum() <= 0:
        w = np.ones_like(w)
    raw = w / w.sum() * n
    base = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - base), kind="stable")
    for t in range(int(n - base.sum())):
        base[order[t % len(order)]] += 1
    return [int(x) for x in base]


def udf_nearest(udf: np.ndarray, ijk: np.ndarray, res: int) -> np.ndarray:
    """Value of the source cell nearest to each stage-grid centre (rint, clamped).
    (n, 3) cells at resolution res -> (n,) float32"""
    g = udf.shape[0]
    u = ((np.asarray(ijk, dtype=np.float32) + np.float32(0.5)) * np.float32(g / res)
         - np.float32(0.5))
    gi = np.clip(np.rint(u).astype(np.int64), 0, g - 1)
    return udf[gi[:, 0], gi[:, 1], gi[:, 2]].astype(np.float32)


def _uniform_lin(total: int, n: int, rng: np.random.RandomState) -> np.ndarray:
    if n <= 0:
        return np.zeros(0, np.int64)
    return rng.choice(total, size=n, replace=total < n).astype(np.int64)


def refine_children(parents: np.ndarray, parent_res: int, child_res: int, n: int,
                    rng: np.random.RandomState, expand: int = 1) -> np.ndarray:
    """n child cells (lin at child_res): a random parent (randint), jittered by ±expand parent
    cells per axis (randint, clipped), then a uniform child cell inside the parent's span
    (one rand(n) per axis, x then y then z). Without parents: uniform over the child grid."""
    if n <= 0:
        return np.zeros(0, np.int64)
    if len(parents) == 0:
        return _uniform_lin(child_res ** 3, n, rng)
    cells = parents[rng.randint(0, len(parents), size=n)].copy()
    if expand > 0:
        cells = np.clip(cells + rng.randint(-expand, expand + 1, size=(n, 3)), 0, parent_res - 1)
    scale = child_res / parent_res
    lo = np.clip(np.floor(cells * scale).astype(np.int64), 0, child_res - 1)
    hi = np.clip(np.ceil((cells + 1.0) * scale).astype(np.int64) - 1, 0, child_res - 1)
    hi = np.maximum(hi, lo)
    ijk = [lo[:, a] + (rng.rand(n) * (hi[:, a] - lo[:, a] + 1)).astype(np.int64) for a in range(3)]
    return ijk[0] * child_res * child_res + ijk[1] * child_res + ijk[2]


def sample_coarse_to_fine(udf: np.ndarray, n: int, rng: np.random.RandomState, *,
                          near_tau: float = 0.05, res_schedule: str = "16,32,64", expand: int = 1,
                          stage_weights: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Stage-wise adaptive queries. Stage resolutions from ``res_schedule``; stage counts by
    largest remainder from ``stage_weights`` (default 1..K, favouring finer stages).

    Stage 0 draws its cells uniformly at its resolution; its parents for stage 1 are *all*
    stage-0 lattice cells whose nearest source value is <= near_tau. A later stage draws
    children around the current parents (:func:`refine_children`) and its own near cells
    (all of its cells if none is near) become the next parents. xyz are stage-grid centres,
    targets the nearest source-grid values. The union is trimmed to n (choice without
    replacement) or padded with uniform source cells.

    (G, G, G) -> xyz (n, 3) float32, y (n,) float32
    """
    g = udf.shape[0]
    stages = parse_res_schedule(res_schedule, g)
    counts = allocate_counts(n, parse_stage_weights(stage_weights, len(stages)))
    xyz_parts, y_parts = [], []
    parents, parent_res = np.zeros((0, 3), np.int64), stages[0]
    for si, (res, k) in enumerate(zip(stages, counts)):
        if si == 0:
            all_ijk = lin_to_ijk(np.arange(res ** 3), res)
            parents = all_ijk[udf_nearest(udf, all_ijk, res) <= near_tau]
            lin = _uniform_lin(res ** 3, k, rng)
        else:
            lin = refine_children(parents, parent_res, res, k, rng, expand=int(max(0, expand)))
        ijk = lin_to_ijk(lin, res)
        y = udf_nearest(udf, ijk, res) if len(ijk) else np.zeros(0, np.float32)
        if len(ijk):
            xyz_parts.append(ijk_to_xyz(ijk, res))
            y_parts.append(y)
        if si >= 1:
            near = ijk[y <= near_tau]
            parents = near if len(near) or not len(ijk) else ijk
            parent_res = res
    if not xyz_parts:
        return cells_to_queries(udf, _uniform_lin(udf.size, n, rng))
    xyz, y = np.concatenate(xyz_parts), np.concatenate(y_parts)
    if len(xyz) > n:
        keep = rng.choice(len(xyz), size=n, replace=False)
        xyz, y = xyz[keep], y[keep]
    elif len(xyz) < n:
        ax, ay = cells_to_queries(udf, _uniform_lin(udf.size, n - len(xyz), rng))
        xyz, y = np.concatenate([xyz, ax]), np.concatenate([y, ay])
    return xyz.astype(np.float32), y.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------------

def sample_grid_queries(udf_grid: np.ndarray, n_query: int, rng: np.random.RandomState, *,
                        mode: str = "uniform", near_tau: float = 0.05, near_frac: float = 0.7,
                        res_schedule: str = "16,32,64", c2f_expand: int = 1,
                        c2f_stage_weights: str = "") -> tuple[np.ndarray, np.ndarray]:
    """n = min(n_query, G³) grid queries. (G, G, G) -> xyz (n, 3) float32, target (n,) float32"""
    udf = as_cube(udf_grid)
    n = int(min(int(n_query), udf.size))
    if n <= 0:
        return np.zeros((0, 3), np.float32), np.zeros(0, np.float32)
    if mode == "uniform":
        lin = sample_uniform_cells(udf, n, rng)
    elif mode == "near_surface":
        lin = sample_near_surface_cells(udf, n, rng, near_tau=near_tau, near_frac=near_frac)
    elif mode == "stratified":
        lin = sample_stratified_cells(udf, n, rng)
    elif mode == "coarse_to_fine":
        return sample_coarse_to_fine(udf, n, rng, near_tau=near_tau, res_schedule=res_schedule,
                                     expand=c2f_expand, stage_weights=c2f_stage_weights)
    else:
        raise ValueError(f"unknown grid_sample_mode {mode!r}; choose from {GRID_MODES}")
    return cells_to_queries(udf, lin)
