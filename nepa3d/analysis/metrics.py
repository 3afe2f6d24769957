"""Pure numpy metrics and probe heads for the frozen-model evaluators (UCPR, CPAC).

Nothing here touches files, devices or global RNG state: every random draw comes from a
``np.random.RandomState`` built from an explicit seed.

UCPR (retrieval, one relevant gallery item per query: gallery row i is query i's shape)
    tie_aware_ranks(Q (N, D), G (N, D), eps, seed, chunk) -> ranks (N,) int64, 1-based
    retrieval_metrics(ranks (N,)) -> {r@1, r@5, r@10, mAP, mean_rank, median_rank,
                                      expected_random_r@1}
    mean_pairwise_cosine(E (N, C)) -> float: collapse diagnostic of L2-normalised embeddings

CPAC (UDF completion probe; micro-averaged over all query points of all test shapes)
    udf_metrics(pred (n,), gt (n,), tau) -> {mae, rmse, iou@<tau>}
    near_block(pred, gt, tau, near_tau) -> {mae, rmse, iou@<tau>, n} on points with gt <= near_tau
    ridge_fit(X (n, d), y (n,), lam) -> w (d+1, 1) float64; ridge_predict(X, w) -> (n,) float32
    RidgeAccumulator: the same fit from streamed row blocks (normal equations in float64)
    transform_target / inverse_transform_target / transform_tau: none | trunc | log1p
    ridge_fit_lipschitz(...): Adam refinement of the ridge head with a 1-Lipschitz hinge
    nn_copy_predict(ctx_xyz (c, 3), ctx_dist (c,), q_xyz (q, 3)) -> (q,) float32
"""

from __future__ import annotations

import math

import numpy as np

RANK_KS = (1, 5, 10)
TARGET_TRANSFORMS = ("none", "trunc", "log1p")


# --------------------------------------------------------------------------------------------
# UCPR
# --------------------------------------------------------------------------------------------

def l2_normalize(x: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    """Row-wise x / (||x|| + eps). (N, D) -> (N, D), same dtype as x (float32 for float input)."""
    x = np.asarray(x)
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + eps)


def tie_noise_seed(eval_seed: int, eval_seed_gallery: int) -> int:
    """Seed of the tie-break noise stream: eval_seed * 1000003 + eval_seed_gallery (32-bit)."""
    return (int(eval_seed) * 1000003 + int(eval_seed_gallery)) & 0xFFFFFFFF


def tie_aware_ranks(Q: np.ndarray, G: np.ndarray, eps: float = 1e-6, seed: int = 0,
                    chunk: int = 256) -> np.ndarray:
    """1-based rank of gallery item i among all gallery items for query i.

    Q (N, D), G (N, D): embeddings (rows are L2-normalised here again). Scores are cosines
    ``Q Gᵀ`` (computed in float64) plus ``eps * noise``, where ``noise`` is drawn chunk by chunk
    as (rows, N) standard normals from ``RandomState(seed)`` and cast to float32 (the chunk
    size does not change the stream). The rank is the position of item i in a *stable*
    descending sort of row i (mergesort of the negated scores), i.e.

        rank_i = 1 + #{j : s_ij > s_ii} + #{j < i : s_ij == s_ii}

    which is what is computed (O(N) per row instead of a sort). With eps > 0 exact ties are
    broken at random but reproducibly; with eps <= 0 no noise is drawn and ties fall back to
    gallery order. Returns (N,) int64. NaN or inf in Q or G raises ValueError (a NaN score
    compares false with everything, so it would rank its query first).
    """
    Q = l2_normalize(np.asarray(Q, dtype=np.float64))
    G = l2_normalize(np.asarray(G, dtype=np.float64))
    for name, E in (("query", Q), ("gallery", G)):
        if not np.all(np.isfinite(E)):
            bad = np.flatnonzero(~np.all(np.isfinite(E), axis=1))
            raise ValueError(f"{len(bad)} {name} embedding(s) hold NaN or inf (first: row "
                             f"{int(bad[0])}); ranks would be meaningless")
    n = Q.shape[0]
    if G.shape[0] != n:
        raise ValueError(f"query and gallery must have the same rows, got {Q.shape} and {G.shape}")
    rng = np.random.RandomState(int(seed) & 0xFFFFFFFF) if eps > 0 else None
    chunk = max(1, int(chunk))
    ranks = np.zeros(n, dtype=np.int64)
    cols = np.arange(n)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        score = Q[s:e] @ G.T  # (rows, N)
        if rng is not None:
            score = score + float(eps) * rng.standard_normal((e - s, n)).astype(np.float32)
        rows = np.arange(e - s)
        correct = score[rows, s + rows][:, None]
        above = (score > correct).sum(axis=1)
        tied_before = ((score == correct) & (cols[None, :] < (s + rows)[:, None])).sum(axis=1)
        ranks[s:e] = 1 + above + tied_before
    return ranks


