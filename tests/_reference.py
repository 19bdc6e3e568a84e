"""Obviously-correct NumPy reference implementations of every kernel (slow, readable)."""

from __future__ import annotations

import itertools

import numpy as np

# --------------------------------------------------------------------------------------------
# aggregators: coordinate-wise
# --------------------------------------------------------------------------------------------


def mean(X: np.ndarray) -> np.ndarray:
    return X.mean(axis=0, dtype=np.float64).astype(X.dtype)


_KEY = {
    np.dtype(np.float32): (np.uint32, np.uint32(0x7FC00000), np.uint32(0x80000000), 31),
    np.dtype(np.float64): (np.uint64, np.uint64(0x7FF8000000000000), np.uint64(1 << 63), 63),
}


def sorted_columns(X: np.ndarray) -> np.ndarray:
    """Each column sorted in the kernels' total order -Inf < ... < -0 < +0 < ... < +Inf < NaN
    (every NaN canonicalised to +qNaN): sort order-preserving integer keys, then map back."""
    X = np.ascontiguousarray(X)
    ut, qnan, sign, shift = _KEY[X.dtype]
    u = X.view(ut).copy()
    u[np.isnan(X)] = qnan
    neg = (u >> ut(shift)).astype(bool)
    flip = np.where(neg, ~ut(0), sign).astype(ut)
    keys = np.sort(u ^ flip, axis=0)
    back = np.where(keys >> ut(shift) == 1, sign, ~ut(0)).astype(ut)
    return (keys ^ back).view(X.dtype)


