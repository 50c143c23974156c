"""Comparing data-space kernels: CKA, CCA, effective rank, diffusion-map clustering.

The layerwise eNTK gives, per layer, kernels on the data (the representation Gram and the
sensitivity kernel, seed 001 §4). This module compares such kernels:

* ``cka``: centred kernel alignment (Cortes et al. 2012; Kornblith et al. 2019),
  ``CKA(K, L) = <HKH, HLH>_F / (||HKH||_F ||HLH||_F)``, ``H = I - 11^T/N``;
* ``cca``: canonical correlations between two feature sets (SVCCA, Raghu et al. 2017, when
  the features are first truncated to their leading singular directions); ``kernel_features``
  turns a kernel into features ``U sqrt(Lambda)`` so that CCA can sit beside CKA;
* ``effective_rank``: the entropy effective rank ``exp(-sum p log p)``, ``p = lambda/sum lambda``
  (Roy & Vetterli 2007), or the participation ratio ``(sum lambda)^2 / sum lambda^2``;
* ``diffusion_map`` / ``cluster``: spectral embedding of the kernel-induced distance
  (Coifman & Lafon 2006; von Luxburg 2007) and k-means on it; ``adjusted_rand_index`` compares
  two clusterings.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.cluster.vq import kmeans2

__all__ = [
    "centre",
    "cka",
    "feature_cka",
    "kernel_features",
    "cca",
    "mean_cca",
    "effective_rank",
    "diffusion_map",
    "cluster",
    "adjusted_rand_index",
]


def _square(K, name: str) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"{name} must be a square (N, N) kernel; got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError(f"{name} contains NaN or inf")
    return K


def _features(X, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"{name} must be features of shape (N, p); got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or inf")
    return X


def centre(K) -> np.ndarray:
    """``H K H`` with ``H = I - 11^T/N``: ``(N, N) -> (N, N)`` (removes the mean feature)."""
    K = _square(K, "K")
    return K - K.mean(axis=0, keepdims=True) - K.mean(axis=1, keepdims=True) + K.mean()


def cka(K, L) -> float:
    """Linear CKA between two kernels on the same N inputs: ``(N, N), (N, N) -> [0, 1]``.

    ``<HKH, HLH>_F / (||HKH||_F ||HLH||_F)`` (Kornblith et al. 2019, eq. for linear CKA written
    with Gram matrices). Invariant to an isotropic scaling of either kernel and to orthogonal
    transformations of the features behind it. Raises ``ValueError`` when a kernel is constant
    (its centred version is zero).
    """
    K, L = _square(K, "K"), _square(L, "L")
    if K.shape != L.shape:
        raise ValueError(f"K and L must be kernels on the same inputs; got shapes {K.shape} and {L.shape}")
    Kc, Lc = centre(K), centre(L)
    nk, nl = np.linalg.norm(Kc), np.linalg.norm(Lc)
    if nk == 0 or nl == 0:
        raise ValueError("a kernel is constant on these inputs (its centred Gram matrix is zero); CKA is undefined")
    return float(np.sum(Kc * Lc) / (nk * nl))


def feature_cka(X, Y) -> float:
    """Linear CKA between feature matrices ``X (N, p)`` and ``Y (N, q)``: ``cka(X X^T, Y Y^T)``."""
    X, Y = _features(X, "X"), _features(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must have the same number of rows (inputs); got {X.shape[0]} and {Y.shape[0]}")
    return cka(X @ X.T, Y @ Y.T)


def _leading(K, energy: float, max_rank: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Leading eigenpairs of the centred kernel holding a fraction ``energy`` of its trace."""
    K = centre(K)
    if not 0 < energy <= 1:
        raise ValueError(f"energy must lie in (0, 1]; got {energy}")
    lam, U = scipy.linalg.eigh((K + K.T) / 2, driver="evd")  # divide and conquer: fast for all pairs
    lam, U = np.clip(lam[::-1], 0.0, None), U[:, ::-1]
    if lam.sum() <= 0:
        raise ValueError("the centred kernel is zero; it has no features")
    r = int(np.searchsorted(np.cumsum(lam) / lam.sum(), energy - 1e-12) + 1)
    r = min(r, int(np.count_nonzero(lam > 1e-12 * lam[0])))
    if max_rank is not None:
        r = min(r, int(max_rank))
    return lam[:r], U[:, :r]