def retrieval_metrics(ranks: np.ndarray, ks=RANK_KS) -> dict:
    """ranks (N,) 1-based -> r@k = mean(rank <= k), mAP = mean(1/rank) (= MRR with one
    relevant item), mean_rank, median_rank, expected_random_r@1 = 1/N."""
    r = np.asarray(ranks, dtype=np.float64)
    n = len(r)
    out = {f"r@{int(k)}": float(np.mean(r <= k)) for k in ks}
    out["mAP"] = float(np.mean(1.0 / r))
    out["mean_rank"] = float(np.mean(r))
    out["median_rank"] = float(np.median(r))
    out["expected_random_r@1"] = 1.0 / n if n else float("nan")
    return out


def mean_pairwise_cosine(E: np.ndarray) -> float:
    """Mean cosine over the N (N - 1) ordered pairs i != j of L2-normalised rows E (N, C).

    For unit rows sum_{i != j} e_i . e_j = |sum_i e_i|^2 - sum_i |e_i|^2, so the mean is
    computed in float64 in O(N C) as (|sum_i e_i|^2 - sum_i |e_i|^2) / (N (N - 1)) (the
    actual squared norms are subtracted, which equals N for exactly unit rows). 1.0 when every
    row is the same vector, about 0 for random directions, >= -1 / (N - 1). NaN for N < 2.
    """
    E = np.asarray(E, dtype=np.float64)
    n = E.shape[0]
    if n < 2:
        return float("nan")
    s = E.sum(axis=0)
    return float((s @ s - np.einsum("ij,ij->", E, E)) / (n * (n - 1)))


# --------------------------------------------------------------------------------------------
# CPAC metrics
# --------------------------------------------------------------------------------------------

def iou_key(tau: float) -> str:
    """Metric name of the IoU at threshold tau, e.g. ``iou@0.03``."""
    return f"iou@{float(tau):g}"


def near_key(near_tau: float) -> str:
    """Name of the near-surface block, e.g. ``near@0.05``."""
    return f"near@{float(near_tau):g}"


def udf_metrics(pred: np.ndarray, gt: np.ndarray, tau: float, key_tau: float | None = None) -> dict:
    """Micro-averaged UDF regression metrics in float64.

    pred (n,), gt (n,) -> {mae, rmse, iou@tau}; IoU compares the near-surface sets
    {gt <= tau} and {pred <= tau}: |A ∩ B| / (|A ∪ B| + 1e-9). n = 0 gives NaNs.
    ``key_tau`` names the IoU key when it differs from the threshold (transformed space:
    the threshold is T(tau) but the metric keeps the name iou@tau).
    """
    key = iou_key(tau if key_tau is None else key_tau)
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    g = np.asarray(gt, dtype=np.float64).reshape(-1)
    if p.shape != g.shape:
        raise ValueError(f"pred {p.shape} and gt {g.shape} differ")
    if len(g) == 0:
        return {"mae": float("nan"), "rmse": float("nan"), key: float("nan")}
    err = p - g
    a, b = g <= tau, p <= tau
    iou = np.sum(a & b) / (np.sum(a | b) + 1e-9)
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err * err))),
            key: float(iou)}


def near_block(pred: np.ndarray, gt: np.ndarray, tau: float, near_tau: float) -> dict:
    """udf_metrics restricted to the points with gt <= near_tau, plus their count ``n``.

    (n,), (n,) -> {mae, rmse, iou@tau, n}; with no such point: {n: 0, mae/rmse/iou: NaN}.
    """
    g = np.asarray(gt).reshape(-1)
    mask = g <= near_tau
    m = int(mask.sum())
    if m == 0:
        return {"mae": float("nan"), "rmse": float("nan"), iou_key(tau): float("nan"), "n": 0}
    out = udf_metrics(np.asarray(pred).reshape(-1)[mask], g[mask], tau)
    out["n"] = m
    return out