def _middle(S: np.ndarray) -> np.ndarray:
    n = S.shape[0]
    return (S[(n - 1) // 2].astype(np.float64) + S[n // 2].astype(np.float64)) / 2


def median(X: np.ndarray) -> np.ndarray:
    """Mean of the two middle values (one for odd n) of each sorted column."""
    return _middle(sorted_columns(X)).astype(X.dtype)


def trimmed_mean(X: np.ndarray, f: int) -> np.ndarray:
    """Sort each column, drop f values at each end, average the rest in float64."""
    S = sorted_columns(X)
    n = S.shape[0]
    return S[f : n - f].astype(np.float64).mean(axis=0).astype(X.dtype)


def meamed(X: np.ndarray, f: int) -> np.ndarray:
    """Mean of the n - f values closest to the median (float64), via a stable argsort of
    |x - median| over the sorted column: equidistant values keep the lower one first, and NaN
    distances sort last."""
    S = sorted_columns(X).astype(np.float64)
    n = S.shape[0]
    with np.errstate(invalid="ignore"):
        dist = np.abs(S - _middle(S))
    idx = np.argsort(dist, axis=0, kind="stable")[: n - f]
    return np.take_along_axis(S, idx, axis=0).mean(axis=0).astype(X.dtype)


# --------------------------------------------------------------------------------------------
# aggregators: distance-based and pre-aggregations
# --------------------------------------------------------------------------------------------


def finite_rows(X: np.ndarray) -> np.ndarray:
    """Boolean (n,): rows without NaN / Inf."""
    return np.isfinite(X).all(axis=1)


def pairwise_sq_distances(X: np.ndarray) -> np.ndarray:
    """(n, n) squared distances in float64 by broadcasting; +inf for rows with non-finite
    entries (zero diagonal)."""
    X64 = X.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        d = ((X64[:, None, :] - X64[None, :, :]) ** 2).sum(axis=-1)
    ok = finite_rows(X)
    d[~ok, :] = np.inf
    d[:, ~ok] = np.inf
    d[~np.isfinite(d)] = np.inf
    np.fill_diagonal(d, 0.0)
    return d


def _order(key: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Indices sorted by (key, bad, index)."""
    return np.lexsort((np.arange(len(key)), bad.astype(int), key))


def krum_scores(X: np.ndarray, f: int, q: int | None = None) -> np.ndarray:
    """Sum of the q (default n - f - 2) smallest squared distances to the other rows."""
    n = X.shape[0]
    q = n - f - 2 if q is None else q
    d = pairwise_sq_distances(X)
    scores = np.empty(n)
    for i in range(n):
        others = np.sort(np.delete(d[i], i))
        scores[i] = others[:q].sum()
    scores[~finite_rows(X)] = np.inf
    return scores


def krum(X: np.ndarray, f: int, q: int | None = None) -> np.ndarray:
    scores = krum_scores(X, f, q)
    return X[_order(scores, ~finite_rows(X))[0]].copy()


def weighted_mean(X: np.ndarray, w: np.ndarray) -> np.ndarray:
    """sum w_i x_i / sum w_i in float64 over the rows of positive weight."""
    w = np.asarray(w, dtype=np.float64)
    keep = w > 0
    p = w[keep]
    return ((p[:, None] * X[keep].astype(np.float64)).sum(axis=0) / p.sum()).astype(X.dtype)


def multi_krum(
    X: np.ndarray, f: int, m: int | None = None, q: int | None = None, w: np.ndarray | None = None
) -> np.ndarray:
    n = X.shape[0]
    m = n - f if m is None else m
    scores = krum_scores(X, f, q)
    rows = np.sort(_order(scores, ~finite_rows(X))[:m])
    if w is not None:
        return weighted_mean(X[rows], np.asarray(w)[rows])
    return X[rows].astype(np.float64).mean(axis=0).astype(X.dtype)


def closest(X: np.ndarray, reference: np.ndarray, beta: int) -> np.ndarray:
    """Mean of the beta rows nearest (Euclidean) to reference; ties by finite-first, index."""
    R = X.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        d = ((R - np.asarray(reference, dtype=np.float64)) ** 2).sum(axis=1)
    bad = ~finite_rows(X)
    d[bad | np.isnan(d)] = np.inf
    rows = np.sort(_order(d, bad)[:beta])
    return R[rows].mean(axis=0).astype(X.dtype)


def closest_coordinates(X: np.ndarray, reference: np.ndarray | None, beta: int) -> np.ndarray:
    """Per coordinate, the mean of the beta values nearest to reference[j] (None: the median),
    as a window of the sorted values that slides up only while that is strictly closer."""
    n, D = X.shape
    out = np.empty(D)
    for j in range(D):
        v = np.sort(X[:, j].astype(np.float64))  # NaN sorts last
        m = 0.5 * (v[(n - 1) // 2] + v[n // 2]) if reference is None else float(reference[j])
        s = 0
        with np.errstate(invalid="ignore"):
            while s + beta < n and (v[s + beta] - m) < (m - v[s]):
                s += 1
        out[j] = v[s : s + beta].mean()
    return out.astype(X.dtype)


def bulyan(X: np.ndarray, f: int, selection: str = "iterated", drop: int = 2) -> np.ndarray:
    """El Mhamdi et al.: theta = n - 2f rows by (iterated) Krum over n' - f - drop neighbours
    (at least one), then the coordinate-wise mean of the beta = theta - 2f closest to the median."""
    n = X.shape[0]
    theta = n - 2 * f
    beta = theta - 2 * f
    bad = ~finite_rows(X)
    if selection == "multi_krum":
        rows = _order(krum_scores(X, f, max(n - f - drop, 1)), bad)[:theta]
    else:
        d = pairwise_sq_distances(X)
        alive = list(range(n))
        rows = []
        for _ in range(theta):
            k = len(alive)
            q = min(max(k - f - drop, 1), k - 1)
            sub = d[np.ix_(alive, alive)]
            scores = np.array(
                [np.sort(np.delete(sub[a], a))[:q].sum() for a in range(k)], dtype=np.float64
            )
            scores[bad[alive]] = np.inf
            pick = alive[_order(scores, bad[alive])[0]]
            rows.append(pick)
            alive.remove(pick)
    return closest_coordinates(X[np.sort(rows)], None, beta)


def nnm(X: np.ndarray, f: int) -> np.ndarray:
    n = X.shape[0]
    d = pairwise_sq_distances(X)
    bad = ~finite_rows(X)
    out = np.empty(X.shape, dtype=np.float64)
    for i in range(n):
        key = d[i].copy()
        key[i] = -1.0
        rows = _order(key, bad)[: n - f]
        with np.errstate(invalid="ignore"):
            out[i] = X[rows].astype(np.float64).mean(axis=0)
    return out.astype(X.dtype)


def bucketing(X: np.ndarray, s: int, perm: np.ndarray) -> np.ndarray:
    Xp = X[perm].astype(np.float64)
    groups = [Xp[i : i + s].mean(axis=0) for i in range(0, X.shape[0], s)]
    return np.stack(groups).astype(X.dtype)


def clip(X: np.ndarray, tau: float) -> np.ndarray:
    X64 = X.astype(np.float64)
    out = X.copy()
    for i in range(X.shape[0]):
        if not np.isfinite(X64[i]).all():
            continue
        norm = np.linalg.norm(X64[i])
        if norm > tau:
            out[i] = (X64[i] * (tau / norm)).astype(X.dtype)
    return out


def arc(X: np.ndarray, f: int) -> np.ndarray:
    n = X.shape[0]
    k = (2 * f * (n - f)) // n
    ok = finite_rows(X)
    norms = np.where(
        ok, np.linalg.norm(np.where(ok[:, None], X.astype(np.float64), 0), axis=1), np.inf
    )
    threshold = np.sort(norms)[::-1][k]
    X64 = X.astype(np.float64)
    out = X.copy()
    for i in range(n):
        if ok[i] and norms[i] > threshold:
            out[i] = (X64[i] * (threshold / norms[i])).astype(X.dtype)
    return out


def centered_clipping(
    X: np.ndarray, tau: float, iters: int = 1, center: np.ndarray | None = None
) -> np.ndarray:
    n, D = X.shape
    ok = finite_rows(X)
    v = np.zeros(D) if center is None else np.asarray(center, dtype=np.float64).copy()
    X64 = X.astype(np.float64)
    for _ in range(iters):
        step = np.zeros(D)
        for i in range(n):
            if not ok[i]:
                continue
            y = X64[i] - v
            norm = np.linalg.norm(y)
            step += y * min(1.0, tau / norm) if norm > 0 else y
        v = v + step / n
    return v.astype(X.dtype)


def geometric_median(X: np.ndarray, eps: float = 1e-8, iters: int = 20000) -> np.ndarray:
    """Plain smoothed Weiszfeld over the finite rows, in float64, from their mean, run until
    the iterate stops moving (slow, for comparisons)."""
    X64 = X[finite_rows(X)].astype(np.float64)
    z = X64.mean(axis=0)
    for _ in range(iters):
        w = 1.0 / np.maximum(eps, np.linalg.norm(X64 - z, axis=1))
        z_new = (w[:, None] * X64).sum(axis=0) / w.sum()
        if np.linalg.norm(z_new - z) <= 1e-15 * max(1.0, np.linalg.norm(z)):
            return z_new
        z = z_new
    return z


def weiszfeld_gradient(X: np.ndarray, z: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Gradient of the smoothed objective at z over the finite rows:
    sum_i (z - x_i) / max(eps, |z - x_i|) (zero at the smoothed geometric median)."""
    X64 = X[finite_rows(X)].astype(np.float64)
    diff = z.astype(np.float64) - X64
    return (diff / np.maximum(eps, np.linalg.norm(diff, axis=1))[:, None]).sum(axis=0)


# --------------------------------------------------------------------------------------------
# aggregators: subset search and filtering (MDA, SMEA, CAF), as ByzFL 0.0.11 defines them
# --------------------------------------------------------------------------------------------


def _subset_mean(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        return X[rows].astype(np.float64).mean(axis=0).astype(X.dtype)


def mda_subset(X: np.ndarray, f: int) -> np.ndarray:
    """ByzFL's MDA enumeration: every subset of n - f rows in lexicographic order, the first
    with the least diameter (strict improvements from +inf; rows 0..n-f-1 when none is
    finite)."""
    n = X.shape[0]
    k = n - f
    d = pairwise_sq_distances(X)
    best, rows = np.inf, np.arange(k)
    for s in itertools.combinations(range(n), k):
        diam = d[np.ix_(s, s)].max()
        if diam < best:
            best, rows = diam, np.array(s)
    return rows


def mda(X: np.ndarray, f: int) -> np.ndarray:
    return _subset_mean(X, mda_subset(X, f))


def top_eigenvalue(C: np.ndarray) -> float:
    """The largest eigenvalue of a symmetric matrix."""
    return float(np.linalg.eigvalsh(C)[-1]) if C.size else 0.0


def smea_subset(X: np.ndarray, f: int) -> np.ndarray:
    """ByzFL's SMEA enumeration with the exact largest eigenvalue of each subset's covariance
    (1 / (n - f) normalisation), from the spectral norm of the centred rows."""
    n = X.shape[0]
    k = n - f
    ok = finite_rows(X)
    X64 = X.astype(np.float64)
    best, rows = np.inf, np.arange(k)
    for s in itertools.combinations(range(n), k):
        if not ok[list(s)].all():
            continue
        Y = X64[list(s)] - X64[list(s)].mean(axis=0)
        lam = float(np.linalg.norm(Y, 2)) ** 2 / k  # the top eigenvalue of Y'Y / k
        if lam < best:
            best, rows = lam, np.array(s)
    return rows


def smea(X: np.ndarray, f: int) -> np.ndarray:
    return _subset_mean(X, smea_subset(X, f))


def caf(X: np.ndarray, f: int, max_iter: int = 10_000) -> tuple[np.ndarray, int]:
    """ByzFL's CAF loop with the exact top eigenpair of the (D, D) weighted covariance (the
    eigenvector of the largest eigenvalue, NumPy's choice among equal ones); rows with a
    non-finite entry start with weight 0. Returns (mean, steps)."""
    n = X.shape[0]
    ok = finite_rows(X)
    X64 = np.where(ok[:, None], X.astype(np.float64), 0.0)
    c = ok.astype(np.float64)
    if not ok.any():
        return mean(X), 0
    csum = c.sum()
    best_c, best_sum, best_val = c.copy(), csum, np.inf
    steps = 0
    while csum > n - 2 * f and steps < max_iter:
        steps += 1
        mu = (c[:, None] * X64).sum(axis=0) / csum
        Y = X64 - mu
        cov = (c[:, None] * Y).T @ Y / csum
        w, V = np.linalg.eigh(cov)
        lam, v = w[-1], V[:, -1]
        if lam < best_val:
            best_c, best_sum, best_val = c.copy(), csum, lam
        tau = np.where(ok, (Y @ v) ** 2, 0.0)
        tmax = tau.max()
        if not (tmax > 0 and lam > 0):
            break
        c = c * (1 - tau / tmax)
        nxt = c.sum()
        if not nxt < csum:
            break
        csum = nxt
    out = (best_c[:, None] * X64).sum(axis=0) / best_sum
    return out.astype(X.dtype), steps


# --------------------------------------------------------------------------------------------
# coding
# --------------------------------------------------------------------------------------------


def cyclic_assignment(pi: np.ndarray, d: int) -> np.ndarray:
    """Row i = (pi[i], pi[i+1], ..., pi[i+d-1]) with indices mod n, by explicit loops."""
    n = len(pi)
    out = np.empty((n, d), dtype=np.int64)
    for i in range(n):
        for k in range(d):
            out[i, k] = pi[(i + k) % n]
    return out


def encode(G: np.ndarray, assignment: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """z_i = sum_j w_ij G[a_ij], accumulated in float64 by loops, returned in G's dtype."""
    n, d = assignment.shape
    if weights is None:
        w = np.full((n, d), 1.0 / d)
    else:
        w = np.broadcast_to(np.asarray(weights, dtype=np.float64), (n, d))
    out = np.zeros((n, G.shape[1]), dtype=np.float64)
    for i in range(n):
        for j in range(d):
            out[i] += w[i, j] * G[assignment[i, j]].astype(np.float64)
    return out.astype(G.dtype)


# --------------------------------------------------------------------------------------------
# compression
# --------------------------------------------------------------------------------------------

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_STREAM_RANDK, _STREAM_QSGD, _STREAM_NATURAL, _STREAM_TERNGRAD = 1, 2, 3, 4


def _mix64_int(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def stream_key(seed: int, stream: int) -> int:
    return _mix64_int(seed ^ _mix64_int((stream * _GOLDEN) & _M64))


def random_at(key: int, counter: np.ndarray) -> np.ndarray:
    """splitmix64 output number `counter` of the stream `key` (vectorised, uint64 wrap-around)."""
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (counter.astype(np.uint64) + np.uint64(1)) * np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def magnitude_key(x: np.ndarray) -> np.ndarray:
    """|x| as an order-preserving int64 key; every NaN equal and above +Inf."""
    if x.dtype == np.float32:
        k = (x.view(np.uint32) & np.uint32(0x7FFFFFFF)).astype(np.int64)
        return np.minimum(k, 0x7F800001)
    k = (x.view(np.uint64) & np.uint64(0x7FFFFFFFFFFFFFFF)).astype(np.int64)
    return np.minimum(k, 0x7FF0000000000001)


def topk_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Argsort top-k: larger magnitude first, NaN largest, ties -> lower index; ascending out."""
    order = np.lexsort((np.arange(x.size), -magnitude_key(x)))
    return np.sort(order[:k])


def randk_indices(D: int, k: int, seed: int) -> np.ndarray:
    """Floyd's k-subset with the counter-based stream (slow Python loop over k)."""
    key = stream_key(seed, _STREAM_RANDK)
    if k == D:
        return np.arange(D)
    chosen: set[int] = set()
    js = np.arange(D - k, D)
    hs = random_at(key, js)
    for j, h in zip(js.tolist(), hs.tolist(), strict=False):
        t = (h * (j + 1)) >> 64
        chosen.add(j if t in chosen else t)
    return np.array(sorted(chosen), dtype=np.int64)


def qsgd_levels(x: np.ndarray, norms: np.ndarray, s: int, bucket: int, seed: int):
    """QSGD levels and signs with the kernel's stream and arithmetic, given the stored norms.

    r = min(|x| * T(s / norm), s) in the input dtype, level = floor(r) + [u < r - floor(r)],
    u = 24-bit (float32) or 53-bit (float64) uniform of coordinate i."""
    D = x.size
    dt = x.dtype.type
    b_of = np.arange(D) // bucket
    nrm = norms.astype(np.float64)[b_of]
    with np.errstate(divide="ignore"):
        inv = np.where(nrm > 0, s / np.where(nrm > 0, nrm, 1.0), 0.0).astype(dt)
    r = np.minimum(np.abs(x) * inv, dt(s))
    li = np.floor(r)
    p = r - li
    h = random_at(stream_key(seed, _STREAM_QSGD), np.arange(D))
    if dt is np.float32:
        u = (h >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
    else:
        u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
    levels = li.astype(np.int64) + (u < p)
    signs = np.signbit(x).astype(np.int64)
    return levels, signs


def qsgd_decompress(levels, signs, norms, s, bucket, dtype):
    D = levels.size
    scale = norms.astype(np.float64)[np.arange(D) // bucket] / s
    v = (levels * scale).astype(dtype)
    return np.where(signs == 1, -v, v)


def uniform53(seed: int, stream: int, D: int) -> np.ndarray:
    """The kernels' 53-bit uniform of coordinates 0..D-1 of (seed, stream)."""
    h = random_at(stream_key(seed, stream), np.arange(D))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def natural_emin(x: np.ndarray) -> int:
    """Window start: the top power max|x| can round to, minus 254, clamped to the smallest
    subnormal power of the dtype."""
    lo = -149 if x.dtype == np.float32 else -1074
    m = float(np.max(np.abs(x.astype(np.float64)))) if x.size else 0.0
    if m == 0.0:
        return lo
    mant, ex = np.frexp(m)
    top = int(ex) - 1 + (0 if mant == 0.5 else 1)
    return max(top - 254, lo)


def natural_compress(x: np.ndarray, seed: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(emin, sign bits, exponent codes) of natural compression: |x| in [2^e, 2^(e+1)) goes up
    with probability |x|/2^e - 1; below 2^emin it becomes 2^emin w.p. |x|/2^emin, else 0."""
    emin = natural_emin(x)
    a = np.abs(x.astype(np.float64))
    u = uniform53(seed, _STREAM_NATURAL, x.size)
    _, ex = np.frexp(a)
    e = ex.astype(np.int64) - 1
    with np.errstate(over="ignore"):
        p = np.ldexp(a, -e) - 1.0
        below = u < np.ldexp(a, -emin)
    code = np.where(e < emin, below.astype(np.int64), e - emin + 1 + (u < p))
    code = np.where(a == 0, 0, code)
    return emin, np.signbit(x).astype(np.int64), code.astype(np.int64)


def natural_decompress(emin: int, signs, codes, dtype) -> np.ndarray:
    v = np.where(codes == 0, 0.0, np.ldexp(1.0, emin + np.maximum(codes, 1) - 1)).astype(dtype)
    return np.where(signs == 1, -v, v)


def terngrad_scales(x: np.ndarray, bucket: int) -> np.ndarray:
    """Per-bucket max |x| (exact in the input dtype)."""
    D = x.size
    nb = -(-D // bucket)
    a = np.abs(x.astype(np.float64))
    return np.array([a[j * bucket : (j + 1) * bucket].max() for j in range(nb)])


def terngrad_codes(x: np.ndarray, scales: np.ndarray, bucket: int, seed: int) -> np.ndarray:
    """2-bit codes (bit 0 nonzero, bit 1 negative): nonzero iff u < |x| * (1/s)."""
    D = x.size
    s = scales.astype(np.float64)[np.arange(D) // bucket]
    a = np.abs(x.astype(np.float64))
    with np.errstate(all="ignore"):  # the branch np.where drops may overflow or be 0 * inf
        inv = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 0.0)
        p = np.where(np.isinf(inv), a / np.where(s > 0, s, 1.0), a * inv)
    nz = (uniform53(seed, _STREAM_TERNGRAD, D) < p).astype(np.int64)
    return nz | ((nz & np.signbit(x).astype(np.int64)) << 1)


def terngrad_decompress(codes, scales, bucket, dtype) -> np.ndarray:
    D = codes.size
    s = scales.astype(np.float64)[np.arange(D) // bucket].astype(dtype)
    v = np.where(codes & 1, s, dtype(0)).astype(dtype)
    return np.where(codes >> 1 == 1, -v, v)


def majority_vote(X: np.ndarray) -> np.ndarray:
    """sign(sum_j sign(X_j)) with sign bit 1 = negative and sign(0) = 0 (ties)."""
    n = X.shape[0]
    neg = np.signbit(X).sum(axis=0)
    return np.where(2 * neg > n, -1.0, np.where(2 * neg == n, 0.0, 1.0))


def pack_bits(values: np.ndarray, w: int) -> bytes:
    """LSB-first fixed-width packing: element j in bits [j*w, (j+1)*w), zero padded."""
    v = np.asarray(values, dtype=np.uint64)
    bits = ((v[:, None] >> np.arange(w, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits.ravel(), bitorder="little").tobytes()


def unpack_bits(data: bytes, n: int, w: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[: n * w]
    return (bits.reshape(n, w).astype(np.int64) << np.arange(w)).sum(axis=1)


def payload_size(
    kind: str, D: int, k: int = 0, s: int = 0, bucket: int = 0, vb: int = 4, shared: bool = False
) -> int:
    """The documented payload-size formulas (module docstring of cyclad.compression)."""
    wi = max(1, (D - 1).bit_length())
    if kind == "identity":
        return D * vb
    if kind == "topk" or (kind == "randk" and not shared):
        return -(-k * wi // 8) + k * vb
    if kind == "randk":
        return k * vb
    if kind == "qsgd":
        return -(-D // bucket) * vb + -(-D // 8) + -(-D * s.bit_length() // 8)
    if kind == "natural":
        return 2 + -(-D // 8) + D
    if kind == "terngrad":
        return -(-D // bucket) * vb + -(-D // 4)
    return vb + -(-D // 8)  # sign


def majority_rows(Z: np.ndarray, size: int, need: int) -> list[int]:
    """DRACO's vote by counting each group's byte strings: per group of ``size`` consecutive
    rows, the first row whose exact bytes at least ``need`` rows of the group share (-1: none)."""
    out = []
    for lo in range(0, Z.shape[0], size):
        keys = [Z[i].tobytes() for i in range(lo, lo + size)]
        win = [lo + p for p, k in enumerate(keys) if keys.count(k) >= need]
        out.append(win[0] if win else -1)
    return out