def kernel_features(K, *, energy: float = 0.99, max_rank: int | None = None) -> np.ndarray:
    """Features ``Phi = U_r sqrt(Lambda_r)`` with ``Phi Phi^T ~ K``: ``(N, N) -> (N, r)``.

    Keeps the leading eigen-directions of the centred kernel that hold a fraction ``energy`` of
    its trace (the "SV" step of SVCCA), at most ``max_rank`` of them.
    """
    lam, U = _leading(K, energy, max_rank)
    return U * np.sqrt(lam)


def cca(X, Y, *, rel_tol: float = 1e-10) -> np.ndarray:
    """Canonical correlations between ``X (N, p)`` and ``Y (N, q)``, descending.

    Both are centred; each is replaced by an orthonormal basis of its column space (directions
    with singular value below ``rel_tol`` times the largest are dropped), and the canonical
    correlations are the singular values of ``Q_X^T Q_Y`` (Björck & Golub 1973). Returns
    ``min(rank X, rank Y)`` values in ``[0, 1]``.
    """
    X, Y = _features(X, "X"), _features(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must have the same number of rows (inputs); got {X.shape[0]} and {Y.shape[0]}")

    def basis(Z, name):
        Z = Z - Z.mean(axis=0)
        U, s, _ = np.linalg.svd(Z, full_matrices=False)
        if s.size == 0 or s[0] == 0:
            raise ValueError(f"{name} is constant over the inputs; CCA is undefined")
        return U[:, s > rel_tol * s[0]]

    rho = np.linalg.svd(basis(X, "X").T @ basis(Y, "Y"), compute_uv=False)
    return np.clip(rho, 0.0, 1.0)


def mean_cca(K, L, *, energy: float = 0.99, max_rank: int | None = None) -> float:
    """Mean canonical correlation between two kernels' leading features (SVCCA on kernels).

    Equal to ``mean(cca(kernel_features(K), kernel_features(L)))``; computed from the
    eigenvectors directly (they are already an orthonormal, centred basis of the features).
    """
    K, L = _square(K, "K"), _square(L, "L")
    if K.shape != L.shape:
        raise ValueError(f"K and L must be kernels on the same inputs; got shapes {K.shape} and {L.shape}")
    _, U = _leading(K, energy, max_rank)
    _, V = _leading(L, energy, max_rank)
    rho = np.linalg.svd(U.T @ V, compute_uv=False)
    return float(np.mean(np.clip(rho, 0.0, 1.0)))


def effective_rank(K, *, kind: str = "entropy") -> float:
    """Effective rank of a positive semi-definite kernel ``(N, N)``.

    ``kind="entropy"``: ``exp(-sum_k p_k log p_k)``, ``p = lambda / sum lambda``;
    ``kind="participation"``: ``(sum lambda)^2 / sum lambda^2``. Both equal r for r equal
    nonzero eigenvalues. Negative eigenvalues from round-off are set to zero.
    """
    K = _square(K, "K")
    if kind not in ("entropy", "participation"):
        raise ValueError(f"kind must be 'entropy' or 'participation'; got {kind!r}")
    lam = np.clip(np.linalg.eigvalsh((K + K.T) / 2), 0.0, None)
    if lam.sum() <= 0:
        raise ValueError("K has no positive eigenvalue; its effective rank is undefined")
    if kind == "participation":
        return float(lam.sum() ** 2 / np.sum(lam**2))
    p = lam / lam.sum()
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def diffusion_map(K, k: int, *, epsilon: float | None = None, t: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Diffusion-map embedding of the inputs under a kernel (Coifman & Lafon 2006).

    The kernel defines distances ``d^2(x, x') = K(x,x) + K(x',x') - 2 K(x,x')`` (distances in
    its feature space); affinities are ``W = exp(-d^2 / epsilon)`` (``epsilon`` defaults to the
    median of ``d^2``), the Markov matrix is ``P = D^{-1} W``. Its leading non-trivial right
    eigenvectors ``psi_1..psi_k``, scaled by ``mu^t``, are the coordinates.

    Args:
        K: ``(N, N)`` kernel.
        k: embedding dimension, ``1 <= k < N``.

    Returns:
        ``(coordinates (N, k), eigenvalues mu_1..mu_k)``.
    """
    K = _square(K, "K")
    n = K.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < n:
        raise ValueError(f"k must be an integer in [1, {n}); got {k!r}")
    diag = np.diag(K)
    d2 = np.clip(diag[:, None] + diag[None, :] - 2 * K, 0.0, None)
    if epsilon is None:
        off = d2[~np.eye(n, dtype=bool)]
        epsilon = float(np.median(off)) if np.median(off) > 0 else float(off.mean() + 1e-300)
    if epsilon <= 0:
        raise ValueError(f"epsilon must be positive; got {epsilon}")
    W = np.exp(-d2 / epsilon)
    deg = W.sum(axis=1)
    S = W / np.sqrt(deg[:, None] * deg[None, :])  # symmetric conjugate of P
    mu, V = np.linalg.eigh(S)
    mu, V = mu[::-1], V[:, ::-1]
    psi = V / np.sqrt(deg)[:, None]
    psi = psi / np.linalg.norm(psi[:, :1]) * np.sqrt(n)  # psi_0 is constant; fix the scale
    return psi[:, 1 : k + 1] * mu[1 : k + 1] ** t, mu[1 : k + 1]


def cluster(K, n_clusters: int, *, seed: int = 0, dim: int | None = None, restarts: int = 10) -> np.ndarray:
    """Cluster the inputs with a kernel: k-means on its diffusion map.

    Args:
        K: ``(N, N)`` kernel.
        n_clusters: number of clusters.
        seed: seeds k-means (scipy ``kmeans2``, ``++`` initialisation); the best of ``restarts``
            runs (lowest within-cluster sum of squares) is kept.
        dim: embedding dimension (default ``n_clusters - 1``, at least 1).

    Returns:
        ``(N,)`` integer labels in ``[0, n_clusters)``.
    """
    K = _square(K, "K")
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or not 2 <= n_clusters <= K.shape[0]:
        raise ValueError(f"n_clusters must be an integer in [2, {K.shape[0]}]; got {n_clusters!r}")
    dim = max(1, n_clusters - 1) if dim is None else dim
    Z, _ = diffusion_map(K, dim)
    Z = Z / (np.abs(Z).max() + 1e-300)
    rng = np.random.default_rng(seed)
    best, best_cost = None, np.inf
    for _ in range(restarts):
        centroids, labels = kmeans2(Z, n_clusters, minit="++", rng=rng)
        cost = float(np.sum((Z - centroids[labels]) ** 2))
        if cost < best_cost:
            best, best_cost = labels, cost
    return np.asarray(best)


def adjusted_rand_index(a, b) -> float:
    """Adjusted Rand index between two labellings of the same inputs (Hubert & Arabie 1985).

    1 for identical partitions (up to renaming), about 0 for independent ones.
    """
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b must label the same inputs; got {a.shape} and {b.shape}")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(table, (ia, ib), 1)
    comb = lambda m: m * (m - 1) / 2.0
    index = comb(table).sum()
    rows, cols = comb(table.sum(axis=1)).sum(), comb(table.sum(axis=0)).sum()
    expected = rows * cols / comb(a.size)
    maximum = (rows + cols) / 2
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))