# --------------------------------------------------------------------------------------------
# Target transforms (applied to the head's training targets only)
# --------------------------------------------------------------------------------------------

def _log_scale(log_scale: float) -> float:
    return max(float(log_scale), 1e-8)


def transform_target(y: np.ndarray, name: str, trunc_max: float = 0.1,
                     log_scale: float = 0.03) -> np.ndarray:
    """none: y; trunc: min(y, trunc_max); log1p: log1p(y / s), s = max(log_scale, 1e-8).
    (n,) -> (n,) float64."""
    y = np.asarray(y, dtype=np.float64)
    if name == "none":
        return y
    if name == "trunc":
        return np.minimum(y, float(trunc_max))
    if name == "log1p":
        return np.log1p(y / _log_scale(log_scale))
    raise ValueError(f"unknown target_transform {name!r}; choose from {TARGET_TRANSFORMS}")


def inverse_transform_target(y_t: np.ndarray, name: str, trunc_max: float = 0.1,
                             log_scale: float = 0.03) -> np.ndarray:
    """Inverse of :func:`transform_target` (trunc loses information: its inverse is the
    identity). (n,) -> (n,) float64."""
    y_t = np.asarray(y_t, dtype=np.float64)
    if name in ("none", "trunc"):
        return y_t
    if name == "log1p":
        return np.expm1(y_t) * _log_scale(log_scale)
    raise ValueError(f"unknown target_transform {name!r}; choose from {TARGET_TRANSFORMS}")


def transform_tau(tau: float, name: str, trunc_max: float = 0.1, log_scale: float = 0.03) -> float:
    """The IoU threshold in transformed space: tau, min(tau, trunc_max) or log1p(tau / s)."""
    if name == "none":
        return float(tau)
    if name == "trunc":
        return min(float(tau), float(trunc_max))
    if name == "log1p":
        return float(np.log1p(float(tau) / _log_scale(log_scale)))
    raise ValueError(f"unknown target_transform {name!r}; choose from {TARGET_TRANSFORMS}")


# --------------------------------------------------------------------------------------------
# Ridge head: w = solve([X,1]ᵀ[X,1] + lam I, [X,1]ᵀ y) in float64; lam also hits the bias
# --------------------------------------------------------------------------------------------

def augment(X: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Append the bias column. (n, d) -> (n, d+1)"""
    X = np.asarray(X, dtype=dtype)
    return np.concatenate([X, np.ones((X.shape[0], 1), dtype=dtype)], axis=1)


class SingularHead(ValueError):
    """The ridge system has no unique solution (lambda 0 with too few rows, or singular)."""


class RidgeAccumulator:
    """Normal equations of the bias-augmented ridge, accumulated from row blocks in float64,
    so that the design matrix never has to be held in memory.

    add(X (b, d), y (b,)); solve(lam) -> w (d+1, 1) float64.
    """

    def __init__(self, dim: int):
        self.dim = int(dim)
        self.A = np.zeros((dim + 1, dim + 1), dtype=np.float64)
        self.b = np.zeros((dim + 1, 1), dtype=np.float64)
        self.n = 0

    def add(self, X: np.ndarray, y: np.ndarray) -> None:
        Xa = augment(X)
        self.A += Xa.T @ Xa
        self.b += Xa.T @ np.asarray(y, dtype=np.float64).reshape(-1, 1)
        self.n += Xa.shape[0]

    def solve(self, lam: float) -> np.ndarray:
        """w (d+1, 1) float64. ValueError without rows; :class:`SingularHead` when singular:
        lam <= 0 with fewer rows than the d+1 unknowns (any answer would be one of infinitely
        many) or rank-deficient rows (repeated features), or a matrix LAPACK finds singular.
        A lambda > 0 makes the system positive definite: nothing is checked then."""
        if self.n == 0:
            raise ValueError("ridge head has no training rows")
        unknowns = self.dim + 1
        if float(lam) <= 0 and self.n < unknowns:
            raise SingularHead(f"ridge head with lambda {float(lam):g} is under-determined: "
                               f"{self.n} training rows for {unknowns} unknowns (features + "
                               f"bias); use a ridge lambda > 0 or more head-train rows")
        A = self.A.copy()
        A.flat[:: A.shape[0] + 1] += float(lam)
        rank = np.linalg.matrix_rank(A) if float(lam) <= 0 else unknowns
        if rank < unknowns:
            raise SingularHead(f"ridge head with lambda {float(lam):g} is singular: its "
                               f"{self.n} training rows span {rank} of "
                               f"{unknowns} dimensions (repeated or collinear features); use a "
                               f"ridge lambda > 0")
        try:
            return np.linalg.solve(A, self.b)
        except np.linalg.LinAlgError as e:
            raise SingularHead(f"ridge head with lambda {float(lam):g} is singular ({e}); use a "
                               f"ridge lambda > 0") from None


def ridge_fit(X: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Closed-form ridge with an appended bias column. X (n, d), y (n,) -> w (d+1, 1) float64."""
    acc = RidgeAccumulator(np.asarray(X).shape[1])
    acc.add(X, y)
    return acc.solve(lam)


def ridge_predict(X: np.ndarray, w: np.ndarray) -> np.ndarray:
    """[X, 1] · w computed in float64, returned as float32. (n, d), (d+1, 1) -> (n,)"""
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    return (np.asarray(X, dtype=np.float64) @ w[:-1] + w[-1]).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Lipschitz refinement of the ridge head
# --------------------------------------------------------------------------------------------

def group_members(group_id: np.ndarray,
                  min_size: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices grouped by id, keeping groups of at least ``min_size`` rows.

    group_id (n,) -> members (m,) (row indices, group-major, ascending within a group),
    offsets (k,), sizes (k,) for the k kept groups (in ascending id order).
    """
    gid = np.asarray(group_id).reshape(-1)
    order = np.argsort(gid, kind="stable")
    ids, starts, counts = np.unique(gid[order], return_index=True, return_counts=True)
    keep = counts >= min_size
    members = np.concatenate([order[s:s + c] for s, c in zip(starts[keep], counts[keep])]) \
        if keep.any() else np.zeros(0, dtype=np.int64)
    sizes = counts[keep].astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if len(sizes) else sizes
    return members.astype(np.int64), offsets, sizes


def sample_group_pairs(members: np.ndarray, offsets: np.ndarray, sizes: np.ndarray, n_pairs: int,
                       rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of distinct rows from one group: the group uniformly, then two distinct members
    uniformly. Vectorised (the original drew pair by pair: same distribution, other stream).
    -> i (n_pairs,), j (n_pairs,)"""
    if n_pairs <= 0 or len(sizes) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    g = rng.randint(0, len(sizes), size=n_pairs)
    sz = sizes[g]
    a = np.floor(rng.rand(n_pairs) * sz).astype(np.int64)
    b = np.floor(rng.rand(n_pairs) * (sz - 1)).astype(np.int64)
    b = b + (b >= a)
    return members[offsets[g] + a], members[offsets[g] + b]


def lipschitz_violation(Xa: np.ndarray, q_xyz: np.ndarray, w: np.ndarray, i: np.ndarray,
                        j: np.ndarray) -> float:
    """mean(relu(|f(x_i) - f(x_j)| - ||q_i - q_j||)) for f = Xa · w. Xa (n, d+1), w (d+1,)."""
    if len(i) == 0:
        return 0.0
    df = (Xa[i] - Xa[j]) @ w
    bound = np.linalg.norm(q_xyz[i] - q_xyz[j], axis=1)
    return float(np.mean(np.maximum(np.abs(df) - bound, 0.0)))


def _adam_step(w, g, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    """One torch-style Adam update (no weight decay), float32 state. Returns w, m, v."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    denom = np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps
    w = w - (lr / (1 - b1 ** t)) * m / denom
    return w.astype(np.float32), m.astype(np.float32), v.astype(np.float32)


def ridge_fit_lipschitz(X: np.ndarray, y: np.ndarray, q_xyz: np.ndarray, group_id: np.ndarray, *,
                        lam: float, lip_lambda: float, pairs: int = 2048, steps: int = 200,
                        lr: float = 1e-2, batch: int = 8192, max_points: int = 200000,
                        seed: int = 0) -> tuple[np.ndarray, dict]:
    """Ridge head refined by Adam on MSE + lam·mean(w[:-1]²) + lip_lambda·violation.

    X (n, d) features, y (n,) targets, q_xyz (n, 3) query positions, group_id (n,) shape ids.
    The violation is the 1-Lipschitz hinge mean(relu(|f(x_i) - f(x_j)| - ||q_i - q_j||)) over
    ``pairs`` fresh intra-shape pairs per step. RNG: RandomState(seed) (the caller passes
    lip_seed ^ eval_seed): the max_points subset, then the pairs.
    Early exits return the closed-form ridge (on the capped data) with ``skipped``:
    too_few_points, no_valid_groups, zero_violation_at_init. ``batch`` is recorded only
    (the MSE is full batch, as the original).

    Returns w (d+1, 1) float64 and an info dict.
    """
    if lip_lambda <= 0:
        return ridge_fit(X, y, lam), {"enabled": False}
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    q = np.asarray(q_xyz, dtype=np.float32)
    gid = np.asarray(group_id).reshape(-1)
    n = X.shape[0]
    if n <= 1:
        return ridge_fit(X, y, lam), {"enabled": True, "skipped": "too_few_points"}
    rng = np.random.RandomState(int(seed) & 0xFFFFFFFF)
    if max_points > 0 and n > max_points:
        sel = rng.permutation(n)[:max_points]
        X, y, q, gid = X[sel], y[sel], q[sel], gid[sel]
        n = X.shape[0]
    members, offsets, sizes = group_members(gid)
    if len(sizes) == 0:
        return ridge_fit(X, y, lam), {"enabled": True, "skipped": "no_valid_groups"}
    w0 = ridge_fit(X, y, lam)
    pairs, steps = max(0, int(pairs)), max(1, int(steps))
    info = {"enabled": True, "lip_lambda": float(lip_lambda), "lip_pairs": pairs,
            "lip_steps": steps, "lip_lr": float(lr), "lip_batch": int(max(1, min(batch, n))),
            "lip_max_points": int(max_points), "n_train_points_after_cap": int(n),
            "n_valid_groups": int(len(sizes))}
    Xa = augment(X, dtype=np.float32)
    w = w0.reshape(-1).astype(np.float32)
    i0, j0 = sample_group_pairs(members, offsets, sizes, pairs, rng)
    info["init_lip"] = lipschitz_violation(Xa, q, w, i0, j0)
    if info["init_lip"] <= 1e-12:
        return w0, {**info, "skipped": "zero_violation_at_init"}
    d = X.shape[1]
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    last = {}
    for t in range(1, steps + 1):
        r = Xa @ w - y
        mse = float(np.mean(r * r))
        grad = (2.0 / n) * (Xa.T @ r)
        ridge = float(lam) * float(np.mean(w[:-1] ** 2))
        grad[:-1] += (2.0 * float(lam) / d) * w[:-1]
        lip = 0.0
        i, j = sample_group_pairs(members, offsets, sizes, pairs, rng)
        if len(i):
            dx = Xa[i] - Xa[j]
            df = dx @ w
            hinge = np.abs(df) - np.linalg.norm(q[i] - q[j], axis=1)
            lip = float(np.mean(np.maximum(hinge, 0.0)))
            act = (hinge > 0).astype(np.float32) * np.sign(df)
            grad += float(lip_lambda) * (dx.T @ act) / len(i)
        last = {"mse": mse, "ridge": ridge, "lip": lip,
                "loss": mse + ridge + float(lip_lambda) * lip}
        w, m, v = _adam_step(w, grad.astype(np.float32), m, v, t, float(lr))
    info.update(last)
    return w.astype(np.float64).reshape(-1, 1), info


# --------------------------------------------------------------------------------------------
# nn_copy baseline
# --------------------------------------------------------------------------------------------

def nn_copy_predict(ctx_xyz: np.ndarray, ctx_dist: np.ndarray, q_xyz: np.ndarray,
                    chunk: int = 4096) -> np.ndarray:
    """Each query copies the distance of its Euclidean-nearest context point (first index on
    ties; 0 without context). (c, 3), (c,), (q, 3) -> (q,) float32"""
    q_xyz = np.asarray(q_xyz, dtype=np.float64)
    out = np.zeros(len(q_xyz), dtype=np.float32)
    if len(ctx_xyz) == 0 or len(q_xyz) == 0:
        return out
    c = np.asarray(ctx_xyz, dtype=np.float64)
    dist = np.asarray(ctx_dist, dtype=np.float32)
    for s in range(0, len(q_xyz), chunk):
        d2 = ((q_xyz[s:s + chunk, None, :] - c[None, :, :]) ** 2).sum(-1)
        out[s:s + chunk] = dist[np.argmin(d2, axis=1)]
    return out
